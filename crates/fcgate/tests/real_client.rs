//! The real client behind a proxy: `trusted_proxies` with X-Forwarded-For, Forwarded and
//! X-Forwarded-Proto (trusted, untrusted, multi-hop, malformed), and the PROXY protocol v1/v2 on
//! plain and TLS listeners (valid, truncated, garbage, never sent). PHP (php-fpm) reports what
//! it sees, the access log shows the real client, and HAProxy, the real counterpart, fronts the
//! gateway with `send-proxy`, `send-proxy-v2`, `send-proxy-v2-ssl` (after terminating TLS) and
//! `option forwardfor`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use fcgate::config::Config;
use fcgate::server::RunningGateway;
use fcgi_testkit::http::HttpClient;
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use fcgi_testkit::tls::TestCa;
use http::Request;
use http_body_util::Full;
use support::field;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(fpm: &PhpFpm, listen: &str, settings: &str) -> Config {
    let text = format!(
        "listen = {listen}\nroot = '{}'\n{settings}\n[upstream]\nservers = [\"{}\"]\n",
        fpm.docroot().display(),
        fpm.address(),
    );
    fcgate::config::parse_file_text(&text)
        .and_then(|raw| raw.validate())
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
}

async fn start(config: Config) -> RunningGateway {
    fcgate::server::start(config).await.unwrap()
}

/// connection.php's answer to a GET carrying `headers`.
async fn seen_with(address: SocketAddr, headers: &[(&str, &str)]) -> String {
    let mut request = Request::get("/connection.php");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut client = HttpClient::http1(address).await;
    let response = client
        .send(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    response.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_x_forwarded_for_names_the_client_and_an_untrusted_ones_changes_nothing() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let trusting = start(config(
        &fpm,
        "\"127.0.0.1:0\"",
        &format!(
            "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\naccess_log = '{}'",
            log.display()
        ),
    ))
    .await;
    let address = trusting.local_addr;
    // One hop: the proxy (loopback, trusted) says who connected to it.
    let body = seen_with(address, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "203.0.113.7");
    assert_eq!(field(&body, "REMOTE_PORT"), "0", "XFF carries no port");
    assert_eq!(field(&body, "HTTPS"), "");
    // Several hops, the inner proxies trusted, a spoofed entry the client wrote on the left.
    let body = seen_with(
        address,
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.1.2.3")],
    )
    .await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "203.0.113.9");
    // The same list over two header lines, as proxies that append a line write it.
    let body = seen_with(
        address,
        &[
            ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
            ("x-forwarded-for", "10.1.2.3"),
        ],
    )
    .await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "203.0.113.9");
    // Every hop trusted: the leftmost.
    let body = seen_with(address, &[("x-forwarded-for", "10.9.9.9, 10.1.2.3")]).await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "10.9.9.9");
    // A malformed entry stops the walk: the last address believed is the client.
    let body = seen_with(
        address,
        &[("x-forwarded-for", "203.0.113.5, not-an-address, 10.1.2.3")],
    )
    .await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "10.1.2.3");
    // X-Forwarded-Proto from the trusted proxy: the client used HTTPS.
    let body = seen_with(
        address,
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(field(&body, "HTTPS"), "on");
    assert_eq!(field(&body, "REQUEST_SCHEME"), "https");
    trusting.stop().await;
    // The access log shows the real client, not the proxy. Its writer writes the last lines
    // after the gateway has let go of it, a moment after `stop`.
    support::wait_until("the requests are logged", || {
        std::fs::read_to_string(&log).is_ok_and(|text| !text.is_empty())
    })
    .await;
    let lines = std::fs::read_to_string(&log).unwrap();
    let first = lines.lines().next().unwrap();
    assert!(first.starts_with("203.0.113.7 "), "{first}");

    let distrusting = start(config(
        &fpm,
        "\"127.0.0.1:0\"",
        "trusted_proxies = [\"192.0.2.1\"]\naccess_log = \"off\"",
    ))
    .await;
    let body = seen_with(
        distrusting.local_addr,
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "127.0.0.1");
    assert_ne!(field(&body, "REMOTE_PORT"), "0");
    assert_eq!(field(&body, "HTTPS"), "");
    distrusting.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_names_the_client_with_its_port_and_scheme() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let gateway = start(config(
        &fpm,
        "\"127.0.0.1:0\"",
        "trusted_proxies = [\"127.0.0.1\"]\nreal_ip_header = \"Forwarded\"\naccess_log = \"off\"",
    ))
    .await;
    let address = gateway.local_addr;
    let body = seen_with(
        address,
        &[(
            "forwarded",
            "for=198.51.100.1, for=\"[2001:db8::1]:4711\";proto=https;by=127.0.0.1",
        )],
    )
    .await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "2001:db8::1");
    assert_eq!(field(&body, "REMOTE_PORT"), "4711");
    assert_eq!(field(&body, "HTTPS"), "on");
    // `unknown` cannot be located: the walk stops and the proxy itself is the client.
    let body = seen_with(address, &[("forwarded", "for=unknown")]).await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "127.0.0.1");
    // In Forwarded mode, X-Forwarded-For is just another header.
    let body = seen_with(address, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "127.0.0.1");
    gateway.stop().await;
}

/// A PROXY v2 header for a TCP/IPv4 connection from `source` to `destination`.
fn proxy_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (source, destination) else {
        panic!("IPv4 only here");
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&source.ip().octets());
    header.extend_from_slice(&destination.ip().octets());
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}

/// Sends `prefix` then a GET for connection.php on one connection, returns the whole answer.
async fn raw(address: SocketAddr, prefix: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut bytes = prefix.to_vec();
    bytes
        .extend_from_slice(b"GET /connection.php HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    // One write: the header and the request share a segment, as from a balancer.
    stream.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_names_the_client_and_anything_else_is_closed() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let site = ca.issue("site", &["site.test"]).unwrap();
    let gateway = start(config(
        &fpm,
        "[\"127.0.0.1:0 proxy_protocol\", \"127.0.0.1:0 tls proxy_protocol\", \"127.0.0.1:0\"]",
        &format!(
            "access_log = \"off\"\nclient_header_timeout = \"1s\"\n[tls]\ncertificates = [{}]",
            site.toml_entry()
        ),
    ))
    .await;
    let listeners = gateway.listeners();
    let (plain, tls) = (listeners[0].local_addr, listeners[1].local_addr);

    let v1 = raw(plain, b"PROXY TCP4 198.51.100.7 192.0.2.80 51234 80\r\n").await;
    assert!(v1.starts_with("HTTP/1.1 200"), "{v1}");
    assert_eq!(field(&v1, "REMOTE_ADDR"), "198.51.100.7");
    assert_eq!(field(&v1, "REMOTE_PORT"), "51234");
    assert_eq!(field(&v1, "SERVER_PORT"), "80");
    let v6 = raw(plain, b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n").await;
    assert_eq!(field(&v6, "REMOTE_ADDR"), "2001:db8::7");
    let v2 = raw(
        plain,
        &proxy_v2(
            "203.0.113.9:40000".parse().unwrap(),
            "192.0.2.1:8080".parse().unwrap(),
        ),
    )
    .await;
    assert_eq!(field(&v2, "REMOTE_ADDR"), "203.0.113.9");
    assert_eq!(field(&v2, "REMOTE_PORT"), "40000");
    assert_eq!(field(&v2, "HTTPS"), "");
    // A balancer that terminated TLS says so in PP2_TYPE_SSL (HAProxy's send-proxy-v2-ssl).
    let mut terminated = proxy_v2(
        "203.0.113.9:40000".parse().unwrap(),
        "192.0.2.1:443".parse().unwrap(),
    );
    terminated[15] += 8;
    terminated.extend_from_slice(&[0x20, 0x00, 0x05, 0x01, 0, 0, 0, 0]);
    let ssl = raw(plain, &terminated).await;
    assert_eq!(field(&ssl, "REMOTE_ADDR"), "203.0.113.9");
    assert_eq!(field(&ssl, "HTTPS"), "on");
    // UNKNOWN (a balancer's health check): the connection's own addresses.
    let unknown = raw(plain, b"PROXY UNKNOWN\r\n").await;
    assert_eq!(field(&unknown, "REMOTE_ADDR"), "127.0.0.1");

    // No header, garbage, a truncated header: closed without an answer.
    for bad in [
        &b""[..],
        b"GARBAGE\r\n",
        b"PROXY TCP4 198.51.100.7 192.0.2.80 51234\r\n",
        &proxy_v2(
            "203.0.113.9:40000".parse().unwrap(),
            "192.0.2.1:8080".parse().unwrap(),
        )[..20],
    ] {
        let answer = raw(plain, bad).await;
        assert!(!answer.contains("HTTP/1.1 200"), "{bad:?}: {answer}");
    }
    // A client that never sends the header is closed at client_header_timeout.
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(plain).await.unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sink))
        .await
        .expect("closed at the deadline")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));

    // On a TLS listener: the header, then the handshake (which may share its segment).
    let mut stream = TcpStream::connect(tls).await.unwrap();
    stream
        .write_all(&proxy_v2(
            "203.0.113.50:4242".parse().unwrap(),
            "192.0.2.1:443".parse().unwrap(),
        ))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("site.test").unwrap();
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]).unwrap());
    let mut secure = connector.connect(name, stream).await.unwrap();
    secure
        .write_all(b"GET /connection.php HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    secure.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(field(&answer, "REMOTE_ADDR"), "203.0.113.50");
    assert_eq!(field(&answer, "HTTPS"), "on");
    assert_eq!(field(&answer, "SERVER_PORT"), "443");

    // The plain listener beside them takes no header and is unaffected.
    let body = seen_with(listeners[2].local_addr, &[]).await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "127.0.0.1");
    gateway.stop().await;
}

/// A free loopback port (bound and released: HAProxy binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_php_sees_the_client_by_proxy_protocol_v1_v2_and_forwardfor() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        let in_ci = std::env::var("CI")
            .is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
        assert!(
            !in_ci,
            "haproxy is not installed; CI=true makes that a failure (apt-get install -y haproxy)"
        );
        eprintln!("!! SKIPPING: haproxy is not installed (apt-get install -y haproxy)");
        return;
    }
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let gateway = start(config(
        &fpm,
        "[\"127.0.0.1:0 proxy_protocol\", \"127.0.0.1:0\"]",
        "access_log = \"off\"\ntrusted_proxies = [\"127.0.0.1\"]",
    ))
    .await;
    let listeners = gateway.listeners();
    let (proxied, forwarded) = (listeners[0].local_addr, listeners[1].local_addr);
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let dir = tempfile::tempdir().unwrap();
    // HAProxy terminates TLS on the fourth frontend: certificate and key in one file.
    let ca = TestCa::new().unwrap();
    let site = ca.issue("site", &["site.test"]).unwrap();
    let combined = dir.path().join("site.pem");
    let pem =
        std::fs::read_to_string(&site.cert).unwrap() + &std::fs::read_to_string(&site.key).unwrap();
    std::fs::write(&combined, pem).unwrap();
    let haproxy_config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &haproxy_config,
        format!(
            "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v1\n  bind 127.0.0.1:{}\n  default_backend v1\n\
             backend v1\n  server gateway {proxied} send-proxy\n\
             frontend v2\n  bind 127.0.0.1:{}\n  default_backend v2\n\
             backend v2\n  server gateway {proxied} send-proxy-v2\n\
             frontend xff\n  bind 127.0.0.1:{}\n  option forwardfor\n  default_backend xff\n\
             backend xff\n  server gateway {forwarded}\n\
             frontend tls\n  bind 127.0.0.1:{} ssl crt {}\n  default_backend tls\n\
             backend tls\n  server gateway {proxied} send-proxy-v2-ssl\n",
            ports[0],
            ports[1],
            ports[2],
            ports[3],
            combined.display(),
        ),
    )
    .unwrap();
    let mut haproxy = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&haproxy_config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ca_path = ca.ca_path();
    let results = tokio::task::spawn_blocking(move || {
        ports.map(|port| {
            let mut last = String::new();
            let url = if port == ports[3] {
                format!("https://site.test:{port}/connection.php")
            } else {
                format!("http://127.0.0.1:{port}/connection.php")
            };
            // HAProxy needs a moment to bind.
            for _ in 0..50 {
                let output = Command::new("curl")
                    .args([
                        "-sS",
                        "--max-time",
                        "10",
                        "-w",
                        "\nCURL_LOCAL_PORT: %{local_port}\n",
                    ])
                    .args([
                        "--resolve",
                        &format!("site.test:{port}:127.0.0.1"),
                        "--cacert",
                    ])
                    .arg(&ca_path)
                    .arg(&url)
                    .output()
                    .unwrap();
                last = String::from_utf8_lossy(&output.stdout).into_owned();
                if output.status.success() && last.contains("REMOTE_PORT") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last
        })
    })
    .await
    .unwrap();
    haproxy.kill().unwrap();
    let _ = haproxy.wait();
    let kinds = [
        "send-proxy",
        "send-proxy-v2",
        "forwardfor",
        "send-proxy-v2-ssl",
    ];
    for (kind, body) in kinds.iter().zip(&results) {
        // Only HAProxy's TLS frontend makes the client's connection HTTPS.
        let https = if *kind == "send-proxy-v2-ssl" {
            "on"
        } else {
            ""
        };
        assert_eq!(field(body, "HTTPS"), https, "{kind}: {body}");
        assert!(body.contains("REMOTE_PORT"), "{kind}: {body}");
        assert_eq!(field(body, "REMOTE_ADDR"), "127.0.0.1", "{kind}");
        if *kind == "forwardfor" {
            // X-Forwarded-For carries the address only.
            assert_eq!(field(body, "REMOTE_PORT"), "0", "{kind}: {body}");
        } else {
            // The port curl connected from: the client's, not HAProxy's own connection's.
            assert_eq!(
                field(body, "REMOTE_PORT"),
                field(body, "CURL_LOCAL_PORT"),
                "{kind}: {body}"
            );
        }
    }
    gateway.stop().await;
}
