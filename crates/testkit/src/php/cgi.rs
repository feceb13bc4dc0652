//! A real `php-cgi -b ADDR`: PHP's built-in FastCGI server, `PHP_FCGI_CHILDREN` workers under
//! one parent, each serving one connection at a time (the process-per-connection model).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fcgi::net::Address;
use tempfile::TempDir;

use crate::process::ProcessGroup;
use crate::Listen;

const BINARY_NAMES: &[&str] = &[
    "php-cgi",
    "php-cgi8.4",
    "php-cgi8.3",
    "php-cgi8.2",
    "php-cgi8.1",
    "php-cgi8.0",
    "php-cgi7.4",
];
const READY_WITHIN: Duration = Duration::from_secs(10);
const LAUNCH_ATTEMPTS: u32 = 3;

/// A running php-cgi. Dropping it kills the parent and its children and removes the tempdir.
pub struct PhpCgi {
    process: ProcessGroup,
    address: Address,
    output: PathBuf,
    _directory: TempDir,
}

impl PhpCgi {
    /// Finds php-cgi in PATH or /usr/sbin. `None`, after a loud warning, when it is not
    /// installed; panics instead when `CI=true`.
    pub fn find_binary() -> Option<PathBuf> {
        let found = super::find_executable(BINARY_NAMES);
        if found.is_none() {
            super::report_missing("php-cgi", BINARY_NAMES);
        }
        found
    }

    /// Starts php-cgi with `children` workers and waits (up to 10 s, then panics with its
    /// output) until it accepts connections. `None` when php-cgi is not installed.
    ///
    /// Readiness is probed by connecting: php-cgi logs nothing when it is up, so one worker
    /// sees one empty connection before the test's first.
    pub async fn start(children: u32, listen: Listen) -> Option<PhpCgi> {
        let binary = Self::find_binary()?;
        for _ in 0..LAUNCH_ATTEMPTS {
            if let Some(cgi) = Self::launch(&binary, children, listen).await {
                return Some(cgi);
            }
        }
        panic!("php-cgi could not bind a free TCP port in {LAUNCH_ATTEMPTS} attempts");
    }

    /// `None` when the TCP port was taken before php-cgi could bind it.
    async fn launch(binary: &Path, children: u32, listen: Listen) -> Option<PhpCgi> {
        let directory = tempfile::Builder::new()
            .prefix("php-cgi-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a tempdir for php-cgi: {error}"));
        let address = listen.external_address(directory.path(), "php-cgi.sock");
        let bind = match &address {
            Address::Unix(path) => path.display().to_string(),
            Address::Tcp(host_port) => host_port.clone(),
        };
        let output = directory.path().join("output.log");

        let mut command = Command::new(binary);
        command
            .args([
                "-n",
                "-d",
                "log_errors=1",
                "-d",
                "display_errors=0",
                "-b",
                &bind,
            ])
            .current_dir(directory.path())
            .env("PHP_FCGI_CHILDREN", children.to_string());
        let mut cgi = PhpCgi {
            process: ProcessGroup::spawn(&command, &output),
            address,
            output,
            _directory: directory,
        };

        let started = Instant::now();
        loop {
            if fcgi::net::connect(&cgi.address).await.is_ok() {
                return Some(cgi);
            }
            if let Some(status) = cgi.process.exit_status() {
                let log = cgi.log();
                if listen.is_tcp() && log.contains("listen socket") {
                    return None;
                }
                panic!("php-cgi exited during startup ({status}). Its output:\n{log}");
            }
            if started.elapsed() > READY_WITHIN {
                panic!(
                    "php-cgi was not accepting on {} within {READY_WITHIN:?}. Its output:\n{}",
                    cgi.address,
                    cgi.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where php-cgi listens.
    pub fn address(&self) -> Address {
        self.address.clone()
    }

    /// The parent process id.
    pub fn master_pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` to the parent process.
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// Everything php-cgi printed (PHP errors go to stderr), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}
