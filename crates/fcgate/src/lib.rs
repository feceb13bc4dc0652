//! fcgate: an HTTP/1.1 and HTTP/2 gateway to FastCGI applications.
//!
//! The binary in `main.rs` parses arguments and calls [`run`]; everything else lives here so the
//! integration tests can start a gateway in-process on `127.0.0.1:0` ([`server::start`]).
//! `docs/architecture.md` follows one request through these modules.

pub mod access_log;
pub mod body;
pub mod cgi_params;
pub mod cgi_response;
pub mod cli;
pub mod client_connection;
pub mod config;
pub mod demo;
pub mod error;
pub mod php_fpm_config;
pub mod proxy;
pub mod request_body;
pub mod request_guard;
pub mod response_framing;
pub mod response_spool;
pub mod route;
pub mod server;
pub mod size;
pub mod systemd;
pub mod upstream;

use std::sync::Arc;

use anyhow::Context;
use fcgi::net::{Address, Listener};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};

/// Runs what the command line asks for until it is done or a signal stops it.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Check { config }) => {
            config::check(&cli)?;
            println!("{}: configuration OK", config.display());
            Ok(())
        }
        Some(Command::DemoApp { listen }) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            println!("fcgate demo app: serving FastCGI on {listen}");
            demo::serve(listen, shutdown)
                .await
                .with_context(|| format!("demo app on {listen}"))
        }
        None => serve_gateway(&cli).await,
    }
}

async fn serve_gateway(cli: &Cli) -> anyhow::Result<()> {
    let mut config = config::load(cli)?;
    let shutdown = CancellationToken::new();
    // Held until the end: dropping it removes the demo app's socket directory.
    let mut demo_socket_dir = None;
    if config.upstream.servers.is_empty() {
        // The demo app is for `fcgate` with no arguments at all: a site (--root) or a config
        // file without a server is a mistake, not a request for the demo (PHP would reach the
        // demo app and get its hello page).
        if cli.config.is_some() || cli.settings.root.is_some() {
            config.require_servers()?;
        }
        let dir = tempfile::tempdir().context("creating the demo app's socket directory")?;
        let address = Address::Unix(dir.path().join("demo-app.sock"));
        let listener = Listener::bind(&address)
            .await
            .with_context(|| format!("binding the demo app on {address}"))?;
        tokio::spawn(fcgi::server::serve(
            listener,
            Arc::new(demo::DemoApp),
            demo::server_config(),
            shutdown.clone(),
        ));
        tracing::info!("no upstream configured: serving the bundled demo FastCGI app on {address}");
        config
            .upstream
            .servers
            .push(config::UpstreamServer::new(address));
        demo_socket_dir = Some(dir);
    }
    let listen = config.listen;
    let running = server::start(config)
        .await
        .with_context(|| format!("starting the gateway on {listen}"))?;
    let servers: Vec<String> = running
        .gateway
        .upstream()
        .pools()
        .map(|pool| pool.address().to_string())
        .collect();
    println!(
        "fcgate listening on http://{}/ (FastCGI: {})",
        running.local_addr,
        servers.join(", ")
    );
    tokio::spawn(reopen_logs_on_sigusr1(Arc::clone(&running.gateway)));
    systemd::notify("READY=1");
    cancel_on_signal(running.shutdown.clone()).await;
    systemd::notify("STOPPING=1");
    running.stop().await;
    shutdown.cancel();
    drop(demo_socket_dir);
    tracing::info!("stopped");
    Ok(())
}

/// SIGUSR1 reopens the access log file (after logrotate moved it), as nginx's USR1 does.
async fn reopen_logs_on_sigusr1(gateway: Arc<proxy::Gateway>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut user1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot install a SIGUSR1 handler; the access log will not be reopened");
        return;
    };
    while user1.recv().await.is_some() {
        tracing::info!("SIGUSR1 received: reopening the access log");
        gateway.access_log().reopen();
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C), then cancels `token`.
async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    match (terminate, interrupt) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
                _ = token.cancelled() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop fcgate with SIGKILL");
            token.cancelled().await;
        }
    }
    token.cancel();
}
