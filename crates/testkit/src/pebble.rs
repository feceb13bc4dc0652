//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble` package), on loopback for the
//! ACME tests: `pebble-challtestsrv` answers its DNS queries (every name is 127.0.0.1), and its
//! validation connects to the ports the test says the gateway listens on. Its own HTTPS
//! certificate comes from a [`TestCa`]; the root its issued certificates chain to is fetched
//! from its management interface. Both processes are killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::tls::TestCa;

/// What a test chooses about the CA.
#[derive(Debug, Clone, Copy)]
pub struct PebbleOptions {
    /// The port HTTP-01 validation connects to (the gateway's plain listener).
    pub http_port: u16,
    /// The port TLS-ALPN-01 validation connects to (the gateway's TLS listener).
    pub tls_port: u16,
    /// The lifetime of the certificates it issues.
    pub validity: Duration,
}

/// A running Pebble and its DNS server.
pub struct Pebble {
    pebble: Child,
    dns: Child,
    directory: String,
    management: u16,
    ca: TestCa,
    dir: tempfile::TempDir,
}

/// A loopback port free now (bound and released: the caller binds it next).
pub fn free_port() -> u16 {
    free_ports::<1>(&[])[0]
}

/// `N` distinct loopback ports free now, none of them in `avoid`: held together while they are
/// chosen, so the kernel cannot hand the same released port out twice (Pebble's own ports must
/// not take the ones the gateway is about to bind).
pub fn free_ports<const N: usize>(avoid: &[u16]) -> [u16; N] {
    choose_ports(avoid, || {
        let listener = TcpListener::bind("127.0.0.1:0").ok()?;
        let port = listener.local_addr().ok()?.port();
        Some((port, listener))
    })
}

/// The first `N` ports `bind` hands out that are not in `avoid`. Every port bound, avoided or
/// not, stays held until all are chosen, so `bind` cannot return one again; an avoided port
/// does not count towards the `N` (it once did, and the last port came back as 0). A `bind`
/// that fails leaves the rest 0.
fn choose_ports<const N: usize, Held>(
    avoid: &[u16],
    mut bind: impl FnMut() -> Option<(u16, Held)>,
) -> [u16; N] {
    let mut ports = [0; N];
    let mut held = Vec::with_capacity(N);
    for slot in &mut ports {
        while let Some((port, guard)) = bind() {
            held.push(guard);
            if !avoid.contains(&port) {
                *slot = port;
                break;
            }
        }
    }
    ports
}

impl Pebble {
    /// Whether `pebble` and `pebble-challtestsrv` are installed; with CI=true their absence is
    /// a failure rather than a reason to skip.
    pub fn installed() -> bool {
        let found = ["pebble", "pebble-challtestsrv"].iter().all(|program| {
            Command::new(program)
                .arg("-h")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        });
        if !found {
            let in_ci = std::env::var("CI")
                .is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
            assert!(
                !in_ci,
                "pebble is not installed; CI=true makes that a failure (apt-get install -y pebble)"
            );
            eprintln!("!! SKIPPING: pebble is not installed (apt-get install -y pebble)");
        }
        found
    }

    /// Starts the DNS server and Pebble, and waits until Pebble's directory answers.
    pub fn start(options: PebbleOptions) -> anyhow::Result<Pebble> {
        let ca = TestCa::new()?;
        let own = ca.issue("pebble", &["127.0.0.1", "localhost"])?;
        let dir = tempfile::tempdir()?;
        let [dns_port, dns_management, listen, management] =
            free_ports(&[options.http_port, options.tls_port]);
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting pebble-challtestsrv")?;
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble": {{
                    "listenAddress": "127.0.0.1:{listen}",
                    "managementListenAddress": "127.0.0.1:{management}",
                    "certificate": "{}", "privateKey": "{}",
                    "httpPort": {}, "tlsPort": {},
                    "ocspResponderURL": "", "externalAccountBindingRequired": false,
                    "certificateValidityPeriod": {}
                }}}}"#,
                own.cert.display(),
                own.key.display(),
                options.http_port,
                options.tls_port,
                options.validity.as_secs().max(1),
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("pebble.log"))?;
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // Validate at once, never refuse a nonce at random, validate every order anew.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting pebble")?;
        let pebble = Pebble {
            pebble,
            dns,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management,
            ca,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while pebble.fetch(&pebble.directory.clone()).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "pebble did not answer: {}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let root = pebble.fetch(&format!("https://127.0.0.1:{management}/roots/0"))?;
        std::fs::write(pebble.dir.path().join("issuer-root.pem"), root)?;
        Ok(pebble)
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// The CA certificate of Pebble's own HTTPS (for `acme.directory_ca`).
    pub fn directory_ca(&self) -> PathBuf {
        self.ca.ca_path()
    }

    /// The root the certificates Pebble issues chain to (PEM), for clients to trust.
    pub fn issuer_root(&self) -> PathBuf {
        self.dir.path().join("issuer-root.pem")
    }

    /// Pebble's output so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Stops the DNS server: from now on every validation fails to resolve the names.
    pub fn stop_dns(&mut self) {
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }

    /// The management port (for `/roots/0` and the like).
    pub fn management_port(&self) -> u16 {
        self.management
    }

    fn fetch(&self, url: &str) -> anyhow::Result<String> {
        let output = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
            .arg(self.ca.ca_path())
            .arg(url)
            .output()
            .context("running curl")?;
        anyhow::ensure!(
            output.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `bind` that hands out `ports` in turn, then fails.
    fn scripted(ports: &[u16]) -> impl FnMut() -> Option<(u16, ())> + '_ {
        let mut next = ports.iter();
        move || next.next().map(|port| (*port, ()))
    }

    #[test]
    fn an_avoided_port_handed_out_again_is_skipped_without_costing_a_slot() {
        // The ACME tests release two ports for the gateway and then ask for Pebble's four: the
        // kernel may hand one of the two out again.
        let ports: [u16; 4] = choose_ports(&[10, 11], scripted(&[10, 20, 11, 21, 22, 23]));
        assert_eq!(ports, [20, 21, 22, 23]);
    }

    #[test]
    fn a_failing_bind_leaves_the_rest_zero() {
        let ports: [u16; 3] = choose_ports(&[], scripted(&[30]));
        assert_eq!(ports, [30, 0, 0]);
    }

    #[test]
    fn real_ports_are_distinct_and_never_the_avoided_ones() {
        let avoid: [u16; 2] = free_ports(&[]);
        let ports: [u16; 4] = free_ports(&avoid);
        assert!(ports.iter().all(|port| *port != 0 && !avoid.contains(port)));
        let mut sorted = ports;
        sorted.sort_unstable();
        assert!(sorted.windows(2).all(|pair| pair[0] != pair[1]));
    }
}
