//! `/v1/sandboxes/{id}/files…`: streamed uploads and downloads, multipart uploads, listing,
//! stat, mkdir, move and remove. The file watch WebSocket lives in `streams.rs`.

use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{EntryInfo, EntryList, ErrorBody, MakeDirRequest, MoveRequest, UploadResult};

use crate::app::caller::Caller;
use crate::app::files::{self, UploadPart, UploadParts, WriteTarget};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiPath, QueryPairs};
use crate::state::AppState;

/// After refusing an oversized upload, this much more of its body is read and dropped, so the
/// client gets to read the 413 instead of a reset connection.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

pub fn routes() -> OpenApiRouter<AppState> {
    // Uploads stream past the JSON body limit; `upload_limit` bounds them instead.
    let uploads = OpenApiRouter::new()
        .routes(routes!(file_write, file_upload))
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .routes(routes!(file_read, file_remove))
        .routes(routes!(file_list))
        .routes(routes!(file_stat))
        .routes(routes!(file_mkdir))
        .routes(routes!(file_move))
        .merge(uploads)
}

/// The raw bytes of a file.
// Only describes bodies in the OpenAPI document; the handlers stream them.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct FileBytes(Vec<u8>);

/// A multipart form: every part is a file, named by its `filename`.
// Only describes the body in the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
}

/// The one required `path` query parameter.
fn path_param(query: &QueryPairs) -> ApiResult<String> {
    query
        .one("path")
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadRequest("path: query parameter required".into()))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Reads and drops what is left of a refused upload, within bounds. A client that sent
/// `Expect: 100-continue` is waiting for a go-ahead it never gets, so nothing is read.
async fn drain(body: &mut BodyDataStream, headers: &HeaderMap) {
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return;
    }
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            if chunk.len() >= left {
                break;
            }
            left -= chunk.len();
        }
    })
    .await;
}

/// Writes the request body to a file: parents are created, and the file appears whole when the
/// upload completes (an aborted upload leaves any old file untouched). Bodies over the
/// server's upload limit are refused with 413.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("path" = String, Query, description = "File to write; relative paths start in /root"),
        ("mode" = Option<String>, Query, description = "Permission bits in octal, e.g. `644` (the default) or `0755`"),
        ("user" = Option<String>, Query, description = "Owner of the file and created parents; defaults to root")),
    request_body(content = FileBytes, content_type = "application/octet-stream"),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = EntryInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn file_write(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<EntryInfo>> {
    query.only(&["path", "mode", "user"])?;
    let target = WriteTarget {
        path: path_param(&query)?,
        mode: query.one("mode").map(files::mode_parse).transpose()?,
        user: query.one("user").map(str::to_owned),
    };
    let mut body = body.into_data_stream();
    let written = files::file_write(
        &state,
        &caller,
        &id,
        target,
        declared_length(&headers),
        &mut body,
    )
    .await;
    if let Err(ApiError::PayloadTooLarge(_)) = &written {
        drain(&mut body, &headers).await;
    }
    Ok(Json(written?))
}

/// The parts of a multipart upload as the app layer reads them.
struct MultipartParts(Multipart);

impl UploadParts for MultipartParts {
    async fn next_part(&mut self) -> ApiResult<Option<UploadPart<'_>>> {
        let field = self.0.next_field().await.map_err(multipart_error)?;
        let Some(field) = field else {
            return Ok(None);
        };
        let file_name = field.file_name().map(str::to_owned).ok_or_else(|| {
            ApiError::invalid("every part of the upload must be a file with a filename")
        })?;
        let body = field.map(|chunk| chunk.map_err(multipart_error)).boxed();
        Ok(Some(UploadPart { file_name, body }))
    }
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the upload is too large".into())
    } else {
        ApiError::BadRequest(format!("read the multipart body: {}", error.body_text()))
    }
}

/// Uploads files (`multipart/form-data`) into a directory: each part is written to
/// `<path>/<filename>`. File names must be plain names (no `/`, not `..`).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("path" = String, Query, description = "Directory the files go to (created if missing)")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = UploadResult), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn file_upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<UploadResult>> {
    query.only(&["path"])?;
    let dir = path_param(&query)?;
    let multipart = multipart.map_err(|_| {
        ApiError::UnsupportedMediaType("send the files as Content-Type: multipart/form-data".into())
    })?;
    let uploaded =
        files::file_upload(&state, &caller, &id, &dir, &mut MultipartParts(multipart)).await?;
    Ok(Json(uploaded))
}

/// Downloads a file as `application/octet-stream`, streamed. Errors (a missing file, a
/// directory) are JSON like everywhere else.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("path" = String, Query, description = "File to read")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = FileBytes, content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn file_read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<Response> {
    query.only(&["path"])?;
    let path = path_param(&query)?;
    let download = files::file_read(&state, &caller, &id, &path).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(download.into_stream()),
    )
        .into_response())
}

/// Removes a file or a directory with everything in it.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("path" = String, Query, description = "File or directory to remove")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn file_remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<StatusCode> {
    query.only(&["path"])?;
    let path = path_param(&query)?;
    files::file_remove(&state, &caller, &id, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The entries of a directory, sorted by path; `depth` > 1 descends into subdirectories.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "files",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("path" = String, Query, description = "Directory to list"),
        ("depth" = Option<i64>, Query, description = "Levels to descend, 1 (the default) to 32")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = EntryList), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn file_list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<Json<EntryList>> {
    query.only(&["path", "depth"])?;
    let path = path_param(&query)?;
    Ok(Json(
        files::file_list(&state, &caller, &id, &path, query.int("depth")?).await?,
    ))
}

/// Metadata of a file, directory or symlink (not followed).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "files",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("path" = String, Query, description = "Path to describe")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = EntryInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn file_stat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<Json<EntryInfo>> {
    query.only(&["path"])?;
    let path = path_param(&query)?;
    Ok(Json(files::file_stat(&state, &caller, &id, &path).await?))
}

/// Creates a directory and its missing parents (`mkdir -p`); an existing one is fine.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files", request_body = MakeDirRequest,
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = EntryInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn file_mkdir(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<MakeDirRequest>,
) -> ApiResult<(StatusCode, Json<EntryInfo>)> {
    let created = files::file_mkdir(&state, &caller, &id, request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Moves or renames a file or directory.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/move", tag = "files", request_body = MoveRequest,
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = EntryInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn file_move(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<MoveRequest>,
) -> ApiResult<Json<EntryInfo>> {
    Ok(Json(files::file_move(&state, &caller, &id, request).await?))
}
