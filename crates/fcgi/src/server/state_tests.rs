//! Tests of the pure connection state: generations, limits, draining and closing rules.

use super::*;

fn state(config: ServerConfig) -> ConnectionState {
    ConnectionState::new(Arc::new(config))
}

fn feed(state: &mut ConnectionState, id: u16, body: RecordBody) -> Vec<Action> {
    let mut actions = Vec::new();
    let record = Record {
        request_id: RequestId(id),
        body,
    };
    state.on_record(record, &mut actions).unwrap();
    actions
}

fn begin(state: &mut ConnectionState, id: u16, keep_conn: bool) -> Vec<Action> {
    let begin = BeginRequest {
        role: Role::Responder,
        keep_conn,
    };
    feed(state, id, RecordBody::BeginRequest(begin))
}

/// Begins a request with no params and no stdin and returns the slot its handler runs in.
fn start(state: &mut ConnectionState, id: u16, keep_conn: bool) -> Slot {
    assert!(begin(state, id, keep_conn).is_empty());
    assert!(feed(state, id, RecordBody::Params(Bytes::new())).is_empty());
    match feed(state, id, RecordBody::Stdin(Bytes::new())).as_slice() {
        [Action::Start { slot, request }] => {
            assert_eq!(request.request_id, RequestId(id));
            *slot
        }
        other => panic!("expected Start, got {other:?}"),
    }
}

fn end_status(actions: &[Action]) -> Vec<(u16, ProtocolStatus, u32)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send(Record {
                request_id,
                body: RecordBody::EndRequest(end),
            }) => Some((request_id.0, end.protocol_status, end.app_status)),
            _ => None,
        })
        .collect()
}

fn closes(actions: &[Action]) -> bool {
    matches!(actions.last(), Some(Action::Close))
}

#[test]
fn a_reused_id_gets_a_new_generation() {
    let mut state = state(ServerConfig::default());
    let first = start(&mut state, 1, true);
    let aborted = feed(&mut state, 1, RecordBody::AbortRequest);
    assert!(matches!(aborted[0], Action::Abort(slot) if slot == first));
    assert!(!state.is_current(first));
    let second = start(&mut state, 1, true);
    assert_ne!(first, second);
    assert!(state.is_current(second));
    let mut actions = Vec::new();
    state.on_handler_finished(
        first,
        HandlerOutcome::Complete { app_status: 0 },
        &mut actions,
    );
    assert!(actions.is_empty(), "a stale handler's end is ignored");
    assert!(state.is_current(second));
}

#[test]
fn multiplexing_is_capped_by_max_reqs() {
    let mut state = state(ServerConfig {
        mpxs_conns: true,
        max_reqs: 2,
        ..ServerConfig::default()
    });
    start(&mut state, 1, true);
    assert!(begin(&mut state, 2, true).is_empty());
    let refused = begin(&mut state, 3, true);
    assert_eq!(
        end_status(&refused),
        vec![(3, ProtocolStatus::Overloaded, 0)]
    );
    assert!(!closes(&refused));
}

#[test]
fn draining_refuses_new_requests_and_closes_after_the_active_one() {
    let mut state = state(ServerConfig::default());
    let slot = start(&mut state, 1, true);
    let mut actions = Vec::new();
    state.begin_drain(&mut actions);
    assert!(actions.is_empty(), "the running request may finish");
    let refused = begin(&mut state, 2, true);
    assert_eq!(
        end_status(&refused),
        vec![(2, ProtocolStatus::Overloaded, 0)]
    );
    state.on_handler_finished(
        slot,
        HandlerOutcome::Complete { app_status: 3 },
        &mut actions,
    );
    assert_eq!(
        end_status(&actions),
        vec![(1, ProtocolStatus::RequestComplete, 3)]
    );
    assert!(closes(&actions));
    assert!(
        feed(&mut state, 3, RecordBody::AbortRequest).is_empty(),
        "closed: ignored"
    );
}

#[test]
fn refusing_without_keep_conn_does_not_kill_the_running_request() {
    let mut state = state(ServerConfig::default());
    let slot = start(&mut state, 1, true);
    let refused = begin(&mut state, 2, false);
    assert_eq!(
        end_status(&refused),
        vec![(2, ProtocolStatus::CantMpxConn, 0)]
    );
    assert!(!closes(&refused));
    assert!(state.is_current(slot));
    let mut actions = Vec::new();
    state.on_handler_finished(
        slot,
        HandlerOutcome::Complete { app_status: 0 },
        &mut actions,
    );
    assert!(closes(&actions));
}

#[test]
fn end_of_input_drops_requests_still_receiving_and_waits_for_running_ones() {
    let mut state = state(ServerConfig {
        mpxs_conns: true,
        ..ServerConfig::default()
    });
    let running = start(&mut state, 1, true);
    begin(&mut state, 2, true);
    let mut actions = Vec::new();
    state.on_end_of_input(&mut actions);
    assert!(actions.is_empty());
    state.on_handler_finished(
        running,
        HandlerOutcome::Complete { app_status: 0 },
        &mut actions,
    );
    assert_eq!(
        end_status(&actions),
        vec![(1, ProtocolStatus::RequestComplete, 0)]
    );
    assert!(closes(&actions));
}

#[test]
fn duplicate_begin_and_malformed_get_values_are_errors() {
    let mut state = state(ServerConfig::default());
    begin(&mut state, 1, true);
    let duplicate = Record {
        request_id: RequestId(1),
        body: RecordBody::BeginRequest(BeginRequest {
            role: Role::Responder,
            keep_conn: true,
        }),
    };
    assert!(matches!(
        state.on_record(duplicate, &mut Vec::new()),
        Err(ServerError::DuplicateRequest(RequestId(1)))
    ));
    let malformed = Record {
        request_id: RequestId::MANAGEMENT,
        body: RecordBody::GetValues(Bytes::from_static(&[5, 0, b'a'])),
    };
    assert!(matches!(
        state.on_record(malformed, &mut Vec::new()),
        Err(ServerError::Protocol(_))
    ));
}

#[test]
fn a_begin_request_on_the_management_id_is_an_unknown_type() {
    let mut state = state(ServerConfig::default());
    let begin = BeginRequest {
        role: Role::Responder,
        keep_conn: true,
    };
    let actions = feed(&mut state, 0, RecordBody::BeginRequest(begin));
    assert!(matches!(
        actions.as_slice(),
        [Action::Send(Record {
            body: RecordBody::UnknownType(UnknownType { record_type: 1 }),
            ..
        })]
    ));
}
