//! Name-value pairs (FastCGI 1.0 §3.4): the content of PARAMS, GET_VALUES and
//! GET_VALUES_RESULT. Writing packs pairs into records without splitting them; reading is a
//! stream decoder, because the spec lets a pair span records.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::record::{
    padding_for, RecordHeader, RecordType, RequestId, HEADER_LEN, MAX_RECORD_CONTENT,
};

/// GET_VALUES name: connections the application accepts at once (FastCGI 1.0 §4.1).
pub const FCGI_MAX_CONNS: &str = "FCGI_MAX_CONNS";
/// GET_VALUES name: requests the application accepts at once (FastCGI 1.0 §4.1).
pub const FCGI_MAX_REQS: &str = "FCGI_MAX_REQS";
/// GET_VALUES name: "1" if the application multiplexes requests on one connection, else "0".
pub const FCGI_MPXS_CONNS: &str = "FCGI_MPXS_CONNS";

/// Lengths of 128 and more take 4 bytes with the high bit set; 31 bits remain (FastCGI 1.0 §3.4).
const LONG_LENGTH_FLAG: u32 = 0x8000_0000;

fn length_len(len: usize) -> usize {
    if len < 128 {
        1
    } else {
        4
    }
}

/// Writes the 1- or 4-byte length form of `len` into `out` at `at`; returns the bytes used.
fn write_length(out: &mut [u8; 8], at: usize, len: usize) -> usize {
    if len < 128 {
        out[at] = len as u8;
        1
    } else {
        debug_assert!(
            len < LONG_LENGTH_FLAG as usize,
            "FastCGI lengths have 31 bits"
        );
        let bytes = (len as u32 | LONG_LENGTH_FLAG).to_be_bytes();
        out[at..at + 4].copy_from_slice(&bytes);
        4
    }
}

/// Bytes `name` and `value` take once encoded, length prefixes included.
pub fn encoded_pair_len(name: &[u8], value: &[u8]) -> usize {
    length_len(name.len()) + length_len(value.len()) + name.len() + value.len()
}

fn pair_prefix(name: &[u8], value: &[u8]) -> ([u8; 8], usize) {
    let mut prefix = [0u8; 8];
    let name_prefix = write_length(&mut prefix, 0, name.len());
    let value_prefix = write_length(&mut prefix, name_prefix, value.len());
    (prefix, name_prefix + value_prefix)
}

/// Appends one encoded pair to `buf`. Names and values must be shorter than 2^31 bytes.
pub fn encode_pair(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    let (prefix, prefix_len) = pair_prefix(name, value);
    buf.reserve(prefix_len + name.len() + value.len());
    buf.put_slice(&prefix[..prefix_len]);
    buf.put_slice(name);
    buf.put_slice(value);
}

/// Writes PARAMS (or GET_VALUES / GET_VALUES_RESULT) records into `buf`: pairs are packed into
/// records and never split across two records (php-fpm parses each PARAMS record on its own)
/// unless one pair alone is larger than [`MAX_RECORD_CONTENT`], in which case it is split
/// (values over 64 KiB). [`finish`](Self::finish) closes the open record and, for PARAMS,
/// appends the empty record ending the stream. Dropping the writer closes the open record too.
pub struct ParamsWriter<'a> {
    buf: &'a mut BytesMut,
    record_type: RecordType,
    request_id: RequestId,
    /// Offset in `buf` of the header of the record being filled, if one is open.
    open_header_at: Option<usize>,
    wrote_record: bool,
}

impl<'a> ParamsWriter<'a> {
    /// Starts writing `record_type` records for `request_id` at the end of `buf`.
    pub fn new(buf: &'a mut BytesMut, record_type: RecordType, request_id: RequestId) -> Self {
        ParamsWriter {
            buf,
            record_type,
            request_id,
            open_header_at: None,
            wrote_record: false,
        }
    }

    /// Adds one pair, starting a new record if it does not fit in the open one.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let pair_len = encoded_pair_len(name, value);
        if pair_len > MAX_RECORD_CONTENT {
            let (prefix, prefix_len) = pair_prefix(name, value);
            self.append(&prefix[..prefix_len]);
            self.append(name);
            self.append(value);
            return;
        }
        // The common case, a pair that fits in one record: one capacity check, three copies.
        if self.open_content_len() + pair_len > MAX_RECORD_CONTENT {
            self.close_record();
        }
        if self.open_header_at.is_none() {
            self.open_record();
        }
        self.buf.reserve(pair_len);
        let (prefix, prefix_len) = pair_prefix(name, value);
        if prefix_len == 2 {
            // Both lengths short, the usual case: a constant-size copy compiles to one store.
            self.buf.extend_from_slice(&prefix[..2]);
        } else {
            self.buf.extend_from_slice(&prefix[..prefix_len]);
        }
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(value);
    }

    /// Closes the open record; for PARAMS also ends the stream with an empty record. A
    /// management query with no pairs still gets its one (empty) record.
    pub fn finish(mut self) {
        self.close_record();
        if self.record_type == RecordType::Params || !self.wrote_record {
            self.open_record();
            self.close_record();
        }
    }

    fn open_content_len(&self) -> usize {
        self.open_header_at
            .map_or(0, |header_at| self.buf.len() - header_at - HEADER_LEN)
    }

    /// Appends bytes to the open record, spilling into new records at the size limit.
    fn append(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.open_header_at.is_none() {
                self.open_record();
            }
            let room = MAX_RECORD_CONTENT - self.open_content_len();
            if room == 0 {
                self.close_record();
                continue;
            }
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buf.put_slice(now);
            bytes = later;
        }
    }

    fn open_record(&mut self) {
        self.open_header_at = Some(self.buf.len());
        self.wrote_record = true;
        self.buf.put_bytes(0, HEADER_LEN);
    }

    fn close_record(&mut self) {
        let Some(header_at) = self.open_header_at.take() else {
            return;
        };
        let content_len = self.buf.len() - header_at - HEADER_LEN;
        let padding = padding_for(content_len);
        let header = RecordHeader {
            record_type: self.record_type,
            request_id: self.request_id,
            // `append` never lets a record grow past MAX_RECORD_CONTENT.
            content_length: content_len as u16,
            padding_length: padding,
        };
        self.buf[header_at..header_at + HEADER_LEN].copy_from_slice(&header.encode());
        self.buf.put_bytes(0, usize::from(padding));
    }
}

impl Drop for ParamsWriter<'_> {
    fn drop(&mut self) {
        self.close_record();
    }
}

/// Streaming decoder: pairs may span records. Caps the stream at `max_total` encoded bytes
/// (names, values and their length prefixes) -> [`ProtocolError::ParamsTooLarge`]; counting the
/// prefixes too bounds a flood of empty pairs.
#[derive(Debug)]
pub struct NameValueDecoder {
    buffer: BytesMut,
    max_total: usize,
    fed: usize,
}

impl NameValueDecoder {
    /// A decoder that refuses streams longer than `max_total` bytes.
    pub fn new(max_total: usize) -> Self {
        NameValueDecoder {
            buffer: BytesMut::new(),
            max_total,
            fed: 0,
        }
    }

    /// Adds the content of one record.
    pub fn feed(&mut self, content: &[u8]) -> Result<(), ProtocolError> {
        let fed = self.fed.saturating_add(content.len());
        if fed > self.max_total {
            return Err(self.too_large());
        }
        self.fed = fed;
        self.buffer.extend_from_slice(content);
        Ok(())
    }

    /// The next complete pair, or `None` until more content is fed. Fails early when a pair's
    /// declared lengths alone exceed the cap.
    pub fn next_pair(&mut self) -> Result<Option<(Bytes, Bytes)>, ProtocolError> {
        let Some((name_len, after_name_len)) = read_length(&self.buffer, 0) else {
            return Ok(None);
        };
        let Some((value_len, prefix_len)) = read_length(&self.buffer, after_name_len) else {
            return Ok(None);
        };
        let consumed_before = self.fed - self.buffer.len();
        let pair_len = prefix_len
            .checked_add(name_len)
            .and_then(|len| len.checked_add(value_len))
            .filter(|len| consumed_before.saturating_add(*len) <= self.max_total)
            .ok_or_else(|| self.too_large())?;
        if self.buffer.len() < pair_len {
            return Ok(None);
        }
        self.buffer.advance(prefix_len);
        let name = self.buffer.split_to(name_len).freeze();
        let value = self.buffer.split_to(value_len).freeze();
        Ok(Some((name, value)))
    }

    /// Fails if the stream ended inside a pair.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::NameValueTruncated(self.buffer.len()))
        }
    }

    fn too_large(&self) -> ProtocolError {
        ProtocolError::ParamsTooLarge {
            limit: self.max_total,
        }
    }
}

/// Reads a length at `at`: its value and the offset just past it, or `None` if incomplete.
fn read_length(buffer: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *buffer.get(at)?;
    if first < 128 {
        return Some((usize::from(first), at + 1));
    }
    let bytes: [u8; 4] = buffer.get(at..at + 4)?.try_into().ok()?;
    let len = u32::from_be_bytes(bytes) & !LONG_LENGTH_FLAG;
    Some((len as usize, at + 4))
}

/// Decodes content that holds whole pairs only, such as one GET_VALUES record.
pub fn decode_pairs(content: &[u8]) -> Result<Vec<(Bytes, Bytes)>, ProtocolError> {
    let mut decoder = NameValueDecoder::new(usize::MAX);
    decoder.feed(content)?;
    let mut pairs = Vec::new();
    while let Some(pair) = decoder.next_pair()? {
        pairs.push(pair);
    }
    decoder.finish()?;
    Ok(pairs)
}

/// Appends one GET_VALUES record (request id 0) asking for `names` (FastCGI 1.0 §4.1).
pub fn encode_get_values(buf: &mut BytesMut, names: &[&str]) {
    let mut writer = ParamsWriter::new(buf, RecordType::GetValues, RequestId::MANAGEMENT);
    for name in names {
        writer.push(name.as_bytes(), b"");
    }
    writer.finish();
}

/// Appends one GET_VALUES_RESULT record (request id 0) answering with `pairs`.
pub fn encode_get_values_result(buf: &mut BytesMut, pairs: &[(&str, String)]) {
    let mut writer = ParamsWriter::new(buf, RecordType::GetValuesResult, RequestId::MANAGEMENT);
    for (name, value) in pairs {
        writer.push(name.as_bytes(), value.as_bytes());
    }
    writer.finish();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "name_value_tests.rs"]
mod tests;
