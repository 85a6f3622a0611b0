//! Uploads into a sandbox: request bodies and multipart files streamed to the agent's
//! WriteFile, within the server's upload limit. Both are audited.

use std::future::Future;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_api::{EntryInfo, UploadResult};

use super::{audited, client_for, entry_view, path_check};
use crate::app::audit::{self, Target};
use crate::app::caller::Caller;
use crate::app::hosts::AgentClient;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest data message sent to the agent; envd reads in chunks of this size too.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// Where an upload goes.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub path: String,
    /// Permission bits; the guest's default (0o644) when absent.
    pub mode: Option<u32>,
    /// Owner of the file and of created parents; root when absent.
    pub user: Option<String>,
}

/// How many more bytes an upload may bring.
#[derive(Debug, Clone, Copy)]
struct Budget {
    limit: u64,
    left: u64,
}

impl Budget {
    fn new(limit: u64) -> Self {
        Self { limit, left: limit }
    }

    fn take(&mut self, bytes: u64) -> ApiResult<()> {
        if bytes > self.left {
            return Err(self.exceeded());
        }
        self.left -= bytes;
        Ok(())
    }

    fn exceeded(&self) -> ApiError {
        ApiError::PayloadTooLarge(format!(
            "the upload is larger than this server accepts ({} bytes)",
            self.limit
        ))
    }

    fn used(&self) -> u64 {
        self.limit - self.left
    }
}

/// One message for the agent's WriteFile stream, or the clean end of it.
enum Upload {
    Part(pb::WriteFileRequest),
    End,
}

/// Streams `body` into a file through the agent, taking its size off `budget` (413 when it
/// runs out).
///
/// The request stream ends only after the whole body was sent. On any failure the call is
/// dropped with its stream still open, so the host resets it and the guest discards the
/// partial file instead of committing it.
async fn write_stream<S, E>(
    client: &AgentClient,
    sandbox_id: &str,
    target: WriteTarget,
    body: &mut S,
    budget: &mut Budget,
) -> ApiResult<envd::EntryInfo>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (sender, receiver) = mpsc::channel::<Upload>(4);
    let messages = futures::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Some(Upload::Part(message)) => Some((message, receiver)),
            Some(Upload::End) => None,
            None => futures::future::pending().await,
        }
    });
    let mut client = client.clone();
    let call = async move {
        client
            .write_file(messages)
            .await
            .map(tonic::Response::into_inner)
            .map_err(ApiError::from)
    };
    let header = pb::WriteFileRequest {
        sandbox_id: sandbox_id.to_owned(),
        part: Some(envd::WriteFileRequest {
            part: Some(envd::write_file_request::Part::Header(
                envd::WriteFileHeader {
                    path: target.path,
                    mode: target.mode.unwrap_or(0),
                    user: target.user.unwrap_or_default(),
                },
            )),
        }),
    };
    let feed = async move {
        // A failed send means the call ended early; its own result says why.
        if sender.send(Upload::Part(header)).await.is_err() {
            return Ok(());
        }
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk
                .map_err(|error| ApiError::BadRequest(format!("read the request body: {error}")))?;
            budget.take(chunk.len() as u64)?;
            while !chunk.is_empty() {
                let data = chunk.split_to(chunk.len().min(WRITE_CHUNK_BYTES));
                let message = pb::WriteFileRequest {
                    sandbox_id: String::new(),
                    part: Some(envd::WriteFileRequest {
                        part: Some(envd::write_file_request::Part::Data(data.to_vec())),
                    }),
                };
                if sender.send(Upload::Part(message)).await.is_err() {
                    return Ok(());
                }
            }
        }
        let _ = sender.send(Upload::End).await;
        Ok(())
    };
    let ((), entry) = futures::future::try_join(feed, call).await?;
    Ok(entry)
}

/// Writes the request body to `target.path` (parents are created; the file appears whole or
/// not at all). `declared` is the Content-Length, refused at once when over the limit.
pub async fn file_write<S, E>(
    state: &AppState,
    caller: &Caller,
    id: &str,
    target: WriteTarget,
    declared: Option<u64>,
    body: &mut S,
) -> ApiResult<EntryInfo>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let path = target.path.clone();
    let mut budget = Budget::new(state.config.upload_limit);
    let outcome = async {
        path_check("path", &target.path)?;
        let client = client_for(state, caller, id, "write files in").await?;
        if declared.is_some_and(|length| length > budget.limit) {
            return Err(budget.exceeded());
        }
        let entry = write_stream(&client, id, target, body, &mut budget).await?;
        Ok(entry_view(entry))
    }
    .await;
    let metadata = json!({"path": audited(&path), "bytes": budget.used()});
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "file_write"),
        metadata,
        outcome,
    )
    .await
}

/// One file of a multipart upload.
pub struct UploadPart<'a> {
    /// The file's name as the client gave it; checked here.
    pub file_name: String,
    pub body: BoxStream<'a, ApiResult<Bytes>>,
}

/// The files of an upload, one at a time (the HTTP layer adapts its multipart parser).
pub trait UploadParts {
    fn next_part(&mut self) -> impl Future<Output = ApiResult<Option<UploadPart<'_>>>> + Send;
}

/// Refuses upload file names that are not a single plain name.
pub fn file_name_check(name: &str) -> ApiResult<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(ApiError::invalid(format!(
            "file name {name:?}: must be a plain name without '/', '..' or control characters"
        )));
    }
    Ok(())
}

/// Writes every file of an upload into `dir`, in order. The limit covers the whole upload;
/// files written before a failure stay.
pub async fn file_upload(
    state: &AppState,
    caller: &Caller,
    id: &str,
    dir: &str,
    parts: &mut impl UploadParts,
) -> ApiResult<UploadResult> {
    let mut budget = Budget::new(state.config.upload_limit);
    let mut written: Vec<String> = Vec::new();
    let outcome = async {
        path_check("path", dir)?;
        let client = client_for(state, caller, id, "write files in").await?;
        let mut files = Vec::new();
        while let Some(mut part) = parts.next_part().await? {
            file_name_check(&part.file_name)?;
            let path = format!("{}/{}", dir.trim_end_matches('/'), part.file_name);
            path_check("path", &path)?;
            let target = WriteTarget {
                path: path.clone(),
                mode: None,
                user: None,
            };
            let entry = write_stream(&client, id, target, &mut part.body, &mut budget).await?;
            written.push(path);
            files.push(entry_view(entry));
        }
        if files.is_empty() {
            return Err(ApiError::invalid("the upload holds no files"));
        }
        Ok(UploadResult { files })
    }
    .await;
    let metadata = json!({"path": audited(dir), "files": written, "bytes": budget.used()});
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "file_upload"),
        metadata,
        outcome,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_are_plain() {
        for ok in ["a.txt", "..hidden", "x..y"] {
            assert!(file_name_check(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a\nb"] {
            assert!(file_name_check(bad).is_err(), "{bad:?}");
        }
    }
}
