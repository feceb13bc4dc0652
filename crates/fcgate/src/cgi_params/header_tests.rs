//! The `HTTP_*` params compared, over generated header lists, with the straightforward way of
//! building them (collect every pair, then join): the in-place version must send the same
//! params in the same order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Request;
use proptest::prelude::*;

use super::*;
use crate::config::SiteMode;

/// Every header param as the first version built it: a Vec of owned pairs. The body is empty
/// here, so HTTP_CONTENT_LENGTH (the real byte count) is `0`.
fn collected_header_params(parts: &Parts, underscores_in_headers: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if let Some(host) = request_host(parts) {
        params.push((b"HTTP_HOST".to_vec(), host.to_vec()));
    }
    for name in parts.headers.keys() {
        if skipped_header(name, underscores_in_headers) {
            continue;
        }
        let mut param_name = b"HTTP_".to_vec();
        param_name.extend(name.as_str().bytes().map(cgi_name_byte));
        if same_cgi_name(name, &CONTENT_LENGTH) {
            if !params.iter().any(|(existing, _)| *existing == param_name) {
                params.push((param_name, b"0".to_vec()));
            }
            continue;
        }
        let separator: &[u8] = if name == COOKIE { b"; " } else { b", " };
        let position = params
            .iter()
            .position(|(existing, _)| *existing == param_name);
        let joined = match position {
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

fn header() -> impl Strategy<Value = (String, String)> {
    let name = prop::sample::select(vec![
        "host",
        "cookie",
        "accept",
        "x-user",
        "x_user",
        "X_User",
        "proxy",
        "content-type",
        "content-length",
        "transfer-encoding",
        "a-b_c",
        "a_b-c",
        "content_length",
    ]);
    (name, "[a-z ;,=]{0,6}").prop_map(|(name, value)| (name.to_owned(), value))
}

proptest! {
    #[test]
    fn same_header_params_as_collecting_them(
        headers in prop::collection::vec(header(), 0..12),
        underscores_in_headers in any::<bool>(),
        long_name in any::<bool>(),
    ) {
        let mut request = Request::get("/");
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if long_name {
            request = request.header("x-".repeat(40), "long");
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        let site = SiteConfig {
            mode: SiteMode::App,
            underscores_in_headers,
            extra_params: Vec::new(),
            rules: Default::default(),
            error_pages: Default::default(),
            upstream: None,
        };
        let connection =
            ConnectionInfo::new("192.0.2.1:1".parse().unwrap(), "192.0.2.2:2".parse().unwrap(), false);
        let mut sent = Vec::new();
        for_each_param(&parts, &connection, &ScriptTarget::app("/"), 0, &site, &mut |name, value| {
            if name.starts_with(b"HTTP_") {
                sent.push((name.to_vec(), value.to_vec()));
            }
        });
        prop_assert_eq!(sent, collected_header_params(&parts, underscores_in_headers));
    }
}
