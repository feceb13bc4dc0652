//! Just enough FastCGI record framing (FastCGI 1.0 §3.3: an 8-byte header, content, padding) for
//! the backend's connection pump to see where requests begin and end, and to swallow requests
//! in the misbehaving modes. The real decoding is `fcgi::server`'s job.

use fcgi::protocol::{RecordType, HEADER_LEN};

const BEGIN_REQUEST: u8 = RecordType::BeginRequest.as_u8();
const END_REQUEST: u8 = RecordType::EndRequest.as_u8();
const STDIN: u8 = RecordType::Stdin.as_u8();

/// What to do with a request when its BEGIN_REQUEST arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Disposition {
    /// Pass it to the FastCGI server.
    Serve,
    /// Swallow it and everything after it; answer nothing, ever.
    Hang,
    /// Swallow it up to its end of STDIN, then answer with bytes that are not FastCGI.
    Garbage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Forwarding,
    BlackHole,
    SwallowingUntilStdinEnds { request_id: u16 },
}

/// The client-to-server direction: forwards records whole-header-at-a-time so a request can be
/// diverted before any of it reaches the server.
#[derive(Debug)]
pub(super) struct IncomingFilter {
    pending: Vec<u8>,
    body_left: usize,
    forwarding_current: bool,
    state: State,
}

/// The result of feeding bytes to an [`IncomingFilter`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Filtered {
    /// Bytes for the server.
    pub(super) forward: Vec<u8>,
    /// BEGIN_REQUEST records seen.
    pub(super) requests_begun: u64,
    /// Of those, the ones passed to the server or hung (a request in progress either way).
    pub(super) requests_started: u64,
    /// A swallowed request's STDIN ended: time to answer it with garbage.
    pub(super) garbage_due: bool,
}

impl IncomingFilter {
    pub(super) fn new() -> IncomingFilter {
        IncomingFilter {
            pending: Vec::new(),
            body_left: 0,
            forwarding_current: true,
            state: State::Forwarding,
        }
    }

    /// Takes bytes from the client; `disposition` is asked once per BEGIN_REQUEST.
    pub(super) fn feed(
        &mut self,
        data: &[u8],
        mut disposition: impl FnMut() -> Disposition,
    ) -> Filtered {
        self.pending.extend_from_slice(data);
        let mut filtered = Filtered::default();
        let mut position = 0;
        loop {
            if self.body_left > 0 {
                let take = self.body_left.min(self.pending.len() - position);
                if self.forwarding_current {
                    filtered
                        .forward
                        .extend_from_slice(&self.pending[position..position + take]);
                }
                position += take;
                self.body_left -= take;
                if self.body_left > 0 {
                    break;
                }
            }
            let Some(header) = self.pending.get(position..position + HEADER_LEN) else {
                break;
            };
            let record_type = header[1];
            let request_id = u16::from_be_bytes([header[2], header[3]]);
            let content_length = usize::from(u16::from_be_bytes([header[4], header[5]]));
            self.body_left = content_length + usize::from(header[6]);
            if record_type == BEGIN_REQUEST {
                filtered.requests_begun += 1;
                if self.state == State::Forwarding {
                    match disposition() {
                        Disposition::Serve => filtered.requests_started += 1,
                        Disposition::Hang => {
                            filtered.requests_started += 1;
                            self.state = State::BlackHole;
                        }
                        Disposition::Garbage => {
                            self.state = State::SwallowingUntilStdinEnds { request_id };
                        }
                    }
                }
            }
            if self.state == (State::SwallowingUntilStdinEnds { request_id })
                && record_type == STDIN
                && content_length == 0
            {
                filtered.garbage_due = true;
            }
            self.forwarding_current = self.state == State::Forwarding;
            if self.forwarding_current {
                filtered.forward.extend_from_slice(header);
            }
            position += HEADER_LEN;
        }
        self.pending.drain(..position);
        filtered
    }
}

/// The server-to-client direction: bytes pass through untouched; this only counts the
/// END_REQUEST records that have gone by completely.
#[derive(Debug, Default)]
pub(super) struct EndRequestCounter {
    header: [u8; HEADER_LEN],
    header_filled: usize,
    body_left: usize,
    in_end_request: bool,
}

impl EndRequestCounter {
    /// Scans bytes on their way to the client; returns how many END_REQUEST records ended in them.
    pub(super) fn scan(&mut self, mut data: &[u8]) -> u64 {
        let mut ended = 0;
        while !data.is_empty() {
            if self.body_left > 0 {
                let take = self.body_left.min(data.len());
                self.body_left -= take;
                data = &data[take..];
                if self.body_left == 0 && self.in_end_request {
                    ended += 1;
                }
                continue;
            }
            let take = (HEADER_LEN - self.header_filled).min(data.len());
            self.header[self.header_filled..self.header_filled + take]
                .copy_from_slice(&data[..take]);
            self.header_filled += take;
            data = &data[take..];
            if self.header_filled == HEADER_LEN {
                self.header_filled = 0;
                self.in_end_request = self.header[1] == END_REQUEST;
                self.body_left = usize::from(u16::from_be_bytes([self.header[4], self.header[5]]))
                    + usize::from(self.header[6]);
                if self.body_left == 0 && self.in_end_request {
                    ended += 1;
                }
            }
        }
        ended
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(record_type: u8, request_id: u16, content: &[u8], padding: u8) -> Vec<u8> {
        let mut bytes = vec![1, record_type];
        bytes.extend_from_slice(&request_id.to_be_bytes());
        bytes.extend_from_slice(&u16::try_from(content.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&[padding, 0]);
        bytes.extend_from_slice(content);
        bytes.extend(std::iter::repeat_n(0, usize::from(padding)));
        bytes
    }

    fn request(request_id: u16) -> Vec<u8> {
        let mut bytes = record(BEGIN_REQUEST, request_id, &[0, 1, 1, 0, 0, 0, 0, 0], 0);
        bytes.extend(record(4, request_id, b"\x01\x01ab", 4));
        bytes.extend(record(4, request_id, b"", 0));
        bytes.extend(record(STDIN, request_id, b"body", 0));
        bytes.extend(record(STDIN, request_id, b"", 0));
        bytes
    }

    #[test]
    fn serve_forwards_everything_even_fed_a_byte_at_a_time() {
        let wire = [request(1), request(1)].concat();
        let mut filter = IncomingFilter::new();
        let mut forwarded = Vec::new();
        let mut started = 0;
        for byte in &wire {
            let filtered = filter.feed(std::slice::from_ref(byte), || Disposition::Serve);
            forwarded.extend(filtered.forward);
            started += filtered.requests_started;
            assert!(!filtered.garbage_due);
        }
        assert_eq!(forwarded, wire);
        assert_eq!(started, 2);
    }

    #[test]
    fn hang_swallows_the_request_and_everything_after() {
        let mut filter = IncomingFilter::new();
        let filtered = filter.feed(&[request(1), request(2)].concat(), || Disposition::Hang);
        assert!(filtered.forward.is_empty());
        assert_eq!((filtered.requests_begun, filtered.requests_started), (2, 1));
        assert!(!filtered.garbage_due);
    }

    #[test]
    fn garbage_is_due_once_the_swallowed_request_has_sent_its_stdin() {
        let wire = request(7);
        let mut filter = IncomingFilter::new();
        let (head, tail) = wire.split_at(wire.len() - 3);
        let first = filter.feed(head, || Disposition::Garbage);
        assert!(first.forward.is_empty() && !first.garbage_due);
        assert_eq!((first.requests_begun, first.requests_started), (1, 0));
        assert!(filter.feed(tail, || Disposition::Garbage).garbage_due);
    }

    #[test]
    fn end_requests_are_counted_across_split_records() {
        let mut wire = record(6, 1, b"Status: 200\r\n\r\nhello", 3);
        wire.extend(record(6, 1, b"", 0));
        wire.extend(record(END_REQUEST, 1, &[0; 8], 0));
        wire.extend(record(END_REQUEST, 2, &[0; 8], 0));
        let mut counter = EndRequestCounter::default();
        let total: u64 = wire.chunks(5).map(|chunk| counter.scan(chunk)).sum();
        assert_eq!(total, 2);
        let mut counter = EndRequestCounter::default();
        assert_eq!(counter.scan(&wire[..wire.len() - 1]), 1);
        assert_eq!(counter.scan(&wire[wire.len() - 1..]), 1);
    }
}
