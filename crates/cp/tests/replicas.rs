//! Two control planes on one database behave as one: sessions issued by either work on both,
//! exactly one reconciles a host at a time, and the other takes over when it stops.

mod common;

use std::time::Duration;

use common::TestDb;
use reqwest::StatusCode;
use serde_json::json;
use wrenn_cp::config::{AgentEndpoint, CpConfig};
use wrenn_cp::server::ControlPlane;

async fn start(db: &TestDb) -> ControlPlane {
    let mut config = CpConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        db.url.clone(),
        AgentEndpoint {
            name: "shared-host".into(),
            address: "http://127.0.0.1:9".into(),
        },
    );
    config.database_max_connections = 4;
    config.reconcile_interval = Duration::from_millis(200);
    ControlPlane::start(config)
        .await
        .expect("start control plane")
}

/// Backends of this database holding an advisory lock (the reconcile leases).
async fn lock_holders(pool: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn wait_for_one_holder(pool: &sqlx::PgPool) -> i32 {
    for _ in 0..100 {
        let holders = lock_holders(pool).await;
        assert!(
            holders.len() <= 1,
            "two replicas reconcile the same host: {holders:?}"
        );
        if let [pid] = holders[..] {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica took the host's reconcile lock");
}

#[tokio::test]
async fn replicas_share_sessions_and_split_background_work() {
    let db = TestDb::create().await;
    let first = start(&db).await;
    let pool = first.state().pool.clone();
    let first_holder = wait_for_one_holder(&pool).await;
    let second = start(&db).await;
    let http = reqwest::Client::new();

    let signup: serde_json::Value = http
        .post(format!("http://{}/v1/auth/signup", first.addr()))
        .json(&json!({"email": "ann@example.com", "password": "correct horse battery", "name": "Ann"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signup["token"].as_str().unwrap();
    let me = http
        .get(format!("http://{}/v1/me", second.addr()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "a session from one replica works on the other"
    );

    // The second replica waits its turn: the first keeps the host.
    for _ in 0..10 {
        assert_eq!(lock_holders(&pool).await, vec![first_holder]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.shutdown().await;
    let pool = second.state().pool.clone();
    // The first replica's backend may take a moment to go; then the second takes over.
    let mut second_holder = wait_for_one_holder(&pool).await;
    for _ in 0..100 {
        if second_holder != first_holder {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        second_holder = wait_for_one_holder(&pool).await;
    }
    assert_ne!(second_holder, first_holder, "the second replica took over");
    second.shutdown().await;
}
