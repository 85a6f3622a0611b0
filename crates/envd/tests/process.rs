//! Process service against a real envd: output, exit codes, stdin, PTYs, signals, timeouts,
//! re-attaching, and the error statuses.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{by_pid, by_tag, collect, read_pty_until, sh, spec, Envd, WAIT};
use futures::StreamExt;
use tonic::Code;
use wrenn_envd_api::v1::process_event::Event;
use wrenn_envd_api::v1::{
    AttachRequest, ListRequest, PtySize, ResizePtyRequest, SendInputRequest, SendSignalRequest,
};

#[tokio::test]
async fn runs_python_and_reports_exit() {
    let envd = Envd::initialized().await;
    let output = envd.run(spec("python3", &["-c", "print(6*7)"])).await;
    assert_eq!(output.stdout_text(), "42\n");
    assert_eq!(output.stderr_text(), "");
    assert_eq!(output.exit().exit_code, 0);
    assert_eq!(output.exit().signal, 0);
    assert!(!output.exit().timed_out);
    assert!(output.pid > 0);
}

#[tokio::test]
async fn separates_stdout_and_stderr_in_order() {
    let envd = Envd::initialized().await;
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo out$i; echo err$i >&2; done";
    let output = envd.run(sh(script)).await;
    let expected =
        |prefix: &str| -> String { (1..=10).map(|i| format!("{prefix}{i}\n")).collect() };
    assert_eq!(output.stdout_text(), expected("out"));
    assert_eq!(output.stderr_text(), expected("err"));
}

#[tokio::test]
async fn reports_exit_codes_and_signals() {
    let envd = Envd::initialized().await;
    let cases = [
        ("exit 0", 0, 0),
        ("exit 3", 3, 0),
        ("exit 255", 255, 0),
        ("kill -9 $$", -1, 9),
        ("kill -15 $$", -1, 15),
    ];
    for (script, exit_code, signal) in cases {
        let output = envd.run(sh(script)).await;
        assert_eq!(
            (output.exit().exit_code, output.exit().signal),
            (exit_code, signal),
            "{script}"
        );
    }
}

#[tokio::test]
async fn layers_the_environment() {
    let envd = Envd::initialized().await;
    let mut process = sh("echo $SANDBOX_VAR $SPEC_VAR $HOME $USER $LANG; pwd");
    process.env = HashMap::from([("SPEC_VAR".to_owned(), "from-spec".to_owned())]);
    process.cwd = "/tmp".to_owned();
    let output = envd.run(process).await;
    assert_eq!(
        output.stdout_text(),
        "from-init from-spec /root root C.UTF-8\n/tmp\n"
    );
}

#[tokio::test]
async fn runs_as_another_user() {
    let envd = Envd::initialized().await;
    let mut process = spec("id", &["-u"]);
    process.user = "nobody".to_owned();
    let output = envd.run(process).await;
    assert_eq!(output.stdout_text(), "65534\n");
}

#[tokio::test]
async fn feeds_stdin_until_closed() {
    let envd = Envd::initialized().await;
    let mut process = spec("cat", &[]);
    process.stdin = true;
    process.tag = "cat".to_owned();
    let stream = envd.start(process).await.unwrap();
    let mut client = envd.process();
    client
        .send_input(SendInputRequest {
            process: by_tag("cat"),
            data: b"hello\n".to_vec(),
            close: false,
        })
        .await
        .unwrap();
    let messages = vec![
        SendInputRequest {
            process: by_tag("cat"),
            data: b"streamed ".to_vec(),
            close: false,
        },
        SendInputRequest {
            process: None,
            data: b"input\n".to_vec(),
            close: true,
        },
    ];
    client
        .stream_input(futures::stream::iter(messages))
        .await
        .unwrap();
    let output = collect(stream).await;
    assert_eq!(output.stdout_text(), "hello\nstreamed input\n");
    assert_eq!(output.exit().exit_code, 0);

    let status = client
        .send_input(SendInputRequest {
            process: by_tag("cat"),
            data: b"late".to_vec(),
            close: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
}

#[tokio::test]
async fn input_needs_stdin() {
    let envd = Envd::initialized().await;
    let mut process = spec("sleep", &["5"]);
    process.tag = "no-stdin".to_owned();
    let _stream = envd.start(process).await.unwrap();
    let status = envd
        .process()
        .send_input(SendInputRequest {
            process: by_tag("no-stdin"),
            data: b"x".to_vec(),
            close: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    envd.process()
        .send_signal(SendSignalRequest {
            process: by_tag("no-stdin"),
            signal: 9,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let envd = Envd::initialized().await;
    let mut process = spec("sleep", &["30"]);
    process.timeout_ms = 300;
    let begun = Instant::now();
    let output = envd.run(process).await;
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    let exit = output.exit();
    assert!(exit.timed_out);
    assert_eq!((exit.exit_code, exit.signal), (-1, 9));
    assert!(exit.duration_ms >= 250, "{exit:?}");
}

#[tokio::test]
async fn signals_by_tag() {
    let envd = Envd::initialized().await;
    let mut process = spec("sleep", &["30"]);
    process.tag = "sleeper".to_owned();
    let stream = envd.start(process).await.unwrap();
    envd.process()
        .send_signal(SendSignalRequest {
            process: by_tag("sleeper"),
            signal: 15,
        })
        .await
        .unwrap();
    let output = collect(stream).await;
    assert_eq!((output.exit().exit_code, output.exit().signal), (-1, 15));
    assert!(!output.exit().timed_out);

    let status = envd
        .process()
        .send_signal(SendSignalRequest {
            process: by_tag("sleeper"),
            signal: 15,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
}

#[tokio::test]
async fn runs_interactive_bash_on_a_pty() {
    let envd = Envd::initialized().await;
    let mut process = spec("bash", &["--norc", "--noprofile", "-i"]);
    process.pty = Some(PtySize { cols: 80, rows: 24 });
    process.tag = "shell".to_owned();
    let mut stream = envd.start(process).await.unwrap();
    let mut client = envd.process();
    let send = |data: &str| SendInputRequest {
        process: by_tag("shell"),
        data: data.as_bytes().to_vec(),
        close: false,
    };

    client.send_input(send("echo $((6*7))\n")).await.unwrap();
    read_pty_until(&mut stream, "42").await;

    client
        .resize_pty(ResizePtyRequest {
            process: by_tag("shell"),
            size: Some(PtySize {
                cols: 100,
                rows: 40,
            }),
        })
        .await
        .unwrap();
    client.send_input(send("stty size\n")).await.unwrap();
    read_pty_until(&mut stream, "40 100").await;

    client.send_input(send("echo $TERM; tty\n")).await.unwrap();
    read_pty_until(&mut stream, "/dev/pts/").await;

    client.send_input(send("exit 7\n")).await.unwrap();
    let mut exit = None;
    let waiting = async {
        while let Some(event) = stream.next().await {
            if let Some(Event::Exited(exited)) = event.unwrap().event {
                exit = Some(exited);
            }
        }
    };
    tokio::time::timeout(WAIT, waiting).await.unwrap();
    assert_eq!(exit.unwrap().exit_code, 7);
}

#[tokio::test]
async fn resize_needs_a_pty() {
    let envd = Envd::initialized().await;
    let mut process = spec("sleep", &["5"]);
    process.tag = "plain".to_owned();
    let _stream = envd.start(process).await.unwrap();
    let status = envd
        .process()
        .resize_pty(ResizePtyRequest {
            process: by_tag("plain"),
            size: Some(PtySize { cols: 10, rows: 10 }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    envd.process()
        .send_signal(SendSignalRequest {
            process: by_tag("plain"),
            signal: 9,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn lists_and_attaches_to_background_processes() {
    let envd = Envd::initialized().await;
    let mut process = sh("echo one; sleep 1; echo two");
    process.tag = "bg".to_owned();
    // Dropping the stream leaves the process running.
    drop(envd.start(process).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let list = envd
        .process()
        .list(ListRequest {})
        .await
        .unwrap()
        .into_inner();
    let info = list
        .processes
        .iter()
        .find(|info| info.tag == "bg")
        .expect("listed");
    assert!(info.running);
    assert!(info.exit.is_none());
    assert_eq!(info.spec.as_ref().unwrap().cmd, "sh");
    assert!(info.started_at_ms > 0);
    let pid = info.pid;

    // Attached mid-run: "one" is replayed, "two" arrives live, exactly once each.
    let live = envd
        .process()
        .attach(AttachRequest {
            process: by_tag("bg"),
        })
        .await
        .unwrap()
        .into_inner();
    let output = collect(live).await;
    assert_eq!(output.stdout_text(), "one\ntwo\n");
    assert_eq!(output.pid, pid);

    // Attached after exit: the whole replay, then Exited.
    let replay = envd
        .process()
        .attach(AttachRequest {
            process: by_pid(pid),
        })
        .await
        .unwrap()
        .into_inner();
    let output = collect(replay).await;
    assert_eq!(output.stdout_text(), "one\ntwo\n");
    assert_eq!(output.exit().exit_code, 0);

    let list = envd
        .process()
        .list(ListRequest {})
        .await
        .unwrap()
        .into_inner();
    let info = list.processes.iter().find(|info| info.pid == pid).unwrap();
    assert!(!info.running);
    assert_eq!(info.exit.as_ref().unwrap().exit_code, 0);
}

#[tokio::test]
async fn exits_despite_a_grandchild_holding_the_pipes() {
    let envd = Envd::initialized().await;
    let begun = Instant::now();
    let output = envd.run(sh("sleep 3 & echo parent done")).await;
    assert_eq!(output.stdout_text(), "parent done\n");
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "exit was held back by the grandchild: {:?}",
        begun.elapsed()
    );
}

#[tokio::test]
async fn delivers_large_output_before_exit() {
    let envd = Envd::initialized().await;
    let output = envd
        .run(sh("head -c 5000000 /dev/zero; echo tail >&2"))
        .await;
    assert_eq!(output.stdout.len(), 5_000_000);
    assert!(output.stdout.iter().all(|byte| *byte == 0));
    assert_eq!(output.stderr_text(), "tail\n");
}

#[tokio::test]
async fn rejects_bad_specs() {
    let envd = Envd::initialized().await;
    let mut bad_cwd = spec("true", &[]);
    bad_cwd.cwd = "/no/such/dir".to_owned();
    let mut bad_user = spec("true", &[]);
    bad_user.user = "no-such-user".to_owned();
    let cases = [
        (
            spec("no-such-binary-xyz", &[]),
            Code::NotFound,
            "executable not found: no-such-binary-xyz",
        ),
        (
            spec("/no/such/binary", &[]),
            Code::NotFound,
            "executable not found",
        ),
        (bad_cwd, Code::InvalidArgument, "/no/such/dir"),
        (bad_user, Code::InvalidArgument, "no-such-user"),
        (spec("", &[]), Code::InvalidArgument, "cmd"),
    ];
    for (process, code, message) in cases {
        let status = envd.start(process).await.unwrap_err();
        assert_eq!(status.code(), code, "{status}");
        assert!(status.message().contains(message), "{status}");
    }
}

#[tokio::test]
async fn tags_are_unique_among_running_processes() {
    let envd = Envd::initialized().await;
    let mut process = spec("sleep", &["30"]);
    process.tag = "unique".to_owned();
    let first = envd.start(process.clone()).await.unwrap();
    let status = envd.start(process.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status}");

    envd.process()
        .send_signal(SendSignalRequest {
            process: by_tag("unique"),
            signal: 9,
        })
        .await
        .unwrap();
    collect(first).await;
    // Free again once the first one has exited.
    process.args = vec!["0".to_owned()];
    let output = envd.run(process).await;
    assert_eq!(output.exit().exit_code, 0);
}

#[tokio::test]
async fn unknown_processes_are_not_found() {
    let envd = Envd::initialized().await;
    let mut client = envd.process();
    let status = client
        .attach(AttachRequest {
            process: by_tag("ghost"),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status}");
    let status = client
        .send_signal(SendSignalRequest {
            process: by_pid(999_999_999),
            signal: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status}");
    let status = client
        .send_signal(SendSignalRequest {
            process: None,
            signal: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
}

#[tokio::test]
async fn pty_output_of_a_quick_process_is_complete() {
    let envd = Envd::initialized().await;
    for _ in 0..5 {
        let mut process = sh("seq 1 2000; echo quick-done");
        process.pty = Some(PtySize { cols: 80, rows: 24 });
        let output = envd.run(process).await;
        let text = String::from_utf8_lossy(&output.pty);
        assert!(text.ends_with("2000\r\nquick-done\r\n"), "{text:?}");
        assert!(output.stdout.is_empty() && output.stderr.is_empty());
        assert_eq!(output.exit().exit_code, 0);
    }
}
