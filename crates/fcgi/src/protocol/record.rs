//! The fixed 8-byte record header (FastCGI 1.0 §3.3) and the vocabulary in it: record types and
//! request ids. Bodies live in `body.rs`, whole records in `codec.rs`.

use super::error::ProtocolError;

/// The only protocol version (FastCGI 1.0 §8, `FCGI_VERSION_1`).
pub const FCGI_VERSION_1: u8 = 1;

/// Bytes in a record header (FastCGI 1.0 §3.3, `FCGI_HEADER_LEN`).
pub const HEADER_LEN: usize = 8;

/// Largest content we put in one record: a multiple of 8 so it needs no padding; php-fpm rejects
/// content+padding > 65535.
pub const MAX_RECORD_CONTENT: usize = 65528;

/// The request a record belongs to; 0 is reserved for management records (FastCGI 1.0 §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u16);

impl RequestId {
    /// The id of management records, which belong to the connection, not a request.
    pub const MANAGEMENT: RequestId = RequestId(0);
}

/// A record's type byte (FastCGI 1.0 §8). Values without a name are kept in `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    /// `FCGI_BEGIN_REQUEST` (1): starts a request.
    BeginRequest,
    /// `FCGI_ABORT_REQUEST` (2): the client gives up on a request.
    AbortRequest,
    /// `FCGI_END_REQUEST` (3): the application finished a request.
    EndRequest,
    /// `FCGI_PARAMS` (4): the request's name-value stream.
    Params,
    /// `FCGI_STDIN` (5): the request body stream.
    Stdin,
    /// `FCGI_STDOUT` (6): the response stream.
    Stdout,
    /// `FCGI_STDERR` (7): the error stream.
    Stderr,
    /// `FCGI_DATA` (8): the Filter role's extra input stream.
    Data,
    /// `FCGI_GET_VALUES` (9): a management query.
    GetValues,
    /// `FCGI_GET_VALUES_RESULT` (10): the answer to a management query.
    GetValuesResult,
    /// `FCGI_UNKNOWN_TYPE` (11): the answer to a management record the peer did not understand.
    UnknownType,
    /// Any other type byte.
    Other(u8),
}

impl RecordType {
    /// Maps a wire byte to its type.
    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => RecordType::BeginRequest,
            2 => RecordType::AbortRequest,
            3 => RecordType::EndRequest,
            4 => RecordType::Params,
            5 => RecordType::Stdin,
            6 => RecordType::Stdout,
            7 => RecordType::Stderr,
            8 => RecordType::Data,
            9 => RecordType::GetValues,
            10 => RecordType::GetValuesResult,
            11 => RecordType::UnknownType,
            other => RecordType::Other(other),
        }
    }

    /// The wire byte of this type.
    pub const fn as_u8(self) -> u8 {
        match self {
            RecordType::BeginRequest => 1,
            RecordType::AbortRequest => 2,
            RecordType::EndRequest => 3,
            RecordType::Params => 4,
            RecordType::Stdin => 5,
            RecordType::Stdout => 6,
            RecordType::Stderr => 7,
            RecordType::Data => 8,
            RecordType::GetValues => 9,
            RecordType::GetValuesResult => 10,
            RecordType::UnknownType => 11,
            RecordType::Other(value) => value,
        }
    }

    /// Whether this is one of the management types the spec defines (FastCGI 1.0 §4).
    pub fn is_management(self) -> bool {
        matches!(
            self,
            RecordType::GetValues | RecordType::GetValuesResult | RecordType::UnknownType
        )
    }
}

/// A decoded record header (FastCGI 1.0 §3.3, `FCGI_Header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the content is.
    pub record_type: RecordType,
    /// The request it belongs to.
    pub request_id: RequestId,
    /// Bytes of content following the header.
    pub content_length: u16,
    /// Bytes of padding following the content, to be skipped.
    pub padding_length: u8,
}

impl RecordHeader {
    /// The header's wire form; the version is always `FCGI_VERSION_1`.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [id_high, id_low] = self.request_id.0.to_be_bytes();
        let [len_high, len_low] = self.content_length.to_be_bytes();
        [
            FCGI_VERSION_1,
            self.record_type.as_u8(),
            id_high,
            id_low,
            len_high,
            len_low,
            self.padding_length,
            0,
        ]
    }

    /// Parses a header; fails only on a version other than 1 (the reserved byte is ignored).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, ProtocolError> {
        if bytes[0] != FCGI_VERSION_1 {
            return Err(ProtocolError::UnsupportedVersion(bytes[0]));
        }
        Ok(RecordHeader {
            record_type: RecordType::from_u8(bytes[1]),
            request_id: RequestId(u16::from_be_bytes([bytes[2], bytes[3]])),
            content_length: u16::from_be_bytes([bytes[4], bytes[5]]),
            padding_length: bytes[6],
        })
    }

    /// Header, content and padding together.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + usize::from(self.content_length) + usize::from(self.padding_length)
    }
}

/// Padding bytes that bring `content_len` to a multiple of 8, as the spec recommends
/// (FastCGI 1.0 §3.3).
pub fn padding_for(content_len: usize) -> u8 {
    // The remainder is below 8, so the cast is lossless.
    ((8 - content_len % 8) % 8) as u8
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_type_byte_round_trips() {
        for value in 0..=u8::MAX {
            assert_eq!(RecordType::from_u8(value).as_u8(), value);
        }
        assert_eq!(RecordType::from_u8(0), RecordType::Other(0));
        assert_eq!(RecordType::from_u8(12), RecordType::Other(12));
    }

    #[test]
    fn management_types_are_exactly_the_three_of_section_4() {
        let management: Vec<u8> = (0..=u8::MAX)
            .filter(|value| RecordType::from_u8(*value).is_management())
            .collect();
        assert_eq!(management, vec![9, 10, 11]);
    }

    #[test]
    fn header_has_the_spec_layout() {
        let header = RecordHeader {
            record_type: RecordType::Stdout,
            request_id: RequestId(0x0102),
            content_length: 0x0304,
            padding_length: 5,
        };
        let bytes = header.encode();
        assert_eq!(bytes, [1, 6, 1, 2, 3, 4, 5, 0]);
        assert_eq!(RecordHeader::decode(&bytes), Ok(header));
        assert_eq!(header.record_len(), 8 + 0x0304 + 5);
    }

    #[test]
    fn header_with_another_version_is_refused() {
        let bytes = [2, 6, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            RecordHeader::decode(&bytes),
            Err(ProtocolError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn padding_reaches_the_next_multiple_of_eight() {
        let expected = [0, 7, 6, 5, 4, 3, 2, 1, 0, 7];
        for (len, padding) in expected.iter().enumerate() {
            assert_eq!(padding_for(len), *padding, "len {len}");
        }
        assert_eq!(padding_for(MAX_RECORD_CONTENT), 0);
        assert_eq!(padding_for(65535), 1);
    }
}
