//! The admin status page, `/status`: one self-contained HTML file (uPlot inlined, no URL to
//! another host), `/status.json` behind it with a history that grows under load, and the page
//! itself in a real browser — headless Chromium loads it while load runs and the dumped DOM
//! shows every plot holding samples. The browser test skips (loudly) when Chromium is not
//! installed, and fails instead under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcgate::server::RunningGateway;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::HttpClient;
use fcgi_testkit::process::ProcessGroup;
use support::start_gateway;
use tokio::task::JoinHandle;

/// Names the Debian package `chromium` (and others) install the browser under.
const CHROMIUM_NAMES: &[&str] = &["chromium", "chromium-browser"];
/// The longest a browser run may take before it is killed and the test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(30);
/// The page's time in the browser: `--virtual-time-budget` runs its timers this far ahead as
/// fast as the page allows (a pending fetch holds virtual time back), so its one-second
/// refresh runs several times in well under a second of real time.
const VIRTUAL_TIME_MS: u32 = 5000;
/// The four plots of a server, as the page names them in `data-plot`, with their `data-series`.
const PLOTS: [(&str, &str); 4] = [
    ("requests_per_second", "requests_per_second"),
    ("queue_length", "queue_length"),
    ("queue_wait_p99_ms", "queue_wait_p99_ms"),
    ("cap", "cap,busy"),
];

/// A test backend whose requests take a few milliseconds, behind a gateway with two
/// connections to it and the admin listener on a free port.
struct Site {
    gateway: RunningGateway,
    backend: TestBackend,
}

impl Site {
    async fn start() -> Site {
        let backend = TestBackend::start(BackendOptions::default()).await;
        let gateway = start_gateway(
            "admin_listen = \"127.0.0.1:0\"",
            &backend.address(),
            "max_conns = 2",
        )
        .await;
        Site { gateway, backend }
    }

    fn admin(&self) -> SocketAddr {
        self.gateway.admin_addr.expect("admin_listen is set")
    }

    async fn status_json(&self) -> serde_json::Value {
        let response = HttpClient::http1(self.admin())
            .await
            .get("/status.json")
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|error| panic!("/status.json: {error}\n{}", response.text()))
    }

    /// Polls `/status.json` until the first server's history holds `samples` samples with
    /// requests in the newest one.
    async fn wait_for_history(&self, samples: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let report = self.status_json().await;
            let history = &report["servers"][0]["history"];
            let held = history["time"].as_array().map_or(0, Vec::len);
            let newest_rate = history["requests_per_second"]
                .as_array()
                .and_then(|rates| rates.last())
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            if held >= samples && newest_rate > 0.0 {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "no history of {samples} samples with requests within 15 s: {report:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Clients sending requests in a loop until [`Load::stop`]: more clients than the gateway has
/// connections to the backend, so some always queue.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    responses: Arc<AtomicU64>,
}

impl Load {
    fn start(gateway: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let responses = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let responses = Arc::clone(&responses);
                tokio::spawn(async move {
                    let mut client = HttpClient::http1(gateway).await;
                    while !stop.load(Ordering::Relaxed) {
                        let response = client.get("/?sleep_ms=5").await.unwrap();
                        assert_eq!(response.status, 200, "{}", response.text());
                        responses.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            responses,
        }
    }

    /// Stops the clients; panics if any of them failed.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.responses.load(Ordering::Relaxed)
    }
}

#[tokio::test]
async fn the_status_page_is_one_self_contained_html_file() {
    let site = Site::start().await;
    let response = HttpClient::http1(site.admin())
        .await
        .get("/status")
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = response.text();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    // uPlot is inlined in place of the markers: its script and its stylesheet.
    assert!(!page.contains("/*UPLOT_JS*/") && !page.contains("/*UPLOT_CSS*/"));
    assert!(
        page.contains("var uPlot=function()"),
        "uPlot's script is not inlined"
    );
    assert!(
        page.contains(".uplot {"),
        "uPlot's stylesheet is not inlined"
    );
    // Nothing to fetch from another host (the host may be offline), nor any second request
    // for a script or a stylesheet.
    for reference in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "src='http",
        "href='http",
    ] {
        assert!(!page.contains(reference), "the page refers to {reference}…");
    }
    assert!(
        !page.contains("<script src"),
        "a script the page would fetch"
    );
    assert!(!page.contains("<link"), "a stylesheet the page would fetch");
    assert!(page.contains("fetch(\"/status.json\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_parses_and_its_history_grows_under_load() {
    let site = Site::start().await;
    let load = Load::start(site.gateway.local_addr, 6);
    let first = site.wait_for_history(2).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = site.status_json().await;
    assert!(load.stop().await > 0);

    assert_eq!(second["version"], env!("CARGO_PKG_VERSION"));
    let servers = second["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{second:#}");
    let server = &servers[0];
    assert_eq!(server["address"], site.backend.address().to_string());
    assert_eq!(server["cap"], 2);
    assert_eq!(server["cap_source"], "max_conns");
    let history = &server["history"];
    let column = |name: &str| history[name].as_array().unwrap().clone();
    let times = column("time");
    let held_before = first["servers"][0]["history"]["time"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        times.len() > held_before,
        "the history did not grow: {held_before} then {} samples",
        times.len()
    );
    // Columns: one value per sample, a second apart.
    for name in [
        "requests_per_second",
        "queue_length",
        "queue_wait_p99_ms",
        "cap",
        "busy",
    ] {
        assert_eq!(column(name).len(), times.len(), "column {name}");
    }
    let seconds: Vec<u64> = times.iter().map(|time| time.as_u64().unwrap()).collect();
    assert!(
        seconds.windows(2).all(|pair| pair[0] < pair[1]),
        "{seconds:?}"
    );
    let rates = column("requests_per_second");
    assert!(rates
        .iter()
        .skip(1)
        .any(|rate| rate.as_f64().unwrap() > 0.0));
    assert!(column("cap").iter().all(|cap| cap == 2));
    // Under load every second has requests, so a queue wait p99 (possibly 0 ms).
    assert!(column("queue_wait_p99_ms").last().unwrap().is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_plots_the_history_while_load_runs() {
    let Some(chromium) = find_chromium() else {
        return;
    };
    let site = Site::start().await;
    let load = Load::start(site.gateway.local_addr, 6);
    // The page plots what the gateway sampled, one sample a second: let a few accumulate so
    // that the page has a history the moment it opens, as it would during an incident.
    site.wait_for_history(3).await;

    let started = Instant::now();
    let url = format!("http://{}/status", site.admin());
    let dom = run_chromium(
        &chromium,
        &[
            &format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
            "--dump-dom",
            &url,
        ],
    )
    .await;
    let took = started.elapsed();
    assert!(load.stop().await > 0);
    eprintln!("chromium loaded and dumped the status page in {took:?}");

    let body = start_tag(&dom, "<body").unwrap_or_else(|| panic!("no <body> in\n{dom}"));
    assert_eq!(attribute(body, "data-state"), Some("live"), "{dom}");
    // The page refreshed several times (`setData` on the same charts, not new ones).
    let refreshes: u32 = attribute(body, "data-refreshes").unwrap().parse().unwrap();
    assert!(refreshes >= 2, "only {refreshes} refreshes:\n{dom}");
    let server = start_tag(&dom, "<section class=\"server").unwrap();
    let address = site.backend.address().to_string();
    assert_eq!(attribute(server, "data-server"), Some(address.as_str()));
    assert_eq!(attribute(server, "data-down"), Some("false"));
    assert_eq!(dom.matches("<canvas").count(), PLOTS.len(), "{dom}");

    let plots: Vec<&str> = dom
        .match_indices("<figure class=\"plot\"")
        .map(|(at, _)| start_tag(&dom[at..], "<figure").unwrap())
        .collect();
    assert_eq!(plots.len(), PLOTS.len(), "{dom}");
    for (tag, (name, series)) in plots.iter().zip(PLOTS) {
        assert_eq!(attribute(tag, "data-plot"), Some(name), "{tag}");
        assert_eq!(attribute(tag, "data-series"), Some(series), "{tag}");
        let points: usize = attribute(tag, "data-points").unwrap().parse().unwrap();
        assert!(points >= 3, "plot {name} holds {points} points: {tag}");
        let last = attribute(tag, "data-last").unwrap();
        if name == "requests_per_second" {
            let rate: f64 = last.parse().unwrap();
            assert!(rate > 0.0, "no requests/s in the newest sample: {tag}");
        }
        if name == "cap" {
            assert_eq!(last, "2", "{tag}");
        }
    }
}

/// Chromium's path, or `None` after a loud warning; a failure when `CI=true`.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .flat_map(|directory| CHROMIUM_NAMES.iter().map(move |name| directory.join(name)))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let message = format!(
            "Chromium is not installed (looked for {} in PATH and /usr/bin)",
            CHROMIUM_NAMES.join(", ")
        );
        let in_ci = std::env::var("CI")
            .is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
        if in_ci {
            panic!(
                "{message}; CI=true, so this is a failure, not a skip. Install the Debian \
                 package: apt-get install -y chromium"
            );
        }
        let bar = "!".repeat(78);
        eprintln!(
            "\n{bar}\n!! SKIPPING A TEST THAT NEEDS chromium\n!! {message}.\n!! Install it: \
             apt-get install -y chromium (the Debian package).\n{bar}\n"
        );
    }
    found
}

/// Runs headless Chromium with a fresh profile and `arguments`, killed with every process it
/// started if it takes longer than [`BROWSER_DEADLINE`]; returns its stdout.
async fn run_chromium(chromium: &Path, arguments: &[&str]) -> String {
    let directory = tempfile::tempdir().unwrap();
    let stdout = directory.path().join("stdout");
    let stderr = directory.path().join("stderr");
    // sh keeps stderr's noise (GPU, D-Bus) out of the DOM on stdout.
    let mut command = Command::new("sh");
    command
        .args(["-c", "exec \"$@\" 2>\"$CHROMIUM_STDERR\"", "sh"])
        .arg(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
        ])
        .arg(format!(
            "--user-data-dir={}",
            directory.path().join("profile").display()
        ))
        .args(arguments)
        .env("CHROMIUM_STDERR", &stderr);
    let mut process = ProcessGroup::spawn(&command, &stdout);
    let deadline = Instant::now() + BROWSER_DEADLINE;
    let status = loop {
        if let Some(status) = process.exit_status() {
            break status;
        }
        if Instant::now() > deadline {
            drop(process);
            panic!(
                "chromium did not finish within {BROWSER_DEADLINE:?}; its stderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(process);
    let output = std::fs::read_to_string(&stdout).unwrap_or_default();
    assert!(
        status.success() && output.contains("</html>"),
        "chromium failed ({status}); its stderr:\n{}\nstdout:\n{output}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    output
}

/// The start tag beginning with `prefix` (say `<body`), up to its `>`.
fn start_tag<'a>(html: &'a str, prefix: &str) -> Option<&'a str> {
    let at = html.find(prefix)?;
    let end = html[at..].find('>')?;
    Some(&html[at..=at + end])
}

/// The value of `name="…"` in a start tag (the serialized DOM quotes every value with `"`).
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let at = tag.find(&needle)? + needle.len();
    let end = tag[at..].find('"')?;
    Some(&tag[at..at + end])
}
