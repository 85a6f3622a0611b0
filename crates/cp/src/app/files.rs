//! Files in a sandbox: metadata, streamed downloads and watches, forwarded to the sandbox's
//! host agent (uploads are in `upload.rs`). New directories, moves and removals are audited;
//! reads are not.

mod upload;

pub use upload::{file_name_check, file_upload, file_write, UploadPart, UploadParts, WriteTarget};

use std::future::Future;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::json;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_api::{EntryInfo, EntryList, FileEvent, FileType, MakeDirRequest, MoveRequest};

use crate::app::audit::{self, Target};
use crate::app::caller::Caller;
use crate::app::hosts::AgentClient;
use crate::app::sandbox::{sandbox_running, time_from_ms};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Longest path the control plane forwards (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Deepest directory listing.
pub const MAX_LIST_DEPTH: i64 = 32;
/// Largest permission value (`0o7777`: setuid, setgid, sticky and rwx for all).
const MAX_MODE: u32 = 0o7777;

/// Refuses paths the guest should never see: empty, overlong, with NUL, or with `..` parts.
/// envd keeps `..` as written (resolving it lexically is wrong across symlinks), so callers
/// use absolute paths instead; relative ones start in root's home.
pub fn path_check(field: &str, path: &str) -> ApiResult<()> {
    if path.is_empty() {
        return Err(ApiError::invalid(format!("{field}: must not be empty")));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(ApiError::invalid(format!(
            "{field}: at most {MAX_PATH_BYTES} bytes"
        )));
    }
    if path.contains('\0') {
        return Err(ApiError::invalid(format!(
            "{field}: NUL bytes are not allowed"
        )));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(ApiError::invalid(format!(
            "{field}: '..' is not allowed; use an absolute path"
        )));
    }
    Ok(())
}

/// A path as the audit log keeps it: PostgreSQL's JSON cannot hold NUL, which refused paths
/// may contain.
fn audited(path: &str) -> String {
    path.replace('\0', "\u{fffd}")
}

/// Parses permission bits written in octal (`644`, `0755`, `0o600`).
pub fn mode_parse(text: &str) -> ApiResult<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|_| !digits.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("mode: {text:?} is not an octal number like 644"))
        })?;
    if mode > MAX_MODE {
        return Err(ApiError::invalid(format!("mode: at most 7777, got {text}")));
    }
    Ok(mode)
}

/// A unary host call, bounded by the configured agent timeout.
pub(crate) async fn host_call<T>(
    state: &AppState,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> ApiResult<T> {
    match tokio::time::timeout(state.config.agent_timeout, call).await {
        Ok(result) => Ok(result?.into_inner()),
        Err(_) => Err(ApiError::Unavailable(
            "the host did not answer in time".into(),
        )),
    }
}

pub fn entry_view(entry: envd::EntryInfo) -> EntryInfo {
    let file_type = match envd::FileType::try_from(entry.r#type) {
        Ok(envd::FileType::File) => FileType::File,
        Ok(envd::FileType::Directory) => FileType::Dir,
        Ok(envd::FileType::Symlink) => FileType::Symlink,
        _ => FileType::Other,
    };
    EntryInfo {
        name: entry.name,
        path: entry.path,
        file_type,
        size: entry.size,
        mode: entry.mode,
        owner: entry.owner,
        group: entry.group,
        modified_at: time_from_ms(entry.modified_ms),
        symlink_target: (!entry.symlink_target.is_empty()).then_some(entry.symlink_target),
    }
}

async fn client_for(
    state: &AppState,
    caller: &Caller,
    id: &str,
    doing: &str,
) -> ApiResult<AgentClient> {
    let (_, host) = sandbox_running(state, caller, id, doing).await?;
    Ok(host.client)
}

pub async fn file_stat(
    state: &AppState,
    caller: &Caller,
    id: &str,
    path: &str,
) -> ApiResult<EntryInfo> {
    path_check("path", path)?;
    let mut client = client_for(state, caller, id, "read files in").await?;
    let request = pb::StatPathRequest {
        sandbox_id: id.to_owned(),
        path: path.to_owned(),
    };
    Ok(entry_view(
        host_call(state, client.stat_path(request)).await?,
    ))
}

pub async fn file_list(
    state: &AppState,
    caller: &Caller,
    id: &str,
    path: &str,
    depth: Option<i64>,
) -> ApiResult<EntryList> {
    path_check("path", path)?;
    let depth = match depth {
        None => 1,
        Some(d) if (1..=MAX_LIST_DEPTH).contains(&d) => d as u32,
        Some(d) => {
            return Err(ApiError::invalid(format!(
                "depth: must be 1 to {MAX_LIST_DEPTH}, got {d}"
            )))
        }
    };
    let mut client = client_for(state, caller, id, "read files in").await?;
    let request = pb::ListDirRequest {
        sandbox_id: id.to_owned(),
        request: Some(envd::ListDirRequest {
            path: path.to_owned(),
            depth,
        }),
    };
    let listed = host_call(state, client.list_dir(request)).await?;
    Ok(EntryList {
        entries: listed.entries.into_iter().map(entry_view).collect(),
    })
}

pub async fn file_mkdir(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request: MakeDirRequest,
) -> ApiResult<EntryInfo> {
    let metadata = json!({"path": audited(&request.path)});
    let outcome = async {
        path_check("path", &request.path)?;
        let mode = match request.mode {
            Some(mode) if mode > MAX_MODE => {
                return Err(ApiError::invalid(format!(
                    "mode: at most {MAX_MODE} (0o7777)"
                )))
            }
            Some(mode) => mode,
            None => 0,
        };
        let mut client = client_for(state, caller, id, "write files in").await?;
        let request = pb::MakeDirRequest {
            sandbox_id: id.to_owned(),
            request: Some(envd::MakeDirRequest {
                path: request.path,
                user: request.user.unwrap_or_default(),
                mode,
            }),
        };
        Ok(entry_view(
            host_call(state, client.make_dir(request)).await?,
        ))
    }
    .await;
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "file_mkdir"),
        metadata,
        outcome,
    )
    .await
}

pub async fn file_move(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request: MoveRequest,
) -> ApiResult<EntryInfo> {
    let metadata =
        json!({"source": audited(&request.source), "destination": audited(&request.destination)});
    let outcome = async {
        path_check("source", &request.source)?;
        path_check("destination", &request.destination)?;
        let mut client = client_for(state, caller, id, "move files in").await?;
        let request = pb::MovePathRequest {
            sandbox_id: id.to_owned(),
            request: Some(envd::MoveRequest {
                source: request.source,
                destination: request.destination,
            }),
        };
        Ok(entry_view(
            host_call(state, client.move_path(request)).await?,
        ))
    }
    .await;
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "file_move"),
        metadata,
        outcome,
    )
    .await
}

pub async fn file_remove(state: &AppState, caller: &Caller, id: &str, path: &str) -> ApiResult<()> {
    let outcome = async {
        path_check("path", path)?;
        let mut client = client_for(state, caller, id, "remove files in").await?;
        let request = pb::RemovePathRequest {
            sandbox_id: id.to_owned(),
            path: path.to_owned(),
        };
        host_call(state, client.remove_path(request))
            .await
            .map(drop)
    }
    .await;
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "file_remove"),
        json!({"path": audited(path)}),
        outcome,
    )
    .await
}

/// A file being downloaded: its first chunk (read before answering, so a missing file is a
/// plain error) and the rest as they arrive.
pub struct Download {
    first: Bytes,
    rest: tonic::Streaming<envd::FileChunk>,
}

impl Download {
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        let rest = self.rest.map(|chunk| match chunk {
            Ok(chunk) => Ok(Bytes::from(chunk.data)),
            Err(status) => {
                tracing::warn!(error = %status, "file download failed midway");
                Err(std::io::Error::other(status.message().to_owned()))
            }
        });
        futures::stream::once(async move { Ok(self.first) }).chain(rest)
    }
}

pub async fn file_read(
    state: &AppState,
    caller: &Caller,
    id: &str,
    path: &str,
) -> ApiResult<Download> {
    path_check("path", path)?;
    let mut client = client_for(state, caller, id, "read files in").await?;
    let request = pb::ReadFileRequest {
        sandbox_id: id.to_owned(),
        path: path.to_owned(),
    };
    let mut rest = host_call(state, client.read_file(request)).await?;
    // envd reports a missing file or a directory on the stream, not on the call.
    let first = match tokio::time::timeout(state.config.agent_timeout, rest.message()).await {
        Ok(Ok(chunk)) => chunk.map(|c| Bytes::from(c.data)).unwrap_or_default(),
        Ok(Err(status)) => return Err(status.into()),
        Err(_) => {
            return Err(ApiError::Unavailable(
                "the host did not answer in time".into(),
            ))
        }
    };
    Ok(Download { first, rest })
}

fn event_view(event: envd::FsEvent) -> Option<FileEvent> {
    let kind = match envd::FsEventKind::try_from(event.kind).ok()? {
        envd::FsEventKind::Create => "create",
        envd::FsEventKind::Write => "write",
        envd::FsEventKind::Remove => "remove",
        envd::FsEventKind::Rename => "rename",
        envd::FsEventKind::Chmod => "chmod",
        envd::FsEventKind::Unspecified => return None,
    };
    Some(FileEvent {
        kind: kind.into(),
        path: event.path,
        from_path: (!event.from_path.is_empty()).then_some(event.from_path),
    })
}

/// Filesystem events under `path` until the stream is dropped. A missing directory fails
/// here, before any event.
pub async fn file_watch(
    state: &AppState,
    caller: &Caller,
    id: &str,
    path: &str,
    recursive: bool,
) -> ApiResult<impl Stream<Item = ApiResult<FileEvent>> + Send + Unpin + 'static> {
    path_check("path", path)?;
    let mut client = client_for(state, caller, id, "watch files in").await?;
    let request = pb::WatchDirRequest {
        sandbox_id: id.to_owned(),
        request: Some(envd::WatchRequest {
            path: path.to_owned(),
            recursive,
        }),
    };
    let events = host_call(state, client.watch_dir(request)).await?;
    Ok(events
        .filter_map(|event| async move {
            match event {
                Ok(event) => event_view(event).map(Ok),
                Err(status) => Some(Err(ApiError::from(status))),
            }
        })
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        for ok in ["/etc/hosts", "notes.txt", "/tmp/a..b", "/", "./x"] {
            assert!(path_check("path", ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        for bad in [
            "",
            "../../etc/passwd",
            "/tmp/../etc",
            "..",
            "a\0b",
            long.as_str(),
        ] {
            let error = path_check("path", bad).unwrap_err();
            assert!(matches!(error, ApiError::Invalid(_)), "{bad}");
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(mode_parse("644").unwrap(), 0o644);
        assert_eq!(mode_parse("0755").unwrap(), 0o755);
        assert_eq!(mode_parse("0o600").unwrap(), 0o600);
        assert!(matches!(mode_parse("9"), Err(ApiError::BadRequest(_))));
        assert!(matches!(mode_parse(""), Err(ApiError::BadRequest(_))));
        assert!(matches!(mode_parse("17777"), Err(ApiError::Invalid(_))));
    }
}
