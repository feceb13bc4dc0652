//! The access log as an operator reads it: one line per request whatever answered it, nginx's
//! `combined` byte for byte or one JSON object per line, a file reopened on request (SIGUSR1 to
//! the running binary, after logrotate moved it), and a disk that stops answering costing lines,
//! counted on `/metrics`, never requests, nor the last lines at exit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::{raw_exchange, run_load, HttpClient};
use http::Request;
use http_body_util::Full;
use support::{get, listening_authority, wait_until};

async fn lines_of(path: &std::path::Path, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "fewer than {count} lines in {}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

#[tokio::test]
async fn every_request_gets_one_combined_line_whatever_answered_it() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    let settings = format!("access_log = '{}'", log.display());
    let gateway = support::start_gateway(&settings, &backend.address(), "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/app?size=100").await.unwrap().status, 200);
    assert_eq!(client.get("/gone?status=404").await.unwrap().status, 404);
    // Answered by fcgate itself, before any backend: a Host that is not an authority.
    let refused = raw_exchange(
        gateway.local_addr,
        b"GET /x HTTP/1.1\r\nHost: a b\r\nUser-Agent: \"evil\"\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with(b"HTTP/1.1 400 "));
    let lines = lines_of(&log, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let combined = |line: &str, request: &str, status: &str| {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(line.contains(" +0000] \""), "{line}");
        assert!(line.contains(&format!("\"{request}\" {status} ")), "{line}");
    };
    combined(&lines[0], "GET /app?size=100 HTTP/1.1", "200");
    assert!(lines[0].contains(" 200 100 \"-\" \"-\""), "{}", lines[0]);
    combined(&lines[1], "GET /gone?status=404 HTTP/1.1", "404");
    combined(&lines[2], "GET /x HTTP/1.1", "400");
    assert!(
        lines[2].ends_with("\"-\" \"\\x22evil\\x22\""),
        "{}",
        lines[2]
    );

    // Answered by hyper before there was a request: a request line that is not one, and a head
    // larger than hyper's buffer. nginx logs these as `"-"` too, and so must a log that fail2ban
    // reads for scanners.
    let garbage = raw_exchange(gateway.local_addr, b"\x16\x03\x01 not http\r\n\r\n").await;
    assert!(garbage.starts_with(b"HTTP/1.1 400 "), "{garbage:?}");
    let mut huge = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 600 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let too_large = raw_exchange(gateway.local_addr, &huge).await;
    assert!(
        too_large.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        &too_large[..too_large.len().min(64)]
    );
    let lines = lines_of(&log, 5).await;
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines[3].contains("] \"-\" 400 0 \"-\" \"-\""),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].contains("] \"-\" 431 0 \"-\" \"-\""),
        "{}",
        lines[4]
    );
    let metrics = gateway.gateway.metrics();
    assert_eq!(metrics.requests.counts()[3], 4, "every 4xx is counted");
    gateway.stop().await;
}

#[tokio::test]
async fn json_lines_carry_the_backend_facts_and_the_file_is_reopened_on_request() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    let settings = format!(
        "access_log = '{}'\naccess_log_format = \"json\"",
        log.display()
    );
    let gateway = support::start_gateway(
        &settings,
        &backend.address(),
        "multiplex = \"off\"\nmax_conns = 1",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for _ in 0..2 {
        assert_eq!(client.get("/app?token=t").await.unwrap().status, 200);
    }
    let lines = lines_of(&log, 2).await;
    let backend_address = format!("\"backend\":\"{}\"", backend.address());
    for (line, reused) in lines.iter().zip(["false", "true"]) {
        assert!(line.starts_with("{\"time\":\""), "{line}");
        assert!(
            line.contains("\"method\":\"GET\",\"uri\":\"/app?token=t\""),
            "{line}"
        );
        assert!(line.contains("\"status\":200"), "{line}");
        assert!(line.contains(&backend_address), "{line}");
        assert!(
            line.contains(&format!("\"backend_reused\":{reused}")),
            "{line}"
        );
        assert!(line.contains("\"retries\":0"), "{line}");
        assert!(line.ends_with('}'), "{line}");
    }
    // logrotate moves the file, then signals: the next line goes to a new file.
    let rotated = directory.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gateway.gateway.access_log().reopen();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.get("/app?token=after").await.unwrap().status, 200);
    let fresh = lines_of(&log, 1).await;
    assert!(fresh[0].contains("/app?token=after"), "{fresh:?}");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        2
    );
    assert_eq!(gateway.gateway.access_log().dropped(), 0);
    gateway.stop().await;
}

/// The lines of `path` now (none if it is missing).
fn lines_now(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Polls, for a test without a runtime, until `ready` holds; fails after 10 s.
fn poll_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..400 {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("not within 10 s: {what}");
}

fn send_signal(child: &std::process::Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal}");
}

#[test]
fn sigusr1_to_the_binary_reopens_the_file_logrotate_moved() {
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    let rotated = directory.path().join("access.log.1");
    let mut child = support::fcgate_logging_to(&log);
    let authority = listening_authority(&mut child);
    assert_eq!(get(&authority, "/before-the-rotation"), 200);
    poll_until("the first line is written", || lines_now(&log).len() == 1);

    // What logrotate does without copytruncate: move the file, then signal.
    std::fs::rename(&log, &rotated).unwrap();
    send_signal(&child, "-USR1");
    // The writer creates the file again as it reopens: from then on lines go there.
    poll_until("the log is reopened at its path", || log.exists());
    assert_eq!(get(&authority, "/after-the-rotation"), 200);
    poll_until("the second line is written", || lines_now(&log).len() == 1);

    send_signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let before = lines_now(&rotated);
    let after = lines_now(&log);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(
        before[0].contains("\"GET /before-the-rotation HTTP/1.1\" 200 "),
        "{before:?}"
    );
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0].contains("\"GET /after-the-rotation HTTP/1.1\" 200 "),
        "{after:?}"
    );
}

/// A FIFO at the log's path, read only once the returned sender says so: until then the
/// writer's writes block once the pipe (64 KiB) is full, as on a disk that stopped answering.
/// Also returned: the lines read so far, and the reader, which ends when the writer closes.
fn stalled_fifo(
    path: &Path,
) -> (
    std::sync::mpsc::Sender<()>,
    Arc<AtomicU64>,
    std::thread::JoinHandle<()>,
) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo");
    let (unstall, stalled) = std::sync::mpsc::channel::<()>();
    let lines_read = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&lines_read);
    let path: PathBuf = path.to_owned();
    let reader = std::thread::spawn(move || {
        // Opening a FIFO waits for the writer's open, the gateway's start.
        let mut fifo = std::fs::File::open(path).unwrap();
        let _ = stalled.recv();
        let mut buffer = vec![0; 64 << 10];
        loop {
            match fifo.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    let lines = buffer[..read].iter().filter(|&&byte| byte == b'\n').count();
                    counted.fetch_add(lines as u64, Ordering::SeqCst);
                }
            }
        }
    });
    (unstall, lines_read, reader)
}

/// Sends `count` requests with a long target and User-Agent (within the default head limits),
/// for access log lines of some 14 KiB; every one must be answered, in a generous time: the
/// point is that nothing hangs, not speed.
async fn long_lines(gateway: std::net::SocketAddr, count: u64) {
    let user_agent = "u".repeat(7000);
    let query = "q".repeat(7000);
    let report = run_load(
        gateway,
        count,
        8,
        Duration::from_secs(60),
        move |i| {
            Request::get(format!("/?token={i}&pad={query}"))
                .header(http::header::USER_AGENT, user_agent.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap()
        },
        |_, response| response.status == 200,
    )
    .await;
    assert_eq!(report.count(200), count, "{report:?}");
    assert_eq!(report.bodies_ok, count);
}

#[test]
fn at_exit_the_lines_a_stalled_disk_still_holds_are_written_before_the_process_ends() {
    let directory = tempfile::tempdir().unwrap();
    let fifo = directory.path().join("access.log");
    let (unstall, lines_read, reader) = stalled_fifo(&fifo);
    let mut child = support::fcgate_logging_to(&fifo);
    let authority = listening_authority(&mut child);
    // Some 560 KiB of lines: most are still in the writer's hands at exit, the pipe full.
    const REQUESTS: u64 = 40;
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(long_lines(authority.parse().unwrap(), REQUESTS));
    send_signal(&child, "-TERM");
    // Exiting now would lose them: the process must wait for the disk.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with lines unwritten"
    );
    unstall.send(()).unwrap();
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    assert_eq!(lines_read.load(Ordering::SeqCst), REQUESTS);
}

/// `fcgate_access_log_dropped_lines_total` on the admin listener's `/metrics`.
async fn dropped_lines_reported(admin: std::net::SocketAddr) -> u64 {
    let response = HttpClient::http1(admin)
        .await
        .get("/metrics")
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let text = response.text();
    text.lines()
        .find_map(|line| line.strip_prefix("fcgate_access_log_dropped_lines_total "))
        .unwrap_or_else(|| panic!("no dropped-lines counter in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_costs_lines_counted_on_metrics_never_requests() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let directory = tempfile::tempdir().unwrap();
    let fifo = directory.path().join("access.log");
    let (unstall, lines_read, _reader) = stalled_fifo(&fifo);
    let settings = format!(
        "access_log = '{}'\nadmin_listen = \"127.0.0.1:0\"",
        fifo.display()
    );
    let gateway = support::start_gateway(&settings, &backend.address(), "").await;
    let admin = gateway.admin_addr.unwrap();

    // Lines of some 14 KiB: the 4 MiB the writer may fall behind by fill after some 300.
    const REQUESTS: u64 = 800;
    long_lines(gateway.local_addr, REQUESTS).await;
    let dropped = gateway.gateway.access_log().dropped();
    assert!(dropped > 0, "nothing dropped: the log never fell behind");
    assert!(dropped < REQUESTS, "{dropped}: nothing was queued at all");
    assert_eq!(dropped_lines_reported(admin).await, dropped);

    // The disk answers again: what was queued is written, new lines follow, and every request
    // got either its line or a count.
    unstall.send(()).unwrap();
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/?token=after").await.unwrap().status, 200);
    wait_until("every line written or counted", || {
        lines_read.load(Ordering::SeqCst) + gateway.gateway.access_log().dropped() == REQUESTS + 1
    })
    .await;
    assert_eq!(gateway.gateway.access_log().dropped(), dropped);
    assert_eq!(dropped_lines_reported(admin).await, dropped);
}
