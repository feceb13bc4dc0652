//! Starting a gateway in-process for a test: a TOML snippet in, a running gateway on
//! `127.0.0.1:<free port>` out, with the pool figures at hand.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Child;

use fcgate::server::RunningGateway;
use fcgi::client::PoolStats;
use fcgi::net::Address;
// The fcgi crate's tests wait the same way: one copy, in the testkit.
pub use fcgi_testkit::wait_until;

/// A gateway for `upstream` with the extra TOML `settings` (top-level keys first, then an
/// optional `[upstream]` body in `upstream_settings`).
pub async fn start_gateway(
    settings: &str,
    upstream: &Address,
    upstream_settings: &str,
) -> RunningGateway {
    // Tests that want the access log say where; the others keep stdout quiet.
    let access_log = if settings.contains("access_log") {
        ""
    } else {
        "access_log = \"off\"\n"
    };
    // Idle connections stay for the whole test unless it says otherwise: connection counts then
    // show the pool's reuse, not how a loaded machine spaced the requests. Handing workers back
    // after `worker_idle_timeout` is shared_backend.rs's subject.
    let worker_idle_timeout = if upstream_settings.contains("worker_idle_timeout") {
        ""
    } else {
        "worker_idle_timeout = \"60s\"\n"
    };
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{access_log}{settings}\n[upstream]\nservers = [\"{upstream}\"]\n{worker_idle_timeout}{upstream_settings}\n"
    );
    let config = fcgate::config::parse_file_text(&text)
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
        .validate()
        .unwrap_or_else(|error| panic!("{error}\n{text}"));
    fcgate::server::start(config).await.unwrap()
}

/// Returns once every pool has had its first FCGI_GET_VALUES answer (as the binary waits before
/// READY=1) and closed the probe's connection: a test that counts connections or queue places
/// from here on sees only its own requests.
pub async fn backends_probed(gateway: &RunningGateway) {
    let upstream = gateway.gateway.upstream();
    for pool in upstream.pools() {
        pool.first_probe().await;
    }
    wait_until("the probe's connection is closed", || {
        upstream.pools().all(|pool| pool.stats().open == 0)
    })
    .await;
}

/// The first upstream server's pool figures.
pub fn pool_stats(gateway: &RunningGateway) -> PoolStats {
    gateway.gateway.upstream().servers()[0].pool().stats()
}

pub fn addr(gateway: &RunningGateway) -> SocketAddr {
    gateway.local_addr
}

/// A `NAME: value` line of a PHP script's plain-text report (tests/php/connection.php).
pub fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// Deterministic bytes that are not a short repeating pattern (xorshift64).
pub fn pseudo_random_bytes(length: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

/// RFC 1321 MD5 as lowercase hex, to compare with what PHP's `md5()` and the interop apps
/// report (no crate for one test helper).
pub fn md5_hex(data: &[u8]) -> String {
    const SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    let sines: Vec<u32> = (1..=64)
        .map(|i| (f64::from(i).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64).wrapping_mul(8).to_le_bytes());
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    for block in message.chunks_exact(64) {
        let words: Vec<u32> = block
            .chunks_exact(4)
            .map(|word| u32::from_le_bytes(word.try_into().unwrap()))
            .collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (mix, word) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let sum = a
                .wrapping_add(mix)
                .wrapping_add(sines[i])
                .wrapping_add(words[word]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(sum.rotate_left(SHIFTS[i / 16 * 4 + i % 4]));
        }
        for (total, part) in state.iter_mut().zip([a, b, c, d]) {
            *total = total.wrapping_add(part);
        }
    }
    state
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The `HOST:PORT` of the "fcgate listening on http://…/" line on a `fcgate` child's stdout.
pub fn listening_authority(child: &mut Child) -> String {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no URL printed: {line:?}"))
        .trim_end_matches('/')
        .to_owned()
}

/// The status of a GET over HTTP/1.1.
pub fn get(authority: &str, path_and_query: &str) -> u16 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = fcgi_testkit::http::HttpClient::http1(authority.parse().unwrap()).await;
        client.get(path_and_query).await.unwrap().status.as_u16()
    })
}

/// Whether `program` runs here (`program --version` succeeds); under CI=true its absence is a
/// failure naming the Debian `package` to install, elsewhere a loud skip of `what`.
pub fn tool_available(program: &str, package: &str, what: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none_or(|ci| ci != "true"),
            "{program} is missing: install Debian's `{package}` package (scripts/test does)"
        );
        eprintln!("WARNING: {program} not installed; SKIPPING {what}");
    }
    found
}

/// The fcgate binary serving the demo app on a free port, its access log written to `log`,
/// stdout piped for [`listening_authority`].
pub fn fcgate_logging_to(log: &std::path::Path) -> Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_fcgate"))
        .args(["--listen", "127.0.0.1:0", "--access-log"])
        .arg(log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}
