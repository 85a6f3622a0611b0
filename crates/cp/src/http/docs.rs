//! `/openapi.json` and the API reference at `/docs`. The reference page is our own small
//! HTML/JS viewer, served from the binary: no CDN, works offline.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::state::AppState;

const PAGE: &str = include_str!("../../docs-ui/index.html");
const SCRIPT: &str = include_str!("../../docs-ui/docs.js");
const STYLE: &str = include_str!("../../docs-ui/docs.css");

pub fn routes(openapi: utoipa::openapi::OpenApi) -> Router<AppState> {
    let document = serde_json::to_value(&openapi).unwrap_or_default();
    Router::new()
        .route("/openapi.json", get(move || async move { Json(document) }))
        .route(
            "/docs",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/docs/docs.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
                    .into_response()
            }),
        )
        .route(
            "/docs/docs.css",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
            }),
        )
}
