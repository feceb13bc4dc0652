//! Real PHP backends for end-to-end tests: php-fpm ([`PhpFpm`]) and php-cgi ([`PhpCgi`]).
//!
//! Each runs in its own tempdir with a config written by the harness (`-n`: the machine's
//! php.ini never leaks in) and its own process group, killed whole when the handle drops.
//! A missing PHP is a skip with a loud warning on a developer machine and a failure in CI.

mod cgi;
mod fpm;
mod fpm_config;

use std::path::{Path, PathBuf};

pub use cgi::PhpCgi;
pub use fpm::{PhpFpm, PhpFpmOptions, ProcessManager};

/// Linux signal numbers the tests send to PHP masters.
pub mod signals {
    /// Graceful stop: php-fpm finishes running requests, then exits.
    pub const SIGQUIT: i32 = 3;
    /// Immediate death, no cleanup.
    pub const SIGKILL: i32 = 9;
    /// php-fpm: reopen log files.
    pub const SIGUSR1: i32 = 10;
    /// php-fpm: graceful reload (workers finish, master re-executes itself, new workers start).
    pub const SIGUSR2: i32 = 12;
    /// Fast stop.
    pub const SIGTERM: i32 = 15;
}

/// The first of `names` found in `PATH`, `/usr/sbin` or `/usr/local/sbin` (Debian puts php-fpm
/// in sbin, which a non-root `PATH` often lacks).
fn find_executable(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut directories: Vec<PathBuf> = std::env::split_paths(&path).collect();
    directories.extend([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
    names.iter().find_map(|name| {
        directories
            .iter()
            .map(|directory| directory.join(name))
            .find(|candidate| is_executable(candidate))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// In CI a missing PHP is a failure, never a skip: the tests that need it would pass vacuously.
fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// Panics in CI; elsewhere prints a warning nobody can miss and lets the caller skip.
fn report_missing(program: &str, looked_for: &[&str]) {
    let message = format!(
        "{program} is not installed (looked for {} in PATH, /usr/sbin, /usr/local/sbin)",
        looked_for.join(", ")
    );
    if running_in_ci() {
        panic!("{message}; CI=true, so this is a failure, not a skip. Run scripts/test, which installs it.");
    }
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\n!! SKIPPING A TEST THAT NEEDS {program}\n!! {message}.\n!! Install it: \
         apt-get install -y php-fpm php-cgi (scripts/test does this when run as root).\n{bar}\n"
    );
}
