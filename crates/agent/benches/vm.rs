//! VM benchmark: boot, exec round trip, file throughput and memory per sandbox, each printed
//! next to the floor it is compared with, measured in the same run on the same machine.
//!
//! Run as root with images built: `cargo bench -p wrenn-agent --bench vm`.
//! `WRENN_BENCH_BOOTS` (default 5) and `WRENN_BENCH_EXECS` (default 100) size the runs;
//! `WRENN_BENCH_SECTIONS=boot,exec,pause,clones,memory` picks sections (default all).
//! The last row times fixed CPU work before and after the run: on a busy host it moves too.
//! `WRENN_TCG_CACHE_MB` and `WRENN_SPARE_SLOTS` override the agent's defaults; `RUST_LOG`
//! (e.g. `wrenn_agent=debug`) logs the agent's own timings to stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::transport::Channel;
use wrenn_agent::config::{AgentConfig, SlotNetwork};
use wrenn_agent::images::ImageStore;
use wrenn_agent::network::SlotAddresses;
use wrenn_agent::server::Agent;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_agent_api::v1::host_agent_client::HostAgentClient;

type Client = HostAgentClient<Channel>;

const TRANSFER_BYTES: usize = 10 << 20;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `WRENN_BENCH_SECTIONS`: a comma-separated subset of boot, exec, pause, clones, memory
/// (default: all).
struct Sections(Option<Vec<String>>);

impl Sections {
    fn from_env() -> Self {
        Self(
            std::env::var("WRENN_BENCH_SECTIONS")
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
        )
    }
    fn has(&self, name: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    }
}

/// Sorted samples in milliseconds (or any unit).
#[derive(Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn new(mut values: Vec<f64>) -> Self {
        values.sort_by(|a, b| a.total_cmp(b));
        Self(values)
    }
    fn quantile(&self, q: f64) -> f64 {
        let index = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0[index]
    }
    fn median(&self) -> f64 {
        self.quantile(0.5)
    }
    fn p99(&self) -> f64 {
        self.quantile(0.99)
    }
}

struct Row {
    name: &'static str,
    ours: Samples,
    floor: Option<(&'static str, Samples)>,
    unit: &'static str,
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` asks benches to list tests.
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    // RUST_LOG=wrenn_agent=debug shows where each operation's time goes.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let images_dir = std::env::var_os("WRENN_IMAGES_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/wrenn/images"), PathBuf::from);
    let template = ImageStore::new(&images_dir).resolve("minimal")?;
    let lease = wrenn_agent::lease::BENCHES.acquire()?;
    let state = tempfile::tempdir()?;
    let mut config = AgentConfig::new(state.path());
    config.images_dir = images_dir.clone();
    config.state_dir = state.path().join("sandboxes");
    lease.apply(&mut config);
    config.on_shutdown = wrenn_agent::config::ShutdownPolicy::DestroySandboxes;
    if let Some(mb) = std::env::var("WRENN_TCG_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.tcg_cache_mb = mb;
    }
    if let Some(mb) = std::env::var("WRENN_TCG_BOOT_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.tcg_boot_cache_mb = mb;
    }
    if let Some(spares) = std::env::var("WRENN_SPARE_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.spare_slots = spares;
    }
    let slot_network: SlotNetwork = lease.slot_network().parse().map_err(anyhow::Error::msg)?;
    let agent = Agent::start(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agent.serve(listener, async {
        let _ = stopped.await;
    }));
    let mut client = HostAgentClient::connect(format!("http://{addr}")).await?;
    let boots = env_count("WRENN_BENCH_BOOTS", 5);
    let execs = env_count("WRENN_BENCH_EXECS", 100);
    let mut rows = Vec::new();
    let sections = Sections::from_env();
    // The same CPU work before and after: tells whether the host was busy during the run.
    let mut calibration = cpu_calibration();

    if sections.has("boot") {
        // Taken in turns, so a busy spell of the host weighs on both sides alike.
        eprintln!(
            "cold boot to envd ready, and its floor: bare QEMU boot of the same kernel to a \
             static init ({boots}x each, in turns)"
        );
        let (mut floor_boot, mut cold_boot) = (Vec::new(), Vec::new());
        let initrd = StaticInitrd::build()?;
        for _ in 0..boots {
            let floor = initrd.boot_ms(&template.kernel_path)?;
            let started = Instant::now();
            let sandbox = client.create_sandbox(cold_request()).await?.into_inner();
            let cold = started.elapsed().as_secs_f64() * 1e3;
            eprintln!("  floor {floor:.0} ms, cold boot {cold:.0} ms");
            floor_boot.push(floor);
            cold_boot.push(cold);
            destroy(&mut client, &sandbox.sandbox_id).await?;
            // The agent tidies up after a destroy (a spare network slot, the sandbox's
            // directory); the next floor boot must not share the CPU with that.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let floor_boot = Samples::new(floor_boot);
        rows.push(Row {
            name: "cold boot -> envd ready",
            ours: Samples::new(cold_boot),
            floor: Some(("bare boot to static init", floor_boot.clone())),
            unit: "ms",
        });
        eprintln!("default create, from the image's boot snapshot ({boots}x)");
        ensure_boot_snapshot(&mut client, create_request()).await?;
        let (mut ready, mut first_exec) = (Vec::new(), Vec::new());
        for _ in 0..boots {
            let started = Instant::now();
            let sandbox = client.create_sandbox(create_request()).await?.into_inner();
            ready.push(started.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(
                sandbox.start == pb::StartMethod::BootSnapshot as i32,
                "the default create did not start from the boot snapshot"
            );
            exec_true(&mut client, &sandbox.sandbox_id).await?;
            first_exec.push(started.elapsed().as_secs_f64() * 1e3);
            destroy(&mut client, &sandbox.sandbox_id).await?;
        }
        rows.push(Row {
            name: "create (from boot snapshot) -> envd ready",
            ours: Samples::new(ready),
            floor: Some(("bare boot to static init", floor_boot)),
            unit: "ms",
        });
        rows.push(Row {
            name: "create (from boot snapshot) -> first exec done",
            ours: Samples::new(first_exec),
            floor: None,
            unit: "ms",
        });
    }
    if sections.has("exec") {
        let id = client
            .create_sandbox(create_request())
            .await?
            .into_inner()
            .sandbox_id;
        let guest = SlotAddresses::for_index(slot_network, slot_index_of_only_vm(&lease)?).ns_ip;
        start_background(&mut client, &id, ECHO_SERVER).await?;
        start_background(&mut client, &id, SINK_SERVER).await?;
        start_background(&mut client, &id, SOURCE_SERVER).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;

        eprintln!("exec `true` round trip ({execs}x)");
        let mut exec_ms = Vec::new();
        for _ in 0..execs {
            let started = Instant::now();
            exec_true(&mut client, &id).await?;
            exec_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let tcp_rtt = tcp_round_trips(SocketAddr::from((guest, 7000)), execs * 2)?;
        rows.push(Row {
            name: "exec `true` round trip",
            ours: Samples::new(exec_ms),
            floor: Some(("raw TCP round trip", Samples::new(tcp_rtt))),
            unit: "ms",
        });

        eprintln!("10 MiB write and read (5x each)");
        let data = vec![0x5au8; TRANSFER_BYTES];
        let (mut write, mut read, mut raw_up, mut raw_down) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            write.push(mib_per_s(write_file(&mut client, &id, &data).await?));
            read.push(mib_per_s(read_file(&mut client, &id).await?));
            raw_up.push(mib_per_s(raw_upload(
                SocketAddr::from((guest, 7001)),
                &data,
            )?));
            raw_down.push(mib_per_s(raw_download(SocketAddr::from((guest, 7002)))?));
        }
        rows.push(Row {
            name: "10 MiB write",
            ours: Samples::new(write),
            floor: Some(("raw TCP upload", Samples::new(raw_up))),
            unit: "MiB/s",
        });
        rows.push(Row {
            name: "10 MiB read",
            ours: Samples::new(read),
            floor: Some(("raw TCP download", Samples::new(raw_down))),
            unit: "MiB/s",
        });
        destroy(&mut client, &id).await?;
    }
    let mut restore_floor_256 = Vec::new();
    if sections.has("pause") {
        for memory_mb in [256, 1024] {
            eprintln!(
                "raw QEMU floor: save/restore of the same guest at {memory_mb} MiB ({boots}x)"
            );
            let (raw_pause, raw_resume) = raw_qemu_floor(&template, memory_mb, boots).await?;
            if memory_mb == 256 {
                restore_floor_256 = raw_resume.clone();
            }
            eprintln!("pause and resume at {memory_mb} MiB ({boots}x)");
            let request = pb::CreateSandboxRequest {
                memory_mb,
                ..create_request()
            };
            ensure_boot_snapshot(&mut client, request.clone()).await?;
            let id = client
                .create_sandbox(request)
                .await?
                .into_inner()
                .sandbox_id;
            // A sandbox from a boot snapshot maps the snapshot's RAM copy-on-write: its first
            // pause writes that RAM into its saved state, and its first resume moves it into a
            // memory file of its own. Every later cycle is the fast one.
            let (mut pause_ms, mut resume_ms) = (Vec::new(), Vec::new());
            for cycle in 0..=boots {
                let started = Instant::now();
                client
                    .pause_sandbox(pb::PauseSandboxRequest {
                        sandbox_id: id.clone(),
                    })
                    .await?;
                pause_ms.push(started.elapsed().as_secs_f64() * 1e3);
                let started = Instant::now();
                client
                    .resume_sandbox(pb::ResumeSandboxRequest {
                        sandbox_id: id.clone(),
                    })
                    .await?;
                exec_true(&mut client, &id).await?;
                resume_ms.push(started.elapsed().as_secs_f64() * 1e3);
                if cycle == 0 {
                    let (first_pause, first_resume) = (pause_ms.remove(0), resume_ms.remove(0));
                    rows.push(Row {
                        name: if memory_mb == 256 {
                            "first pause + resume of a boot-snapshot sandbox, 256 MiB"
                        } else {
                            "first pause + resume of a boot-snapshot sandbox, 1 GiB"
                        },
                        ours: Samples::new(vec![first_pause + first_resume]),
                        floor: None,
                        unit: "ms",
                    });
                }
            }
            destroy(&mut client, &id).await?;
            rows.push(Row {
                name: if memory_mb == 256 {
                    "pause, 256 MiB"
                } else {
                    "pause, 1 GiB"
                },
                ours: Samples::new(pause_ms),
                floor: Some(("raw QEMU stop+save+quit", Samples::new(raw_pause))),
                unit: "ms",
            });
            rows.push(Row {
                name: if memory_mb == 256 {
                    "resume -> first exec done, 256 MiB"
                } else {
                    "resume -> first exec done, 1 GiB"
                },
                ours: Samples::new(resume_ms),
                floor: Some(("raw QEMU restore to running", Samples::new(raw_resume))),
                unit: "ms",
            });
        }
    }
    if sections.has("clones") {
        eprintln!(
            "clones of a snapshot template ({boots}x alone, then 4 at once (up to 3 rounds), then 30 s sustained)"
        );
        let source = client
            .create_sandbox(create_request())
            .await?
            .into_inner()
            .sandbox_id;
        let template = format!("bench-{}", lease.index);
        let _ = std::fs::remove_dir_all(images_dir.join("templates").join(&template));
        client
            .snapshot_sandbox(pb::SnapshotSandboxRequest {
                sandbox_id: source.clone(),
                template_name: template.clone(),
            })
            .await?;
        let clone_request = || pb::CreateSandboxRequest {
            template: template.clone(),
            internet: pb::InternetAccess::Blocked as i32,
            ..Default::default()
        };
        let (mut alone, mut created, mut first_exec) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..boots {
            let started = Instant::now();
            let id = client
                .create_sandbox(clone_request())
                .await?
                .into_inner()
                .sandbox_id;
            created.push(started.elapsed().as_secs_f64() * 1e3);
            let exec_started = Instant::now();
            exec_true(&mut client, &id).await?;
            first_exec.push(exec_started.elapsed().as_secs_f64() * 1e3);
            alone.push(started.elapsed().as_secs_f64() * 1e3);
            destroy(&mut client, &id).await?;
        }
        let restore_floor =
            (!restore_floor_256.is_empty()).then(|| Samples::new(restore_floor_256.clone()));
        rows.push(Row {
            name: "clone -> first exec done",
            ours: Samples::new(alone),
            floor: restore_floor.map(|floor| ("raw QEMU restore to running", floor)),
            unit: "ms",
        });
        rows.push(Row {
            name: "  of which: clone -> running",
            ours: Samples::new(created),
            floor: None,
            unit: "ms",
        });
        rows.push(Row {
            name: "  of which: first exec in the clone",
            ours: Samples::new(first_exec),
            floor: None,
            unit: "ms",
        });
        // Several rounds of four: one round is only four samples of a noisy quantity. PSS is
        // read in the last round, with its clones idle.
        let rounds = boots.clamp(1, 3);
        let (mut parallel_ms, mut clone_pss) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let parallel = (0..4).map(|_| {
                let mut client = client.clone();
                let request = clone_request();
                async move {
                    let started = Instant::now();
                    let id = client
                        .create_sandbox(request)
                        .await?
                        .into_inner()
                        .sandbox_id;
                    exec_true(&mut client, &id).await?;
                    Ok::<_, anyhow::Error>((id, started.elapsed().as_secs_f64() * 1e3))
                }
            });
            let results = futures::future::try_join_all(parallel).await?;
            parallel_ms.extend(results.iter().map(|(_, ms)| *ms));
            if round + 1 == rounds {
                tokio::time::sleep(Duration::from_secs(5)).await;
                clone_pss = wrenn_agent::reclaim::find_vmm_processes(&format!(
                    "wrenn.{}.",
                    lease.instance()
                ))
                .iter()
                .filter_map(|pid| pss_mib(*pid))
                .collect();
            }
            for (id, _) in &results {
                destroy(&mut client, id).await?;
            }
        }
        rows.push(Row {
            name: "clone -> first exec, 4 at once",
            ours: Samples::new(parallel_ms),
            floor: None,
            unit: "ms",
        });
        rows.push(Row {
            name: "PSS per idle clone (4 clones + source)",
            ours: Samples::new(clone_pss),
            floor: None,
            unit: "MiB",
        });
        // Sustained: create, exec, destroy back to back for 30 s, two at a time.
        let window = Duration::from_secs(30);
        let started = Instant::now();
        let workers = (0..2).map(|_| {
            let mut client = client.clone();
            let request = clone_request();
            async move {
                let mut done = 0u32;
                while started.elapsed() < window {
                    let id = client
                        .create_sandbox(request.clone())
                        .await?
                        .into_inner()
                        .sandbox_id;
                    exec_true(&mut client, &id).await?;
                    destroy(&mut client, &id).await?;
                    done += 1;
                }
                Ok::<_, anyhow::Error>(done)
            }
        });
        let total: u32 = futures::future::try_join_all(workers)
            .await?
            .into_iter()
            .sum();
        rows.push(Row {
            name: "sustained clones (create+exec+destroy) per second",
            ours: Samples::new(vec![f64::from(total) / started.elapsed().as_secs_f64()]),
            floor: None,
            unit: "/s",
        });
        destroy(&mut client, &source).await?;
        client
            .delete_template(pb::DeleteTemplateRequest {
                name: template.clone(),
            })
            .await?;
    }
    if sections.has("memory") {
        ensure_boot_snapshot(&mut client, create_request()).await?;
        for (name, request) in [
            (
                "PSS per idle sandbox (default: from boot snapshot)",
                create_request(),
            ),
            ("PSS per idle sandbox (cold boot)", cold_request()),
        ] {
            eprintln!("{name}: 4 at once, 256 MiB each, 5 s idle");
            let creates = (0..4).map(|_| {
                let mut client = client.clone();
                let request = request.clone();
                async move { client.create_sandbox(request).await }
            });
            let ids: Vec<String> = futures::future::try_join_all(creates)
                .await?
                .into_iter()
                .map(|r| r.into_inner().sandbox_id)
                .collect();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let pids =
                wrenn_agent::reclaim::find_vmm_processes(&format!("wrenn.{}.", lease.instance()));
            let pss: Vec<f64> = pids.iter().filter_map(|pid| pss_mib(*pid)).collect();
            rows.push(Row {
                name,
                ours: Samples::new(pss),
                floor: None,
                unit: "MiB",
            });
            for id in &ids {
                destroy(&mut client, id).await?;
            }
        }
    }

    let _ = stop.send(());
    drop(client);
    server.await??;
    calibration.extend(cpu_calibration());
    rows.push(Row {
        name: "host check: fixed CPU work (SHA-256 of 64 MiB), start and end",
        ours: Samples::new(calibration),
        floor: None,
        unit: "ms",
    });
    print_table(&rows);
    Ok(())
}

/// Five timings of a fixed amount of CPU work. On a quiet host they agree to a few percent;
/// a busy neighbour shows up here as it does in every other row.
fn cpu_calibration() -> Vec<f64> {
    use sha2::Digest;
    let data = vec![0x5au8; 64 << 20];
    (0..5)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(sha2::Sha256::digest(std::hint::black_box(&data)));
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// The slot index of the one VM this agent runs: the network namespace its VMM is in. (Spare
/// slots make the index unpredictable.)
fn slot_index_of_only_vm(lease: &wrenn_agent::lease::InstanceLease) -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let pids = wrenn_agent::reclaim::find_vmm_processes(&format!("wrenn.{}.", lease.instance()));
    anyhow::ensure!(pids.len() == 1, "expected one VM, found {pids:?}");
    let vm_netns = std::fs::metadata(format!("/proc/{}/ns/net", pids[0]))?;
    let prefix = format!("{}-", lease.instance());
    for entry in std::fs::read_dir("/run/netns")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(index) = name.strip_prefix(&prefix).and_then(|i| i.parse().ok()) else {
            continue;
        };
        let netns = std::fs::metadata(entry.path())?;
        if (netns.dev(), netns.ino()) == (vm_netns.dev(), vm_netns.ino()) {
            return Ok(index);
        }
    }
    anyhow::bail!("the VM's network namespace is not one of ours")
}

/// A create that boots the kernel, whatever boot snapshots exist.
fn cold_request() -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        cold_boot: true,
        ..create_request()
    }
}

/// Makes sure the boot snapshot for `request`'s shape exists, so the measured creates use it.
async fn ensure_boot_snapshot(
    client: &mut Client,
    request: pb::CreateSandboxRequest,
) -> anyhow::Result<()> {
    let sandbox = client.create_sandbox(request).await?.into_inner();
    destroy(client, &sandbox.sandbox_id).await
}

fn create_request() -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        template: "minimal".into(),
        vcpus: 1,
        memory_mb: 256,
        internet: pb::InternetAccess::Blocked as i32,
        ..Default::default()
    }
}

async fn destroy(client: &mut Client, id: &str) -> anyhow::Result<()> {
    client
        .destroy_sandbox(pb::DestroySandboxRequest {
            sandbox_id: id.into(),
        })
        .await?;
    Ok(())
}

/// Pause and resume floors: the bare QEMU operations (QMP stop + device-state save + quit;
/// spawn + load + cont) on the same kernel and root filesystem, in a slot of a second identity,
/// without any of the agent's bookkeeping.
async fn raw_qemu_floor(
    template: &wrenn_agent::images::ResolvedTemplate,
    memory_mb: u32,
    cycles: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    use wrenn_agent::disk::{create_overlay, BaseFormat};
    use wrenn_agent::network::{InternetAccess, NetworkManager, GUEST_MAC, TAP_NAME};
    use wrenn_agent::vmm::qemu::QemuVmm;
    use wrenn_agent::vmm::{
        AfterRestore, MemorySharing, SavedRam, SavedState, VmNetwork, VmSpec, Vmm,
    };

    let lease = wrenn_agent::lease::BENCHES.acquire()?;
    let network = NetworkManager::new(
        &lease.instance(),
        lease.slot_network().parse().map_err(anyhow::Error::msg)?,
    );
    network.reclaim_and_init().await?;
    let slot = network.acquire(InternetAccess::Blocked).await?;
    let dir = tempfile::tempdir()?;
    let overlay = dir.path().join("rootfs.qcow2");
    create_overlay(&template.rootfs_path, BaseFormat::Raw, &overlay, 1024)?;
    let spec = VmSpec {
        name: format!("wrenn.{}.floor", lease.instance()),
        vcpus: 1,
        memory_mb,
        kernel: template.kernel_path.clone(),
        kernel_args:
            "console=ttyS0 quiet panic=-1 root=/dev/vda rw rootfstype=ext4 init=/usr/sbin/envd \
                      wrenn.ip=172.16.0.2/24 wrenn.gw=172.16.0.1"
                .into(),
        root_disk: overlay,
        network: VmNetwork {
            netns: slot.netns_path(),
            tap: TAP_NAME.into(),
            mac: GUEST_MAC.into(),
        },
        run_dir: dir.path().to_owned(),
        memory_file: dir.path().join("memory"),
        memory_sharing: MemorySharing::Shared,
        accelerator: wrenn_agent::accel::Accelerator::Tcg,
    };
    let vmm = QemuVmm::new("qemu-system-x86_64", 32);
    let mut vm = vmm.start(&spec).await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // booted and idle
    let state = dir.path().join("vmstate");
    let (mut pauses, mut resumes) = (Vec::new(), Vec::new());
    for _ in 0..cycles {
        let started = Instant::now();
        vm.save_and_exit(&state, &spec.memory_file).await?;
        pauses.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let saved = SavedState {
            file: &state,
            ram: SavedRam::InMemoryFile,
        };
        vm = vmm.restore(&spec, saved, AfterRestore::Run).await?;
        resumes.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    vm.kill().await?;
    network.release(&slot).await;
    network.remove_host_table().await;
    Ok((pauses, resumes))
}

async fn exec_true(client: &mut Client, id: &str) -> anyhow::Result<()> {
    let out = client
        .exec(pb::ExecRequest {
            sandbox_id: id.into(),
            process: Some(envd::ProcessSpec {
                cmd: "true".into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    anyhow::ensure!(out.exit.is_some_and(|e| e.exit_code == 0), "true failed");
    Ok(())
}

const ECHO_SERVER: &str = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',7000));s.listen()\nwhile True:\n c,_=s.accept();c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\n while True:\n  d=c.recv(65536)\n  if not d: break\n  c.sendall(d)\n c.close()";
const SINK_SERVER: &str = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',7001));s.listen()\nwhile True:\n c,_=s.accept()\n while c.recv(1<<20): pass\n c.sendall(b'k');c.close()";
const SOURCE_SERVER: &str = "import socket\nb=b'Z'*(10<<20)\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',7002));s.listen()\nwhile True:\n c,_=s.accept();c.sendall(b);c.close()";

async fn start_background(client: &mut Client, id: &str, script: &str) -> anyhow::Result<()> {
    let stream = client
        .start_process(pb::StartProcessRequest {
            sandbox_id: id.into(),
            process: Some(envd::ProcessSpec {
                cmd: "python3".into(),
                args: vec!["-c".into(), script.into()],
                ..Default::default()
            }),
        })
        .await?;
    drop(stream);
    Ok(())
}

fn connect_retrying(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut last = None;
    for _ in 0..100 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap().into())
}

fn tcp_round_trips(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<f64>> {
    let mut stream = connect_retrying(addr)?;
    stream.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        stream.write_all(b"x")?;
        stream.read_exact(&mut byte)?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(samples)
}

fn raw_upload(addr: SocketAddr, data: &[u8]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = connect_retrying(addr)?;
    stream.write_all(data)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack)?;
    Ok(started.elapsed())
}

fn raw_download(addr: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = connect_retrying(addr)?;
    let mut received = Vec::with_capacity(TRANSFER_BYTES);
    stream.read_to_end(&mut received)?;
    anyhow::ensure!(
        received.len() == TRANSFER_BYTES,
        "short download: {}",
        received.len()
    );
    Ok(started.elapsed())
}

async fn write_file(client: &mut Client, id: &str, data: &[u8]) -> anyhow::Result<Duration> {
    let mut parts = vec![pb::WriteFileRequest {
        sandbox_id: id.into(),
        part: Some(envd::WriteFileRequest {
            part: Some(envd::write_file_request::Part::Header(
                envd::WriteFileHeader {
                    path: "/tmp/bench.bin".into(),
                    ..Default::default()
                },
            )),
        }),
    }];
    parts.extend(data.chunks(256 << 10).map(|chunk| pb::WriteFileRequest {
        sandbox_id: String::new(),
        part: Some(envd::WriteFileRequest {
            part: Some(envd::write_file_request::Part::Data(chunk.to_vec())),
        }),
    }));
    let started = Instant::now();
    client.write_file(futures::stream::iter(parts)).await?;
    Ok(started.elapsed())
}

async fn read_file(client: &mut Client, id: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = client
        .read_file(pb::ReadFileRequest {
            sandbox_id: id.into(),
            path: "/tmp/bench.bin".into(),
        })
        .await?
        .into_inner();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        total += chunk?.data.len();
    }
    anyhow::ensure!(total == TRANSFER_BYTES, "short read: {total}");
    Ok(started.elapsed())
}

fn mib_per_s(elapsed: Duration) -> f64 {
    (TRANSFER_BYTES as f64 / f64::from(1 << 20)) / elapsed.as_secs_f64()
}

/// Proportional set size of a process, from smaps_rollup.
fn pss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb: f64 = text
        .lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// An initramfs whose /init is static busybox printing a marker: the floor for boot time.
struct StaticInitrd {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const READY_MARKER: &str = "WRENN-FLOOR-READY";

impl StaticInitrd {
    fn build() -> anyhow::Result<Self> {
        let busybox = Path::new("/bin/busybox");
        anyhow::ensure!(
            busybox.exists(),
            "the boot floor needs static busybox: apt-get install busybox-static"
        );
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root");
        for sub in ["bin", "dev"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        std::fs::copy(busybox, root.join("bin/busybox"))?;
        let init = root.join("init");
        std::fs::write(
            &init,
            format!(
                "#!/bin/busybox sh\n/bin/busybox echo {READY_MARKER}\n/bin/busybox reboot -f\n"
            ),
        )?;
        std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        nix::sys::stat::mknod(
            &root.join("dev/console"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(5, 1),
        )?;
        let path = dir.path().join("initrd.cpio");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && find . | cpio -o -H newc --quiet > {}",
                root.display(),
                path.display()
            ))
            .status()?;
        anyhow::ensure!(status.success(), "cpio failed");
        Ok(Self { _dir: dir, path })
    }

    /// Spawn to marker, with the same machine options the QEMU driver uses.
    fn boot_ms(&self, kernel: &Path) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "microvm,x-option-roms=off,acpi=off",
                "-accel",
                "tcg",
                "-cpu",
                "max",
            ])
            .args([
                "-smp",
                "1",
                "-m",
                "256M",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
            ])
            .args(["-no-reboot", "-serial", "stdio", "-kernel"])
            .arg(kernel)
            .arg("-initrd")
            .arg(&self.path)
            .args([
                "-append",
                "console=ttyS0 quiet panic=-1 reboot=t rdinit=/init",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().unwrap();
        let mut elapsed = None;
        for line in BufReader::new(stdout).lines() {
            if line?.contains(READY_MARKER) {
                elapsed = Some(started.elapsed());
                break;
            }
        }
        let _ = child.kill();
        child.wait()?;
        let elapsed =
            elapsed.ok_or_else(|| anyhow::anyhow!("the floor VM never printed its marker"))?;
        Ok(elapsed.as_secs_f64() * 1e3)
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| measurement | ours p50 | ours p99 | floor | floor p50 | ratio (ours/floor p50) |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let (floor_name, floor_p50, ratio) = match &row.floor {
            Some((name, floor)) => (
                *name,
                format!("{:.2} {}", floor.median(), row.unit),
                format!("{:.2}x", row.ours.median() / floor.median()),
            ),
            None => ("—", "—".into(), "—".into()),
        };
        println!(
            "| {} | {:.2} {unit} | {:.2} {unit} | {floor_name} | {floor_p50} | {ratio} |",
            row.name,
            row.ours.median(),
            row.ours.p99(),
            unit = row.unit,
        );
    }
}
