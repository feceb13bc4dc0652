//! The `fcgate` binary as an operator runs it: `check` on good and bad files, the no-argument
//! demo mode a newcomer starts with, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{get, listening_authority};

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

/// The recipes in examples/, each on an empty root in place of the app's.
#[test]
fn check_accepts_the_recipes() {
    for (recipe, root_line) in [
        ("dokuwiki.toml", "root = \"/usr/share/dokuwiki\""),
        ("wordpress.toml", "root = \"/var/www/wordpress\""),
        ("laravel.toml", "root = \"/var/www/app/public\""),
    ] {
        let example = format!("{}/../../examples/{recipe}", env!("CARGO_MANIFEST_DIR"));
        let root = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(example).unwrap();
        assert!(text.contains(root_line), "{recipe}");
        let text = text.replace(
            root_line,
            &format!("root = {:?}", root.path().to_str().unwrap()),
        );
        let output = check(&text);
        assert!(output.status.success(), "{recipe}: {output:?}");
    }
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

/// Runs fcgate with `args` in front of an upstream nobody listens on, sends one request that
/// gets a 502, and returns what fcgate wrote to stderr.
fn stderr_after_a_502(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody-listens.sock");
    let mut child = fcgate()
        .args(["--listen", "127.0.0.1:0", "--upstream"])
        .arg(format!("unix:{}", missing.display()))
        .args(["--connect-timeout", "100ms"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let authority = listening_authority(&mut child);
    assert_eq!(get(&authority, "/shop/cart.php?id=7"), 502);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

#[test]
fn an_error_line_names_the_request() {
    let stderr = stderr_after_a_502(&[]);
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

/// A warning from deep in a response (here the app's stderr, read by the response's pump) names
/// the request by method and path at the default level, not only by its id.
#[test]
fn a_warning_about_a_response_names_the_request() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(fcgi_testkit::backend::TestBackend::start(
        fcgi_testkit::backend::BackendOptions::default(),
    ));
    let mut child = fcgate()
        .args(["--listen", "127.0.0.1:0", "--upstream"])
        .arg(backend.address().to_string())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let authority = listening_authority(&mut child);
    assert_eq!(get(&authority, "/cart/add?stderr=out%20of%20stock"), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let line = stderr
        .lines()
        .find(|line| line.contains("backend stderr: out of stock"))
        .unwrap_or_else(|| panic!("no stderr line: {stderr}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("path=\"/cart/add\""), "{line}");
    drop(backend);
}

#[test]
fn the_diagnostics_log_can_be_one_json_object_per_line() {
    let stderr = stderr_after_a_502(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect();
    let error_line = lines
        .iter()
        .find(|line| line["status"] == 502)
        .unwrap_or_else(|| panic!("no 502 line: {stderr}"));
    assert!(
        error_line["level"] == "WARN" || error_line["level"] == "ERROR",
        "{error_line}"
    );
    assert_eq!(error_line["method"], "GET", "{error_line}");
    assert_eq!(error_line["path"], "/shop/cart.php", "{error_line}");
    for field in ["timestamp", "target", "message", "request"] {
        assert!(!error_line[field].is_null(), "no {field}: {error_line}");
    }
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
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

/// Whether the tests run as root. CI does, so there a normal user is a broken setup, not a
/// reason to test less.
fn running_as_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    assert!(
        root || std::env::var("CI").as_deref() != Ok("true"),
        "CI runs the tests as root: the user-switching tests need it and must not be skipped"
    );
    root
}

/// A config file in a directory any user may read, for fcgate started as another user.
fn readable_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("fcgate.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, path)
}

fn account(name: &str) -> nix::unistd::User {
    nix::unistd::User::from_name(name).unwrap().unwrap()
}

/// Each thread's `Uid:` and `Gid:` lines (real, effective, saved, filesystem) and its
/// supplementary groups, sorted.
fn thread_credentials(pid: u32) -> Vec<(String, String, Vec<u32>)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let field = |name: &str| {
                let line = status.lines().find_map(|line| line.strip_prefix(name));
                line.unwrap().split_whitespace().collect::<Vec<_>>()
            };
            let mut groups: Vec<u32> = field("Groups:")
                .iter()
                .map(|id| id.parse().unwrap())
                .collect();
            groups.sort_unstable();
            (field("Uid:").join(" "), field("Gid:").join(" "), groups)
        })
        .collect()
}

/// A gateway with `user = "{user}"` in front of an upstream nobody listens on.
fn config_with_user(user: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    readable_config(&format!(
        "listen = \"127.0.0.1:0\"\nuser = \"{user}\"\n\
         [upstream]\nservers = [\"unix:/nonexistent/fcgate-test.sock\"]\n\
         connect_timeout = \"100ms\"\n"
    ))
}

#[test]
fn started_as_root_it_binds_then_serves_as_the_configured_user_in_every_thread() {
    if !running_as_root() {
        return; // `another_user_is_refused_with_a_clear_error` covers what a normal user sees.
    }
    let (_dir, config) = config_with_user("nobody");
    let mut child = fcgate()
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let authority = listening_authority(&mut child);
    let nobody = account("nobody");
    let ids = |id: u32| format!("{id} {id} {id} {id}");
    let name = std::ffi::CString::new("nobody").unwrap();
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
        .unwrap()
        .into_iter()
        .map(nix::unistd::Gid::as_raw)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let expected = (ids(nobody.uid.as_raw()), ids(nobody.gid.as_raw()), groups);
    let before = thread_credentials(child.id());
    // Threads started after the switch (tokio's blocking pool) inherit it: look again later.
    assert_eq!(get(&authority, "/after-the-switch"), 502);
    let after = thread_credentials(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    // Tokio's worker threads exist before the switch: the test means something only with them.
    assert!(before.len() > 1, "one thread only: {before:?}");
    for credentials in before.iter().chain(&after) {
        assert_eq!(credentials, &expected, "{stderr}");
    }
    assert!(stderr.contains("switched from root"), "{stderr}");
}

#[test]
fn another_user_is_refused_with_a_clear_error_and_the_same_one_carries_on() {
    use std::os::unix::process::CommandExt;
    let root = running_as_root();
    let nobody = account("nobody");
    // As root, start fcgate as nobody; otherwise as whoever runs the tests.
    let as_tester = |config: &std::path::Path| {
        let mut command = fcgate();
        command.arg("--config").arg(config).stdin(Stdio::null());
        if root {
            command.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
        }
        command
    };
    let tester = if root {
        "nobody".to_owned()
    } else {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name
    };
    let other = if tester == "daemon" {
        "nobody"
    } else {
        "daemon"
    };

    let (_dir, config) = config_with_user(other);
    let output = as_tester(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started: {stderr}");
    assert!(
        stderr.contains(&format!("user = \"{other}\""))
            && stderr.contains("only root can switch users"),
        "{stderr}"
    );

    let (_dir, config) = config_with_user(&tester);
    let mut child = as_tester(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let authority = listening_authority(&mut child);
    assert_eq!(get(&authority, "/"), 502);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// What systemd does for a `.socket` unit, done by Python (it is on every machine the tests
/// run on, and the workspace forbids the `unsafe` a `dup2` before `exec` would need here):
/// bind and listen, print the port, put the socket at fd 3, set LISTEN_FDS/LISTEN_PID, and
/// exec fcgate in the same process.
const SOCKET_ACTIVATE: &str = r#"
import os, socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"#;

#[test]
fn with_socket_activation_it_serves_the_passed_socket_and_its_backlog() {
    let mut child = Command::new("python3")
        .args(["-c", SOCKET_ACTIVATE, env!("CARGO_BIN_EXE_fcgate")])
        .args(["--listen", "127.0.0.1:1", "--access-log", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    // Connected before fcgate has even started: the kernel holds it in the socket's backlog,
    // as it does while systemd restarts the service.
    let early = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    if !line.contains(&format!("http://127.0.0.1:{port}/")) {
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        panic!(
            "fcgate ignored the passed socket: {line}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    early
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut &early,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut &early, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(get(&format!("127.0.0.1:{port}"), "/"), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_last_access_lines_are_written_before_the_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut child = support::fcgate_logging_to(&log);
    let authority = listening_authority(&mut child);
    for _ in 0..3 {
        assert_eq!(get(&authority, "/"), 200);
    }
    // Well within the writer's 200 ms batching: only the shutdown can have written them.
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(child.wait().unwrap().success());
    let written = std::fs::read_to_string(&log).unwrap();
    assert_eq!(written.lines().count(), 3, "{written}");
}

/// The names of a process's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

#[test]
fn workers_sets_how_many_threads_run_requests_and_says_so() {
    // One thread is the main one (tokio's current-thread scheduler), so none is a worker. The
    // count the line gives is the runtime's own (its metrics), not the setting read back.
    let cores = num_cpus();
    let default_workers = if cores == 1 { 0 } else { cores };
    for (config, expected, said_count) in [
        ("workers = 3\n", 3, "3 worker threads (workers)"),
        ("workers = 1\n", 0, "1 worker thread (workers)"),
        ("", default_workers, &format!("{cores} worker thread")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fcgate.toml");
        let upstream = "[upstream]\nservers = [\"127.0.0.1:9\"]\nmax_conns = 1\n";
        std::fs::write(
            &path,
            format!("listen = \"127.0.0.1:0\"\n{config}{upstream}"),
        )
        .unwrap();
        let mut child = fcgate()
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read on a thread of its own, so that a line that never comes fails the test.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (lines, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("worker thread") {
                    let _ = lines.send(line);
                }
            }
        });
        let said = said
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        // A worker thread names itself once it runs, which on a busy machine may come after
        // the line; and tokio names its blocking-pool threads (a DNS lookup, a file read) the
        // same, hence "at least".
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut workers = 0;
        while workers < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            workers = thread_names(child.id())
                .iter()
                .filter(|name| name.as_str() == "tokio-rt-worker")
                .count();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(workers >= expected, "{config:?}: {workers} worker threads");
        assert!(said.contains(said_count), "{config:?}: {said:?}");
        if config.is_empty() {
            assert!(said.contains("(one per CPU core)"), "{said:?}");
        }
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
