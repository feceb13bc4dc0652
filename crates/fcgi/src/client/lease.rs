//! One connection held for one request, and how it goes back to the pool.
//!
//! Call [`Lease::release`] after END_REQUEST; a lease dropped without it closes the connection,
//! because a request that did not end cleanly leaves the connection in an unknown state.

use std::sync::Arc;
use std::time::Duration;

use super::connection::{
    Connection, ConnectionId, FirstResponseWatch, RequestBody, ResponseObserver, ResponseStream,
};
use super::error::{ClientError, ConnectionFailure};
use super::pool::PoolShared;

/// The shortest wait before a fresh connection's silence counts as a sign of saturation.
const MIN_SATURATION_BOUND: Duration = Duration::from_millis(250);
/// Silence is judged against this many times the usual wait for a first answer.
const SATURATION_FACTOR: u32 = 4;
/// However slow the backend usually is, judge a silent fresh connection within this.
const MAX_SATURATION_BOUND: Duration = Duration::from_secs(10);

/// One connection, held for one request.
pub struct Lease {
    connection: Option<Connection>,
    pool: Arc<PoolShared>,
    reused: bool,
    keep_conn: bool,
}

impl Lease {
    pub(super) fn new(connection: Connection, pool: Arc<PoolShared>, reused: bool) -> Lease {
        // A connection that carried no request yet is as reusable as the config allows.
        let keep_conn = pool.config.keep_conn;
        Lease {
            connection: Some(connection),
            pool,
            reused,
            keep_conn,
        }
    }

    /// The connection's id, for logs.
    pub fn connection_id(&self) -> ConnectionId {
        self.connection.as_ref().map_or(0, Connection::id)
    }

    /// True when the connection carried an earlier request.
    pub fn was_reused(&self) -> bool {
        self.reused
    }

    /// Sends the request. FCGI_KEEP_CONN is set unless the pool is configured without it or
    /// this is the connection's last request (`keepalive_requests`, `keepalive_time`): then the
    /// backend closes the connection itself, and the TIME_WAIT entry stays on its side.
    pub async fn send_request<F>(
        &mut self,
        write_params: F,
        body: RequestBody,
    ) -> Result<ResponseStream, ClientError>
    where
        F: FnOnce(&mut dyn FnMut(&[u8], &[u8])),
    {
        let config = &self.pool.config;
        let Some(connection) = self.connection.as_ref() else {
            return Err(ClientError::Connection {
                address: self.pool.address.clone(),
                failure: ConnectionFailure::ClosedByGateway,
            });
        };
        let first_request = connection.requests_started() == 0;
        let last_request = connection.requests_started() + 1 >= config.keepalive_requests
            || connection.age() >= config.keepalive_time;
        self.keep_conn = config.keep_conn && !last_request;
        let mut stream = connection
            .send_request(self.keep_conn, write_params, body, config.read_timeout)
            .await?;
        // Only a fresh connection can be sitting in the backend's listen backlog.
        let watch = first_request.then(|| {
            let state = self.pool.lock();
            FirstResponseWatch {
                sent_at: tokio::time::Instant::now(),
                bound: (state.first_response_average * SATURATION_FACTOR)
                    .clamp(MIN_SATURATION_BOUND, MAX_SATURATION_BOUND),
                completed_before: state.completed,
            }
        });
        stream.observe(Arc::clone(&self.pool) as Arc<dyn ResponseObserver>, watch);
        Ok(stream)
    }

    /// The request ended with END_REQUEST: the connection goes back to the pool, or, when it
    /// was sent without KEEP_CONN, is left for the backend to close.
    pub fn release(mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        {
            let mut state = self.pool.lock();
            state.stuck.retain(|id| *id != connection.id());
            self.pool.request_completed(&mut state);
        }
        if self.keep_conn {
            self.pool.put_back(connection);
        } else {
            connection.retire();
            self.pool.free_slot(&mut self.pool.lock());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.close();
            let mut state = self.pool.lock();
            state.stuck.retain(|id| *id != connection.id());
            self.pool.free_slot(&mut state);
        }
    }
}
