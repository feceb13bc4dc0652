//! The configuration exactly as written: the TOML file's serde structs and the step that lays
//! command-line flags over them.
//!
//! Every field is an `Option` and unknown keys are refused (`deny_unknown_fields`), so a typo
//! such as `max_con = 4` is an error naming the key instead of a silently ignored line.
//! Durations are humantime strings (`"30s"`, `"500ms"`); sizes are [`ByteSize`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;
use crate::cli::SettingFlags;
use crate::size::ByteSize;

/// The top level of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `listen`: one entry (`"127.0.0.1:8080"`) or a list, still as text (`ADDR [tls]
    /// [proxy_protocol]`): parsed in validation so errors name the key.
    #[serde(default, deserialize_with = "one_or_many")]
    pub listen: Option<Vec<String>>,
    /// `root`
    pub root: Option<PathBuf>,
    /// `index`
    pub index: Option<String>,
    /// `script_extensions`
    pub script_extensions: Option<Vec<String>>,
    /// `front_controller`
    pub front_controller: Option<bool>,
    /// `directory_without_index`: "forbidden" or "front_controller".
    pub directory_without_index: Option<String>,
    /// `follow_symlinks`: "within_root", "never", "owner" or "always".
    pub follow_symlinks: Option<String>,
    /// `script_lookup_cache`: how long a script found on disk is trusted.
    #[serde(default, deserialize_with = "humantime_duration")]
    pub script_lookup_cache: Option<Duration>,
    /// `client_max_body_size`
    pub client_max_body_size: Option<ByteSize>,
    /// `client_body_buffer_size`
    pub client_body_buffer_size: Option<ByteSize>,
    /// `response_buffer_size`
    pub response_buffer_size: Option<ByteSize>,
    /// `max_response_buffer`
    pub max_response_buffer: Option<ByteSize>,
    /// `max_request_body_buffer_total`
    pub max_request_body_buffer_total: Option<ByteSize>,
    /// `client_body_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub client_body_timeout: Option<Duration>,
    /// `send_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub send_timeout: Option<Duration>,
    /// `max_request_target`
    pub max_request_target: Option<ByteSize>,
    /// `max_header_line`
    pub max_header_line: Option<ByteSize>,
    /// `max_request_head`
    pub max_request_head: Option<ByteSize>,
    /// `allow_trace`
    pub allow_trace: Option<bool>,
    /// `client_header_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub client_header_timeout: Option<Duration>,
    /// `max_client_connections`
    pub max_client_connections: Option<usize>,
    /// `admin_listen`: where `/metrics` and `/status` are served; off when unset.
    pub admin_listen: Option<SocketAddr>,
    /// `access_log`: "stdout", "off" or a file path.
    pub access_log: Option<String>,
    /// `access_log_format`: "combined" or "json".
    pub access_log_format: Option<String>,
    /// `log_format`: "text" or "json".
    pub log_format: Option<String>,
    /// `workers`: threads that run requests; one per CPU core when unset.
    pub workers: Option<usize>,
    /// `user`: the account fcgate switches to after binding, when started as root.
    pub user: Option<String>,
    /// `group`: its group, the user's primary group when unset.
    pub group: Option<String>,
    /// `shutdown_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub shutdown_timeout: Option<Duration>,
    /// `underscores_in_headers`
    pub underscores_in_headers: Option<bool>,
    /// `http2_max_concurrent_streams`
    pub http2_max_concurrent_streams: Option<u32>,
    /// `http2_stream_window`
    pub http2_stream_window: Option<ByteSize>,
    /// `http2_connection_window`
    pub http2_connection_window: Option<ByteSize>,
    /// `trusted_proxies`: CIDR blocks or addresses, still as text.
    pub trusted_proxies: Option<Vec<String>>,
    /// `real_ip_header`
    pub real_ip_header: Option<String>,
    /// `[params]`: sorted by name, so the order sent is stable whatever the file's order.
    pub params: Option<BTreeMap<String, String>>,
    /// `[upstream]`
    #[serde(default)]
    pub upstream: RawUpstream,
    /// `[upstreams.NAME]`: more backend groups, for sites and rules that name them.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// `[tls]`
    #[serde(default)]
    pub tls: RawTls,
    /// `[acme]`
    pub acme: Option<RawAcme>,
    /// `[[rule]]`, in order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RawRule>,
    /// `default_rules`: the built-in rules first (PHP mode).
    pub default_rules: Option<bool>,
    /// `[[site]]`, in order.
    #[serde(default, rename = "site")]
    pub sites: Vec<RawSite>,
    /// `error_pages`: status (as a key) → path.
    pub error_pages: Option<BTreeMap<String, String>>,
    /// `unknown_hosts`: "default_site" or "reject".
    pub unknown_hosts: Option<String>,
    /// `[compression]`
    #[serde(default)]
    pub compression: RawCompression,
}

/// One `[[site]]`: the site settings of the top level, and the names it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// `server_names`
    pub server_names: Option<Vec<String>>,
    /// `root`
    pub root: Option<PathBuf>,
    /// `index`
    pub index: Option<String>,
    /// `script_extensions`
    pub script_extensions: Option<Vec<String>>,
    /// `front_controller`
    pub front_controller: Option<bool>,
    /// `directory_without_index`
    pub directory_without_index: Option<String>,
    /// `follow_symlinks`
    pub follow_symlinks: Option<String>,
    /// `script_lookup_cache`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub script_lookup_cache: Option<Duration>,
    /// `default_rules`
    pub default_rules: Option<bool>,
    /// `upstream`: the `[upstreams.NAME]` its scripts go to.
    pub upstream: Option<String>,
    /// `[[site.rule]]`
    #[serde(default, rename = "rule")]
    pub rules: Vec<RawRule>,
    /// `error_pages`
    pub error_pages: Option<BTreeMap<String, String>>,
}

/// One `[[rule]]`: a selector (`prefix`, `exact` or `regex`, optionally `unless` and
/// `if_missing`) and what it does. Checked in `config/rules.rs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// `prefix`
    pub prefix: Option<String>,
    /// `exact`
    pub exact: Option<String>,
    /// `regex`
    pub regex: Option<String>,
    /// `unless`
    pub unless: Option<String>,
    /// `if_missing`
    pub if_missing: Option<bool>,
    /// `deny`
    pub deny: Option<u16>,
    /// `return`
    #[serde(rename = "return")]
    pub fixed_answer: Option<RawReturn>,
    /// `rewrite`
    pub rewrite: Option<String>,
    /// `static`
    #[serde(rename = "static")]
    pub static_only: Option<bool>,
    /// `headers`
    pub headers: Option<BTreeMap<String, String>>,
    /// `add_headers`
    pub add_headers: Option<BTreeMap<String, String>>,
    /// `expires`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub expires: Option<Duration>,
    /// `auth_basic`: the realm.
    pub auth_basic: Option<String>,
    /// `auth_basic_user_file`
    pub auth_basic_user_file: Option<PathBuf>,
    /// `internal`
    pub internal: Option<bool>,
    /// `upstream`: the `[upstreams.NAME]` scripts under it go to.
    pub upstream: Option<String>,
}

/// A rule's `return`: a status (`return = 410`) or a table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawReturn {
    /// `return = 410`
    Status(u16),
    /// `return = { status = 301, location = "/new/$1" }`
    Full(RawReturnTable),
}

/// `return = { status, location, body }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReturnTable {
    /// The status.
    pub status: u16,
    /// Where a redirect goes.
    pub location: Option<String>,
    /// A short text body.
    pub body: Option<String>,
}

/// The `[acme]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// `acme.domains`
    pub domains: Option<Vec<String>>,
    /// `acme.contact`
    pub contact: Option<Vec<String>>,
    /// `acme.directory`
    pub directory: Option<String>,
    /// `acme.directory_ca`
    pub directory_ca: Option<PathBuf>,
    /// `acme.storage`
    pub storage: Option<PathBuf>,
    /// `acme.challenges`
    pub challenges: Option<Vec<String>>,
}

/// The `[tls]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// `tls.certificates`
    pub certificates: Option<Vec<RawCertificate>>,
    /// `tls.redirect_to_https`
    pub redirect_to_https: Option<bool>,
    /// `tls.hsts`
    pub hsts: Option<String>,
    /// `tls.min_version`
    pub min_version: Option<String>,
}

/// One entry of `tls.certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// The PEM file with the certificate chain, the site's certificate first.
    pub cert: PathBuf,
    /// The PEM file with its private key.
    pub key: PathBuf,
}

/// The `[upstream]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `upstream.servers`, still as text: parsed in validation so errors name the key.
    pub servers: Option<Vec<String>>,
    /// `upstream.max_conns`
    pub max_conns: Option<usize>,
    /// `upstream.max_idle`
    pub max_idle: Option<usize>,
    /// `upstream.max_queue`
    pub max_queue: Option<usize>,
    /// `upstream.php_fpm_config`
    pub php_fpm_config: Option<PathBuf>,
    /// `upstream.php_fpm_pool`
    pub php_fpm_pool: Option<String>,
    /// `upstream.php_fpm_status_path`
    pub php_fpm_status_path: Option<String>,
    /// `upstream.max_fails`
    pub max_fails: Option<u32>,
    /// `upstream.fail_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub fail_timeout: Option<Duration>,
    /// `upstream.health_interval`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub health_interval: Option<Duration>,
    /// `upstream.retry_non_idempotent`
    pub retry_non_idempotent: Option<bool>,
    /// `upstream.socket_keepalive`
    pub socket_keepalive: Option<bool>,
    /// `upstream.multiplex`
    pub multiplex: Option<String>,
    /// `upstream.max_reqs_per_conn`
    pub max_reqs_per_conn: Option<usize>,
    /// `upstream.abort_drain_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub abort_drain_timeout: Option<Duration>,
    /// `upstream.keepalive_requests`
    pub keepalive_requests: Option<u64>,
    /// `upstream.keepalive_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub keepalive_timeout: Option<Duration>,
    /// `upstream.worker_idle_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub worker_idle_timeout: Option<Duration>,
    /// `upstream.keepalive_time`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub keepalive_time: Option<Duration>,
    /// `upstream.connect_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub connect_timeout: Option<Duration>,
    /// `upstream.read_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub read_timeout: Option<Duration>,
    /// `upstream.send_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub send_timeout: Option<Duration>,
    /// `upstream.keep_conn`
    pub keep_conn: Option<bool>,
    /// `upstream.queue_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub queue_timeout: Option<Duration>,
    /// `upstream.resolver`: name servers, still as text (`IP` or `IP:PORT`).
    pub resolver: Option<Vec<String>>,
    /// `upstream.resolve_interval`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub resolve_interval: Option<Duration>,
    /// `upstream.resolver_timeout`
    #[serde(default, deserialize_with = "humantime_duration")]
    pub resolver_timeout: Option<Duration>,
}

/// Parses the text of a config file. Syntax errors, wrong types and unknown keys come back as
/// [`ConfigError::Parse`] carrying toml's message (line, column, the offending line).
pub fn parse_file_text(text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|error| ConfigError::Parse { path: None, error })
}

impl RawConfig {
    /// Lays the command-line flags over the file: every flag given wins. `--upstream` replaces
    /// the file's server list; `--params` entries replace file params of the same name.
    pub fn merge_flags(self, flags: &SettingFlags) -> RawConfig {
        let mut params = self.params;
        if !flags.params.is_empty() {
            let merged = params.get_or_insert_with(BTreeMap::new);
            for (name, value) in &flags.params {
                merged.insert(name.clone(), value.clone());
            }
        }
        let servers = if flags.servers.is_empty() {
            self.upstream.servers
        } else {
            Some(flags.servers.clone())
        };
        RawConfig {
            listen: if flags.listen.is_empty() {
                self.listen
            } else {
                Some(flags.listen.iter().map(ToString::to_string).collect())
            },
            root: flags.root.clone().or(self.root),
            index: flags.index.clone().or(self.index),
            script_extensions: flags.script_extensions.clone().or(self.script_extensions),
            front_controller: flags.front_controller.or(self.front_controller),
            // File-only: a site's layout rule, set once beside `root` and `index`.
            directory_without_index: self.directory_without_index,
            follow_symlinks: self.follow_symlinks,
            script_lookup_cache: self.script_lookup_cache,
            client_max_body_size: flags.client_max_body_size.or(self.client_max_body_size),
            client_body_buffer_size: flags
                .client_body_buffer_size
                .or(self.client_body_buffer_size),
            response_buffer_size: flags.response_buffer_size.or(self.response_buffer_size),
            max_response_buffer: flags.max_response_buffer.or(self.max_response_buffer),
            client_header_timeout: flags.client_header_timeout.or(self.client_header_timeout),
            // File-only: the request-head limits are rarely changed from the command line.
            client_body_timeout: self.client_body_timeout,
            max_request_body_buffer_total: self.max_request_body_buffer_total,
            send_timeout: self.send_timeout,
            max_request_target: self.max_request_target,
            max_header_line: self.max_header_line,
            max_request_head: self.max_request_head,
            allow_trace: self.allow_trace,
            shutdown_timeout: flags.shutdown_timeout.or(self.shutdown_timeout),
            max_client_connections: self.max_client_connections,
            admin_listen: flags.admin_listen.or(self.admin_listen),
            access_log: flags.access_log.clone().or(self.access_log),
            access_log_format: flags.access_log_format.clone().or(self.access_log_format),
            log_format: flags.log_format.clone().or(self.log_format),
            // File-only, as nginx's `worker_processes`: sized once, at start.
            workers: self.workers,
            // File-only, as nginx's `user`: who a service runs as belongs with its config.
            user: self.user,
            group: self.group,
            underscores_in_headers: flags.underscores_in_headers.or(self.underscores_in_headers),
            // File-only: protocol tuning, rarely changed.
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            http2_stream_window: self.http2_stream_window,
            http2_connection_window: self.http2_connection_window,
            // File-only: which peers are believed belongs with the deployment's description.
            trusted_proxies: self.trusted_proxies,
            real_ip_header: self.real_ip_header,
            params,
            // File-only: certificates and their paths belong in the file, beside `listen`.
            tls: self.tls,
            acme: self.acme,
            // File-only: rules are a site's description, as nginx's locations.
            rules: self.rules,
            default_rules: self.default_rules,
            sites: self.sites,
            error_pages: self.error_pages,
            unknown_hosts: self.unknown_hosts,
            // File-only: what is compressed is a site's policy, like nginx's gzip directives.
            compression: self.compression,
            // File-only: each group is described in full where it is named.
            upstreams: self.upstreams,
            upstream: RawUpstream {
                servers,
                max_conns: flags.max_conns.or(self.upstream.max_conns),
                max_idle: flags.max_idle.or(self.upstream.max_idle),
                max_queue: flags.max_queue.or(self.upstream.max_queue),
                php_fpm_config: flags
                    .php_fpm_config
                    .clone()
                    .or(self.upstream.php_fpm_config),
                php_fpm_pool: flags.php_fpm_pool.clone().or(self.upstream.php_fpm_pool),
                // File-only: it belongs with the backend's description, beside its servers.
                php_fpm_status_path: self.upstream.php_fpm_status_path,
                max_fails: flags.max_fails.or(self.upstream.max_fails),
                fail_timeout: flags.fail_timeout.or(self.upstream.fail_timeout),
                health_interval: flags.health_interval.or(self.upstream.health_interval),
                socket_keepalive: flags.socket_keepalive.or(self.upstream.socket_keepalive),
                multiplex: flags.multiplex.clone().or(self.upstream.multiplex),
                max_reqs_per_conn: flags.max_reqs_per_conn.or(self.upstream.max_reqs_per_conn),
                abort_drain_timeout: flags
                    .abort_drain_timeout
                    .or(self.upstream.abort_drain_timeout),
                retry_non_idempotent: flags
                    .retry_non_idempotent
                    .or(self.upstream.retry_non_idempotent),
                keepalive_requests: flags
                    .keepalive_requests
                    .or(self.upstream.keepalive_requests),
                keepalive_timeout: flags.keepalive_timeout.or(self.upstream.keepalive_timeout),
                worker_idle_timeout: flags
                    .worker_idle_timeout
                    .or(self.upstream.worker_idle_timeout),
                keepalive_time: flags.keepalive_time.or(self.upstream.keepalive_time),
                connect_timeout: flags.connect_timeout.or(self.upstream.connect_timeout),
                read_timeout: flags.read_timeout.or(self.upstream.read_timeout),
                send_timeout: flags.send_timeout.or(self.upstream.send_timeout),
                keep_conn: flags.keep_conn.or(self.upstream.keep_conn),
                queue_timeout: flags.queue_timeout.or(self.upstream.queue_timeout),
                resolver: if flags.resolver.is_empty() {
                    self.upstream.resolver
                } else {
                    Some(flags.resolver.clone())
                },
                resolve_interval: flags.resolve_interval.or(self.upstream.resolve_interval),
                resolver_timeout: flags.resolver_timeout.or(self.upstream.resolver_timeout),
            },
        }
    }
}

/// `listen = "ADDR"` or `listen = ["ADDR tls", "ADDR"]`.
fn one_or_many<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an address such as \"127.0.0.1:8080\", or a list of them")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(vec![text.to_owned()]))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = seq.next_element::<String>()? {
                entries.push(entry);
            }
            Ok(Some(entries))
        }
    }
    deserializer.deserialize_any(OneOrMany)
}

fn humantime_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    struct DurationVisitor;
    impl serde::de::Visitor<'_> for DurationVisitor {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration string such as \"30s\", \"500ms\" or \"1h\"")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            humantime::parse_duration(text)
                .map(Some)
                .map_err(|error| E::custom(format!("invalid duration `{text}`: {error}")))
        }
    }
    deserializer.deserialize_str(DurationVisitor)
}

/// The `[compression]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    /// `compression.static`
    #[serde(rename = "static")]
    pub static_files: Option<bool>,
    /// `compression.scripts`
    pub scripts: Option<bool>,
    /// `compression.encodings`
    pub encodings: Option<Vec<String>>,
    /// `compression.min_length`
    pub min_length: Option<ByteSize>,
    /// `compression.types`
    pub types: Option<Vec<String>>,
    /// `compression.precompressed`
    pub precompressed: Option<bool>,
    /// `compression.gzip_level`
    pub gzip_level: Option<i64>,
    /// `compression.brotli_level`
    pub brotli_level: Option<i64>,
    /// `compression.zstd_level`
    pub zstd_level: Option<i64>,
}
