//! The FastCGI params (CGI/1.1 meta-variables, RFC 3875 §4.1) of one request.
//!
//! The set and order follow nginx's stock `fastcgi_params` plus the PHP lines
//! (`SCRIPT_FILENAME`, `PATH_INFO`, `PATH_TRANSLATED`), then one `HTTP_*` per request header,
//! then the operator's fixed params. Pure: the caller encodes the pairs into PARAMS records.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use http::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::Version;

use crate::config::SiteConfig;

/// The two ends of the client connection a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The gateway's address the client connected to.
    pub local_addr: SocketAddr,
    /// Whether the client connection is TLS.
    pub https: bool,
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
    /// The document root in PHP mode.
    pub document_root: Option<PathBuf>,
}

impl ScriptTarget {
    /// App mode: the application is the script and sees the whole decoded path as PATH_INFO,
    /// the convention of WSGI/PSGI-style FastCGI servers. A path that does not decode to UTF-8
    /// is passed still encoded rather than altered.
    pub fn app(uri_path: &str) -> ScriptTarget {
        let path_info = crate::route::percent_decode(uri_path)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_else(|| uri_path.to_owned());
        ScriptTarget {
            script_filename: PathBuf::new(),
            script_name: String::new(),
            path_info,
            document_root: None,
        }
    }
}

/// Calls `add(name, value)` for every param, in a stable order.
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
    emit(b"QUERY_STRING", parts.uri.query().unwrap_or("").as_bytes());
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
        emit(b"CONTENT_LENGTH", content_length.to_string().as_bytes());
    } else {
        emit(b"CONTENT_LENGTH", b"");
    }
    emit(b"SCRIPT_NAME", target.script_name.as_bytes());
    let request_uri = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    emit(b"REQUEST_URI", request_uri.as_bytes());
    let document_uri = [target.script_name.as_bytes(), target.path_info.as_bytes()].concat();
    emit(b"DOCUMENT_URI", &document_uri);
    let document_root = target
        .document_root
        .as_deref()
        .map_or(&b""[..], |root| root.as_os_str().as_bytes());
    emit(b"DOCUMENT_ROOT", document_root);
    emit(b"SERVER_PROTOCOL", protocol_name(parts.version));
    emit(
        b"REQUEST_SCHEME",
        if conn.https { b"https" } else { b"http" },
    );
    if conn.https {
        emit(b"HTTPS", b"on");
    }
    emit(b"GATEWAY_INTERFACE", b"CGI/1.1");
    emit(
        b"SERVER_SOFTWARE",
        concat!("fcgate/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    emit(b"REMOTE_ADDR", plain_ip(conn.remote_addr).as_bytes());
    emit(
        b"REMOTE_PORT",
        conn.remote_addr.port().to_string().as_bytes(),
    );
    emit(b"SERVER_ADDR", plain_ip(conn.local_addr).as_bytes());
    emit(
        b"SERVER_PORT",
        conn.local_addr.port().to_string().as_bytes(),
    );
    let host = request_host(parts);
    emit(
        b"SERVER_NAME",
        server_name(host, conn.local_addr).as_bytes(),
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
        let translated = [root.as_os_str().as_bytes(), target.path_info.as_bytes()].concat();
        emit(b"PATH_TRANSLATED", &translated);
    }

    for (name, value) in header_params(parts, host, site.underscores_in_headers) {
        emit(&name, &value);
    }
    for (name, value) in &site.extra_params {
        add(name.as_bytes(), value.as_bytes());
    }
}

fn protocol_name(version: Version) -> &'static [u8] {
    match version {
        Version::HTTP_09 => b"HTTP/0.9",
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_2 => b"HTTP/2.0",
        Version::HTTP_3 => b"HTTP/3.0",
        _ => b"HTTP/1.1",
    }
}

/// The address without port or brackets, v4-mapped v6 shown as v4 (what nginx and apps'
/// IPv4 allow-lists expect).
fn plain_ip(addr: SocketAddr) -> String {
    addr.ip().to_canonical().to_string()
}

/// The host the client asked for: HTTP/2's `:authority` (and an HTTP/1.1 absolute-form URI)
/// takes precedence over a Host header (RFC 9113 §8.3.1, RFC 9112 §3.2.2).
fn request_host(parts: &Parts) -> Option<&[u8]> {
    match parts.uri.authority() {
        Some(authority) => {
            let text = authority.as_str();
            Some(
                text.rsplit_once('@')
                    .map_or(text, |(_, host)| host)
                    .as_bytes(),
            )
        }
        None => parts.headers.get(HOST).map(|value| value.as_bytes()),
    }
}

/// The Host without its port, or the local address when the Host is missing or not a
/// well-formed authority (apps build absolute URLs from it).
fn server_name(host: Option<&[u8]>, local_addr: SocketAddr) -> String {
    let valid_host = host
        .filter(|host| !host.is_empty() && !host.contains(&b'@'))
        .and_then(|host| http::uri::Authority::try_from(host).ok());
    if let Some(authority) = valid_host {
        let text = authority.as_str();
        let without_port = match text.strip_prefix('[') {
            Some(inner) => inner.split_once(']').map(|(v6, _)| &text[..v6.len() + 2]),
            None => text.split(':').next(),
        };
        if let Some(name) = without_port.filter(|name| !name.is_empty()) {
            return name.to_owned();
        }
    }
    match local_addr.ip().to_canonical() {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// One `HTTP_*` param per request header name, values of a repeated header joined.
fn header_params(
    parts: &Parts,
    host: Option<&[u8]>,
    underscores_in_headers: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if let Some(host) = host {
        params.push((b"HTTP_HOST".to_vec(), host.to_vec()));
    }
    for name in parts.headers.keys() {
        if skipped_header(name, underscores_in_headers) {
            continue;
        }
        let param_name = cgi_header_name(name);
        // `;` is Cookie's own separator (RFC 6265 §5.4); every other list header uses `,`.
        let separator: &[u8] = if name == COOKIE { b"; " } else { b", " };
        let existing = params
            .iter()
            .position(|(existing, _)| *existing == param_name);
        let joined = match existing {
            Some(position) => &mut params[position].1,
            None => {
                params.push((param_name, Vec::new()));
                let last = params.len() - 1;
                &mut params[last].1
            }
        };
        for value in parts.headers.get_all(name) {
            if !joined.is_empty() {
                joined.extend_from_slice(separator);
            }
            joined.extend_from_slice(value.as_bytes());
        }
    }
    params
}

fn skipped_header(name: &HeaderName, underscores_in_headers: bool) -> bool {
    // Host was handled by request_host; Content-Type/Length have their own params; the body
    // arrives de-chunked, so a Transfer-Encoding would describe framing the app never sees;
    // `Proxy` would become HTTP_PROXY, which CGI libraries read as their proxy (httpoxy).
    name == HOST
        || name == CONTENT_TYPE
        || name == CONTENT_LENGTH
        || name == TRANSFER_ENCODING
        || name.as_str() == "proxy"
        || (!underscores_in_headers && name.as_str().contains('_'))
}

fn cgi_header_name(name: &HeaderName) -> Vec<u8> {
    let mut param = b"HTTP_".to_vec();
    param.extend(name.as_str().bytes().map(|byte| match byte {
        b'-' => b'_',
        other => other.to_ascii_uppercase(),
    }));
    param
}

#[cfg(test)]
mod tests;
