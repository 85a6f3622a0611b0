//! Test harness: a real host agent (in-process, real QEMU VMs, real netns/TAP) on its own
//! instance name, slot network and state directory, so test binaries run in parallel.
//!
//! Needs root, QEMU and the built `minimal` template. Images come from `WRENN_IMAGES_DIR`
//! (default /var/lib/wrenn/images); `scripts/test` builds them first.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use wrenn_agent::config::AgentConfig;
use wrenn_agent::server::Agent;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_agent_api::v1::host_agent_client::HostAgentClient;

pub type Client = HostAgentClient<Channel>;

pub fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/wrenn/images"))
}

/// Boot readiness timeout: generous because tests share two cores under TCG.
pub fn ready_timeout() -> Duration {
    let secs = std::env::var("WRENN_TEST_READY_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// The test's agent identity: a lease from the tests' pool.
pub struct InstanceLease(pub wrenn_agent::lease::InstanceLease);

impl InstanceLease {
    pub fn acquire() -> Self {
        Self(
            wrenn_agent::lease::TESTS
                .acquire()
                .expect("take a test agent lease"),
        )
    }

    pub fn instance(&self) -> String {
        self.0.instance()
    }

    pub fn slot_network(&self) -> String {
        self.0.slot_network()
    }

    pub fn config(&self, state_dir: &std::path::Path) -> AgentConfig {
        let mut config = AgentConfig::new(state_dir);
        config.images_dir = images_dir();
        config.state_dir = state_dir.join("sandboxes");
        self.0.apply(&mut config);
        config.ready_timeout = ready_timeout();
        config.on_shutdown = wrenn_agent::config::ShutdownPolicy::DestroySandboxes;
        // Exact host-object counts and nothing left behind; spares have their own test.
        config.spare_slots = 0;
        config
    }
}

/// A running in-process agent and a gRPC client connected to it.
pub struct TestHost {
    pub client: Client,
    pub lease: InstanceLease,
    pub state: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestHost {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts an agent whose configuration `adjust` may change first.
    pub async fn start_with(adjust: impl FnOnce(&mut AgentConfig)) -> Self {
        assert!(
            images_dir().join("templates/minimal/template.json").exists(),
            "template 'minimal' is not built in {}: run `scripts/test` or `wrenn image build` first",
            images_dir().display()
        );
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("wrenn_agent=debug")
            .try_init();
        let lease = InstanceLease::acquire();
        let state = tempfile::tempdir().unwrap();
        let mut config = lease.config(state.path());
        adjust(&mut config);
        let agent = Agent::start(config).await.expect("start agent");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            agent
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let client = HostAgentClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        Self {
            client,
            lease,
            state,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub fn instance(&self) -> String {
        self.lease.instance()
    }

    /// Stops the agent the way SIGTERM does: every sandbox destroyed, host table removed.
    pub async fn stop(mut self) {
        // Our own connection would otherwise hold graceful shutdown open.
        self.client =
            HostAgentClient::new(Channel::from_static("http://127.0.0.1:1").connect_lazy());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub async fn create(&mut self) -> pb::Sandbox {
        self.create_with(create_request()).await
    }

    pub async fn create_with(&mut self, request: pb::CreateSandboxRequest) -> pb::Sandbox {
        self.client
            .create_sandbox(request)
            .await
            .expect("create sandbox")
            .into_inner()
    }

    /// Runs `cmd args…` to completion.
    pub async fn exec(&mut self, sandbox: &str, cmd: &str, args: &[&str]) -> pb::ExecResponse {
        self.client
            .exec(pb::ExecRequest {
                sandbox_id: sandbox.into(),
                process: Some(spec(cmd, args)),
            })
            .await
            .unwrap_or_else(|status| panic!("exec {cmd} {args:?}: {status}"))
            .into_inner()
    }

    /// Runs a shell snippet and returns its stdout, asserting exit code 0.
    pub async fn sh(&mut self, sandbox: &str, script: &str) -> String {
        let out = self.exec(sandbox, "sh", &["-c", script]).await;
        let exit = out.exit.clone().unwrap();
        assert_eq!(
            exit.exit_code,
            0,
            "{script:?} failed: stderr={:?} exit={exit:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub async fn destroy(&mut self, sandbox: &str) {
        self.client
            .destroy_sandbox(pb::DestroySandboxRequest {
                sandbox_id: sandbox.into(),
            })
            .await
            .expect("destroy sandbox");
    }
}

pub fn create_request() -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        template: "minimal".into(),
        vcpus: 1,
        memory_mb: 256,
        internet: pb::InternetAccess::Blocked as i32,
        ..Default::default()
    }
}

pub fn spec(cmd: &str, args: &[&str]) -> envd::ProcessSpec {
    envd::ProcessSpec {
        cmd: cmd.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn by_pid(pid: u32) -> Option<envd::ProcessSelector> {
    Some(envd::ProcessSelector {
        selector: Some(envd::process_selector::Selector::Pid(pid)),
    })
}

/// Collects a process event stream until exit: (stdout, stderr, pty, exit).
pub async fn collect(
    mut stream: tonic::Streaming<envd::ProcessEvent>,
) -> (Vec<u8>, Vec<u8>, Vec<u8>, envd::process_event::Exited) {
    use envd::process_event::Event;
    let (mut out, mut err, mut pty) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(event) = stream.next().await {
        match event.expect("process stream").event {
            Some(Event::Stdout(d)) => out.extend(d),
            Some(Event::Stderr(d)) => err.extend(d),
            Some(Event::Pty(d)) => pty.extend(d),
            Some(Event::Exited(exit)) => return (out, err, pty, exit),
            _ => {}
        }
    }
    panic!("stream ended without an exit event");
}

/// The host table's internet set of a test instance, as `nft` lists it.
pub fn internet_set(instance: &str) -> String {
    let out = std::process::Command::new("nft")
        .args([
            "list",
            "set",
            "inet",
            &format!("wrenn_{instance}"),
            "internet",
        ])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Host objects belonging to a test instance: (netns, links, VMM pids).
pub async fn host_objects(instance: &str) -> (Vec<String>, Vec<String>, Vec<u32>) {
    use wrenn_agent::network::netns;
    let prefix = format!("{instance}-");
    let ours = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    };
    let netns = ours(netns::list_netns().expect("list netns"));
    let links = ours(netns::list_links().expect("list links"));
    let pids = wrenn_agent::reclaim::find_vmm_processes(&format!("wrenn.{instance}."));
    (netns, links, pids)
}

/// A python process that keeps a counter in memory and hands out the next value per connection
/// on 127.0.0.1:9000: proof that one process and its memory survived pause, snapshot or fork.
pub const COUNTER: &str = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                           s.bind(('127.0.0.1',9000));s.listen()\ni=0\nwhile True:\n c,_=s.accept();i+=1;c.sendall(str(i).encode());c.close()";
/// Asks the counter for its next value.
pub const NEXT: &str = "python3 -c \"import socket\ns=socket.create_connection(('127.0.0.1',9000));print(s.recv(16).decode())\"";

impl TestHost {
    /// Polls the sandbox until it reaches `state`, failing after `within`.
    pub async fn wait_for_state(
        &mut self,
        id: &str,
        state: pb::SandboxState,
        within: Duration,
    ) -> pb::Sandbox {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let sandbox = self
                .client
                .get_sandbox(pb::GetSandboxRequest {
                    sandbox_id: id.into(),
                })
                .await
                .expect("get sandbox")
                .into_inner();
            if sandbox.state == state as i32 {
                return sandbox;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not {state:?} within {within:?}: {sandbox:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the counter in the background and waits until it answers "1".
    pub async fn start_counter(&mut self, sandbox: &str) {
        drop(
            self.client
                .start_process(pb::StartProcessRequest {
                    sandbox_id: sandbox.into(),
                    process: Some(spec("python3", &["-c", COUNTER])),
                })
                .await
                .expect("start counter"),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(self.sh(sandbox, NEXT).await.trim(), "1");
    }
}
