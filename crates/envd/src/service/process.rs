//! The Process service: wire <-> domain conversion over [`Processes`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wrenn_envd_api::v1::process_event::{self, Exited, Started};
use wrenn_envd_api::v1::process_selector::Selector as WireSelector;
use wrenn_envd_api::v1::process_server::Process;
use wrenn_envd_api::v1::{
    AttachRequest, ListRequest, ListResponse, ProcessEvent, ProcessInfo as WireProcessInfo,
    ProcessSelector, ProcessSpec, PtySize as WirePtySize, ResizePtyRequest, ResizePtyResponse,
    SendInputRequest, SendInputResponse, SendSignalRequest, SendSignalResponse, StartRequest,
};

use crate::process::Attached;
use crate::process::{
    AfterInput, Event, ExitInfo, ProcessError, ProcessInfo, PtySize, Selector, Spec, StdinMode,
};
use crate::state::State;

type EventStream = Pin<Box<dyn Stream<Item = Result<ProcessEvent, Status>> + Send>>;

#[derive(Debug)]
pub struct ProcessService {
    state: Arc<State>,
}

impl ProcessService {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

impl From<ProcessError> for Status {
    fn from(error: ProcessError) -> Self {
        let message = crate::report::error_chain(&error);
        match &error {
            ProcessError::EmptyCommand
            | ProcessError::UnknownUser(_)
            | ProcessError::MissingCwd { .. }
            | ProcessError::CwdNotDirectory { .. }
            | ProcessError::InvalidPtySize { .. }
            | ProcessError::InvalidSignal { .. } => Status::invalid_argument(message),
            ProcessError::ExecutableNotFound { .. } | ProcessError::NotFound { .. } => {
                Status::not_found(message)
            }
            ProcessError::TagInUse { .. } => Status::already_exists(message),
            ProcessError::NotRunning { .. }
            | ProcessError::NoStdin { .. }
            | ProcessError::StdinClosed { .. }
            | ProcessError::NoPty { .. } => Status::failed_precondition(message),
            ProcessError::WriteInput { source, .. }
                if source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Status::failed_precondition(message)
            }
            ProcessError::Spawn { source, .. } => super::io_status(source.kind(), message),
            ProcessError::OpenPty(_)
            | ProcessError::WriteInput { .. }
            | ProcessError::Signal { .. }
            | ProcessError::Resize { .. } => super::internal_message(message),
        }
    }
}

#[tonic::async_trait]
impl Process for ProcessService {
    type StartStream = EventStream;
    type AttachStream = EventStream;

    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<Self::StartStream>, Status> {
        let spec = request
            .into_inner()
            .process
            .ok_or_else(|| Status::invalid_argument("process spec is required"))?;
        let attached = self.state.processes.start(spec_from_wire(spec)?)?;
        Ok(Response::new(event_stream(attached)))
    }

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let selector = selector_from_wire(request.into_inner().process)?;
        let attached = self.state.processes.attach(&selector)?;
        Ok(Response::new(event_stream(attached)))
    }

    async fn list(&self, _request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let processes = self
            .state
            .processes
            .list()
            .into_iter()
            .map(info_to_wire)
            .collect();
        Ok(Response::new(ListResponse { processes }))
    }

    async fn send_input(
        &self,
        request: Request<SendInputRequest>,
    ) -> Result<Response<SendInputResponse>, Status> {
        let request = request.into_inner();
        let after = after_input(&request);
        let selector = selector_from_wire(request.process)?;
        self.state
            .processes
            .send_input(&selector, &request.data, after)
            .await?;
        Ok(Response::new(SendInputResponse {}))
    }

    async fn stream_input(
        &self,
        request: Request<Streaming<SendInputRequest>>,
    ) -> Result<Response<SendInputResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("input stream is empty"))?;
        let after = after_input(&first);
        let selector = selector_from_wire(first.process)?;
        let processes = &self.state.processes;
        processes.send_input(&selector, &first.data, after).await?;
        while let Some(message) = stream.message().await? {
            let after = after_input(&message);
            if let Some(other) = message.process {
                if selector_from_wire(Some(other))? != selector {
                    return Err(Status::invalid_argument(
                        "an input stream feeds the process its first message names",
                    ));
                }
            }
            processes
                .send_input(&selector, &message.data, after)
                .await?;
        }
        Ok(Response::new(SendInputResponse {}))
    }

    async fn send_signal(
        &self,
        request: Request<SendSignalRequest>,
    ) -> Result<Response<SendSignalResponse>, Status> {
        let request = request.into_inner();
        let selector = selector_from_wire(request.process)?;
        self.state.processes.signal(&selector, request.signal)?;
        Ok(Response::new(SendSignalResponse {}))
    }

    async fn resize_pty(
        &self,
        request: Request<ResizePtyRequest>,
    ) -> Result<Response<ResizePtyResponse>, Status> {
        let request = request.into_inner();
        let selector = selector_from_wire(request.process)?;
        let size = request
            .size
            .ok_or_else(|| Status::invalid_argument("size is required"))?;
        let size = PtySize::new(size.cols, size.rows)?;
        self.state.processes.resize_pty(&selector, size)?;
        Ok(Response::new(ResizePtyResponse {}))
    }
}

/// Started, then the replay, then live events until the process exits.
fn event_stream(attached: Attached) -> EventStream {
    let started = Event::Started {
        pid: attached.pid,
        tag: attached.tag,
    };
    let head = futures::stream::iter(std::iter::once(started).chain(attached.subscription.replay));
    let live = futures::stream::iter(attached.subscription.live.map(ReceiverStream::new)).flatten();
    Box::pin(head.chain(live).map(|event| Ok(event_to_wire(event))))
}

fn after_input(request: &SendInputRequest) -> AfterInput {
    if request.close {
        AfterInput::Close
    } else {
        AfterInput::KeepOpen
    }
}

fn selector_from_wire(selector: Option<ProcessSelector>) -> Result<Selector, Status> {
    match selector.and_then(|selector| selector.selector) {
        Some(WireSelector::Pid(pid)) => Ok(Selector::Pid(pid)),
        Some(WireSelector::Tag(tag)) if !tag.is_empty() => Ok(Selector::Tag(tag)),
        _ => Err(Status::invalid_argument("a process pid or tag is required")),
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn spec_from_wire(spec: ProcessSpec) -> Result<Spec, ProcessError> {
    Ok(Spec {
        cmd: spec.cmd,
        args: spec.args,
        env: spec.env,
        cwd: non_empty(spec.cwd).map(Into::into),
        user: non_empty(spec.user),
        timeout: (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms)),
        tag: non_empty(spec.tag),
        pty: spec
            .pty
            .map(|size| PtySize::new(size.cols, size.rows))
            .transpose()?,
        stdin: if spec.stdin {
            StdinMode::Pipe
        } else {
            StdinMode::Null
        },
    })
}

fn spec_to_wire(spec: Spec) -> ProcessSpec {
    ProcessSpec {
        cmd: spec.cmd,
        args: spec.args,
        env: spec.env,
        cwd: spec
            .cwd
            .map(|cwd| cwd.display().to_string())
            .unwrap_or_default(),
        user: spec.user.unwrap_or_default(),
        timeout_ms: spec.timeout.map_or(0, |timeout| timeout.as_millis() as u64),
        tag: spec.tag.unwrap_or_default(),
        pty: spec.pty.map(|size| WirePtySize {
            cols: u32::from(size.cols),
            rows: u32::from(size.rows),
        }),
        stdin: spec.stdin == StdinMode::Pipe,
    }
}

fn exit_to_wire(exit: ExitInfo) -> Exited {
    Exited {
        exit_code: exit.exit_code,
        signal: exit.signal,
        timed_out: exit.timed_out,
        error: exit.error.unwrap_or_default(),
        duration_ms: exit.duration.as_millis() as u64,
    }
}

fn event_to_wire(event: Event) -> ProcessEvent {
    let event = match event {
        Event::Started { pid, tag } => process_event::Event::Started(Started {
            pid,
            tag: tag.unwrap_or_default(),
        }),
        Event::Stdout(data) => process_event::Event::Stdout(data.into()),
        Event::Stderr(data) => process_event::Event::Stderr(data.into()),
        Event::Pty(data) => process_event::Event::Pty(data.into()),
        Event::Exited(exit) => process_event::Event::Exited(exit_to_wire(exit)),
    };
    ProcessEvent { event: Some(event) }
}

fn info_to_wire(info: ProcessInfo) -> WireProcessInfo {
    WireProcessInfo {
        pid: info.pid,
        tag: info.tag.unwrap_or_default(),
        spec: Some(spec_to_wire(info.spec)),
        running: info.exit.is_none(),
        exit: info.exit.map(exit_to_wire),
        started_at_ms: info
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64),
    }
}
