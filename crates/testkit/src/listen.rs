//! Where a harness process listens: a unix socket in a fresh tempdir, or loopback TCP.

use std::path::{Path, PathBuf};

use fcgi::net::Address;

/// The kind of socket a backend started by the harness listens on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket in a fresh tempdir.
    #[default]
    Unix,
    /// `127.0.0.1` on a free port.
    Tcp,
    /// This address (one of this host's, not loopback: a backend as a gateway sees one on
    /// another host) on a free port.
    TcpOn(std::net::IpAddr),
}

impl Listen {
    /// An address to bind in-process: the socket `name` in `dir`, or `127.0.0.1:0`.
    pub(crate) fn bind_address(self, dir: &Path, name: &str) -> Address {
        match self {
            Listen::Unix => Address::Unix(dir.join(name)),
            Listen::Tcp => Address::Tcp("127.0.0.1:0".to_owned()),
            Listen::TcpOn(ip) => Address::Tcp(std::net::SocketAddr::new(ip, 0).to_string()),
        }
    }

    /// An address to hand to another process, which cannot report back the port it got: the
    /// socket `name` in `dir`, or a loopback port that was free a moment ago. Another process may
    /// take that port before the backend binds it; callers retry on "Address already in use".
    pub(crate) fn external_address(self, dir: &Path, name: &str) -> Address {
        match self {
            Listen::Unix => Address::Unix(dir.join(name)),
            Listen::Tcp => Address::Tcp(format!("127.0.0.1:{}", free_port(LOOPBACK))),
            Listen::TcpOn(ip) => {
                Address::Tcp(std::net::SocketAddr::new(ip, free_port(ip)).to_string())
            }
        }
    }

    /// A TCP listener (another process's, which may lose its port to a race).
    pub(crate) fn is_tcp(self) -> bool {
        matches!(self, Listen::Tcp | Listen::TcpOn(_))
    }
}

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn free_port(ip: std::net::IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|error| panic!("cannot find a free port on {ip}: {error}"))
}

/// An address of this host that is not loopback (the one its default route leaves from), for a
/// backend that must look remote to a gateway on the same machine; `None` on a host with no
/// route out.
pub fn non_loopback_address() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing: it only picks the source address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The PHP docroot with the fixture scripts (`crates/fcgate/tests/php`).
pub fn php_fixture_docroot() -> PathBuf {
    let docroot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fcgate/tests/php");
    docroot.canonicalize().unwrap_or(docroot)
}
