//! Harness for the integration tests: runs the real envd binary on a free port and hands out
//! authenticated gRPC clients.
#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use wrenn_envd_api::v1::envd_client::EnvdClient;
use wrenn_envd_api::v1::filesystem_client::FilesystemClient;
use wrenn_envd_api::v1::process_client::ProcessClient;
use wrenn_envd_api::v1::process_event::{Event, Exited};
use wrenn_envd_api::v1::{InitRequest, ProcessEvent, ProcessSelector, ProcessSpec, StartRequest};
use wrenn_envd_api::AUTHORIZATION_HEADER;

pub const TOKEN: &str = "test-token-0123456789";
/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(20);

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(Some(format!("Bearer {token}").parse().unwrap()))
    }

    pub fn none() -> Self {
        Self(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(AUTHORIZATION_HEADER, value.clone());
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// A running envd; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Envd {
    child: Child,
    pub addr: SocketAddr,
    pub channel: Channel,
}

impl Envd {
    /// Starts envd without initializing it.
    pub async fn spawn() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_envd"))
            .args(["--listen", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("ENVD_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn envd");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .expect("read envd's address line");
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("envd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to envd");
        Self {
            child,
            addr,
            channel,
        }
    }

    /// Starts envd and initializes it with [`TOKEN`] and a sandbox environment.
    pub async fn initialized() -> Self {
        let envd = Self::spawn().await;
        envd.envd_with(Bearer::none())
            .init(InitRequest {
                access_token: TOKEN.to_owned(),
                env: HashMap::from([("SANDBOX_VAR".to_owned(), "from-init".to_owned())]),
                ..InitRequest::default()
            })
            .await
            .expect("init envd");
        envd
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the envd process to exit by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn envd_with(&self, bearer: Bearer) -> EnvdClient<Authed> {
        EnvdClient::with_interceptor(self.channel.clone(), bearer)
    }

    pub fn process_with(&self, bearer: Bearer) -> ProcessClient<Authed> {
        ProcessClient::with_interceptor(self.channel.clone(), bearer)
            .max_decoding_message_size(64 << 20)
    }

    pub fn files_with(&self, bearer: Bearer) -> FilesystemClient<Authed> {
        FilesystemClient::with_interceptor(self.channel.clone(), bearer)
            .max_decoding_message_size(64 << 20)
    }

    pub fn envd(&self) -> EnvdClient<Authed> {
        self.envd_with(Bearer::new(TOKEN))
    }

    pub fn process(&self) -> ProcessClient<Authed> {
        self.process_with(Bearer::new(TOKEN))
    }

    pub fn files(&self) -> FilesystemClient<Authed> {
        self.files_with(Bearer::new(TOKEN))
    }

    /// Starts a process and returns its event stream.
    pub async fn start(&self, spec: ProcessSpec) -> Result<Streaming<ProcessEvent>, Status> {
        self.process()
            .start(StartRequest {
                process: Some(spec),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Starts a process and collects its events until it exits.
    pub async fn run(&self, spec: ProcessSpec) -> Output {
        let stream = self.start(spec).await.expect("start process");
        collect(stream).await
    }
}

impl Drop for Envd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spec(cmd: &str, args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        cmd: cmd.to_owned(),
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        ..ProcessSpec::default()
    }
}

pub fn sh(script: &str) -> ProcessSpec {
    spec("sh", &["-c", script])
}

pub fn by_tag(tag: &str) -> Option<ProcessSelector> {
    Some(ProcessSelector {
        selector: Some(wrenn_envd_api::v1::process_selector::Selector::Tag(
            tag.to_owned(),
        )),
    })
}

pub fn by_pid(pid: u32) -> Option<ProcessSelector> {
    Some(ProcessSelector {
        selector: Some(wrenn_envd_api::v1::process_selector::Selector::Pid(pid)),
    })
}

/// Everything one process stream delivered.
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<Event>,
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub exited: Option<Exited>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn exit(&self) -> &Exited {
        self.exited.as_ref().expect("stream ended with Exited")
    }

    fn push(&mut self, event: Event) {
        match &event {
            Event::Started(started) => self.pid = started.pid,
            Event::Stdout(data) => self.stdout.extend_from_slice(data),
            Event::Stderr(data) => self.stderr.extend_from_slice(data),
            Event::Pty(data) => self.pty.extend_from_slice(data),
            Event::Exited(exited) => self.exited = Some(exited.clone()),
        }
        self.events.push(event);
    }
}

/// Reads a stream to its end, checking that Started comes first and Exited last.
pub async fn collect(mut stream: Streaming<ProcessEvent>) -> Output {
    let mut output = Output::default();
    let reading = async {
        while let Some(event) = stream.next().await {
            let event = event.expect("stream item").event.expect("event set");
            output.push(event);
        }
    };
    tokio::time::timeout(WAIT, reading)
        .await
        .expect("process stream did not end");
    assert!(
        matches!(output.events.first(), Some(Event::Started(_))),
        "first event must be Started: {:?}",
        output.events.first()
    );
    assert!(
        matches!(output.events.last(), Some(Event::Exited(_))),
        "last event must be Exited: {:?}",
        output.events.last()
    );
    output
}

/// Reads PTY output from `stream` until it contains `needle`; returns everything read.
pub async fn read_pty_until(stream: &mut Streaming<ProcessEvent>, needle: &str) -> String {
    let mut seen = String::new();
    let reading = async {
        while let Some(event) = stream.next().await {
            if let Some(Event::Pty(data)) = event.expect("stream item").event {
                seen.push_str(&String::from_utf8_lossy(&data));
                if seen.contains(needle) {
                    return;
                }
            }
        }
        panic!("stream ended before {needle:?} appeared in {seen:?}");
    };
    if tokio::time::timeout(WAIT, reading).await.is_err() {
        panic!("timed out waiting for {needle:?}");
    }
    seen
}
