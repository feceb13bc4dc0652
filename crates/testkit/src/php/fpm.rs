//! A real php-fpm master in the foreground, configured from [`PhpFpmOptions`].
//!
//! Template: pingora's `mock_origin` (start the real server, poll until it is ready). Readiness is
//! php-fpm's own "ready to handle connections" log line rather than a probe connection, so the
//! connection counts a test reads from php-fpm are not off by one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fcgi::net::Address;
use tempfile::TempDir;

use super::fpm_config::{global_config, pool_config, Files};
use crate::process::ProcessGroup;
use crate::{php_fixture_docroot, Listen};

const BINARY_NAMES: &[&str] = &[
    "php-fpm",
    "php-fpm8.4",
    "php-fpm8.3",
    "php-fpm8.2",
    "php-fpm8.1",
    "php-fpm8.0",
    "php-fpm7.4",
];
const READY_WITHIN: Duration = Duration::from_secs(10);
const LAUNCH_ATTEMPTS: u32 = 3;

/// php-fpm's `pm` setting: how the pool's worker count moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessManager {
    /// `pm = static`: exactly `max_children` workers, always.
    Static,
    /// `pm = dynamic`: one worker at start, between 1 and `max_children` spare.
    Dynamic,
    /// `pm = ondemand`: workers forked per connection, exiting after `process_idle_timeout`
    /// (php-fpm counts it in whole seconds; it is rounded up).
    OnDemand {
        /// How long an idle worker lives.
        process_idle_timeout: Duration,
    },
}

/// How the harness configures a php-fpm pool.
#[derive(Clone, Debug)]
pub struct PhpFpmOptions {
    /// Unix socket in the tempdir or `127.0.0.1:<free port>`.
    pub listen: Listen,
    /// `pm`.
    pub pm: ProcessManager,
    /// `pm.max_children`.
    pub max_children: u32,
    /// `pm.max_requests`: a worker exits after this many requests; 0 = never.
    pub max_requests: u32,
    /// The pool's working directory; scripts are addressed by absolute SCRIPT_FILENAME anyway.
    pub docroot: PathBuf,
    /// `pm.status_path`, e.g. `Some("/fpm-status".into())`.
    pub status_path: Option<String>,
    /// Raw lines appended to the pool section, e.g. `"request_slowlog_timeout = 1s"`.
    pub extra_pool_lines: Vec<String>,
}

impl Default for PhpFpmOptions {
    fn default() -> Self {
        PhpFpmOptions {
            listen: Listen::Unix,
            pm: ProcessManager::Static,
            max_children: 4,
            max_requests: 0,
            docroot: php_fixture_docroot(),
            status_path: None,
            extra_pool_lines: Vec::new(),
        }
    }
}

/// A running php-fpm. Dropping it kills the master and all its workers and removes the tempdir.
pub struct PhpFpm {
    // Declared first so it drops first: the processes die before their directory goes.
    process: ProcessGroup,
    address: Address,
    docroot: PathBuf,
    files: Files,
    _directory: TempDir,
}

impl PhpFpm {
    /// Finds php-fpm (`php-fpm`, `php-fpm8.x` in PATH or /usr/sbin). `None`, after a loud
    /// warning, when it is not installed; panics instead when `CI=true`.
    pub fn find_binary() -> Option<PathBuf> {
        let found = super::find_executable(BINARY_NAMES);
        if found.is_none() {
            super::report_missing("php-fpm", BINARY_NAMES);
        }
        found
    }

    /// Starts php-fpm and waits (up to 10 s, then panics with its log) until it accepts
    /// connections. `None` when php-fpm is not installed (see [`PhpFpm::find_binary`]).
    pub async fn start(options: PhpFpmOptions) -> Option<PhpFpm> {
        let binary = Self::find_binary()?;
        for _ in 0..LAUNCH_ATTEMPTS {
            if let Some(fpm) = Self::launch(&binary, &options).await {
                return Some(fpm);
            }
        }
        panic!("php-fpm could not bind a free TCP port in {LAUNCH_ATTEMPTS} attempts");
    }

    /// `None` when the TCP port was taken before php-fpm could bind it.
    async fn launch(binary: &Path, options: &PhpFpmOptions) -> Option<PhpFpm> {
        let directory = tempfile::Builder::new()
            .prefix("php-fpm-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a tempdir for php-fpm: {error}"));
        let files = Files::in_directory(directory.path());
        let address = options
            .listen
            .external_address(directory.path(), "php-fpm.sock");
        write_file(&files.global_config, &global_config(&files));
        write_file(&files.pool_config, &pool_config(options, &address, &files));

        let mut command = Command::new(binary);
        // -F: foreground, so the harness owns the master; -n: no php.ini from the machine;
        // -R: tests often run as root, which php-fpm refuses without it.
        command
            .args(["-F", "-n", "-R", "-y"])
            .arg(&files.global_config);
        let mut fpm = PhpFpm {
            process: ProcessGroup::spawn(&command, &files.startup_output),
            address,
            docroot: options.docroot.clone(),
            files,
            _directory: directory,
        };

        let started = Instant::now();
        loop {
            let log = fpm.log();
            if log.contains("ready to handle connections") {
                return Some(fpm);
            }
            if let Some(status) = fpm.process.exit_status() {
                if options.listen.is_tcp() && log.contains("Address already in use") {
                    return None;
                }
                panic!("php-fpm exited during startup ({status}). Its log:\n{log}");
            }
            if started.elapsed() > READY_WITHIN {
                panic!("php-fpm was not ready within {READY_WITHIN:?}. Its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where the pool listens.
    pub fn address(&self) -> Address {
        self.address.clone()
    }

    /// The master process id.
    pub fn master_pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` to the master, e.g. [`super::signals::SIGUSR2`] to reload gracefully.
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// The pool configuration file the harness wrote (`pm.max_children = …` and the rest).
    pub fn pool_config_path(&self) -> &Path {
        &self.files.pool_config
    }

    /// The docroot the options named; join a script name to it for SCRIPT_FILENAME.
    pub fn docroot(&self) -> &Path {
        &self.docroot
    }

    /// php-fpm's error log, the PHP error log and anything printed before logging started,
    /// for assertion messages.
    pub fn log(&self) -> String {
        self.files.read_logs()
    }
}

fn write_file(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
}
