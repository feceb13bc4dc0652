//! Servers written as host names, against a real DNS server whose answers change: Debian's
//! dnsmasq on a free loopback port, answering for `*.fcgate.test` from a hosts file that each
//! test rewrites (dnsmasq reads it again on SIGHUP). The backends listen on one port of
//! 127.0.0.2, 127.0.0.3 and 127.0.0.4, so one `name:port` covers them all.
//!
//! Without dnsmasq the tests print a loud warning and skip; with CI=true they fail instead
//! (`.ci/run` installs it: `apt-get install dnsmasq-base`, the binary without the service).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fcgate::server::RunningGateway;
use fcgi::net::Address;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::HttpClient;
use support::wait_until;

/// The name every test resolves; its port is the backends'.
const NAME: &str = "app.fcgate.test";

/// A dnsmasq answering only from its hosts file, killed on drop.
struct Dnsmasq {
    child: Child,
    port: u16,
    hosts: PathBuf,
    log: PathBuf,
    _directory: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq answering `hosts` (lines `IP NAME`), or `None` (after a loud warning)
    /// when it is not installed.
    fn start(hosts: &str) -> Option<Dnsmasq> {
        let program = find_dnsmasq()?;
        let mut directory = tempfile::tempdir().unwrap();
        // Run as root, dnsmasq drops to an unprivileged user before it reads the file again
        // on SIGHUP: the directory and file must be readable by anyone.
        set_mode(directory.path(), 0o755);
        let hosts_path = directory.path().join("hosts");
        let log = directory.path().join("log");
        // A port another process takes between the probe and dnsmasq's bind: try another.
        for _ in 0..5 {
            std::fs::write(&hosts_path, hosts).unwrap();
            set_mode(&hosts_path, 0o644);
            let port = free_udp_and_tcp_port();
            let child = Command::new(&program)
                .arg("--keep-in-foreground")
                .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
                .arg("--listen-address=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", hosts_path.display()))
                // Names of the test domain that are not in the file: NXDOMAIN, not REFUSED.
                .arg("--local=/fcgate.test/")
                // The answers' TTL: what the gateway waits for when no resolve_interval is set.
                .arg("--local-ttl=1")
                .arg("--pid-file=")
                .arg("--log-facility=-")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
            let mut dnsmasq = Dnsmasq {
                child,
                port,
                hosts: hosts_path.clone(),
                log: log.clone(),
                _directory: directory,
            };
            if dnsmasq.started() {
                return Some(dnsmasq);
            }
            // Its drop kills what is left; the directory goes on to the next try.
            directory = std::mem::replace(&mut dnsmasq._directory, tempfile::tempdir().unwrap());
        }
        panic!("dnsmasq did not start on any of five ports");
    }

    /// Waits for dnsmasq to have read its file (it binds its sockets before); false if it
    /// exited (the port was taken).
    fn started(&mut self) -> bool {
        for _ in 0..500 {
            if self.child.try_wait().unwrap().is_some() {
                eprintln!("dnsmasq exited: {}", self.log_text());
                return false;
            }
            if self.reads() > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("dnsmasq did not start: {}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times dnsmasq has read the hosts file.
    fn reads(&self) -> usize {
        let needle = format!("read {}", self.hosts.display());
        self.log_text().matches(&needle).count()
    }

    /// The address to give as `upstream.resolver`.
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the answers: rewrites the file, sends SIGHUP, waits until dnsmasq read it.
    async fn answer(&self, hosts: &str) {
        let before = self.reads();
        std::fs::write(&self.hosts, hosts).unwrap();
        let sent = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        wait_until("dnsmasq read its hosts file again", || {
            self.reads() > before
        })
        .await;
    }

    /// Stops answering at all.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A loopback port free for UDP and TCP a moment ago (dnsmasq serves both).
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// dnsmasq's path (Debian puts it in /usr/sbin, which a non-root PATH often lacks), or `None`
/// after a loud warning; a failure when `CI=true`, where a skip would pass vacuously.
fn find_dnsmasq() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|directory| directory.join("dnsmasq"))
        .find(|candidate| {
            candidate.metadata().is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        });
    if found.is_none() {
        let in_ci = std::env::var("CI")
            .is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
        let install = "apt-get install dnsmasq-base";
        if in_ci {
            panic!(
                "dnsmasq is not installed; CI=true, so this is a failure, not a skip. \
                 Install it: {install}"
            );
        }
        let bar = "!".repeat(78);
        eprintln!(
            "\n{bar}\n!! SKIPPING A DNS TEST: dnsmasq is not installed.\n\
             !! Install it: {install}\n{bar}\n"
        );
    }
    found
}

/// Test backends on one port of 127.0.0.2, .3, .4…: what `NAME` resolves to.
async fn backends(count: u8) -> (u16, Vec<TestBackend>) {
    let first = TestBackend::start_at(
        &Address::Tcp("127.0.0.2:0".into()),
        BackendOptions::default(),
    )
    .await;
    let Address::Tcp(bound) = first.address() else {
        unreachable!("a TCP backend has a TCP address")
    };
    let port: u16 = bound.rsplit_once(':').unwrap().1.parse().unwrap();
    let mut all = vec![first];
    for host in 3..2 + count {
        let address = Address::Tcp(format!("127.0.0.{host}:{port}"));
        all.push(TestBackend::start_at(&address, BackendOptions::default()).await);
    }
    (port, all)
}

/// dnsmasq's hosts file naming `NAME` at each of `hosts` (the last octet of 127.0.0.x).
fn hosts_file(hosts: &[u8]) -> String {
    hosts
        .iter()
        .map(|host| format!("127.0.0.{host} {NAME}\n"))
        .collect()
}

async fn gateway(dns: &Dnsmasq, port: u16, upstream: &str) -> RunningGateway {
    fcgate::server::start(config(dns, port, upstream))
        .await
        .unwrap()
}

fn config(dns: &Dnsmasq, port: u16, upstream: &str) -> fcgate::config::Config {
    config_with(dns, port, "", upstream)
}

/// A gateway config with the `top`-level settings and the `[upstream]` ones, whose one server
/// is `NAME` at `port`, resolved by `dns`.
fn config_with(dns: &Dnsmasq, port: u16, top: &str, upstream: &str) -> fcgate::config::Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\naccess_log = \"off\"\n{top}\n\
         [upstream]\nservers = [\"{NAME}:{port}\"]\n\
         resolver = [\"{}\"]\nworker_idle_timeout = \"60s\"\n{upstream}\n",
        dns.address()
    );
    fcgate::config::parse_file_text(&text)
        .unwrap()
        .validate()
        .unwrap()
}

/// The addresses the gateway balances over now.
fn addresses(gateway: &RunningGateway) -> Vec<String> {
    let servers = gateway.gateway.upstream().servers();
    servers
        .iter()
        .map(|server| server.pool().address().to_string())
        .collect()
}

/// A request the backend answers after 5 s, on a connection of its own.
fn slow_request(gateway: std::net::SocketAddr) -> tokio::task::JoinHandle<http::StatusCode> {
    tokio::spawn(async move {
        let mut client = HttpClient::http1(gateway).await;
        client.get("/?sleep_ms=5000").await.unwrap().status
    })
}

async fn get_ok(client: &mut HttpClient, count: usize) {
    for _ in 0..count {
        let response = client.get("/").await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

#[tokio::test]
async fn a_name_with_two_addresses_is_two_servers_sharing_the_traffic() {
    let Some(dns) = Dnsmasq::start(&hosts_file(&[2, 3])) else {
        return;
    };
    let (port, backends) = backends(2).await;
    let config = config_with(
        &dns,
        port,
        "admin_listen = \"127.0.0.1:0\"",
        "resolve_interval = \"200ms\"",
    );
    let gateway = fcgate::server::start(config).await.unwrap();
    assert_eq!(
        addresses(&gateway),
        [format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")]
    );
    let servers = gateway.gateway.upstream().servers();
    let name = format!("{NAME}:{port}");
    assert_eq!(servers[0].name(), Some(name.as_str()));
    assert_eq!(servers[1].label(), format!("{name} (127.0.0.3:{port})"));

    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 40).await;
    assert_eq!((backends[0].requests(), backends[1].requests()), (20, 20));

    // /metrics: `server` is the address, `name` the host name as written.
    let mut admin = HttpClient::http1(gateway.admin_addr.unwrap()).await;
    let metrics = admin.get("/metrics").await.unwrap().text();
    for host in [2, 3] {
        let series =
            format!("fcgate_backend_up{{server=\"127.0.0.{host}:{port}\",name=\"{name}\"}} 1");
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
}

#[tokio::test]
async fn addresses_that_vanish_drain_without_failing_requests_and_new_ones_get_traffic() {
    let Some(dns) = Dnsmasq::start(&hosts_file(&[2, 3])) else {
        return;
    };
    let (port, backends) = backends(3).await;
    let [stays, leaves, arrives] = &backends[..] else {
        unreachable!()
    };
    // No resolve_interval: dnsmasq's TTL of 1 s decides.
    let gateway = gateway(&dns, port, "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 10).await;
    assert_eq!((stays.requests(), leaves.requests()), (5, 5));

    // A slow request on each server; the second goes to the server without one.
    let first = slow_request(gateway.local_addr);
    wait_until("the first slow request reached a backend", || {
        stays.requests() + leaves.requests() == 11
    })
    .await;
    let second = slow_request(gateway.local_addr);
    wait_until("the second slow request reached a backend", || {
        stays.requests() + leaves.requests() == 12
    })
    .await;
    assert_eq!((stays.requests(), leaves.requests()), (6, 6));

    dns.answer(&hosts_file(&[2])).await;
    wait_until("127.0.0.3 is no longer a server", || {
        addresses(&gateway) == [format!("127.0.0.2:{port}")]
    })
    .await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "the slow requests were still in flight when their server went"
    );
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    get_ok(&mut client, 10).await;
    assert_eq!((stays.requests(), leaves.requests()), (16, 6));

    dns.answer(&hosts_file(&[2, 4])).await;
    wait_until("127.0.0.4 is a server", || addresses(&gateway).len() == 2).await;
    get_ok(&mut client, 10).await;
    assert_eq!((stays.requests(), arrives.requests()), (21, 5));
    assert_eq!(leaves.requests(), 6);
}

#[tokio::test]
async fn a_name_that_stops_resolving_keeps_its_last_addresses() {
    let Some(mut dns) = Dnsmasq::start(&hosts_file(&[2, 3])) else {
        return;
    };
    let (port, backends) = backends(2).await;
    let gateway = gateway(
        &dns,
        port,
        "resolve_interval = \"100ms\"\nresolver_timeout = \"300ms\"",
    )
    .await;
    let upstream = gateway.gateway.upstream();
    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 10).await;

    // NXDOMAIN: the name is gone.
    dns.answer("").await;
    let failed = upstream.resolution_rounds().1;
    wait_until("two rounds found no address", || {
        upstream.resolution_rounds().1 >= failed + 2
    })
    .await;
    assert_eq!(addresses(&gateway).len(), 2);
    get_ok(&mut client, 10).await;

    // No name server at all.
    dns.stop();
    let failed = upstream.resolution_rounds().1;
    wait_until("a round found no name server", || {
        upstream.resolution_rounds().1 > failed
    })
    .await;
    assert_eq!(addresses(&gateway).len(), 2);
    get_ok(&mut client, 10).await;
    assert_eq!((backends[0].requests(), backends[1].requests()), (15, 15));
}

#[tokio::test]
async fn a_reload_takes_the_names_over_and_stops_the_old_generations_resolution() {
    let Some(dns) = Dnsmasq::start(&hosts_file(&[2, 3])) else {
        return;
    };
    let (port, backends) = backends(2).await;
    let upstream_settings = "resolve_interval = \"100ms\"";
    let gateway = gateway(&dns, port, upstream_settings).await;
    let old = gateway.gateway.upstream();
    let done = gateway
        .reload(config(&dns, port, upstream_settings))
        .await
        .unwrap();
    assert_eq!((done.kept_servers, done.new_servers), (2, 0));

    dns.answer(&hosts_file(&[2])).await;
    wait_until("the new generation follows DNS", || {
        addresses(&gateway) == [format!("127.0.0.2:{port}")]
    })
    .await;
    let rounds = old.resolution_rounds();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        old.resolution_rounds(),
        rounds,
        "the old upstream still resolves"
    );
    assert_eq!(old.len(), 2, "the retired upstream was changed");

    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 10).await;
    assert_eq!(backends[0].requests(), 10);
}

#[tokio::test]
async fn a_name_that_does_not_resolve_at_start_is_an_error_naming_it() {
    let Some(dns) = Dnsmasq::start("") else {
        return;
    };
    let Err(error) = fcgate::server::start(config(&dns, 9000, "")).await else {
        panic!("started without any address for {NAME}");
    };
    let message = error.to_string();
    assert!(
        message.contains(&format!("`{NAME}:9000` does not resolve")),
        "{message}"
    );

    // `fcgate check` says the same.
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("fcgate.toml");
    std::fs::write(
        &file,
        format!(
            "[upstream]\nservers = [\"{NAME}:9000\"]\nresolver = [\"{}\"]\n",
            dns.address()
        ),
    )
    .unwrap();
    let cli = <fcgate::cli::Cli as clap::Parser>::try_parse_from([
        "fcgate".as_ref(),
        "check".as_ref(),
        "--config".as_ref(),
        file.as_os_str(),
    ])
    .unwrap();
    let error = fcgate::run(cli).await.unwrap_err();
    assert!(
        format!("{error:#}").contains(&format!("`{NAME}:9000` does not resolve")),
        "{error:#}"
    );
}

#[tokio::test]
async fn localhost_is_one_server_with_one_cap_whichever_family_the_backend_listens_on() {
    // Where /etc/hosts makes `localhost` 127.0.0.1 and ::1 (Debian's does): one backend, not
    // two servers that would each get the cap. This one listens on IPv4 only; connects by name
    // try both, in order. Without ::1 in /etc/hosts it checks the connect by name alone.
    let backend = TestBackend::start_at(
        &Address::Tcp("127.0.0.1:0".into()),
        BackendOptions::default(),
    )
    .await;
    let Address::Tcp(bound) = backend.address() else {
        unreachable!("a TCP backend has a TCP address")
    };
    let port: u16 = bound.rsplit_once(':').unwrap().1.parse().unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\naccess_log = \"off\"\n\
         [upstream]\nservers = [\"localhost:{port}\"]\nmax_conns = 2\n"
    );
    let config = fcgate::config::parse_file_text(&text)
        .unwrap()
        .validate()
        .unwrap();
    let gateway = fcgate::server::start(config).await.unwrap();
    let servers = addresses(&gateway);
    assert_eq!(servers.len(), 1, "{servers:?}");
    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 10).await;
    assert_eq!(backend.requests(), 10);
}
