//! What serving HTTPS changes for every response: plain-HTTP requests redirected to the same
//! URL over HTTPS (`tls.redirect_to_https`), and the `Strict-Transport-Security` header on
//! HTTPS responses (`tls.hsts`; RFC 6797 §7.2 forbids it over plain HTTP, where an attacker
//! could forge it anyway).

use http::header::{HeaderValue, LOCATION, STRICT_TRANSPORT_SECURITY};
use http::request::Parts;
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::cgi_params::{request_host_name, ConnectionInfo};
use crate::error::plain_response;

/// The 308 (method and body kept, as Caddy answers) sending a plain-HTTP request to the HTTPS
/// listener on `https_port`: same host, path and query. A request without a usable host goes to
/// the address it reached, as nginx's `$host` falls back to the server's own name.
pub fn redirect(
    parts: &Parts,
    connection: &ConnectionInfo,
    https_port: u16,
) -> Response<ResponseBody> {
    let host = match request_host_name(parts) {
        Some(host) => String::from_utf8_lossy(host).into_owned(),
        None => match connection.local_addr() {
            std::net::SocketAddr::V4(address) => address.ip().to_string(),
            std::net::SocketAddr::V6(address) => format!("[{}]", address.ip()),
        },
    };
    let port = match https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());
    // An HTTP/1.1 absolute-form target ("GET http://host/path") has its path here too; an
    // asterisk-form one (OPTIONS *) has none and goes to the root.
    let path = if path.starts_with('/') { path } else { "/" };
    let mut response = plain_response(StatusCode::PERMANENT_REDIRECT);
    // The host passed `is_authority_without_userinfo` and the path came through hyper's URI
    // parser: both are valid header text, so this only fails on a bug.
    if let Ok(location) = HeaderValue::try_from(format!("https://{host}{port}{path}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// Adds `hsts` to a response sent over HTTPS, unless the application set its own.
pub fn add_hsts(response: &mut Response<ResponseBody>, hsts: &HeaderValue) {
    response
        .headers_mut()
        .entry(STRICT_TRANSPORT_SECURITY)
        .or_insert_with(|| hsts.clone());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut request = http::Request::builder().uri(uri);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn connection() -> ConnectionInfo {
        ConnectionInfo::new(
            "192.0.2.1:5000".parse().unwrap(),
            "198.51.100.7:80".parse().unwrap(),
            false,
        )
    }

    fn location(parts: &Parts, port: u16) -> String {
        let response = redirect(parts, &connection(), port);
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        response.headers()[LOCATION].to_str().unwrap().to_owned()
    }

    #[test]
    fn the_same_url_over_https() {
        let request = parts("/a/b.php?x=1&y=%20", Some("example.com:8080"));
        assert_eq!(
            location(&request, 443),
            "https://example.com/a/b.php?x=1&y=%20"
        );
        assert_eq!(
            location(&request, 8443),
            "https://example.com:8443/a/b.php?x=1&y=%20"
        );
    }

    #[test]
    fn without_a_host_the_address_reached() {
        assert_eq!(location(&parts("/", None), 443), "https://198.51.100.7/");
        assert_eq!(
            location(&parts("/", Some("bad host")), 443),
            "https://198.51.100.7/"
        );
        let v6 = ConnectionInfo::new(
            "[2001:db8::1]:5000".parse().unwrap(),
            "[2001:db8::2]:80".parse().unwrap(),
            false,
        );
        let response = redirect(&parts("/x", None), &v6, 443);
        assert_eq!(response.headers()[LOCATION], "https://[2001:db8::2]/x");
    }

    #[test]
    fn an_absolute_form_target_keeps_its_host_and_path() {
        let request = parts("http://example.org/p?q", Some("ignored.example"));
        assert_eq!(location(&request, 443), "https://example.org/p?q");
    }

    #[test]
    fn hsts_does_not_replace_the_applications_own() {
        let hsts = HeaderValue::from_static("max-age=60");
        let mut plain = plain_response(StatusCode::OK);
        add_hsts(&mut plain, &hsts);
        assert_eq!(plain.headers()[STRICT_TRANSPORT_SECURITY], "max-age=60");
        let mut own = plain_response(StatusCode::OK);
        own.headers_mut().insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=5"),
        );
        add_hsts(&mut own, &hsts);
        assert_eq!(own.headers()[STRICT_TRANSPORT_SECURITY], "max-age=5");
    }
}
