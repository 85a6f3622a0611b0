//! Accounts, sessions and API keys against a real control plane and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Auth, TestCp};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn signup_login_and_me() {
    let cp = TestCp::start().await;
    let first = cp.signup("ann@example.com").await;
    let second = cp.signup("bob@example.com").await;

    let (status, me) = cp.get("/v1/me", &first.auth()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(
        me["is_admin"], true,
        "the first user administers the platform"
    );
    let (_, me) = cp.get("/v1/me", &second.auth()).await;
    assert_eq!(me["is_admin"], false);
    assert_ne!(
        first.team_id, second.team_id,
        "each person gets a team of their own"
    );

    // Email is case-insensitive and unique.
    let (status, body) = cp
        .post(
            "/v1/auth/signup",
            &Auth::None,
            json!({"email": "ANN@example.com", "password": "another password", "name": "Ann 2"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, session) = cp
        .post(
            "/v1/auth/login",
            &Auth::None,
            json!({"email": "Ann@Example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["team_id"], first.team_id.as_str());
    assert_eq!(session["role"], "owner");

    for (email, password) in [
        ("ann@example.com", "wrong password"),
        ("nobody@example.com", "correct horse battery"),
    ] {
        let (status, body) = cp
            .post(
                "/v1/auth/login",
                &Auth::None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(
            body["error"]["message"], "email or password is wrong",
            "no hint which part was wrong"
        );
    }

    let (status, me) = cp
        .patch("/v1/me", &first.auth(), json!({"name": "Ann Lee"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "Ann Lee");
    let (status, body) = cp
        .patch("/v1/me", &first.auth(), json!({"email": "bob@example.com"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Passwords are argon2id hashes at rest.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(&first.user_id)
        .fetch_one(cp.pool())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    cp.shutdown().await;
}

#[tokio::test]
async fn password_change_takes_effect() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (status, body) = cp
        .post(
            "/v1/me/password",
            &ann.auth(),
            change("not it", "brand new pass"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = cp
        .post(
            "/v1/me/password",
            &ann.auth(),
            change("correct horse battery", "short"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = cp
        .post(
            "/v1/me/password",
            &ann.auth(),
            change("correct horse battery", "brand new pass"),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let login = |password: &str| json!({"email": "ann@example.com", "password": password});
    let (status, _) = cp
        .post(
            "/v1/auth/login",
            &Auth::None,
            login("correct horse battery"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = cp
        .post("/v1/auth/login", &Auth::None, login("brand new pass"))
        .await;
    assert_eq!(status, StatusCode::OK);
    cp.shutdown().await;
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled() {
    let cp = TestCp::start().await;
    cp.signup("ann@example.com").await;
    let wrong = json!({"email": "ann@example.com", "password": "wrong password"});
    for _ in 0..10 {
        let (status, _) = cp.post("/v1/auth/login", &Auth::None, wrong.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = cp.post("/v1/auth/login", &Auth::None, wrong).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    cp.shutdown().await;
}

#[tokio::test]
async fn bad_session_tokens_are_refused() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let sessions = &cp.cp.as_ref().unwrap().state().sessions;
    let expired = sessions.issue_expired(&ann.user_id, &ann.team_id, Duration::from_secs(5));
    let mut tampered = ann.token.clone();
    tampered.pop();
    tampered.push(if ann.token.ends_with('A') { 'B' } else { 'A' });
    let cases = [
        ("no credentials", Auth::None, "authentication required"),
        ("expired", Auth::Bearer(expired), "expired"),
        ("tampered", Auth::Bearer(tampered), "not valid"),
        ("garbage", Auth::Bearer("abc.def.ghi".into()), "not valid"),
        (
            "not bearer",
            Auth::Header("Authorization", format!("Basic {}", ann.token)),
            "Bearer",
        ),
        (
            "bad key",
            Auth::Key("wrn_notarealkeyatall".into()),
            "API key",
        ),
        (
            "key without prefix",
            Auth::Key("sk_live_123".into()),
            "API key",
        ),
    ];
    for (what, auth, message) in cases {
        let (status, body) = cp.get("/v1/sandboxes", &auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{what}: {body}"
        );
    }
    let (status, _) = cp.get("/v1/sandboxes", &ann.auth()).await;
    assert_eq!(status, StatusCode::OK);
    cp.shutdown().await;
}

#[tokio::test]
async fn api_keys_are_shown_once_and_stored_hashed() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let (status, created) = cp
        .post("/v1/api-keys", &ann.auth(), json!({"name": "ci"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("wrn_"), "{key}");
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));

    // Only the SHA-256 is stored; the key appears in no column.
    let stored: String = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(&id)
        .fetch_one(cp.pool())
        .await
        .unwrap();
    assert_eq!(stored, hex::encode(Sha256::digest(key.as_bytes())));
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE row_to_json(api_keys)::text LIKE '%' || $1 || '%'",
    )
    .bind(&key)
    .fetch_one(cp.pool())
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    let key_auth = Auth::Key(key.clone());
    let (status, list) = cp.get("/v1/api-keys", &key_auth).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed = &list["api_keys"][0];
    assert_eq!(listed["id"], id.as_str());
    assert!(
        listed.get("key").is_none(),
        "listings never show the key: {listed}"
    );
    assert!(
        !listed["last_used_at"].is_null(),
        "using the key records it"
    );
    assert_eq!(listed["created_by"], ann.user_id.as_str());

    // A key cannot mint keys or act as a person.
    let (status, _) = cp
        .post("/v1/api-keys", &key_auth, json!({"name": "escalate"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = cp.get("/v1/me", &key_auth).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another team cannot see or delete it.
    let bob = cp.signup("bob@example.com").await;
    let (status, _) = cp.delete(&format!("/v1/api-keys/{id}"), &bob.auth()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, bobs) = cp.get("/v1/api-keys", &bob.auth()).await;
    assert_eq!(bobs["api_keys"].as_array().unwrap().len(), 0);

    let (status, _) = cp.delete(&format!("/v1/api-keys/{id}"), &ann.auth()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = cp.get("/v1/sandboxes", &key_auth).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a deleted key stops working"
    );
    let (status, _) = cp.delete(&format!("/v1/api-keys/{id}"), &ann.auth()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    cp.shutdown().await;
}

#[tokio::test]
async fn switch_team_needs_membership() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let bob = cp.signup("bob@example.com").await;
    let (status, body) = cp
        .post(
            "/v1/auth/switch-team",
            &ann.auth(),
            json!({"team_id": bob.team_id}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, session) = cp
        .post(
            "/v1/auth/switch-team",
            &ann.auth(),
            json!({"team_id": ann.team_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["team_id"], ann.team_id.as_str());
    cp.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let cp = TestCp::start_with_config(|config| config.json_body_limit = 4096).await;
    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = cp
            .request(Method::POST, "/v1/auth/signup", &Auth::None)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        ("malformed JSON", raw("{\"email\": ", Some("application/json")), StatusCode::BAD_REQUEST),
        ("not an object", raw("[1,2]", Some("application/json")), StatusCode::UNPROCESSABLE_ENTITY),
        ("missing field", raw("{\"email\":\"a@b.io\"}", Some("application/json")), StatusCode::UNPROCESSABLE_ENTITY),
        (
            "unknown field",
            raw("{\"email\":\"a@b.io\",\"password\":\"long enough!\",\"name\":\"A\",\"admin\":true}", Some("application/json")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("no content type", raw("{}", None), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("bad email", raw("{\"email\":\"nope\",\"password\":\"long enough!\",\"name\":\"A\"}", Some("application/json")), StatusCode::UNPROCESSABLE_ENTITY),
        ("control chars", raw("{\"email\":\"a@b.io\",\"password\":\"long enough!\",\"name\":\"A\\u0000\"}", Some("application/json")), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (what, request, expected) in cases {
        let (status, body) = common::read_json(request.send().await.unwrap(), what).await;
        assert_eq!(status, expected, "{what}: {body}");
    }
    let big = format!(
        "{{\"email\":\"a@b.io\",\"password\":\"{}\",\"name\":\"A\"}}",
        "x".repeat(10_000)
    );
    let response = cp
        .request(Method::POST, "/v1/auth/signup", &Auth::None)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, body) = common::read_json(response, "oversized").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // Unicode is data, not a problem.
    let (status, body) = cp
        .post(
            "/v1/auth/signup",
            &Auth::None,
            json!({"email": "zoë@例え.jp", "password": "pässwörd✓✓", "name": "Zoë 🦜"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["name"], "Zoë 🦜");

    let (status, body) = cp.get("/v1/no/such/route", &Auth::None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = cp
        .call(Method::PUT, "/v1/auth/login", &Auth::None, None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let (status, body) = cp.get("/health", &Auth::None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    cp.shutdown().await;
}
