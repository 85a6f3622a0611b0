//! One module per `wrenn` subcommand group, plus what the control-plane commands share: the
//! global API flags and attaching a terminal to a remote process.

pub mod attach;
pub mod copy;
pub mod image;
pub mod login;
pub mod run;
pub mod run_agent;
pub mod sandbox;
pub mod template;
pub mod up;

use std::future::Future;

use clap::Args;

use crate::api::{ApiClient, ApiSources, ApiTarget};
use crate::output::Format;

/// Flags of every command that talks to the control plane.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Control plane URL [env: WRENN_API_URL; else the one `wrenn login` stored; else
    /// http://127.0.0.1:7200].
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// API key [env: WRENN_API_KEY; else the one `wrenn login` stored]. With `wrenn login`:
    /// the key to store.
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Print the server's JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

impl ApiArgs {
    /// Where to send requests, weighing flags, environment and the stored login.
    pub fn target(&self) -> anyhow::Result<ApiTarget> {
        let sources = ApiSources::gather(self.api_url.clone(), self.api_key.clone())?;
        Ok(ApiTarget::resolve(sources)?)
    }

    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::from_target(&self.target()?))
    }

    pub fn format(&self) -> Format {
        Format::from_flag(self.json)
    }
}

/// Runs an async command on a fresh runtime. Shutdown doesn't wait for blocking tasks (a
/// read of stdin may never return).
pub fn block_on(command: impl Future<Output = anyhow::Result<i32>>) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("start async runtime"))?;
    let result = runtime.block_on(command);
    runtime.shutdown_background();
    result
}
