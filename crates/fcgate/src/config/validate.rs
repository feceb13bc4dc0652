//! Turns a [`RawConfig`] into a [`Config`]: fills in defaults, checks ranges and relations
//! between settings, canonicalizes the document root, parses backend addresses. Every error
//! names the key it is about (`upstream.max_conns: must be at least 1`), whether the value came
//! from the file or from a flag.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fcgi::client::{ConfiguredCap, Multiplexing, PoolConfig};
use fcgi::net::Address;

use super::raw::{RawAcme, RawCompression, RawConfig, RawSite, RawTls, RawUpstream};
use super::sites::{validate_server_names, validate_site, NamedSite, Sites, UnknownHosts};
use super::{
    AcmeChallenge, AcmeSettings, CertificateFiles, ClientLimits, CompressionSettings, Config,
    ConfigError, HealthConfig, Http2Limits, LogFormat, PhpSite, RealClientSettings,
    ResolutionConfig, TlsSettings, TlsVersion, UpstreamConfig, UpstreamServer,
};
use crate::access_log::{AccessLogFormat, AccessLogTarget};
use crate::compression::Coding;
use crate::listen_spec::ListenSpec;
use crate::php_fpm_config::FpmLimits;
use crate::privileges::RunAs;
use crate::real_client::{RealIpHeader, TrustedProxies};
use crate::request_guard::HeadLimits;
use crate::size::ByteSize;

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
const DEFAULT_INDEX: &str = "index.php";
const DEFAULT_SCRIPT_EXTENSION: &str = "php";
/// PHP's own `post_max_size` default is 8M: a larger body would be dropped by PHP anyway.
const DEFAULT_CLIENT_MAX_BODY_SIZE: u64 = 8 << 20;
const DEFAULT_CLIENT_BODY_BUFFER_SIZE: u64 = 64 << 10;
const DEFAULT_RESPONSE_BUFFER_SIZE: u64 = 256 << 10;
/// nginx's `fastcgi_max_temp_file_size` default.
const DEFAULT_MAX_RESPONSE_BUFFER: u64 = 1 << 30;
/// nginx's `large_client_header_buffers 4 8k`: a request line or one header field longer than a
/// buffer gets 414 or 431, and the head may fill four of them.
const DEFAULT_MAX_REQUEST_TARGET: u64 = 8 << 10;
const DEFAULT_MAX_HEADER_LINE: u64 = 8 << 10;
const DEFAULT_MAX_REQUEST_HEAD: u64 = 32 << 10;
const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// 128 bodies of the default `client_max_body_size` at once.
const DEFAULT_MAX_REQUEST_BODY_BUFFER_TOTAL: u64 = 1 << 30;
/// nginx's defaults.
const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl RawConfig {
    /// Applies defaults and checks every value; the error names the first bad key.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let upstream = validate_upstream(&self.upstream)?;
        let upstream_groups = validate_upstream_groups(&self.upstreams, &upstream)?;
        let group_names: BTreeSet<String> = upstream_groups.keys().cloned().collect();
        let underscores_in_headers = self.underscores_in_headers.unwrap_or(false);
        let extra_params = validate_params(self.params.unwrap_or_default())?;
        let site = validate_site(
            RawSite {
                server_names: None,
                root: self.root,
                index: self.index,
                script_extensions: self.script_extensions,
                front_controller: self.front_controller,
                directory_without_index: self.directory_without_index,
                follow_symlinks: self.follow_symlinks,
                script_lookup_cache: self.script_lookup_cache,
                default_rules: self.default_rules,
                rules: self.rules,
                error_pages: self.error_pages,
                upstream: None,
            },
            underscores_in_headers,
            extra_params.clone(),
            &group_names,
        )?;
        let mut seen_names = BTreeSet::new();
        let mut named = Vec::new();
        for (index, mut raw) in self.sites.into_iter().enumerate() {
            let number = index + 1;
            let server_names = validate_server_names(raw.server_names.take(), &mut seen_names)
                .map_err(|error| error.in_site(number))?;
            let site = validate_site(
                raw,
                underscores_in_headers,
                extra_params.clone(),
                &group_names,
            )
            .map_err(|error| error.in_site(number))?;
            named.push(NamedSite { server_names, site });
        }
        let unknown_hosts = match self.unknown_hosts.as_deref() {
            None | Some("default_site") => UnknownHosts::DefaultSite,
            Some("reject") => UnknownHosts::Reject,
            Some(text) => {
                return Err(ConfigError::invalid(
                    "unknown_hosts",
                    format!("`{text}` is not \"default_site\" or \"reject\""),
                ))
            }
        };
        let sites = Sites {
            named,
            unknown_hosts,
        };
        let limits = ClientLimits {
            client_max_body_size: match self.client_max_body_size {
                // nginx's convention: 0 switches the check off.
                Some(ByteSize(0)) => u64::MAX,
                Some(ByteSize(bytes)) => bytes,
                None => DEFAULT_CLIENT_MAX_BODY_SIZE,
            },
            client_body_buffer_size: memory_size(
                "client_body_buffer_size",
                self.client_body_buffer_size,
                DEFAULT_CLIENT_BODY_BUFFER_SIZE,
            )?,
            response_buffer_size: memory_size(
                "response_buffer_size",
                self.response_buffer_size,
                DEFAULT_RESPONSE_BUFFER_SIZE,
            )?,
            max_response_buffer: match self.max_response_buffer {
                Some(ByteSize(0)) => u64::MAX,
                Some(ByteSize(bytes)) => bytes,
                None => DEFAULT_MAX_RESPONSE_BUFFER,
            },
            client_header_timeout: positive(
                "client_header_timeout",
                self.client_header_timeout,
                DEFAULT_CLIENT_HEADER_TIMEOUT,
            )?,
            max_request_body_buffer_total: match self.max_request_body_buffer_total {
                Some(ByteSize(0)) => u64::MAX,
                Some(ByteSize(bytes)) => bytes,
                None => DEFAULT_MAX_REQUEST_BODY_BUFFER_TOTAL,
            },
            client_body_timeout: positive(
                "client_body_timeout",
                self.client_body_timeout,
                DEFAULT_CLIENT_BODY_TIMEOUT,
            )?,
            send_timeout: positive("send_timeout", self.send_timeout, DEFAULT_SEND_TIMEOUT)?,
            head: validate_head_limits(
                self.max_request_target,
                self.max_header_line,
                self.max_request_head,
                self.allow_trace.unwrap_or(false),
            )?,
            http2: validate_http2(
                self.http2_max_concurrent_streams,
                self.http2_stream_window,
                self.http2_connection_window,
            )?,
        };
        let listen = validate_listen(self.listen)?;
        let acme = match self.acme {
            Some(raw) => Some(validate_acme(raw, &listen)?),
            None => None,
        };
        let tls = validate_tls(self.tls, &listen, acme.is_some())?;
        let real_client =
            validate_real_client(self.trusted_proxies, self.real_ip_header.as_deref())?;
        Ok(Config {
            listen,
            tls,
            real_client,
            acme,
            compression: validate_compression(self.compression)?,
            site,
            sites,
            limits,
            upstream,
            upstream_groups,
            shutdown_timeout: self.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            admin_listen: self.admin_listen,
            access_log: match self.access_log.as_deref() {
                None | Some("stdout") => AccessLogTarget::Stdout,
                Some("off") => AccessLogTarget::Off,
                Some("") => {
                    return Err(ConfigError::invalid(
                        "access_log",
                        "must be \"stdout\", \"off\" or a file path",
                    ))
                }
                Some(path) => AccessLogTarget::File(PathBuf::from(path)),
            },
            access_log_format: match self.access_log_format.as_deref() {
                None | Some("combined") => AccessLogFormat::Combined,
                Some("json") => AccessLogFormat::Json,
                Some(other) => {
                    return Err(ConfigError::invalid(
                        "access_log_format",
                        format!("`{other}` is not \"combined\" or \"json\""),
                    ))
                }
            },
            log_format: match self.log_format.as_deref() {
                None => LogFormat::Text,
                Some(text) => LogFormat::from_setting(text).ok_or_else(|| {
                    ConfigError::invalid(
                        "log_format",
                        format!("`{text}` is not \"text\" or \"json\""),
                    )
                })?,
            },
            workers: match self.workers {
                Some(0) => return Err(ConfigError::invalid("workers", "must be at least 1")),
                workers => workers,
            },
            run_as: RunAs::look_up(self.user.as_deref(), self.group.as_deref())?,
            max_client_connections: match self.max_client_connections {
                Some(0) => {
                    return Err(ConfigError::invalid(
                        "max_client_connections",
                        "must be at least 1",
                    ))
                }
                Some(limit) => limit,
                None => default_max_client_connections(open_files_limit()),
            },
        })
    }
}

/// nginx's `http2_max_concurrent_streams` default.
const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// hyper's defaults, which let a 1 MiB upload go in one round trip; a connection never holds
/// more than its window of unread body, whatever the number of streams.
const DEFAULT_HTTP2_STREAM_WINDOW: u32 = 1 << 20;
const DEFAULT_HTTP2_CONNECTION_WINDOW: u32 = 1 << 20;
/// RFC 9113 §6.9.1: windows are at least the initial 65,535 and at most 2^31 - 1.
const HTTP2_WINDOW_RANGE: std::ops::RangeInclusive<u64> = 65_535..=(1 << 31) - 1;

fn validate_http2(
    max_concurrent_streams: Option<u32>,
    stream_window: Option<ByteSize>,
    connection_window: Option<ByteSize>,
) -> Result<Http2Limits, ConfigError> {
    let max_concurrent_streams =
        max_concurrent_streams.unwrap_or(DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS);
    if max_concurrent_streams == 0 {
        return Err(ConfigError::invalid(
            "http2_max_concurrent_streams",
            "must be at least 1",
        ));
    }
    let window = |key: &str, value: Option<ByteSize>, default: u32| match value {
        None => Ok(default),
        Some(ByteSize(bytes)) if HTTP2_WINDOW_RANGE.contains(&bytes) => {
            Ok(u32::try_from(bytes).unwrap_or(default))
        }
        Some(_) => Err(ConfigError::invalid(
            key,
            "must be between 65535 bytes and 2GiB - 1 (RFC 9113 §6.9.1)",
        )),
    };
    Ok(Http2Limits {
        max_concurrent_streams,
        stream_window: window(
            "http2_stream_window",
            stream_window,
            DEFAULT_HTTP2_STREAM_WINDOW,
        )?,
        connection_window: window(
            "http2_connection_window",
            connection_window,
            DEFAULT_HTTP2_CONNECTION_WINDOW,
        )?,
    })
}

fn validate_listen(raw: Option<Vec<String>>) -> Result<Vec<ListenSpec>, ConfigError> {
    let Some(entries) = raw else {
        return Ok(vec![ListenSpec::plain(DEFAULT_LISTEN)]);
    };
    if entries.is_empty() {
        return Err(ConfigError::invalid(
            "listen",
            "must list at least one address, e.g. \"127.0.0.1:8080\"",
        ));
    }
    let mut listeners: Vec<ListenSpec> = Vec::with_capacity(entries.len());
    for entry in &entries {
        let spec: ListenSpec = entry
            .parse()
            .map_err(|message| ConfigError::invalid("listen", format!("`{entry}`: {message}")))?;
        // Port 0 (any free port, for tests) can appear twice; a fixed address cannot be bound twice.
        let taken = listeners
            .iter()
            .any(|other| other.address == spec.address && spec.address.port() != 0);
        if taken {
            return Err(ConfigError::invalid(
                "listen",
                format!("{} is listed twice", spec.address),
            ));
        }
        listeners.push(spec);
    }
    Ok(listeners)
}

fn validate_real_client(
    trusted: Option<Vec<String>>,
    header: Option<&str>,
) -> Result<RealClientSettings, ConfigError> {
    let trusted = TrustedProxies::parse(&trusted.unwrap_or_default()).map_err(|error| {
        ConfigError::invalid(
            "trusted_proxies",
            format!(
                "`{}` is neither an IP address nor a CIDR block such as \"10.0.0.0/8\"",
                error.entry
            ),
        )
    })?;
    let header = match header {
        None => RealIpHeader::default(),
        Some(text) => {
            if trusted.is_empty() {
                return Err(ConfigError::invalid(
                    "real_ip_header",
                    "has no effect without trusted_proxies (the peers whose header is believed)",
                ));
            }
            RealIpHeader::from_setting(text).ok_or_else(|| {
                ConfigError::invalid(
                    "real_ip_header",
                    format!("`{text}` is not \"X-Forwarded-For\" or \"Forwarded\""),
                )
            })?
        }
    };
    Ok(RealClientSettings { trusted, header })
}

/// Let's Encrypt's production directory.
const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Where Debian packages keep state (`StateDirectory=fcgate` in the packaged unit).
const DEFAULT_ACME_STORAGE: &str = "/var/lib/fcgate/acme";

fn validate_acme(raw: RawAcme, listen: &[ListenSpec]) -> Result<AcmeSettings, ConfigError> {
    let tls_listener = listen.iter().any(|listener| listener.tls);
    let plain_listener = listen.iter().any(|listener| !listener.tls);
    if !tls_listener {
        return Err(ConfigError::invalid(
            "acme",
            "certificates are for a `listen` entry marked `tls`, and there is none",
        ));
    }
    let domains = raw.domains.unwrap_or_default();
    if domains.is_empty() {
        return Err(ConfigError::invalid(
            "acme.domains",
            "must list the names the certificate is for, e.g. [\"example.com\", \"www.example.com\"]",
        ));
    }
    let domains = domains
        .into_iter()
        .map(|domain| validate_domain(&domain))
        .collect::<Result<Vec<_>, _>>()?;
    let contact = raw.contact.unwrap_or_default();
    if let Some(bad) = contact
        .iter()
        .find(|contact| !contact.starts_with("mailto:"))
    {
        return Err(ConfigError::invalid(
            "acme.contact",
            format!("`{bad}` is not a mailto: address such as \"mailto:admin@example.com\""),
        ));
    }
    let directory = raw
        .directory
        .unwrap_or_else(|| DEFAULT_ACME_DIRECTORY.to_owned());
    if !directory.starts_with("https://") || directory.parse::<http::Uri>().is_err() {
        return Err(ConfigError::invalid(
            "acme.directory",
            format!("`{directory}` is not an https:// URL"),
        ));
    }
    let offered = match raw.challenges {
        None => {
            let mut offered = vec![AcmeChallenge::TlsAlpn01];
            if plain_listener {
                offered.push(AcmeChallenge::Http01);
            }
            offered
        }
        Some(names) => names
            .iter()
            .map(|name| match name.as_str() {
                "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
                "http-01" if plain_listener => Ok(AcmeChallenge::Http01),
                "http-01" => Err(ConfigError::invalid(
                    "acme.challenges",
                    "http-01 is answered on a plain listener (port 80), and there is none",
                )),
                other => Err(ConfigError::invalid(
                    "acme.challenges",
                    format!(
                        "`{other}` is not \"tls-alpn-01\" or \"http-01\" (dns-01 is not answered)"
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    if offered.is_empty() {
        return Err(ConfigError::invalid(
            "acme.challenges",
            "must list at least one challenge",
        ));
    }
    Ok(AcmeSettings {
        domains,
        contact,
        directory,
        directory_ca: raw.directory_ca,
        storage: raw
            .storage
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ACME_STORAGE)),
        challenges: offered,
    })
}

/// A DNS name a public CA issues for: letters, digits and hyphens in dot-separated labels,
/// lowercased. Wildcards need the DNS-01 challenge, which fcgate does not answer.
fn validate_domain(domain: &str) -> Result<String, ConfigError> {
    let lower = domain.trim_end_matches('.').to_ascii_lowercase();
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    };
    if lower.starts_with("*.") {
        return Err(ConfigError::invalid(
            "acme.domains",
            format!(
                "`{domain}`: a wildcard needs the dns-01 challenge, which fcgate does not answer"
            ),
        ));
    }
    if lower.len() > 253 || !lower.contains('.') || !lower.split('.').all(valid_label) {
        return Err(ConfigError::invalid(
            "acme.domains",
            format!("`{domain}` is not a domain name such as \"example.com\""),
        ));
    }
    Ok(lower)
}

fn validate_tls(
    raw: RawTls,
    listen: &[ListenSpec],
    acme: bool,
) -> Result<TlsSettings, ConfigError> {
    let tls_listener = listen.iter().any(|listener| listener.tls);
    let certificates: Vec<CertificateFiles> = raw
        .certificates
        .unwrap_or_default()
        .into_iter()
        .map(|entry| CertificateFiles {
            cert: entry.cert,
            key: entry.key,
        })
        .collect();
    if tls_listener && certificates.is_empty() && !acme {
        return Err(ConfigError::invalid(
            "tls.certificates",
            "a `listen` entry is marked `tls` but no certificate is configured \
             (certificates = [{ cert = \"site.pem\", key = \"site.key\" }], or [acme])",
        ));
    }
    if !tls_listener && !certificates.is_empty() {
        return Err(ConfigError::invalid(
            "tls.certificates",
            "no `listen` entry is marked `tls` (e.g. listen = [\"0.0.0.0:443 tls\", \"0.0.0.0:80\"])",
        ));
    }
    let redirect_to_https = raw.redirect_to_https.unwrap_or(false);
    if redirect_to_https && !tls_listener {
        return Err(ConfigError::invalid(
            "tls.redirect_to_https",
            "needs a `listen` entry marked `tls` to redirect to",
        ));
    }
    let hsts = match raw.hsts {
        None => None,
        Some(value) => Some(validate_hsts(&value)?),
    };
    let min_version = match raw.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            return Err(ConfigError::invalid(
                "tls.min_version",
                format!("`{other}` is not \"1.2\" or \"1.3\""),
            ))
        }
    };
    Ok(TlsSettings {
        certificates,
        redirect_to_https,
        hsts,
        min_version,
    })
}

/// A `Strict-Transport-Security` value (RFC 6797 §6.1): `max-age=SECONDS`, then optional
/// directives such as `includeSubDomains` and `preload`.
fn validate_hsts(value: &str) -> Result<http::HeaderValue, ConfigError> {
    let max_age = value
        .split(';')
        .map(str::trim)
        .find_map(|directive| directive.strip_prefix("max-age="));
    let valid_max_age = max_age
        .is_some_and(|seconds| !seconds.is_empty() && seconds.bytes().all(|b| b.is_ascii_digit()));
    let header = http::HeaderValue::try_from(value).ok();
    let Some(header) = header.filter(|_| valid_max_age) else {
        return Err(ConfigError::invalid(
            "tls.hsts",
            format!(
                "`{value}` is not a Strict-Transport-Security value such as \
                 \"max-age=31536000; includeSubDomains\""
            ),
        ));
    };
    Ok(header)
}

pub(super) fn validate_script_extensions(
    raw: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let raw = raw.unwrap_or_else(|| vec![DEFAULT_SCRIPT_EXTENSION.to_owned()]);
    if raw.is_empty() {
        return Err(ConfigError::invalid(
            "script_extensions",
            "must list at least one extension, e.g. [\"php\"]",
        ));
    }
    raw.iter()
        .map(|extension| {
            let bare = extension.strip_prefix('.').unwrap_or(extension);
            let acceptable = !bare.is_empty()
                && bare
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
            if acceptable {
                Ok(bare.to_ascii_lowercase())
            } else {
                Err(ConfigError::invalid(
                    "script_extensions",
                    format!("`{extension}` is not a file extension such as \"php\""),
                ))
            }
        })
        .collect()
}

pub(super) fn validate_index(raw: Option<String>) -> Result<String, ConfigError> {
    let index = raw.unwrap_or_else(|| DEFAULT_INDEX.to_owned());
    if index.is_empty() || index == "." || index == ".." || index.contains(['/', '\0']) {
        return Err(ConfigError::invalid(
            "index",
            format!("`{index}` is not a plain file name such as \"index.php\""),
        ));
    }
    Ok(index)
}

pub(super) fn canonical_root(root: &Path) -> Result<PathBuf, ConfigError> {
    let canonical = root.canonicalize().map_err(|error| {
        ConfigError::invalid("root", format!("cannot use `{}`: {error}", root.display()))
    })?;
    if !canonical.is_dir() {
        return Err(ConfigError::invalid(
            "root",
            format!("`{}` is not a directory", root.display()),
        ));
    }
    Ok(canonical)
}

/// The front controller is run as a script, so it must be one.
pub(super) fn check_front_controller(site: &PhpSite) -> Result<(), ConfigError> {
    if site.front_controller && !site.is_script_name(&site.index) {
        return Err(ConfigError::invalid(
            "index",
            format!(
                "`{}` does not have a script extension ({}), so it cannot be the front \
                 controller; set front_controller = false to use it as a plain directory index",
                site.index,
                site.script_extensions.join(", ")
            ),
        ));
    }
    Ok(())
}

fn validate_params(
    raw: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    raw.into_iter()
        .map(|(name, value)| {
            let acceptable = !name.is_empty()
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && byte != b'=');
            if !acceptable {
                return Err(ConfigError::invalid(
                    format!("params.{name}"),
                    "a param name must be printable ASCII without spaces or '='",
                ));
            }
            // php-fpm cannot parse a pair split across PARAMS records (65,535 bytes each, with
            // up to 8 bytes of lengths).
            if name.len() + value.len() + 8 > usize::from(u16::MAX) {
                return Err(ConfigError::invalid(
                    format!("params.{name}"),
                    "name and value must fit in one FastCGI record (65,527 bytes together)",
                ));
            }
            Ok((name, value))
        })
        .collect()
}

fn memory_size(key: &str, raw: Option<ByteSize>, default: u64) -> Result<usize, ConfigError> {
    let bytes = raw.map_or(default, ByteSize::bytes);
    usize::try_from(bytes).map_err(|_| {
        ConfigError::invalid(
            key,
            format!("{bytes} bytes do not fit in memory on this platform"),
        )
    })
}

/// Half the descriptors the process may open, less a reserve: each client connection can come
/// with a request-body and a response spool file, and backend connections and logs need some
/// too. So the limit is reached before the descriptors run out.
fn default_max_client_connections(open_files: Option<u64>) -> usize {
    const RESERVED_FILES: u64 = 64;
    const FALLBACK: usize = 1024;
    match open_files {
        Some(limit) => usize::try_from(limit.saturating_sub(RESERVED_FILES) / 2)
            .unwrap_or(usize::MAX)
            .max(16),
        None => FALLBACK,
    }
}

/// The soft limit on open files (`ulimit -n`), from /proc/self/limits; `None` when unknown or
/// unlimited.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn validate_head_limits(
    max_request_target: Option<ByteSize>,
    max_header_line: Option<ByteSize>,
    max_request_head: Option<ByteSize>,
    allow_trace: bool,
) -> Result<HeadLimits, ConfigError> {
    // Each at least a kilobyte: below that ordinary browsers' cookies and URLs fail.
    let at_least_1k = |key: &str, raw: Option<ByteSize>, default: u64| {
        let bytes = memory_size(key, raw, default)?;
        if bytes < 1024 {
            return Err(ConfigError::invalid(key, "must be at least 1KiB"));
        }
        Ok(bytes)
    };
    let limits = HeadLimits {
        max_request_target: at_least_1k(
            "max_request_target",
            max_request_target,
            DEFAULT_MAX_REQUEST_TARGET,
        )?,
        max_header_line: at_least_1k("max_header_line", max_header_line, DEFAULT_MAX_HEADER_LINE)?,
        max_request_head: at_least_1k(
            "max_request_head",
            max_request_head,
            DEFAULT_MAX_REQUEST_HEAD,
        )?,
        allow_trace,
    };
    // A FastCGI name-value pair must fit in one PARAMS record (65,535 bytes, FastCGI 1.0 §3.3):
    // php-fpm cannot parse a pair split across records. The longest pairs are a header's values
    // joined (at most the head) and PATH_TRANSLATED (the root, at most PATH_MAX, and a path
    // from the target): with these bounds every pair fits in one record.
    for (key, value, most) in [
        (
            "max_request_target",
            limits.max_request_target,
            MAX_REQUEST_TARGET,
        ),
        ("max_header_line", limits.max_header_line, MAX_REQUEST_HEAD),
        (
            "max_request_head",
            limits.max_request_head,
            MAX_REQUEST_HEAD,
        ),
    ] {
        if value > most {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "must be at most {}KiB: every param must fit in one FastCGI record",
                    most >> 10
                ),
            ));
        }
    }
    Ok(limits)
}

/// The largest `max_request_head` (and header line): one FastCGI record's content, less room
/// for a param name.
const MAX_REQUEST_HEAD: usize = 60 << 10;
/// The largest `max_request_target`: with a root of PATH_MAX (4 KiB), PATH_TRANSLATED fits.
const MAX_REQUEST_TARGET: usize = 32 << 10;

fn positive(key: &str, raw: Option<Duration>, default: Duration) -> Result<Duration, ConfigError> {
    match raw {
        Some(duration) if duration.is_zero() => {
            Err(ConfigError::invalid(key, "must be longer than 0s"))
        }
        Some(duration) => Ok(duration),
        None => Ok(default),
    }
}

/// `[upstreams.NAME]`: each a complete `[upstream]` of its own, with servers, none of them
/// also in `[upstream]` or another group: one backend is one pool under one cap, and two
/// groups listing it would be two pools and twice its cap.
fn validate_upstream_groups(
    raw: &BTreeMap<String, RawUpstream>,
    default: &UpstreamConfig,
) -> Result<BTreeMap<String, UpstreamConfig>, ConfigError> {
    let mut groups: BTreeMap<String, UpstreamConfig> = BTreeMap::new();
    for (name, raw_group) in raw {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if !valid_name {
            return Err(ConfigError::invalid(
                format!("upstreams.{name}"),
                "a group's name is letters, digits, `_` and `-`",
            ));
        }
        let group = validate_upstream(raw_group).map_err(|error| error.in_group(name))?;
        if group.servers.is_empty() {
            return Err(ConfigError::invalid(
                format!("upstreams.{name}.servers"),
                "a group needs at least one server",
            ));
        }
        for server in &group.servers {
            let elsewhere = std::iter::once(("upstream", default))
                .chain(
                    groups
                        .iter()
                        .map(|(other, config)| (other.as_str(), config)),
                )
                .find(|(_, config)| {
                    config
                        .servers
                        .iter()
                        .any(|known| known.address == server.address)
                });
            if let Some((other, _)) = elsewhere {
                return Err(ConfigError::invalid(
                    format!("upstreams.{name}.servers"),
                    format!(
                        "`{}` is also in `{other}`: one backend is one pool with one cap; \
                         point the sites and rules at one group instead",
                        server.address
                    ),
                ));
            }
        }
        groups.insert(name.clone(), group);
    }
    Ok(groups)
}

fn validate_upstream(raw: &RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let mut servers: Vec<UpstreamServer> = Vec::new();
    for (position, text) in raw.servers.iter().flatten().enumerate() {
        let key = format!("upstream.servers[{position}]");
        let server = parse_server(text).map_err(|message| ConfigError::invalid(&key, message))?;
        if servers.iter().any(|known| known.address == server.address) {
            // Two entries would mean two pools, and twice the connection cap, on one backend.
            return Err(ConfigError::invalid(
                key,
                format!("`{}` is listed twice", server.address),
            ));
        }
        servers.push(server);
    }
    if !servers.is_empty() && servers.iter().all(|server| server.backup) {
        return Err(ConfigError::invalid(
            "upstream.servers",
            "every server is a backup; at least one must be a primary",
        ));
    }

    let defaults = PoolConfig::default();
    if raw.max_conns == Some(0) {
        return Err(ConfigError::invalid(
            "upstream.max_conns",
            "must be at least 1",
        ));
    }
    if let (Some(max_idle), Some(max_conns)) = (raw.max_idle, raw.max_conns) {
        if max_idle > max_conns {
            return Err(ConfigError::invalid(
                "upstream.max_idle",
                format!("must not exceed upstream.max_conns ({max_conns})"),
            ));
        }
    }
    let max_queue = raw.max_queue.unwrap_or(defaults.max_queue);
    let keepalive_requests = raw
        .keepalive_requests
        .unwrap_or(defaults.keepalive_requests);
    if keepalive_requests == 0 {
        return Err(ConfigError::invalid(
            "upstream.keepalive_requests",
            "must be at least 1 (use keep_conn = false for a connection per request)",
        ));
    }
    let read_timeout = positive(
        "upstream.read_timeout",
        raw.read_timeout,
        defaults.read_timeout,
    )?;
    let pool = PoolConfig {
        max_conns: raw.max_conns.map(ConfiguredCap::setting),
        max_idle: raw.max_idle,
        max_queue,
        keepalive_requests,
        keepalive_timeout: positive(
            "upstream.keepalive_timeout",
            raw.keepalive_timeout,
            defaults.keepalive_timeout,
        )?,
        worker_idle_timeout: positive(
            "upstream.worker_idle_timeout",
            raw.worker_idle_timeout,
            defaults.worker_idle_timeout,
        )?,
        keepalive_time: positive(
            "upstream.keepalive_time",
            raw.keepalive_time,
            defaults.keepalive_time,
        )?,
        connect_timeout: positive(
            "upstream.connect_timeout",
            raw.connect_timeout,
            defaults.connect_timeout,
        )?,
        read_timeout,
        send_timeout: positive(
            "upstream.send_timeout",
            raw.send_timeout,
            defaults.send_timeout,
        )?,
        queue_timeout: positive(
            "upstream.queue_timeout",
            raw.queue_timeout,
            defaults.queue_timeout,
        )?,
        keep_conn: raw.keep_conn.unwrap_or(defaults.keep_conn),
        socket_keepalive: raw.socket_keepalive.unwrap_or(defaults.socket_keepalive),
        // A slot is free only when the backend has finished with it: php-fpm runs an abandoned
        // script to its end whatever fcgate does, so closing at once would let the next request
        // in while the worker is still busy, into php-fpm's listen queue.
        abort_drain_timeout: raw.abort_drain_timeout.unwrap_or(read_timeout),
        multiplex: parse_multiplex(raw.multiplex.as_deref())?,
        max_reqs_per_conn: match raw.max_reqs_per_conn {
            Some(0) => {
                return Err(ConfigError::invalid(
                    "upstream.max_reqs_per_conn",
                    "must be at least 1",
                ))
            }
            Some(limit) => limit,
            None => defaults.max_reqs_per_conn,
        },
        php_fpm_status_path: match &raw.php_fpm_status_path {
            Some(path) if !path.starts_with('/') => {
                return Err(ConfigError::invalid(
                    "upstream.php_fpm_status_path",
                    format!("\"{path}\" is not a path (pm.status_path starts with /)"),
                ))
            }
            path => path.clone(),
        },
        ..defaults
    };
    // An explicit max_conns wins over php-fpm's figure; pm.max_requests still applies.
    let limits = php_fpm_caps(raw, &servers)?;
    for (server, limits) in servers.iter_mut().zip(limits) {
        let Some(limits) = limits else { continue };
        if raw.max_conns.is_none() {
            server.php_fpm_cap = Some(ConfiguredCap {
                value: limits.max_children as usize,
                origin: limits.description,
            });
        }
        server.php_fpm_max_requests = limits.max_requests;
    }
    let health_defaults = HealthConfig::default();
    let max_fails = raw.max_fails.unwrap_or(health_defaults.max_fails);
    if max_fails == 0 {
        return Err(ConfigError::invalid(
            "upstream.max_fails",
            "must be at least 1",
        ));
    }
    let health = HealthConfig {
        max_fails,
        fail_timeout: positive(
            "upstream.fail_timeout",
            raw.fail_timeout,
            health_defaults.fail_timeout,
        )?,
        health_interval: raw
            .health_interval
            .unwrap_or(health_defaults.health_interval),
    };
    Ok(UpstreamConfig {
        servers,
        pool,
        health,
        retry_non_idempotent: raw.retry_non_idempotent.unwrap_or(false),
        keepalive_requests_set: raw.keepalive_requests.is_some(),
        resolution: validate_resolution(raw)?,
    })
}

/// The port of a name server given without one.
pub const DNS_PORT: u16 = 53;

/// `upstream.resolver` (each `IP`, `IP:PORT` or `[v6]:PORT`, as nginx's `resolver`),
/// `upstream.resolve_interval` and `upstream.resolver_timeout`.
fn validate_resolution(raw: &RawUpstream) -> Result<ResolutionConfig, ConfigError> {
    let name_servers = raw
        .resolver
        .iter()
        .flatten()
        .enumerate()
        .map(|(position, text)| {
            let text = text.trim();
            text.parse::<SocketAddr>()
                .or_else(|_| {
                    text.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, DNS_PORT))
                })
                .map_err(|_| {
                    ConfigError::invalid(
                        format!("upstream.resolver[{position}]"),
                        format!(
                            "`{text}` is not a name server's IP address (`IP`, `IP:PORT` or \
                             `[v6]:PORT`); a name server given by name would need a resolver \
                             of its own"
                        ),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let resolve_interval = match raw.resolve_interval {
        Some(interval) => Some(positive(
            "upstream.resolve_interval",
            Some(interval),
            interval,
        )?),
        None => None,
    };
    Ok(ResolutionConfig {
        name_servers,
        resolve_interval,
        timeout: positive(
            "upstream.resolver_timeout",
            raw.resolver_timeout,
            ResolutionConfig::default().timeout,
        )?,
    })
}

/// With `php_fpm_config`, each server's cap is `pm.max_children` of the php-fpm pool listening
/// on its address: the figure php-fpm will not announce through FCGI_GET_VALUES, read where the
/// operator keeps it instead of copied by hand. An explicit `max_conns` wins, so the file is
/// not even read then.
fn php_fpm_caps(
    raw: &RawUpstream,
    servers: &[UpstreamServer],
) -> Result<Vec<Option<FpmLimits>>, ConfigError> {
    let Some(path) = &raw.php_fpm_config else {
        if raw.php_fpm_pool.is_some() {
            return Err(ConfigError::invalid(
                "upstream.php_fpm_pool",
                "needs upstream.php_fpm_config (the php-fpm file that defines the pool)",
            ));
        }
        return Ok(vec![None; servers.len()]);
    };
    servers
        .iter()
        .map(|server| {
            crate::php_fpm_config::limits_for(path, &server.address, raw.php_fpm_pool.as_deref())
                .map(Some)
                .map_err(|error| ConfigError::invalid("upstream.php_fpm_config", error.to_string()))
        })
        .collect()
}

/// `ADDR [weight=N] [backup]`, as in an nginx `upstream` block.
fn parse_multiplex(raw: Option<&str>) -> Result<Multiplexing, ConfigError> {
    Ok(match raw {
        None | Some("auto") => Multiplexing::Auto,
        Some("on") => Multiplexing::On,
        Some("force") => Multiplexing::Force,
        Some("off") => Multiplexing::Off,
        Some(other) => {
            return Err(ConfigError::invalid(
                "upstream.multiplex",
                format!("\"{other}\" is not one of auto, on, force, off"),
            ))
        }
    })
}

fn parse_server(text: &str) -> Result<UpstreamServer, String> {
    let mut words = text.split_whitespace();
    let address = Address::parse(words.next().unwrap_or_default()).map_err(|e| e.to_string())?;
    let mut server = UpstreamServer::new(address);
    for word in words {
        match word.split_once('=') {
            None if word == "backup" => server.backup = true,
            Some(("weight", value)) => {
                server.weight = value
                    .parse()
                    .ok()
                    .filter(|weight| *weight >= 1)
                    .ok_or_else(|| {
                        format!("weight must be a whole number from 1, not `{value}`")
                    })?;
            }
            _ => {
                return Err(format!(
                    "unknown server option `{word}` (expected `weight=N` or `backup`)"
                ))
            }
        }
    }
    Ok(server)
}

/// nginx's gzip_min_length is 20 bytes, Caddy's minimum_length 512: below about 512 bytes the
/// saving rarely spares a packet, and the coding's own header and the CPU still cost.
const DEFAULT_COMPRESSION_MIN_LENGTH: u64 = 512;
/// Text formats, and binary ones that are not compressed already (wasm, fonts without their own
/// compression, icons): nginx's and Caddy's usual lists. Images, audio, video, archives and
/// woff/woff2 are compressed formats and gain nothing.
const DEFAULT_COMPRESSION_TYPES: &[&str] = &[
    "text/*",
    "application/javascript",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "font/ttf",
    "font/otf",
];

/// `[compression]`: defaults (static on, scripts off), each coding named once, media types as
/// `type/subtype` or `type/*`, levels in their codec's range.
fn validate_compression(raw: RawCompression) -> Result<CompressionSettings, ConfigError> {
    let encodings = match raw.encodings {
        None => Coding::ALL.to_vec(),
        Some(names) => {
            let mut encodings = Vec::with_capacity(names.len());
            for name in &names {
                let coding = Coding::from_setting(name).ok_or_else(|| {
                    ConfigError::invalid(
                        "compression.encodings",
                        format!("`{name}` is not \"zstd\", \"br\" or \"gzip\""),
                    )
                })?;
                if encodings.contains(&coding) {
                    return Err(ConfigError::invalid(
                        "compression.encodings",
                        format!("`{name}` is listed twice"),
                    ));
                }
                encodings.push(coding);
            }
            if encodings.is_empty() {
                return Err(ConfigError::invalid(
                    "compression.encodings",
                    "must name at least one coding (to compress nothing, set static = false \
                     and scripts = false)",
                ));
            }
            encodings
        }
    };
    let types = match raw.types {
        None => DEFAULT_COMPRESSION_TYPES
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        Some(types) => {
            for name in &types {
                validate_media_type(name)?;
            }
            types.iter().map(|name| name.to_ascii_lowercase()).collect()
        }
    };
    let level =
        |key: &str, value: Option<i64>, range: std::ops::RangeInclusive<u8>, default| match value {
            None => Ok(default),
            Some(value) => u8::try_from(value)
                .ok()
                .filter(|level| range.contains(level))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        format!("compression.{key}"),
                        format!(
                            "must be from {} to {}, not {value}",
                            range.start(),
                            range.end()
                        ),
                    )
                }),
        };
    Ok(CompressionSettings {
        static_files: raw.static_files.unwrap_or(true),
        scripts: raw.scripts.unwrap_or(false),
        encodings,
        min_length: raw
            .min_length
            .map_or(DEFAULT_COMPRESSION_MIN_LENGTH, ByteSize::bytes),
        types,
        precompressed: raw.precompressed.unwrap_or(true),
        // Fast levels: compression runs on the request's thread for every response, and these
        // give most of the ratio (nginx: gzip_comp_level 1, brotli_comp_level 6; Caddy: gzip 5,
        // zstd "default", which is level 3).
        gzip_level: level("gzip_level", raw.gzip_level, 1..=9, 5)?,
        brotli_level: level("brotli_level", raw.brotli_level, 0..=11, 4)?,
        // Past 19 zstd's "ultra" levels need tens of megabytes per stream.
        zstd_level: level("zstd_level", raw.zstd_level, 1..=19, 3)?,
    })
}

/// A `compression.types` entry: `type/subtype` or `type/*`, without parameters. `*/*` is
/// refused: it would spend CPU recompressing images, video and archives.
fn validate_media_type(name: &str) -> Result<(), ConfigError> {
    let token = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&byte))
    };
    let valid = match name.split_once('/') {
        Some((major, "*")) => token(major),
        Some((major, minor)) => token(major) && token(minor),
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "compression.types",
            format!("`{name}` is not a media type such as \"text/css\" or \"text/*\""),
        ))
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn the_default_connection_limit_leaves_room_for_spool_files() {
        assert_eq!(default_max_client_connections(Some(1024)), 480);
        assert_eq!(default_max_client_connections(Some(65_536)), 32_736);
        assert_eq!(default_max_client_connections(Some(50)), 16);
        assert_eq!(default_max_client_connections(None), 1024);
        assert!(open_files_limit().is_some_and(|limit| limit > 0));
    }
}
