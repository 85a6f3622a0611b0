//! End to end through the `wrenn` binary without a control plane: `wrenn run --agent local`
//! boots a real VM with a host agent inside the CLI, `wrenn run --agent URL` uses a running
//! agent; both stream output, pass the exit code through and leave nothing behind. Needs root
//! and built images, like every VM test (`scripts/test` prepares both).

mod common;

use std::process::Command;

use common::{stderr, stdout};

fn wrenn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args(args)
        .env("WRENN_READY_TIMEOUT_SECS", "120")
        .output()
        .expect("run wrenn")
}

#[test]
fn run_with_a_local_agent_prints_python_output_and_checks_templates() {
    let out = wrenn(&[
        "run",
        "--agent",
        "local",
        "--",
        "python3",
        "-c",
        "print(6*7)",
    ]);
    assert_eq!(stdout(&out), "42\n", "stderr: {}", stderr(&out));
    assert!(out.status.success());

    let out = wrenn(&[
        "run",
        "--agent",
        "local",
        "--template",
        "../etc",
        "--",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid template name"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_running_agent_passes_exit_codes_through() {
    let agent = common::Agent::start().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wrenn"));
    command.args([
        "run",
        "--agent",
        &agent.url,
        "--no-internet",
        "-e",
        "WHO=wrenn",
        "--",
        "sh",
        "-c",
        "echo hi $WHO >&2; exit 7",
    ]);
    let out = common::run_with_stdin(command, None).await;
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("hi wrenn"), "{}", stderr(&out));

    let mut client =
        wrenn_agent_api::v1::host_agent_client::HostAgentClient::connect(agent.url.clone())
            .await
            .unwrap();
    let left = client
        .list_sandboxes(wrenn_agent_api::v1::ListSandboxesRequest {})
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert!(left.is_empty(), "run left sandboxes behind: {left:?}");
    agent.stop().await;
}
