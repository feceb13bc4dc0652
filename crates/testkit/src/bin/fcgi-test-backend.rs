//! `fcgi-test-backend --listen ADDR [--workers N] [--multiplex]`: the instrumented test backend
//! as a standalone FastCGI server, for trying the gateway by hand or benchmarking it. Behaviour
//! per request comes from the query string (token, sleep_ms, size, status, crash, stderr).

use std::process::ExitCode;

use fcgi::net::Address;
use fcgi::server::ServerConfig;
use fcgi_testkit::backend::{BackendOptions, TestBackend};

const USAGE: &str =
    "usage: fcgi-test-backend --listen unix:/path|host:port [--workers N] [--multiplex]";

struct Arguments {
    listen: Address,
    workers: Option<usize>,
    multiplex: bool,
}

fn parse_arguments() -> Result<Arguments, String> {
    let mut listen = None;
    let mut workers = None;
    let mut multiplex = false;
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--listen" => {
                let value = arguments.next().ok_or("--listen needs an address")?;
                listen = Some(Address::parse(&value).map_err(|error| error.to_string())?);
            }
            "--workers" => {
                let value = arguments.next().ok_or("--workers needs a number")?;
                let count = value
                    .parse()
                    .map_err(|_| format!("--workers {value}: not a number"))?;
                workers = Some(count);
            }
            "--multiplex" => multiplex = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Arguments {
        listen: listen.ok_or("--listen is required")?,
        workers,
        multiplex,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let arguments = match parse_arguments() {
        Ok(arguments) => arguments,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("fcgi-test-backend: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let options = BackendOptions {
        workers: arguments.workers,
        server: ServerConfig {
            mpxs_conns: arguments.multiplex,
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    };
    let backend = TestBackend::start_at(&arguments.listen, options).await;
    println!("fcgi-test-backend listening on {}", backend.address());
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("fcgi-test-backend: cannot wait for Ctrl-C: {error}");
        return ExitCode::FAILURE;
    }
    println!(
        "fcgi-test-backend: {} connections, {} requests",
        backend.connections_accepted(),
        backend.requests()
    );
    ExitCode::SUCCESS
}
