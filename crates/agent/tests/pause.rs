//! Pause and resume with real VMs: memory, processes and files survive, cycles are lossless,
//! a paused sandbox holds no VMM or network slot, and wrong-state calls are clear errors.

mod common;

use std::time::{Duration, Instant};

use common::{host_objects, spec, TestHost, NEXT};
use tonic::Code;
use wrenn_agent_api::v1 as pb;

async fn pause(host: &mut TestHost, id: &str) -> pb::Sandbox {
    let started = Instant::now();
    let sandbox = host
        .client
        .pause_sandbox(pb::PauseSandboxRequest {
            sandbox_id: id.into(),
        })
        .await
        .expect("pause")
        .into_inner();
    println!("pause took {} ms", started.elapsed().as_millis());
    sandbox
}

async fn resume(host: &mut TestHost, id: &str) -> pb::Sandbox {
    let started = Instant::now();
    let sandbox = host
        .client
        .resume_sandbox(pb::ResumeSandboxRequest {
            sandbox_id: id.into(),
        })
        .await
        .expect("resume")
        .into_inner();
    println!("resume took {} ms", started.elapsed().as_millis());
    sandbox
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_processes_files_and_clock_survive_a_pause() {
    let mut host = TestHost::start().await;
    let id = host.create().await.sandbox_id;
    host.start_counter(&id).await;
    host.sh(&id, "echo before-pause > /root/note.txt").await;

    let paused = pause(&mut host, &id).await;
    assert_eq!(paused.state, pb::SandboxState::Paused as i32);
    let (netns, links, pids) = host_objects(&host.instance()).await;
    assert!(
        netns.is_empty() && links.is_empty() && pids.is_empty(),
        "a paused sandbox holds {netns:?} {links:?} {pids:?}"
    );
    let status = host
        .client
        .exec(pb::ExecRequest {
            sandbox_id: id.clone(),
            process: Some(spec("true", &[])),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    let status = host
        .client
        .pause_sandbox(pb::PauseSandboxRequest {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "pausing a paused sandbox: {status}"
    );

    // Stay paused long enough that an unset guest clock would be visibly behind.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = resume(&mut host, &id).await;
    assert_eq!(resumed.state, pb::SandboxState::Running as i32);
    let status = host
        .client
        .resume_sandbox(pb::ResumeSandboxRequest {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "resuming a running sandbox: {status}"
    );

    // Same process, same memory: the counter goes on.
    assert_eq!(host.sh(&id, NEXT).await.trim(), "2");
    assert_eq!(host.sh(&id, "cat /root/note.txt").await, "before-pause\n");
    let guest_ms: i64 = host.sh(&id, "date +%s%3N").await.trim().parse().unwrap();
    let host_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (guest_ms - host_ms).abs() < 1000,
        "guest clock off by {} ms after resume",
        guest_ms - host_ms
    );

    host.destroy(&id).await;
    let status = host
        .client
        .resume_sandbox(pb::ResumeSandboxRequest {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "resume of a destroyed sandbox: {status}"
    );
    host.stop().await;
}

/// Allocated bytes of a file.
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_boot_keeps_ram_off_the_disk_until_its_first_pause_writes_it() {
    let mut host = TestHost::start().await;
    let sandbox = host
        .create_with(pb::CreateSandboxRequest {
            cold_boot: true,
            ..common::create_request()
        })
        .await;
    let id = sandbox.sandbox_id;
    assert_eq!(sandbox.start, pb::StartMethod::ColdBoot as i32);
    let dir = host.state.path().join("sandboxes").join(&id);
    let memory = dir.join("memory");

    // Guest RAM is QEMU's own memory, a memfd: no file of the sandbox backs it.
    assert!(!memory.exists(), "a running cold boot has a memory file");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !files.iter().any(|name| name.starts_with("memory")),
        "the sandbox directory holds a memory file: {files:?}"
    );
    let (_, _, pids) = host_objects(&host.instance()).await;
    assert_eq!(pids.len(), 1, "one VMM runs: {pids:?}");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", pids[0])).unwrap();
    let ram = maps
        .lines()
        .find(|line| line.contains("/memfd:memory-backend-memfd"))
        .unwrap_or_else(|| panic!("QEMU does not map a memfd for guest RAM:\n{maps}"));
    assert_eq!(
        ram.split_whitespace().nth(1),
        Some("rw-s"),
        "guest RAM is not the memfd itself: {ram}"
    );

    let sum = "sha256sum /dev/shm/blob | cut -c1-64";
    host.sh(&id, "head -c 8388608 /dev/urandom > /dev/shm/blob")
        .await;
    let before = host.sh(&id, sum).await;
    host.start_counter(&id).await;

    // The first pause writes the RAM the guest touched into the sandbox's own memory file
    // and saves device state alone.
    pause(&mut host, &id).await;
    assert_eq!(std::fs::metadata(&memory).unwrap().len(), 256 << 20);
    let written = allocated(&memory);
    assert!(
        (8 << 20..256 << 20).contains(&written),
        "the memory file holds {written} bytes: not the RAM the guest touched"
    );
    let state_bytes = std::fs::metadata(dir.join("vmstate")).unwrap().len();
    assert!(
        state_bytes < 1 << 20,
        "vmstate holds RAM: {state_bytes} bytes"
    );

    // From then on the sandbox pauses like any other: its RAM is that file, written through.
    for round in 1..=2 {
        resume(&mut host, &id).await;
        assert_eq!(host.sh(&id, sum).await, before, "round {round}");
        assert_eq!(
            host.sh(&id, NEXT).await.trim(),
            (round + 1).to_string(),
            "the counter lost its state in round {round}"
        );
        pause(&mut host, &id).await;
    }
    resume(&mut host, &id).await;
    assert_eq!(host.sh(&id, sum).await, before);
    host.destroy(&id).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_pause_resume_cycles_lose_no_write() {
    let mut host = TestHost::start().await;
    let id = host.create().await.sandbox_id;
    for cycle in 1..=10 {
        // Written but not synced by the guest: it lives in guest page cache (RAM) and the overlay.
        host.sh(&id, &format!("mkdir -p /data && echo cycle-{cycle} > /data/f{cycle} && echo {cycle} >> /data/log")).await;
        pause(&mut host, &id).await;
        resume(&mut host, &id).await;
        let listing = host.sh(&id, "cat /data/f*; wc -l < /data/log").await;
        let mut expected: Vec<String> = (1..=cycle).map(|c| format!("cycle-{c}")).collect();
        expected.sort();
        expected.push(cycle.to_string());
        assert_eq!(
            listing.lines().collect::<Vec<_>>(),
            expected,
            "after resume {cycle}"
        );
    }
    // The disk survives a clean power-off too: what reached the overlay is all there.
    host.sh(&id, "sync").await;
    assert_eq!(
        host.sh(&id, "sha256sum /data/log | cut -c1-16").await.len(),
        17
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_sandbox_is_paused_automatically_and_ping_postpones_it() {
    let mut host = TestHost::start().await;
    let sandbox = host
        .create_with(pb::CreateSandboxRequest {
            timeout_sec: 3,
            ..common::create_request()
        })
        .await;
    let id = sandbox.sandbox_id;
    assert_eq!(sandbox.timeout_sec, 3);
    let state = |host: &mut TestHost, id: String| {
        let mut client = host.client.clone();
        async move {
            client
                .get_sandbox(pb::GetSandboxRequest { sandbox_id: id })
                .await
                .unwrap()
                .into_inner()
        }
    };
    // Keep it busy past its timeout with pings and an exec.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        host.client
            .ping_sandbox(pb::PingSandboxRequest {
                sandbox_id: id.clone(),
            })
            .await
            .unwrap();
    }
    host.sh(&id, "echo still-here > /root/idle.txt").await;
    assert_eq!(
        state(&mut host, id.clone()).await.state,
        pb::SandboxState::Running as i32,
        "paused despite activity"
    );

    // Then leave it alone.
    let paused = host
        .wait_for_state(&id, pb::SandboxState::Paused, Duration::from_secs(20))
        .await;
    assert!(paused.auto_paused);
    let idle_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - paused.last_activity_ms;
    assert!(idle_ms >= 3000, "paused after only {idle_ms} ms idle");

    let resumed = resume(&mut host, &id).await;
    assert!(!resumed.auto_paused);
    assert_eq!(host.sh(&id, "cat /root/idle.txt").await, "still-here\n");
    // Timeout 0 turns it off.
    host.client
        .set_sandbox_timeout(pb::SetSandboxTimeoutRequest {
            sandbox_id: id.clone(),
            timeout_sec: 0,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        state(&mut host, id.clone()).await.state,
        pb::SandboxState::Running as i32
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_sampled_served_by_range_and_flushed_on_pause() {
    let mut host = TestHost::start().await;
    let id = host.create().await.sandbox_id;
    let mut events = host
        .client
        .watch_sandboxes(pb::WatchSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    // Some work, then enough time for several 500 ms samples.
    host.sh(
        &id,
        "head -c 20000000 /dev/urandom > /root/blob && sha256sum /root/blob > /dev/null && sync",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = host
        .client
        .get_sandbox_metrics(pb::GetSandboxMetricsRequest {
            sandbox_id: id.clone(),
            range_sec: 60,
        })
        .await
        .unwrap()
        .into_inner()
        .samples;
    assert!(samples.len() >= 4, "{} samples in ~4 s", samples.len());
    assert!(samples.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
    let last = samples.last().unwrap();
    assert!(last.rss_bytes > 20 << 20 && last.pss_bytes > 0, "{last:?}");
    assert!(
        last.disk_bytes >= 20_000_000,
        "the 20 MB file is in the overlay: {last:?}"
    );
    assert!(
        samples.iter().any(|s| s.cpu_percent > 1.0),
        "the guest worked: {samples:?}"
    );

    pause(&mut host, &id).await;
    let flushed = loop {
        let event = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut events),
        )
        .await
        .expect("a paused event")
        .unwrap()
        .unwrap();
        if event.sandbox.as_ref().unwrap().state == pb::SandboxState::Paused as i32 {
            break event.flushed_metrics;
        }
    };
    assert!(
        flushed.len() >= samples.len(),
        "pause flushed {} samples",
        flushed.len()
    );
    // History stays readable while paused.
    let status = host
        .client
        .get_sandbox_metrics(pb::GetSandboxMetricsRequest {
            sandbox_id: id.clone(),
            range_sec: 100_000,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let paused = host
        .client
        .get_sandbox_metrics(pb::GetSandboxMetricsRequest {
            sandbox_id: id.clone(),
            range_sec: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.samples.len() >= samples.len());
    host.stop().await;
}
