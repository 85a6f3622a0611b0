//! Command line of the envd binary.

use std::net::SocketAddr;

use wrenn_envd_api::ENVD_PORT;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "envd", version, about = "Wrenn guest agent")]
pub struct Cli {
    /// Address to serve gRPC on. Port 0 picks a free port; the chosen address is printed.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], ENVD_PORT)))]
    pub listen: SocketAddr,
}
