//! Tests of the params of one request, one rule per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Method, Request};

use super::*;
use crate::config::SiteMode;

fn app_site() -> SiteConfig {
    SiteConfig {
        mode: SiteMode::App,
        underscores_in_headers: false,
        extra_params: Vec::new(),
        rules: Default::default(),
        error_pages: Default::default(),
        upstream: None,
    }
}

fn connection() -> ConnectionInfo {
    ConnectionInfo::new(
        "192.0.2.7:51000".parse().unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
        false,
    )
}

fn php_target() -> ScriptTarget {
    ScriptTarget {
        script_filename: "/srv/www/shop/index.php".into(),
        script_name: "/shop/index.php".into(),
        path_info: "/cart/7".into(),
        document_root: Some(std::path::Path::new("/srv/www").into()),
        query: None,
        remote_user: None,
    }
}

/// Every param, in order, as text.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(
        request: Request<()>,
        conn: &ConnectionInfo,
        target: &ScriptTarget,
        content_length: u64,
        site: &SiteConfig,
    ) -> Params {
        let (parts, ()) = request.into_parts();
        let mut params = Vec::new();
        for_each_param(
            &parts,
            conn,
            target,
            content_length,
            site,
            &mut |name, value| {
                params.push((
                    String::from_utf8(name.to_vec()).unwrap(),
                    String::from_utf8(value.to_vec()).unwrap(),
                ));
            },
        );
        Params(params)
    }

    fn simple(request: Request<()>) -> Params {
        Params::of(request, &connection(), &php_target(), 0, &app_site())
    }

    fn get(&self, name: &str) -> Option<&str> {
        let mut found = self.0.iter().filter(|(param, _)| param == name);
        let first = found.next().map(|(_, value)| value.as_str());
        assert!(found.next().is_none(), "{name} sent twice: {:?}", self.0);
        first
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

#[test]
fn standard_params_in_nginx_order() {
    let request = Request::get("/shop/index.php/cart/7?sort=asc&x=%20")
        .header("host", "shop.example:8080")
        .body(())
        .unwrap();
    let params = Params::simple(request);
    assert_eq!(
        params.names(),
        [
            "QUERY_STRING",
            "REQUEST_METHOD",
            "CONTENT_TYPE",
            "CONTENT_LENGTH",
            "SCRIPT_NAME",
            "REQUEST_URI",
            "DOCUMENT_URI",
            "DOCUMENT_ROOT",
            "SERVER_PROTOCOL",
            "REQUEST_SCHEME",
            "GATEWAY_INTERFACE",
            "SERVER_SOFTWARE",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "SERVER_ADDR",
            "SERVER_PORT",
            "SERVER_NAME",
            "REDIRECT_STATUS",
            "SCRIPT_FILENAME",
            "PATH_INFO",
            "PATH_TRANSLATED",
            "HTTP_HOST",
        ]
    );
    let expected = [
        ("QUERY_STRING", "sort=asc&x=%20"),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SCRIPT_NAME", "/shop/index.php"),
        ("REQUEST_URI", "/shop/index.php/cart/7?sort=asc&x=%20"),
        ("DOCUMENT_URI", "/shop/index.php"),
        ("DOCUMENT_ROOT", "/srv/www"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        (
            "SERVER_SOFTWARE",
            concat!("fcgate/", env!("CARGO_PKG_VERSION")),
        ),
        ("REMOTE_ADDR", "192.0.2.7"),
        ("REMOTE_PORT", "51000"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "8080"),
        ("SERVER_NAME", "shop.example"),
        ("REDIRECT_STATUS", "200"),
        ("SCRIPT_FILENAME", "/srv/www/shop/index.php"),
        ("PATH_INFO", "/cart/7"),
        ("PATH_TRANSLATED", "/srv/www/cart/7"),
        ("HTTP_HOST", "shop.example:8080"),
    ];
    for (name, value) in expected {
        assert_eq!(params.get(name), Some(value), "{name}");
    }
    assert_eq!(params.get("HTTPS"), None);
}

#[test]
fn content_length_is_the_real_byte_count() {
    let chunked = Request::post("/upload")
        .header("transfer-encoding", "chunked")
        .header("content-type", "text/plain")
        .body(())
        .unwrap();
    let params = Params::of(chunked, &connection(), &php_target(), 11, &app_site());
    assert_eq!(params.get("CONTENT_LENGTH"), Some("11"));
    assert_eq!(params.get("CONTENT_TYPE"), Some("text/plain"));
    assert_eq!(params.get("HTTP_TRANSFER_ENCODING"), None);
    // As nginx: the headers also go as HTTP_*, which PyPI's `fastcgi` reads the body by.
    assert_eq!(params.get("HTTP_CONTENT_TYPE"), Some("text/plain"));
    assert_eq!(params.get("HTTP_CONTENT_LENGTH"), None);

    let lying = Request::post("/")
        .header("content-length", "999")
        .body(())
        .unwrap();
    let params = Params::of(lying, &connection(), &php_target(), 5, &app_site());
    assert_eq!(params.get("CONTENT_LENGTH"), Some("5"));
    assert_eq!(
        params.get("HTTP_CONTENT_LENGTH"),
        Some("5"),
        "the real count"
    );
    assert_eq!(params.get("HTTP_CONTENT_TYPE"), None);

    let empty_post = Request::post("/")
        .header("content-length", "0")
        .body(())
        .unwrap();
    assert_eq!(Params::simple(empty_post).get("CONTENT_LENGTH"), Some("0"));

    let http2_body = Request::put("/").version(Version::HTTP_2).body(()).unwrap();
    let params = Params::of(http2_body, &connection(), &php_target(), 3, &app_site());
    assert_eq!(params.get("CONTENT_LENGTH"), Some("3"));

    let bodyless = Request::get("/").body(()).unwrap();
    assert_eq!(Params::simple(bodyless).get("CONTENT_LENGTH"), Some(""));
}

#[test]
fn https_only_when_the_client_connection_is_tls() {
    let tls = ConnectionInfo::new(connection().remote_addr(), connection().local_addr(), true);
    let params = Params::of(
        Request::get("/").body(()).unwrap(),
        &tls,
        &php_target(),
        0,
        &app_site(),
    );
    assert_eq!(params.get("HTTPS"), Some("on"));
    assert_eq!(params.get("REQUEST_SCHEME"), Some("https"));
}

#[test]
fn http2_authority_becomes_http_host() {
    let request = Request::builder()
        .method(Method::GET)
        .version(Version::HTTP_2)
        .uri("https://h2.example:8443/a?b=c")
        .body(())
        .unwrap();
    let params = Params::simple(request);
    assert_eq!(params.get("SERVER_PROTOCOL"), Some("HTTP/2.0"));
    assert_eq!(params.get("HTTP_HOST"), Some("h2.example:8443"));
    assert_eq!(params.get("SERVER_NAME"), Some("h2.example"));
    assert_eq!(params.get("REQUEST_URI"), Some("/a?b=c"));
    assert_eq!(params.get("QUERY_STRING"), Some("b=c"));
}

#[test]
fn authority_wins_over_a_host_header() {
    let request = Request::get("http://real.example/")
        .header("host", "spoofed.example")
        .body(())
        .unwrap();
    let params = Params::simple(request);
    assert_eq!(params.get("HTTP_HOST"), Some("real.example"));
    assert_eq!(params.get("SERVER_NAME"), Some("real.example"));
}

#[test]
fn server_name_falls_back_to_the_local_address() {
    let no_host = Request::get("/")
        .version(Version::HTTP_10)
        .body(())
        .unwrap();
    let params = Params::simple(no_host);
    assert_eq!(params.get("SERVER_NAME"), Some("127.0.0.1"));
    assert_eq!(params.get("HTTP_HOST"), None);
    assert_eq!(params.get("SERVER_PROTOCOL"), Some("HTTP/1.0"));

    let garbage = Request::get("/").header("host", "a b/c").body(()).unwrap();
    assert_eq!(
        Params::simple(garbage).get("SERVER_NAME"),
        Some("127.0.0.1")
    );

    let v6_local = ConnectionInfo::new(
        connection().remote_addr(),
        "[2001:db8::1]:8080".parse().unwrap(),
        false,
    );
    let params = Params::of(
        Request::get("/").body(()).unwrap(),
        &v6_local,
        &php_target(),
        0,
        &app_site(),
    );
    assert_eq!(params.get("SERVER_NAME"), Some("[2001:db8::1]"));
    assert_eq!(params.get("SERVER_ADDR"), Some("2001:db8::1"));
}

#[test]
fn ipv6_host_keeps_its_brackets() {
    let request = Request::get("/")
        .header("host", "[::1]:8080")
        .body(())
        .unwrap();
    assert_eq!(Params::simple(request).get("SERVER_NAME"), Some("[::1]"));
}

#[test]
fn v4_mapped_addresses_are_shown_as_v4() {
    let dual_stack = ConnectionInfo::new(
        "[::ffff:198.51.100.4]:4000".parse().unwrap(),
        "[::ffff:127.0.0.1]:80".parse().unwrap(),
        false,
    );
    let params = Params::of(
        Request::get("/").body(()).unwrap(),
        &dual_stack,
        &php_target(),
        0,
        &app_site(),
    );
    assert_eq!(params.get("REMOTE_ADDR"), Some("198.51.100.4"));
    assert_eq!(params.get("SERVER_ADDR"), Some("127.0.0.1"));
    assert_eq!(params.get("SERVER_PORT"), Some("80"));
}

#[test]
fn headers_become_http_params_and_repeats_are_joined() {
    let request = Request::get("/")
        .header("accept", "text/html")
        .header("accept", "application/json")
        .header("x-forwarded-for", "203.0.113.1")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("authorization", "Bearer t")
        .body(())
        .unwrap();
    let params = Params::simple(request);
    assert_eq!(
        params.get("HTTP_ACCEPT"),
        Some("text/html, application/json")
    );
    assert_eq!(params.get("HTTP_X_FORWARDED_FOR"), Some("203.0.113.1"));
    assert_eq!(params.get("HTTP_COOKIE"), Some("a=1; b=2"));
    assert_eq!(params.get("HTTP_AUTHORIZATION"), Some("Bearer t"));
}

#[test]
fn empty_values_of_a_repeated_header() {
    let request = Request::get("/")
        .header("x-list", "")
        .header("x-list", "")
        .header("x-list", "a")
        .header("x-list", "")
        .header("x-list", "b")
        .header("x-empty", "")
        .header("x-empty", "")
        .body(())
        .unwrap();
    let params = Params::simple(request);
    assert_eq!(params.get("HTTP_X_LIST"), Some("a, , b"));
    assert_eq!(params.get("HTTP_X_EMPTY"), Some(""));
}

#[test]
fn names_meeting_in_one_param_keep_header_order() {
    let mut site = app_site();
    site.underscores_in_headers = true;
    let request = Request::get("/")
        .header("x-user", "1")
        .header("accept", "a")
        .header("x_user", "2")
        .header("x-user", "3")
        .header("x_USER", "4")
        .body(())
        .unwrap();
    let params = Params::of(request, &connection(), &php_target(), 0, &site);
    assert_eq!(params.get("HTTP_X_USER"), Some("1, 3, 2, 4"));
    let names = params.names();
    let user = names.iter().position(|name| *name == "HTTP_X_USER");
    let accept = names.iter().position(|name| *name == "HTTP_ACCEPT");
    assert!(user < accept, "{names:?}");
}

#[test]
fn proxy_header_is_always_dropped() {
    let mut site = app_site();
    site.underscores_in_headers = true;
    let request = Request::get("/")
        .header("proxy", "http://evil:1")
        .body(())
        .unwrap();
    let params = Params::of(request, &connection(), &php_target(), 0, &site);
    assert_eq!(params.get("HTTP_PROXY"), None);
}

#[test]
fn underscore_headers_are_dropped_unless_allowed() {
    let request = || {
        Request::get("/")
            .header("x_user", "forged")
            .header("x-user", "real")
            .body(())
            .unwrap()
    };
    let params = Params::simple(request());
    assert_eq!(params.get("HTTP_X_USER"), Some("real"));

    let mut site = app_site();
    site.underscores_in_headers = true;
    let params = Params::of(request(), &connection(), &php_target(), 0, &site);
    assert_eq!(params.get("HTTP_X_USER"), Some("forged, real"));

    // Content_Length before Content-Length: still the real byte count (found by fuzzing).
    let forged_length = Request::post("/")
        .header("content_length", "99")
        .header("content-length", "0")
        .body(())
        .unwrap();
    let params = Params::of(forged_length, &connection(), &php_target(), 0, &site);
    assert_eq!(params.get("HTTP_CONTENT_LENGTH"), Some("0"));
}

#[test]
fn header_names_with_dots_or_other_characters_are_dropped() {
    // PHP turns `.` into `_`: X.Forwarded-For would become HTTP_X_FORWARDED_FOR.
    let request = Request::get("/")
        .header("x.forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "1.1.1.1")
        .header("x~y", "1")
        .header("x!y", "1")
        .body(())
        .unwrap();
    let params = Params::simple(request);
    assert_eq!(params.get("HTTP_X_FORWARDED_FOR"), Some("1.1.1.1"));
    let names = params.names();
    assert!(
        names.iter().all(|name| name
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')),
        "{names:?}"
    );
}

#[test]
fn extra_params_come_last_and_replace_same_names() {
    let mut site = app_site();
    site.extra_params = vec![
        ("APP_ENV".into(), "production".into()),
        ("SERVER_NAME".into(), "canonical.example".into()),
        ("HTTP_X_TAG".into(), "fixed".into()),
    ];
    let request = Request::get("/")
        .header("host", "x.example")
        .header("x-tag", "client")
        .body(())
        .unwrap();
    let params = Params::of(request, &connection(), &php_target(), 0, &site);
    assert_eq!(params.get("SERVER_NAME"), Some("canonical.example"));
    assert_eq!(params.get("HTTP_X_TAG"), Some("fixed"));
    assert_eq!(params.get("APP_ENV"), Some("production"));
    let names = params.names();
    assert_eq!(
        names[names.len() - 3..],
        ["APP_ENV", "SERVER_NAME", "HTTP_X_TAG"]
    );
}

#[test]
fn path_translated_only_with_path_info() {
    let mut target = php_target();
    target.path_info.clear();
    let params = Params::of(
        Request::get("/").body(()).unwrap(),
        &connection(),
        &target,
        0,
        &app_site(),
    );
    assert_eq!(params.get("PATH_INFO"), Some(""));
    assert_eq!(params.get("PATH_TRANSLATED"), None);
    assert_eq!(params.get("DOCUMENT_URI"), Some("/shop/index.php"));
}

#[test]
fn app_mode_target() {
    let target = ScriptTarget::app("/api/caf%C3%A9/%2e%2e");
    assert_eq!(target.path_info, "/api/café/..");
    assert_eq!(target.script_name, "");
    let params = Params::of(
        Request::get("/api/caf%C3%A9/%2e%2e").body(()).unwrap(),
        &connection(),
        &target,
        0,
        &app_site(),
    );
    assert_eq!(params.get("SCRIPT_NAME"), Some(""));
    assert_eq!(params.get("SCRIPT_FILENAME"), None);
    assert_eq!(params.get("PATH_INFO"), Some("/api/café/.."));
    assert_eq!(params.get("DOCUMENT_URI"), Some("/api/café/.."));
    assert_eq!(params.get("DOCUMENT_ROOT"), Some(""));
    assert_eq!(params.get("PATH_TRANSLATED"), None);
    assert_eq!(params.get("REQUEST_URI"), Some("/api/caf%C3%A9/%2e%2e"));

    assert_eq!(ScriptTarget::app("/bad%ff").path_info, "/bad%ff");
    assert_eq!(ScriptTarget::app("/bad%zz").path_info, "/bad%zz");
}
