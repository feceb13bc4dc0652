//! Configuration as a pipeline: TOML file -> [`RawConfig`] -> command-line flags laid over it
//! ([`RawConfig::merge_flags`]) -> [`RawConfig::validate`] -> [`Config`].
//!
//! Which value wins: a flag, else the file, else the default. Raw structs keep every field an
//! `Option` so "not set" survives until validation fills in defaults, checks ranges and names the
//! offending key in the error. The rest of the gateway only ever sees the validated types here.
//! The reasons behind each default are in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fcgi::client::{ConfiguredCap, PoolConfig};
use fcgi::net::Address;

use crate::access_log::{AccessLogFormat, AccessLogTarget};
use crate::cli::Cli;
use crate::compression::Coding;
use crate::listen_spec::ListenSpec;
use crate::privileges::RunAs;
use crate::real_client::{RealIpHeader, TrustedProxies};
use crate::request_guard::HeadLimits;
use crate::rules::RuleSet;
use crate::script_cache::ScriptCache;

mod locate;
pub use locate::Place;
mod raw;
mod rules;
mod sites;
mod validate;

pub use raw::{parse_file_text, RawAcme, RawCertificate, RawConfig, RawTls, RawUpstream};
pub use rules::DEFAULT_RULES;
pub use sites::{NamedSite, ServerName, Sites, UnknownHosts};
pub use validate::DNS_PORT;

/// The validated configuration of one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where client connections are accepted (at least one), and what each listener speaks.
    pub listen: Vec<ListenSpec>,
    /// Certificates for the `tls` listeners, the redirect to HTTPS and HSTS.
    pub tls: TlsSettings,
    /// Whose forwarding headers name the real client (`trusted_proxies`, `real_ip_header`).
    pub real_client: RealClientSettings,
    /// Certificates obtained and renewed automatically (`[acme]`); `None`: off.
    pub acme: Option<AcmeSettings>,
    /// What is compressed, with which codings, from what size (`[compression]`).
    pub compression: CompressionSettings,
    /// The default site: how requests map to FastCGI (PHP mode or app mode) and what params
    /// they carry.
    pub site: SiteConfig,
    /// `[[site]]`s with their `server_names`, and what other hosts get.
    pub sites: Sites,
    /// Limits on what clients send and on how much is buffered in memory.
    pub limits: ClientLimits,
    /// The FastCGI backends and their pool settings.
    pub upstream: UpstreamConfig,
    /// `[upstreams.NAME]`: more groups of backends, which sites and rules send scripts to.
    pub upstream_groups: BTreeMap<String, UpstreamConfig>,
    /// On SIGTERM, how long in-flight requests may take to finish.
    pub shutdown_timeout: Duration,
    /// Client connections open at once; more wait in the listen backlog.
    pub max_client_connections: usize,
    /// Where `/metrics`, `/status` and `/status.json` are served; `None`: nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// Where the access log goes.
    pub access_log: AccessLogTarget,
    /// What its lines look like.
    pub access_log_format: AccessLogFormat,
    /// What the diagnostics log on stderr looks like; `main.rs` reads it early with
    /// [`log_format`], since tracing is set up before the rest of the file is validated.
    pub log_format: LogFormat,
    /// Threads that run requests (`workers`); `None`: one per CPU core. `main.rs` reads it
    /// early with [`workers`], since the runtime is built before the rest of the file is
    /// validated.
    pub workers: Option<usize>,
    /// The account to switch to after binding (`user`, `group`), resolved at load time.
    pub run_as: Option<RunAs>,
}

impl Config {
    /// The site for a request naming `host` (no port); `None`: 421 (`unknown_hosts`).
    pub fn site_for(&self, host: Option<&[u8]>) -> Option<&SiteConfig> {
        self.sites.select(&self.site, host)
    }

    /// Whether any site has `error_pages` (then requests keep their headers for them).
    pub fn has_error_pages(&self) -> bool {
        !self.site.error_pages.is_empty()
            || self
                .sites
                .named
                .iter()
                .any(|named| !named.site.error_pages.is_empty())
    }

    /// Whether any listener speaks TLS.
    pub fn serves_https(&self) -> bool {
        self.listen.iter().any(|listener| listener.tls)
    }
}

/// `[compression]`: gzip, brotli and zstd for static files (on) and script responses (off:
/// BREACH), by type and size, and precompressed files (`compression.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionSettings {
    /// `static`: compress static files, and serve their precompressed variants.
    pub static_files: bool,
    /// `scripts`: compress FastCGI responses.
    pub scripts: bool,
    /// `encodings`: the codings used, the server's preference first (it breaks q-value ties).
    pub encodings: Vec<Coding>,
    /// `min_length`: smaller bodies (when their length is known) are sent as they are.
    pub min_length: u64,
    /// `types`: media types compressed, lowercase `type/subtype` or `type/*`.
    pub types: Vec<String>,
    /// `precompressed`: serve `x.zst`, `x.br`, `x.gz` beside a static `x` when present.
    pub precompressed: bool,
    /// `gzip_level` (1–9).
    pub gzip_level: u8,
    /// `brotli_level` (0–11).
    pub brotli_level: u8,
    /// `zstd_level` (1–19).
    pub zstd_level: u8,
}

/// `trusted_proxies` and `real_ip_header`: behind a load balancer, the client PHP sees (and the
/// access log shows) is the one the balancer's header names (`real_client.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RealClientSettings {
    /// Peers whose header is believed; empty: nobody's.
    pub trusted: TrustedProxies,
    /// Which header they write.
    pub header: RealIpHeader,
}

/// `[acme]`: one certificate for `domains`, obtained from an ACME CA (RFC 8555) and renewed
/// before it expires (`acme.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The names the certificate is for (its first is the subject); no wildcards.
    pub domains: Vec<String>,
    /// `mailto:` addresses the CA may write to about the account (expiry notices).
    pub contact: Vec<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// A PEM CA certificate the directory's HTTPS is checked against instead of the system's
    /// roots (a private CA, or Pebble in tests).
    pub directory_ca: Option<PathBuf>,
    /// Where the account key and the certificate are kept across restarts.
    pub storage: PathBuf,
    /// The challenges fcgate offers to answer, in order of preference.
    pub challenges: Vec<AcmeChallenge>,
}

/// A challenge type fcgate answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A self-signed certificate presented on a `tls` listener (RFC 8737).
    TlsAlpn01,
    /// A token served at `/.well-known/acme-challenge/` on a plain listener (port 80).
    Http01,
}

impl AcmeChallenge {
    /// The name the configuration and the ACME server use.
    pub fn name(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

/// `[tls]`: the certificates the `tls` listeners present, and what plain HTTP does when HTTPS
/// is available.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// Certificate chains and keys; the one presented is chosen by the name the client asks for
    /// (SNI), the first when no name matches.
    pub certificates: Vec<CertificateFiles>,
    /// Plain-HTTP requests get a 308 redirect to the same URL over HTTPS.
    pub redirect_to_https: bool,
    /// The `Strict-Transport-Security` value sent on HTTPS responses, e.g. `max-age=31536000`.
    pub hsts: Option<http::HeaderValue>,
    /// The oldest TLS version accepted.
    pub min_version: TlsVersion,
}

/// One `tls.certificates` entry: PEM files as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The certificate chain, the site's own certificate first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// `tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3, as nginx's and Mozilla's "intermediate" default.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// The diagnostics log's format (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// tracing's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The setting's spelling, `"text"` or `"json"`; `None` for anything else.
    pub fn from_setting(text: &str) -> Option<LogFormat> {
        match text {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// PHP mode serves files from a document root; app mode sends every request to FastCGI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteMode {
    /// `root` is set: static files, scripts by extension, a front controller.
    Php(PhpSite),
    /// No `root`: the FastCGI application receives every request.
    App,
}

/// Site-wide request handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// PHP mode or app mode.
    pub mode: SiteMode,
    /// Pass request headers whose names contain `_` (dropped by default: `X_User` and `X-User`
    /// both become `HTTP_X_USER`, so a client could forge a header a proxy in front has set).
    pub underscores_in_headers: bool,
    /// Fixed FastCGI params sent after the standard ones; a name here replaces the standard one.
    pub extra_params: Vec<(String, String)>,
    /// `[[rule]]`, the built-in ones first (PHP mode, unless `default_rules = false`).
    pub rules: RuleSet,
    /// `error_pages`: status → the path (and query) of the page fcgate serves or runs instead
    /// of its own short answer with that status.
    pub error_pages: BTreeMap<u16, String>,
    /// The `[upstreams.NAME]` its scripts go to; `None`: `[upstream]`.
    pub upstream: Option<String>,
}

/// The document root and script conventions of PHP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhpSite {
    /// Canonical path of an existing directory; shared, as every script request's
    /// DOCUMENT_ROOT.
    pub root: Arc<Path>,
    /// Directory index and front controller file name, e.g. `index.php`.
    pub index: String,
    /// Extensions (lowercase, without the dot) of files run as scripts, never served.
    pub script_extensions: Vec<String>,
    /// Send requests for missing files to `/<index>`.
    pub front_controller: bool,
    /// What `dir/` answers when the directory has no index file.
    pub directory_without_index: DirectoryWithoutIndex,
    /// Which symlinks below the root are followed.
    pub follow_symlinks: FollowSymlinks,
    /// The scripts the router found, trusted for `script_lookup_cache`; shared by the clones
    /// of one loaded configuration, new with each reload.
    pub script_cache: Arc<ScriptCache>,
}

/// `follow_symlinks`: which symbolic links on the way to a file or script are followed (nginx's
/// `disable_symlinks`). A link that is not followed makes the path a 404, whatever lies beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FollowSymlinks {
    /// Links whose target stays inside the root: an app may link within its own tree, but a
    /// link cannot publish `/etc` (no nginx equivalent; nginx's `from=$document_root` is close).
    #[default]
    WithinRoot,
    /// No link at all (`disable_symlinks on`).
    Never,
    /// Links owned by the owner of what they point to, wherever that is (`disable_symlinks
    /// if_not_owner`): what Debian's packaged apps need, whose root links into /var/lib and
    /// /etc, while a link a web user planted to someone else's file is refused.
    Owner,
    /// Every link, wherever it leads (`disable_symlinks off`, nginx's default).
    Always,
}

impl FollowSymlinks {
    /// The setting's spelling; `None` for anything else.
    pub fn from_setting(text: &str) -> Option<FollowSymlinks> {
        match text {
            "within_root" => Some(FollowSymlinks::WithinRoot),
            "never" => Some(FollowSymlinks::Never),
            "owner" => Some(FollowSymlinks::Owner),
            "always" => Some(FollowSymlinks::Always),
            _ => None,
        }
    }

    /// How the configuration spells it.
    pub fn as_setting(self) -> &'static str {
        match self {
            FollowSymlinks::WithinRoot => "within_root",
            FollowSymlinks::Never => "never",
            FollowSymlinks::Owner => "owner",
            FollowSymlinks::Always => "always",
        }
    }
}

/// `directory_without_index`: the answer to `dir/` when `dir` exists but holds no index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectoryWithoutIndex {
    /// 403, as nginx answers when `index` finds nothing and `autoindex` is off: the folder
    /// exists, and neither its listing nor the front controller stands in for it.
    #[default]
    Forbidden,
    /// Handled as a path that matches nothing: the front controller, or 404 without one.
    FrontController,
}

impl DirectoryWithoutIndex {
    /// The setting's spelling, `"forbidden"` or `"front_controller"`; `None` for anything else.
    pub fn from_setting(text: &str) -> Option<DirectoryWithoutIndex> {
        match text {
            "forbidden" => Some(DirectoryWithoutIndex::Forbidden),
            "front_controller" => Some(DirectoryWithoutIndex::FrontController),
            _ => None,
        }
    }
}

impl PhpSite {
    /// Whether a file with this name is a script. Case-insensitive, so `INFO.PHP` can never be
    /// served as static source text.
    pub fn is_script_name(&self, file_name: &str) -> bool {
        match file_name.rsplit_once('.') {
            Some((_, extension)) => self
                .script_extensions
                .iter()
                .any(|script| script.eq_ignore_ascii_case(extension)),
            None => false,
        }
    }
}

/// What clients may send and how much of a body stays in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Request bodies above this get 413; `u64::MAX` when configured as 0 (unlimited).
    pub client_max_body_size: u64,
    /// Request body bytes kept in memory before spooling to a temp file.
    pub client_body_buffer_size: usize,
    /// Response body bytes kept in memory before spooling to a temp file.
    pub response_buffer_size: usize,
    /// Response bytes held for a slow client, memory and temp file together, before the
    /// request is aborted; `u64::MAX` when configured as 0 (unlimited).
    pub max_response_buffer: u64,
    /// Time allowed to receive the request headers.
    pub client_header_timeout: Duration,
    /// Request-body bytes held at once over all requests (memory and temp files) before new
    /// bodies get a 503; `u64::MAX` when configured as 0 (unlimited).
    pub max_request_body_buffer_total: u64,
    /// Longest pause between two reads of the request body before a 408.
    pub client_body_timeout: Duration,
    /// Longest time a write to the client may make no progress before the connection is closed.
    pub send_timeout: Duration,
    /// How long the request target and header fields may be.
    pub head: HeadLimits,
    /// What HTTP/2 clients may have in flight.
    pub http2: Http2Limits,
}

/// The HTTP/2 settings fcgate announces (RFC 9113 §6.5.2), the same over TLS and cleartext. The
/// header list size is not here: it follows `max_request_head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: requests one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: request body bytes a stream may send before fcgate reads.
    pub stream_window: u32,
    /// The connection's flow-control window: body bytes of all its streams together.
    pub connection_window: u32,
}

/// The FastCGI backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The FastCGI servers; empty only when the caller runs the built-in demo app.
    pub servers: Vec<UpstreamServer>,
    /// Pool settings applied to every server.
    pub pool: PoolConfig,
    /// When a server counts as down and how it is found up again.
    pub health: HealthConfig,
    /// Retry a non-idempotent request (POST) whose reused connection died before any answer.
    pub retry_non_idempotent: bool,
    /// `keepalive_requests` was given explicitly (php-fpm's `pm.max_requests` does not apply).
    pub keepalive_requests_set: bool,
    /// How servers written as host names are resolved, and how often again.
    pub resolution: ResolutionConfig,
}

/// `upstream.resolver` and `upstream.resolve_interval`: the name servers asked for servers
/// written as host names, and how often they are asked again (`upstream/discovery.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolutionConfig {
    /// The name servers; empty: those of /etc/resolv.conf (and /etc/hosts first).
    pub name_servers: Vec<SocketAddr>,
    /// Re-resolve this often; `None`: when the answer's TTL runs out, within
    /// [`crate::upstream::discovery::TTL_FLOOR`] and [`crate::upstream::discovery::TTL_CEILING`].
    pub resolve_interval: Option<Duration>,
    /// `upstream.resolver_timeout`: the longest one name's lookup may take, every name server
    /// and retry included.
    pub timeout: Duration,
}

impl Default for ResolutionConfig {
    fn default() -> Self {
        ResolutionConfig {
            name_servers: Vec::new(),
            resolve_interval: None,
            // resolv.conf's default `timeout:5`; nginx's resolver_timeout is 30s, but a name
            // server that has not answered in 5 s is not going to, and start waits for it.
            timeout: Duration::from_secs(5),
        }
    }
}

/// One FastCGI server and its part in balancing, written `ADDR [weight=N] [backup]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// Where it listens.
    pub address: Address,
    /// Its share of requests relative to the others (nginx's `weight=`), at least 1.
    pub weight: u32,
    /// Used only while every primary server is down (nginx's `backup`).
    pub backup: bool,
    /// A cap read from php-fpm's config (`php_fpm_config`), used when `max_conns` is unset.
    pub php_fpm_cap: Option<ConfiguredCap>,
    /// php-fpm's `pm.max_requests` for this server, used as `keepalive_requests` when that is
    /// unset: a connection is then retired exactly when its worker exits.
    pub php_fpm_max_requests: Option<u64>,
}

impl UpstreamServer {
    /// A primary server of weight 1.
    pub fn new(address: Address) -> UpstreamServer {
        UpstreamServer {
            address,
            weight: 1,
            backup: false,
            php_fpm_cap: None,
            php_fpm_max_requests: None,
        }
    }
}

/// Passive and active health checking of upstream servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Connect or protocol failures within `fail_timeout` that mark a server down.
    pub max_fails: u32,
    /// The window for counting failures, and how long a server then stays down.
    pub fail_timeout: Duration,
    /// How often each server is probed with FCGI_GET_VALUES when there are several; zero: never.
    pub health_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(5),
        }
    }
}

impl UpstreamConfig {
    /// The pool settings of server `index`, with what php-fpm's config says about it.
    pub fn pool_config_for(&self, index: usize) -> PoolConfig {
        let mut pool = self.pool.clone();
        let Some(server) = self.servers.get(index) else {
            return pool;
        };
        if pool.max_conns.is_none() {
            pool.max_conns = server.php_fpm_cap.clone();
        }
        if !self.keepalive_requests_set {
            if let Some(max_requests) = server.php_fpm_max_requests {
                pool.keepalive_requests = max_requests;
            }
        }
        pool
    }
}

/// Why the configuration was refused. Every variant names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The cause is part of the message and deliberately not a `source()`: printed as a chain
    // (`{:#}`), it would appear twice ("No such file or directory (os error 2): No such file…").
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key; toml's text names the key and line.
    #[error("{}{}{}", in_file(path.as_deref()), in_plain_words(error), did_you_mean(error))]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// toml's error, with line, column and the offending line.
        error: toml::de::Error,
    },
    /// A value of the file has the right type but is not acceptable: [`ConfigError::Invalid`]
    /// placed where the file says it, as toml places its parse errors.
    #[error("in {}: line {}, column {}\n{}{key}: {message}", path.display(), place.line, place.column, place.excerpt)]
    Located {
        /// The file.
        path: PathBuf,
        /// Where the value is, with the line and a caret under it.
        place: Place,
        /// Dotted key path, e.g. `upstream.max_conns`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key path, e.g. `upstream.max_conns`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// toml's text with Rust's type names said as a person would: `expected usize` means nothing
/// to someone who wrote `max_conns = "4"`.
fn in_plain_words(error: &toml::de::Error) -> String {
    let text = error.to_string();
    [
        ("expected usize", "expected a whole number, without quotes"),
        ("expected u64", "expected a whole number, without quotes"),
        ("expected u32", "expected a whole number, without quotes"),
        ("expected u16", "expected a whole number, without quotes"),
        ("expected i64", "expected a whole number, without quotes"),
        (
            "expected a boolean",
            "expected true or false, without quotes",
        ),
        (
            "expected struct RawUpstream",
            "expected a table: each [upstreams.NAME] is a group of servers with its pool \
             settings, as [upstream] is",
        ),
    ]
    .iter()
    .fold(text, |text, (rust, plain)| text.replace(rust, plain))
}

/// For an unknown key, the valid one it most likely misspells: serde's message lists them all
/// ("unknown field `max_conn`, expected one of `servers`, `max_conns`, …") but leaves the
/// reader to find the right one.
fn did_you_mean(error: &toml::de::Error) -> String {
    let message = error.message();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return String::new();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return String::new();
    };
    let closest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .min();
    match closest {
        Some((distance, candidate)) if distance <= unknown.len().div_ceil(3).max(2) => {
            format!("did you mean `{candidate}`?\n")
        }
        _ => String::new(),
    }
}

/// Levenshtein distance over bytes: config keys are ASCII.
fn edit_distance(one: &str, other: &str) -> usize {
    let other = other.as_bytes();
    let mut previous: Vec<usize> = (0..=other.len()).collect();
    for (row, &byte) in one.as_bytes().iter().enumerate() {
        let mut current = vec![row + 1];
        for (column, &other_byte) in other.iter().enumerate() {
            let substitution = previous[column] + usize::from(byte != other_byte);
            let deletion = previous[column + 1] + 1;
            let insertion = current[column] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[other.len()]
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|path| format!("in {}: ", path.display()))
        .unwrap_or_default()
}

impl ConfigError {
    /// The same error, its `upstream.` key placed in `[upstreams.NAME]`.
    pub(crate) fn in_group(self, name: &str) -> Self {
        match self {
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key: match key.strip_prefix("upstream.") {
                    Some(rest) => format!("upstreams.{name}.{rest}"),
                    None => format!("upstreams.{name}: {key}"),
                },
                message,
            },
            other => other,
        }
    }

    /// The same error, its key placed in `[[site]]` number `number` (1-based).
    pub(crate) fn in_site(self, number: usize) -> Self {
        match self {
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key: format!("site {number}: {key}"),
                message,
            },
            other => other,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Fails naming `upstream.servers` when no backend is configured. `check` and a gateway that
    /// is not going to run the demo app call this; [`load`] alone accepts an empty list.
    pub fn require_servers(&self) -> Result<(), ConfigError> {
        if self.upstream.servers.is_empty() {
            return Err(ConfigError::invalid(
                "upstream.servers",
                "no FastCGI server configured (set upstream.servers or pass --upstream ADDR)",
            ));
        }
        Ok(())
    }
}

/// Reads the file named by `--config` (if any), lays the flags over it and validates. A value
/// the file holds that validation refuses is named with its line and column.
pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let Some(path) = cli.config_file() else {
        return RawConfig::default().merge_flags(&cli.settings).validate();
    };
    let text = read_text(path)?;
    let from_file = parse_in_file(path, &text)?;
    match from_file.clone().merge_flags(&cli.settings).validate() {
        Err(ConfigError::Invalid { key, message }) => {
            // The file is to blame only when it fails the same way without the flags: a bad
            // value given as a flag must not be shown on a line of the file.
            let file_alone = from_file.validate().err();
            let same = matches!(&file_alone, Some(ConfigError::Invalid { key: k, message: m })
                if *k == key && *m == message);
            let place = same.then(|| locate::place_of(&text, &key)).flatten();
            Err(match place {
                Some(place) => ConfigError::Located {
                    path: path.to_owned(),
                    place,
                    key,
                    message,
                },
                None => ConfigError::Invalid { key, message },
            })
        }
        other => other,
    }
}

/// The diagnostics log format, for `main.rs` to set up tracing before [`load`] runs: the
/// `--log-format` flag, else the file's `log_format`, else text. Reads only that one value and
/// reports nothing: a missing file or a bad value falls back to text, and [`load`] reports it
/// (once) right after.
pub fn log_format(cli: &Cli) -> LogFormat {
    let from_file = || {
        early_file_value(cli, "log_format")?
            .as_str()
            .map(str::to_owned)
    };
    cli.settings
        .log_format
        .clone()
        .or_else(from_file)
        .and_then(|text| LogFormat::from_setting(&text))
        .unwrap_or_default()
}

/// The `workers` setting, for `main.rs` to size the runtime before [`load`] runs. Like
/// [`log_format`] it reports nothing: a missing file or a bad value gives the default (one
/// thread per core), and [`load`] reports the bad value right after.
pub fn workers(cli: &Cli) -> Option<usize> {
    let workers = early_file_value(cli, "workers")?.as_integer()?;
    usize::try_from(workers).ok().filter(|&workers| workers > 0)
}

/// One top-level value of the config file, read before [`load`] for what must be set up
/// first; `None` for no file, a file that does not parse, or no such key.
fn early_file_value(cli: &Cli, key: &str) -> Option<toml::Value> {
    let text = std::fs::read_to_string(cli.config_file()?).ok()?;
    let mut table: toml::Table = toml::from_str(&text).ok()?;
    table.remove(key)
}

/// `fcgate check`: [`load`] plus [`Config::require_servers`].
pub fn check(cli: &Cli) -> Result<Config, ConfigError> {
    let config = load(cli)?;
    config.require_servers()?;
    Ok(config)
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })
}

fn parse_in_file(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    parse_file_text(text).map_err(|parse_error| match parse_error {
        ConfigError::Parse { error, .. } => ConfigError::Parse {
            path: Some(path.to_owned()),
            error,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests;
