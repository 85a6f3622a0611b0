//! Firecracker's API: HTTP/1.1 with JSON bodies over the VM's unix socket. The requests the
//! driver sends are built by the pure functions below, so their order and bodies are
//! unit-tested against the API specification (firecracker.yaml) without a Firecracker.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::vmm::{AfterRestore, VmSpec};

/// The guest's only drive and NIC, by the ids the API knows them under.
pub const ROOT_DRIVE: &str = "rootfs";
pub const NIC: &str = "eth0";

/// One API call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: &'static str,
    pub path: String,
    pub body: Value,
}

fn put(path: &str, body: Value) -> ApiRequest {
    ApiRequest {
        method: "PUT",
        path: path.to_owned(),
        body,
    }
}

fn patch(path: &str, body: Value) -> ApiRequest {
    ApiRequest {
        method: "PATCH",
        path: path.to_owned(),
        body,
    }
}

/// Configures a new VM from `spec` and starts it. `root_disk` is the drive path as the VMM
/// sees it: relative to its working directory, so a snapshot restores in any sandbox's
/// directory (see `FirecrackerVmm`).
pub fn boot_requests(spec: &VmSpec, root_disk: &str) -> Vec<ApiRequest> {
    vec![
        put(
            "/machine-config",
            json!({ "vcpu_count": spec.vcpus, "mem_size_mib": spec.memory_mb, "smt": false }),
        ),
        put(
            "/boot-source",
            json!({
                "kernel_image_path": spec.kernel,
                // reboot=k: a guest reboot (how envd powers off) writes to the i8042 reset
                // line, on which Firecracker exits.
                "boot_args": format!("{} reboot=k pci=off", spec.kernel_args),
            }),
        ),
        put(
            &format!("/drives/{ROOT_DRIVE}"),
            json!({
                "drive_id": ROOT_DRIVE,
                "path_on_host": root_disk,
                // Our command line names the root device itself, as it does under QEMU.
                "is_root_device": false,
                "is_read_only": false,
            }),
        ),
        put(
            &format!("/network-interfaces/{NIC}"),
            json!({
                "iface_id": NIC,
                "host_dev_name": spec.network.tap,
                "guest_mac": spec.network.mac,
            }),
        ),
        put("/entropy", json!({})),
        put("/actions", json!({ "action_type": "InstanceStart" })),
    ]
}

/// Pauses the guest and writes its state and all of its memory (a full snapshot).
pub fn save_requests(state_file: &Path, memory_file: &Path) -> Vec<ApiRequest> {
    vec![
        patch("/vm", json!({ "state": "Paused" })),
        put(
            "/snapshot/create",
            json!({
                "snapshot_type": "Full",
                "snapshot_path": state_file,
                "mem_file_path": memory_file,
            }),
        ),
    ]
}

/// Loads saved state with guest memory mapped privately (copy-on-write) from `memory_file`.
pub fn load_request(state_file: &Path, memory_file: &Path, after: AfterRestore) -> ApiRequest {
    put(
        "/snapshot/load",
        json!({
            "snapshot_path": state_file,
            "mem_backend": { "backend_type": "File", "backend_path": memory_file },
            "resume_vm": after == AfterRestore::Run,
        }),
    )
}

/// A request Firecracker refused, with its own explanation.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("connect to the API socket {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {path}: {source}")]
    Transport {
        method: &'static str,
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{method} {path} answered {status}: {fault}")]
    Refused {
        method: &'static str,
        path: String,
        status: u16,
        fault: String,
    },
    #[error("{method} {path} got no answer within {timeout:?}")]
    Timeout {
        method: &'static str,
        path: String,
        timeout: Duration,
    },
}

/// One keep-alive connection to a VM's API socket.
pub struct ApiClient {
    sender: SendRequest<Full<Bytes>>,
    timeout: Duration,
}

impl ApiClient {
    /// Connects once the VMM has created its socket, trying until `timeout`.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match tokio::net::UnixStream::connect(socket).await {
                Ok(stream) => break stream,
                Err(source) if tokio::time::Instant::now() >= deadline => {
                    return Err(ApiError::Connect {
                        path: socket.display().to_string(),
                        source,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ApiError::Transport {
                method: "CONNECT",
                path: socket.display().to_string(),
                source,
            })?;
        tokio::spawn(connection);
        Ok(Self { sender, timeout })
    }

    /// Sends one request; any answer but 2xx is an error carrying Firecracker's
    /// `fault_message`.
    pub async fn send(&mut self, request: &ApiRequest) -> Result<(), ApiError> {
        let transport = |source| ApiError::Transport {
            method: request.method,
            path: request.path.clone(),
            source,
        };
        let http = hyper::Request::builder()
            .method(request.method)
            .uri(&request.path)
            .header("host", "localhost")
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(request.body.to_string())))
            .expect("method, path and headers are valid");
        let exchange = async {
            self.sender.ready().await.map_err(transport)?;
            let response = self.sender.send_request(http).await.map_err(transport)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(transport)?
                .to_bytes();
            Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ApiError::Timeout {
                method: request.method,
                path: request.path.clone(),
                timeout: self.timeout,
            })??;
        if status.is_success() {
            return Ok(());
        }
        let fault = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["fault_message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(ApiError::Refused {
            method: request.method,
            path: request.path.clone(),
            status: status.as_u16(),
            fault,
        })
    }

    pub async fn send_all(&mut self, requests: &[ApiRequest]) -> Result<(), ApiError> {
        for request in requests {
            self.send(request).await?;
        }
        Ok(())
    }
}
