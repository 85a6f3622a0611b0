//! Authorization matrix: every route of the OpenAPI document × {no auth, bad key, another team,
//! a platform admin of another team, member, admin, owner, the team's API key}. Nobody reads
//! or writes across teams; nobody gets in without credentials; roles gate team management.
//!
//! Runs without a host agent: sandbox routes then fail with 409/503 for the team's own callers,
//! which is fine here: the point is who gets past authentication and scoping.

mod common;

use common::{Auth, Person, TestCp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Routes anyone may call.
const PUBLIC: &[&str] = &[
    "/health",
    "/v1/auth/signup",
    "/v1/auth/login",
    "/v1/auth/oauth/github",
    "/v1/auth/oauth/github/callback",
];

/// A team with one person per role and one of each resource.
struct Fixture {
    team_id: String,
    owner: Person,
    admin: Person,
    member: Person,
    /// Another member: the target of member-management routes.
    other_member: Person,
    key: String,
    key_id: String,
    sandbox_id: String,
    template: String,
}

async fn fixture(cp: &TestCp, n: usize) -> Fixture {
    let owner = cp.signup(&format!("owner{n}@example.com")).await;
    let admin = cp.signup(&format!("admin{n}@example.com")).await;
    let member = cp.signup(&format!("member{n}@example.com")).await;
    let other_member = cp.signup(&format!("other{n}@example.com")).await;
    for (person, role) in [
        (&admin, "admin"),
        (&member, "member"),
        (&other_member, "member"),
    ] {
        wrenn_cp::db::teams::member_add(cp.pool(), &owner.team_id, &person.user_id, role)
            .await
            .unwrap();
    }
    let switch = |person: &Person| {
        let person = person.clone();
        let team = owner.team_id.clone();
        async move {
            let (status, session) = cp
                .post(
                    "/v1/auth/switch-team",
                    &person.auth(),
                    json!({"team_id": team}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{session}");
            Person::from_session(&session)
        }
    };
    let admin = switch(&admin).await;
    let member = switch(&member).await;
    let (_, created) = cp
        .post("/v1/api-keys", &owner.auth(), json!({"name": "fixture"}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    // No host answers here, so the create fails (503) but leaves the sandbox's row behind.
    let (status, body) = cp.post("/v1/sandboxes", &owner.auth(), json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let sandbox_id: String = sqlx::query_scalar("SELECT id FROM sandboxes WHERE team_id = $1")
        .bind(&owner.team_id)
        .fetch_one(cp.pool())
        .await
        .unwrap();
    let template = format!("tpl-of-{n}");
    let host_id: String = sqlx::query_scalar("SELECT id FROM hosts LIMIT 1")
        .fetch_one(cp.pool())
        .await
        .unwrap();
    wrenn_cp::db::templates::template_create(
        cp.pool(),
        &wrenn_cp::db::templates::NewTemplate {
            id: &format!("tpl-fixture{n}"),
            team_id: Some(&owner.team_id),
            name: &template,
            agent_name: &format!("tpl-fixture{n}"),
            host_id: Some(&host_id),
            snapshot: true,
            vcpus: 1,
            memory_mb: 256,
            disk_mb: 640,
            source_sandbox_id: None,
            created_by: None,
        },
    )
    .await
    .unwrap();
    Fixture {
        team_id: owner.team_id.clone(),
        owner,
        admin,
        member,
        other_member,
        key,
        key_id,
        sandbox_id,
        template,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    BadKey,
    Outsider,
    PlatformAdmin,
    Member,
    Admin,
    Owner,
    TeamKey,
}

const EVERYONE: [Who; 8] = [
    Who::Anonymous,
    Who::BadKey,
    Who::Outsider,
    Who::PlatformAdmin,
    Who::Member,
    Who::Admin,
    Who::Owner,
    Who::TeamKey,
];

fn auth(who: Who, f: &Fixture, outsider: &Person, platform_admin: &Person) -> Auth {
    match who {
        Who::Anonymous => Auth::None,
        Who::BadKey => Auth::Key("wrn_0000000000000000000000000000000000000000".into()),
        Who::Outsider => outsider.auth(),
        Who::PlatformAdmin => platform_admin.auth(),
        Who::Member => f.member.auth(),
        Who::Admin => f.admin.auth(),
        Who::Owner => f.owner.auth(),
        Who::TeamKey => Auth::Key(f.key.clone()),
    }
}

fn fill(path: &str, f: &Fixture) -> String {
    let mut filled = path.to_owned();
    let id = if path.starts_with("/v1/sandboxes/") {
        f.sandbox_id.clone()
    } else if path.starts_with("/v1/api-keys/") {
        f.key_id.clone()
    } else {
        f.team_id.clone()
    };
    filled = filled.replace("{id}", &id);
    filled = filled.replace("{name}", &f.template);
    filled = filled.replace("{user_id}", &f.other_member.user_id);
    // Any other parameter (a process pid or tag…).
    while let (Some(start), Some(end)) = (filled.find('{'), filled.find('}')) {
        filled.replace_range(start..=end, "1");
    }
    // Required query parameters, so a refusal is about who asks.
    if path.contains("/files") && !path.ends_with("/mkdir") && !path.ends_with("/move") {
        filled.push_str("?path=/tmp/x");
    } else if path == "/v1/users/search" {
        filled.push_str("?email=example");
    }
    filled
}

/// A body the route accepts in shape, so a refusal is about authorization, not parsing.
fn body_for(method: &str, path: &str) -> Option<Value> {
    if method == "get" || method == "delete" {
        return None;
    }
    Some(match path {
        p if p.ends_with("/exec") => json!({"cmd": "true"}),
        p if p.ends_with("/timeout") => json!({"timeout_sec": 60}),
        p if p.ends_with("/snapshot") => json!({"name": "snap"}),
        p if p.ends_with("/files/mkdir") => json!({"path": "/tmp/x"}),
        p if p.ends_with("/files/move") => json!({"source": "/tmp/x", "destination": "/tmp/y"}),
        "/v1/auth/switch-team" => json!({"team_id": "team-nonexistent"}),
        "/v1/me" => json!({"name": "Renamed"}),
        "/v1/me/password" => {
            json!({"current_password": "wrong password", "new_password": "whatever long"})
        }
        "/v1/api-keys" => json!({"name": "k"}),
        "/v1/teams" => json!({"name": "another team"}),
        p if p.ends_with("/members") => json!({"email": "nobody@example.com"}),
        p if p.contains("/members/") => json!({"role": "member"}),
        p if p.starts_with("/v1/teams/") => json!({"name": "renamed"}),
        _ => json!({}),
    })
}

/// Whether a route acts on one team's resource named in its path.
fn names_team_resource(path: &str) -> bool {
    path.contains('{')
}

/// Least role for team-management routes; None: every member of the team (and its keys).
fn least_role(method: &str, path: &str) -> Option<Who> {
    match (method, path) {
        ("patch", "/v1/teams/{id}") => Some(Who::Admin),
        ("delete", "/v1/teams/{id}") => Some(Who::Owner),
        ("post", "/v1/teams/{id}/members") => Some(Who::Admin),
        ("patch" | "delete", "/v1/teams/{id}/members/{user_id}") => Some(Who::Admin),
        _ => None,
    }
}

fn rank(who: Who) -> u8 {
    match who {
        Who::Member | Who::TeamKey => 1,
        Who::Admin => 2,
        Who::Owner => 3,
        _ => 0,
    }
}

/// Routes for people only: API keys are refused with 403.
fn people_only(method: &str, path: &str) -> bool {
    (method == "post" && path == "/v1/api-keys")
        || path.starts_with("/v1/me")
        || path.starts_with("/v1/teams")
        || path.starts_with("/v1/users")
        || path == "/v1/auth/switch-team"
}

fn destructive(method: &str, path: &str) -> bool {
    method == "delete" || path.ends_with("/leave") || path.ends_with("/password")
}

async fn send(
    cp: &TestCp,
    method: &str,
    path: &str,
    who_auth: &Auth,
    body: Option<Value>,
) -> (StatusCode, String) {
    let method: Method = method.to_uppercase().parse().unwrap();
    let mut request = cp.request(method.clone(), path, who_auth);
    if method == Method::GET {
        // WebSocket routes authenticate before upgrading; plain routes ignore these headers.
        request = request
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    if method == Method::POST && path.contains("/files?") {
        let form = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhi\r\n--b--\r\n";
        request = request
            .header("content-type", "multipart/form-data; boundary=b")
            .body(form);
    } else if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = if status == StatusCode::SWITCHING_PROTOCOLS {
        String::new()
    } else {
        response.text().await.unwrap()
    };
    if !status.is_success() && status != StatusCode::SWITCHING_PROTOCOLS {
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: non-JSON error {status}: {text}"));
        common::assert_error_shape(&body, path);
    }
    (status, text)
}

#[tokio::test]
async fn every_route_enforces_authentication_and_team_scope() {
    let cp = TestCp::start().await;
    let platform_admin = cp.signup("root@example.com").await;
    let outsider = cp.signup("outsider@example.com").await;
    let shared = fixture(&cp, 0).await;
    let document: Value = serde_json::from_str(&wrenn_cp::http::openapi_json()).unwrap();
    let mut checked = 0;
    let mut fixtures = 1;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if PUBLIC.contains(&path.as_str()) {
                continue;
            }
            for who in EVERYONE {
                let fresh;
                let f = if destructive(method, path) && rank(who) > 0 {
                    fresh = fixture(&cp, fixtures).await;
                    fixtures += 1;
                    &fresh
                } else {
                    &shared
                };
                let url = fill(path, f);
                let (status, text) = send(
                    &cp,
                    method,
                    &url,
                    &auth(who, f, &outsider, &platform_admin),
                    body_for(method, path),
                )
                .await;
                let case = format!("{method} {path} as {who:?}: {status} {text}");
                checked += 1;
                match who {
                    Who::Anonymous | Who::BadKey => {
                        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}")
                    }
                    Who::Outsider | Who::PlatformAdmin => {
                        if names_team_resource(path) {
                            assert_eq!(status, StatusCode::NOT_FOUND, "{case}");
                        }
                        // Collections answer with the caller's own team: never this team's data.
                        if path == "/v1/audit-logs" {
                            // The caller's own log may name what they tried; never this team's entries.
                            let log: Value = serde_json::from_str(&text).unwrap();
                            for entry in log["audit_logs"].as_array().unwrap() {
                                assert_ne!(entry["team_id"], f.team_id.as_str(), "{case}");
                            }
                            continue;
                        }
                        // (An id the caller sent may be echoed back in a "not found".)
                        for secret in [&f.sandbox_id, &f.key_id, &f.template, &f.team_id]
                            .into_iter()
                            .filter(|s| !url.contains(s.as_str()))
                        {
                            assert!(!text.contains(secret.as_str()), "{case}: leaks {secret}");
                        }
                    }
                    Who::TeamKey if people_only(method, path) => {
                        assert_eq!(status, StatusCode::FORBIDDEN, "{case}")
                    }
                    Who::Member | Who::Admin | Who::Owner | Who::TeamKey => {
                        if let Some(least) = least_role(method, path) {
                            if rank(who) < rank(least) {
                                assert_eq!(status, StatusCode::FORBIDDEN, "{case}");
                                continue;
                            }
                        }
                        assert!(
                            status != StatusCode::UNAUTHORIZED
                                && status != StatusCode::INTERNAL_SERVER_ERROR,
                            "{case}"
                        );
                        if path.starts_with("/v1/sandboxes/{id}")
                            || path.starts_with("/v1/templates/{name}")
                        {
                            assert_ne!(
                                status,
                                StatusCode::NOT_FOUND,
                                "{case}: the team's own resource"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked > 200,
        "only {checked} cases: is the OpenAPI document complete?"
    );
    cp.shutdown().await;
}
