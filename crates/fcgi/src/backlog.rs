//! How many connections wait in a local backend's listen queue, accepted by the kernel and not
//! yet by the backend: for a backend that gives each connection a worker (php-fpm, php-cgi),
//! clients waiting for a free worker — another gateway, nginx beside this one, a cron job, or
//! this pool's own fresh connection. `ss -l` shows the same figure as Recv-Q.
//!
//! A unix socket's queue comes from the kernel's sock_diag netlink interface (a `unix_diag`
//! dump of listening sockets with their names and queue lengths, matched by path); a TCP
//! listener's from `/proc/net/tcp` and `tcp6`, whose `rx_queue` column is the accept queue for a
//! socket in LISTEN state. Only an address this host listens on has an answer: a remote backend,
//! or a host name other than `localhost`, gives `None`. The two netlink structures are encoded
//! and read here by hand — 24 and 16 bytes plus a few attributes — rather than through the
//! netlink crates, none of which is on the vetted list; the socket itself is rustix's. The
//! encoding and parsing are pure functions, tested on byte and text fixtures; `waiting` is the
//! blocking I/O around them (a few tens of microseconds; callers run it on a blocking thread).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::net::Address;

/// Connections waiting in the listen queue of the local socket `address` names; `None` when it
/// is not a socket this host listens on.
pub fn waiting(address: &Address) -> io::Result<Option<u32>> {
    match address {
        Address::Unix(path) => unix_waiting(path),
        Address::Tcp(authority) => {
            let Some((ip, port)) = local_endpoint(authority) else {
                return Ok(None);
            };
            let mut found = None;
            for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
                let text = match std::fs::read_to_string(table) {
                    Ok(text) => text,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                };
                if let Some(queued) = tcp_listen_queue(&text, ip, port) {
                    found = Some(found.unwrap_or(0) + queued);
                }
            }
            Ok(found)
        }
    }
}

/// The address and port of `authority` when it names this host: an IP literal on loopback, or
/// `localhost`. Other names would need a resolver, and a remote backend's queue is not ours to
/// read anyway.
fn local_endpoint(authority: &str) -> Option<(IpAddr, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => host.parse().ok()?,
    };
    ip.is_loopback().then_some((ip, port))
}

/// The accept queue of the LISTEN socket on `ip:port` (or on the unspecified address and
/// `port`) in the text of `/proc/net/tcp` or `tcp6`.
fn tcp_listen_queue(table: &str, ip: IpAddr, port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        let queues = fields.next()?;
        if state != LISTEN {
            return None;
        }
        let (local_ip, local_port) = local.split_once(':')?;
        if u16::from_str_radix(local_port, 16).ok()? != port {
            return None;
        }
        let local_ip = proc_ip(local_ip)?;
        if local_ip != ip && !local_ip.is_unspecified() {
            return None;
        }
        let (_, rx_queue) = queues.split_once(':')?;
        u32::from_str_radix(rx_queue, 16).ok()
    })
}

/// An address as /proc/net/tcp{,6} prints it: the kernel's 32-bit words in hex, each in host
/// byte order.
fn proc_ip(hex: &str) -> Option<IpAddr> {
    let word = |index: usize| -> Option<[u8; 4]> {
        let text = hex.get(index * 8..index * 8 + 8)?;
        Some(u32::from_str_radix(text, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut octets = [0u8; 16];
            for index in 0..4 {
                octets[index * 4..index * 4 + 4].copy_from_slice(&word(index)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

// ---- unix sockets: sock_diag ------------------------------------------------------------------

const NLMSG_HEADER: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const AF_UNIX: u8 = 1;
const TCP_LISTEN: u32 = 10;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_RQLEN: u16 = 4;
/// `struct unix_diag_msg`: family, type, state, pad, inode, cookie.
const UNIX_DIAG_MSG: usize = 16;

/// A dump request for every listening unix socket, with its name and queue lengths.
fn unix_dump_request(sequence: u32) -> [u8; NLMSG_HEADER + 24] {
    let mut message = [0u8; NLMSG_HEADER + 24];
    let length = message.len() as u32;
    message[0..4].copy_from_slice(&length.to_ne_bytes());
    message[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message[8..12].copy_from_slice(&sequence.to_ne_bytes());
    // struct unix_diag_req: family, protocol, pad, states, inode, show, cookie[2].
    message[16] = AF_UNIX;
    message[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    message[28..32].copy_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN).to_ne_bytes());
    message
}

/// What one datagram of the dump's answer said.
#[derive(Debug, PartialEq, Eq)]
enum DumpPart {
    /// The socket named `path` is listening with this many connections queued.
    Found(u32),
    /// Not in this datagram; more follow.
    More,
    /// The dump is over without it.
    Done,
}

fn unix_dump_part(datagram: &[u8], path: &[u8]) -> io::Result<DumpPart> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag answer");
    let mut at = 0;
    while at + NLMSG_HEADER <= datagram.len() {
        let field = |offset: usize, len: usize| datagram.get(at + offset..at + offset + len);
        let length = u32::from_ne_bytes(
            field(0, 4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?,
        ) as usize;
        let kind = u16::from_ne_bytes(
            field(4, 2)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?,
        );
        if length < NLMSG_HEADER || at + length > datagram.len() {
            return Err(bad());
        }
        match kind {
            NLMSG_DONE => return Ok(DumpPart::Done),
            NLMSG_ERROR => {
                let errno = field(NLMSG_HEADER, 4)
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .ok_or_else(bad)?;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                let body = &datagram[at + NLMSG_HEADER..at + length];
                if let Some(queued) = listening_socket_named(body, path) {
                    return Ok(DumpPart::Found(queued));
                }
            }
            _ => {}
        }
        at += align(length);
    }
    Ok(DumpPart::More)
}

/// The queue length in one `unix_diag_msg` and its attributes, if it names `path`.
fn listening_socket_named(body: &[u8], path: &[u8]) -> Option<u32> {
    let mut name = None;
    let mut queued = None;
    let mut at = UNIX_DIAG_MSG;
    while at + 4 <= body.len() {
        let length = usize::from(u16::from_ne_bytes(body[at..at + 2].try_into().ok()?));
        let kind = u16::from_ne_bytes(body[at + 2..at + 4].try_into().ok()?);
        let value = body.get(at + 4..at + length)?;
        match kind {
            // A path as the kernel keeps it: with its terminating NUL.
            UNIX_DIAG_NAME => name = Some(value.strip_suffix(&[0]).unwrap_or(value)),
            UNIX_DIAG_RQLEN => queued = Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?)),
            _ => {}
        }
        if length < 4 {
            return None;
        }
        at += align(length);
    }
    (name? == path).then_some(queued?)
}

fn align(length: usize) -> usize {
    (length + 3) & !3
}

fn unix_waiting(path: &Path) -> io::Result<Option<u32>> {
    use rustix::net::{
        netlink, recv, sendto, socket, AddressFamily, RecvFlags, SendFlags, SocketType,
    };
    use std::os::unix::ffi::OsStrExt;

    let wanted = match path.canonicalize() {
        Ok(path) => path,
        Err(_) => return Ok(None),
    };
    let fd = socket(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        Some(netlink::SOCK_DIAG),
    )?;
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    sendto(&fd, &unix_dump_request(1), SendFlags::empty(), &kernel)?;
    let mut buffer = vec![0u8; 32 * 1024];
    // The name the backend bound, as given or as resolved.
    let mut names = vec![path.as_os_str().as_bytes().to_vec()];
    if wanted.as_path() != path {
        names.push(wanted.as_os_str().as_bytes().to_vec());
    }
    let mut found = None;
    loop {
        let (received, _) = recv(&fd, &mut buffer[..], RecvFlags::empty())?;
        let datagram = &buffer[..received];
        let mut done = false;
        for name in &names {
            match unix_dump_part(datagram, name)? {
                DumpPart::Found(queued) => found = Some(queued),
                DumpPart::Done => done = true,
                DumpPart::More => {}
            }
        }
        // Read the dump to its end: the socket is dropped right after, but a dump half read
        // would be no cheaper.
        if done {
            return Ok(found);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2328 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:2328 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:2329 00000000000000000000000000000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
";

    #[test]
    fn a_tcp_listener_shows_its_accept_queue() {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(tcp_listen_queue(TCP, localhost, 9000), Some(3));
        // Listening on 0.0.0.0:8080 takes connections to 127.0.0.1:8080 too.
        assert_eq!(tcp_listen_queue(TCP, localhost, 8080), Some(0));
        assert_eq!(tcp_listen_queue(TCP, localhost, 9001), None);
        assert_eq!(
            tcp_listen_queue(TCP6, IpAddr::V6(Ipv6Addr::LOCALHOST), 9001),
            Some(2)
        );
    }

    #[test]
    fn only_this_hosts_addresses_are_looked_up() {
        assert_eq!(
            local_endpoint("127.0.0.1:9000"),
            Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 9000))
        );
        assert_eq!(
            local_endpoint("localhost:9000"),
            Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 9000))
        );
        assert_eq!(
            local_endpoint("[::1]:9000"),
            Some((IpAddr::V6(Ipv6Addr::LOCALHOST), 9000))
        );
        assert_eq!(local_endpoint("10.0.0.5:9000"), None);
        assert_eq!(local_endpoint("php.internal:9000"), None);
    }

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(align(bytes.len()), 0);
        bytes
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut bytes = ((NLMSG_HEADER + body.len()) as u32).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&[0; 10]);
        bytes.extend_from_slice(body);
        bytes.resize(align(bytes.len()), 0);
        bytes
    }

    fn listener(name: &[u8], queued: u32) -> Vec<u8> {
        let mut body = vec![AF_UNIX, 1, 10, 0];
        body.extend_from_slice(&[0; 12]);
        // The kernel gives a path with its terminating NUL.
        body.extend(attribute(UNIX_DIAG_NAME, &[name, b"\0"].concat()));
        let mut rqlen = queued.to_ne_bytes().to_vec();
        rqlen.extend_from_slice(&128u32.to_ne_bytes());
        body.extend(attribute(UNIX_DIAG_RQLEN, &rqlen));
        message(SOCK_DIAG_BY_FAMILY, &body)
    }

    #[test]
    fn the_dump_request_asks_for_listening_unix_sockets_with_names_and_queues() {
        let request = unix_dump_request(7);
        assert_eq!(u32::from_ne_bytes(request[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes(request[4..6].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(request[6..8].try_into().unwrap()), 0x301);
        assert_eq!(request[16], 1);
        assert_eq!(
            u32::from_ne_bytes(request[20..24].try_into().unwrap()),
            1 << 10
        );
        assert_eq!(
            u32::from_ne_bytes(request[28..32].try_into().unwrap()),
            0x11
        );
    }

    #[test]
    fn the_dump_answer_is_searched_by_path() {
        let mut datagram = listener(b"/run/other.sock", 5);
        datagram.extend(listener(b"/run/php/fpm.sock", 3));
        assert_eq!(
            unix_dump_part(&datagram, b"/run/php/fpm.sock").unwrap(),
            DumpPart::Found(3)
        );
        assert_eq!(
            unix_dump_part(&datagram, b"/run/none.sock").unwrap(),
            DumpPart::More
        );
        let done = message(NLMSG_DONE, &[0; 4]);
        assert_eq!(
            unix_dump_part(&done, b"/run/none.sock").unwrap(),
            DumpPart::Done
        );
        let error = message(NLMSG_ERROR, &(-1i32).to_ne_bytes());
        assert!(unix_dump_part(&error, b"/x").is_err());
        assert!(unix_dump_part(&datagram[..20], b"/x").is_err());
    }

    #[test]
    fn a_real_unix_listener_is_found_with_its_queue() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("backend.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let address = Address::Unix(path.clone());
        assert_eq!(waiting(&address).unwrap(), Some(0));
        let _waiting = [
            std::os::unix::net::UnixStream::connect(&path).unwrap(),
            std::os::unix::net::UnixStream::connect(&path).unwrap(),
        ];
        assert_eq!(waiting(&address).unwrap(), Some(2));
        drop(listener);
        let gone = Address::Unix(directory.path().join("none.sock"));
        assert_eq!(waiting(&gone).unwrap(), None);
    }

    #[test]
    fn a_real_tcp_listener_is_found_with_its_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let address = Address::Tcp(format!("127.0.0.1:{port}"));
        assert_eq!(waiting(&address).unwrap(), Some(0));
        let _waiting = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(waiting(&address).unwrap(), Some(1));
        assert_eq!(
            waiting(&Address::Tcp("10.255.0.1:9000".into())).unwrap(),
            None
        );
    }
}
