//! Whole records: the [`Record`] type and the tokio-util [`Decoder`]/[`Encoder`] pair that
//! frame them on a byte stream (FastCGI 1.0 §3.3). The client's zero-copy write path is in
//! `frame.rs`; this encoder serves the application side and tests.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::body::{BeginRequest, EndRequest, UnknownType};
use super::error::ProtocolError;
use super::record::{
    padding_for, RecordHeader, RecordType, RequestId, HEADER_LEN, MAX_RECORD_CONTENT,
};

/// One record: which request it belongs to and its decoded body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The request, or [`RequestId::MANAGEMENT`] for management records.
    pub request_id: RequestId,
    /// The content, decoded as far as its type allows.
    pub body: RecordBody,
}

/// A record's content by type. Stream bodies are raw bytes; an empty one ends its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordBody {
    /// BEGIN_REQUEST.
    BeginRequest(BeginRequest),
    /// ABORT_REQUEST (its content, if any, is ignored).
    AbortRequest,
    /// END_REQUEST.
    EndRequest(EndRequest),
    /// PARAMS stream content: encoded name-value pairs, possibly cut mid-pair.
    Params(Bytes),
    /// STDIN stream content.
    Stdin(Bytes),
    /// STDOUT stream content.
    Stdout(Bytes),
    /// STDERR stream content.
    Stderr(Bytes),
    /// DATA stream content.
    Data(Bytes),
    /// GET_VALUES: raw name-value content; decode with `name_value::decode_pairs`.
    GetValues(Bytes),
    /// GET_VALUES_RESULT: raw name-value content; decode with `name_value::decode_pairs`.
    GetValuesResult(Bytes),
    /// UNKNOWN_TYPE.
    UnknownType(UnknownType),
    /// A type this crate has no name for, kept whole.
    Unknown {
        /// The type byte.
        record_type: u8,
        /// The content, padding removed.
        content: Bytes,
    },
}

impl Record {
    /// The type byte this record is sent with.
    pub fn record_type(&self) -> RecordType {
        match &self.body {
            RecordBody::BeginRequest(_) => RecordType::BeginRequest,
            RecordBody::AbortRequest => RecordType::AbortRequest,
            RecordBody::EndRequest(_) => RecordType::EndRequest,
            RecordBody::Params(_) => RecordType::Params,
            RecordBody::Stdin(_) => RecordType::Stdin,
            RecordBody::Stdout(_) => RecordType::Stdout,
            RecordBody::Stderr(_) => RecordType::Stderr,
            RecordBody::Data(_) => RecordType::Data,
            RecordBody::GetValues(_) => RecordType::GetValues,
            RecordBody::GetValuesResult(_) => RecordType::GetValuesResult,
            RecordBody::UnknownType(_) => RecordType::UnknownType,
            RecordBody::Unknown { record_type, .. } => RecordType::from_u8(*record_type),
        }
    }

    fn from_parts(header: &RecordHeader, content: Bytes) -> Result<Record, ProtocolError> {
        let body = match header.record_type {
            RecordType::BeginRequest => RecordBody::BeginRequest(BeginRequest::decode(&content)?),
            RecordType::AbortRequest => RecordBody::AbortRequest,
            RecordType::EndRequest => RecordBody::EndRequest(EndRequest::decode(&content)?),
            RecordType::Params => RecordBody::Params(content),
            RecordType::Stdin => RecordBody::Stdin(content),
            RecordType::Stdout => RecordBody::Stdout(content),
            RecordType::Stderr => RecordBody::Stderr(content),
            RecordType::Data => RecordBody::Data(content),
            RecordType::GetValues => RecordBody::GetValues(content),
            RecordType::GetValuesResult => RecordBody::GetValuesResult(content),
            RecordType::UnknownType => RecordBody::UnknownType(UnknownType::decode(&content)?),
            RecordType::Other(record_type) => RecordBody::Unknown {
                record_type,
                content,
            },
        };
        Ok(Record {
            request_id: header.request_id,
            body,
        })
    }
}

/// tokio-util Decoder: `Ok(None)` until a whole record incl. padding is buffered; content is
/// split off zero-copy (`split_to` + `freeze`); padding skipped; reserves space for the rest of
/// a partially received record. Malformed input -> `Err(ProtocolError)`, never a panic.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordDecoder;

impl Decoder for RecordDecoder {
    type Item = Record;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Record>, ProtocolError> {
        let Some(header_bytes) = src.get(..HEADER_LEN) else {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        };
        let mut header_array = [0u8; HEADER_LEN];
        header_array.copy_from_slice(header_bytes);
        let header = RecordHeader::decode(&header_array)?;
        let record_len = header.record_len();
        if src.len() < record_len {
            src.reserve(record_len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let content = src.split_to(usize::from(header.content_length)).freeze();
        src.advance(usize::from(header.padding_length));
        Record::from_parts(&header, content).map(Some)
    }
}

/// Encoder used by the server and tests (not the client hot path): stream bodies longer than
/// [`MAX_RECORD_CONTENT`] are split into several records; each padded to 8.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordEncoder;

impl Encoder<Record> for RecordEncoder {
    type Error = ProtocolError;

    fn encode(&mut self, record: Record, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let record_type = record.record_type();
        let id = record.request_id;
        match &record.body {
            RecordBody::BeginRequest(begin) => {
                encode_single_record(dst, record_type, id, &begin.encode())
            }
            RecordBody::AbortRequest => encode_single_record(dst, record_type, id, &[]),
            RecordBody::EndRequest(end) => {
                encode_single_record(dst, record_type, id, &end.encode())
            }
            RecordBody::UnknownType(unknown) => {
                encode_single_record(dst, record_type, id, &unknown.encode())
            }
            RecordBody::Params(content)
            | RecordBody::Stdin(content)
            | RecordBody::Stdout(content)
            | RecordBody::Stderr(content)
            | RecordBody::Data(content) => {
                encode_stream_record(dst, record_type, id, content);
                Ok(())
            }
            RecordBody::GetValues(content)
            | RecordBody::GetValuesResult(content)
            | RecordBody::Unknown { content, .. } => {
                encode_single_record(dst, record_type, id, content)
            }
        }
    }
}

/// Appends header+content+padding for one logical stream chunk, splitting at
/// [`MAX_RECORD_CONTENT`]. Empty `content` appends one empty record, which ends the stream
/// (FastCGI 1.0 §3.3).
pub fn encode_stream_record(
    buf: &mut BytesMut,
    record_type: RecordType,
    request_id: RequestId,
    content: &[u8],
) {
    if content.is_empty() {
        put_record(buf, record_type, request_id, &[], 0);
        return;
    }
    buf.reserve(content.len() + content.len().div_ceil(MAX_RECORD_CONTENT) * (HEADER_LEN + 7));
    for chunk in content.chunks(MAX_RECORD_CONTENT) {
        put_record(
            buf,
            record_type,
            request_id,
            chunk,
            padding_for(chunk.len()),
        );
    }
}

/// Appends one record whose content must not be split (management and fixed-size bodies).
/// Padding is dropped when it would push content+padding past 65535, which php-fpm rejects.
fn encode_single_record(
    buf: &mut BytesMut,
    record_type: RecordType,
    request_id: RequestId,
    content: &[u8],
) -> Result<(), ProtocolError> {
    if content.len() > usize::from(u16::MAX) {
        return Err(ProtocolError::ContentTooLong { len: content.len() });
    }
    let padding = match padding_for(content.len()) {
        padding if content.len() + usize::from(padding) <= usize::from(u16::MAX) => padding,
        _ => 0,
    };
    put_record(buf, record_type, request_id, content, padding);
    Ok(())
}

/// `content` is at most 65535 bytes: every caller checks or chunks it.
fn put_record(
    buf: &mut BytesMut,
    record_type: RecordType,
    request_id: RequestId,
    content: &[u8],
    padding: u8,
) {
    let header = RecordHeader {
        record_type,
        request_id,
        content_length: content.len() as u16,
        padding_length: padding,
    };
    buf.reserve(header.record_len());
    buf.put_slice(&header.encode());
    buf.put_slice(content);
    buf.put_bytes(0, usize::from(padding));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::protocol::body::{ProtocolStatus, Role};

    #[test]
    fn decoder_waits_for_header_content_and_padding() {
        let mut wire = BytesMut::new();
        encode_stream_record(&mut wire, RecordType::Stdout, RequestId(3), b"hello");
        assert_eq!(wire.len(), 8 + 5 + 3);
        let mut decoder = RecordDecoder;
        let mut partial = BytesMut::new();
        for (at, byte) in wire.iter().enumerate() {
            partial.put_u8(*byte);
            let decoded = decoder.decode(&mut partial).unwrap();
            if at + 1 < wire.len() {
                assert_eq!(decoded, None, "decoded early at byte {at}");
            } else {
                assert_eq!(
                    decoded,
                    Some(Record {
                        request_id: RequestId(3),
                        body: RecordBody::Stdout(Bytes::from_static(b"hello"))
                    })
                );
            }
        }
        assert!(partial.is_empty());
    }

    #[test]
    fn decoder_reserves_room_for_the_rest_of_a_record() {
        let mut wire = BytesMut::new();
        encode_stream_record(&mut wire, RecordType::Stdin, RequestId(1), &[7; 4000]);
        let mut partial = BytesMut::from(&wire[..8]);
        assert_eq!(RecordDecoder.decode(&mut partial), Ok(None));
        assert!(partial.capacity() >= 8 + 4000);
    }

    #[test]
    fn decoder_refuses_bad_version_and_short_bodies() {
        let mut wrong_version = BytesMut::from(&[0u8, 1, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(
            RecordDecoder.decode(&mut wrong_version),
            Err(ProtocolError::UnsupportedVersion(0))
        );
        let mut short_begin = BytesMut::from(&[1u8, 1, 0, 1, 0, 2, 0, 0, 0, 1][..]);
        assert!(matches!(
            RecordDecoder.decode(&mut short_begin),
            Err(ProtocolError::BodyTooShort { actual: 2, .. })
        ));
    }

    #[test]
    fn unknown_types_keep_their_content() {
        let mut wire =
            BytesMut::from(&[1u8, 42, 0, 0, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0][..]);
        assert_eq!(
            RecordDecoder.decode(&mut wire),
            Ok(Some(Record {
                request_id: RequestId::MANAGEMENT,
                body: RecordBody::Unknown {
                    record_type: 42,
                    content: Bytes::from_static(b"abc")
                }
            }))
        );
    }

    #[test]
    fn encoder_writes_fixed_bodies_unpadded() {
        let mut wire = BytesMut::new();
        let end = Record {
            request_id: RequestId(9),
            body: RecordBody::EndRequest(EndRequest {
                app_status: 0,
                protocol_status: ProtocolStatus::CantMpxConn,
            }),
        };
        RecordEncoder.encode(end, &mut wire).unwrap();
        assert_eq!(
            wire.as_ref(),
            &[1, 3, 0, 9, 0, 8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
        );

        let mut begin_wire = BytesMut::new();
        let begin = Record {
            request_id: RequestId(1),
            body: RecordBody::BeginRequest(BeginRequest {
                role: Role::Responder,
                keep_conn: true,
            }),
        };
        RecordEncoder
            .encode(begin.clone(), &mut begin_wire)
            .unwrap();
        assert_eq!(RecordDecoder.decode(&mut begin_wire), Ok(Some(begin)));
    }

    #[test]
    fn encoder_splits_long_streams_and_keeps_empty_ones() {
        let mut wire = BytesMut::new();
        let data = Bytes::from(vec![1u8; MAX_RECORD_CONTENT * 2 + 1]);
        RecordEncoder
            .encode(
                Record {
                    request_id: RequestId(4),
                    body: RecordBody::Stdout(data.clone()),
                },
                &mut wire,
            )
            .unwrap();
        RecordEncoder
            .encode(
                Record {
                    request_id: RequestId(4),
                    body: RecordBody::Stdout(Bytes::new()),
                },
                &mut wire,
            )
            .unwrap();
        let mut lengths = Vec::new();
        let mut joined = BytesMut::new();
        while let Some(record) = RecordDecoder.decode(&mut wire).unwrap() {
            let RecordBody::Stdout(content) = record.body else {
                panic!("expected STDOUT");
            };
            lengths.push(content.len());
            joined.extend_from_slice(&content);
        }
        assert_eq!(lengths, vec![MAX_RECORD_CONTENT, MAX_RECORD_CONTENT, 1, 0]);
        assert_eq!(joined.freeze(), data);
    }

    #[test]
    fn single_records_refuse_content_over_65535_and_drop_padding_near_it() {
        let too_long = Record {
            request_id: RequestId::MANAGEMENT,
            body: RecordBody::GetValues(Bytes::from(vec![0u8; 65_536])),
        };
        assert_eq!(
            RecordEncoder.encode(too_long, &mut BytesMut::new()),
            Err(ProtocolError::ContentTooLong { len: 65_536 })
        );
        let mut wire = BytesMut::new();
        let near = Record {
            request_id: RequestId::MANAGEMENT,
            body: RecordBody::Unknown {
                record_type: 99,
                content: Bytes::from(vec![0u8; 65_533]),
            },
        };
        RecordEncoder.encode(near.clone(), &mut wire).unwrap();
        assert_eq!(wire[6], 0, "padding would overflow 65535");
        assert_eq!(RecordDecoder.decode(&mut wire), Ok(Some(near)));
    }
}
