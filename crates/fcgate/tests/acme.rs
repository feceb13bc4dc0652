//! Automatic certificates end to end against Pebble (Debian's ACME test server) on loopback:
//! issuance over HTTP-01 and over TLS-ALPN-01, renewal of a short-lived certificate while
//! clients keep connecting (none fails), the stored certificate reused by the next process
//! without a new order, and a failed validation reported while the old certificate keeps
//! serving. Clients check the chain against Pebble's root, as a browser would against a real
//! CA's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fcgate::config::Config;
use fcgate::server::RunningGateway;
use fcgi_testkit::http::HttpClient;
use fcgi_testkit::pebble::{free_port, free_ports, Pebble, PebbleOptions};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use fcgi_testkit::tls::client_config_trusting;

const DOMAIN: &str = "site.test";

/// The gateway in front of php-fpm, with `listen` as given and `[acme]` for DOMAIN from
/// `pebble`, storing under `storage`.
fn config(fpm: &PhpFpm, pebble: &Pebble, listen: &str, storage: &Path, acme: &str) -> Config {
    let text = format!(
        "listen = {listen}\naccess_log = \"off\"\nroot = '{}'\n\
         [acme]\ndomains = [\"{DOMAIN}\"]\ncontact = [\"mailto:admin@site.test\"]\n\
         directory = \"{}\"\ndirectory_ca = '{}'\nstorage = '{}'\n{acme}\n\
         [upstream]\nservers = [\"{}\"]\n",
        fpm.docroot().display(),
        pebble.directory(),
        pebble.directory_ca().display(),
        storage.display(),
        fpm.address(),
    );
    fcgate::config::parse_file_text(&text)
        .and_then(|raw| raw.validate())
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
}

/// Waits until the gateway has obtained `count` certificates in all.
async fn obtained(gateway: &RunningGateway, count: u64, pebble: &Pebble) {
    let acme = gateway.gateway.acme().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acme.obtained() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no certificate #{count}: last error {:?}\npebble: {}",
            acme.last_error(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A GET over HTTPS on a new connection, the chain checked against Pebble's root.
async fn fetch(address: std::net::SocketAddr, pebble: &Pebble) -> anyhow::Result<u16> {
    let config = client_config_trusting(&pebble.issuer_root(), &[b"h2", b"http/1.1"])?;
    let mut client = HttpClient::https(address, DOMAIN, config).await?;
    Ok(client.get("/hello.php").await?.status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_renews_under_load_and_the_next_process_reuses_the_stored_certificate() {
    if !Pebble::installed() {
        return;
    }
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let [http_port, tls_port] = free_ports(&[]);
    let pebble = Pebble::start(PebbleOptions {
        http_port,
        tls_port,
        // Renewed two thirds in: after 16 s.
        validity: Duration::from_secs(24),
    })
    .unwrap();
    let storage = tempfile::tempdir().unwrap();
    let listen = format!("[\"127.0.0.1:{tls_port} tls\", \"127.0.0.1:{http_port}\"]");
    let settings = config(
        &fpm,
        &pebble,
        &listen,
        storage.path(),
        "challenges = [\"http-01\"]",
    );
    let gateway = Arc::new(fcgate::server::start(settings.clone()).await.unwrap());
    obtained(&gateway, 1, &pebble).await;
    let address = gateway.tls_addr().unwrap();
    assert_eq!(fetch(address, &pebble).await.unwrap(), 200);
    let first = gateway.gateway.acme().unwrap().certificate_facts().unwrap();
    assert_eq!(first.names, [DOMAIN]);
    for file in ["account.json", "certificate.pem", "certificate.key"] {
        assert!(storage.path().join(file).exists(), "{file} stored");
    }

    // Clients connect and reconnect through the renewal: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let root = pebble.issuer_root();
    let load = {
        let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
        tokio::spawn(async move {
            let config = client_config_trusting(&root, &[b"h2", b"http/1.1"]).unwrap();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let result = async {
                    let mut client =
                        HttpClient::https(address, DOMAIN, Arc::clone(&config)).await?;
                    client.get("/hello.php").await
                }
                .await;
                match result {
                    Ok(response) if response.status == 200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => failures.push(format!("status {}", response.status)),
                    Err(error) => failures.push(format!("{error:#}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        })
    };
    obtained(&gateway, 2, &pebble).await;
    let renewed = gateway.gateway.acme().unwrap().certificate_facts().unwrap();
    assert!(renewed.not_after > first.not_after, "a new certificate");
    let after_renewal = served.load(Ordering::Relaxed);
    support::wait_until("requests go on after the renewal", || {
        served.load(Ordering::Relaxed) > after_renewal + 10
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let failures = load.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let gateway = Arc::into_inner(gateway).unwrap();
    gateway.stop().await;

    // The next process serves the stored certificate at once, without asking the CA. Its ports
    // are the fixed ones Pebble validates against, in the ephemeral range: another test's
    // outgoing connection may hold one for a moment after the first gateway let it go.
    let mut next = fcgate::server::start(settings.clone()).await;
    for _ in 0..50 {
        match &next {
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                next = fcgate::server::start(settings.clone()).await;
            }
            _ => break,
        }
    }
    let next = next.unwrap();
    let stored = next.gateway.acme().unwrap().certificate_facts().unwrap();
    assert_eq!(stored.not_after, renewed.not_after);
    assert_eq!(fetch(next.tls_addr().unwrap(), &pebble).await.unwrap(), 200);
    assert_eq!(next.gateway.acme().unwrap().obtained(), 0);
    next.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_on_the_tls_listener_alone() {
    if !Pebble::installed() {
        return;
    }
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let [tls_port, unused_port] = free_ports(&[]);
    let pebble = Pebble::start(PebbleOptions {
        // Nothing listens there: only TLS-ALPN-01 can pass.
        http_port: unused_port,
        tls_port,
        validity: Duration::from_secs(3600),
    })
    .unwrap();
    let storage = tempfile::tempdir().unwrap();
    let listen = format!("\"127.0.0.1:{tls_port} tls\"");
    let gateway = fcgate::server::start(config(&fpm, &pebble, &listen, storage.path(), ""))
        .await
        .unwrap();
    // Before the certificate exists, handshakes fail cleanly; none is left hanging.
    obtained(&gateway, 1, &pebble).await;
    assert_eq!(
        fetch(gateway.tls_addr().unwrap(), &pebble).await.unwrap(),
        200
    );
    assert_eq!(gateway.gateway.acme().unwrap().last_error(), None);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_validation_is_reported_and_the_old_certificate_keeps_serving() {
    if !Pebble::installed() {
        return;
    }
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let [http_port, tls_port] = free_ports(&[]);
    let pebble = Pebble::start(PebbleOptions {
        http_port,
        tls_port,
        validity: Duration::from_secs(24),
    })
    .unwrap();
    let storage = tempfile::tempdir().unwrap();
    let listen =
        |http_port: u16| format!("[\"127.0.0.1:{tls_port} tls\", \"127.0.0.1:{http_port}\"]");
    let acme_settings = "challenges = [\"http-01\"]";
    let gateway = fcgate::server::start(config(
        &fpm,
        &pebble,
        &listen(http_port),
        storage.path(),
        acme_settings,
    ))
    .await
    .unwrap();
    obtained(&gateway, 1, &pebble).await;
    let first = gateway.gateway.acme().unwrap().certificate_facts().unwrap();
    // The plain listener moves away from the port the CA validates on: the renewal's HTTP-01
    // validation finds nothing there.
    gateway
        .reload(config(
            &fpm,
            &pebble,
            &listen(free_port()),
            storage.path(),
            acme_settings,
        ))
        .await
        .unwrap();
    let acme = gateway.gateway.acme().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let error = loop {
        if let Some(error) = acme.last_error() {
            break error;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("reported: {error}");
    assert!(error.contains("validation failed"), "{error}");
    assert!(error.contains(&format!("{DOMAIN}: http-01")), "{error}");
    assert_eq!(acme.obtained(), 1);
    assert_eq!(acme.certificate_facts().unwrap().not_after, first.not_after);
    assert_eq!(
        fetch(gateway.tls_addr().unwrap(), &pebble).await.unwrap(),
        200
    );
    gateway.stop().await;
}
