//! Every rule `state.rs` holds, driven without a socket or a clock: commands and backend bytes
//! in, the bytes queued for the socket and each request's events out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::event_queue;
use super::request::{encode_head, MemoryBody};
use super::state::{
    Command, ConnectionState, EventResult, RequestKey, ResponseEvent, Stdin, MAX_QUEUED_COMMANDS,
};
use crate::client::error::ConnectionFailure;
use crate::protocol::{EndRequest, Frame, ProtocolStatus, RecordType, RequestId};

const LIMIT: usize = 1000;

/// One request as a test sees it: its key, its events (with their unread-byte counter).
struct Request {
    key: RequestKey,
    events: event_queue::Receiver<EventResult>,
}

impl Request {
    fn next(&mut self) -> Option<EventResult> {
        self.events.try_recv().ok()
    }

    /// Takes out every event that has arrived, as the reader would (lowering `unread`).
    fn take_all(&mut self) -> Vec<EventResult> {
        let mut taken = Vec::new();
        while let Some(event) = self.next() {
            if let Ok(ResponseEvent::Stdout(data) | ResponseEvent::Stderr(data)) = &event {
                self.events.unread().fetch_sub(data.len(), Ordering::AcqRel);
            }
            taken.push(event);
        }
        taken
    }
}

/// Begins request number `sequence` with a short body.
fn begin(state: &mut ConnectionState, sequence: u64) -> Request {
    begin_asking(state, sequence, false)
}

/// Begins request number `sequence`; with `ask_first`, FCGI_GET_VALUES goes ahead of it.
fn begin_asking(state: &mut ConnectionState, sequence: u64, ask_first: bool) -> Request {
    let (events, receiver) = event_queue::channel();
    let key = RequestKey { sequence };
    state.on_command(Command::Begin {
        request: key,
        events,
        head: encode_head(true, |push| push(b"REQUEST_METHOD", b"POST")),
        stdin: Stdin {
            content: Bytes::from_static(b"body"),
            end_of_stream: true,
        },
        ask_first,
    });
    Request {
        key,
        events: receiver,
    }
}

/// Everything queued for the socket, written out, as (type, request id, content length).
fn written(state: &mut ConnectionState) -> Vec<(RecordType, u16, usize)> {
    let mut bytes = Vec::new();
    while state.wants_write() {
        let mut slices = [IoSlice::new(&[]); 8];
        let filled = state.io_slices(&mut slices);
        let before = bytes.len();
        for slice in &slices[..filled] {
            bytes.extend_from_slice(slice);
        }
        state.wrote(bytes.len() - before);
    }
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let length = usize::from(u16::from_be_bytes([bytes[at + 4], bytes[at + 5]]));
        let id = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]);
        records.push((RecordType::from_u8(bytes[at + 1]), id, length));
        at += 8 + length + usize::from(bytes[at + 6]);
    }
    records
}

/// The request ids of everything queued, in order.
fn ids_written(state: &mut ConnectionState) -> Vec<u16> {
    written(state).into_iter().map(|(_, id, _)| id).collect()
}

fn record(record_type: RecordType, id: u16, content: &[u8]) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    Frame::new(record_type, RequestId(id), Bytes::copy_from_slice(content)).encode_into(&mut bytes);
    bytes.to_vec()
}

fn stdout(id: u16, content: &[u8]) -> Vec<u8> {
    record(RecordType::Stdout, id, content)
}

fn end(id: u16) -> Vec<u8> {
    let end = EndRequest {
        app_status: 0,
        protocol_status: ProtocolStatus::RequestComplete,
    };
    record(RecordType::EndRequest, id, &end.encode())
}

fn read(
    state: &mut ConnectionState,
    bytes: &[u8],
    multiplexed: bool,
) -> Result<(), ConnectionFailure> {
    read_at(state, bytes, multiplexed, Instant::now())
}

fn read_at(
    state: &mut ConnectionState,
    bytes: &[u8],
    multiplexed: bool,
    now: Instant,
) -> Result<(), ConnectionFailure> {
    let mut buffer = BytesMut::from(bytes);
    let result = state.on_read(&mut buffer, multiplexed, now);
    assert!(
        result.is_err() || buffer.is_empty(),
        "whole records are consumed"
    );
    result
}

fn is_end(event: &Option<EventResult>) -> bool {
    matches!(event, Some(Ok(ResponseEvent::End(_))))
}

#[test]
fn every_record_of_a_request_carries_the_id_the_state_chose() {
    let mut state = ConnectionState::new(LIMIT);
    let _first = begin(&mut state, 0);
    let records = written(&mut state);
    let types: Vec<RecordType> = records.iter().map(|(kind, _, _)| *kind).collect();
    assert_eq!(
        types,
        [
            RecordType::BeginRequest,
            RecordType::Params,
            RecordType::Params,
            RecordType::Stdin,
            RecordType::Stdin
        ]
    );
    assert!(records.iter().all(|(_, id, _)| *id == 1), "{records:?}");

    let _second = begin(&mut state, 1);
    assert!(ids_written(&mut state).iter().all(|id| *id == 2));
}

#[test]
fn a_connection_carrying_one_request_at_a_time_always_uses_id_1() {
    let mut state = ConnectionState::new(LIMIT);
    for sequence in 0..5 {
        let mut request = begin(&mut state, sequence);
        assert!(ids_written(&mut state).iter().all(|id| *id == 1));
        read(&mut state, &end(1), false).unwrap();
        assert!(is_end(&request.next()));
    }
}

#[test]
fn records_are_routed_by_id() {
    let mut state = ConnectionState::new(LIMIT);
    let mut first = begin(&mut state, 0);
    let mut second = begin(&mut state, 1);
    let mut bytes = stdout(2, b"to the second");
    bytes.extend(record(RecordType::Stderr, 1, b"to the first"));
    read(&mut state, &bytes, true).unwrap();
    assert_eq!(
        second.next(),
        Some(Ok(ResponseEvent::Stdout(Bytes::from_static(
            b"to the second"
        ))))
    );
    assert_eq!(
        first.next(),
        Some(Ok(ResponseEvent::Stderr(Bytes::from_static(
            b"to the first"
        ))))
    );
    assert_eq!(second.events.unread().load(Ordering::Acquire), 13);
}

#[test]
fn a_record_split_across_reads_is_routed_once_whole() {
    let mut state = ConnectionState::new(LIMIT);
    let mut request = begin(&mut state, 0);
    let bytes = stdout(1, b"hello");
    let mut buffer = BytesMut::from(&bytes[..5]);
    state.on_read(&mut buffer, false, Instant::now()).unwrap();
    assert!(request.next().is_none());
    buffer.extend_from_slice(&bytes[5..]);
    state.on_read(&mut buffer, false, Instant::now()).unwrap();
    assert_eq!(
        request.next(),
        Some(Ok(ResponseEvent::Stdout(Bytes::from_static(b"hello"))))
    );
}

#[test]
fn end_request_frees_the_id_for_the_next_request() {
    let mut state = ConnectionState::new(LIMIT);
    let mut first = begin(&mut state, 0);
    let _second = begin(&mut state, 1);
    let _ = written(&mut state);
    read(&mut state, &end(1), true).unwrap();
    assert!(is_end(&first.next()));
    assert_eq!(state.in_flight(), 1);
    let _third = begin(&mut state, 2);
    assert!(ids_written(&mut state).iter().all(|id| *id == 1));
    let _fourth = begin(&mut state, 3);
    assert!(ids_written(&mut state).iter().all(|id| *id == 3));
}

#[test]
fn a_late_abort_never_hits_the_request_that_reused_the_id() {
    let mut state = ConnectionState::new(LIMIT);
    let first = begin(&mut state, 0);
    read(&mut state, &end(1), false).unwrap();
    let second = begin(&mut state, 1);
    let _ = written(&mut state);

    state.on_command(Command::Abort {
        request: first.key,
        close: false,
    });
    assert!(written(&mut state).is_empty(), "the first request ended");

    state.on_command(Command::Abort {
        request: second.key,
        close: false,
    });
    assert_eq!(written(&mut state), [(RecordType::AbortRequest, 1, 0)]);
    assert_eq!(state.in_flight(), 1, "the route stays until END_REQUEST");
}

#[test]
fn body_records_for_a_request_that_ended_are_dropped() {
    let mut state = ConnectionState::new(LIMIT);
    let first = begin(&mut state, 0);
    read(&mut state, &end(1), false).unwrap();
    let _second = begin(&mut state, 1);
    let _ = written(&mut state);
    let late = MemoryBody::new(Bytes::from_static(b"late")).next().unwrap();
    state.on_command(Command::Write {
        request: first.key,
        stdin: late,
    });
    assert!(written(&mut state).is_empty());
}

#[test]
fn records_for_unknown_ids_are_ignored_while_requests_are_in_flight() {
    let mut state = ConnectionState::new(LIMIT);
    let mut request = begin(&mut state, 0);
    read(&mut state, &stdout(7, b"stray"), false).unwrap();
    read(&mut state, &end(7), false).unwrap();
    assert!(request.next().is_none());
    assert_eq!(state.in_flight(), 1);
}

#[test]
fn any_record_on_a_parked_connection_ends_it() {
    let mut state = ConnectionState::new(LIMIT);
    assert!(matches!(
        read(&mut state, &stdout(1, b"?"), false),
        Err(ConnectionFailure::Unexpected { request_id: 1, .. })
    ));

    let mut state = ConnectionState::new(LIMIT);
    let _request = begin(&mut state, 0);
    read(&mut state, &end(1), false).unwrap();
    assert!(
        read(&mut state, &end(1), false).is_err(),
        "a second END_REQUEST"
    );
}

#[test]
fn a_record_type_a_client_never_receives_ends_the_connection() {
    let mut state = ConnectionState::new(LIMIT);
    let _request = begin(&mut state, 0);
    let params = record(RecordType::Params, 1, b"");
    assert!(matches!(
        read(&mut state, &params, false),
        Err(ConnectionFailure::Unexpected { .. })
    ));
}

#[test]
fn a_protocol_error_with_several_requests_in_flight_means_multiplexing_is_refused() {
    let garbage = [9u8; 8]; // FastCGI version 9
    let mut state = ConnectionState::new(LIMIT);
    let mut first = begin(&mut state, 0);
    let mut second = begin(&mut state, 1);
    written(&mut state);
    let failure = read(&mut state, &garbage, true).unwrap_err();
    assert!(matches!(failure, ConnectionFailure::Protocol(_)));
    let ending = state.end(failure);
    assert!(ending.multiplexing_refused);
    assert!(matches!(
        ending.failure,
        ConnectionFailure::MultiplexingRefused(_)
    ));
    state.fail_all(&ending.failure);
    for request in [&mut first, &mut second] {
        assert!(matches!(
            request.next(),
            Some(Err(ConnectionFailure::MultiplexingRefused(_)))
        ));
    }
    assert_eq!(state.in_flight(), 0);

    // Alone, or closed rather than broken: nothing learned about multiplexing.
    let mut state = ConnectionState::new(LIMIT);
    let mut alone = begin(&mut state, 0);
    written(&mut state);
    let failure = read(&mut state, &garbage, false).unwrap_err();
    let ending = state.end(failure);
    assert!(!ending.multiplexing_refused);
    state.fail_all(&ending.failure);
    assert!(matches!(
        alone.next(),
        Some(Err(ConnectionFailure::Protocol(_)))
    ));
    let mut state = ConnectionState::new(LIMIT);
    let _first = begin(&mut state, 0);
    let _second = begin(&mut state, 1);
    assert!(
        !state
            .end(ConnectionFailure::ClosedByBackend)
            .multiplexing_refused
    );
}

#[test]
fn a_request_alone_pauses_reading_while_its_reader_is_far_behind() {
    let mut state = ConnectionState::new(LIMIT);
    let mut request = begin(&mut state, 0);
    read(&mut state, &stdout(1, &[b'x'; LIMIT + 1]), false).unwrap();
    assert!(state.reader_far_behind(false));
    assert!(
        !state.reader_far_behind(true),
        "a shared connection never pauses"
    );
    assert_eq!(request.take_all().len(), 1, "nothing is dropped");
    assert!(!state.reader_far_behind(false));
}

#[test]
fn on_a_shared_connection_an_overflowing_request_alone_is_aborted() {
    let mut state = ConnectionState::new(LIMIT);
    let mut slow = begin(&mut state, 0);
    let mut other = begin(&mut state, 1);
    let _ = written(&mut state);
    read(&mut state, &stdout(1, &[b'x'; LIMIT]), true).unwrap();
    assert!(written(&mut state).is_empty(), "at the bound, not past it");
    read(&mut state, &stdout(1, b"y"), true).unwrap();
    assert_eq!(written(&mut state), [(RecordType::AbortRequest, 1, 0)]);
    let events = slow.take_all();
    assert!(matches!(
        events.last(),
        Some(Err(ConnectionFailure::ResponseBufferExceeded {
            limit: LIMIT
        }))
    ));

    // Its later output is dropped; the other request flows; END_REQUEST still frees the id.
    read(&mut state, &stdout(1, b"more"), true).unwrap();
    read(&mut state, &stdout(2, b"fine"), true).unwrap();
    assert!(slow.next().is_none());
    assert!(matches!(other.next(), Some(Ok(ResponseEvent::Stdout(_)))));
    read(&mut state, &end(1), true).unwrap();
    assert!(is_end(&slow.next()));
    assert_eq!(state.in_flight(), 1);
    let _next = begin(&mut state, 2);
    assert!(ids_written(&mut state).iter().all(|id| *id == 1));
}

#[test]
fn a_retiring_connection_takes_no_more_commands() {
    let mut state = ConnectionState::new(LIMIT);
    assert!(state.takes_commands());
    state.on_command(Command::Retire);
    assert!(state.is_retiring());
    assert!(!state.takes_commands());
}

#[test]
fn a_full_write_queue_takes_no_more_commands_until_it_drains() {
    let mut state = ConnectionState::new(LIMIT);
    let mut sequence = 0;
    while state.takes_commands() {
        let _request = begin(&mut state, sequence);
        sequence += 1;
    }
    assert!(sequence <= MAX_QUEUED_COMMANDS as u64);
    let _ = written(&mut state);
    assert!(state.takes_commands());
}

#[test]
fn an_abort_with_close_ends_the_connection_once_flushed() {
    let mut state = ConnectionState::new(LIMIT);
    let request = begin(&mut state, 0);
    state.on_command(Command::Abort {
        request: request.key,
        close: true,
    });
    assert!(
        !state.closes_now(),
        "the request and its abort go out first"
    );
    let records = written(&mut state);
    assert_eq!(records.last(), Some(&(RecordType::AbortRequest, 1, 0)));
    assert!(state.closes_now());
}

#[test]
fn a_partial_write_resumes_where_it_stopped() {
    let mut state = ConnectionState::new(LIMIT);
    let _request = begin(&mut state, 0);
    let mut slices = [IoSlice::new(&[]); 8];
    let filled = state.io_slices(&mut slices);
    let whole: Vec<u8> = slices[..filled].iter().flat_map(|s| s.to_vec()).collect();
    let mut sent = Vec::new();
    while state.wants_write() {
        let mut slices = [IoSlice::new(&[]); 8];
        let filled = state.io_slices(&mut slices);
        // Three bytes at a time, as a congested socket might take them.
        let chunk: Vec<u8> = slices[..filled]
            .iter()
            .flat_map(|s| s.to_vec())
            .take(3)
            .collect();
        state.wrote(chunk.len());
        sent.extend(chunk);
    }
    assert_eq!(sent, whole);
}

#[test]
fn a_close_right_after_end_request_is_told_apart_from_a_later_one() {
    let ended = Instant::now();
    let mut state = ConnectionState::new(LIMIT);
    assert!(!state.closed_right_after_end(ended), "no END_REQUEST yet");
    let _request = begin(&mut state, 0);
    read_at(&mut state, &end(1), false, ended).unwrap();
    assert!(state.closed_right_after_end(ended + Duration::from_millis(1)));
    assert!(!state.closed_right_after_end(ended + Duration::from_millis(5)));

    // The next request handed the connection in that instant does not change it: the
    // backend had not answered it.
    let _next = begin(&mut state, 1);
    assert!(state.closed_right_after_end(ended + Duration::from_millis(1)));
    assert_eq!(state.requests_ended(), 1);
    read_at(&mut state, &stdout(1, b"x"), false, ended).unwrap();
    assert!(
        !state.closed_right_after_end(ended + Duration::from_millis(1)),
        "the backend was answering the next request: not a worker leaving after its last one"
    );
}

#[test]
fn a_request_not_a_byte_of_which_was_written_is_told_it_was_never_sent() {
    let mut state = ConnectionState::new(LIMIT);
    let mut sent = begin(&mut state, 0);
    written(&mut state);
    let mut unsent = begin(&mut state, 1);
    // One byte of the second leaves, then the socket fails.
    let mut partly = begin(&mut state, 2);
    let mut slices = [IoSlice::new(&[]); 8];
    state.io_slices(&mut slices);
    let ending = state.end(ConnectionFailure::ClosedByBackend);
    state.fail_all(&ending.failure);
    assert!(matches!(
        sent.next(),
        Some(Err(ConnectionFailure::ClosedByBackend))
    ));
    assert!(matches!(
        unsent.next(),
        Some(Err(ConnectionFailure::NotSent(_)))
    ));
    assert!(matches!(
        partly.next(),
        Some(Err(ConnectionFailure::NotSent(_)))
    ));
    let mut state = ConnectionState::new(LIMIT);
    let mut partly = begin(&mut state, 0);
    state.wrote(1);
    state.fail_all(&ConnectionFailure::ClosedByBackend);
    assert!(matches!(
        partly.next(),
        Some(Err(ConnectionFailure::ClosedByBackend))
    ));
}

#[test]
fn a_request_behind_a_question_never_answered_was_never_read() {
    // A worker that closes right after its last response: everything was written, nothing read.
    let mut state = ConnectionState::new(LIMIT);
    let mut request = begin_asking(&mut state, 0, true);
    let records = written(&mut state);
    assert_eq!(
        records[..2],
        [
            (RecordType::GetValues, 0, 48),
            (RecordType::BeginRequest, 1, 8)
        ],
        "the question goes first, and the request's BEGIN_REQUEST is the record libfcgi \
         needs after it to answer: {records:?}"
    );
    state.fail_all(&ConnectionFailure::ClosedByBackend);
    assert!(matches!(
        request.next(),
        Some(Err(ConnectionFailure::NotSent(_)))
    ));

    // Answered, the backend was reading: the request may have run.
    let mut state = ConnectionState::new(LIMIT);
    let mut request = begin_asking(&mut state, 0, true);
    written(&mut state);
    read(
        &mut state,
        &record(RecordType::GetValuesResult, 0, b""),
        false,
    )
    .unwrap();
    // Echoes of the question (Go sends an empty result after each) are no protocol error.
    read(
        &mut state,
        &record(RecordType::GetValuesResult, 0, b""),
        false,
    )
    .unwrap();
    state.fail_all(&ConnectionFailure::ClosedByBackend);
    assert!(matches!(
        request.next(),
        Some(Err(ConnectionFailure::ClosedByBackend))
    ));
}
