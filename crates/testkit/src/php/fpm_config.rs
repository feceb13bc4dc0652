//! The php-fpm configuration files the harness writes: a global section that keeps everything in
//! the tempdir and the foreground, and one pool built from [`PhpFpmOptions`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fcgi::net::Address;

use super::fpm::{PhpFpmOptions, ProcessManager};

/// The files of one php-fpm instance, all inside its tempdir.
pub(super) struct Files {
    pub(super) global_config: PathBuf,
    pub(super) pool_config: PathBuf,
    fpm_log: PathBuf,
    php_error_log: PathBuf,
    pub(super) startup_output: PathBuf,
}

impl Files {
    pub(super) fn in_directory(directory: &Path) -> Files {
        Files {
            global_config: directory.join("php-fpm.conf"),
            pool_config: directory.join("pool.conf"),
            fpm_log: directory.join("php-fpm.log"),
            php_error_log: directory.join("php-errors.log"),
            startup_output: directory.join("stderr.log"),
        }
    }

    /// Every non-empty log, each under a heading naming its file.
    pub(super) fn read_logs(&self) -> String {
        let mut logs = String::new();
        for path in [&self.fpm_log, &self.php_error_log, &self.startup_output] {
            let contents = std::fs::read_to_string(path).unwrap_or_default();
            if !contents.trim().is_empty() {
                let _ = write!(logs, "==> {} <==\n{contents}", path.display());
            }
        }
        logs
    }
}

pub(super) fn global_config(files: &Files) -> String {
    format!(
        "[global]\n\
         pid = {pid}\n\
         error_log = {log}\n\
         log_level = notice\n\
         daemonize = no\n\
         include = {pool}\n",
        pid = files.global_config.with_extension("pid").display(),
        log = files.fpm_log.display(),
        pool = files.pool_config.display(),
    )
}

pub(super) fn pool_config(options: &PhpFpmOptions, address: &Address, files: &Files) -> String {
    let listen = match address {
        Address::Unix(path) => path.display().to_string(),
        Address::Tcp(host_port) => host_port.clone(),
    };
    let mut pool = format!(
        "[test]\n\
         listen = {listen}\n\
         listen.mode = 0666\n\
         chdir = {docroot}\n\
         pm.max_children = {max_children}\n\
         pm.max_requests = {max_requests}\n",
        docroot = options.docroot.display(),
        max_children = options.max_children,
        max_requests = options.max_requests,
    );
    match options.pm {
        ProcessManager::Static => pool.push_str("pm = static\n"),
        ProcessManager::Dynamic => {
            // php-fpm insists on min_spare <= start_servers <= max_spare <= max_children.
            let _ = write!(
                pool,
                "pm = dynamic\npm.start_servers = 1\npm.min_spare_servers = 1\n\
                 pm.max_spare_servers = {}\n",
                options.max_children.max(1)
            );
        }
        ProcessManager::OnDemand {
            process_idle_timeout,
        } => {
            // php-fpm reads durations in whole seconds (or m/h/d); round up, never to 0.
            let seconds = process_idle_timeout
                .as_secs()
                .saturating_add(u64::from(process_idle_timeout.subsec_nanos() > 0))
                .max(1);
            let _ = write!(
                pool,
                "pm = ondemand\npm.process_idle_timeout = {seconds}s\n"
            );
        }
    }
    if let Some(status_path) = &options.status_path {
        let _ = writeln!(pool, "pm.status_path = {status_path}");
    }
    let _ = write!(
        pool,
        "catch_workers_output = yes\n\
         decorate_workers_output = no\n\
         clear_env = no\n\
         request_terminate_timeout = 60s\n\
         php_admin_value[error_log] = {php_errors}\n\
         php_admin_flag[log_errors] = on\n\
         php_admin_flag[display_errors] = off\n\
         php_admin_value[memory_limit] = 256M\n\
         php_admin_value[post_max_size] = 64M\n\
         php_admin_value[upload_max_filesize] = 64M\n",
        php_errors = files.php_error_log.display(),
    );
    for line in &options.extra_pool_lines {
        let _ = writeln!(pool, "{line}");
    }
    pool
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pool_for(options: &PhpFpmOptions) -> String {
        let files = Files::in_directory(Path::new("/tmp/x"));
        pool_config(options, &Address::Tcp("127.0.0.1:9000".into()), &files)
    }

    #[test]
    fn ondemand_idle_timeout_is_rounded_up_to_whole_seconds() {
        let options = PhpFpmOptions {
            pm: ProcessManager::OnDemand {
                process_idle_timeout: Duration::from_millis(1500),
            },
            ..PhpFpmOptions::default()
        };
        let pool = pool_for(&options);
        assert!(pool.contains("pm = ondemand\n"), "{pool}");
        assert!(pool.contains("pm.process_idle_timeout = 2s\n"), "{pool}");

        let options = PhpFpmOptions {
            pm: ProcessManager::OnDemand {
                process_idle_timeout: Duration::ZERO,
            },
            ..PhpFpmOptions::default()
        };
        assert!(pool_for(&options).contains("pm.process_idle_timeout = 1s\n"));
    }

    #[test]
    fn pool_carries_the_options_and_extra_lines_last() {
        let options = PhpFpmOptions {
            pm: ProcessManager::Dynamic,
            max_children: 3,
            max_requests: 10,
            status_path: Some("/fpm-status".into()),
            extra_pool_lines: vec!["request_slowlog_timeout = 1s".into()],
            ..PhpFpmOptions::default()
        };
        let pool = pool_for(&options);
        for line in [
            "listen = 127.0.0.1:9000\n",
            "pm = dynamic\n",
            "pm.max_children = 3\n",
            "pm.max_spare_servers = 3\n",
            "pm.max_requests = 10\n",
            "pm.status_path = /fpm-status\n",
        ] {
            assert!(pool.contains(line), "missing {line:?} in\n{pool}");
        }
        assert!(pool.ends_with("request_slowlog_timeout = 1s\n"), "{pool}");
    }
}
