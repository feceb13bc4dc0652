//! A request head built from fuzz input goes through the request guard and, when it passes,
//! becomes FastCGI params: no panic, and every param must be something the app can be handed
//! safely. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run request_params -- -max_total_time=60`
//!
//! Input layout (anything shorter is skipped):
//! - byte 0: bit 0 `underscores_in_headers`; bits 1-2 HTTP version; bit 3 IPv6 addresses;
//!   bits 4-7 the method (an index into `METHODS`; past its end, the method is read from the
//!   input as the line after the URI);
//! - byte 1: each header is added `1 + byte % 4` times (repeated headers are joined);
//! - byte 2: the body length the gateway would send (0, small, huge, or `u64::MAX`);
//! - the rest, split at `\n`: the request target (path and query, or any form `http::Uri`
//!   accepts), [the method], then `name:value` header lines.
#![no_main]

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use fcgate::cgi_params::{for_each_param, ConnectionInfo, ScriptTarget};
use fcgate::config::{SiteConfig, SiteMode};
use fcgate::request_guard::{check, HeadLimits};
use http::{HeaderName, HeaderValue, Method, Request, Version};
use libfuzzer_sys::fuzz_target;

const LIMITS: HeadLimits = HeadLimits {
    max_request_target: 8192,
    max_header_line: 8192,
    max_request_head: 32768,
    allow_trace: false,
};

/// The most a FastCGI record holds: a name-value pair must fit in one PARAMS record.
const MAX_RECORD_CONTENT: usize = 65535;

const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::HEAD,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

const VERSIONS: [Version; 4] = [
    Version::HTTP_10,
    Version::HTTP_11,
    Version::HTTP_2,
    Version::HTTP_09,
];

fuzz_target!(|data: &[u8]| {
    let [flags, repeat, length, rest @ ..] = data else {
        return;
    };
    let underscores_in_headers = flags & 1 != 0;
    let version = VERSIONS[usize::from((flags >> 1) & 3)];
    let ipv6 = flags & 8 != 0;
    let method_index = usize::from(flags >> 4);
    let repeat = 1 + usize::from(repeat % 4);
    let content_length = match length {
        0 => 0,
        255 => u64::MAX,
        small => u64::from(*small).pow(3),
    };

    let mut lines = rest.split(|&byte| byte == b'\n');
    let Some(target) = lines.next() else { return };
    let method = match METHODS.get(method_index) {
        Some(method) => method.clone(),
        None => match lines.next().map(Method::from_bytes) {
            Some(Ok(method)) => method,
            _ => return,
        },
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .version(version);
    for line in lines {
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            return;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            return;
        };
        for _ in 0..repeat {
            builder = builder.header(name.clone(), value.clone());
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();

    if check(&parts, &LIMITS).is_err() {
        return;
    }

    let (remote, local) = if ipv6 {
        (
            SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7), 54321)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 8080)),
        )
    } else {
        (
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 54321)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        )
    };
    let conn = ConnectionInfo::new(remote, local, false);
    let script = ScriptTarget::app(parts.uri.path());
    let site = SiteConfig {
        mode: SiteMode::App,
        underscores_in_headers,
        extra_params: vec![],
        rules: Default::default(),
        error_pages: Default::default(),
        upstream: None,
    };
    let body_length = content_length.to_string();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for_each_param(
        &parts,
        &conn,
        &script,
        content_length,
        &site,
        &mut |name, value| {
            let shown = String::from_utf8_lossy(name);
            assert!(!name.is_empty(), "an empty param name");
            if let Some(suffix) = name.strip_prefix(b"HTTP_") {
                assert!(
                    suffix.iter().all(|&byte| byte.is_ascii_uppercase()
                        || byte.is_ascii_digit()
                        || byte == b'_'),
                    "param name {shown:?} holds bytes other than A-Z, 0-9 and _"
                );
            }
            assert!(
                name.len() + value.len() + 8 <= MAX_RECORD_CONTENT,
                "param {shown:?} is {} bytes with its value: more than one PARAMS record holds",
                name.len() + value.len()
            );
            assert!(seen.insert(name.to_vec()), "param {shown:?} sent twice");
            // The client's Content-Length never reaches the app: the app reads as many bytes as
            // the gateway sends, whatever the client's `Content-Length` or `Content_Length` say.
            if name == b"CONTENT_LENGTH" && !value.is_empty() {
                assert_eq!(
                    value,
                    body_length.as_bytes(),
                    "CONTENT_LENGTH is not the body length"
                );
            }
            if name == b"HTTP_CONTENT_LENGTH" {
                assert_eq!(
                    value,
                    body_length.as_bytes(),
                    "HTTP_CONTENT_LENGTH is not the body length"
                );
            }
        },
    );
});
