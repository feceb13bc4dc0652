//! The `fcgate` binary as an operator runs it: `check` on good and bad files, the no-argument
//! demo mode a newcomer starts with, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn fcgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fcgate"))
}

fn check(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fcgate.toml");
    std::fs::write(&path, text).unwrap();
    fcgate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/fcgate.toml");
    let output = fcgate()
        .args(["check", "--config", example])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration OK"));
}

#[test]
fn check_names_the_bad_key_and_exits_non_zero() {
    let cases = [
        (
            "[upstream]\nservers = [\"unix:/x.sock\"]\nmax_conns = 0\n",
            "upstream.max_conns",
        ),
        ("[upstream]\nservers = [\"no-port\"]\n", "upstream.servers"),
        (
            "[upstream]\nservers = [\"unix:/x.sock\"]\nmax_conn = 4\n",
            "max_conn",
        ),
        ("listen = \"127.0.0.1:8080\"\n", "upstream.servers"),
        (
            "client_max_body_size = \"lots\"\n[upstream]\nservers = [\"unix:/x.sock\"]\n",
            "client_max_body_size",
        ),
    ];
    for (text, key) in cases {
        let output = check(text);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted:\n{text}");
        assert!(
            stderr.contains(key),
            "error for\n{text}\ndoes not name {key}: {stderr}"
        );
    }
}

#[test]
fn with_no_upstream_it_serves_the_demo_app_and_exits_zero_on_sigterm() {
    let mut child = fcgate()
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL printed: {line:?}"))
        .to_owned();
    let authority = url.trim_start_matches("http://").trim_end_matches('/');

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let response = runtime.block_on(async {
        let mut client = fcgi_testkit::http::HttpClient::http1(authority.parse().unwrap()).await;
        client.get("/from-the-readme").await.unwrap()
    });
    assert_eq!(response.status, 200);
    assert!(response
        .text()
        .contains("Hello from fcgate's demo FastCGI app"));
    assert!(response.text().contains("uri: /from-the-readme"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child.kill().unwrap();
    panic!("fcgate did not exit within 5 s of SIGTERM");
}

#[test]
fn errors_are_printed_once_with_a_suggestion_for_a_misspelt_key() {
    let missing = fcgate()
        .args(["check", "--config", "/nonexistent/fcgate.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    let misspelt = check("[upstream]\nservers = [\"unix:/x.sock\"]\nmax_conn = 4\n");
    let stderr = String::from_utf8_lossy(&misspelt.stderr);
    assert_eq!(stderr.matches("unknown field").count(), 1, "{stderr}");
    assert!(stderr.contains("did you mean `max_conns`?"), "{stderr}");
}

#[test]
fn a_site_without_an_upstream_is_refused_instead_of_served_by_the_demo_app() {
    let root = tempfile::tempdir().unwrap();
    let output = fcgate()
        .args(["--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started: {stderr}");
    assert!(stderr.contains("upstream.servers"), "{stderr}");
}

#[test]
fn logs_carry_no_colour_codes_when_not_at_a_terminal() {
    let mut child = fcgate()
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first_line.contains("INFO"), "{first_line:?}");
    assert!(!first_line.contains('\u{1b}'), "{first_line:?}");
}

#[test]
fn an_error_line_names_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody-listens.sock");
    let mut child = fcgate()
        .args(["--listen", "127.0.0.1:0", "--upstream"])
        .arg(format!("unix:{}", missing.display()))
        .args(["--connect-timeout", "100ms"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let authority = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no URL printed: {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let response = runtime.block_on(async {
        let mut client = fcgi_testkit::http::HttpClient::http1(authority.parse().unwrap()).await;
        client.get("/shop/cart.php?id=7").await.unwrap()
    });
    assert_eq!(response.status, 502);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let error_line = stderr
        .lines()
        .find(|line| line.contains("status=502"))
        .unwrap_or_else(|| panic!("no 502 line: {stderr}"));
    assert!(error_line.contains("method=GET"), "{error_line}");
    assert!(
        error_line.contains("path=\"/shop/cart.php\""),
        "{error_line}"
    );
}

#[test]
fn systemd_is_told_when_the_gateway_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = fcgate()
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 64];
    let received = systemd.recv(&mut buffer);
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let length = received.expect("READY=1 within 10 s");
    assert_eq!(&buffer[..length], b"READY=1");
    let length = systemd.recv(&mut buffer).expect("STOPPING=1 on SIGTERM");
    assert_eq!(&buffer[..length], b"STOPPING=1");
    child.wait().unwrap();
}
