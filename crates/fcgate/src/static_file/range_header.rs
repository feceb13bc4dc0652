//! A `Range` header (RFC 9110 §14.1–14.2) read against a file's length: send the whole file,
//! answer 416, or send these byte ranges. Pure, and bounded against hostile headers: numbers of
//! any length saturate instead of overflowing, overlapping and adjacent ranges are merged, and a
//! header asking for too many pieces gets the whole file.

/// The most ranges sent after merging; a request for more gets the whole file with 200, which
/// RFC 9110 §14.2 allows ("a server MAY ignore the Range header field") and every client must
/// accept. Real clients ask for a handful; a long list of small ranges is a scan or an attack.
pub(crate) const MAX_RANGES: usize = 16;

/// A header with more range-specs than this is not even merged: the whole file. It bounds the
/// work and memory one header costs whatever `max_header_line` allows.
pub(crate) const MAX_RANGE_SPECS: usize = 1024;

/// Bytes `first..=last` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteRange {
    /// Offset of the first byte.
    pub(crate) first: u64,
    /// Offset of the last byte (inclusive, as in `Content-Range`).
    pub(crate) last: u64,
}

impl ByteRange {
    /// How many bytes the range covers (never 0).
    pub(crate) fn len(self) -> u64 {
        self.last - self.first + 1
    }
}

/// What to answer a request with this `Range` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangePlan {
    /// 200 with the whole file, as if there were no `Range`: another unit than `bytes`, an empty
    /// file, or more ranges than [`MAX_RANGES`].
    Whole,
    /// 416 with `Content-Range: bytes */LENGTH`: no range starts inside the file, or the header
    /// does not parse (`bytes=abc`, `bytes=5-2`), as nginx and tower-http answer.
    Unsatisfiable,
    /// 206 with these ranges: neither overlapping nor adjacent, in the order the client asked
    /// for them (RFC 9110 §15.3.7.2), at most [`MAX_RANGES`].
    Ranges(Vec<ByteRange>),
}

/// Reads `header` (the value of the request's one `Range` field) for a file of `length` bytes.
pub(crate) fn plan(header: &[u8], length: u64) -> RangePlan {
    // RFC 9110 §14.2: a range unit the server does not understand MUST be ignored; unit names
    // are case-insensitive (§14.1).
    let Some(set) = header
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .and_then(|_| header.get(6..))
    else {
        return RangePlan::Whole;
    };
    // A zero-length file has no byte to send nor a Content-Range to describe none with.
    if length == 0 {
        return RangePlan::Whole;
    }
    let mut requested: Vec<(usize, ByteRange)> = Vec::new();
    let mut specs = 0;
    // `1#range-spec`: empty list elements are allowed and skipped (RFC 9110 §5.6.1.2).
    for element in set.split(|&byte| byte == b',') {
        let spec = trim_whitespace(element);
        if spec.is_empty() {
            continue;
        }
        specs += 1;
        if specs > MAX_RANGE_SPECS {
            return RangePlan::Whole;
        }
        match satisfiable_part(spec, length) {
            Spec::Satisfiable(range) => requested.push((specs, range)),
            Spec::Unsatisfiable => {}
            Spec::Invalid => return RangePlan::Unsatisfiable,
        }
    }
    // `bytes=` alone, or only ranges past the end.
    if requested.is_empty() {
        return RangePlan::Unsatisfiable;
    }
    let merged = merge(requested);
    if merged.len() > MAX_RANGES {
        return RangePlan::Whole;
    }
    RangePlan::Ranges(merged)
}

enum Spec {
    Satisfiable(ByteRange),
    /// Well-formed, but names no byte of the file.
    Unsatisfiable,
    /// Not a range-spec.
    Invalid,
}

/// One range-spec (RFC 9110 §14.1.1–14.1.2) against a file of `length` bytes (> 0).
fn satisfiable_part(spec: &[u8], length: u64) -> Spec {
    let last_byte = length - 1;
    if let Some(suffix) = spec.strip_prefix(b"-") {
        // `-N`: the last N bytes, the whole file when N exceeds it; `-0` names nothing.
        return match number(suffix) {
            None => Spec::Invalid,
            Some(0) => Spec::Unsatisfiable,
            Some(suffix_length) => Spec::Satisfiable(ByteRange {
                first: length - suffix_length.min(length),
                last: last_byte,
            }),
        };
    }
    let Some(dash) = spec.iter().position(|&byte| byte == b'-') else {
        return Spec::Invalid;
    };
    let Some(first) = number(&spec[..dash]) else {
        return Spec::Invalid;
    };
    let last = match &spec[dash + 1..] {
        b"" => u64::MAX,
        digits => match number(digits) {
            Some(last) if last >= first => last,
            _ => return Spec::Invalid,
        },
    };
    if first > last_byte {
        return Spec::Unsatisfiable;
    }
    Spec::Satisfiable(ByteRange {
        first,
        last: last.min(last_byte),
    })
}

/// `1*DIGIT`, saturating at `u64::MAX`: a number past any file length means the same as
/// `u64::MAX` does here, so a hundred digits can neither overflow nor cost more than reading.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |value, &digit| {
        value
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

/// Merges overlapping and adjacent ranges (RFC 9110 §14.2 allows it), so no byte is sent twice
/// however the ranges overlap, then puts the survivors back in the order the client listed
/// them: each where its earliest member was.
fn merge(mut requested: Vec<(usize, ByteRange)>) -> Vec<ByteRange> {
    requested.sort_unstable_by_key(|(_, range)| range.first);
    let mut merged: Vec<(usize, ByteRange)> = Vec::with_capacity(requested.len());
    for (order, range) in requested {
        match merged.last_mut() {
            Some((earliest, current)) if range.first <= current.last.saturating_add(1) => {
                current.last = current.last.max(range.last);
                *earliest = (*earliest).min(order);
            }
            _ => merged.push((order, range)),
        }
    }
    merged.sort_unstable_by_key(|(order, _)| *order);
    merged.into_iter().map(|(_, range)| range).collect()
}

/// Optional whitespace (SP, HTAB) trimmed from both ends.
fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let is_space = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = bytes
        .iter()
        .position(|byte| !is_space(byte))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|byte| !is_space(byte))
        .map_or(start, |end| end + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests;
