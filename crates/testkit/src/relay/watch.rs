//! The relay's view of the FastCGI records it copies (FastCGI 1.0 §3.3: an 8-byte header,
//! then content and padding). Only headers are parsed, as they stream past, however the reads
//! cut them; the bytes themselves are never held or changed. From the headers it tracks, per
//! relayed connection, which request ids are in flight: BEGIN_REQUEST from the gateway opens an
//! id, END_REQUEST from the backend closes it, and ABORT_REQUEST does not (the id stays taken
//! until the backend's END_REQUEST, FastCGI 1.0 §5.4).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fcgi::protocol::{RecordType, HEADER_LEN};

const BEGIN_REQUEST: u8 = RecordType::BeginRequest.as_u8();
const ABORT_REQUEST: u8 = RecordType::AbortRequest.as_u8();
const END_REQUEST: u8 = RecordType::EndRequest.as_u8();

/// The fields of a record header the relay cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SeenHeader {
    pub(super) record_type: u8,
    pub(super) request_id: u16,
}

/// Finds record headers in one direction of a byte stream fed in arbitrary pieces.
#[derive(Debug, Default)]
pub(super) struct HeaderScanner {
    header: [u8; HEADER_LEN],
    filled: usize,
    /// Content and padding of the current record not yet seen.
    body_left: usize,
}

impl HeaderScanner {
    /// Calls `on_header` for every header completed by `data`, in stream order.
    pub(super) fn scan(&mut self, mut data: &[u8], mut on_header: impl FnMut(SeenHeader)) {
        while !data.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(data.len());
                self.body_left -= skip;
                data = &data[skip..];
                continue;
            }
            let take = (HEADER_LEN - self.filled).min(data.len());
            self.header[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == HEADER_LEN {
                self.filled = 0;
                let header = &self.header;
                self.body_left = usize::from(u16::from_be_bytes([header[4], header[5]]))
                    + usize::from(header[6]);
                on_header(SeenHeader {
                    record_type: header[1],
                    request_id: u16::from_be_bytes([header[2], header[3]]),
                });
            }
        }
    }
}

/// What the relay saw over all its connections.
#[derive(Debug, Default)]
pub(super) struct RequestCounters {
    pub(super) begun: AtomicU64,
    pub(super) max_in_flight_on_one_connection: AtomicU64,
    pub(super) id_reused_while_active: AtomicU64,
    pub(super) aborts: AtomicU64,
}

/// The request ids in flight on one relayed connection. Both directions of the connection
/// update it; each looks at a record before passing it on, so an END_REQUEST has closed its id
/// before the gateway can see it and send the next BEGIN_REQUEST for that id.
#[derive(Debug)]
pub(super) struct ConnectionRequests {
    in_flight: Mutex<HashSet<u16>>,
    counters: Arc<RequestCounters>,
}

impl ConnectionRequests {
    pub(super) fn new(counters: Arc<RequestCounters>) -> ConnectionRequests {
        ConnectionRequests {
            in_flight: Mutex::new(HashSet::new()),
            counters,
        }
    }

    /// A record header on its way from the gateway to the backend.
    pub(super) fn sent_by_gateway(&self, header: SeenHeader) {
        // Id 0 is the management channel (§3.3); it carries no requests.
        if header.request_id == 0 {
            return;
        }
        match header.record_type {
            BEGIN_REQUEST => {
                self.counters.begun.fetch_add(1, Ordering::SeqCst);
                let mut in_flight = self.in_flight();
                if in_flight.insert(header.request_id) {
                    let count = u64::try_from(in_flight.len()).unwrap_or(u64::MAX);
                    self.counters
                        .max_in_flight_on_one_connection
                        .fetch_max(count, Ordering::SeqCst);
                } else {
                    self.counters
                        .id_reused_while_active
                        .fetch_add(1, Ordering::SeqCst);
                }
            }
            ABORT_REQUEST => {
                self.counters.aborts.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }

    /// A record header on its way from the backend to the gateway.
    pub(super) fn sent_by_backend(&self, header: SeenHeader) {
        if header.record_type == END_REQUEST {
            self.in_flight().remove(&header.request_id);
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<u16>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(record_type: u8, request_id: u16, content_length: usize, padding: u8) -> Vec<u8> {
        let mut bytes = vec![1, record_type];
        bytes.extend_from_slice(&request_id.to_be_bytes());
        bytes.extend_from_slice(&u16::try_from(content_length).unwrap().to_be_bytes());
        bytes.extend_from_slice(&[padding, 0]);
        // Content that looks like headers, to catch a scanner that loses its place.
        bytes.extend(std::iter::repeat_n(BEGIN_REQUEST, content_length));
        bytes.extend(std::iter::repeat_n(0, usize::from(padding)));
        bytes
    }

    #[test]
    fn headers_are_found_however_the_stream_is_cut() {
        let wire = [
            record(BEGIN_REQUEST, 1, 8, 0),
            record(4, 1, 300, 4),
            record(5, 1, 0, 0),
            record(ABORT_REQUEST, 258, 0, 0),
            record(6, 1, 65535, 1),
            record(END_REQUEST, 1, 8, 0),
        ]
        .concat();
        let expected = vec![
            (BEGIN_REQUEST, 1),
            (4, 1),
            (5, 1),
            (ABORT_REQUEST, 258),
            (6, 1),
            (END_REQUEST, 1),
        ];
        for piece in [1, 3, 7, 8, 9, 1000, wire.len()] {
            let mut scanner = HeaderScanner::default();
            let mut seen = Vec::new();
            for chunk in wire.chunks(piece) {
                scanner.scan(chunk, |header| {
                    seen.push((header.record_type, header.request_id));
                });
            }
            assert_eq!(seen, expected, "fed in pieces of {piece}");
        }
    }

    fn header(record_type: u8, request_id: u16) -> SeenHeader {
        SeenHeader {
            record_type,
            request_id,
        }
    }

    #[test]
    fn ids_are_in_flight_from_begin_to_end_and_aborts_do_not_free_them() {
        let counters = Arc::new(RequestCounters::default());
        let requests = ConnectionRequests::new(Arc::clone(&counters));
        requests.sent_by_gateway(header(BEGIN_REQUEST, 1));
        requests.sent_by_gateway(header(BEGIN_REQUEST, 2));
        requests.sent_by_gateway(header(ABORT_REQUEST, 2));
        requests.sent_by_gateway(header(BEGIN_REQUEST, 2));
        requests.sent_by_backend(header(END_REQUEST, 2));
        requests.sent_by_gateway(header(BEGIN_REQUEST, 2));
        requests.sent_by_backend(header(END_REQUEST, 1));
        requests.sent_by_backend(header(END_REQUEST, 2));
        requests.sent_by_gateway(header(BEGIN_REQUEST, 1));
        requests.sent_by_gateway(header(BEGIN_REQUEST, 0));

        let other = ConnectionRequests::new(Arc::clone(&counters));
        other.sent_by_gateway(header(BEGIN_REQUEST, 1));

        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        assert_eq!(load(&counters.begun), 6);
        assert_eq!(load(&counters.aborts), 1);
        assert_eq!(
            load(&counters.id_reused_while_active),
            1,
            "BEGIN for 2 after its ABORT but before its END"
        );
        assert_eq!(load(&counters.max_in_flight_on_one_connection), 2);
    }
}
