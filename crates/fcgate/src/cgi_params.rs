//! The FastCGI params (CGI/1.1 meta-variables, RFC 3875 §4.1) of one request.
//!
//! The set and order follow nginx's stock `fastcgi_params` plus the PHP lines
//! (`SCRIPT_FILENAME`, `PATH_INFO`, `PATH_TRANSLATED`), then one `HTTP_*` per request header,
//! then the operator's fixed params. Pure: the caller encodes the pairs into PARAMS records.

mod host;
mod text;

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::Version;

use crate::config::SiteConfig;
use crate::tls::TlsFacts;
use host::{request_host, ServerName};
use text::{Decimal, IpText};

/// The two ends of the client connection a request arrived on. The params they give
/// (REMOTE_ADDR, REMOTE_PORT, SERVER_ADDR, SERVER_PORT) are written as text once, when the
/// connection is accepted, rather than for each of its requests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    remote_addr: SocketAddr,
    local_addr: SocketAddr,
    https: bool,
    tls: Option<TlsFacts>,
    remote_ip: IpText,
    remote_port: Decimal,
    local_ip: IpText,
    local_port: Decimal,
}

impl ConnectionInfo {
    /// A client connection from `remote_addr` to the gateway's `local_addr`; `https` if TLS.
    pub fn new(remote_addr: SocketAddr, local_addr: SocketAddr, https: bool) -> ConnectionInfo {
        ConnectionInfo {
            remote_addr,
            local_addr,
            https,
            tls: None,
            remote_ip: IpText::plain(remote_addr.ip()),
            remote_port: Decimal::new(u64::from(remote_addr.port())),
            local_ip: IpText::plain(local_addr.ip()),
            local_port: Decimal::new(u64::from(local_addr.port())),
        }
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The gateway's address the client connected to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The same connection, over TLS with `facts`.
    pub fn with_tls(self, facts: TlsFacts) -> ConnectionInfo {
        ConnectionInfo {
            https: true,
            tls: Some(facts),
            ..self
        }
    }

    /// The same connection as a trusted proxy describes it: the client at `client`, and, when
    /// the proxy says, whether the client used HTTPS (the TLS facts, fcgate's own connection's,
    /// are kept for what they are).
    pub fn behind_proxy(self, client: SocketAddr, https: Option<bool>) -> ConnectionInfo {
        ConnectionInfo {
            remote_addr: client,
            remote_ip: IpText::plain(client.ip()),
            remote_port: Decimal::new(u64::from(client.port())),
            https: https.unwrap_or(self.https),
            ..self
        }
    }

    /// Whether the client connection is TLS.
    pub fn https(&self) -> bool {
        self.https
    }

    /// The TLS version and cipher, when fcgate terminated TLS itself.
    pub fn tls(&self) -> Option<&TlsFacts> {
        self.tls.as_ref()
    }
}

impl std::fmt::Debug for ConnectionInfo {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConnectionInfo")
            .field("remote_addr", &self.remote_addr)
            .field("local_addr", &self.local_addr)
            .field("https", &self.https)
            .finish()
    }
}

/// Whether a Host header value is `name[:port]` (a URI authority without userinfo): what may be
/// passed to the app as HTTP_HOST and SERVER_NAME.
pub fn is_valid_host(host: &[u8]) -> bool {
    host::is_authority_without_userinfo(host)
}

/// The authority the request names, `host[:port]` (its URI authority without userinfo, else
/// its Host header); `None` when it names none or a malformed one.
pub fn request_authority(parts: &Parts) -> Option<&[u8]> {
    request_host(parts).filter(|host| host::is_authority_without_userinfo(host))
}

/// The host the request names (its URI authority, else its Host header) without the port;
/// `None` when it names none or a malformed one.
pub fn request_host_name(parts: &Parts) -> Option<&[u8]> {
    request_host(parts).and_then(host::host_without_port)
}

/// What the request runs: in PHP mode a script file under the document root; in app mode the
/// whole application (`script_filename` empty, `script_name` "").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptTarget {
    /// Absolute path of the script, or empty in app mode.
    pub script_filename: PathBuf,
    /// URI path of the script, e.g. `/index.php`; "" in app mode.
    pub script_name: String,
    /// Decoded path after the script name, e.g. `/users/7`; may be "".
    pub path_info: String,
    /// The document root in PHP mode (the site's own, shared).
    pub document_root: Option<Arc<Path>>,
    /// QUERY_STRING when a rewrite rule replaced the request's (`None`: the request's own).
    /// REQUEST_URI stays what the client sent, as in nginx.
    pub query: Option<String>,
    /// The user an `auth_basic` rule let in: REMOTE_USER, with AUTH_TYPE=Basic.
    pub remote_user: Option<String>,
}

impl ScriptTarget {
    /// App mode after a rewrite: `path` is already decoded (and normalised).
    pub fn app_decoded(path: String) -> ScriptTarget {
        ScriptTarget {
            script_filename: PathBuf::new(),
            script_name: String::new(),
            path_info: path,
            document_root: None,
            query: None,
            remote_user: None,
        }
    }

    /// App mode: the application is the script and sees the whole decoded path as PATH_INFO,
    /// the convention of WSGI/PSGI-style FastCGI servers. A path that does not decode to UTF-8
    /// is passed still encoded rather than altered.
    pub fn app(uri_path: &str) -> ScriptTarget {
        // Without a `%` the path is its own decoding.
        let decoded = if uri_path.contains('%') {
            crate::request_path::percent_decode(uri_path)
                .and_then(|bytes| String::from_utf8(bytes).ok())
        } else {
            None
        };
        let path_info = decoded.unwrap_or_else(|| uri_path.to_owned());
        ScriptTarget {
            script_filename: PathBuf::new(),
            script_name: String::new(),
            path_info,
            document_root: None,
            query: None,
            remote_user: None,
        }
    }
}

/// Calls `add(name, value)` for every param, in a stable order. Builds the values in place:
/// numbers and addresses on the stack, header names in a stack buffer, single-valued headers
/// borrowed from the request; only a composed value (PHP mode's DOCUMENT_URI and
/// PATH_TRANSLATED, a repeated header joined) needs a buffer, shared by all of them.
pub fn for_each_param(
    parts: &Parts,
    conn: &ConnectionInfo,
    target: &ScriptTarget,
    content_length: u64,
    site: &SiteConfig,
    add: &mut dyn FnMut(&[u8], &[u8]),
) {
    let overridden = |name: &[u8]| {
        site.extra_params
            .iter()
            .any(|(extra, _)| extra.as_bytes() == name)
    };
    let mut emit = |name: &[u8], value: &[u8]| {
        if !overridden(name) {
            add(name, value);
        }
    };
    let mut composed = Vec::new();
    // The body's length goes out twice: CONTENT_LENGTH and HTTP_CONTENT_LENGTH.
    let mut length_digits = itoa::Buffer::new();
    let body_length = length_digits.format(content_length).as_bytes();
    let query = match &target.query {
        Some(rewritten) => rewritten.as_str(),
        None => parts.uri.query().unwrap_or(""),
    };
    emit(b"QUERY_STRING", query.as_bytes());
    emit(b"REQUEST_METHOD", parts.method.as_str().as_bytes());
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map_or(&b""[..], |value| value.as_bytes());
    emit(b"CONTENT_TYPE", content_type);
    // RFC 3875 §4.1.2: set iff a body is attached. The value is the byte count actually sent
    // on STDIN, never the client's header: php-fpm waits forever for bytes that never come.
    let has_body = content_length > 0
        || parts.headers.contains_key(CONTENT_LENGTH)
        || parts.headers.contains_key(TRANSFER_ENCODING);
    if has_body {
        emit(b"CONTENT_LENGTH", body_length);
    } else {
        emit(b"CONTENT_LENGTH", b"");
    }
    emit(b"SCRIPT_NAME", target.script_name.as_bytes());
    let request_uri = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    emit(b"REQUEST_URI", request_uri.as_bytes());
    // nginx's $document_uri: the script once try_files found it (PHP mode), else the decoded
    // path (app mode, where the path is all PATH_INFO).
    let document_uri = if target.script_name.is_empty() {
        &target.path_info
    } else {
        &target.script_name
    };
    emit(b"DOCUMENT_URI", document_uri.as_bytes());
    let document_root = target
        .document_root
        .as_deref()
        .map_or(&b""[..], |root| root.as_os_str().as_bytes());
    emit(b"DOCUMENT_ROOT", document_root);
    emit(b"SERVER_PROTOCOL", protocol_name(parts.version).as_bytes());
    emit(
        b"REQUEST_SCHEME",
        if conn.https { b"https" } else { b"http" },
    );
    if conn.https {
        emit(b"HTTPS", b"on");
    }
    // Apache mod_ssl's names (nginx users pass them as `$ssl_protocol`, `$ssl_cipher`).
    if let Some(tls) = &conn.tls {
        emit(b"SSL_PROTOCOL", tls.protocol.as_bytes());
        emit(b"SSL_CIPHER", tls.cipher.as_bytes());
    }
    emit(b"GATEWAY_INTERFACE", b"CGI/1.1");
    emit(
        b"SERVER_SOFTWARE",
        concat!("fcgate/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    // RFC 3875 §4.1.1 and §4.1.11: set when the gateway itself checked the credentials.
    if let Some(user) = &target.remote_user {
        emit(b"AUTH_TYPE", b"Basic");
        emit(b"REMOTE_USER", user.as_bytes());
    }
    emit(b"REMOTE_ADDR", conn.remote_ip.as_bytes());
    emit(b"REMOTE_PORT", conn.remote_port.as_bytes());
    emit(b"SERVER_ADDR", conn.local_ip.as_bytes());
    emit(b"SERVER_PORT", conn.local_port.as_bytes());
    let host = request_host(parts);
    emit(
        b"SERVER_NAME",
        ServerName::of(host, conn.local_addr).as_bytes(),
    );
    // php-cgi built with force-cgi-redirect refuses to run without it.
    emit(b"REDIRECT_STATUS", b"200");
    if !target.script_filename.as_os_str().is_empty() {
        emit(
            b"SCRIPT_FILENAME",
            target.script_filename.as_os_str().as_bytes(),
        );
    }
    emit(b"PATH_INFO", target.path_info.as_bytes());
    if let (false, Some(root)) = (target.path_info.is_empty(), &target.document_root) {
        let translated = joined(
            &mut composed,
            root.as_os_str().as_bytes(),
            target.path_info.as_bytes(),
        );
        emit(b"PATH_TRANSLATED", translated);
    }

    if let Some(host) = host {
        emit(b"HTTP_HOST", host);
    }
    header_params(
        parts,
        site.underscores_in_headers,
        body_length,
        &mut composed,
        &mut emit,
    );
    for (name, value) in &site.extra_params {
        add(name.as_bytes(), value.as_bytes());
    }
}

/// `HTTP/1.1`, `HTTP/2.0`: SERVER_PROTOCOL, and the access log's protocol.
pub fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `first` followed by `second`, borrowed when one of them is empty, else built in `buffer`.
fn joined<'a>(buffer: &'a mut Vec<u8>, first: &'a [u8], second: &'a [u8]) -> &'a [u8] {
    if first.is_empty() {
        return second;
    }
    if second.is_empty() {
        return first;
    }
    reuse(buffer);
    buffer.extend_from_slice(first);
    buffer.extend_from_slice(second);
    buffer
}

/// What a composed value usually needs: a document root and a path, or a few cookies.
const COMPOSED_VALUE_CAPACITY: usize = 512;

/// Empties the buffer shared by composed values, giving it room for a typical one at once
/// rather than growing it value by value.
fn reuse(buffer: &mut Vec<u8>) {
    buffer.clear();
    buffer.reserve(COMPOSED_VALUE_CAPACITY);
}

/// One `HTTP_*` param per request header name, values of a repeated header joined.
/// HTTP_CONTENT_LENGTH is `body_length`, the bytes actually sent on STDIN, like CONTENT_LENGTH.
fn header_params(
    parts: &Parts,
    underscores_in_headers: bool,
    body_length: &[u8],
    joined_values: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8], &[u8]),
) {
    let headers = &parts.headers;
    let mut short_name = [0u8; SHORT_PARAM_NAME];
    let mut long_name = Vec::new();
    for (position, name) in headers.keys().enumerate() {
        if skipped_header(name, underscores_in_headers) {
            if !is_cgi_safe_name(name, underscores_in_headers) {
                tracing::debug!(header = name.as_str(), "dropped a request header: its name holds characters other than letters, digits and `-`");
            }
            continue;
        }
        // Only when underscores pass can two names make one param (`x_user`, `x-user`): the
        // first of them carries the values of all, in header order.
        let namesake = |other: &HeaderName| {
            underscores_in_headers
                && !skipped_header(other, underscores_in_headers)
                && same_cgi_name(other, name)
        };
        if underscores_in_headers && headers.keys().take(position).any(namesake) {
            continue;
        }
        let later_namesakes = underscores_in_headers
            .then(|| headers.keys().skip(position + 1))
            .into_iter()
            .flatten()
            .filter(|other| namesake(other))
            .flat_map(|other| headers.get_all(other));
        let mut values = headers.get_all(name).iter().chain(later_namesakes);
        let Some(first) = values.next() else {
            continue;
        };
        let param_name = cgi_header_name(name, &mut short_name, &mut long_name);
        // With underscores allowed, `Content_Length` is the same param: always the real count.
        if same_cgi_name(name, &CONTENT_LENGTH) {
            emit(param_name, body_length);
            continue;
        }
        let Some(second) = values.next() else {
            emit(param_name, first.as_bytes());
            continue;
        };
        // `;` is Cookie's own separator (RFC 6265 §5.4); every other list header uses `,`.
        let separator: &[u8] = if name == COOKIE { b"; " } else { b", " };
        reuse(joined_values);
        for value in [first, second].into_iter().chain(values) {
            // Leading empty values leave no separator behind.
            if !joined_values.is_empty() {
                joined_values.extend_from_slice(separator);
            }
            joined_values.extend_from_slice(value.as_bytes());
        }
        emit(param_name, joined_values);
    }
}

fn skipped_header(name: &HeaderName, underscores_in_headers: bool) -> bool {
    // Host was handled by request_host; the body arrives de-chunked, so a Transfer-Encoding
    // would describe framing the app never sees; `Proxy` would become HTTP_PROXY, which CGI
    // libraries read as their proxy (httpoxy). Content-Type and Content-Length also go as
    // HTTP_CONTENT_TYPE/HTTP_CONTENT_LENGTH, as nginx passes them: some libraries (PyPI's
    // `fastcgi`) read the body length from there.
    name == HOST
        || name == TRANSFER_ENCODING
        || name.as_str() == "proxy"
        || !is_cgi_safe_name(name, underscores_in_headers)
}

/// Letters, digits and `-` only (and `_` when allowed), like nginx's `ignore_invalid_headers`:
/// PHP turns `.` (and other bytes) into `_` in `$_SERVER`, so `X.Forwarded-For` would land
/// on HTTP_X_FORWARDED_FOR; and `X_User` would forge `X-User`. http keeps names lowercase.
fn is_cgi_safe_name(name: &HeaderName, underscores_in_headers: bool) -> bool {
    name.as_str().bytes().all(|byte| {
        byte.is_ascii_lowercase()
            || byte.is_ascii_digit()
            || byte == b'-'
            || (underscores_in_headers && byte == b'_')
    })
}

/// Room for `HTTP_` and a header name on the stack; longer names (rare) take a buffer.
const SHORT_PARAM_NAME: usize = 64;
const HEADER_PARAM_PREFIX: &[u8] = b"HTTP_";

/// `HTTP_` and the name upper-cased with `-` as `_` (RFC 3875 §4.1.18).
fn cgi_header_name<'a>(
    name: &HeaderName,
    short: &'a mut [u8; SHORT_PARAM_NAME],
    long: &'a mut Vec<u8>,
) -> &'a [u8] {
    let len = HEADER_PARAM_PREFIX.len() + name.as_str().len();
    let param: &mut [u8] = match short.get_mut(..len) {
        Some(param) => param,
        None => {
            long.resize(len, 0);
            long
        }
    };
    let (prefix, rest) = param.split_at_mut(HEADER_PARAM_PREFIX.len());
    prefix.copy_from_slice(HEADER_PARAM_PREFIX);
    for (slot, byte) in rest.iter_mut().zip(name.as_str().bytes()) {
        *slot = cgi_name_byte(byte);
    }
    param
}

fn cgi_name_byte(byte: u8) -> u8 {
    match byte {
        b'-' => b'_',
        other => other.to_ascii_uppercase(),
    }
}

fn same_cgi_name(one: &HeaderName, other: &HeaderName) -> bool {
    let (one, other) = (one.as_str().as_bytes(), other.as_str().as_bytes());
    one.len() == other.len()
        && one
            .iter()
            .zip(other)
            .all(|(&a, &b)| cgi_name_byte(a) == cgi_name_byte(b))
}

#[cfg(test)]
mod header_tests;
#[cfg(test)]
mod tests;
