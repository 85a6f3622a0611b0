//! The QEMU `microvm` driver: builds QEMU's command line, starts it inside the sandbox's
//! network namespace and controls it over QMP.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::process::Command;

use super::process::{self, VmmProcess, CONSOLE_LOG, VMM_LOG};
use super::qmp::QmpClient;
use super::{
    AfterRestore, MemorySharing, SavedRam, SavedState, VmExit, VmInstance, VmSpec, Vmm, VmmError,
};
use crate::accel::Accelerator;

const QMP_SOCKET: &str = "qmp.sock";

/// Runs guests with `qemu-system-x86_64 -M microvm`.
#[derive(Debug, Clone)]
pub struct QemuVmm {
    binary: PathBuf,
    qmp_timeout: Duration,
    tcg_cache_mb: u32,
    tcg_boot_cache_mb: u32,
}

impl QemuVmm {
    /// `tcg_cache_mb` caps TCG's translated-code cache (ignored under KVM). The cache is most of
    /// an idle TCG VM's private memory; when full, QEMU flushes it and translates afresh.
    pub fn new(binary: impl Into<PathBuf>, tcg_cache_mb: u32) -> Self {
        Self {
            binary: binary.into(),
            qmp_timeout: Duration::from_secs(10),
            tcg_cache_mb,
            tcg_boot_cache_mb: tcg_cache_mb,
        }
    }

    /// The cache for a VM that boots its kernel instead of restoring. A boot to a listening
    /// envd translates ~29 MiB of code (measured); a smaller cache is flushed mid-boot and the
    /// boot translates again. A restored VM translates only what runs after the restore.
    pub fn with_boot_cache_mb(mut self, mb: u32) -> Self {
        self.tcg_boot_cache_mb = mb;
        self
    }
}

/// QEMU's arguments for a spec. Kept pure so the command line is unit-tested.
pub fn qemu_args(spec: &VmSpec, tcg_cache_mb: u32) -> Vec<OsString> {
    let run = |file: &str| spec.run_dir.join(file);
    let (accel, cpu) = match spec.accelerator {
        Accelerator::Kvm => ("kvm".to_owned(), "host"),
        Accelerator::Tcg => (format!("tcg,tb-size={tcg_cache_mb}"), "max"),
    };
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&str]| args.extend(parts.iter().map(OsString::from));
    push(&["-name", &format!("guest={},debug-threads=off", spec.name)]);
    // acpi=off makes QEMU describe the virtio-mmio devices on the kernel command line, which our
    // ACPI-less kernel needs. The RTC stays on: without it the guest kernel spins ~1 s at boot.
    push(&[
        "-M",
        "microvm,x-option-roms=off,acpi=off,memory-backend=mem",
    ]);
    push(&["-accel", &accel, "-cpu", cpu]);
    push(&[
        "-smp",
        &spec.vcpus.to_string(),
        "-m",
        &format!("{}M", spec.memory_mb),
    ]);
    let memory = match spec.memory_sharing {
        MemorySharing::Anonymous => format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            spec.memory_mb
        ),
        sharing => format!(
            "memory-backend-file,id=mem,size={}M,mem-path={},share={}",
            spec.memory_mb,
            spec.memory_file.display(),
            if sharing == MemorySharing::Shared {
                "on"
            } else {
                "off"
            }
        ),
    };
    push(&["-object", &memory]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-serial", &format!("file:{}", run(CONSOLE_LOG).display())]);
    push(&["-kernel", &spec.kernel.display().to_string()]);
    // reboot=t: a guest reboot resets through the triple-fault path, which -no-reboot turns
    // into QEMU exiting; that is how envd powers the VM off.
    push(&["-append", &format!("{} reboot=t", spec.kernel_args)]);
    push(&[
        "-drive",
        &format!(
            "id=root,file={},format=qcow2,if=none,discard=unmap",
            spec.root_disk.display()
        ),
        "-device",
        // An optimal I/O size of 1 MiB makes the guest read ahead 2 MiB instead of 128 KiB:
        // loading envd at boot took ~8 ms less under TCG (fewer, larger requests); 4 MiB was
        // slower. Restores keep the value their saved device state holds.
        "virtio-blk-device,drive=root,opt_io_size=1048576",
    ]);
    push(&[
        "-netdev",
        &format!(
            "tap,id=net0,ifname={},script=no,downscript=no",
            spec.network.tap
        ),
        "-device",
        &format!("virtio-net-device,netdev=net0,mac={}", spec.network.mac),
    ]);
    push(&[
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-device,rng=rng0",
    ]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", run(QMP_SOCKET).display()),
    ]);
    args
}

#[async_trait]
impl Vmm for QemuVmm {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn root_disk(&self) -> crate::disk::RootDisk {
        crate::disk::RootDisk::Qcow2Overlay
    }

    /// A guest's first touch of a page of a shared mapping of a disk file costs a filesystem
    /// page fault (block reservation, dirty tracking), and its dirty pages are written back to
    /// disk all the time it runs: ~90 ms of a 256 MiB boot under TCG. A private mapping of a
    /// blank file still costs a page-cache page plus a copy per touch: 30-50 ms more than a
    /// memfd, measured. The memfd keeps a running guest off the disk too; the first pause
    /// writes what the guest touched (`memfd_ram`).
    fn boot_memory(&self) -> MemorySharing {
        MemorySharing::Anonymous
    }

    async fn start(&self, spec: &VmSpec) -> Result<Box<dyn VmInstance>, VmmError> {
        Ok(Box::new(self.spawn(spec, BootMode::Fresh).await?))
    }

    async fn restore(
        &self,
        spec: &VmSpec,
        saved: SavedState<'_>,
        after: AfterRestore,
    ) -> Result<Box<dyn VmInstance>, VmmError> {
        let state_error = |source| VmmError::StateFile {
            path: saved.file.to_owned(),
            source,
        };
        let state = File::open(saved.file).map_err(state_error)?;
        let configuration_section = has_configuration_section(&state).map_err(state_error)?;
        let mode = BootMode::Incoming {
            state,
            configuration_section,
        };
        let mut instance = self.spawn(spec, mode).await?;
        let restored = async {
            let qmp = &mut instance.qmp;
            // The capability changes the stream's format, so it must match the saving side.
            qmp.execute(
                "migrate-set-capabilities",
                Some(ignore_shared_memory(saved.ram == SavedRam::InMemoryFile)),
            )
            .await?;
            qmp.execute(
                "migrate-incoming",
                Some(json!({ "uri": format!("fd:{STATE_FD}") })),
            )
            .await?;
            wait_for_migration(qmp, "restore saved state", MIGRATION_TIMEOUT).await?;
            if saved.ram == SavedRam::InStateFile && spec.memory_sharing == MemorySharing::Shared {
                // Loading RAM from the stream reads every page of the fresh memory file that
                // the stream says is zero, to check it is: that faults page cache in over all
                // of the file's holes, up to the whole RAM size resident in this VMM. Dropped
                // while the guest is still stopped, so nothing writes the file meanwhile.
                let file = &spec.memory_file;
                crate::disk::drop_cached_holes(file).map_err(|source| VmmError::RunDir {
                    path: file.clone(),
                    source,
                })?;
            }
            if after == AfterRestore::Run {
                qmp.execute("cont", None).await?;
            }
            Ok::<(), VmmError>(())
        }
        .await;
        match restored {
            Ok(()) => Ok(Box::new(instance)),
            Err(e) => {
                let _ = instance.kill().await;
                Err(e)
            }
        }
    }
}

/// Whether QEMU boots the kernel or waits for saved state.
#[derive(Debug)]
enum BootMode {
    Fresh,
    /// Paused (`-S`) until `migrate-incoming` loaded the state, read from `state` (handed
    /// to QEMU as descriptor `STATE_FD`: no shell and `cat` in between), and `cont` resumed it.
    /// Device state saved alone has no configuration section (`has_configuration_section`).
    Incoming {
        state: File,
        configuration_section: bool,
    },
}

/// Descriptor number QEMU inherits the saved state file as.
const STATE_FD: i32 = 3;
/// Name the state file's descriptor is registered under (`getfd`) for saving.
const STATE_FD_NAME: &str = "state";

/// Saved-state transfers are small (RAM stays in its file), so this is generous.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Lifts the default 128 MiB/s cap, which only matters when RAM travels in the stream.
fn unlimited_bandwidth() -> serde_json::Value {
    json!({ "max-bandwidth": 64u64 << 30 })
}

/// On when guest RAM is a shared file: it stays out of the stream on both sides. Off for a
/// private mapping, whose RAM must travel in the stream: a destination with the capability on
/// refuses RAM for a block it maps shared, which restoring a clone into its own file needs.
fn ignore_shared_memory(on: bool) -> serde_json::Value {
    json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": on }] })
}

async fn wait_for_migration(
    qmp: &mut QmpClient,
    operation: &'static str,
    timeout: Duration,
) -> Result<(), VmmError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let info = qmp.execute("query-migrate", None).await?;
        let status = info["status"].as_str().unwrap_or("none").to_owned();
        match status.as_str() {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                return Err(VmmError::Migration {
                    operation,
                    status,
                    error: info["error-desc"]
                        .as_str()
                        .unwrap_or("no detail")
                        .to_owned(),
                })
            }
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(VmmError::MigrationTimeout { operation, timeout })
            }
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

impl QemuVmm {
    fn tcg_cache_mb_for(&self, mode: &BootMode) -> u32 {
        match mode {
            BootMode::Fresh => self.tcg_boot_cache_mb,
            BootMode::Incoming { .. } => self.tcg_cache_mb,
        }
    }

    async fn spawn(&self, spec: &VmSpec, mode: BootMode) -> Result<QemuInstance, VmmError> {
        let netns = process::prepare(spec, QMP_SOCKET)?;
        let log = process::create_log(spec, VMM_LOG)?;
        let log_err = log.try_clone().map_err(|source| VmmError::RunDir {
            path: spec.run_dir.clone(),
            source,
        })?;

        let mut command = Command::new(&self.binary);
        command.args(qemu_args(spec, self.tcg_cache_mb_for(&mode)));
        let incoming_state = match mode {
            BootMode::Fresh => None,
            BootMode::Incoming {
                state,
                configuration_section,
            } => {
                command.args(["-S", "-incoming", "defer"]);
                if !configuration_section {
                    // QEMU then also logs "Expected vmdescription section": harmless, the
                    // description is only for stream-dumping tools.
                    command.args(["-global", "migration.send-configuration=off"]);
                }
                Some(state)
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // A start-up abandoned half way must not leave QEMU running.
            .kill_on_drop(true);
        crate::command::join_netns_at_exec(&mut command, netns);
        if spec.accelerator == Accelerator::Tcg {
            crate::command::no_transparent_huge_pages_at_exec(&mut command);
        }
        // Last: the earlier hooks use descriptors that may have the number it takes over.
        if let Some(state) = incoming_state {
            crate::command::inherit_fd_at_exec(&mut command, state, STATE_FD);
        }
        let mut process = VmmProcess::spawn(command, &self.binary, &spec.run_dir, "qemu")?;
        let qmp_path = spec.run_dir.join(QMP_SOCKET);
        let qmp = process
            .connect(QmpClient::connect(&qmp_path, self.qmp_timeout))
            .await?;
        Ok(QemuInstance {
            memory_sharing: spec.memory_sharing,
            memory_file: spec.memory_file.clone(),
            process,
            qmp,
        })
    }
}

struct QemuInstance {
    memory_sharing: MemorySharing,
    memory_file: PathBuf,
    process: VmmProcess,
    /// QEMU's control socket; holding it also keeps its single QMP slot ours.
    qmp: QmpClient,
}

#[async_trait]
impl VmInstance for QemuInstance {
    fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    async fn wait_exit(&mut self) -> VmExit {
        self.process.wait_exit().await
    }

    async fn kill(&mut self) -> Result<(), VmmError> {
        self.process.kill().await
    }

    async fn save_and_exit(
        &mut self,
        state_file: &Path,
        own_memory: &Path,
    ) -> Result<SavedRam, VmmError> {
        self.qmp.execute("stop", None).await?;
        let ram = match self.memory_sharing {
            MemorySharing::Shared => {
                self.migrate_device_state(state_file).await?;
                SavedRam::InMemoryFile
            }
            // A migration would put all of RAM in the stream, reading every page, and its
            // restore would fault every page of the new memory file in. The agent writes the
            // RAM out itself (template plus changed pages) and QEMU only the devices.
            MemorySharing::Private => {
                let pid = self.pid()?;
                let (template, destination) = (self.memory_file.clone(), own_memory.to_owned());
                let written = write_own_memory(own_memory, move || {
                    super::private_ram::write_private_ram(pid, &template, &destination)
                })
                .await?;
                tracing::debug!(
                    template_bytes = written.template_bytes,
                    changed_bytes = written.changed_bytes,
                    "guest RAM written to its own memory file"
                );
                self.save_device_state(state_file).await?;
                SavedRam::InOwnMemoryFile
            }
            MemorySharing::Anonymous => {
                let pid = self.pid()?;
                let destination = own_memory.to_owned();
                let bytes = write_own_memory(own_memory, move || {
                    let memfd = super::memfd_ram::QEMU_MEMFD;
                    super::memfd_ram::write_memfd_ram(pid, memfd, &destination)
                })
                .await?;
                tracing::debug!(bytes, "guest RAM written to its own memory file");
                self.save_device_state(state_file).await?;
                SavedRam::InOwnMemoryFile
            }
        };
        // QEMU may close the socket before it answers `quit`; its exit is what counts.
        let _ = self.qmp.execute("quit", None).await;
        self.process.end(Duration::from_secs(10)).await?;
        Ok(ram)
    }
}

/// Runs `write`, which writes a stopped VMM's guest RAM into `own_memory`, off the runtime.
async fn write_own_memory<T: Send + 'static>(
    own_memory: &Path,
    write: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, VmmError> {
    tokio::task::spawn_blocking(write)
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written)
        .map_err(|source| VmmError::OwnMemory {
            path: own_memory.to_owned(),
            source,
        })
}

impl QemuInstance {
    fn pid(&self) -> Result<u32, VmmError> {
        self.process
            .pid()
            .ok_or_else(|| VmmError::Unsupported("QEMU's process id is unknown".into()))
    }

    /// Device state alone, without the configuration section a migration starts with;
    /// `restore` looks for it (`has_configuration_section`).
    async fn save_device_state(&mut self, state_file: &Path) -> Result<(), VmmError> {
        self.qmp
            .execute(
                "xen-save-devices-state",
                Some(json!({ "filename": state_file, "live": false })),
            )
            .await?;
        Ok(())
    }

    /// Saves device state with a migration; RAM in the shared memory file is left out
    /// (`x-ignore-shared`).
    async fn migrate_device_state(&mut self, state_file: &Path) -> Result<(), VmmError> {
        let qmp = &mut self.qmp;
        qmp.execute("migrate-set-capabilities", Some(ignore_shared_memory(true)))
            .await?;
        qmp.execute("migrate-set-parameters", Some(unlimited_bandwidth()))
            .await?;
        // Handed over as a descriptor: no shell and `cat` forked from a QEMU this size.
        let state = File::create(state_file).map_err(|source| VmmError::StateFile {
            path: state_file.to_owned(),
            source,
        })?;
        qmp.execute_with_fd(
            "getfd",
            Some(json!({ "fdname": STATE_FD_NAME })),
            state.as_fd(),
        )
        .await?;
        drop(state);
        qmp.execute(
            "migrate",
            Some(json!({ "uri": format!("fd:{STATE_FD_NAME}") })),
        )
        .await?;
        wait_for_migration(qmp, "save device state", MIGRATION_TIMEOUT).await
    }
}

/// Whether a saved state starts with the configuration section a migration writes (device
/// state saved alone has none, and QEMU must then be told not to expect it). The stream
/// begins with the magic "QEVM" and version 3 (8 bytes); section type 7 is the configuration.
fn has_configuration_section(state: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 9];
    state.read_exact_at(&mut header, 0)?;
    if &header[..4] != b"QEVM" {
        return Err(std::io::Error::other(
            "not a QEMU saved state (no QEVM magic)",
        ));
    }
    Ok(header[8] == 7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{MemorySharing, VmNetwork};

    fn spec(accelerator: Accelerator) -> VmSpec {
        VmSpec {
            name: "wrenn.t1.sb-abc".into(),
            vcpus: 2,
            memory_mb: 256,
            kernel: "/k/vmlinux".into(),
            kernel_args: "console=ttyS0 root=/dev/vda".into(),
            root_disk: "/s/disk.qcow2".into(),
            network: VmNetwork {
                netns: "/run/netns/t1-0".into(),
                tap: "tap0".into(),
                mac: "02:00:ac:10:00:02".into(),
            },
            run_dir: "/s".into(),
            memory_file: "/s/memory".into(),
            memory_sharing: MemorySharing::Shared,
            accelerator,
        }
    }

    fn joined(spec: &VmSpec) -> String {
        qemu_args(spec, 32)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_boot_gets_the_boot_translation_cache_and_a_restore_the_usual_one() {
        let vmm = QemuVmm::new("qemu-system-x86_64", 24).with_boot_cache_mb(48);
        assert_eq!(vmm.tcg_cache_mb_for(&BootMode::Fresh), 48);
        let state = File::open("/dev/null").unwrap();
        let incoming = BootMode::Incoming {
            state,
            configuration_section: true,
        };
        assert_eq!(vmm.tcg_cache_mb_for(&incoming), 24);
        // Unless told otherwise, both are the same.
        let plain = QemuVmm::new("qemu-system-x86_64", 24);
        assert_eq!(plain.tcg_cache_mb_for(&BootMode::Fresh), 24);
    }

    #[test]
    fn guest_ram_is_a_shared_file_a_private_one_or_a_memfd() {
        let mut spec = spec(Accelerator::Tcg);
        assert!(joined(&spec)
            .contains("memory-backend-file,id=mem,size=256M,mem-path=/s/memory,share=on"));
        spec.memory_sharing = MemorySharing::Private;
        assert!(joined(&spec)
            .contains("memory-backend-file,id=mem,size=256M,mem-path=/s/memory,share=off"));
        spec.memory_sharing = MemorySharing::Anonymous;
        let line = joined(&spec);
        assert!(line.contains("memory-backend-memfd,id=mem,size=256M,share=on"));
        assert!(!line.contains("mem-path"), "a memfd has no path: {line}");
    }

    #[test]
    fn tcg_command_line_has_every_device_in_a_fixed_order() {
        let line = joined(&spec(Accelerator::Tcg));
        for expected in [
            "-name guest=wrenn.t1.sb-abc",
            "-accel tcg,tb-size=32 -cpu max",
            "-smp 2 -m 256M",
            "mem-path=/s/memory,share=on",
            "-append console=ttyS0 root=/dev/vda reboot=t",
            "file=/s/disk.qcow2,format=qcow2",
            "virtio-blk-device,drive=root,opt_io_size=1048576",
            "ifname=tap0,script=no",
            "mac=02:00:ac:10:00:02",
            "-qmp unix:/s/qmp.sock,server=on,wait=off",
            "-serial file:/s/console.log",
        ] {
            assert!(line.contains(expected), "missing {expected:?} in {line}");
        }
        // Restoring a snapshot needs identical device order: block, net, rng.
        let blk = line.find("virtio-blk-device").unwrap();
        let net = line.find("virtio-net-device").unwrap();
        let rng = line.find("virtio-rng-device").unwrap();
        assert!(blk < net && net < rng);
    }

    #[test]
    fn device_state_alone_is_told_from_a_migration_stream_by_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let check = |bytes: &[u8]| {
            let path = dir.path().join("state");
            std::fs::write(&path, bytes).unwrap();
            has_configuration_section(&File::open(&path).unwrap())
        };
        // A migration: magic, version 3, then the configuration section (type 7).
        assert!(check(b"QEVM\0\0\0\x03\x07\0\0\0\x06microvm").unwrap());
        // Device state saved alone: the first device section (type 4, full) comes first.
        assert!(!check(b"QEVM\0\0\0\x03\x04\0\0\0\x0b").unwrap());
        assert!(check(b"not a state file").is_err());
        assert!(check(b"QEVM").is_err(), "too short");
    }

    #[test]
    fn kvm_uses_host_cpu() {
        assert!(joined(&spec(Accelerator::Kvm)).contains("-accel kvm -cpu host"));
    }
}
