//! Readiness for systemd's `Type=notify` services: `READY=1` once the listener is bound and the
//! pools exist, `RELOADING=1` then `READY=1` around a SIGHUP reload, `STOPPING=1` when shutdown
//! begins, as datagrams to `$NOTIFY_SOCKET` (sd_notify(3)). Written here rather than with a
//! crate: the protocol is one datagram to a unix socket, and a filesystem or abstract (`@name`)
//! address is all there is to it. Without `$NOTIFY_SOCKET` (not started by systemd) nothing
//! happens. Also socket activation, with the `listenfd` crate (it validates `LISTEN_PID`).

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd, if it asked for it. Failures are logged, never
/// fatal: systemd then reports the start as timed out, which says more than a crash would.
pub fn notify(state: &str) {
    let Some(address) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let address = address.to_string_lossy().into_owned();
    if let Err(error) = send(&address, state) {
        tracing::warn!(%address, "cannot tell systemd {state}: {error}");
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd wants beside it (sd_notify(3)); `READY=1`
/// follows when the reload is done, whatever its outcome.
pub fn notify_reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(now.tv_nsec()).unwrap_or(0) / 1000
    });
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
}

/// The listening sockets systemd passed (socket activation: `LISTEN_FDS`, `LISTEN_PID`), in
/// order; `server.rs` gives each the `listen` entry of the same address. With a `.socket`
/// unit, systemd holds the sockets across `systemctl restart`, so connections made while
/// fcgate restarts wait in their backlog instead of being refused.
pub fn activated_listeners() -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut passed = listenfd::ListenFd::from_env();
    let mut listeners = Vec::with_capacity(passed.len());
    for index in 0..passed.len() {
        match passed.take_tcp_listener(index)? {
            Some(listener) => listeners.push(listener),
            None => tracing::warn!(
                index,
                "systemd passed a socket that is not a TCP listener; ignored"
            ),
        }
    }
    Ok(listeners)
}

fn send(address: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match address.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let abstract_address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &abstract_address)?;
        }
        None => {
            socket.send_to(state.as_bytes(), address)?;
        }
    }
    Ok(())
}
