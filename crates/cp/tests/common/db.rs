//! A PostgreSQL database of a test's own, dropped when the test ends. Shared by the control
//! plane's and the CLI's test harnesses (the CLI's includes this file by path).
//!
//! The server comes from `WRENN_TEST_DATABASE_URL` (default: the local server over its unix
//! socket, as the root role `scripts/ensure-postgres` creates).

use sqlx::Connection;

pub fn admin_url() -> String {
    std::env::var("WRENN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres:///postgres?host=/var/run/postgresql".into())
}

/// A database of the test's own, dropped on Drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!(
            "wrenn_test_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("connect to test PostgreSQL at {admin}: {e} (run scripts/ensure-postgres)")
            });
        drop_orphans(&mut conn).await;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = with_database(&admin, &name);
        Self { name, url }
    }
}

/// Drops test databases whose test process is gone (killed runs never reach Drop).
async fn drop_orphans(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'wrenn\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// `admin` with its database replaced by `name`.
fn with_database(admin: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin).expect("WRENN_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime that could still be polled: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        })
        .join();
    }
}
