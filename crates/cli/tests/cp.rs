//! End to end through the `wrenn` binary and a real control plane over a real host agent:
//! `wrenn run`, the `sandbox` and `template` commands, login/logout and error reporting.
//! Needs root, PostgreSQL and built images (`scripts/test` prepares all three).

mod common;

use std::time::Duration;

use common::{assert_ok, file_mode, stderr, stdout, Stack, PASSWORD};
use serde_json::Value;

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            stdout(output),
            stderr(output)
        )
    })
}

/// The ids and states `wrenn sandbox ls --json` reports.
async fn listed(stack: &Stack, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["sandbox", "ls", "--json"];
    args.extend_from_slice(extra);
    let output = stack.wrenn(&args).await;
    assert_ok(&output, "sandbox ls --json");
    json(&output)["sandboxes"]
        .as_array()
        .expect("a sandboxes array")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_streams_output_passes_exit_codes_and_always_destroys() {
    let stack = Stack::with_agent().await;

    let output = stack
        .wrenn(&["run", "--", "python3", "-c", "print(6*7)"])
        .await;
    assert_eq!(stdout(&output), "42\n", "stderr: {}", stderr(&output));
    assert!(output.status.success());

    let output = stack
        .wrenn(&[
            "run",
            "-e",
            "WHO=wrenn",
            "--",
            "sh",
            "-c",
            "echo hi $WHO >&2; exit 3",
        ])
        .await;
    assert_eq!(output.status.code(), Some(3), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("hi wrenn"), "{}", stderr(&output));
    assert!(
        listed(&stack, &[]).await.is_empty(),
        "run left sandboxes behind"
    );

    // Ctrl-C while the command runs: exit 130 and the sandbox is destroyed.
    let mut child = stack
        .command(&["run", "--", "sleep", "600"])
        .env("WRENN_API_KEY", &stack.key)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start wrenn run");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while listed(&stack, &["--state", "running"]).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sandbox never ran"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Let the command start inside the sandbox too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("wrenn run ends after Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        listed(&stack, &[]).await.is_empty(),
        "Ctrl-C left the sandbox behind"
    );

    // Three stopped sandboxes now: one a page, `ls` still lists all of them.
    let all = listed(&stack, &["--state", "stopped"]).await;
    assert_eq!(all.len(), 3, "{all:?}");
    let paged = listed(&stack, &["--state", "stopped", "--page-size", "1"]).await;
    assert_eq!(paged, all);

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_commands_drive_one_sandbox_through_its_life() {
    let stack = Stack::with_agent().await;

    let output = stack
        .wrenn(&[
            "sandbox",
            "create",
            "--metadata",
            "purpose=cli-test",
            "--memory",
            "256",
        ])
        .await;
    assert_ok(&output, "sandbox create");
    let id = stdout(&output).trim().to_owned();
    assert!(id.starts_with("sb-"), "create printed {id:?}");

    assert!(listed(&stack, &[])
        .await
        .contains(&(id.clone(), "running".into())));
    assert!(listed(&stack, &["--state", "paused"]).await.is_empty());
    let output = stack
        .wrenn(&["sandbox", "ls", "--metadata", "purpose=cli-test"])
        .await;
    assert_ok(&output, "sandbox ls");
    assert!(stdout(&output).starts_with("ID "), "{}", stdout(&output));
    assert!(stdout(&output).contains(&id), "{}", stdout(&output));
    let output = stack.wrenn(&["sandbox", "get", &id]).await;
    assert_ok(&output, "sandbox get");
    assert!(stdout(&output).contains("running"), "{}", stdout(&output));

    let output = stack
        .wrenn(&[
            "sandbox",
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 5",
        ])
        .await;
    assert_eq!(output.status.code(), Some(5), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "out\n");
    assert_eq!(stderr(&output), "err\n");

    let output = stack
        .wrenn_with(
            &["sandbox", "exec", "-i", &id, "--", "sh", "-c", "tr a-z A-Z"],
            &[("WRENN_API_KEY", Some(&stack.key))],
            Some(b"through stdin\n"),
        )
        .await;
    assert_ok(&output, "sandbox exec -i");
    assert_eq!(stdout(&output), "THROUGH STDIN\n");

    // Up and back: a few MiB of bytes that are not text.
    let dir = tempfile::tempdir().unwrap();
    let original: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &original).unwrap();
    let output = stack
        .wrenn(&[
            "sandbox",
            "cp",
            up.to_str().unwrap(),
            &format!("{id}:/tmp/data/"),
        ])
        .await;
    assert_ok(&output, "sandbox cp up");
    let output = stack
        .wrenn(&["sandbox", "exec", &id, "--", "wc", "-c", "/tmp/data/up.bin"])
        .await;
    assert_eq!(
        stdout(&output),
        format!("{} /tmp/data/up.bin\n", original.len())
    );
    let down = dir.path().join("down.bin");
    let output = stack
        .wrenn(&[
            "sandbox",
            "cp",
            &format!("{id}:/tmp/data/up.bin"),
            down.to_str().unwrap(),
        ])
        .await;
    assert_ok(&output, "sandbox cp down");
    assert!(
        std::fs::read(&down).unwrap() == original,
        "the file changed on the way"
    );
    let output = stack
        .wrenn(&[
            "sandbox",
            "cp",
            &format!("{id}:/no/such/file"),
            down.to_str().unwrap(),
        ])
        .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("(404)"), "{}", stderr(&output));

    let output = stack.wrenn(&["--json", "sandbox", "pause", &id]).await;
    assert_ok(&output, "sandbox pause");
    assert_eq!(json(&output)["state"], "paused");
    assert!(listed(&stack, &["--state", "paused"])
        .await
        .contains(&(id.clone(), "paused".into())));
    let output = stack.wrenn(&["sandbox", "resume", &id]).await;
    assert_ok(&output, "sandbox resume");
    assert_eq!(stdout(&output), format!("resumed {id}\n"));
    let output = stack
        .wrenn(&[
            "sandbox",
            "exec",
            &id,
            "--",
            "cmp",
            "/tmp/data/up.bin",
            "/tmp/data/up.bin",
        ])
        .await;
    assert_ok(&output, "exec after resume");

    // A terminal: what is typed reaches a shell on a PTY, its exit code comes back.
    let output = stack
        .wrenn_with(
            &["sandbox", "shell", &id, "--cmd", "/bin/sh"],
            &[("WRENN_API_KEY", Some(&stack.key))],
            Some(b"echo pty-$((6*7)); tty\nexit 4\n"),
        )
        .await;
    assert_eq!(output.status.code(), Some(4), "stderr: {}", stderr(&output));
    assert!(stdout(&output).contains("pty-42"), "{}", stdout(&output));
    assert!(stdout(&output).contains("/dev/pts/"), "{}", stdout(&output));

    let output = stack.wrenn(&["sandbox", "snapshot", &id, "cli-snap"]).await;
    assert_ok(&output, "sandbox snapshot");
    let output = stack.wrenn(&["template", "ls"]).await;
    assert_ok(&output, "template ls");
    let table = stdout(&output);
    assert!(table.lines().any(|l| l.starts_with("minimal ")), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("cli-snap ") && l.contains("snapshot") && l.contains(&id)),
        "{table}"
    );

    let output = stack.wrenn(&["sandbox", "kill", &id]).await;
    assert_ok(&output, "sandbox kill");
    assert!(listed(&stack, &[]).await.is_empty());
    let output = stack.wrenn(&["template", "rm", "cli-snap"]).await;
    assert_ok(&output, "template rm");
    let output = stack.wrenn(&["--json", "template", "ls"]).await;
    assert!(!stdout(&output).contains("cli-snap"), "{}", stdout(&output));
    let output = stack.wrenn(&["sandbox", "exec", &id, "--", "true"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).starts_with("error: "),
        "{}",
        stderr(&output)
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_read_plainly_and_login_stores_a_private_key() {
    let stack = Stack::without_agent().await;

    let output = stack.wrenn(&["sandbox", "get", "sb-doesnotexist"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: sandbox sb-doesnotexist not found (404)\n"
    );
    let output = stack
        .wrenn(&["sandbox", "exec", "sb-doesnotexist", "--", "true"])
        .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("sandbox sb-doesnotexist not found (404)"),
        "{}",
        stderr(&output)
    );

    let output = stack
        .wrenn_with(
            &["template", "ls"],
            &[("WRENN_API_KEY", Some("wrn_bogus"))],
            None,
        )
        .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("(401); check the API key"),
        "{}",
        stderr(&output)
    );
    let output = stack.wrenn_with(&["template", "ls"], &[], None).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no API key"),
        "{}",
        stderr(&output)
    );
    let output = stack
        .wrenn_with(
            &["template", "ls"],
            &[
                ("WRENN_API_URL", Some("http://127.0.0.1:9")),
                ("WRENN_API_KEY", Some("wrn_x")),
            ],
            None,
        )
        .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot reach the control plane"),
        "{}",
        stderr(&output)
    );

    // Log in with email and password (from stdin); the key lands in a private file.
    let output = stack
        .wrenn_with(
            &["login", "--email", &stack.email],
            &[],
            Some(format!("{PASSWORD}\n").as_bytes()),
        )
        .await;
    assert_ok(&output, "login");
    assert_eq!(file_mode(&stack.config_file()), 0o600);
    let stored: Value =
        serde_json::from_slice(&std::fs::read(stack.config_file()).unwrap()).unwrap();
    let stored_key = stored["api_key"].as_str().unwrap().to_owned();
    assert!(stored_key.starts_with("wrn_"));

    let output = stack
        .wrenn_with(&["--json", "template", "ls"], &[], None)
        .await;
    assert_ok(&output, "template ls with the stored key");
    let names: Vec<_> = json(&output)["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"minimal".to_owned()), "{names:?}");

    // Logout forgets the key and revokes it.
    let output = stack.wrenn_with(&["logout"], &[], None).await;
    assert_ok(&output, "logout");
    assert!(!stack.config_file().exists());
    let output = stack
        .wrenn_with(
            &["template", "ls"],
            &[("WRENN_API_KEY", Some(&stored_key))],
            None,
        )
        .await;
    assert!(!output.status.success(), "the key still works after logout");

    let output = stack
        .wrenn_with(
            &["login", "--email", &stack.email],
            &[],
            Some(b"wrong password\n"),
        )
        .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("(401)"), "{}", stderr(&output));
    assert!(!stack.config_file().exists());

    // A key given directly is checked, then stored.
    let output = stack
        .wrenn_with(&["login", "--api-key", "wrn_bogus"], &[], None)
        .await;
    assert!(!output.status.success());
    let output = stack
        .wrenn_with(&["login", "--api-key", &stack.key], &[], None)
        .await;
    assert_ok(&output, "login --api-key");
    let output = stack.wrenn_with(&["template", "ls"], &[], None).await;
    assert_ok(&output, "template ls after login --api-key");

    stack.shutdown().await;
}
