//! The receiving end of one request on a connection: events in order, `read_timeout` between
//! them, and the first-response watch that feeds the pool's saturation detection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::event_queue::{self, TryRecvError};
use super::shared::{ConnectionId, Shared};
use super::state::{EventResult, RequestKey, ResponseEvent};
use crate::client::error::{ClientError, ConnectionFailure, ErrorKind};
use crate::protocol::ProtocolStatus;

/// Told what a request's response shows about the backend's capacity; the pool implements it.
pub(crate) trait ResponseObserver: Send + Sync {
    /// A fresh connection's first request got its first answer after `waited`.
    fn first_response(&self, connection: ConnectionId, waited: Duration);
    /// A fresh connection's first request is still unanswered after its bound; `completed_before`
    /// is the pool's count of finished requests when it was sent.
    /// Returns true when it concluded the connection waits in the backlog; false when there
    /// was no evidence yet (nobody else served either), and the watch should look again.
    fn still_unanswered(&self, connection: ConnectionId, completed_before: u64) -> bool;
    /// The backend refused a request with FCGI_OVERLOADED.
    fn overloaded(&self, connection: ConnectionId);
    /// The backend refused a request with FCGI_CANT_MPX_CONN: it does not multiplex.
    fn cannot_multiplex(&self, connection: ConnectionId);
}

/// Watches the first request on a fresh connection: an answer that does not start within
/// `bound` may mean the connection sits in the backend's listen backlog, unserved.
pub(crate) struct FirstResponseWatch {
    pub(crate) sent_at: tokio::time::Instant,
    pub(crate) bound: Duration,
    pub(crate) completed_before: u64,
    /// Silent bounds so far: the next look comes one bound later.
    pub(crate) looks: u32,
}

/// What the backend answers to one request, event by event; the pool-aware wrapper is
/// [`crate::client::ResponseStream`].
pub(crate) struct Events {
    pub(crate) request: RequestKey,
    shared: Arc<Shared>,
    /// With the count of response bytes the driver queued here and not taken out yet.
    events: event_queue::Receiver<EventResult>,
    read_timeout: Duration,
    observer: Option<Arc<dyn ResponseObserver>>,
    first_response: Option<FirstResponseWatch>,
    silence_reported: bool,
}

impl Events {
    pub(super) fn new(
        request: RequestKey,
        shared: Arc<Shared>,
        events: event_queue::Receiver<EventResult>,
        read_timeout: Duration,
    ) -> Events {
        Events {
            request,
            shared,
            events,
            read_timeout,
            observer: None,
            first_response: None,
            silence_reported: false,
        }
    }

    pub(crate) fn observe(
        &mut self,
        observer: Arc<dyn ResponseObserver>,
        first_response: Option<FirstResponseWatch>,
    ) {
        self.observer = Some(observer);
        self.first_response = first_response;
    }

    /// The next event, or why none will come. After [`ResponseEvent::End`] do not call again.
    pub(crate) async fn next_event(&mut self) -> Result<ResponseEvent, ClientError> {
        let deadline = tokio::time::Instant::now() + self.read_timeout;
        let received = loop {
            let watch_deadline = match (&self.first_response, self.silence_reported) {
                (Some(watch), false) => Some(watch.sent_at + watch.bound * (watch.looks + 1)),
                _ => None,
            };
            match watch_deadline {
                Some(at) if at < deadline => {
                    match tokio::time::timeout_at(at, self.events.recv()).await {
                        Ok(received) => break Some(received),
                        Err(_) => self.report_silence(),
                    }
                }
                _ => {
                    break tokio::time::timeout_at(deadline, self.events.recv())
                        .await
                        .ok()
                }
            }
        };
        match received {
            Some(Some(Ok(event))) => {
                self.noticed(&event);
                Ok(event)
            }
            Some(Some(Err(failure))) => Err(self.failed(failure)),
            Some(None) => Err(self.failed(ConnectionFailure::ClosedByBackend)),
            None => Err(ClientError::from(ErrorKind::ReadTimeout {
                address: self.shared.address.clone(),
                timeout: self.read_timeout,
            })),
        }
    }

    /// The next event if one has already arrived; `None` when the backend has not sent more
    /// yet. Lets the caller answer small, finished responses without waiting or spooling.
    pub(crate) fn try_next_event(&mut self) -> Option<Result<ResponseEvent, ClientError>> {
        let failure = match self.events.try_recv() {
            Ok(Ok(event)) => {
                self.noticed(&event);
                return Some(Ok(event));
            }
            Err(TryRecvError::Empty) => return None,
            Ok(Err(failure)) => failure,
            Err(TryRecvError::Disconnected) => ConnectionFailure::ClosedByBackend,
        };
        Some(Err(self.failed(failure)))
    }

    fn failed(&self, failure: ConnectionFailure) -> ClientError {
        ClientError::from(ErrorKind::Connection {
            address: self.shared.address.clone(),
            failure,
        })
    }

    fn report_silence(&mut self) {
        let (Some(observer), Some(watch)) = (&self.observer, &mut self.first_response) else {
            self.silence_reported = true;
            return;
        };
        // Without evidence now (a CPU-starved machine, a slow app), look again a bound later:
        // a connection left in the backlog must not wait out read_timeout.
        if observer.still_unanswered(self.shared.id, watch.completed_before) {
            self.silence_reported = true;
        } else {
            watch.looks += 1;
        }
    }

    fn noticed(&mut self, event: &ResponseEvent) {
        if let ResponseEvent::Stdout(data) | ResponseEvent::Stderr(data) = event {
            let before = self.events.unread().fetch_sub(data.len(), Ordering::AcqRel);
            let limit = self.shared.max_request_buffer;
            if before > limit && before - data.len() <= limit {
                self.shared.reader_caught_up.notify_one();
            }
        }
        let Some(observer) = &self.observer else {
            return;
        };
        if let Some(watch) = self.first_response.take() {
            observer.first_response(self.shared.id, watch.sent_at.elapsed());
        }
        if let ResponseEvent::End(end) = event {
            match end.protocol_status {
                ProtocolStatus::Overloaded => observer.overloaded(self.shared.id),
                ProtocolStatus::CantMpxConn => observer.cannot_multiplex(self.shared.id),
                _ => {}
            }
        }
    }
}
