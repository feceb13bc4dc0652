//! A request as records, before any id is known: the head (BEGIN_REQUEST and PARAMS) encoded
//! with the placeholder id the connection state overwrites, and a body in memory cut into
//! [`Stdin`] pieces of one record each. Pure; the handle (`mod.rs`) sends what this produces.
//!
//! The end of STDIN always goes out in one write with the body's last record: an app that has
//! read CONTENT_LENGTH bytes answers at once, and libfcgi takes an empty STDIN record arriving
//! after its END_REQUEST for a protocol error and drops the connection. So it travels in the same
//! [`Stdin`] piece as that record, never in a piece of its own unless the body is empty.

use bytes::{Bytes, BytesMut};

use super::state::{Stdin, PLACEHOLDER_ID};
use crate::protocol::{
    BeginRequest, ParamsWriter, RecordHeader, RecordType, Role, MAX_RECORD_CONTENT,
};

/// A browser request's params run to about 1.1 KiB: room for them without a regrowth.
const HEAD_CAPACITY: usize = 2048;

/// BEGIN_REQUEST for a Responder (with FCGI_KEEP_CONN as `keep_conn` says, FastCGI 1.0 §5.1),
/// then the params `write_params` produces, then the empty PARAMS record.
pub(super) fn encode_head<F>(keep_conn: bool, write_params: F) -> BytesMut
where
    F: FnOnce(&mut dyn FnMut(&[u8], &[u8])),
{
    let mut head = BytesMut::with_capacity(HEAD_CAPACITY);
    let begin = BeginRequest {
        role: Role::Responder,
        keep_conn,
    };
    let header = RecordHeader {
        record_type: RecordType::BeginRequest,
        request_id: PLACEHOLDER_ID,
        content_length: 8,
        padding_length: 0,
    };
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(&begin.encode());
    let mut params = ParamsWriter::new(&mut head, RecordType::Params, PLACEHOLDER_ID);
    write_params(&mut |name, value| params.push(name, value));
    params.finish();
    head
}

/// A body held in memory as [`Stdin`] pieces, the first for the `Begin` command and one per
/// `Write` after it; the content is shared with the body's buffer, not copied.
pub(super) struct MemoryBody {
    rest: Bytes,
    done: bool,
}

impl MemoryBody {
    /// An empty body is one piece: the end of the stream alone.
    pub(super) fn new(body: Bytes) -> MemoryBody {
        MemoryBody {
            rest: body,
            done: false,
        }
    }
}

impl Iterator for MemoryBody {
    type Item = Stdin;

    fn next(&mut self) -> Option<Stdin> {
        if self.done {
            return None;
        }
        let take = self.rest.len().min(MAX_RECORD_CONTENT);
        let content = self.rest.split_to(take);
        self.done = self.rest.is_empty();
        Some(Stdin {
            content,
            end_of_stream: self.done,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::protocol::HEADER_LEN;

    fn pieces(length: usize) -> Vec<(usize, bool)> {
        MemoryBody::new(Bytes::from(vec![7; length]))
            .map(|piece| (piece.content.len(), piece.end_of_stream))
            .collect()
    }

    #[test]
    fn a_body_is_cut_into_records_and_ends_with_the_last() {
        assert_eq!(pieces(0), vec![(0, true)]);
        assert_eq!(pieces(5), vec![(5, true)]);
        assert_eq!(pieces(MAX_RECORD_CONTENT), vec![(MAX_RECORD_CONTENT, true)]);
        assert_eq!(
            pieces(MAX_RECORD_CONTENT * 2 + 1),
            vec![
                (MAX_RECORD_CONTENT, false),
                (MAX_RECORD_CONTENT, false),
                (1, true)
            ]
        );
    }

    #[test]
    fn the_head_is_begin_request_then_params() {
        let head = encode_head(true, |push| push(b"SCRIPT_NAME", b"/index.php"));
        assert_eq!(head[1], RecordType::BeginRequest.as_u8());
        assert_eq!(&head[2..4], &[0, 0], "placeholder id");
        assert_eq!(head[HEADER_LEN + 2], 1, "FCGI_KEEP_CONN");
        assert_eq!(head[2 * HEADER_LEN + 1], RecordType::Params.as_u8());
        // Ends with the empty PARAMS record.
        let last = &head[head.len() - HEADER_LEN..];
        assert_eq!(last[1], RecordType::Params.as_u8());
        assert_eq!(&last[4..7], &[0, 0, 0]);
    }
}
