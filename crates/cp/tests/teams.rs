//! Teams, members, roles and user search against a real control plane and PostgreSQL. The
//! control plane's host agent is unreachable here: team deletion must still succeed.

mod common;

use common::{Auth, Person, TestCp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wrenn_cp::ids::{self, IdKind};

/// A team `owner` creates, with `members` added in the given roles. Returns its id.
async fn team_with(cp: &TestCp, owner: &Person, name: &str, members: &[(&Person, &str)]) -> String {
    let (status, team) = cp
        .post("/v1/teams", &owner.auth(), json!({"name": name}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{team}");
    let id = team["id"].as_str().unwrap().to_owned();
    for (person, role) in members {
        let (status, body) = cp
            .post(
                &format!("/v1/teams/{id}/members"),
                &owner.auth(),
                json!({"user_id": person.user_id, "role": role}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "add {} as {role}: {body}",
            person.email
        );
    }
    id
}

/// `person`'s session switched to `team_id`.
async fn session_in(cp: &TestCp, person: &Person, team_id: &str) -> Person {
    let (status, body) = cp
        .post(
            "/v1/auth/switch-team",
            &person.auth(),
            json!({"team_id": team_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Person::from_session(&body)
}

async fn roles(cp: &TestCp, by: &Person, team_id: &str) -> Vec<(String, String)> {
    let (status, body) = cp
        .get(&format!("/v1/teams/{team_id}/members"), &by.auth())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (resource_type, action, status) of a team's audit entries, oldest first.
async fn audit_entries(cp: &TestCp, team_id: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT resource_type, action, status FROM audit_logs WHERE team_id = $1 ORDER BY id",
    )
    .bind(team_id)
    .fetch_all(cp.pool())
    .await
    .unwrap()
}

fn entry(resource_type: &str, action: &str, status: &str) -> (String, String, String) {
    (resource_type.into(), action.into(), status.into())
}

#[tokio::test]
async fn teams_are_created_listed_renamed_and_deleted() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;

    let (status, list) = cp.get("/v1/teams", &ann.auth()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        list["teams"].as_array().unwrap().len(),
        1,
        "the personal team: {list}"
    );
    assert_eq!(list["teams"][0]["id"], ann.team_id.as_str());
    assert_eq!(list["teams"][0]["role"], "owner");

    let (status, team) = cp
        .post("/v1/teams", &ann.auth(), json!({"name": "  Research  "}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{team}");
    assert_eq!(team["name"], "Research");
    assert_eq!(team["role"], "owner");
    let id = team["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("team-"), "{id}");

    let (_, list) = cp.get("/v1/teams", &ann.auth()).await;
    let names: Vec<&str> = list["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann's team", "Research"]);

    let (status, got) = cp.get(&format!("/v1/teams/{id}"), &ann.auth()).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["name"], "Research");

    let (status, renamed) = cp
        .patch(
            &format!("/v1/teams/{id}"),
            &ann.auth(),
            json!({"name": "Lab"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["name"], "Lab");
    let (_, got) = cp.get(&format!("/v1/teams/{id}"), &ann.auth()).await;
    assert_eq!(got["name"], "Lab");

    for (body, expected) in [
        (json!({"name": ""}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"name": "x".repeat(101)}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "ok", "owner": "me"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, error) = cp.post("/v1/teams", &ann.auth(), body.clone()).await;
        assert_eq!(status, expected, "create {body}: {error}");
        let (status, error) = cp
            .patch(&format!("/v1/teams/{id}"), &ann.auth(), body.clone())
            .await;
        assert_eq!(status, expected, "rename {body}: {error}");
    }

    let (status, body) = cp.delete(&format!("/v1/teams/{id}"), &ann.auth()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = cp.get(&format!("/v1/teams/{id}"), &ann.auth()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = cp.delete(&format!("/v1/teams/{id}"), &ann.auth()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleting twice: {body}");
    let (_, list) = cp.get("/v1/teams", &ann.auth()).await;
    assert_eq!(list["teams"].as_array().unwrap().len(), 1, "{list}");
    let deleted: bool =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM teams WHERE id = $1")
            .bind(&id)
            .fetch_one(cp.pool())
            .await
            .unwrap();
    assert!(deleted, "deletion is soft");

    let entries = audit_entries(&cp, &id).await;
    for expected in [
        entry("team", "create", "success"),
        entry("team", "update", "success"),
        entry("team", "delete", "success"),
    ] {
        assert!(
            entries.contains(&expected),
            "{expected:?} missing from {entries:?}"
        );
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn members_are_added_by_email_and_by_id() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let bob = cp.signup("bob@example.com").await;
    let carol = cp.signup("carol@example.com").await;
    let team = team_with(&cp, &ann, "Research", &[]).await;
    let members = format!("/v1/teams/{team}/members");

    let (status, added) = cp
        .post(&members, &ann.auth(), json!({"email": " BOB@example.com "}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["user_id"], bob.user_id.as_str());
    assert_eq!(added["role"], "member", "the default role");
    let (status, added) = cp
        .post(
            &members,
            &ann.auth(),
            json!({"user_id": carol.user_id, "role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["role"], "admin");
    assert_eq!(
        roles(&cp, &ann, &team).await,
        [
            ("ann@example.com".to_owned(), "owner".to_owned()),
            ("bob@example.com".to_owned(), "member".to_owned()),
            ("carol@example.com".to_owned(), "admin".to_owned()),
        ]
    );

    let cases = [
        (json!({"email": "bob@example.com"}), StatusCode::CONFLICT),
        (
            json!({"user_id": bob.user_id, "role": "admin"}),
            StatusCode::CONFLICT,
        ),
        (
            json!({"email": "nobody@example.com"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"user_id": ids::generate(IdKind::User)}),
            StatusCode::NOT_FOUND,
        ),
        (json!({"user_id": "usr-../../etc"}), StatusCode::NOT_FOUND),
        (
            json!({"user_id": bob.user_id, "email": "bob@example.com"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"email": "dan@example.com", "role": "boss"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "dan@example.com", "team": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (body, expected) in cases {
        let (status, error) = cp.post(&members, &ann.auth(), body.clone()).await;
        assert_eq!(status, expected, "{body}: {error}");
    }

    // The new members see the team, with their role, and can work in it.
    let (_, list) = cp.get("/v1/teams", &bob.auth()).await;
    let team_entry = list["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == team.as_str())
        .cloned();
    assert_eq!(team_entry.expect("bob sees the team")["role"], "member");
    let bob_in_team = session_in(&cp, &bob, &team).await;
    let (status, body) = cp.get("/v1/api-keys", &bob_in_team.auth()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Removing a member ends their sessions in the team and the keys they made for it.
    let bob_key = cp.api_key(&bob_in_team).await;
    let (status, body) = cp
        .delete(&format!("{members}/{}", bob.user_id), &carol.auth())
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "an admin removes a member: {body}"
    );
    let (status, _) = cp.get("/v1/api-keys", &bob_in_team.auth()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = cp.get("/v1/sandboxes", &Auth::Key(bob_key)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a departed member's key stops working"
    );
    let (status, body) = cp
        .delete(&format!("{members}/{}", bob.user_id), &carol.auth())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no longer a member: {body}");

    let entries = audit_entries(&cp, &team).await;
    for expected in [
        entry("member", "add", "success"),
        entry("member", "add", "failure"),
        entry("member", "remove", "success"),
        entry("member", "remove", "failure"),
    ] {
        assert!(
            entries.contains(&expected),
            "{expected:?} missing from {entries:?}"
        );
    }
    cp.shutdown().await;
}

/// (what, who, method, path, body, expected status) of one request.
type Step<'a> = (
    &'a str,
    &'a Person,
    Method,
    String,
    Option<Value>,
    StatusCode,
);

#[tokio::test]
async fn roles_decide_who_may_manage_whom() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await; // owner
    let bob = cp.signup("bob@example.com").await; // admin
    let carol = cp.signup("carol@example.com").await; // member
    let dave = cp.signup("dave@example.com").await; // member
    let erin = cp.signup("erin@example.com").await; // not yet in the team
    let team = team_with(
        &cp,
        &ann,
        "Research",
        &[(&bob, "admin"), (&carol, "member"), (&dave, "member")],
    )
    .await;
    let t = |rest: &str| format!("/v1/teams/{team}{rest}");
    let member = |p: &Person| t(&format!("/members/{}", p.user_id));

    // In order: each step runs against the state the steps before it left.
    #[rustfmt::skip]
    let steps: Vec<Step> = vec![
        // Members look, but do not touch.
        ("member views the team", &carol, Method::GET, t(""), None, StatusCode::OK),
        ("member lists members", &carol, Method::GET, t("/members"), None, StatusCode::OK),
        ("member adds", &carol, Method::POST, t("/members"), Some(json!({"user_id": erin.user_id})), StatusCode::FORBIDDEN),
        ("member promotes self", &carol, Method::PATCH, member(&carol), Some(json!({"role": "admin"})), StatusCode::FORBIDDEN),
        ("member changes another", &carol, Method::PATCH, member(&dave), Some(json!({"role": "admin"})), StatusCode::FORBIDDEN),
        ("member removes another", &carol, Method::DELETE, member(&dave), None, StatusCode::FORBIDDEN),
        ("member renames", &carol, Method::PATCH, t(""), Some(json!({"name": "Mine"})), StatusCode::FORBIDDEN),
        ("member deletes the team", &carol, Method::DELETE, t(""), None, StatusCode::FORBIDDEN),
        // Admins manage members and admins, never owners.
        ("admin adds a member", &bob, Method::POST, t("/members"), Some(json!({"user_id": erin.user_id})), StatusCode::CREATED),
        ("admin promotes to admin", &bob, Method::PATCH, member(&carol), Some(json!({"role": "admin"})), StatusCode::OK),
        ("admin demotes an admin", &bob, Method::PATCH, member(&carol), Some(json!({"role": "member"})), StatusCode::OK),
        ("admin promotes to owner", &bob, Method::PATCH, member(&dave), Some(json!({"role": "owner"})), StatusCode::FORBIDDEN),
        ("admin demotes the owner", &bob, Method::PATCH, member(&ann), Some(json!({"role": "member"})), StatusCode::FORBIDDEN),
        ("admin removes the owner", &bob, Method::DELETE, member(&ann), None, StatusCode::FORBIDDEN),
        ("admin removes a member", &bob, Method::DELETE, member(&erin), None, StatusCode::NO_CONTENT),
        ("admin adds an owner", &bob, Method::POST, t("/members"), Some(json!({"user_id": erin.user_id, "role": "owner"})), StatusCode::FORBIDDEN),
        ("admin renames", &bob, Method::PATCH, t(""), Some(json!({"name": "Lab"})), StatusCode::OK),
        ("admin deletes the team", &bob, Method::DELETE, t(""), None, StatusCode::FORBIDDEN),
        ("admin changes someone unknown", &bob, Method::PATCH, member(&erin), Some(json!({"role": "admin"})), StatusCode::NOT_FOUND),
        ("bad role", &bob, Method::PATCH, member(&dave), Some(json!({"role": "king"})), StatusCode::UNPROCESSABLE_ENTITY),
        // Owners do everything.
        ("owner adds an owner", &ann, Method::POST, t("/members"), Some(json!({"email": "erin@example.com", "role": "owner"})), StatusCode::CREATED),
        ("owner promotes to owner", &ann, Method::PATCH, member(&bob), Some(json!({"role": "owner"})), StatusCode::OK),
        ("owner demotes an owner", &bob, Method::PATCH, member(&erin), Some(json!({"role": "admin"})), StatusCode::OK),
        ("owner removes an owner", &bob, Method::DELETE, member(&ann), None, StatusCode::NO_CONTENT),
        // A member may always leave.
        ("member leaves", &dave, Method::POST, t("/leave"), None, StatusCode::NO_CONTENT),
        ("former member looks", &dave, Method::GET, t(""), None, StatusCode::NOT_FOUND),
    ];
    for (what, who, method, path, body, expected) in steps {
        let (status, response) = cp.call(method, &path, &who.auth(), body).await;
        assert_eq!(status, expected, "{what}: {response}");
    }
    assert_eq!(
        roles(&cp, &bob, &team).await,
        [
            ("bob@example.com".to_owned(), "owner".to_owned()),
            ("carol@example.com".to_owned(), "member".to_owned()),
            ("erin@example.com".to_owned(), "admin".to_owned()),
        ]
    );
    let (_, got) = cp.get(&t(""), &carol.auth()).await;
    assert_eq!(got["name"], "Lab");
    assert_eq!(got["role"], "member");
    cp.shutdown().await;
}

#[tokio::test]
async fn the_last_owner_cannot_leave_be_removed_or_demoted() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let bob = cp.signup("bob@example.com").await;
    let team = team_with(&cp, &ann, "Research", &[(&bob, "admin")]).await;
    let t = |rest: &str| format!("/v1/teams/{team}{rest}");

    let (status, body) = cp.call(Method::POST, &t("/leave"), &ann.auth(), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("last owner"),
        "{body}"
    );
    let (status, body) = cp
        .patch(
            &t(&format!("/members/{}", ann.user_id)),
            &ann.auth(),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "demote self: {body}");
    let (status, body) = cp
        .delete(&t(&format!("/members/{}", ann.user_id)), &ann.auth())
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "remove self: {body}");
    let (status, body) = cp
        .patch(
            &t(&format!("/members/{}", ann.user_id)),
            &ann.auth(),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "staying owner is no change: {body}");

    // With a second owner, either may go; then the other is the last one again.
    let (status, body) = cp
        .patch(
            &t(&format!("/members/{}", bob.user_id)),
            &ann.auth(),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = cp
        .patch(
            &t(&format!("/members/{}", ann.user_id)),
            &ann.auth(),
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = cp
        .delete(&t(&format!("/members/{}", bob.user_id)), &bob.auth())
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = cp.call(Method::POST, &t("/leave"), &ann.auth(), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Two owners leaving at once: the owner lock lets exactly one of them go.
    for round in 0..5 {
        let carol = cp.signup(&format!("carol{round}@example.com")).await;
        let (status, body) = cp
            .post(
                &t("/members"),
                &bob.auth(),
                json!({"user_id": carol.user_id, "role": "owner"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let leave = |p: Person| {
            let request = cp.request(Method::POST, &t("/leave"), &p.auth());
            async move { request.send().await.unwrap().status() }
        };
        let (first, second) = tokio::join!(leave(bob.clone()), leave(carol.clone()));
        let mut statuses = [first, second];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::NO_CONTENT, StatusCode::CONFLICT],
            "round {round}"
        );
        let owners: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM team_members WHERE team_id = $1 AND role = 'owner'",
        )
        .bind(&team)
        .fetch_one(cp.pool())
        .await
        .unwrap();
        assert_eq!(owners, 1, "round {round}");
        if first == StatusCode::NO_CONTENT {
            // Bob left: bring him back as owner for the next round, through Carol.
            let (status, body) = cp
                .post(
                    &t("/members"),
                    &carol.auth(),
                    json!({"user_id": bob.user_id, "role": "owner"}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let (status, body) = cp
                .call(Method::POST, &t("/leave"), &carol.auth(), None)
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        } else {
            let (status, body) = cp
                .delete(&t(&format!("/members/{}", carol.user_id)), &bob.auth())
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "carol already left: {body}");
        }
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn strangers_get_404_on_every_team_route() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let mallory = cp.signup("mallory@example.com").await;
    let team = team_with(&cp, &ann, "Research", &[]).await;
    let deleted = team_with(&cp, &ann, "Old", &[(&mallory, "owner")]).await;
    let (status, body) = cp
        .delete(&format!("/v1/teams/{deleted}"), &mallory.auth())
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let routes = |id: &str| -> Vec<(Method, String, Option<Value>)> {
        vec![
            (Method::GET, format!("/v1/teams/{id}"), None),
            (
                Method::PATCH,
                format!("/v1/teams/{id}"),
                Some(json!({"name": "Mine"})),
            ),
            (Method::DELETE, format!("/v1/teams/{id}"), None),
            (Method::GET, format!("/v1/teams/{id}/members"), None),
            (
                Method::POST,
                format!("/v1/teams/{id}/members"),
                Some(json!({"user_id": mallory.user_id, "role": "owner"})),
            ),
            (
                Method::PATCH,
                format!("/v1/teams/{id}/members/{}", ann.user_id),
                Some(json!({"role": "member"})),
            ),
            (
                Method::DELETE,
                format!("/v1/teams/{id}/members/{}", ann.user_id),
                None,
            ),
            (Method::POST, format!("/v1/teams/{id}/leave"), None),
        ]
    };
    let unknown = ids::generate(IdKind::Team);
    for id in [
        team.as_str(),
        deleted.as_str(),
        unknown.as_str(),
        "team-UPPER",
        "sb-nope",
    ] {
        for (method, path, body) in routes(id) {
            let (status, response) = cp.call(method.clone(), &path, &mallory.auth(), body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {response}");
            assert!(!response.to_string().contains("Research"), "{response}");
        }
    }
    assert_eq!(
        roles(&cp, &ann, &team).await,
        [("ann@example.com".to_owned(), "owner".to_owned())]
    );
    let (_, got) = cp.get(&format!("/v1/teams/{team}"), &ann.auth()).await;
    assert_eq!(got["name"], "Research");

    // A stranger's attempts are logged in their own team, not in the one they probed.
    let probed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE team_id = $1 AND actor_id = $2")
            .bind(&team)
            .bind(&mallory.user_id)
            .fetch_one(cp.pool())
            .await
            .unwrap();
    assert_eq!(probed, 0);
    let own: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE team_id = $1 AND status = 'failure' AND resource_type IN ('team', 'member')",
    )
    .bind(&mallory.team_id)
    .fetch_one(cp.pool())
    .await
    .unwrap();
    assert!(own > 0);
    cp.shutdown().await;
}

#[tokio::test]
async fn api_keys_get_403_on_team_routes() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let bob = cp.signup("bob@example.com").await;
    let key = Auth::Key(cp.api_key(&ann).await);
    let team = ann.team_id.clone();
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/teams".into(), None),
        (
            Method::POST,
            "/v1/teams".into(),
            Some(json!({"name": "Keyed"})),
        ),
        (Method::GET, format!("/v1/teams/{team}"), None),
        (
            Method::PATCH,
            format!("/v1/teams/{team}"),
            Some(json!({"name": "Keyed"})),
        ),
        (Method::DELETE, format!("/v1/teams/{team}"), None),
        (Method::GET, format!("/v1/teams/{team}/members"), None),
        (
            Method::POST,
            format!("/v1/teams/{team}/members"),
            Some(json!({"user_id": bob.user_id})),
        ),
        (
            Method::PATCH,
            format!("/v1/teams/{team}/members/{}", ann.user_id),
            Some(json!({"role": "member"})),
        ),
        (
            Method::DELETE,
            format!("/v1/teams/{team}/members/{}", ann.user_id),
            None,
        ),
        (Method::POST, format!("/v1/teams/{team}/leave"), None),
        (Method::GET, "/v1/users/search?email=example".into(), None),
    ];
    for (method, path, body) in routes {
        let (status, response) = cp.call(method.clone(), &path, &key, body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {response}");
        let (status, response) = cp.call(method.clone(), &path, &Auth::None, body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without credentials: {response}"
        );
    }
    let (_, got) = cp.get(&format!("/v1/teams/{team}"), &ann.auth()).await;
    assert_eq!(got["name"], "ann's team", "nothing changed");
    cp.shutdown().await;
}

/// Inserts a sandbox row for `team_id` as if one had been created (no agent runs here).
async fn sandbox_row(cp: &TestCp, team_id: &str, state: &str, on_host: bool) -> String {
    let id = ids::generate(IdKind::Sandbox);
    sqlx::query(
        "INSERT INTO sandboxes (id, team_id, host_id, template_id, template, state, vcpus, memory_mb, \
         disk_mb, timeout_sec, internet) \
         SELECT $1, $2, CASE WHEN $4 THEN (SELECT id FROM hosts LIMIT 1) END, t.id, t.name, $3, 1, 256, 1024, 300, false \
         FROM templates t WHERE t.team_id IS NULL ORDER BY t.name LIMIT 1",
    )
    .bind(&id)
    .bind(team_id)
    .bind(state)
    .bind(on_host)
    .execute(cp.pool())
    .await
    .unwrap();
    id
}

async fn sandbox_state(cp: &TestCp, id: &str) -> String {
    sqlx::query_scalar("SELECT state FROM sandboxes WHERE id = $1")
        .bind(id)
        .fetch_one(cp.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn deleting_a_team_ends_its_keys_sessions_and_sandboxes() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    let bob = cp.signup("bob@example.com").await;
    let team = team_with(&cp, &ann, "Doomed", &[(&bob, "member")]).await;
    let ann_in_team = session_in(&cp, &ann, &team).await;
    let bob_in_team = session_in(&cp, &bob, &team).await;
    let key = Auth::Key(cp.api_key(&ann_in_team).await);
    let (status, body) = cp.get("/v1/sandboxes", &key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let unplaced = sandbox_row(&cp, &team, "pending", false).await;
    let unreachable = sandbox_row(&cp, &team, "running", true).await;
    let others = sandbox_row(&cp, &ann.team_id, "pending", false).await;

    let (status, body) = cp.delete(&format!("/v1/teams/{team}"), &bob.auth()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "members cannot delete: {body}"
    );
    let (status, body) = cp.delete(&format!("/v1/teams/{team}"), &ann.auth()).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "deleted although its host is unreachable: {body}"
    );

    for (what, auth) in [
        ("API key", key),
        ("owner's session", ann_in_team.auth()),
        ("member's session", bob_in_team.auth()),
    ] {
        let (status, body) = cp.get("/v1/sandboxes", &auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }
    let (status, body) = cp.get("/v1/teams", &ann.auth()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "sessions in other teams go on: {body}"
    );

    assert_eq!(sandbox_state(&cp, &unplaced).await, "stopped");
    assert_eq!(
        sandbox_state(&cp, &unreachable).await,
        "running",
        "its host could not be reached"
    );
    assert_eq!(
        sandbox_state(&cp, &others).await,
        "pending",
        "other teams' sandboxes are untouched"
    );

    // Logging in again lands in a live team, although the deleted one was the last used.
    let (status, session) = cp
        .post(
            "/v1/auth/login",
            &Auth::None,
            json!({"email": "bob@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["team_id"], bob.team_id.as_str());

    let entries = audit_entries(&cp, &team).await;
    assert!(
        entries.contains(&entry("team", "delete", "success")),
        "{entries:?}"
    );
    assert!(
        entries.contains(&entry("team", "delete", "failure")),
        "{entries:?}"
    );
    assert!(
        entries.contains(&entry("sandbox", "destroy", "success")),
        "{entries:?}"
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn user_search_escapes_patterns_and_shows_little() {
    let cp = TestCp::start().await;
    let ann = cp.signup("ann@example.com").await;
    for email in [
        "bob_smith@example.com",
        "bobxsmith@example.com",
        "50%off@shop.example",
        "Zed@Other.example",
    ] {
        cp.signup(email).await;
    }
    for n in 0..25 {
        sqlx::query("INSERT INTO users (id, email, name) VALUES ($1, $2, 'Bulk')")
            .bind(ids::generate(IdKind::User))
            .bind(format!("bulk{n:02}@many.example"))
            .execute(cp.pool())
            .await
            .unwrap();
    }
    let search = |query: &str| {
        let path = format!("/v1/users/search?{query}");
        let auth = ann.auth();
        let cp = &cp;
        async move { cp.get(&path, &auth).await }
    };
    let emails = |body: &Value| -> Vec<String> {
        body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, body) = search("email=b_s").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        emails(&body),
        ["bob_smith@example.com"],
        "_ is not a wildcard"
    );
    let (_, body) = search("email=%25of").await;
    assert_eq!(
        emails(&body),
        ["50%off@shop.example"],
        "% is not a wildcard"
    );
    let (_, body) = search("email=%25%25%25").await;
    assert!(emails(&body).is_empty(), "{body}");
    let (_, body) = search("email=___").await;
    assert!(emails(&body).is_empty(), "{body}");
    let (_, body) = search("email=%5C%5C%5C").await;
    assert!(emails(&body).is_empty(), "backslashes too: {body}");
    let (_, body) = search("email=zed@OTHER").await;
    assert_eq!(emails(&body), ["Zed@Other.example"], "case-insensitive");
    let (_, body) = search("email=many.example").await;
    assert_eq!(body["users"].as_array().unwrap().len(), 20, "at most 20");
    let (_, body) = search("email=bob").await;
    for user in body["users"].as_array().unwrap() {
        let mut keys: Vec<&str> = user
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["email", "id", "name"],
            "nothing but id, email and name: {user}"
        );
    }

    for (query, expected) in [
        ("email=%25", StatusCode::UNPROCESSABLE_ENTITY),
        ("email=ab", StatusCode::UNPROCESSABLE_ENTITY),
        ("email=%20%20ab%20", StatusCode::UNPROCESSABLE_ENTITY),
        ("email=", StatusCode::UNPROCESSABLE_ENTITY),
        ("", StatusCode::UNPROCESSABLE_ENTITY),
        ("name=bob", StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = search(query).await;
        assert_eq!(status, expected, "{query}: {body}");
    }
    let (status, _) = cp.get("/v1/users/search?email=bob", &Auth::None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    cp.shutdown().await;
}
