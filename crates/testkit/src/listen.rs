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
}

impl Listen {
    /// An address to bind in-process: the socket `name` in `dir`, or `127.0.0.1:0`.
    pub(crate) fn bind_address(self, dir: &Path, name: &str) -> Address {
        match self {
            Listen::Unix => Address::Unix(dir.join(name)),
            Listen::Tcp => Address::Tcp("127.0.0.1:0".to_owned()),
        }
    }

    /// An address to hand to another process, which cannot report back the port it got: the
    /// socket `name` in `dir`, or a loopback port that was free a moment ago. Another process may
    /// take that port before the backend binds it; callers retry on "Address already in use".
    pub(crate) fn external_address(self, dir: &Path, name: &str) -> Address {
        match self {
            Listen::Unix => Address::Unix(dir.join(name)),
            Listen::Tcp => Address::Tcp(format!("127.0.0.1:{}", free_loopback_port())),
        }
    }
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|error| panic!("cannot find a free loopback port: {error}"))
}

/// The PHP docroot with the fixture scripts (`crates/fcgate/tests/php`).
pub fn php_fixture_docroot() -> PathBuf {
    let docroot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fcgate/tests/php");
    docroot.canonicalize().unwrap_or(docroot)
}
