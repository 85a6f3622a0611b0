//! The checked-in OpenAPI document matches the code, and every route the API promises is in it.
//! Regenerate with `WRENN_UPDATE_OPENAPI=1 cargo nextest run -p wrenn-cp --test openapi`.

mod common;

use std::path::PathBuf;

use common::{Auth, TestCp};
use reqwest::StatusCode;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn checked_in_document_is_current() {
    let generated = wrenn_cp::http::openapi_json();
    if std::env::var_os("WRENN_UPDATE_OPENAPI").is_some() {
        std::fs::write(checked_in(), &generated).unwrap();
    }
    let stored = std::fs::read_to_string(checked_in()).unwrap_or_default();
    assert!(
        stored == generated,
        "crates/cp/openapi.json is stale: run `WRENN_UPDATE_OPENAPI=1 cargo nextest run -p wrenn-cp --test openapi` and commit it"
    );
    let document: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
}

/// The routes the REST contract names (SDKs, the dashboard and the CLI rely on them).
const CONTRACT: &[(&str, &str)] = &[
    ("get", "/health"),
    ("post", "/v1/auth/signup"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/switch-team"),
    ("get", "/v1/me"),
    ("patch", "/v1/me"),
    ("post", "/v1/me/password"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    ("post", "/v1/sandboxes"),
    ("get", "/v1/sandboxes"),
    ("get", "/v1/sandboxes/{id}"),
    ("delete", "/v1/sandboxes/{id}"),
    ("post", "/v1/sandboxes/{id}/pause"),
    ("post", "/v1/sandboxes/{id}/resume"),
    ("post", "/v1/sandboxes/{id}/ping"),
    ("post", "/v1/sandboxes/{id}/fork"),
    ("post", "/v1/sandboxes/{id}/connect"),
    ("post", "/v1/sandboxes/{id}/timeout"),
    ("post", "/v1/sandboxes/{id}/exec"),
    ("post", "/v1/sandboxes/{id}/snapshot"),
    ("get", "/v1/templates"),
    ("get", "/v1/templates/{name}"),
    ("delete", "/v1/templates/{name}"),
    ("get", "/v1/audit-logs"),
];

#[test]
fn contract_routes_are_documented() {
    let document: serde_json::Value =
        serde_json::from_str(&wrenn_cp::http::openapi_json()).unwrap();
    let missing: Vec<String> = CONTRACT
        .iter()
        .filter(|(method, path)| document["paths"][path][method].is_null())
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:?}"
    );
}

#[tokio::test]
async fn served_document_and_docs_page_work_offline() {
    let cp = TestCp::start().await;
    let (status, served) = cp.get("/openapi.json", &Auth::None).await;
    assert_eq!(status, StatusCode::OK);
    let expected: serde_json::Value =
        serde_json::from_str(&wrenn_cp::http::openapi_json()).unwrap();
    assert_eq!(served, expected);
    let page = cp.http.get(cp.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for needle in ["src=\"http", "href=\"http", "//cdn", "unpkg", "jsdelivr"] {
        assert!(
            !html.contains(needle),
            "the docs page loads something remote ({needle})"
        );
    }
    for asset in ["/docs/docs.js", "/docs/docs.css"] {
        assert!(html.contains(asset), "{asset} not referenced");
        let response = cp.http.get(cp.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
    cp.shutdown().await;
}
