//! The command line: subcommands, `--config`, and one flag per configuration setting.
//!
//! Every setting in the config file has a flag spelled as its key with dashes
//! (`max_conns` -> `--max-conns`). Flags are `Option`s so "not given" stays visible until
//! [`crate::config::RawConfig::merge_flags`] lays them over the file; range checks happen once,
//! in validation, for flags and file alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fcgi::net::Address;

use crate::listen_spec::ListenSpec;
use crate::size::ByteSize;

/// fcgate: an HTTP/1.1 and HTTP/2 gateway to FastCGI applications with a shared, capped,
/// persistent connection pool.
#[derive(Debug, Clone, Parser)]
#[command(name = "fcgate", version, about, long_about = None)]
pub struct Cli {
    /// What to run; without a subcommand fcgate serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file; flags override its values.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Settings given as flags.
    #[command(flatten)]
    pub settings: SettingFlags,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validate a configuration file and exit: 0 with "configuration OK", else the bad key.
    Check {
        /// The file to check.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the bundled demo FastCGI application.
    DemoApp {
        /// Where the demo app listens: `unix:/path.sock` or `HOST:PORT`.
        #[arg(long, value_name = "ADDR")]
        listen: Address,
    },
}

impl Cli {
    /// The configuration file to read: `check`'s own `--config`, else the top-level one.
    pub fn config_file(&self) -> Option<&Path> {
        match &self.command {
            Some(Command::Check { config }) => Some(config),
            _ => self.config.as_deref(),
        }
    }
}

/// One optional flag per setting; `None` means "use the file's value, else the default".
#[derive(Debug, Clone, Default, Args)]
pub struct SettingFlags {
    /// Listen address, IPv4:PORT or bracketed IPv6, then `tls` and/or `proxy_protocol`
    /// (e.g. "0.0.0.0:443 tls"); repeat for several [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<ListenSpec>,
    /// Document root; setting it turns on PHP mode (static files, scripts, front controller)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Directory index and front controller file [default: index.php]
    #[arg(long, value_name = "FILE")]
    pub index: Option<String>,
    /// File extensions run as scripts, comma separated [default: php]
    #[arg(long, value_name = "EXT", value_delimiter = ',')]
    pub script_extensions: Option<Vec<String>>,
    /// Send requests for missing files to the index script [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub front_controller: Option<bool>,
    /// Largest accepted request body; 0 = unlimited [default: 8MiB]
    #[arg(long, value_name = "SIZE")]
    pub client_max_body_size: Option<ByteSize>,
    /// Request body kept in memory up to this, then spooled to a temp file [default: 64KiB]
    #[arg(long, value_name = "SIZE")]
    pub client_body_buffer_size: Option<ByteSize>,
    /// Response body kept in memory up to this, then spooled to a temp file [default: 256KiB]
    #[arg(long, value_name = "SIZE")]
    pub response_buffer_size: Option<ByteSize>,
    /// Response bytes held for a client that reads slower than the backend writes (memory and
    /// temp file); past it the request is aborted. 0 = no limit [default: 1GiB]
    #[arg(long, value_name = "SIZE")]
    pub max_response_buffer: Option<ByteSize>,
    /// Time allowed to receive the request headers [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub client_header_timeout: Option<Duration>,
    /// Admin listener for /metrics (Prometheus) and /status (live page); off unless set
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Access log: "stdout", "off" or a file path [default: stdout]
    #[arg(long, value_name = "WHERE")]
    pub access_log: Option<String>,
    /// Access log lines: "combined" (nginx's) or "json" [default: combined]
    #[arg(long, value_name = "FORMAT")]
    pub access_log_format: Option<String>,
    /// Diagnostics log on stderr: "text" or "json" (one object per line) [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// On SIGTERM, time given to in-flight requests [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Pass request headers whose names contain '_' [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub underscores_in_headers: Option<bool>,
    /// Extra FastCGI param NAME=VALUE, repeatable; overrides a standard param of that name
    #[arg(long = "params", alias = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// FastCGI server `unix:/path.sock`, `HOST:PORT` or `[v6]:PORT`, optionally followed by
    /// ` weight=N` and/or ` backup`; repeatable; replaces upstream.servers
    #[arg(long = "upstream", value_name = "ADDR")]
    pub servers: Vec<String>,
    /// Hard cap on connections (busy + idle) per server [default: learned from the backend, else 4]
    #[arg(long, value_name = "N")]
    pub max_conns: Option<usize>,
    /// Idle connections kept per server [default: the cap]
    #[arg(long, value_name = "N")]
    pub max_idle: Option<usize>,
    /// Requests waiting for a connection per server; more get 503 at once [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_queue: Option<usize>,
    /// php-fpm's config (php-fpm.conf or a pool file): the cap becomes pm.max_children of the
    /// pool listening on each server's address, unless --max-conns is given
    #[arg(long, value_name = "FILE")]
    pub php_fpm_config: Option<PathBuf>,
    /// With --php-fpm-config: the pool to read, when its listen address does not say
    #[arg(long, value_name = "NAME")]
    pub php_fpm_pool: Option<String>,
    /// Connect or protocol failures within fail_timeout that mark a server down [default: 1]
    #[arg(long, value_name = "N")]
    pub max_fails: Option<u32>,
    /// Failure window, and how long a failed server is skipped [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub fail_timeout: Option<Duration>,
    /// Probe each server with FCGI_GET_VALUES this often when there are several; 0s = never [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub health_interval: Option<Duration>,
    /// When a client goes away mid-request: wait this long for the backend to confirm
    /// FCGI_ABORT_REQUEST and keep the connection; 0s closes it at once [default: 0s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub abort_drain_timeout: Option<Duration>,
    /// Several requests per backend connection: auto (when the backend announces
    /// FCGI_MPXS_CONNS=1), on (unless it announces 0), force, off [default: auto]
    #[arg(long, value_name = "MODE")]
    pub multiplex: Option<String>,
    /// Most requests in flight on one multiplexed connection [default: 64, or fewer as the
    /// backend's FCGI_MAX_REQS / FCGI_MAX_CONNS says]
    #[arg(long, value_name = "N")]
    pub max_reqs_per_conn: Option<usize>,
    /// TCP keepalive probes on backend sockets, to notice a vanished backend host [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub socket_keepalive: Option<bool>,
    /// Also retry POST and other non-idempotent requests whose pooled connection died before any answer [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub retry_non_idempotent: Option<bool>,
    /// Requests per connection before it is retired [default: 10000]
    #[arg(long, value_name = "N")]
    pub keepalive_requests: Option<u64>,
    /// Idle time before a pooled connection is closed [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Option<Duration>,
    /// Idle time before a connection that holds one of the backend's workers (a backend that
    /// does not multiplex: php-fpm, php-cgi) is closed, so others get the worker [default: 250ms]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub worker_idle_timeout: Option<Duration>,
    /// Total lifetime of a backend connection [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keepalive_time: Option<Duration>,
    /// Time allowed to connect to a backend [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Longest silence from the backend during a request [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub read_timeout: Option<Duration>,
    /// Longest stall of a write to the backend [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub send_timeout: Option<Duration>,
    /// Keep backend connections open and pool them; false = one connection per request [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub keep_conn: Option<bool>,
    /// Longest wait for a backend connection before 503 [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub queue_timeout: Option<Duration>,
    /// Name server `IP` or `IP:PORT` for upstream host names, repeatable; replaces
    /// upstream.resolver [default: those of /etc/resolv.conf]
    #[arg(long, value_name = "ADDR")]
    pub resolver: Vec<String>,
    /// Re-resolve upstream host names this often [default: each answer's TTL, within 1s..5min]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub resolve_interval: Option<Duration>,
    /// Longest wait for the name servers' answer about one upstream host name [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub resolver_timeout: Option<Duration>,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_leaves_everything_unset() {
        let cli = Cli::try_parse_from(["fcgate"]).unwrap();
        assert!(cli.command.is_none());
        assert!(cli.config_file().is_none());
        assert!(cli.settings.listen.is_empty());
        assert!(cli.settings.servers.is_empty());
        assert!(cli.settings.keep_conn.is_none());
    }

    #[test]
    fn settings_flags_are_the_keys_with_dashes() {
        let cli = Cli::try_parse_from([
            "fcgate",
            "--max-conns",
            "2",
            "--keepalive-timeout",
            "500ms",
            "--client-max-body-size",
            "16m",
            "--upstream",
            "unix:/run/php.sock",
            "--upstream",
            "127.0.0.1:9000",
            "--script-extensions",
            "php,phtml",
            "--params",
            "APP_ENV=prod",
            "--param",
            "EMPTY=",
        ])
        .unwrap();
        let flags = &cli.settings;
        assert_eq!(flags.max_conns, Some(2));
        assert_eq!(flags.keepalive_timeout, Some(Duration::from_millis(500)));
        assert_eq!(flags.client_max_body_size, Some(ByteSize(16 << 20)));
        assert_eq!(flags.servers, ["unix:/run/php.sock", "127.0.0.1:9000"]);
        assert_eq!(
            flags.script_extensions.as_deref(),
            Some(&["php".to_owned(), "phtml".to_owned()][..])
        );
        assert_eq!(
            flags.params,
            [
                ("APP_ENV".to_owned(), "prod".to_owned()),
                ("EMPTY".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn boolean_flags_take_an_optional_value() {
        let cli =
            Cli::try_parse_from(["fcgate", "--keep-conn", "--front-controller=false"]).unwrap();
        assert_eq!(cli.settings.keep_conn, Some(true));
        assert_eq!(cli.settings.front_controller, Some(false));
        let cli = Cli::try_parse_from(["fcgate", "--keep-conn", "false"]).unwrap();
        assert_eq!(cli.settings.keep_conn, Some(false));
    }

    #[test]
    fn bad_flag_values_are_refused() {
        for args in [
            &["fcgate", "--max-conns", "four"][..],
            &["fcgate", "--read-timeout", "60"],
            &["fcgate", "--client-max-body-size", "8MB"],
            &["fcgate", "--listen", "localhost"],
            &["fcgate", "--params", "NOVALUE"],
            &["fcgate", "demo-app", "--listen", "nowhere"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} should fail");
        }
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["fcgate", "check", "--config", "/etc/fcgate.toml"]).unwrap();
        assert_eq!(cli.config_file(), Some(Path::new("/etc/fcgate.toml")));
        assert!(matches!(cli.command, Some(Command::Check { .. })));

        let cli =
            Cli::try_parse_from(["fcgate", "demo-app", "--listen", "unix:/tmp/demo.sock"]).unwrap();
        match cli.command {
            Some(Command::DemoApp { listen }) => {
                assert_eq!(listen, Address::Unix(PathBuf::from("/tmp/demo.sock")));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["fcgate", "check"]).is_err());
    }
}
