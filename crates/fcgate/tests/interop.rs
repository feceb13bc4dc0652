//! Interop: fcgate in front of FastCGI apps it did not write, each a few lines under
//! `tests/interop/` on a library installed from Debian or PyPI — Perl's FCGI (the C libfcgi),
//! fcgiwrap running a CGI script, Python's flup (plain and multiplexed), php-cgi, php-fpm, and
//! Go's net/http/fcgi (plain and multiplexed). Every app answers the same requests: `op=echo`
//! echoes a word from the query, `op=hash` answers the length and MD5 of the body, `op=big`
//! sends `lines` numbered 16-byte lines, anything else is a 418 with an `X-Interop` header
//! naming the app (PHP names its SAPI, so php-cgi cannot stand in for php-fpm). For each
//! app: a GET with a query, a 1 MiB POST, a 5 MiB response, the status and header, 200
//! concurrent requests each answered with its own body, and the backend connections opened
//! (counted by a relay between fcgate and the app).
//!
//! Seen with every app: all 204 requests on at most `max_conns` backend connections (plus the
//! FCGI_GET_VALUES one where multiplexing is asked for), and no FCGI_ABORT_REQUEST. Go's and
//! flup's answers carry a Content-Length and their END_REQUEST comes after the body's last
//! record, the order that once cost the gateway its pooled connection; the other apps send no
//! length. The whole file takes about 15 s on 2 cores; Go's app is built at test time
//! (`go build`, standard library only, about 1 s).
//!
//! Beside them: a single-process libfcgi app under 64 clients, and libfcgi's one-shot client
//! `cgi-fcgi` sharing a php-fpm pool with fcgate.
//!
//! A missing interpreter or package is a loud skip on a developer machine and a failure with
//! CI=true (scripts/test and .ci/run install them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi::net::Address;
use fcgi_testkit::http::{run_load, HttpClient, Response};
use fcgi_testkit::php::{PhpCgi, PhpFpm, PhpFpmOptions, ProcessManager};
use fcgi_testkit::php_fixture_docroot;
use fcgi_testkit::process::ProcessGroup;
use fcgi_testkit::relay::CountingRelay;
use fcgi_testkit::Listen;
use http::Request;
use http_body_util::Full;
use support::{md5_hex, pool_stats, pseudo_random_bytes, start_gateway, wait_until};
use tempfile::TempDir;

/// The 5 MiB response: `op=big&lines=BIG_LINES`, each line `%015d\n`.
const BIG_LINES: usize = 5 * 1024 * 1024 / 16;
const UPLOAD_BYTES: usize = 1 << 20;
const CONCURRENT: u64 = 200;
/// The requests of [`exercise`] before the concurrent ones: echo, POST, big, status.
const SINGLE_REQUESTS: u64 = 4;
const REQUESTS: u64 = SINGLE_REQUESTS + CONCURRENT;
const READY_WITHIN: Duration = Duration::from_secs(10);

// ---- the apps ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_fcgi_on_libfcgi() {
    if !perl_module_present("FCGI", "libfcgi-perl") {
        return;
    }
    // Two processes accepting on one socket, each serving one connection at a time.
    let app = ForeignApp::start("perl-fcgi", Listen::Unix, |address, _| {
        let mut command = Command::new("perl");
        command
            .arg(interop_file("perl_fcgi.pl"))
            .arg(perl_listen(address))
            .arg("2");
        command
    })
    .await;
    let site = Site::start("perl-fcgi", "/", Backend::Foreign(app), "", KEEP_ALIVE_2).await;
    site.exercise().await;
    site.assert_pooled_connections_held(2, 0);
}

/// A single-process app that keeps its connection (libfcgi honours FCGI_KEEP_CONN) serves one
/// connection at a time: a new one waits in its listen queue until that one closes. With no cap
/// configured the gateway learns that under load, and meanwhile no request may sit on a
/// connection that no worker took: 64 clients, the slowest answered within a second. (Requests
/// sent on such connections waited 2.4 to 10 s, until the served connection retired.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_process_libfcgi_app_under_64_clients_keeps_every_request_moving() {
    if !perl_module_present("FCGI", "libfcgi-perl") {
        return;
    }
    let app = ForeignApp::start("perl-fcgi", Listen::Unix, |address, _| {
        let mut command = Command::new("perl");
        command
            .arg(interop_file("perl_fcgi.pl"))
            .arg(perl_listen(address))
            .arg("1");
        command
    })
    .await;
    let site = Site::start(
        "perl-fcgi, one process",
        "/",
        Backend::Foreign(app),
        "",
        "queue_timeout = \"15s\"",
    )
    .await;
    let report = site
        .within(
            "64 clients",
            Duration::from_secs(40),
            run_load(
                site.gateway.local_addr,
                6_000,
                64,
                Duration::from_secs(30),
                |i| {
                    Request::get(format!("/?op=echo&word=token-{i}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap()
                },
                |i, response| response.body == format!("echo: token-{i}\n").as_bytes(),
            ),
        )
        .await;
    assert_eq!(
        (report.count(200), report.bodies_ok),
        (6_000, 6_000),
        "{report:?}\n{}",
        site.context()
    );
    let stats = pool_stats(&site.gateway);
    assert!(
        stats.saturation_events > 0,
        "the default cap of 4 was never found too high for one process\n{}",
        site.context()
    );
    assert!(
        report.slowest < Duration::from_secs(1),
        "a request waited {:?} with 64 clients on a one-process app\n{report:?}\n{}",
        report.slowest,
        site.context()
    );
    eprintln!(
        "one-process libfcgi app: 6,000 requests from 64 clients in {:?}, slowest {:?}",
        report.elapsed, report.slowest
    );
}

/// A foreign client beside fcgate on one php-fpm pool: libfcgi's `cgi-fcgi`, one request and
/// out, as a cron job or a health check would. fcgate's idle connection holds the pool's only
/// worker and would keep it a minute (`worker_idle_timeout = "60s"`); its look at php-fpm's
/// listen queue sees the newcomer and hands the worker over, so it is served within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_cgi_fcgi_client_gets_the_worker_fcgate_holds_within_a_second() {
    let Some(cgi_fcgi) = find_executable("cgi-fcgi") else {
        report_missing("cgi-fcgi", "apt-get install -y libfcgi-bin");
        return;
    };
    let Some(fpm) = PhpFpm::start(PhpFpmOptions {
        listen: Listen::Unix,
        pm: ProcessManager::Static,
        max_children: 1,
        ..PhpFpmOptions::default()
    })
    .await
    else {
        return;
    };
    let docroot = php_fixture_docroot();
    let site = format!("root = {:?}", docroot.display().to_string());
    let upstream = "max_conns = 1\nworker_idle_timeout = \"60s\"";
    let gateway = start_gateway(&site, &fpm.address(), upstream).await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/hello.php").await.unwrap().status, 200);
    assert_eq!(pool_stats(&gateway).idle, 1, "fcgate holds the worker");

    let Address::Unix(socket) = fpm.address() else {
        unreachable!("php-fpm was started on a unix socket")
    };
    let mut command = Command::new(cgi_fcgi);
    command
        .args(["-bind", "-connect"])
        .arg(&socket)
        .env_clear()
        .env("SCRIPT_FILENAME", docroot.join("hello.php"))
        .env("SCRIPT_NAME", "/hello.php")
        .env("REQUEST_METHOD", "GET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || run_for_at_most(command, READY_WITHIN))
        .await
        .unwrap();
    let waited = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.is_some_and(|status| status.success()) && stdout.ends_with("Hello, world!"),
        "cgi-fcgi: {:?} after {waited:?}\n{stdout}\n{}\n{:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        pool_stats(&gateway),
        fpm.log()
    );
    assert!(
        waited < Duration::from_secs(1),
        "cgi-fcgi waited {waited:?} for the worker fcgate held"
    );
}

/// What a command printed, and how it exited (`None`: killed after `limit`).
struct Finished {
    status: Option<std::process::ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `command`, killing it after `limit`: a client left waiting for a worker forever must
/// fail the test, not hang it.
fn run_for_at_most(mut command: Command, limit: Duration) -> Finished {
    use std::io::Read;
    let mut child = command.spawn().expect("cgi-fcgi starts");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_end(&mut stderr);
    }
    Finished {
        status,
        stdout,
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcgiwrap_running_a_cgi_script() {
    let Some(fcgiwrap) = find_executable("fcgiwrap") else {
        report_missing("fcgiwrap", "apt-get install -y fcgiwrap");
        return;
    };
    if !perl_module_present("Digest::MD5", "perl") {
        return;
    }
    // fcgiwrap forks the script for each request but keeps the FastCGI connection it came on
    // (libfcgi honours FCGI_KEEP_CONN), so its two processes hold two pooled connections like
    // any other process-per-connection backend.
    let mut script = PathBuf::new();
    let app = ForeignApp::start("fcgiwrap", Listen::Unix, |address, directory| {
        // fcgiwrap runs SCRIPT_FILENAME only when it is executable: copy it with the mode set.
        script = directory.join("interop.cgi");
        std::fs::copy(interop_file("cgi.pl"), &script).unwrap();
        set_executable(&script);
        let mut command = Command::new(&fcgiwrap);
        command.args(["-c", "2", "-s"]).arg(address.to_string());
        command
    })
    .await;
    // App mode sends SCRIPT_FILENAME empty; fcgiwrap needs it, so it is a fixed param.
    let settings = format!(
        "[params]\nSCRIPT_FILENAME = {:?}",
        script.display().to_string()
    );
    let site = Site::start(
        "fcgiwrap",
        "/",
        Backend::Foreign(app),
        &settings,
        KEEP_ALIVE_2,
    )
    .await;
    site.exercise().await;
    site.assert_pooled_connections_held(2, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_flup_wsgi_server() {
    if !flup_present() {
        return;
    }
    let app = ForeignApp::start("flup", Listen::Unix, |address, _| {
        flup_command(address, false)
    })
    .await;
    let site = Site::start("flup", "/", Backend::Foreign(app), "", KEEP_ALIVE_4).await;
    site.exercise().await;
    site.assert_pooled_connections_held(4, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_flup_wsgi_server_multiplexed() {
    if !flup_present() {
        return;
    }
    let app = ForeignApp::start("flup", Listen::Tcp, |address, _| {
        flup_command(address, true)
    })
    .await;
    // flup 1.0.3 answers FCGI_GET_VALUES with an empty result on Python 3 (it looks the asked
    // names up as bytes in a dict keyed by str), so "auto" never learns FCGI_MPXS_CONNS=1;
    // "on" multiplexes a backend that does not say 0.
    let site = Site::start("flup", "/", Backend::Foreign(app), "", MULTIPLEX_ON_4).await;
    site.wait_for_multiplexing().await;
    site.exercise().await;
    // One more: the FCGI_GET_VALUES management connection ("on" asks too).
    site.assert_pooled_connections_held(4, 1);
    site.assert_requests_shared_a_connection();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_cgi_in_php_mode() {
    // php-cgi -b 127.0.0.1:PORT with PHP_FCGI_CHILDREN=2; PhpCgi skips or fails when missing.
    let Some(cgi) = PhpCgi::start(2, Listen::Tcp).await else {
        return;
    };
    let docroot = interop_php_docroot();
    let settings = root_setting(&docroot);
    let site = Site::start(
        "php-cgi",
        "/interop.php",
        Backend::PhpCgi {
            cgi,
            _docroot: docroot,
        },
        &settings,
        KEEP_ALIVE_2,
    )
    .await;
    site.exercise().await;
    // php-cgi's children keep a kept-alive connection (PHP_FCGI_MAX_REQUESTS, 500 by default,
    // is not reached: about 100 requests per child), so no retirements either.
    site.assert_pooled_connections_held(2, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_in_php_mode() {
    // Two static workers on a unix socket; PhpFpm skips or fails when php-fpm is missing.
    let docroot = interop_php_docroot();
    let Some(fpm) = PhpFpm::start(PhpFpmOptions {
        listen: Listen::Unix,
        pm: ProcessManager::Static,
        max_children: 2,
        docroot: docroot.path().to_owned(),
        ..PhpFpmOptions::default()
    })
    .await
    else {
        return;
    };
    let settings = root_setting(&docroot);
    let site = Site::start(
        "php-fpm",
        "/interop.php",
        Backend::PhpFpm {
            fpm,
            _docroot: docroot,
        },
        &settings,
        KEEP_ALIVE_2,
    )
    .await;
    site.exercise().await;
    // Each worker keeps the connection it serves (FCGI_KEEP_CONN) and pm.max_requests is 0,
    // so two connections carry everything.
    site.assert_pooled_connections_held(2, 0);
}

/// A docroot holding only interop.php, for php-cgi and php-fpm.
fn interop_php_docroot() -> TempDir {
    let docroot = tempfile::Builder::new()
        .prefix("interop-php-")
        .tempdir()
        .unwrap();
    std::fs::copy(
        interop_file("interop.php"),
        docroot.path().join("interop.php"),
    )
    .unwrap();
    docroot
}

fn root_setting(docroot: &TempDir) -> String {
    format!("root = {:?}", docroot.path().display().to_string())
}

/// The Go app built and listening; `None` (a loud skip) without Go on a developer machine.
async fn start_go_app(listen: Listen) -> Option<ForeignApp> {
    let binary = build_go_app().await?;
    let app = ForeignApp::start("go", listen, |address, _| {
        let mut command = Command::new(binary.path().join("go_fcgi"));
        command.arg(listen_argument(address));
        command
    })
    .await;
    Some(app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_net_http_fcgi() {
    let Some(app) = start_go_app(Listen::Tcp).await else {
        return;
    };
    let site = Site::start("go", "/", Backend::Foreign(app), "", KEEP_ALIVE_4).await;
    site.exercise().await;
    site.assert_pooled_connections_held(4, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_net_http_fcgi_multiplexed() {
    let Some(app) = start_go_app(Listen::Unix).await else {
        return;
    };
    // Go answers FCGI_GET_VALUES with FCGI_MPXS_CONNS=1 and serves each request of a
    // connection in a goroutine of its own.
    let site = Site::start("go", "/", Backend::Foreign(app), "", MULTIPLEX_AUTO_4).await;
    site.wait_for_multiplexing().await;
    site.exercise().await;
    // One more: the FCGI_GET_VALUES management connection that found FCGI_MPXS_CONNS=1.
    site.assert_pooled_connections_held(4, 1);
    site.assert_requests_shared_a_connection();
}

// Explicit caps and no multiplexing: no FCGI_GET_VALUES connection, so the relay's count is
// exactly the connections requests used. Idle connections are kept for the whole exercise (its
// single requests take a second in a debug build), so the count shows whether the gateway kept
// them after each response; giving workers back after `worker_idle_timeout` is
// shared_backend.rs's subject.
const KEEP_ALIVE_2: &str =
    "max_conns = 2\nmultiplex = \"off\"\nqueue_timeout = \"15s\"\nworker_idle_timeout = \"60s\"";
const KEEP_ALIVE_4: &str =
    "max_conns = 4\nmultiplex = \"off\"\nqueue_timeout = \"15s\"\nworker_idle_timeout = \"60s\"";
const MULTIPLEX_AUTO_4: &str = "max_conns = 4\nmultiplex = \"auto\"\nqueue_timeout = \"15s\"";
const MULTIPLEX_ON_4: &str = "max_conns = 4\nmultiplex = \"on\"\nqueue_timeout = \"15s\"";

fn flup_command(address: &Address, multiplexed: bool) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(interop_file("flup_app.py"))
        .arg(listen_argument(address));
    if multiplexed {
        command.arg("multiplexed");
    }
    command
}

/// A socket path or `host:port`, as the apps take it.
fn listen_argument(address: &Address) -> String {
    match address {
        Address::Unix(path) => path.display().to_string(),
        Address::Tcp(host_port) => host_port.clone(),
    }
}

/// `FCGI::OpenSocket` takes a path or `:PORT`.
fn perl_listen(address: &Address) -> String {
    match address {
        Address::Unix(path) => path.display().to_string(),
        Address::Tcp(host_port) => format!(":{}", host_port.rsplit(':').next().unwrap()),
    }
}

// ---- what every app must get right ---------------------------------------------------------

/// The gateway in front of a relay in front of the app; the gateway goes first on drop.
struct Site {
    name: &'static str,
    /// The path every request goes to: `/` in app mode, the script in PHP mode.
    script: &'static str,
    gateway: RunningGateway,
    relay: CountingRelay,
    backend: Backend,
}

enum Backend {
    Foreign(ForeignApp),
    /// php-cgi and the docroot the gateway serves.
    PhpCgi {
        cgi: PhpCgi,
        _docroot: TempDir,
    },
    /// php-fpm and the docroot the gateway serves.
    PhpFpm {
        fpm: PhpFpm,
        _docroot: TempDir,
    },
}

impl Backend {
    fn address(&self) -> Address {
        match self {
            Backend::Foreign(app) => app.address.clone(),
            Backend::PhpCgi { cgi, .. } => cgi.address(),
            Backend::PhpFpm { fpm, .. } => fpm.address(),
        }
    }

    fn log(&self) -> String {
        match self {
            Backend::Foreign(app) => app.log(),
            Backend::PhpCgi { cgi, .. } => cgi.log(),
            Backend::PhpFpm { fpm, .. } => fpm.log(),
        }
    }
}

impl Site {
    async fn start(
        name: &'static str,
        script: &'static str,
        backend: Backend,
        settings: &str,
        upstream_settings: &str,
    ) -> Site {
        let relay = CountingRelay::start(backend.address()).await;
        let gateway = start_gateway(settings, &relay.address(), upstream_settings).await;
        Site {
            name,
            script,
            gateway,
            relay,
            backend,
        }
    }

    /// What to print with a failure: the pool's figures and everything the app printed.
    fn context(&self) -> String {
        format!(
            "pool: {:?}\nrelay: {} connections opened, {} at most open at once, {} \
             FCGI_ABORT_REQUEST\n{} output:\n{}",
            pool_stats(&self.gateway),
            self.relay.connections_opened(),
            self.relay.max_open(),
            self.relay.abort_requests_seen(),
            self.name,
            self.backend.log()
        )
    }

    /// Runs `future`, failing the test when it takes more than `limit` (a hang).
    async fn within<T>(&self, what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
        match tokio::time::timeout(limit, future).await {
            Ok(value) => value,
            Err(_) => panic!(
                "{}: {what}: not done within {limit:?} (a hang)\n{}",
                self.name,
                self.context()
            ),
        }
    }

    async fn send(
        &self,
        what: &str,
        client: &mut HttpClient,
        request: Request<Full<Bytes>>,
    ) -> Response {
        let limit = Duration::from_secs(10);
        match self.within(what, limit, client.send(request)).await {
            Ok(response) => response,
            Err(error) => panic!(
                "{}: {what}: no response: {error:#}\n{}",
                self.name,
                self.context()
            ),
        }
    }

    fn get(&self, query: &str) -> Request<Full<Bytes>> {
        Request::get(format!("{}?{query}", self.script))
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// Every check but the connection count, in order, on one client connection, then the
    /// concurrent requests on connections of their own.
    async fn exercise(&self) {
        let started = Instant::now();
        let mut client = HttpClient::http1(self.gateway.local_addr).await;

        let what = "GET with a query";
        let response = self
            .send(
                what,
                &mut client,
                self.get("op=echo&word=hello%20interop%26more"),
            )
            .await;
        self.expect(what, &response, 200, "echo: hello interop&more\n");
        self.expect_content_type(what, &response, "text/plain");

        let what = "a 1 MiB POST";
        let upload = pseudo_random_bytes(UPLOAD_BYTES);
        let request = Request::post(format!("{}?op=hash", self.script))
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(upload.clone())))
            .unwrap();
        let response = self.send(what, &mut client, request).await;
        let expected = format!("length: {UPLOAD_BYTES}\nmd5: {}\n", md5_hex(&upload));
        self.expect(what, &response, 200, &expected);

        let what = "a 5 MiB response";
        let response = self
            .send(
                what,
                &mut client,
                self.get(&format!("op=big&lines={BIG_LINES}")),
            )
            .await;
        assert_eq!(
            response.status,
            200,
            "{}: {what}: status\n{}",
            self.name,
            self.context()
        );
        self.expect_content_type(what, &response, "application/octet-stream");
        self.expect_big_body(&response.body);

        let what = "a status and a header set by the app";
        let response = self.send(what, &mut client, self.get("op=status")).await;
        self.expect(what, &response, 418, "teapot\n");
        assert_eq!(
            response.header("x-interop"),
            Some(self.name),
            "{}: {what}: the app's X-Interop header did not come through: {:?}",
            self.name,
            response.headers
        );
        assert_eq!(
            client.connections_opened(),
            1,
            "{}: the client side stayed keep-alive",
            self.name
        );

        let what = "200 concurrent requests";
        let script = self.script;
        let report = self
            .within(
                what,
                Duration::from_secs(20),
                run_load(
                    self.gateway.local_addr,
                    CONCURRENT,
                    usize::try_from(CONCURRENT).unwrap(),
                    Duration::from_secs(15),
                    move |i| {
                        Request::get(format!("{script}?op=echo&word=token-{i}"))
                            .body(Full::new(Bytes::new()))
                            .unwrap()
                    },
                    |i, response| response.body == format!("echo: token-{i}\n").as_bytes(),
                ),
            )
            .await;
        assert_eq!(
            (report.count(200), report.bodies_ok),
            (CONCURRENT, CONCURRENT),
            "{}: {what}: (200s, bodies that answered their own request)\n{report:?}\n{}",
            self.name,
            self.context()
        );
        eprintln!(
            "{}: {REQUESTS} requests in {:?} (the 200 concurrent ones in {:?}): {} backend \
             connections opened, {} at most open at once",
            self.name,
            started.elapsed(),
            report.elapsed,
            self.relay.connections_opened(),
            self.relay.max_open()
        );
    }

    fn expect(&self, what: &str, response: &Response, status: u16, body: &str) {
        assert_eq!(
            (response.status.as_u16(), response.text().as_str()),
            (status, body),
            "{}: {what}: wrong (status, body)\n{}",
            self.name,
            self.context()
        );
    }

    fn expect_content_type(&self, what: &str, response: &Response, content_type: &str) {
        let got = response.header("content-type").unwrap_or_default();
        assert!(
            got.starts_with(content_type),
            "{}: {what}: Content-Type {got:?}, expected {content_type}",
            self.name
        );
    }

    fn expect_big_body(&self, body: &[u8]) {
        let expected = big_body();
        if body == expected.as_slice() {
            assert_eq!(md5_hex(body), md5_hex(&expected));
            return;
        }
        let first_difference = body
            .iter()
            .zip(&expected)
            .position(|(got, want)| got != want)
            .unwrap_or(body.len().min(expected.len()));
        let around = |bytes: &[u8]| {
            let start = first_difference.saturating_sub(20).min(bytes.len());
            let end = (first_difference + 20).min(bytes.len());
            String::from_utf8_lossy(&bytes[start..end]).into_owned()
        };
        panic!(
            "{}: a 5 MiB response: got {} bytes (md5 {}), expected {} (md5 {}); first \
             difference at byte {first_difference}: got {:?}, expected {:?}\n{}",
            self.name,
            body.len(),
            md5_hex(body),
            expected.len(),
            md5_hex(&expected),
            around(body),
            around(&expected),
            self.context()
        );
    }

    /// At most `cap` connections (plus `management`, the FCGI_GET_VALUES one) for all
    /// [`REQUESTS`]: a gateway that lost its pooled connection after each response would
    /// open one per request. Nothing retires a connection within this few requests. And no
    /// FCGI_ABORT_REQUEST: every client read its whole response, so none went away. With
    /// multiplexing, a gateway that mistook the end of a Content-Length body for a client gone
    /// away sent aborts but kept its connections: only this count shows that.
    fn assert_pooled_connections_held(&self, cap: u64, management: u64) {
        let aborts = self.relay.abort_requests_seen();
        assert_eq!(
            aborts,
            0,
            "{}: {aborts} FCGI_ABORT_REQUEST sent for {REQUESTS} requests whose clients read \
             every byte\n{}",
            self.name,
            self.context()
        );
        let opened = self.relay.connections_opened();
        assert!(
            opened <= cap + management,
            "{}: {opened} backend connections opened for {REQUESTS} requests, with max_conns = \
             {cap} (+{management} management): the gateway did not keep its pooled connections\n{}",
            self.name,
            self.context()
        );
        assert!(
            self.relay.max_open() <= cap + management,
            "{}: {} backend connections open at once, above max_conns = {cap}\n{}",
            self.name,
            self.relay.max_open(),
            self.context()
        );
        let stats = pool_stats(&self.gateway);
        assert!(
            stats.reused >= REQUESTS - cap,
            "{}: only {} of {REQUESTS} requests reused a pooled connection\n{}",
            self.name,
            stats.reused,
            self.context()
        );
    }

    /// `multiplex = "auto"` or `"on"`: the app's FCGI_GET_VALUES answer must have switched it
    /// on before the test's requests start.
    async fn wait_for_multiplexing(&self) {
        let gateway = &self.gateway;
        let wait = wait_until("the FCGI_GET_VALUES answer", || {
            pool_stats(gateway).backend_values.is_some()
        });
        self.within("asking FCGI_GET_VALUES", Duration::from_secs(11), wait)
            .await;
        let stats = pool_stats(gateway);
        assert!(
            stats.multiplexing,
            "{}: announces FCGI_MPXS_CONNS=1 but the gateway does not multiplex\n{}",
            self.name,
            self.context()
        );
    }

    fn assert_requests_shared_a_connection(&self) {
        let most = self.relay.max_concurrent_requests_on_one_connection();
        assert!(
            most > 1,
            "{}: multiplexing is on but no connection ever carried two requests at once ({most})\n{}",
            self.name,
            self.context()
        );
        eprintln!(
            "{}: up to {most} requests in flight on one connection",
            self.name
        );
    }
}

// ---- running a foreign app -----------------------------------------------------------------

/// A foreign FastCGI app as a child process. Dropping it kills the app and everything it
/// forked (the testkit's [`ProcessGroup`]), and removes its tempdir.
struct ForeignApp {
    address: Address,
    process: ProcessGroup,
    log: PathBuf,
    _directory: TempDir,
}

impl ForeignApp {
    /// Starts the app `command(address, tempdir)` builds, listening on a fresh unix socket or
    /// loopback port, and waits until it accepts connections. A TCP port another process took
    /// first is retried with another port.
    async fn start(
        name: &'static str,
        listen: Listen,
        mut command: impl FnMut(&Address, &Path) -> Command,
    ) -> ForeignApp {
        for _ in 0..3 {
            let directory = tempfile::Builder::new()
                .prefix(&format!("interop-{name}-"))
                .tempdir()
                .unwrap();
            let address = match listen {
                Listen::Unix => Address::Unix(directory.path().join(format!("{name}.sock"))),
                Listen::Tcp => Address::Tcp(format!("127.0.0.1:{}", free_loopback_port())),
                Listen::TcpOn(_) => unreachable!("the apps listen on loopback"),
            };
            let mut command = command(&address, directory.path());
            let mut app = ForeignApp::spawn(&mut command, address, directory);
            let started = Instant::now();
            loop {
                if fcgi::net::connect(&app.address).await.is_ok() {
                    return app;
                }
                if let Some(status) = app.process.exit_status() {
                    let log = app.log();
                    if log.to_ascii_lowercase().contains("address already in use") {
                        break;
                    }
                    panic!("{name} exited during startup ({status}). Its output:\n{log}");
                }
                assert!(
                    started.elapsed() < READY_WITHIN,
                    "{name} was not accepting on {} within {READY_WITHIN:?}. Its output:\n{}",
                    app.address,
                    app.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("{name} could not bind a free loopback port in 3 attempts");
    }

    fn spawn(command: &mut Command, address: Address, directory: TempDir) -> ForeignApp {
        let log = directory.path().join("output.log");
        command.current_dir(directory.path());
        ForeignApp {
            address,
            process: ProcessGroup::spawn(command, &log),
            log,
            _directory: directory,
        }
    }

    /// Everything the app printed, for assertion messages.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap()
}

fn interop_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Builds `go_fcgi.go` (standard library only: no module download, GOPROXY=off) into a
/// tempdir holding the binary. `None` when Go is not installed.
async fn build_go_app() -> Option<TempDir> {
    if !command_succeeds("go", &["version"]) {
        report_missing("Go (the go command)", "apt-get install -y golang-go");
        return None;
    }
    let directory = tempfile::Builder::new()
        .prefix("interop-go-build-")
        .tempdir()
        .unwrap();
    let binary = directory.path().join("go_fcgi");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut command = Command::new("go");
    command
        .arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(interop_file("go_fcgi.go"))
        .current_dir(directory.path())
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOPATH", target.join("interop-gopath"))
        .env("GOCACHE", target.join("interop-gocache"));
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("go build took more than 2 minutes")
    .unwrap()
    .unwrap_or_else(|error| panic!("cannot run go build: {error}"));
    assert!(
        output.status.success(),
        "go build of tests/interop/go_fcgi.go failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("go: built go_fcgi in {:?}", started.elapsed());
    Some(directory)
}

// ---- missing dependencies ------------------------------------------------------------------

fn command_succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn perl_module_present(module: &str, package: &str) -> bool {
    let present = command_succeeds("perl", &[&format!("-M{module}"), "-e", "1"]);
    if !present {
        report_missing(
            &format!("Perl's {module}"),
            &format!("apt-get install -y {package}"),
        );
    }
    present
}

fn flup_present() -> bool {
    let present = command_succeeds("python3", &["-c", "import flup.server.fcgi"]);
    if !present {
        report_missing("Python's flup", "pip install flup==1.0.3");
    }
    present
}

/// The first `name` in PATH, /usr/sbin or /usr/local/sbin (Debian puts fcgiwrap in sbin).
fn find_executable(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|directory| directory.join(name))
        .find(|candidate| {
            candidate.metadata().is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
}

/// Panics with CI=true (a test that needs it would pass vacuously); elsewhere prints a warning
/// nobody can miss and lets the caller skip.
fn report_missing(what: &str, install: &str) {
    let in_ci =
        std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
    if in_ci {
        panic!("{what} is not installed; CI=true, so this is a failure, not a skip. Install it: {install} (scripts/test does this when run as root).");
    }
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\n!! SKIPPING AN INTEROP TEST: {what} is not installed.\n!! Install it: {install} \
         (scripts/test does this when run as root).\n{bar}\n"
    );
}

// ---- test data ---------------------------------------------------------------------------

/// What `op=big&lines=BIG_LINES` must answer: line `i` is `i` in 15 digits and a newline, so a
/// lost, repeated or reordered piece shows where it happened.
fn big_body() -> Vec<u8> {
    let mut body = String::with_capacity(BIG_LINES * 16);
    for line in 0..BIG_LINES {
        body.push_str(&format!("{line:015}\n"));
    }
    body.into_bytes()
}

#[test]
fn the_test_data_is_what_the_apps_produce() {
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    let big = big_body();
    assert_eq!(big.len(), 5 << 20);
    assert!(big.starts_with(b"000000000000000\n000000000000001\n"));
    assert!(big.ends_with(b"000000000327679\n"));
}
