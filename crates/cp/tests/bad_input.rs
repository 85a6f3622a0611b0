//! Bad input on every route of the OpenAPI document: hostile path parameters, malformed,
//! mistyped, unknown-field and oversized bodies. Each must be a 4xx with our JSON error body,
//! never a 5xx, a hang or a panic.

mod common;

use common::{Auth, TestCp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Path parameter values an attacker or a buggy client might send (already URL-encoded).
const HOSTILE_IDS: &[&str] = &[
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "sb-%00",
    "%F0%9F%A6%9C-%C3%BC",
    "sb-AAAA",
    "1%20OR%201%3D1",
    "%27%3B%20DROP%20TABLE%20users%3B--",
];

fn long_id() -> String {
    format!("sb-{}", "a".repeat(5000))
}

async fn send(
    cp: &TestCp,
    method: &Method,
    path: &str,
    auth: &Auth,
    body: Option<(&str, String)>,
) -> (StatusCode, String) {
    let mut request = cp.request(method.clone(), path, auth);
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    (status, response.text().await.unwrap())
}

fn assert_clean_refusal(case: &str, status: StatusCode, text: &str) {
    assert!(
        status.is_client_error(),
        "{case}: expected a 4xx, got {status}: {text}"
    );
    let body: Value = serde_json::from_str(text)
        .unwrap_or_else(|_| panic!("{case}: non-JSON body {status}: {text}"));
    common::assert_error_shape(&body, case);
}

#[tokio::test]
async fn every_route_refuses_bad_input_cleanly() {
    let cp = TestCp::start_with_config(|config| config.json_body_limit = 64 * 1024).await;
    let owner = cp.signup("owner@example.com").await;
    let auth = owner.auth();
    let document: Value = serde_json::from_str(&wrenn_cp::http::openapi_json()).unwrap();
    let mut cases = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method_name, operation) in item.as_object().unwrap() {
            let method: Method = method_name.to_uppercase().parse().unwrap();
            let takes_json = operation["requestBody"]["content"]["application/json"].is_object();

            // Hostile values in every path parameter.
            if path.contains('{') {
                let long = long_id();
                for hostile in HOSTILE_IDS.iter().copied().chain([long.as_str()]) {
                    let mut url = path.clone();
                    while let (Some(start), Some(end)) = (url.find('{'), url.find('}')) {
                        url.replace_range(start..=end, hostile);
                    }
                    if path.contains("/files") {
                        url.push_str("?path=/tmp/x");
                    }
                    let body = takes_json.then(|| ("application/json", "{}".to_owned()));
                    let (status, text) = send(&cp, &method, &url, &auth, body).await;
                    let shown: String = url.chars().take(120).collect();
                    assert_clean_refusal(&format!("{method} {shown}"), status, &text);
                    cases += 1;
                }
            }
            if !takes_json {
                continue;
            }
            // Bodies: malformed, wrong shape, unknown fields, wrong types, oversized.
            let mut url = path.clone();
            while let (Some(start), Some(end)) = (url.find('{'), url.find('}')) {
                url.replace_range(start..=end, "sb-doesnotexist");
            }
            let oversized = json!({"name": "x".repeat(200 * 1024)}).to_string();
            let bodies: [(&str, &str, String); 6] = [
                ("malformed", "application/json", "{\"name\": ".into()),
                ("not an object", "application/json", "[1, 2, 3]".into()),
                (
                    "unknown field",
                    "application/json",
                    json!({"definitely_not_a_field": true}).to_string(),
                ),
                (
                    "wrong types",
                    "application/json",
                    json!({"name": 5, "email": [], "cmd": {}, "count": "many", "timeout_sec": -1})
                        .to_string(),
                ),
                ("oversized", "application/json", oversized),
                ("not JSON at all", "text/plain", "hello".into()),
            ];
            for (what, content_type, body) in bodies {
                let (status, text) =
                    send(&cp, &method, &url, &auth, Some((content_type, body))).await;
                assert_clean_refusal(
                    &format!("{method} {path} with a {what} body"),
                    status,
                    &text,
                );
                if what == "oversized" && !path.starts_with("/v1/sandboxes/") {
                    assert_eq!(
                        status,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "{method} {path}: {text}"
                    );
                }
                cases += 1;
            }
        }
    }
    assert!(
        cases > 150,
        "only {cases} cases: is the OpenAPI document complete?"
    );

    // Unicode is data: names, metadata and searches with it are fine.
    let (status, body) = cp
        .patch("/v1/me", &auth, json!({"name": "Zoë 🦜 李"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = cp
        .get("/v1/users/search?email=%C3%BC%C3%B6%C3%A4", &auth)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = cp
        .get("/v1/sandboxes?metadata=%F0%9F%A6%9C%3D%E2%9C%93", &auth)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    cp.shutdown().await;
}
