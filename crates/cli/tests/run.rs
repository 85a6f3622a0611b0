//! End to end through the `wrenn` binary: `wrenn run` boots a real VM, streams output, passes
//! the exit code through and leaves nothing behind. Needs root and built images, like every VM
//! test (`scripts/test` prepares both).

use std::process::Command;

fn wrenn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args(args)
        .env("WRENN_READY_TIMEOUT_SECS", "120")
        .output()
        .expect("run wrenn")
}

#[test]
fn run_prints_python_output_and_passes_exit_codes_through() {
    let out = wrenn(&["run", "--", "python3", "-c", "print(6*7)"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "42\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());

    let out = wrenn(&[
        "run",
        "--no-internet",
        "-e",
        "WHO=wrenn",
        "--",
        "sh",
        "-c",
        "echo hi $WHO >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hi wrenn"));

    let out = wrenn(&["run", "--template", "../etc", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid template name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
