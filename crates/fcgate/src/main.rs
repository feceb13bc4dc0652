//! The `fcgate` command: parse arguments, set up logging, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use fcgate::config::LogFormat;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = fcgate::cli::Cli::parse();
    init_tracing(fcgate::config::log_format(&cli));
    let mut runtime = match fcgate::config::workers(&cli) {
        // One thread: the scheduler made for it, with no work-stealing queues or cross-thread
        // wake-ups to pay for; the requests run on the main thread.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fcgate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(fcgate::run(cli));
    // Dropping the runtime drops every task, and with them the last handles on the access
    // logs; their writers then write what is left, and the process waits for that before it
    // exits (a drop itself never waits: it may run on a runtime worker).
    drop(runtime);
    if !fcgate::access_log::wait_for_writers(std::time::Duration::from_secs(10)) {
        eprintln!("fcgate: the access log's last lines are still unwritten after 10 s; exiting");
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fcgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Diagnostics go to stderr, as text or one JSON object per line (`log_format`).
fn init_tracing(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file, journald or JSON.
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        // The event's fields (`request`, `method`, `path`, `status`, `message`) at the top level
        // beside `timestamp`, `level` and `target`; enclosing spans' fields under `span`/`spans`.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
