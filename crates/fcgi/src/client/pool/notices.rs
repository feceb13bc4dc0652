//! The pool's log lines: what each [`Notice`] from the state says to an operator, and at which
//! level. The wording is stable: bench/seed-000.sh counts some of these lines.

use super::effects::Notice;
use crate::net::Address;

/// Writes `notice` to the log, naming the backend.
pub(super) fn log(backend: &Address, notice: &Notice) {
    match notice {
        Notice::CapRaised { cap } => {
            tracing::info!(%backend, cap, "requests succeed under demand; raising the connection cap")
        }
        Notice::CapLowered { reason, from, to } => {
            tracing::warn!(%backend, "{reason:?}: the backend serves fewer connections than the pool held; lowering the connection cap from {from} to {to}")
        }
        Notice::CapFromBackend { max_conns } => {
            tracing::info!(%backend, "connection cap {max_conns} from FCGI_MAX_CONNS")
        }
        Notice::NoMaxConnsAnnounced { cap } => {
            tracing::info!(%backend, "the backend does not announce FCGI_MAX_CONNS (php-fpm never does): the cap stays {cap} and adapts; set max_conns or php_fpm_config to give the real figure")
        }
        Notice::MaxConnsOfOneNotTrusted { cap } => {
            tracing::info!(%backend, "the backend announces FCGI_MAX_CONNS=1, as libfcgi does in each of its processes however many there are: the cap stays {cap} and adapts; set max_conns to give the real figure")
        }
        Notice::ClosePatternLearned { requests } => {
            tracing::info!(%backend, "the backend closes connections after {requests} requests (pm.max_requests?); retiring them at {requests}");
        }
        Notice::IdleClosedByBackend { connection } => {
            tracing::debug!(%backend, connection, "idle connection closed by the backend; dropped from the pool")
        }
        Notice::IdleExpired { exclusive, shared } => {
            tracing::debug!(%backend, closed = exclusive, shared, "closed idle connections past keepalive_timeout or keepalive_time")
        }
        Notice::SharingWithOthers {
            others,
            idle_closed,
            yielding,
        } => {
            tracing::debug!(%backend, others, idle_closed, yielding, "other clients wait in the backend's listen queue: handing workers over (idle connections closed, busy ones closed as their requests end)")
        }
        Notice::StuckConnectionServed { connection, waited } => {
            tracing::info!(%backend, connection, "a connection that waited in the backend's backlog got a worker after {waited:?}")
        }
        Notice::Saturated {
            connection,
            idle_closed,
            cap,
        } => {
            tracing::warn!(%backend, connection, idle_closed, cap, "a new connection got no answer while others were served: the backend has fewer workers than the pool had connections")
        }
        Notice::NoWorkerForNewConnection { connection, cap } => {
            tracing::warn!(%backend, connection, cap, "a new connection got no worker while others were served: closed before any request was sent on it; its request waits for the next free connection")
        }
        Notice::HandshakeIgnored => {
            tracing::info!(%backend, "the backend does not answer FCGI_GET_VALUES on a new connection: requests go out on new connections without waiting for a worker to take them")
        }
        Notice::Overloaded { connection } => {
            tracing::debug!(%backend, connection, "FCGI_OVERLOADED")
        }
        Notice::PerConnectionLowered {
            connection,
            per_connection,
        } => {
            tracing::warn!(%backend, connection, per_connection, "FCGI_OVERLOADED: fewer requests per connection")
        }
        Notice::PerConnectionRaised { per_connection } => {
            tracing::debug!(%backend, per_connection, "raising requests per connection again")
        }
        Notice::CannotMultiplex { connection } => {
            tracing::debug!(%backend, connection, "FCGI_CANT_MPX_CONN")
        }
        Notice::MultiplexingOn {
            why,
            per_connection,
        } => {
            tracing::info!(%backend, per_connection, "multiplexing: requests share connections ({why})")
        }
        Notice::MultiplexingOff { why } => {
            tracing::warn!(%backend, "the backend does not multiplex ({why}); one request per connection from now on")
        }
        Notice::MultiplexingAsConfigured => {
            tracing::info!(%backend, "no FCGI_GET_VALUES answer; multiplexing as configured (multiplex = on)")
        }
        Notice::MultiplexOnButRefused => {
            tracing::warn!(%backend, "multiplex = on, but the backend announces FCGI_MPXS_CONNS=0: one request per connection")
        }
    }
}
