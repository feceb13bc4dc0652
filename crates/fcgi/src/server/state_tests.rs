//! Tests of the pure connection state: generations, limits (per connection and server-wide),
//! GET_VALUES answers, draining and closing rules.

use super::*;

fn state(config: ServerConfig) -> ConnectionState {
    ConnectionState::new(Arc::new(config), Arc::new(RequestBudget::unlimited()))
}

fn multiplexing(max_reqs_per_conn: u32) -> ServerConfig {
    ServerConfig {
        mpxs_conns: true,
        max_reqs_per_conn,
        ..ServerConfig::default()
    }
}

/// One connection of a server whose connections share `budget`.
fn state_within(config: &ServerConfig, budget: &Arc<RequestBudget>) -> ConnectionState {
    ConnectionState::new(Arc::new(config.clone()), Arc::clone(budget))
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
fn multiplexing_is_capped_by_max_reqs_per_conn() {
    let mut state = state(multiplexing(2));
    start(&mut state, 1, true);
    assert!(begin(&mut state, 2, true).is_empty());
    let refused = begin(&mut state, 3, true);
    assert_eq!(
        end_status(&refused),
        vec![(3, ProtocolStatus::Overloaded, 0)]
    );
    assert!(!closes(&refused));
    assert!(
        feed(&mut state, 3, RecordBody::Params(Bytes::new())).is_empty(),
        "a refused request never reaches a handler"
    );
    assert!(feed(&mut state, 3, RecordBody::Stdin(Bytes::new())).is_empty());

    let mut actions = Vec::new();
    state
        .on_record(
            Record {
                request_id: RequestId(2),
                body: RecordBody::AbortRequest,
            },
            &mut actions,
        )
        .unwrap();
    start(&mut state, 3, true);
}

#[test]
fn max_reqs_bounds_requests_over_all_connections_of_a_server() {
    let config = multiplexing(64);
    let budget = Arc::new(RequestBudget::new(3));
    let mut first = state_within(&config, &budget);
    let mut second = state_within(&config, &budget);
    let running = start(&mut first, 1, true);
    start(&mut first, 2, true);
    assert!(begin(&mut second, 1, true).is_empty());
    assert_eq!(budget.in_progress(), 3);

    let refused = begin(&mut second, 2, true);
    assert_eq!(
        end_status(&refused),
        vec![(2, ProtocolStatus::Overloaded, 0)]
    );
    assert!(feed(&mut second, 2, RecordBody::Params(Bytes::new())).is_empty());
    assert!(
        feed(&mut second, 2, RecordBody::Stdin(Bytes::new())).is_empty(),
        "the refused request never starts"
    );
    assert_eq!(budget.in_progress(), 3, "a refusal takes nothing");

    let mut actions = Vec::new();
    first.on_handler_finished(
        running,
        HandlerOutcome::Complete { app_status: 0 },
        &mut actions,
    );
    assert_eq!(budget.in_progress(), 2);
    start(&mut second, 2, true);
    assert_eq!(budget.in_progress(), 3);
}

#[test]
fn max_reqs_also_bounds_connections_that_do_not_multiplex() {
    let config = ServerConfig::default();
    let budget = Arc::new(RequestBudget::new(1));
    let mut first = state_within(&config, &budget);
    let mut second = state_within(&config, &budget);
    start(&mut first, 1, true);
    let refused = begin(&mut second, 1, true);
    assert_eq!(
        end_status(&refused),
        vec![(1, ProtocolStatus::Overloaded, 0)]
    );
}

#[test]
fn every_way_a_request_leaves_gives_its_budget_back() {
    let config = multiplexing(64);
    let budget = Arc::new(RequestBudget::new(10));
    let mut state = state_within(&config, &budget);
    start(&mut state, 1, true);
    start(&mut state, 2, true);
    begin(&mut state, 3, true);
    begin(&mut state, 4, true);
    assert_eq!(budget.in_progress(), 4);

    feed(&mut state, 1, RecordBody::AbortRequest);
    assert_eq!(budget.in_progress(), 3, "aborted while running");
    feed(&mut state, 3, RecordBody::AbortRequest);
    assert_eq!(budget.in_progress(), 2, "aborted while receiving");
    state.on_end_of_input(&mut Vec::new());
    assert_eq!(
        budget.in_progress(),
        1,
        "still receiving when the peer closed"
    );
    drop(state);
    assert_eq!(budget.in_progress(), 0, "running when the connection went");
}

fn get_values(state: &mut ConnectionState) -> Vec<(String, String)> {
    let mut query = BytesMut::new();
    for name in [FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, "OTHER"] {
        encode_pair(&mut query, name.as_bytes(), b"");
    }
    let actions = feed(state, 0, RecordBody::GetValues(query.freeze()));
    let [Action::Send(Record {
        body: RecordBody::GetValuesResult(content),
        ..
    })] = actions.as_slice()
    else {
        panic!("expected one GET_VALUES_RESULT, got {actions:?}");
    };
    decode_pairs(content)
        .unwrap()
        .into_iter()
        .map(|(name, value)| {
            let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
            (text(&name), text(&value))
        })
        .collect()
}

#[test]
fn get_values_announces_multiplexing_and_the_server_wide_bound() {
    let mut state = state(ServerConfig {
        max_conns: 8,
        max_reqs: 512,
        ..multiplexing(64)
    });
    let pairs = |conns: &str, reqs: &str, mpxs: &str| {
        vec![
            ("FCGI_MAX_CONNS".to_owned(), conns.to_owned()),
            ("FCGI_MAX_REQS".to_owned(), reqs.to_owned()),
            ("FCGI_MPXS_CONNS".to_owned(), mpxs.to_owned()),
        ]
    };
    assert_eq!(get_values(&mut state), pairs("8", "512", "1"));

    let mut single = self::state(ServerConfig::default());
    assert_eq!(get_values(&mut single), pairs("64", "4096", "0"));

    let mut liar = self::state(ServerConfig {
        announced_mpxs_conns: Some(true),
        ..ServerConfig::default()
    });
    assert_eq!(get_values(&mut liar), pairs("64", "4096", "1"));
    start(&mut liar, 1, true);
    assert_eq!(
        end_status(&begin(&mut liar, 2, true)),
        vec![(2, ProtocolStatus::CantMpxConn, 0)],
        "announcing is not doing"
    );
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
