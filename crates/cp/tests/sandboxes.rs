//! Sandbox lifecycle through the REST API, on a real host agent booting real VMs (QEMU/TCG).

mod common;

use std::time::Duration;

use common::{Auth, TestCp};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn create(cp: &TestCp, auth: &Auth, body: Value) -> Value {
    let (status, sandbox) = cp.post("/v1/sandboxes", auth, body).await;
    assert_eq!(status, StatusCode::CREATED, "create sandbox: {sandbox}");
    assert_eq!(sandbox["state"], "running", "{sandbox}");
    sandbox
}

async fn exec(cp: &TestCp, auth: &Auth, id: &str, body: Value) -> Value {
    let (status, result) = cp
        .post(&format!("/v1/sandboxes/{id}/exec"), auth, body)
        .await;
    assert_eq!(status, StatusCode::OK, "exec: {result}");
    result
}

async fn sh(cp: &TestCp, auth: &Auth, id: &str, script: &str) -> String {
    let result = exec(cp, auth, id, json!({"cmd": "sh", "args": ["-c", script]})).await;
    assert_eq!(result["exit_code"], 0, "{script}: {result}");
    result["stdout"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn lifecycle_exec_pause_resume_and_audit() {
    let cp = TestCp::start_with_agent().await;
    let ann = cp.signup("ann@example.com").await;
    let key = Auth::Key(cp.api_key(&ann).await);
    let sandbox = create(
        &cp,
        &key,
        json!({"template": "minimal", "metadata": {"job": "build-7"}, "env": {"GREETING": "hello"}, "internet": false}),
    )
    .await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sb-"), "{id}");
    assert_eq!(sandbox["team_id"], ann.team_id.as_str());
    assert_eq!(sandbox["vcpus"], 1);
    assert_eq!(sandbox["memory_mb"], 256);
    assert_eq!(sandbox["internet"], false);
    assert!(sandbox["boot_ms"].as_u64().unwrap() > 0);
    // The host's boot snapshot of the image, or a cold boot if this is its first sandbox of
    // this size; the environment reaches the guest either way (checked below).
    let started_from = sandbox["started_from"].as_str().unwrap_or_default();
    assert!(
        ["boot_snapshot", "cold_boot"].contains(&started_from),
        "{sandbox}"
    );

    // Exec: output, exit codes, env, errors.
    let result = exec(
        &cp,
        &key,
        &id,
        json!({"cmd": "python3", "args": ["-c", "print(6*7)"]}),
    )
    .await;
    assert_eq!(result["stdout"], "42\n");
    assert_eq!(result["encoding"], "utf8");
    assert_eq!(result["exit_code"], 0);
    let result = exec(
        &cp,
        &key,
        &id,
        json!({"cmd": "sh", "args": ["-c", "echo out; echo err >&2; exit 3"]}),
    )
    .await;
    assert_eq!(
        (
            result["stdout"].as_str(),
            result["stderr"].as_str(),
            result["exit_code"].as_i64()
        ),
        (Some("out\n"), Some("err\n"), Some(3))
    );
    assert_eq!(
        sh(&cp, &key, &id, "echo $GREETING").await,
        "hello\n",
        "sandbox env reaches processes"
    );
    let result = exec(
        &cp,
        &key,
        &id,
        json!({"cmd": "sh", "args": ["-c", "printf '\\377\\376'"]}),
    )
    .await;
    assert_eq!(result["encoding"], "base64");
    assert_eq!(result["stdout"], "//4=");
    let result = exec(
        &cp,
        &key,
        &id,
        json!({"cmd": "sleep", "args": ["30"], "timeout_sec": 1}),
    )
    .await;
    assert_eq!(result["timed_out"], true, "{result}");
    let (status, body) = cp
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &key,
            json!({"cmd": "/no/such/binary"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/binary"),
        "{body}"
    );
    let (status, body) = cp
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &key,
            json!({"cmd": "cat", "stdin": true}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "one-shot exec takes no stdin: {body}"
    );
    let (status, body) = cp
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &key,
            json!({"cmd": "sleep", "args": ["300"], "background": true, "tag": "bg"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["pid"].as_u64().unwrap() > 0);
    assert_eq!(body["tag"], "bg");

    // List with filters and pagination.
    let second = create(&cp, &key, json!({"metadata": {"job": "build-8"}})).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let (_, page) = cp.get("/v1/sandboxes?limit=1", &key).await;
    assert_eq!(page["sandboxes"].as_array().unwrap().len(), 1);
    assert_eq!(
        page["sandboxes"][0]["id"],
        second_id.as_str(),
        "newest first"
    );
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, page) = cp
        .get(&format!("/v1/sandboxes?limit=1&cursor={cursor}"), &key)
        .await;
    assert_eq!(page["sandboxes"][0]["id"], id.as_str());
    assert!(page["next_cursor"].is_null(), "{page}");
    let (_, filtered) = cp.get("/v1/sandboxes?metadata=job%3Dbuild-7", &key).await;
    let ids: Vec<&str> = filtered["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);

    // Pause, state errors, resume with memory intact.
    sh(&cp, &key, &id, "echo kept > /root/file").await;
    let (status, paused) = cp
        .post(&format!("/v1/sandboxes/{id}/pause"), &key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["state"], "paused");
    let (status, body) = cp
        .post(&format!("/v1/sandboxes/{id}/pause"), &key, json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "pausing a paused sandbox: {body}"
    );
    let (status, _) = cp
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &key,
            json!({"cmd": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "exec in a paused sandbox");
    let (_, paused_list) = cp.get("/v1/sandboxes?state=paused", &key).await;
    assert_eq!(paused_list["sandboxes"].as_array().unwrap().len(), 1);
    let (status, connected) = cp
        .post(&format!("/v1/sandboxes/{id}/connect"), &key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "connect resumes: {connected}");
    assert_eq!(connected["state"], "running");
    assert_eq!(sh(&cp, &key, &id, "cat /root/file").await, "kept\n");
    let (status, body) = cp
        .post(&format!("/v1/sandboxes/{id}/resume"), &key, json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "resuming a running sandbox: {body}"
    );
    let (status, pinged) = cp
        .post(&format!("/v1/sandboxes/{id}/ping"), &key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{pinged}");
    let (status, timed) = cp
        .post(
            &format!("/v1/sandboxes/{id}/timeout"),
            &key,
            json!({"timeout_sec": 600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{timed}");
    assert_eq!(timed["timeout_sec"], 600);

    // Another team sees none of it.
    let bob = cp.signup("bob@example.com").await;
    for path in [
        format!("/v1/sandboxes/{id}"),
        format!("/v1/sandboxes/{id}/exec"),
    ] {
        let (status, _) = if path.ends_with("exec") {
            cp.post(&path, &bob.auth(), json!({"cmd": "true"})).await
        } else {
            cp.get(&path, &bob.auth()).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, bobs) = cp.get("/v1/sandboxes", &bob.auth()).await;
    assert_eq!(bobs["sandboxes"].as_array().unwrap().len(), 0);

    // Destroy: idempotent, then listed only as stopped.
    for _ in 0..2 {
        let (status, body) = cp.delete(&format!("/v1/sandboxes/{id}"), &key).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (_, gone) = cp.get(&format!("/v1/sandboxes/{id}"), &key).await;
    assert_eq!(gone["state"], "stopped");
    let (_, live) = cp.get("/v1/sandboxes", &key).await;
    assert_eq!(live["sandboxes"].as_array().unwrap().len(), 1);
    let (status, body) = cp
        .post(&format!("/v1/sandboxes/{id}/resume"), &key, json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "resume of a destroyed sandbox: {body}"
    );

    // The audit log saw it all, attributed to the key.
    let actions = common::audit_actions(&cp, &ann.auth(), &id).await;
    for expected in ["create", "exec", "pause", "connect", "destroy"] {
        assert!(
            actions.iter().any(|(a, s)| a == expected && s == "success"),
            "{expected} missing: {actions:?}"
        );
    }
    assert!(
        actions.iter().any(|(a, s)| a == "pause" && s == "failure"),
        "failures are logged too: {actions:?}"
    );
    let (_, log) = cp
        .get(
            &format!("/v1/audit-logs?resource_id={id}&limit=200"),
            &ann.auth(),
        )
        .await;
    let others: Vec<&Value> = log["audit_logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor_type"] != "api_key")
        .collect();
    assert!(
        others.is_empty(),
        "actions by anyone but the key: {others:?}"
    );
    let (_, bob_log) = cp
        .get(&format!("/v1/audit-logs?resource_id={id}"), &bob.auth())
        .await;
    for entry in bob_log["audit_logs"].as_array().unwrap() {
        // Bob's own failed attempts, in Bob's own log; nothing of Ann's team.
        assert_eq!(
            entry["team_id"],
            bob.team_id.as_str(),
            "no cross-team audit reads: {entry}"
        );
        assert_eq!(entry["status"], "failure", "{entry}");
    }

    cp.delete(&format!("/v1/sandboxes/{second_id}"), &key).await;
    cp.shutdown().await;
}

#[tokio::test]
async fn snapshot_templates_forks_and_reconcile() {
    let cp = TestCp::start_with_agent().await;
    let ann = cp.signup("ann@example.com").await;
    let key = Auth::Key(cp.api_key(&ann).await);
    let source = create(&cp, &key, json!({})).await;
    let source_id = source["id"].as_str().unwrap().to_owned();
    sh(&cp, &key, &source_id, "echo from-template > /root/marker").await;

    let (status, template) = cp
        .post(
            &format!("/v1/sandboxes/{source_id}/snapshot"),
            &key,
            json!({"name": "py-base"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    assert_eq!(template["snapshot"], true);
    assert_eq!(template["team_id"], ann.team_id.as_str());
    assert_eq!(template["memory_mb"], 256);
    let (status, body) = cp
        .post(
            &format!("/v1/sandboxes/{source_id}/snapshot"),
            &key,
            json!({"name": "py-base"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "names are unique per team: {body}"
    );
    for bad in ["../etc", "Py", "a/b", ""] {
        let (status, body) = cp
            .post(
                &format!("/v1/sandboxes/{source_id}/snapshot"),
                &key,
                json!({"name": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {body}");
    }
    let (_, templates) = cp.get("/v1/templates", &key).await;
    let names: Vec<&str> = templates["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["minimal", "py-base"],
        "platform first, then the team's"
    );

    // Another team can neither see nor use it, and may reuse the name.
    let bob = cp.signup("bob@example.com").await;
    let (status, _) = cp.get("/v1/templates/py-base", &bob.auth()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = cp
        .post("/v1/sandboxes", &bob.auth(), json!({"template": "py-base"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = cp.delete("/v1/templates/py-base", &bob.auth()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let clone = create(&cp, &key, json!({"template": "py-base"})).await;
    let clone_id = clone["id"].as_str().unwrap().to_owned();
    assert_eq!(clone["template"], "py-base");
    assert_eq!(
        sh(&cp, &key, &clone_id, "cat /root/marker").await,
        "from-template\n"
    );
    let (status, body) = cp.delete("/v1/templates/py-base", &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "in use: {body}");
    let (status, body) = cp.delete("/v1/templates/minimal", &key).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "platform templates need a platform admin's session: {body}"
    );

    // A clone forks like any sandbox: its copy has the clone's files.
    let (status, body) = cp
        .post(&format!("/v1/sandboxes/{clone_id}/fork"), &key, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let clone_fork = body["sandboxes"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sh(&cp, &key, &clone_fork, "cat /root/marker").await,
        "from-template\n"
    );
    let (status, body) = cp
        .delete(&format!("/v1/sandboxes/{clone_fork}"), &key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, forks) = cp
        .post(
            &format!("/v1/sandboxes/{source_id}/fork"),
            &key,
            json!({"count": 2, "metadata": {"fork": "yes"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{forks}");
    let forks: Vec<String> = forks["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(forks.len(), 2);
    sh(&cp, &key, &forks[0], "echo mine > /root/marker").await;
    assert_eq!(
        sh(&cp, &key, &forks[1], "cat /root/marker").await,
        "from-template\n",
        "forks are independent"
    );
    let (_, listed) = cp.get("/v1/sandboxes?metadata=fork%3Dyes", &key).await;
    assert_eq!(listed["sandboxes"].as_array().unwrap().len(), 2);

    // A VM destroyed behind the control plane's back is seen as stopped (the host reports it).
    let agent = cp.agent.as_ref().unwrap();
    let mut client = wrenn_agent_api::v1::host_agent_client::HostAgentClient::connect(format!(
        "http://{}",
        agent.addr
    ))
    .await
    .unwrap();
    client
        .destroy_sandbox(wrenn_agent_api::v1::DestroySandboxRequest {
            sandbox_id: forks[1].clone(),
        })
        .await
        .unwrap();
    cp.wait_for(
        &format!("/v1/sandboxes/{}", forks[1]),
        &key,
        Duration::from_secs(30),
        |s| s["state"] == "stopped",
    )
    .await;
    // A sandbox its host has never heard of (lost with the host's disk, say) becomes `missing`.
    sqlx::query(
        "INSERT INTO sandboxes (id, team_id, host_id, template_id, template, state, vcpus, memory_mb, \
         disk_mb, timeout_sec, internet) SELECT 'sb-lost', team_id, host_id, template_id, template, \
         'running', 1, 256, 0, 0, TRUE FROM sandboxes WHERE id = $1",
    )
    .bind(&source_id)
    .execute(cp.pool())
    .await
    .unwrap();
    let missing = cp
        .wait_for(
            "/v1/sandboxes/sb-lost",
            &key,
            Duration::from_secs(30),
            |s| s["state"] == "missing",
        )
        .await;
    assert!(
        missing["error"].as_str().unwrap().contains("no longer"),
        "{missing}"
    );
    let (_, log) = cp
        .get("/v1/audit-logs?actor_type=system&action=missing", &key)
        .await;
    assert_eq!(log["audit_logs"][0]["resource_id"], "sb-lost", "{log}");

    for id in [
        &clone_id,
        &forks[0],
        &forks[1],
        &source_id,
        &"sb-lost".to_owned(),
    ] {
        let (status, body) = cp.delete(&format!("/v1/sandboxes/{id}"), &key).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{id}: {body}");
    }
    let (status, body) = cp.delete("/v1/templates/py-base", &key).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, templates) = cp.get("/v1/templates", &key).await;
    assert_eq!(templates["templates"].as_array().unwrap().len(), 1);
    cp.shutdown().await;
}

#[tokio::test]
async fn idle_sandboxes_auto_pause_and_the_control_plane_records_it() {
    let cp = TestCp::start_with_agent().await;
    let ann = cp.signup("ann@example.com").await;
    let key = Auth::Key(cp.api_key(&ann).await);
    let sandbox = create(&cp, &key, json!({"timeout_sec": 3})).await;
    let id = sandbox["id"].as_str().unwrap().to_owned();
    sh(&cp, &key, &id, "echo before > /root/state").await;
    let paused = cp
        .wait_for(
            &format!("/v1/sandboxes/{id}"),
            &key,
            Duration::from_secs(60),
            |s| s["state"] == "paused",
        )
        .await;
    assert_eq!(paused["auto_paused"], true, "{paused}");
    let (_, log) = cp
        .get(
            &format!("/v1/audit-logs?resource_id={id}&actor_type=system"),
            &key,
        )
        .await;
    assert_eq!(log["audit_logs"][0]["action"], "auto_pause", "{log}");
    let (status, resumed) = cp
        .post(&format!("/v1/sandboxes/{id}/connect"), &key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["state"], "running");
    assert_eq!(sh(&cp, &key, &id, "cat /root/state").await, "before\n");
    cp.delete(&format!("/v1/sandboxes/{id}"), &key).await;
    cp.shutdown().await;
}
