//! The driver against a test double of Firecracker's API (tests/support/
//! firecracker_api_double.py), because this machine has neither hardware KVM nor a
//! `firecracker` binary. The double checks process handling and API traffic, not booting;
//! tests/firecracker.rs boots real guests where Firecracker can run.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::vmm::VmNetwork;

const DOUBLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/firecracker_api_double.py"
);

fn spec(run_dir: &Path, sharing: MemorySharing, memory_file: PathBuf) -> VmSpec {
    VmSpec {
        name: "wrenn.t1.sb-abc".into(),
        vcpus: 2,
        memory_mb: 256,
        kernel: "/k/vmlinux".into(),
        kernel_args: "console=ttyS0 root=/dev/vda".into(),
        root_disk: run_dir.join(crate::disk::RAW_DISK_FILE),
        network: VmNetwork {
            // The agent's own namespace: joining it is allowed and changes nothing.
            netns: "/proc/self/ns/net".into(),
            tap: "tap0".into(),
            mac: "02:00:ac:10:00:02".into(),
        },
        run_dir: run_dir.to_owned(),
        memory_file,
        memory_sharing: sharing,
        accelerator: Accelerator::Kvm,
    }
}

/// The requests the double has seen, in order, and empties its log.
fn take_requests(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    std::fs::write(log, "").unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn calls(requests: &[Value]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect()
}

fn double_env(log: &Path) {
    // Each test runs in its own process under nextest, so the environment is ours.
    std::env::set_var("FC_DOUBLE_LOG", log);
}

#[tokio::test]
async fn boots_saves_and_restores_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    double_env(&log);
    let run_dir = dir.path().join("sandbox");
    let memory = run_dir.join("memory");
    let vmm = FirecrackerVmm::new(DOUBLE);
    let booted = spec(&run_dir, MemorySharing::Shared, memory.clone());

    let mut vm = vmm.start(&booted).await.expect("start");
    let requests = take_requests(&log);
    assert_eq!(
        calls(&requests),
        [
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /network-interfaces/eth0",
            "PUT /entropy",
            "PUT /actions"
        ]
    );
    assert_eq!(
        requests[0]["body"],
        json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false})
    );
    assert_eq!(requests[1]["body"]["kernel_image_path"], "/k/vmlinux");
    assert_eq!(
        requests[1]["body"]["boot_args"],
        "console=ttyS0 root=/dev/vda reboot=k pci=off"
    );
    // Relative to the sandbox directory, which is the process's working directory.
    assert_eq!(requests[2]["body"]["path_on_host"], "rootfs.raw");
    assert_eq!(requests[2]["cwd"], run_dir.to_str().unwrap());
    assert_eq!(requests[3]["body"]["host_dev_name"], "tap0");
    assert_eq!(requests[3]["body"]["guest_mac"], "02:00:ac:10:00:02");
    assert_eq!(requests[5]["body"], json!({"action_type": "InstanceStart"}));
    let pid = vm.pid().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == b"wrenn-t1-sb-abc"),
        "reclaim finds the VM by its --id"
    );

    // Pause: all of RAM goes to the memory file, written aside and renamed into place.
    let state = run_dir.join("vmstate");
    let ram = vm
        .save_and_exit(&state, &run_dir.join("own-memory"))
        .await
        .expect("save");
    assert_eq!(ram, SavedRam::InMemoryFile);
    let requests = take_requests(&log);
    assert_eq!(calls(&requests), ["PATCH /vm", "PUT /snapshot/create"]);
    assert_eq!(requests[0]["body"], json!({"state": "Paused"}));
    assert_eq!(requests[1]["body"]["snapshot_type"], "Full");
    assert_eq!(
        requests[1]["body"]["snapshot_path"],
        state.to_str().unwrap()
    );
    assert_eq!(
        requests[1]["body"]["mem_file_path"],
        format!("{}.partial", memory.display())
    );
    assert_eq!(std::fs::read_to_string(&memory).unwrap(), "mem_file_path");
    assert!(!Path::new(&format!("{}.partial", memory.display())).exists());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the VMM is gone"
    );

    // Resume: the state and the memory file, mapped privately, and the guest runs on.
    let saved = SavedState {
        file: &state,
        ram: SavedRam::InMemoryFile,
    };
    let mut vm = vmm
        .restore(&booted, saved, AfterRestore::Run)
        .await
        .expect("restore");
    let requests = take_requests(&log);
    assert_eq!(calls(&requests), ["PUT /snapshot/load"]);
    assert_eq!(
        requests[0]["body"],
        json!({
            "snapshot_path": state,
            "mem_backend": {"backend_type": "File", "backend_path": memory},
            "resume_vm": true,
        })
    );
    vm.kill().await.unwrap();
}

#[tokio::test]
async fn a_clone_saves_its_ram_beside_the_state_and_restores_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    double_env(&log);
    let run_dir = dir.path().join("clone");
    let template_memory = dir.path().join("template-memory");
    std::fs::write(&template_memory, "template").unwrap();
    let template_state = dir.path().join("template-vmstate");
    std::fs::write(&template_state, "state").unwrap();
    let vmm = FirecrackerVmm::new(DOUBLE);
    let clone = spec(&run_dir, MemorySharing::Private, template_memory.clone());

    let saved = SavedState {
        file: &template_state,
        ram: SavedRam::InMemoryFile,
    };
    let mut vm = vmm.restore(&clone, saved, AfterRestore::Run).await.unwrap();
    let state = run_dir.join("vmstate");
    let ram = vm
        .save_and_exit(&state, &run_dir.join("own-memory"))
        .await
        .unwrap();
    assert_eq!(
        ram,
        SavedRam::InStateFile,
        "a clone's RAM goes beside its state"
    );
    // The template's memory file is never written.
    assert_eq!(
        std::fs::read_to_string(&template_memory).unwrap(),
        "template"
    );
    let beside = crate::vmm::ram_beside_state(&state);
    assert_eq!(std::fs::read_to_string(&beside).unwrap(), "mem_file_path");
    take_requests(&log);

    let saved = SavedState {
        file: &state,
        ram: SavedRam::InStateFile,
    };
    let mut vm = vmm
        .restore(&clone, saved, AfterRestore::StayStopped)
        .await
        .unwrap();
    let requests = take_requests(&log);
    assert_eq!(
        requests[0]["body"]["mem_backend"]["backend_path"],
        beside.to_str().unwrap()
    );
    assert_eq!(requests[0]["body"]["resume_vm"], false);
    vm.kill().await.unwrap();
}

#[tokio::test]
async fn a_refused_request_names_firecrackers_fault_and_ends_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    double_env(&log);
    std::env::set_var("FC_DOUBLE_REFUSE", "/boot-source");
    let run_dir = dir.path().join("sandbox");
    let vmm = FirecrackerVmm::new(DOUBLE);
    // A name of its own: the other tests' doubles run at the same time.
    let mut refused = spec(&run_dir, MemorySharing::Shared, run_dir.join("memory"));
    refused.name = "wrenn.t9.sb-refused".into();
    let error = vmm.start(&refused).await.err().expect("refused");
    let message = crate::error::error_chain(&error);
    assert!(
        message.contains("PUT /boot-source answered 400"),
        "{message}"
    );
    assert!(message.contains("refused by the test double"), "{message}");
    assert_eq!(
        calls(&take_requests(&log)).len(),
        2,
        "nothing after the refusal"
    );
    assert!(
        crate::reclaim::find_vmm_processes("wrenn.t9.").is_empty(),
        "the refused VMM was killed"
    );
}

#[tokio::test]
async fn restoring_missing_files_and_running_without_kvm_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("sandbox");
    let vmm = FirecrackerVmm::new(DOUBLE);
    let booted = spec(&run_dir, MemorySharing::Shared, run_dir.join("memory"));
    let saved = SavedState {
        file: &run_dir.join("vmstate"),
        ram: SavedRam::InMemoryFile,
    };
    let error = vmm
        .restore(&booted, saved, AfterRestore::Run)
        .await
        .err()
        .unwrap();
    assert!(matches!(error, VmmError::StateFile { .. }), "{error}");

    let mut tcg = booted.clone();
    tcg.accelerator = Accelerator::Tcg;
    let error = vmm.start(&tcg).await.err().unwrap();
    assert!(error.to_string().contains("needs hardware KVM"), "{error}");

    let mut outside = booted;
    outside.root_disk = "/elsewhere/rootfs.raw".into();
    let error = vmm.start(&outside).await.err().unwrap();
    assert!(
        error
            .to_string()
            .contains("must lie in the sandbox directory"),
        "{error}"
    );
}
