//! TLS listeners end to end, with real clients: curl (HTTP/2 and HTTP/1.1 by ALPN, certificate
//! checked against a test CA), `openssl s_client`, and a rustls client. SNI picks the
//! certificate, PHP (php-fpm) sees HTTPS and the TLS facts, bad certificate files are refused
//! naming the file, certificates reload under load without a failed request, sessions resume
//! (across a reload too), plain HTTP is redirected, HSTS is sent over HTTPS only, and a client
//! that never finishes its handshake is closed at the deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fcgate::config::Config;
use fcgate::server::RunningGateway;
use fcgi_testkit::http::HttpClient;
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use fcgi_testkit::tls::{SiteFiles, TestCa};
use http::Version;
use support::{field, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway in front of php-fpm with a TLS listener and a plain one (in that order), the
/// certificates listed, and more top-level `settings` / `[tls]` lines.
fn config(fpm: &PhpFpm, certificates: &[&SiteFiles], settings: &str, tls: &str) -> Config {
    let entries: Vec<String> = certificates
        .iter()
        .map(|files| files.toml_entry())
        .collect();
    let text = format!(
        "listen = [\"127.0.0.1:0 tls\", \"127.0.0.1:0\"]\naccess_log = \"off\"\nroot = '{}'\n\
         {settings}\n[tls]\ncertificates = [{}]\n{tls}\n[upstream]\nservers = [\"{}\"]\n",
        fpm.docroot().display(),
        entries.join(", "),
        fpm.address(),
    );
    fcgate::config::parse_file_text(&text)
        .and_then(|raw| raw.validate())
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
}

async fn start(config: Config) -> RunningGateway {
    fcgate::server::start(config).await.unwrap()
}

/// Whether `program` runs here; in CI its absence fails the test rather than skipping it.
fn installed(program: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok()
        || Command::new(program).arg("version").output().is_ok();
    if !found {
        let in_ci = std::env::var("CI")
            .is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
        assert!(!in_ci, "{program} is not installed; CI=true makes that a failure (apt-get install -y {program})");
        eprintln!("!! SKIPPING: {program} is not installed (apt-get install -y {program})");
    }
    found
}

/// curl over HTTPS to `name` (resolved to the gateway on `port`) with `args`: whether it
/// succeeded, the body followed by the HTTP version on its own line, and curl's stderr.
fn curl(ca: &Path, name: &str, port: u16, path: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_version}"])
        .args(args)
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_each_name_its_certificate_and_php_sees_https_over_h2_and_http11() {
    if !installed("curl") {
        return;
    }
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let first = ca.issue("first", &["first.test"]).unwrap();
    let exact = ca.issue("exact", &["a.test", "www.a.test"]).unwrap();
    let wildcard = ca.issue("wildcard", &["*.wild.test"]).unwrap();
    let gateway = start(config(&fpm, &[&first, &exact, &wildcard], "", "")).await;
    let port = gateway.tls_addr().unwrap().port();
    let ca_path = ca.ca_path();
    let results = tokio::task::spawn_blocking(move || {
        let run = |name: &str, args: &[&str]| curl(&ca_path, name, port, "/connection.php", args);
        [
            run("a.test", &[]),
            run("www.a.test", &["--http1.1"]),
            run("api.wild.test", &[]),
            run("first.test", &["--tlsv1.2", "--tls-max", "1.2"]),
            // No certificate names it: the first one is presented, which curl rejects.
            run("other.test", &[]),
        ]
    })
    .await
    .unwrap();
    let [a, www, wild, first_tls12, other] = results;
    for (what, (ok, body, stderr)) in [("a.test", &a), ("www.a.test", &www), ("wildcard", &wild)] {
        assert!(ok, "{what}: {stderr}");
        assert_eq!(field(body, "HTTPS"), "on", "{body}");
        assert_eq!(field(body, "REQUEST_SCHEME"), "https");
        assert_eq!(field(body, "SERVER_PORT"), port.to_string());
        assert_eq!(field(body, "SSL_PROTOCOL"), "TLSv1.3");
        assert!(field(body, "SSL_CIPHER").starts_with("TLS_"), "{body}");
    }
    assert_eq!(a.1.lines().last(), Some("2"), "ALPN h2 by default");
    assert_eq!(field(&a.1, "SERVER_PROTOCOL"), "HTTP/2.0");
    assert_eq!(www.1.lines().last(), Some("1.1"));
    assert_eq!(field(&www.1, "SERVER_PROTOCOL"), "HTTP/1.1");
    assert!(first_tls12.0, "{}", first_tls12.2);
    assert_eq!(field(&first_tls12.1, "SSL_PROTOCOL"), "TLSv1.2");
    assert!(
        field(&first_tls12.1, "SSL_CIPHER").starts_with("ECDHE-"),
        "{}",
        first_tls12.1
    );
    assert!(
        !other.0,
        "curl accepted first.test's certificate for other.test"
    );
    assert!(
        other.2.contains("certificate") || other.2.contains("SSL"),
        "{}",
        other.2
    );

    // The plain listener beside it: no HTTPS for PHP.
    let plain = gateway.listeners()[1].local_addr;
    let mut client = HttpClient::http1(plain).await;
    let body = client.get("/connection.php").await.unwrap().text();
    assert_eq!(field(&body, "HTTPS"), "");
    assert_eq!(field(&body, "REQUEST_SCHEME"), "http");
    assert_eq!(field(&body, "SSL_PROTOCOL"), "");
    // Which certificate a client without a matching name gets: the first, as openssl shows.
    if installed("openssl") {
        let subject = tokio::task::spawn_blocking(move || {
            let output = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "openssl s_client -connect 127.0.0.1:{port} -servername other.test </dev/null 2>/dev/null \
                     | openssl x509 -noout -ext subjectAltName"
                ))
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .await
        .unwrap();
        assert!(subject.contains("DNS:first.test"), "{subject}");
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_the_http_version_for_a_rustls_client() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let site = ca.issue("site", &["site.test"]).unwrap();
    let gateway = start(config(&fpm, &[&site], "", "")).await;
    let address = gateway.tls_addr().unwrap();
    for (alpn, expected) in [
        (&[&b"h2"[..], b"http/1.1"][..], Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], Version::HTTP_11),
        // No ALPN at all: HTTP/1.1, never a guess at HTTP/2.
        (&[][..], Version::HTTP_11),
    ] {
        let config = ca.client_config(alpn).unwrap();
        let mut client = HttpClient::https(address, "site.test", config)
            .await
            .unwrap();
        assert_eq!(client.version(), expected);
        for _ in 0..3 {
            let response = client.get("/connection.php").await.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(field(&response.text(), "HTTPS"), "on");
        }
        assert_eq!(client.connections_opened(), 1, "kept alive over TLS");
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_keepalive_connection_is_parked_and_serves_again() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let site = ca.issue("site", &["site.test"]).unwrap();
    let gateway = start(config(&fpm, &[&site], "", "")).await;
    let config = ca.client_config(&[b"http/1.1"]).unwrap();
    let mut client = HttpClient::https(gateway.tls_addr().unwrap(), "site.test", config)
        .await
        .unwrap();
    for round in 0..3 {
        assert_eq!(client.get("/hello.php").await.unwrap().status, 200);
        // Parked after PARK_AFTER without a request: hyper's state dropped, TLS kept.
        wait_until("the TLS connection is parked", || {
            gateway.connections.parked() == 1
        })
        .await;
        assert_eq!(gateway.connections.open(), 1, "round {round}");
    }
    assert_eq!(client.connections_opened(), 1);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_and_survive_a_certificate_reload() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let site = ca.issue("site", &["site.test"]).unwrap();
    let gateway = start(config(&fpm, &[&site], "", "")).await;
    let address = gateway.tls_addr().unwrap();
    // One client configuration: its session store remembers what the server gave it.
    let client_config = ca.client_config(&[b"http/1.1"]).unwrap();
    let handshake = |config: Arc<rustls::ClientConfig>| async move {
        let mut stream = fcgi_testkit::tls::connect(address, "site.test", config)
            .await
            .unwrap();
        stream
            .write_all(b"GET /hello.php HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        stream.get_ref().1.handshake_kind()
    };
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(handshake(Arc::clone(&client_config)).await, Some(Full));
    assert_eq!(handshake(Arc::clone(&client_config)).await, Some(Resumed));
    // A new certificate for the same name, put in force by a reload: the ticket keys stay.
    let renewed = ca.issue("site", &["site.test"]).unwrap();
    gateway
        .reload(config(&fpm, &[&renewed], "", ""))
        .await
        .unwrap();
    assert_eq!(handshake(Arc::clone(&client_config)).await, Some(Resumed));
    gateway.stop().await;
}

/// The certificate a fresh handshake gets, as DER.
async fn presented(address: std::net::SocketAddr, ca: &TestCa) -> Vec<u8> {
    let config = ca.client_config(&[b"http/1.1"]).unwrap();
    let stream = fcgi_testkit::tls::connect(address, "site.test", config)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_under_load_without_a_failed_request_and_a_bad_file_changes_nothing() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let old = ca.issue("old", &["site.test"]).unwrap();
    let gateway = Arc::new(start(config(&fpm, &[&old], "", "")).await);
    let address = gateway.tls_addr().unwrap();
    let old_der = presented(address, &ca).await;

    // Four clients: two keep their connection, two open a new one (new handshake) per request.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for index in 0..4 {
        let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
        let alpn: &[&[u8]] = if index % 2 == 0 {
            &[b"h2"]
        } else {
            &[b"http/1.1"]
        };
        let config = ca.client_config(alpn).unwrap();
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut kept = HttpClient::https(address, "site.test", Arc::clone(&config))
                .await
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let result = if index < 2 {
                    kept.get("/hello.php").await
                } else {
                    match HttpClient::https(address, "site.test", Arc::clone(&config)).await {
                        Ok(mut fresh) => fresh.get("/hello.php").await,
                        Err(error) => Err(error),
                    }
                };
                match result {
                    Ok(response) if response.status == 200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => failures.push(format!("status {}", response.status)),
                    Err(error) => failures.push(format!("{error:#}")),
                }
            }
            failures
        }));
    }
    wait_until("requests flow", || served.load(Ordering::Relaxed) > 50).await;

    // A broken file: refused, and the old certificate keeps serving.
    let broken = SiteFiles {
        cert: ca.dir().join("broken.pem"),
        key: old.key.clone(),
    };
    std::fs::write(&broken.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let refused = gateway
        .reload(config(&fpm, &[&broken], "", ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("broken.pem"), "{refused}");
    assert_eq!(presented(address, &ca).await, old_der);

    let new = ca.issue("new", &["site.test"]).unwrap();
    gateway.reload(config(&fpm, &[&new], "", "")).await.unwrap();
    let new_der = presented(address, &ca).await;
    assert_ne!(new_der, old_der, "new handshakes get the new certificate");
    let after_reload = served.load(Ordering::Relaxed);
    wait_until("requests flow after the reload", || {
        served.load(Ordering::Relaxed) > after_reload + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let failures = client.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert!(served.load(Ordering::Relaxed) > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_and_hsts_goes_out_over_https_only() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let site = ca.issue("site", &["site.test"]).unwrap();
    let tls = "redirect_to_https = true\nhsts = \"max-age=31536000; includeSubDomains\"";
    let gateway = start(config(&fpm, &[&site], "", tls)).await;
    let tls_port = gateway.tls_addr().unwrap().port();
    let plain = gateway.listeners()[1].local_addr;
    let mut client = HttpClient::http1(plain).await;
    let request = http::Request::post("/upload.php?x=1&y=2")
        .header("host", "site.test")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"a=b")))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status, 308, "method and body kept");
    assert_eq!(
        response.header("location"),
        Some(format!("https://site.test:{tls_port}/upload.php?x=1&y=2").as_str())
    );
    assert_eq!(response.header("strict-transport-security"), None);

    let config = ca.client_config(&[b"h2"]).unwrap();
    let mut secure = HttpClient::https(gateway.tls_addr().unwrap(), "site.test", config)
        .await
        .unwrap();
    for path in ["/hello.php", "/static/nothing-here"] {
        let response = secure.get(path).await.unwrap();
        assert_eq!(
            response.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{path}"
        );
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_handshake_is_closed_and_garbage_changes_nothing() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let site = ca.issue("site", &["site.test"]).unwrap();
    let gateway = start(config(&fpm, &[&site], "client_header_timeout = \"1s\"", "")).await;
    let address = gateway.tls_addr().unwrap();
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(address).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    // Closed, not answered in plain text.
    let read = tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut sink))
        .await
        .expect("the garbage connection is closed");
    assert!(read.is_ok() || sink.is_empty());
    assert!(!sink.starts_with(b"HTTP/"), "{sink:?}");
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sink))
        .await
        .expect("the silent connection is closed at client_header_timeout");
    assert!(read.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Still serving.
    let config = ca.client_config(&[b"h2"]).unwrap();
    let mut client = HttpClient::https(address, "site.test", config)
        .await
        .unwrap();
    assert_eq!(client.get("/hello.php").await.unwrap().status, 200);
    wait_until("only the good connection is open", || {
        gateway.connections.open() == 1
    })
    .await;
    gateway.stop().await;
}

#[test]
fn bad_certificate_files_are_refused_at_check_and_start_naming_the_file() {
    let ca = TestCa::new().unwrap();
    let good = ca.issue("good", &["good.test"]).unwrap();
    let other = ca.issue("other", &["other.test"]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_valid(
            "expired",
            &["old.test"],
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    let future = ca
        .issue_valid(
            "future",
            &["new.test"],
            now + time::Duration::days(1),
            now + time::Duration::days(30),
        )
        .unwrap();
    let not_pem = ca.dir().join("not-pem.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let broken = ca.dir().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = ca.dir().join("missing.pem");
    let cases: Vec<(SiteFiles, String, &str)> = vec![
        (
            SiteFiles {
                cert: missing.clone(),
                key: good.key.clone(),
            },
            missing.display().to_string(),
            "cannot read",
        ),
        (
            SiteFiles {
                cert: not_pem.clone(),
                key: good.key.clone(),
            },
            not_pem.display().to_string(),
            "holds no certificate",
        ),
        (
            SiteFiles {
                cert: broken.clone(),
                key: good.key.clone(),
            },
            broken.display().to_string(),
            "not a valid PEM file",
        ),
        (
            SiteFiles {
                cert: good.cert.clone(),
                key: good.cert.clone(),
            },
            good.cert.display().to_string(),
            "holds no private key",
        ),
        (
            expired.clone(),
            expired.cert.display().to_string(),
            "expired on",
        ),
        (
            future.clone(),
            future.cert.display().to_string(),
            "is not valid before",
        ),
        (
            SiteFiles {
                cert: good.cert.clone(),
                key: other.key.clone(),
            },
            other.key.display().to_string(),
            "does not belong to the certificate",
        ),
    ];
    for (files, named, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("fcgate.toml");
        std::fs::write(
            &config_path,
            format!(
                "listen = \"127.0.0.1:0 tls\"\naccess_log = \"off\"\n[tls]\ncertificates = [{}]\n\
                 [upstream]\nservers = [\"127.0.0.1:9\"]\n",
                files.toml_entry()
            ),
        )
        .unwrap();
        for command in [&["check", "--config"][..], &["--config"][..]] {
            let output = Command::new(env!("CARGO_BIN_EXE_fcgate"))
                .args(command)
                .arg(&config_path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{command:?} accepted {files:?}");
            assert!(
                stderr.contains(&named) && stderr.contains(says),
                "{command:?} with {files:?}: expected {says:?} naming {named}, got:\n{stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_announces_the_configured_settings_to_nghttp() {
    if !installed("nghttp") {
        return;
    }
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let ca = TestCa::new().unwrap();
    let site = ca.issue("site", &["site.test"]).unwrap();
    let settings = "http2_max_concurrent_streams = 7\nhttp2_stream_window = \"256KiB\"\n\
                    http2_connection_window = \"4MiB\"";
    let gateway = start(config(&fpm, &[&site], settings, "")).await;
    let port = gateway.tls_addr().unwrap().port();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("nghttp")
            .args(["-nv", "-t", "20"])
            .arg(format!("https://127.0.0.1:{port}/hello.php"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let trace = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{trace}");
    assert!(
        trace.contains("[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7]"),
        "{trace}"
    );
    assert!(
        trace.contains("[SETTINGS_INITIAL_WINDOW_SIZE(0x04):262144]"),
        "{trace}"
    );
    // The connection window is raised from RFC 9113's 65,535 by a WINDOW_UPDATE.
    assert!(
        trace.contains(&format!(
            "window_size_increment={}",
            4 * 1024 * 1024 - 65_535
        )),
        "{trace}"
    );
    assert!(trace.contains(":status: 200"), "{trace}");
    gateway.stop().await;
}
