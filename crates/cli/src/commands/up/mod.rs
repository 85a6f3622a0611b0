//! `wrenn up`: the whole system on this machine. Installs what is missing (packages,
//! PostgreSQL), builds the guest images (cached), starts the host agent and the control plane,
//! creates an admin and an API key on the first run and prints how to use them. Ctrl-C stops
//! everything; a second run reuses all of it and starts in seconds.

mod config;
mod credentials;
mod services;
mod setup;

use std::time::Instant;

use anyhow::Context;

pub use config::UpArgs;

pub async fn run(args: UpArgs) -> anyhow::Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("wrenn up must run as root: it installs packages and creates VMs and network namespaces");
    }
    let mut signals = services::StopSignals::install()?;
    let started = Instant::now();
    let settings = config::Settings::resolve(&args)?;
    std::fs::create_dir_all(settings.logs_dir())
        .with_context(|| format!("create {}", settings.logs_dir().display()))?;

    // A Ctrl-C during start-up abandons it; services already started are killed on drop.
    let (mut agent, mut cp, admin) = tokio::select! {
        started = start(&settings) => started?,
        () = signals.recv() => {
            eprintln!("\nwrenn up: interrupted during start-up");
            return Ok(130);
        }
    };
    credentials::remember_login(&settings, &admin);
    credentials::print_welcome(&settings, &admin, started.elapsed());

    let outcome = services::wait_until_stopped(&mut signals, &mut agent, &mut cp).await;
    eprintln!(
        "\nwrenn up: stopping the control plane and the host agent (running sandboxes are paused)…"
    );
    cp.stop().await;
    agent.stop().await;
    eprintln!("wrenn up: stopped");
    outcome
}

/// Prepares the machine and starts the agent and the control plane; stops what it started if a
/// later step fails.
async fn start(
    settings: &config::Settings,
) -> anyhow::Result<(services::Service, services::Service, credentials::Admin)> {
    if settings.install {
        setup::install_packages().await?;
    }
    if settings.manages_database() {
        setup::ensure_postgres(&settings.database_name).await?;
    }
    services::refuse_if_running(settings).await?;
    let binaries = setup::Binaries::find(settings)?;
    setup::build_images(settings, &binaries).await?;

    let mut agent = services::start_agent(settings, &binaries).await?;
    let mut cp = match services::start_control_plane(settings, &binaries).await {
        Ok(cp) => cp,
        Err(error) => {
            agent.stop().await;
            return Err(error);
        }
    };
    match credentials::ensure_admin(settings).await {
        Ok(admin) => Ok((agent, cp, admin)),
        Err(error) => {
            cp.stop().await;
            agent.stop().await;
            Err(error)
        }
    }
}
