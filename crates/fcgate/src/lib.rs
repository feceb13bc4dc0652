//! fcgate: an HTTP/1.1 and HTTP/2 gateway to FastCGI applications.
//!
//! The binary in `main.rs` parses arguments and calls [`run`]; everything else lives here so the
//! integration tests can start a gateway in-process on `127.0.0.1:0` ([`server::start`]).
//! `docs/architecture.md` follows one request through these modules.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod auth_basic;
pub mod body;
pub mod cgi_params;
pub mod cgi_response;
pub mod cli;
pub mod client_connection;
pub mod compression;
pub mod config;
pub mod demo;
pub mod error;
pub mod https_policy;
pub mod listen_spec;
pub mod metrics;
pub mod php_fpm_config;
pub mod privileges;
pub mod proxy;
pub mod proxy_protocol;
pub mod real_client;
pub mod reload;
pub mod request_body;
pub mod request_guard;
pub mod request_name;
pub mod request_path;
pub mod response_end;
pub mod response_framing;
pub mod response_spool;
pub mod retry;
pub mod route;
pub mod rules;
pub mod script_cache;
pub mod server;
pub mod site_routing;
pub mod size;
pub mod static_file;
pub mod systemd;
pub mod tls;
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
            let checked = config::check(&cli)?;
            // Certificates must load, as they must to start.
            tls::TlsSetup::load(&checked.tls, None, None)?;
            // A server's host name must resolve, as it must to start.
            upstream::discovery::discover(&checked.upstream, None).await?;
            for (name, group) in &checked.upstream_groups {
                upstream::discovery::discover(group, None)
                    .await
                    .with_context(|| format!("[upstreams.{name}]"))?;
            }
            println!("{}: configuration OK", config.display());
            Ok(())
        }
        Some(Command::DemoApp { listen }) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(Signals::install().cancel_when_received(shutdown.clone()));
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
    // Installed before READY=1 goes out: a SIGTERM that follows readiness at once must start a
    // drain (and STOPPING=1), not meet the default action and kill the process.
    let mut signals = Signals::install();
    let shutdown = CancellationToken::new();
    // Held until the end: dropping it removes the demo app's socket directory.
    let mut demo_socket_dir = None;
    let mut demo_address = None;
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
            .push(config::UpstreamServer::new(address.clone()));
        demo_socket_dir = Some(dir);
        demo_address = Some(address);
    }
    let listen: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    let listen = listen.join(", ");
    let inherited =
        systemd::activated_listeners().context("taking the sockets systemd passed (LISTEN_FDS)")?;
    for socket in &inherited {
        let address = socket
            .local_addr()
            .context("reading the passed socket's address")?;
        tracing::info!(%address, "serving on a socket systemd passed");
    }
    let bound = server::BoundGateway::bind_with(config, inherited)
        .await
        .with_context(|| format!("starting the gateway on {listen}"))?;
    // After binding and opening the log, before serving: no request is ever served as root.
    privileges::drop_root(bound.gateway().current().config.run_as.as_ref())?;
    let running = bound
        .serve()
        .with_context(|| format!("starting the gateway on {listen}"))?;
    let servers: Vec<String> = running
        .gateway
        .upstreams()
        .iter()
        .flat_map(|upstream| {
            upstream
                .servers()
                .iter()
                .map(|server| server.label())
                .collect::<Vec<_>>()
        })
        .collect();
    // Before the address is printed: whoever reads it may rotate the log at once, and SIGUSR1's
    // default action would end the process.
    reopen_logs_on_sigusr1(Arc::clone(&running.gateway));
    // Tests and scripts read the first line's address: the first listener's.
    for listener in running.listeners() {
        let scheme = if listener.spec.tls { "https" } else { "http" };
        let proxied = if listener.spec.proxy_protocol {
            " (PROXY protocol)"
        } else {
            ""
        };
        println!(
            "fcgate listening on {scheme}://{}/{proxied} (FastCGI: {})",
            listener.local_addr,
            servers.join(", ")
        );
    }
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let source = if running.gateway.current().config.workers.is_some() {
        "workers"
    } else {
        "one per CPU core"
    };
    let threads = if workers == 1 { "thread" } else { "threads" };
    tracing::info!("{workers} worker {threads} ({source})");
    if let Some(tls) = &running.gateway.current().tls {
        for certificate in tls.certificates() {
            tracing::info!(
                certificate = %certificate.path.display(),
                names = %certificate.names.join(", "),
                expires = %humantime::format_rfc3339_seconds(certificate.not_after),
                "TLS certificate loaded"
            );
        }
    }
    if let Some(admin) = running.admin_addr {
        println!("fcgate admin: http://{admin}/status (metrics: http://{admin}/metrics)");
    }
    // Ready once each backend has said what it can take (or did not answer within the probe's
    // timeout), so the first requests are not sent against a default cap.
    let pools: Vec<_> = running
        .gateway
        .upstreams()
        .iter()
        .flat_map(|upstream| upstream.pools())
        .collect();
    let probes = pools.iter().map(fcgi::client::Pool::first_probe);
    let _ = tokio::time::timeout(FIRST_PROBE_WAIT, futures_util::future::join_all(probes)).await;
    systemd::notify("READY=1");
    loop {
        match signals.next(&running.shutdown).await {
            Signal::Stop => break,
            Signal::Reload => {
                systemd::notify_reloading();
                reload(cli, demo_address.as_ref(), &running).await;
                systemd::notify("READY=1");
            }
        }
    }
    systemd::notify("STOPPING=1");
    running.stop().await;
    shutdown.cancel();
    drop(demo_socket_dir);
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: reads the configuration again (the file and the same flags) and puts it in force;
/// a file that does not load, or a reload that cannot be done, is logged and changes nothing.
async fn reload(cli: &Cli, demo_address: Option<&Address>, running: &server::RunningGateway) {
    let config = match config::load(cli) {
        Ok(mut config) => {
            if let (true, Some(address)) = (config.upstream.servers.is_empty(), demo_address) {
                config
                    .upstream
                    .servers
                    .push(config::UpstreamServer::new(address.clone()));
            }
            if let Err(error) = config.require_servers() {
                tracing::error!("reload refused, the running configuration stays: {error}");
                return;
            }
            config
        }
        Err(error) => {
            tracing::error!("reload refused, the running configuration stays: {error}");
            return;
        }
    };
    match running.reload(config).await {
        Ok(done) => tracing::info!(
            kept_servers = done.kept_servers,
            new_servers = done.new_servers,
            drained_servers = done.drained_servers,
            listen = %running.listen_addr(),
            "configuration reloaded"
        ),
        Err(error) => {
            tracing::error!("reload refused, the running configuration stays: {error}");
        }
    }
}

/// The longest READY=1 waits for the backends' first FCGI_GET_VALUES answers.
const FIRST_PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// SIGUSR1 reopens the access log file (after logrotate moved it), as nginx's USR1 does. The
/// handler is installed before this returns (so before READY=1); the loop runs as a task.
fn reopen_logs_on_sigusr1(gateway: Arc<proxy::Gateway>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut user1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot install a SIGUSR1 handler; the access log will not be reopened");
        return;
    };
    tokio::spawn(async move {
        while user1.recv().await.is_some() {
            tracing::info!("SIGUSR1 received: reopening the access log");
            gateway.access_log().reopen();
        }
    });
}

/// What a signal asks for.
enum Signal {
    /// SIGTERM or SIGINT: drain and stop.
    Stop,
    /// SIGHUP: read the configuration again.
    Reload,
}

/// SIGTERM, SIGINT (Ctrl-C) and SIGHUP handlers. Tokio installs a handler when the stream is
/// created, so creating them early is what keeps a signal from being lost to the default
/// action (which, for all three, ends the process).
struct Signals {
    handlers: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(terminate), Ok(interrupt), Ok(hangup)) => Some([terminate, interrupt, hangup]),
            _ => {
                tracing::error!("cannot install signal handlers; stop fcgate with SIGKILL");
                None
            }
        };
        Self { handlers }
    }

    /// The next signal; [`Signal::Stop`] also when `token` is cancelled elsewhere, which is
    /// then cancelled in any case.
    async fn next(&mut self, token: &CancellationToken) -> Signal {
        let signal = match &mut self.handlers {
            Some([terminate, interrupt, hangup]) => {
                tokio::select! {
                    _ = terminate.recv() => { tracing::info!("SIGTERM received"); Signal::Stop }
                    _ = interrupt.recv() => { tracing::info!("SIGINT received"); Signal::Stop }
                    _ = hangup.recv() => { tracing::info!("SIGHUP received: reloading"); Signal::Reload }
                    _ = token.cancelled() => Signal::Stop,
                }
            }
            None => {
                token.cancelled().await;
                Signal::Stop
            }
        };
        if let Signal::Stop = signal {
            token.cancel();
        }
        signal
    }

    /// Waits for SIGTERM or SIGINT (SIGHUP too: nothing to reload), then cancels `token`.
    async fn cancel_when_received(mut self, token: CancellationToken) {
        let _ = self.next(&token).await;
        token.cancel();
    }
}
