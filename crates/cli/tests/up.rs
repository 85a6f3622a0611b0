//! `wrenn up` end to end, with the real binaries: the agent and the control plane come up as
//! supervised children, the first run creates an admin and an API key, `wrenn run` works
//! through them, a second `wrenn up` refuses to start over the first, Ctrl-C stops everything,
//! and the next run reuses it all.
//!
//! Runs on a test lease (own instance name and slot network), free ports, a data directory and
//! a database of its own, and the shared, already built images (so nothing is rebuilt). Needs
//! the static envd: `WRENN_ENVD`, which `scripts/test` sets, or the build-envd output path.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn static_envd() -> PathBuf {
    if let Some(path) = std::env::var_os("WRENN_ENVD") {
        return PathBuf::from(path);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let built = target.join("x86_64-unknown-linux-gnu/guest/envd");
    assert!(
        built.exists(),
        "no static envd: set WRENN_ENVD or run scripts/build-envd (scripts/test does both)"
    );
    built
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `wrenn up`, interrupted (then killed) when dropped.
struct Up {
    child: Child,
    api_key: String,
    output: Vec<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
        }
    }
}

struct Setup {
    data: tempfile::TempDir,
    database_url: String,
    listen: String,
    agent_listen: String,
    instance: String,
    slot_network: String,
}

impl Setup {
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wrenn"));
        command
            .arg("up")
            .arg("--no-install")
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--images-dir")
            .arg(common::images_dir())
            .args([
                "--listen",
                &self.listen,
                "--agent-listen",
                &self.agent_listen,
            ])
            .args(["--database-url", &self.database_url])
            .args([
                "--instance",
                &self.instance,
                "--slot-network",
                &self.slot_network,
            ])
            .arg("--envd")
            .arg(static_envd())
            .env("HOME", self.data.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("WRENN_CONFIG")
            .kill_on_drop(true);
        command
    }

    /// Starts `wrenn up` and reads its output until it says it is up.
    async fn start(&self) -> Up {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut output = Vec::new();
        let mut api_key = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let line = tokio::select! {
                line = stdout.next_line() => line.unwrap(),
                line = stderr.next_line() => line.unwrap(),
                _ = tokio::time::sleep_until(deadline) => panic!("wrenn up did not come up: {output:#?}"),
            };
            let Some(line) = line else {
                panic!(
                    "wrenn up ended before it was up: {output:#?} {:?}",
                    child.wait().await
                );
            };
            if let Some(key) = line.trim().strip_prefix("API key:") {
                api_key = Some(key.trim().to_owned());
            }
            let done = line.contains("Ctrl-C stops everything");
            output.push(line);
            if done {
                break;
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        Up {
            child,
            api_key: api_key.unwrap_or_else(|| panic!("no API key printed: {output:#?}")),
            output,
        }
    }
}

async fn interrupt(mut up: Up) {
    let pid = up.child.id().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(120), up.child.wait())
        .await
        .expect("wrenn up stops after Ctrl-C")
        .unwrap();
    assert!(status.success(), "wrenn up exited with {status}");
}

#[tokio::test]
async fn up_runs_the_system_stops_on_ctrl_c_and_restarts() {
    let lease = wrenn_agent::lease::TESTS.acquire().expect("test lease");
    let database = common::Database::create().await;
    let setup = Setup {
        data: tempfile::tempdir().unwrap(),
        database_url: database.url.clone(),
        listen: format!("127.0.0.1:{}", free_port()),
        agent_listen: format!("127.0.0.1:{}", free_port()),
        instance: lease.instance(),
        slot_network: lease.slot_network(),
    };
    let up = setup.start().await;
    assert!(up.api_key.starts_with("wrn_"), "{:?}", up.output);
    let curl = up
        .output
        .iter()
        .find(|l| l.contains("curl"))
        .expect("a curl line");
    assert!(
        curl.contains(&setup.listen) && curl.contains(&up.api_key),
        "{curl}"
    );

    // The CLI works through it: with the key in the environment, and with the stored login.
    let run = Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args(["run", "--", "python3", "-c", "print(6*7)"])
        .env("WRENN_API_URL", format!("http://{}", setup.listen))
        .env("WRENN_API_KEY", &up.api_key)
        .env("HOME", setup.data.path())
        .output()
        .await
        .unwrap();
    assert_eq!(
        common::stdout(&run),
        "42\n",
        "stderr: {}",
        common::stderr(&run)
    );
    let ls = Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args(["template", "ls", "--json"])
        .env("HOME", setup.data.path())
        .env_remove("WRENN_API_KEY")
        .env_remove("WRENN_API_URL")
        .output()
        .await
        .unwrap();
    assert!(
        common::stdout(&ls).contains("minimal"),
        "stored login: {} {}",
        common::stdout(&ls),
        common::stderr(&ls)
    );

    // A second `wrenn up` on the same addresses refuses instead of fighting the first.
    let second = setup.command().output().await.unwrap();
    assert!(!second.status.success());
    assert!(
        common::stderr(&second).contains("already"),
        "{}",
        common::stderr(&second)
    );

    let first_key = up.api_key.clone();
    interrupt(up).await;
    for addr in [&setup.listen, &setup.agent_listen] {
        assert!(
            tokio::net::TcpStream::connect(addr.as_str()).await.is_err(),
            "{addr} still listens"
        );
    }

    // The next run reuses the database, the admin and the key, and is quick.
    let started = std::time::Instant::now();
    let again = setup.start().await;
    assert_eq!(again.api_key, first_key, "the saved key is reused");
    assert_eq!(up_key(&setup), first_key);
    eprintln!("second wrenn up took {:?}", started.elapsed());
    interrupt(again).await;
    drop(database);
}

fn up_key(setup: &Setup) -> String {
    let text = std::fs::read_to_string(setup.data.path().join("admin.json")).unwrap();
    let admin: serde_json::Value = serde_json::from_str(&text).unwrap();
    admin["api_key"].as_str().unwrap().to_owned()
}
