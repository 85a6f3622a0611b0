//! Processes in a real guest through the agent: output streams, stdin, exit codes, timeouts,
//! signals, PTYs, background processes, and clear errors.

mod common;

use std::time::Duration;

use common::{by_pid, collect, spec, TestHost};
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;

#[tokio::test(flavor = "multi_thread")]
async fn output_streams_exit_codes_stdin_and_timeouts() {
    let mut host = TestHost::start().await;
    let id = host.create().await.sandbox_id;

    // stdout and stderr stay separate, and each keeps its order.
    let script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done";
    let out = host.exec(&id, "sh", &["-c", script]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out1\nout2\nout3\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err1\nerr2\nerr3\n");

    // Interleaving across the two streams is kept when the writer pauses between writes.
    let mut stream = host
        .client
        .start_process(pb::StartProcessRequest {
            sandbox_id: id.clone(),
            process: Some(spec(
                "sh",
                &["-c", "echo A; sleep 0.3; echo B >&2; sleep 0.3; echo C"],
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let mut order = Vec::new();
    while let Some(event) = futures::StreamExt::next(&mut stream).await {
        use envd::process_event::Event;
        match event.unwrap().event.unwrap() {
            Event::Stdout(d) => order.push(format!("out:{}", String::from_utf8_lossy(&d).trim())),
            Event::Stderr(d) => order.push(format!("err:{}", String::from_utf8_lossy(&d).trim())),
            Event::Exited(_) => break,
            _ => {}
        }
    }
    assert_eq!(order, ["out:A", "err:B", "out:C"]);

    // Exit codes.
    for code in [0, 1, 3, 255] {
        let out = host.exec(&id, "sh", &["-c", &format!("exit {code}")]).await;
        assert_eq!(out.exit.unwrap().exit_code, code);
    }

    // stdin: echo through cat, then close.
    let mut cat = spec("cat", &[]);
    cat.stdin = true;
    let stream = host
        .client
        .start_process(pb::StartProcessRequest {
            sandbox_id: id.clone(),
            process: Some(cat),
        })
        .await
        .unwrap()
        .into_inner();
    let processes = host
        .client
        .list_processes(pb::ListProcessesRequest {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let pid = processes
        .processes
        .iter()
        .find(|p| p.running && p.spec.as_ref().unwrap().cmd == "cat")
        .unwrap()
        .pid;
    host.client
        .send_process_input(pb::SendProcessInputRequest {
            sandbox_id: id.clone(),
            input: Some(envd::SendInputRequest {
                process: by_pid(pid),
                data: b"hello stdin\n".to_vec(),
                close: true,
            }),
        })
        .await
        .unwrap();
    let (out, _, _, exit) = collect(stream).await;
    assert_eq!(out, b"hello stdin\n");
    assert_eq!(exit.exit_code, 0);

    // Timeout kills the process and says so.
    let mut sleeper = spec("sleep", &["30"]);
    sleeper.timeout_ms = 500;
    let started = std::time::Instant::now();
    let out = host
        .client
        .exec(pb::ExecRequest {
            sandbox_id: id.clone(),
            process: Some(sleeper),
        })
        .await
        .unwrap()
        .into_inner();
    let exit = out.exit.unwrap();
    assert!(exit.timed_out, "{exit:?}");
    assert_eq!(exit.signal, 9);
    assert!(started.elapsed() < Duration::from_secs(15));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pty_runs_interactive_bash_and_background_processes_can_be_reattached() {
    let mut host = TestHost::start().await;
    let id = host.create().await.sandbox_id;

    let mut bash = spec("bash", &["-i"]);
    bash.pty = Some(envd::PtySize {
        cols: 100,
        rows: 30,
    });
    bash.tag = "shell".into();
    let stream = host
        .client
        .start_process(pb::StartProcessRequest {
            sandbox_id: id.clone(),
            process: Some(bash),
        })
        .await
        .unwrap()
        .into_inner();
    let tag = Some(envd::ProcessSelector {
        selector: Some(envd::process_selector::Selector::Tag("shell".into())),
    });
    host.client
        .resize_pty(pb::ResizePtyRequest {
            sandbox_id: id.clone(),
            resize: Some(envd::ResizePtyRequest {
                process: tag.clone(),
                size: Some(envd::PtySize {
                    cols: 120,
                    rows: 40,
                }),
            }),
        })
        .await
        .unwrap();
    for line in ["echo $((6*7))\n", "stty size\n", "exit 0\n"] {
        host.client
            .send_process_input(pb::SendProcessInputRequest {
                sandbox_id: id.clone(),
                input: Some(envd::SendInputRequest {
                    process: tag.clone(),
                    data: line.as_bytes().to_vec(),
                    close: false,
                }),
            })
            .await
            .unwrap();
    }
    let (_, _, pty, exit) = tokio::time::timeout(Duration::from_secs(60), collect(stream))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&pty);
    assert!(text.contains("42"), "{text}");
    assert!(text.contains("40 120"), "{text}");
    assert_eq!(exit.exit_code, 0);

    // Programs open terminals through /dev/ptmx, devtmpfs's node, which allocates from the
    // devpts instance mounted at /dev/pts.
    let tty = host
        .sh(
            &id,
            "python3 -c 'import os; m, s = os.openpty(); print(os.ttyname(s))'; stat -c %F /dev/ptmx",
        )
        .await;
    assert!(tty.starts_with("/dev/pts/"), "{tty}");
    assert!(tty.contains("character special file"), "{tty}");

    // A background process keeps running without a stream, and re-attaching replays output.
    let mut ticker = spec("sh", &["-c", "echo first; sleep 0.5; echo second"]);
    ticker.tag = "ticker".into();
    let stream = host
        .client
        .start_process(pb::StartProcessRequest {
            sandbox_id: id.clone(),
            process: Some(ticker),
        })
        .await
        .unwrap()
        .into_inner();
    drop(stream);
    let attached = host
        .client
        .attach_process(pb::AttachProcessRequest {
            sandbox_id: id.clone(),
            process: Some(envd::ProcessSelector {
                selector: Some(envd::process_selector::Selector::Tag("ticker".into())),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (out, _, _, exit) = collect(attached).await;
    assert_eq!(String::from_utf8_lossy(&out), "first\nsecond\n");
    assert_eq!(exit.exit_code, 0);

    // Signals end a process by tag.
    let mut sleeper = spec("sleep", &["300"]);
    sleeper.tag = "sleeper".into();
    let stream = host
        .client
        .start_process(pb::StartProcessRequest {
            sandbox_id: id.clone(),
            process: Some(sleeper),
        })
        .await
        .unwrap()
        .into_inner();
    host.client
        .signal_process(pb::SignalProcessRequest {
            sandbox_id: id.clone(),
            signal: Some(envd::SendSignalRequest {
                process: Some(envd::ProcessSelector {
                    selector: Some(envd::process_selector::Selector::Tag("sleeper".into())),
                }),
                signal: 15,
            }),
        })
        .await
        .unwrap();
    let (_, _, _, exit) = collect(stream).await;
    assert_eq!(exit.signal, 15);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_process_requests_get_clear_errors_and_envd_requires_its_token() {
    let mut host = TestHost::start().await;
    let id = host.create().await.sandbox_id;

    let status = host
        .client
        .exec(pb::ExecRequest {
            sandbox_id: id.clone(),
            process: Some(spec("no-such-binary", &[])),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
    assert!(status.message().contains("no-such-binary"), "{status}");

    let mut bad_cwd = spec("true", &[]);
    bad_cwd.cwd = "/does/not/exist".into();
    let status = host
        .client
        .exec(pb::ExecRequest {
            sandbox_id: id.clone(),
            process: Some(bad_cwd),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    let status = host
        .client
        .exec(pb::ExecRequest {
            sandbox_id: "sb-doesnotexist".into(),
            process: Some(spec("true", &[])),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // envd itself, reached over the slot without the agent's token.
    let network: wrenn_agent::config::SlotNetwork = host.lease.slot_network().parse().unwrap();
    let addrs = wrenn_agent::network::SlotAddresses::for_index(network, 0);
    let endpoint = format!("http://{}:{}", addrs.ns_ip, wrenn_envd_api::ENVD_PORT);
    let mut process = envd::process_client::ProcessClient::connect(endpoint.clone())
        .await
        .unwrap();
    let status = process.list(envd::ListRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut envd_rpc = envd::envd_client::EnvdClient::connect(endpoint)
        .await
        .unwrap();
    let status = envd_rpc
        .init(envd::InitRequest {
            access_token: "attacker".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "re-init needs the current token"
    );
    host.stop().await;
}
