//! The control-plane-facing gRPC service. Handlers only convert and delegate: lifecycle goes to
//! the sandbox manager, guest operations are forwarded to the sandbox's envd.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryFutureExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_agent_api::v1::host_agent_server::HostAgent;

use crate::convert::{create_from_wire, sample_to_wire, sandbox_to_wire, template_to_wire};
use crate::exec::exec_collect;
use crate::sandbox::SandboxManager;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The HostAgent gRPC service over one sandbox manager.
#[derive(Clone)]
pub struct AgentService {
    manager: Arc<SandboxManager>,
}

impl AgentService {
    pub fn new(manager: Arc<SandboxManager>) -> Self {
        Self { manager }
    }
}

fn required<T>(field: &str, value: Option<T>) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("{field} is required")))
}

#[tonic::async_trait]
impl HostAgent for AgentService {
    async fn get_host_info(
        &self,
        _: Request<pb::GetHostInfoRequest>,
    ) -> Result<Response<pb::HostInfo>, Status> {
        let host = self.manager.host_summary();
        Ok(Response::new(pb::HostInfo {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            accelerator: host.accelerator.to_string(),
            vmm: host.vmm.into(),
            cpus: host.cpus,
            memory_mb: host.memory_mb,
            allocated_memory_mb: host.allocated_memory_mb,
            running_sandboxes: host.running_sandboxes,
        }))
    }

    async fn list_templates(
        &self,
        _: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let templates = self
            .manager
            .templates()
            .iter()
            .map(template_to_wire)
            .collect();
        Ok(Response::new(pb::ListTemplatesResponse { templates }))
    }

    async fn delete_template(
        &self,
        request: Request<pb::DeleteTemplateRequest>,
    ) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
        self.manager.delete_template(&request.into_inner().name)?;
        Ok(Response::new(pb::DeleteTemplateResponse {}))
    }

    async fn snapshot_sandbox(
        &self,
        request: Request<pb::SnapshotSandboxRequest>,
    ) -> Result<Response<pb::Template>, Status> {
        let request = request.into_inner();
        let manifest = self
            .manager
            .snapshot(&request.sandbox_id, &request.template_name)
            .await?;
        Ok(Response::new(template_to_wire(&manifest)))
    }

    async fn fork_sandbox(
        &self,
        request: Request<pb::ForkSandboxRequest>,
    ) -> Result<Response<pb::ForkSandboxResponse>, Status> {
        let request = request.into_inner();
        let forks = self
            .manager
            .fork(
                &request.sandbox_id,
                request.count,
                request.metadata.into_iter().collect(),
            )
            .await?;
        Ok(Response::new(pb::ForkSandboxResponse {
            sandboxes: forks.iter().map(sandbox_to_wire).collect(),
        }))
    }

    async fn get_sandbox_metrics(
        &self,
        request: Request<pb::GetSandboxMetricsRequest>,
    ) -> Result<Response<pb::SandboxMetrics>, Status> {
        let request = request.into_inner();
        let range_sec = match request.range_sec {
            0 => 300,
            s if s <= 86_400 => s,
            s => {
                return Err(Status::invalid_argument(format!(
                    "range_sec {s} is above 86400 (24 h)"
                )))
            }
        };
        let samples = self.manager.metrics(
            &request.sandbox_id,
            std::time::Duration::from_secs(u64::from(range_sec)),
        )?;
        Ok(Response::new(pb::SandboxMetrics {
            samples: samples.iter().map(sample_to_wire).collect(),
        }))
    }

    async fn ping_sandbox(
        &self,
        request: Request<pb::PingSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let info = self.manager.ping(&request.into_inner().sandbox_id)?;
        Ok(Response::new(sandbox_to_wire(&info)))
    }

    async fn set_sandbox_timeout(
        &self,
        request: Request<pb::SetSandboxTimeoutRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let request = request.into_inner();
        let info = self
            .manager
            .set_timeout(&request.sandbox_id, request.timeout_sec)?;
        Ok(Response::new(sandbox_to_wire(&info)))
    }

    async fn create_sandbox(
        &self,
        request: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let info = self
            .manager
            .create(create_from_wire(request.into_inner()))
            .await?;
        Ok(Response::new(sandbox_to_wire(&info)))
    }

    async fn get_sandbox(
        &self,
        request: Request<pb::GetSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let info = self.manager.get(&request.into_inner().sandbox_id)?;
        Ok(Response::new(sandbox_to_wire(&info)))
    }

    async fn list_sandboxes(
        &self,
        _: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let sandboxes = self.manager.list().iter().map(sandbox_to_wire).collect();
        Ok(Response::new(pb::ListSandboxesResponse { sandboxes }))
    }

    async fn destroy_sandbox(
        &self,
        request: Request<pb::DestroySandboxRequest>,
    ) -> Result<Response<pb::DestroySandboxResponse>, Status> {
        self.manager
            .destroy(&request.into_inner().sandbox_id)
            .await?;
        Ok(Response::new(pb::DestroySandboxResponse {}))
    }

    async fn pause_sandbox(
        &self,
        request: Request<pb::PauseSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let info = self.manager.pause(&request.into_inner().sandbox_id).await?;
        Ok(Response::new(sandbox_to_wire(&info)))
    }

    async fn resume_sandbox(
        &self,
        request: Request<pb::ResumeSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let info = self
            .manager
            .resume(&request.into_inner().sandbox_id)
            .await?;
        Ok(Response::new(sandbox_to_wire(&info)))
    }

    type WatchSandboxesStream = BoxStream<pb::SandboxEvent>;

    async fn watch_sandboxes(
        &self,
        _: Request<pb::WatchSandboxesRequest>,
    ) -> Result<Response<Self::WatchSandboxesStream>, Status> {
        let events =
            tokio_stream::wrappers::BroadcastStream::new(self.manager.subscribe()).map(|event| {
                match event {
                    Ok(event) => Ok(pb::SandboxEvent {
                        sandbox: Some(sandbox_to_wire(&event.info)),
                        flushed_metrics: event.flushed_metrics.iter().map(sample_to_wire).collect(),
                    }),
                    Err(lagged) => Err(Status::data_loss(format!("{lagged}; re-list sandboxes"))),
                }
            });
        Ok(Response::new(Box::pin(events)))
    }

    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        let spec = required("process", request.process)?;
        Ok(Response::new(exec_collect(&envd, spec).await?))
    }

    type StartProcessStream = BoxStream<envd::ProcessEvent>;

    async fn start_process(
        &self,
        request: Request<pb::StartProcessRequest>,
    ) -> Result<Response<Self::StartProcessStream>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        let process = Some(required("process", request.process)?);
        let stream = envd
            .process()
            .start(envd::StartRequest { process })
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    type AttachProcessStream = BoxStream<envd::ProcessEvent>;

    async fn attach_process(
        &self,
        request: Request<pb::AttachProcessRequest>,
    ) -> Result<Response<Self::AttachProcessStream>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        let process = Some(required("process", request.process)?);
        let stream = envd
            .process()
            .attach(envd::AttachRequest { process })
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_processes(
        &self,
        request: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<envd::ListResponse>, Status> {
        let envd = self.manager.envd(&request.into_inner().sandbox_id)?;
        envd.process().list(envd::ListRequest {}).await
    }

    async fn send_process_input(
        &self,
        request: Request<pb::SendProcessInputRequest>,
    ) -> Result<Response<envd::SendInputResponse>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        envd.process()
            .send_input(required("input", request.input)?)
            .await
    }

    async fn signal_process(
        &self,
        request: Request<pb::SignalProcessRequest>,
    ) -> Result<Response<envd::SendSignalResponse>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        envd.process()
            .send_signal(required("signal", request.signal)?)
            .await
    }

    async fn resize_pty(
        &self,
        request: Request<pb::ResizePtyRequest>,
    ) -> Result<Response<envd::ResizePtyResponse>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        envd.process()
            .resize_pty(required("resize", request.resize)?)
            .await
    }

    async fn stat_path(
        &self,
        request: Request<pb::StatPathRequest>,
    ) -> Result<Response<envd::EntryInfo>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        envd.files()
            .stat(envd::StatRequest { path: request.path })
            .await
    }

    async fn list_dir(
        &self,
        request: Request<pb::ListDirRequest>,
    ) -> Result<Response<envd::ListDirResponse>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        envd.files()
            .list_dir(required("request", request.request)?)
            .await
    }

    async fn make_dir(
        &self,
        request: Request<pb::MakeDirRequest>,
    ) -> Result<Response<envd::EntryInfo>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        envd.files()
            .make_dir(required("request", request.request)?)
            .await
    }

    async fn move_path(
        &self,
        request: Request<pb::MovePathRequest>,
    ) -> Result<Response<envd::EntryInfo>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        envd.files()
            .r#move(required("request", request.request)?)
            .await
    }

    async fn remove_path(
        &self,
        request: Request<pb::RemovePathRequest>,
    ) -> Result<Response<envd::RemoveResponse>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        envd.files()
            .remove(envd::RemoveRequest { path: request.path })
            .await
    }

    type ReadFileStream = BoxStream<envd::FileChunk>;

    async fn read_file(
        &self,
        request: Request<pb::ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        let stream = envd
            .files()
            .read_file(envd::ReadFileRequest { path: request.path })
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn write_file(
        &self,
        request: Request<Streaming<pb::WriteFileRequest>>,
    ) -> Result<Response<envd::EntryInfo>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming.next().await.ok_or_else(|| {
            Status::invalid_argument("empty upload: the first message must name the sandbox")
        })??;
        let envd = self.manager.envd(&first.sandbox_id)?;
        let (parts, rx) = mpsc::channel(8);
        let mut files = envd.files();
        let upload = files.write_file(ReceiverStream::new(rx));
        // Forward the caller's chunks. If the caller aborts, returning early drops `upload`,
        // which cancels the envd call so the guest discards the partial file.
        let forward = async move {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                let part = required("part", message.part)?;
                if parts.send(part).await.is_err() {
                    break; // envd ended the call; its answer says why.
                }
                next = incoming.next().await.transpose()?;
            }
            Ok::<(), Status>(())
        };
        let (_, entry) = futures::future::try_join(forward, upload.map_err(Status::from)).await?;
        Ok(entry)
    }

    type WatchDirStream = BoxStream<envd::FsEvent>;

    async fn watch_dir(
        &self,
        request: Request<pb::WatchDirRequest>,
    ) -> Result<Response<Self::WatchDirStream>, Status> {
        let request = request.into_inner();
        let envd = self.manager.envd(&request.sandbox_id)?;
        let stream = envd
            .files()
            .watch(required("request", request.request)?)
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }
}
