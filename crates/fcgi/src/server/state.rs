//! The per-connection protocol state of the application side, without I/O: records in,
//! [`Action`]s out. It tracks every active request id (FastCGI 1.0 §3.3), so running several at
//! once (multiplexing) is a matter of configuration, not structure. Each active request holds
//! one unit of the server-wide [`RequestBudget`] until it leaves the state, however it leaves.
//! `connection.rs` drives it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::budget::RequestBudget;
use super::config::ServerConfig;
use super::error::ServerError;
use super::request::{HandlerOutcome, Request};
use super::response::Slot;
use crate::protocol::{
    decode_pairs, encode_pair, BeginRequest, EndRequest, NameValueDecoder, ProtocolStatus, Record,
    RecordBody, RequestId, Role, UnknownType, FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS,
};

/// The app status reported for a request the client aborted.
const ABORTED_APP_STATUS: u32 = 1;

/// What the connection task must do, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write this record.
    Send(Record),
    /// Run the handler for this request.
    Start { slot: Slot, request: Request },
    /// Stop the handler of this slot; its remaining output is dropped.
    Abort(Slot),
    /// Flush what was written and close the connection.
    Close,
}

/// A request between BEGIN_REQUEST and the start of its handler.
#[derive(Debug)]
struct Receiving {
    params: NameValueDecoder,
    pairs: Vec<(Bytes, Bytes)>,
    params_done: bool,
    stdin: BytesMut,
    stdin_done: bool,
}

#[derive(Debug)]
enum Phase {
    Receiving(Receiving),
    Running { generation: u64 },
}

#[derive(Debug)]
struct ActiveRequest {
    role: Role,
    keep_conn: bool,
    phase: Phase,
}

/// Request ids of one connection and what each is waiting for.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    config: Arc<ServerConfig>,
    budget: Arc<RequestBudget>,
    active: HashMap<RequestId, ActiveRequest>,
    next_generation: u64,
    accepted_requests: u64,
    /// Requests after which the connection closes (`close_after_requests`, plus its jitter).
    close_after: Option<u64>,
    /// Take no new requests; close once the active ones end.
    closing: bool,
    closed: bool,
}

impl ConnectionState {
    pub(crate) fn new(config: Arc<ServerConfig>, budget: Arc<RequestBudget>) -> Self {
        ConnectionState {
            close_after: config.close_after_requests,
            config,
            budget,
            active: HashMap::new(),
            next_generation: 0,
            accepted_requests: 0,
            closing: false,
            closed: false,
        }
    }

    /// This connection closes `extra` requests later than `close_after_requests` says (its
    /// share of `close_after_requests_jitter`, drawn by the caller).
    pub(crate) fn close_later_by(&mut self, extra: u64) {
        self.close_after = self.close_after.map(|limit| limit + extra);
    }

    /// Whether no request is in progress: nothing is lost if the connection closes now.
    pub(crate) fn is_idle(&self) -> bool {
        self.active.is_empty()
    }

    /// Whether output of `slot` still belongs on the wire.
    pub(crate) fn is_current(&self, slot: Slot) -> bool {
        matches!(
            self.active.get(&slot.request_id),
            Some(ActiveRequest { phase: Phase::Running { generation }, .. })
                if *generation == slot.generation
        )
    }

    pub(crate) fn on_record(
        &mut self,
        record: Record,
        actions: &mut Vec<Action>,
    ) -> Result<(), ServerError> {
        if self.closed {
            return Ok(());
        }
        let id = record.request_id;
        if id == RequestId::MANAGEMENT {
            return self.on_management(&record, actions);
        }
        match record.body {
            RecordBody::BeginRequest(begin) => self.on_begin(id, begin, actions),
            RecordBody::AbortRequest => {
                self.on_abort(id, actions);
                Ok(())
            }
            RecordBody::Params(content) => self.on_params(id, &content, actions),
            RecordBody::Stdin(content) => self.on_stdin(id, &content, actions),
            // §3.3: records for inactive ids, and types an application never receives, are
            // ignored. DATA would only matter to the Filter role, which is refused.
            _ => Ok(()),
        }
    }

    pub(crate) fn on_handler_finished(
        &mut self,
        slot: Slot,
        outcome: HandlerOutcome,
        actions: &mut Vec<Action>,
    ) {
        if !self.is_current(slot) {
            return;
        }
        let Some(request) = self.retire(slot.request_id) else {
            return;
        };
        match outcome {
            HandlerOutcome::Complete { app_status } => self.end_request(
                slot.request_id,
                request.keep_conn,
                app_status,
                ProtocolStatus::RequestComplete,
                actions,
            ),
            HandlerOutcome::CloseConnection => self.close(actions),
            HandlerOutcome::Overloaded => self.end_request(
                slot.request_id,
                request.keep_conn,
                0,
                ProtocolStatus::Overloaded,
                actions,
            ),
        }
    }

    /// The peer closed its side: requests still receiving can never start; running ones may
    /// still answer if the peer only half-closed.
    pub(crate) fn on_end_of_input(&mut self, actions: &mut Vec<Action>) {
        let before = self.active.len();
        self.active
            .retain(|_, request| matches!(request.phase, Phase::Running { .. }));
        self.budget.give_back(before - self.active.len());
        self.close_when_idle(actions);
    }

    /// Graceful shutdown: finish what is active, refuse the rest, then close.
    pub(crate) fn begin_drain(&mut self, actions: &mut Vec<Action>) {
        self.close_when_idle(actions);
    }

    fn on_management(
        &mut self,
        record: &Record,
        actions: &mut Vec<Action>,
    ) -> Result<(), ServerError> {
        if !self.config.answer_management_records {
            return Ok(());
        }
        let body = match &record.body {
            RecordBody::GetValues(content) => {
                RecordBody::GetValuesResult(self.get_values_result(content)?)
            }
            // §4.2: any other management record is answered with UNKNOWN_TYPE.
            _ => RecordBody::UnknownType(UnknownType {
                record_type: record.record_type().as_u8(),
            }),
        };
        actions.push(Action::Send(Record {
            request_id: RequestId::MANAGEMENT,
            body,
        }));
        Ok(())
    }

    /// §4.1: answer only the names asked for that this server knows.
    fn get_values_result(&self, query: &[u8]) -> Result<Bytes, ServerError> {
        let mut content = BytesMut::new();
        for (name, _) in decode_pairs(query)? {
            let value = match name.as_ref() {
                name if name == FCGI_MAX_CONNS.as_bytes() => {
                    self.config.max_conns.max(1).to_string()
                }
                name if name == FCGI_MAX_REQS.as_bytes() => self.config.max_reqs.max(1).to_string(),
                name if name == FCGI_MPXS_CONNS.as_bytes() => {
                    let announced = self
                        .config
                        .announced_mpxs_conns
                        .unwrap_or(self.config.mpxs_conns);
                    u8::from(announced).to_string()
                }
                _ => continue,
            };
            encode_pair(&mut content, &name, value.as_bytes());
        }
        Ok(content.freeze())
    }

    fn on_begin(
        &mut self,
        id: RequestId,
        begin: BeginRequest,
        actions: &mut Vec<Action>,
    ) -> Result<(), ServerError> {
        if self.active.contains_key(&id) {
            return Err(ServerError::DuplicateRequest(id));
        }
        let refusal = if !matches!(begin.role, Role::Responder | Role::Authorizer) {
            Some(ProtocolStatus::UnknownRole)
        } else if self.closing {
            Some(ProtocolStatus::Overloaded)
        } else if !self.config.mpxs_conns && !self.active.is_empty() {
            Some(ProtocolStatus::CantMpxConn)
        } else if self.active.len() >= self.config.requests_per_connection() {
            Some(ProtocolStatus::Overloaded)
        } else if !self.budget.try_take() {
            // §4.1: FCGI_MAX_REQS bounds the whole application; the request never runs.
            Some(ProtocolStatus::Overloaded)
        } else {
            None
        };
        if let Some(status) = refusal {
            self.end_request(id, begin.keep_conn, 0, status, actions);
            return Ok(());
        }
        self.active.insert(
            id,
            ActiveRequest {
                role: begin.role,
                keep_conn: begin.keep_conn,
                phase: Phase::Receiving(Receiving {
                    params: NameValueDecoder::new(self.config.max_params_bytes),
                    pairs: Vec::new(),
                    params_done: false,
                    stdin: BytesMut::new(),
                    stdin_done: false,
                }),
            },
        );
        self.accepted_requests += 1;
        if self
            .close_after
            .is_some_and(|limit| self.accepted_requests >= limit)
        {
            self.closing = true;
        }
        Ok(())
    }

    fn on_abort(&mut self, id: RequestId, actions: &mut Vec<Action>) {
        let Some(request) = self.retire(id) else {
            return;
        };
        if let Phase::Running { generation } = request.phase {
            actions.push(Action::Abort(Slot {
                request_id: id,
                generation,
            }));
        }
        self.end_request(
            id,
            request.keep_conn,
            ABORTED_APP_STATUS,
            ProtocolStatus::RequestComplete,
            actions,
        );
    }

    fn on_params(
        &mut self,
        id: RequestId,
        content: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<(), ServerError> {
        let Some(receiving) = self.receiving(id) else {
            return Ok(());
        };
        if receiving.params_done {
            return Ok(());
        }
        if content.is_empty() {
            receiving.params.finish()?;
            receiving.params_done = true;
            self.start_if_ready(id, actions);
            return Ok(());
        }
        receiving.params.feed(content)?;
        while let Some(pair) = receiving.params.next_pair()? {
            receiving.pairs.push(pair);
        }
        Ok(())
    }

    fn on_stdin(
        &mut self,
        id: RequestId,
        content: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<(), ServerError> {
        let limit = self.config.max_stdin_bytes;
        let Some(receiving) = self.receiving(id) else {
            return Ok(());
        };
        if receiving.stdin_done {
            return Ok(());
        }
        if content.is_empty() {
            receiving.stdin_done = true;
            self.start_if_ready(id, actions);
            return Ok(());
        }
        if receiving.stdin.len() + content.len() > limit {
            return Err(ServerError::StdinTooLarge {
                request_id: id,
                limit,
            });
        }
        receiving.stdin.extend_from_slice(content);
        Ok(())
    }

    /// Takes `id` out of the active requests, returning its share of the server's budget.
    fn retire(&mut self, id: RequestId) -> Option<ActiveRequest> {
        let request = self.active.remove(&id)?;
        self.budget.give_back(1);
        Some(request)
    }

    fn receiving(&mut self, id: RequestId) -> Option<&mut Receiving> {
        match self.active.get_mut(&id) {
            Some(ActiveRequest {
                phase: Phase::Receiving(receiving),
                ..
            }) => Some(receiving),
            _ => None,
        }
    }

    /// A Responder runs once PARAMS and STDIN have ended; an Authorizer gets no STDIN
    /// (FastCGI 1.0 §6.3), so it runs when PARAMS ends.
    fn start_if_ready(&mut self, id: RequestId, actions: &mut Vec<Action>) {
        let generation = self.next_generation;
        let Some(request) = self.active.get_mut(&id) else {
            return;
        };
        let Phase::Receiving(receiving) = &mut request.phase else {
            return;
        };
        let stdin_needed = request.role != Role::Authorizer;
        if !receiving.params_done || (stdin_needed && !receiving.stdin_done) {
            return;
        }
        let Phase::Receiving(receiving) =
            std::mem::replace(&mut request.phase, Phase::Running { generation })
        else {
            return;
        };
        self.next_generation += 1;
        actions.push(Action::Start {
            slot: Slot {
                request_id: id,
                generation,
            },
            request: Request {
                request_id: id,
                role: request.role,
                keep_conn: request.keep_conn,
                params: receiving.pairs,
                stdin: receiving.stdin.freeze(),
            },
        });
    }

    fn end_request(
        &mut self,
        id: RequestId,
        keep_conn: bool,
        app_status: u32,
        protocol_status: ProtocolStatus,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::Send(Record {
            request_id: id,
            body: RecordBody::EndRequest(EndRequest {
                app_status,
                protocol_status,
            }),
        }));
        // §5.1: without KEEP_CONN the application closes the connection after this request.
        // Other requests of a multiplexed connection are allowed to finish first.
        if !keep_conn {
            self.closing = true;
        }
        if self.closing {
            self.close_when_idle(actions);
        }
    }

    fn close_when_idle(&mut self, actions: &mut Vec<Action>) {
        self.closing = true;
        if self.active.is_empty() {
            self.close(actions);
        }
    }

    fn close(&mut self, actions: &mut Vec<Action>) {
        if !self.closed {
            self.closed = true;
            actions.push(Action::Close);
        }
    }
}

impl Drop for ConnectionState {
    /// A connection that ends with requests still active (peer gone, crash, error) frees
    /// their share of the server's budget with it.
    fn drop(&mut self) {
        self.budget.give_back(self.active.len());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "state_tests.rs"]
mod tests;
