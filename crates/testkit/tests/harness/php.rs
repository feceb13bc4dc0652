//! php-fpm and php-cgi start, serve the fixture docroot, obey their options and die with the handle.

use std::time::Duration;

use fcgi::net::Address;
use fcgi_testkit::php::{signals, PhpCgi, PhpFpm, PhpFpmOptions, ProcessManager};
use fcgi_testkit::{php_fixture_docroot, Listen};

use crate::fastcgi::{self, as_pairs, php_params, Connection};
use fcgi_testkit::wait_until;

async fn get(address: &Address, script: &str, query: &str) -> fastcgi::Reply {
    let params = php_params(&php_fixture_docroot(), script, query);
    fastcgi::request(address, &as_pairs(&params), b"").await
}

/// `(state, ppid, pgrp)` of process `pid`, if it exists.
fn process_status(pid: u32) -> Option<(String, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_owned();
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, parent, group))
}

/// Processes (other than zombies: pid 1 here may never reap them) in process group `group`.
fn live_processes_in_group(group: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(process_status)
        .filter(|(state, _, process_group)| state != "Z" && *process_group == group)
        .count()
}

/// The live children of `parent`.
fn live_children(parent: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(process_status)
        .filter(|(state, process_parent, _)| state != "Z" && *process_parent == parent)
        .count()
}

#[tokio::test]
async fn php_fpm_serves_the_fixtures_over_a_unix_socket() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    assert!(matches!(fpm.address(), Address::Unix(_)));
    let pool = std::fs::read_to_string(fpm.pool_config_path()).unwrap();
    assert!(pool.contains("pm.max_children = 4\n"), "{pool}");

    let hello = get(&fpm.address(), "/hello.php", "").await;
    assert_eq!(hello.body(), b"Hello, world!", "{}", fpm.log());
    assert_eq!(hello.end, Some((0, 0)));

    let download = get(&fpm.address(), "/download.php", "size=100003").await;
    let body = download.body();
    assert_eq!(body.len(), 100_003, "{}", fpm.log());
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == b'0' + (i % 10) as u8));
    assert!(!download
        .stdout_text()
        .to_ascii_lowercase()
        .contains("content-length"));

    let cookies = get(&fpm.address(), "/cookies.php", "").await;
    let set_cookies = cookies
        .header_lines()
        .iter()
        .filter(|line| line.starts_with("Set-Cookie:"))
        .count();
    assert_eq!(set_cookies, 3, "{:?}", cookies.header_lines());

    let redirect = get(&fpm.address(), "/redirect.php", "").await;
    assert!(redirect
        .header_lines()
        .contains(&"Location: /hello.php".to_owned()));

    let not_found = get(&fpm.address(), "/notfound.php", "").await;
    assert!(not_found
        .header_lines()
        .iter()
        .any(|line| line.starts_with("Status: 404")));

    let mut echo_params = php_params(&php_fixture_docroot(), "/echo.php", "a=1&b=two");
    echo_params.retain(|(name, _)| name != "CONTENT_LENGTH" && name != "REQUEST_METHOD");
    echo_params.push(("REQUEST_METHOD".into(), "POST".into()));
    echo_params.push(("CONTENT_LENGTH".into(), "3".into()));
    echo_params.push(("CONTENT_TYPE".into(), "text/plain".into()));
    let echo = fastcgi::request(&fpm.address(), &as_pairs(&echo_params), b"abc").await;
    let text = String::from_utf8_lossy(echo.body()).into_owned();
    for line in [
        "method: POST",
        "query: a=1&b=two",
        r#"get: {"a":"1","b":"two"}"#,
        "body_length: 3",
        "body_md5: 900150983cd24fb0d6963f7d28e17f72",
        "content_type: text/plain",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    let sleep = get(&fpm.address(), "/sleep.php", "ms=20").await;
    assert_eq!(sleep.body(), b"slept 20 ms\n");
    // x.jpg holds PHP source; served statically it must show it, never run it.
    let static_bytes = std::fs::read(php_fixture_docroot().join("uploads/x.jpg")).unwrap();
    assert_eq!(static_bytes, br#"<?php echo "EXECUTED"; ?>"#);
}

#[tokio::test]
async fn php_fpm_on_tcp_ondemand_answers_its_status_page() {
    let options = PhpFpmOptions {
        listen: Listen::Tcp,
        pm: ProcessManager::OnDemand {
            process_idle_timeout: Duration::from_secs(1),
        },
        max_children: 2,
        status_path: Some("/fpm-status".into()),
        ..PhpFpmOptions::default()
    };
    let Some(fpm) = PhpFpm::start(options).await else {
        return;
    };
    assert!(matches!(fpm.address(), Address::Tcp(_)));
    let params = [
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/fpm-status"),
        ("SCRIPT_FILENAME", "/fpm-status"),
        ("QUERY_STRING", ""),
    ];
    let status = fastcgi::request(&fpm.address(), &params, b"").await;
    let text = status.stdout_text();
    assert!(
        text.contains("process manager:      ondemand"),
        "{text}\n{}",
        fpm.log()
    );
    assert!(text.contains("max children reached"), "{text}");
}

#[tokio::test]
async fn php_fpm_closes_a_kept_connection_after_max_requests() {
    let options = PhpFpmOptions {
        max_children: 1,
        max_requests: 2,
        ..PhpFpmOptions::default()
    };
    let Some(fpm) = PhpFpm::start(options).await else {
        return;
    };
    let params = php_params(&php_fixture_docroot(), "/hello.php", "");
    let mut connection = Connection::open(&fpm.address()).await.unwrap();
    for _ in 0..2 {
        let reply = connection
            .request(&as_pairs(&params), b"", true)
            .await
            .unwrap();
        assert_eq!(reply.body(), b"Hello, world!", "{}", fpm.log());
    }
    assert!(
        connection.closed_within(Duration::from_secs(5)).await,
        "the recycled worker should close its kept connection"
    );
    // php-fpm only half-closes (shutdown(SHUT_WR)) and then drains the socket until the client
    // closes too; the worker, the only one, is stuck there until this drop.
    drop(connection);
    // The master forks a replacement, which serves the next connection.
    assert_eq!(
        get(&fpm.address(), "/hello.php", "").await.body(),
        b"Hello, world!"
    );
}

#[tokio::test]
async fn php_fpm_reloads_on_sigusr2_and_dies_whole_on_drop() {
    let options = PhpFpmOptions {
        max_children: 2,
        ..PhpFpmOptions::default()
    };
    let Some(fpm) = PhpFpm::start(options).await else {
        return;
    };
    let master = fpm.master_pid();
    assert_eq!(live_children(master), 2, "2 static workers");
    // php-fpm setsid()s: its group holds the master and every worker.
    let (_, _, group) = process_status(master).unwrap();

    fpm.signal(signals::SIGUSR2);
    wait_until("php-fpm is ready again after the reload", || {
        fpm.log().matches("ready to handle connections").count() >= 2
    })
    .await;
    assert_eq!(fpm.master_pid(), master);
    assert_eq!(
        get(&fpm.address(), "/hello.php", "").await.body(),
        b"Hello, world!"
    );

    drop(fpm);
    wait_until("every php-fpm process is gone", || {
        live_processes_in_group(group) == 0
    })
    .await;
}

#[tokio::test]
async fn php_cgi_serves_on_unix_and_tcp() {
    for listen in [Listen::Unix, Listen::Tcp] {
        let Some(cgi) = PhpCgi::start(2, listen).await else {
            return;
        };
        let reply = get(&cgi.address(), "/hello.php", "").await;
        assert_eq!(reply.body(), b"Hello, world!", "{listen:?}: {}", cgi.log());
        let parent = cgi.master_pid();
        wait_until("php-cgi has forked its 2 children", || {
            live_children(parent) == 2
        })
        .await;
        let (_, _, group) = process_status(parent).unwrap();
        drop(cgi);
        wait_until("every php-cgi process is gone", || {
            live_processes_in_group(group) == 0
        })
        .await;
    }
}
