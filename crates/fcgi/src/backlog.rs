//! How many connections wait in a local backend's listen queue, accepted by the kernel and not
//! yet by the backend: for a backend that gives each connection a worker (php-fpm, php-cgi),
//! clients waiting for a free worker — another gateway, nginx beside this one, a cron job, or
//! this pool's own fresh connection. `ss -l` shows the same figure as Recv-Q.
//!
//! The figure comes, for a unix socket and a TCP port alike, from the kernel's sock_diag netlink
//! interface, asked for listening sockets only (the kernel walks its listening tables, not every
//! connection, which keeps a look at about 30 µs where reading `/proc/net/tcp` costs
//! milliseconds on a busy host): a `unix_diag` dump with names and queue lengths, matched by
//! path, or an `inet_diag` dump of TCP listeners, matched by port and address. Only an address
//! this host listens on has an answer: a remote backend, or a host name other than `localhost`,
//! gives `None`. The few netlink structures are encoded and read here by hand rather than
//! through the netlink crates, none of which is on the vetted list; the socket itself is
//! rustix's. Encoding and parsing are pure functions tested on byte fixtures; `waiting` is the
//! blocking I/O around them (callers run it on a blocking thread).

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
            for family in [AF_INET, AF_INET6] {
                let found = dump(&inet_dump_request(family), |body| {
                    tcp_listener_queue(body, ip, port)
                })?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            Ok(None)
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

// ---- sock_diag ---------------------------------------------------------------------------------

const NLMSG_HEADER: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const AF_UNIX: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_RQLEN: u16 = 4;
/// `struct unix_diag_msg`: family, type, state, pad, inode, cookie.
const UNIX_DIAG_MSG: usize = 16;
/// Where `struct inet_diag_msg` keeps the source port (big-endian), the source address (4 or 16
/// bytes), and `idiag_rqueue` (for a listener, its accept queue).
const INET_SPORT: usize = 4;
const INET_SRC: usize = 8;
const INET_RQUEUE: usize = 56;

/// A dump request for every listening TCP socket of `family` (`struct inet_diag_req_v2`).
fn inet_dump_request(family: u8) -> [u8; NLMSG_HEADER + 56] {
    let mut message = [0u8; NLMSG_HEADER + 56];
    let length = message.len() as u32;
    message[0..4].copy_from_slice(&length.to_ne_bytes());
    message[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // family, protocol, extensions, pad, states, then the socket id (all zero: any).
    message[16] = family;
    message[17] = IPPROTO_TCP;
    message[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    message
}

/// The accept queue in one `inet_diag_msg`, if it is the listener for `ip:port` (or for the
/// unspecified address and `port`).
fn tcp_listener_queue(body: &[u8], ip: IpAddr, port: u16) -> Option<u32> {
    let family = *body.first()?;
    let sport = u16::from_be_bytes(body.get(INET_SPORT..INET_SPORT + 2)?.try_into().ok()?);
    if sport != port {
        return None;
    }
    let source = match family {
        AF_INET => {
            let octets: [u8; 4] = body.get(INET_SRC..INET_SRC + 4)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        AF_INET6 => {
            let octets: [u8; 16] = body.get(INET_SRC..INET_SRC + 16)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    if source != ip && !source.is_unspecified() {
        return None;
    }
    Some(u32::from_ne_bytes(
        body.get(INET_RQUEUE..INET_RQUEUE + 4)?.try_into().ok()?,
    ))
}

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

/// Reads one datagram of a dump's answer, handing each socket's message to `matches`: the first
/// one it takes, and whether the datagram ends the dump.
fn dump_part<T>(
    datagram: &[u8],
    matches: &mut impl FnMut(&[u8]) -> Option<T>,
) -> io::Result<(Option<T>, bool)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag answer");
    let mut at = 0;
    let mut found = None;
    while at + NLMSG_HEADER <= datagram.len() {
        let header = &datagram[at..at + NLMSG_HEADER];
        let length = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = u16::from_ne_bytes([header[4], header[5]]);
        if length < NLMSG_HEADER || at + length > datagram.len() {
            return Err(bad());
        }
        let body = &datagram[at + NLMSG_HEADER..at + length];
        match kind {
            NLMSG_DONE => return Ok((found, true)),
            NLMSG_ERROR => {
                let errno = body
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .ok_or_else(bad)?;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY if found.is_none() => found = matches(body),
            _ => {}
        }
        at += align(length);
    }
    Ok((found, false))
}

/// Sends the dump `request` and reads the answer to its end; the first socket `matches` takes.
fn dump<T>(request: &[u8], mut matches: impl FnMut(&[u8]) -> Option<T>) -> io::Result<Option<T>> {
    use rustix::net::{
        netlink, recv, sendto, socket, AddressFamily, RecvFlags, SendFlags, SocketType,
    };

    let fd = socket(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        Some(netlink::SOCK_DIAG),
    )?;
    sendto(
        &fd,
        request,
        SendFlags::empty(),
        &netlink::SocketAddrNetlink::new(0, 0),
    )?;
    let mut buffer = vec![0u8; 32 * 1024];
    let mut found = None;
    loop {
        let (received, _) = recv(&fd, &mut buffer[..], RecvFlags::empty())?;
        let (hit, ended) = dump_part(&buffer[..received], &mut matches)?;
        found = found.or(hit);
        if ended || received == 0 {
            return Ok(found);
        }
    }
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
    use std::os::unix::ffi::OsStrExt;

    let Ok(resolved) = path.canonicalize() else {
        return Ok(None);
    };
    // The name the backend bound, as given or as resolved.
    let mut names = vec![path.as_os_str().as_bytes().to_vec()];
    if resolved.as_path() != path {
        names.push(resolved.as_os_str().as_bytes().to_vec());
    }
    dump(&unix_dump_request(1), |body| {
        names
            .iter()
            .find_map(|name| listening_socket_named(body, name))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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

    fn named(path: &'static [u8]) -> impl FnMut(&[u8]) -> Option<u32> {
        move |body| listening_socket_named(body, path)
    }

    #[test]
    fn the_dump_answer_is_searched_by_path() {
        let mut datagram = listener(b"/run/other.sock", 5);
        datagram.extend(listener(b"/run/php/fpm.sock", 3));
        let part = |datagram: &[u8], path| dump_part(datagram, &mut named(path)).unwrap();
        assert_eq!(part(&datagram, b"/run/php/fpm.sock"), (Some(3), false));
        assert_eq!(part(&datagram, b"/run/none.sock"), (None, false));
        datagram.extend(message(NLMSG_DONE, &[0; 4]));
        assert_eq!(part(&datagram, b"/run/php/fpm.sock"), (Some(3), true));
        assert_eq!(part(&datagram, b"/run/none.sock"), (None, true));
        let error = message(NLMSG_ERROR, &(-1i32).to_ne_bytes());
        assert!(dump_part(&error, &mut named(b"/x")).is_err());
        assert!(dump_part(&datagram[..20], &mut named(b"/x")).is_err());
    }

    fn tcp_listener(family: u8, port: u16, address: &[u8], queued: u32) -> Vec<u8> {
        let mut body = vec![0u8; 72];
        body[0] = family;
        body[1] = TCP_LISTEN as u8;
        body[INET_SPORT..INET_SPORT + 2].copy_from_slice(&port.to_be_bytes());
        body[INET_SRC..INET_SRC + address.len()].copy_from_slice(address);
        body[INET_RQUEUE..INET_RQUEUE + 4].copy_from_slice(&queued.to_ne_bytes());
        body
    }

    #[test]
    fn a_tcp_listener_is_matched_by_port_and_address() {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let on_loopback = tcp_listener(AF_INET, 9000, &[127, 0, 0, 1], 3);
        assert_eq!(tcp_listener_queue(&on_loopback, localhost, 9000), Some(3));
        assert_eq!(tcp_listener_queue(&on_loopback, localhost, 9001), None);
        // Listening on 0.0.0.0 (or [::]) takes connections to 127.0.0.1 too.
        let anywhere = tcp_listener(AF_INET6, 9000, &[0; 16], 2);
        assert_eq!(tcp_listener_queue(&anywhere, localhost, 9000), Some(2));
        let elsewhere = tcp_listener(AF_INET, 9000, &[10, 0, 0, 5], 1);
        assert_eq!(tcp_listener_queue(&elsewhere, localhost, 9000), None);
    }

    #[test]
    fn the_tcp_dump_request_asks_for_listeners_of_one_family() {
        let request = inet_dump_request(AF_INET6);
        assert_eq!(u32::from_ne_bytes(request[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(request[6..8].try_into().unwrap()), 0x301);
        assert_eq!((request[16], request[17]), (AF_INET6, IPPROTO_TCP));
        assert_eq!(
            u32::from_ne_bytes(request[20..24].try_into().unwrap()),
            1 << 10
        );
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
