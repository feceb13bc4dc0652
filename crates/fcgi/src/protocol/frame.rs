//! The client's write hot path: one record held as header, shared content and padding, ready
//! for a vectored write without copying the content or allocating.

use std::io::IoSlice;

use bytes::{BufMut, Bytes, BytesMut};

use super::record::{
    padding_for, RecordHeader, RecordType, RequestId, HEADER_LEN, MAX_RECORD_CONTENT,
};

/// Padding is at most 7 bytes because content is padded to a multiple of 8.
static PADDING: [u8; 8] = [0; 8];

/// One record: encoded header, content shared with the caller, padding to a multiple of 8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    header: [u8; HEADER_LEN],
    content: Bytes,
    padding: u8,
}

impl Frame {
    /// A record of `record_type` carrying `content`. `content.len()` must be at most
    /// [`MAX_RECORD_CONTENT`] (checked in debug builds); callers split with [`stream_frames`].
    pub fn new(record_type: RecordType, request_id: RequestId, mut content: Bytes) -> Frame {
        debug_assert!(
            content.len() <= MAX_RECORD_CONTENT,
            "frame content too long"
        );
        // In release builds an oversized frame stays self-consistent rather than desynchronising
        // the stream: content past 65535 bytes is cut, and padding dropped where it won't fit.
        content.truncate(usize::from(u16::MAX));
        let padding = match padding_for(content.len()) {
            padding if content.len() + usize::from(padding) <= usize::from(u16::MAX) => padding,
            _ => 0,
        };
        let header = RecordHeader {
            record_type,
            request_id,
            content_length: content.len() as u16,
            padding_length: padding,
        };
        Frame {
            header: header.encode(),
            content,
            padding,
        }
    }

    /// The empty record that ends a stream (FastCGI 1.0 §3.3).
    pub fn end_of_stream(record_type: RecordType, request_id: RequestId) -> Frame {
        Frame::new(record_type, request_id, Bytes::new())
    }

    /// Header, content and padding: the bytes this frame puts on the wire.
    #[allow(clippy::len_without_is_empty)] // a frame always has its 8-byte header
    pub fn len(&self) -> usize {
        HEADER_LEN + self.content.len() + usize::from(self.padding)
    }

    /// The content this frame carries.
    pub fn content(&self) -> &Bytes {
        &self.content
    }

    /// Fills `out` with up to 3 `IoSlice`s for the bytes not yet written (skipping the first
    /// `written` bytes). Returns how many slices were filled; empty pieces are left out.
    pub fn io_slices<'a>(&'a self, written: usize, out: &mut [IoSlice<'a>]) -> usize {
        let pieces: [&'a [u8]; 3] = [
            &self.header,
            &self.content,
            &PADDING[..usize::from(self.padding)],
        ];
        let mut skip = written;
        let mut filled = 0;
        for piece in pieces {
            if filled == out.len() {
                break;
            }
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            out[filled] = IoSlice::new(&piece[skip..]);
            skip = 0;
            filled += 1;
        }
        filled
    }

    /// Appends this frame's bytes to `buf` (a copying fallback for non-vectored writers).
    pub fn encode_into(&self, buf: &mut BytesMut) {
        buf.reserve(self.len());
        buf.put_slice(&self.header);
        buf.put_slice(&self.content);
        buf.put_slice(&PADDING[..usize::from(self.padding)]);
    }
}

/// Splits a stream's data into frames of at most [`MAX_RECORD_CONTENT`] (zero-copy
/// `Bytes::split_to`). Does not emit the empty terminator; empty data yields nothing.
pub fn stream_frames(record_type: RecordType, request_id: RequestId, data: Bytes) -> StreamFrames {
    StreamFrames {
        record_type,
        request_id,
        remaining: data,
    }
}

/// The iterator returned by [`stream_frames`].
#[derive(Clone, Debug)]
pub struct StreamFrames {
    record_type: RecordType,
    request_id: RequestId,
    remaining: Bytes,
}

impl Iterator for StreamFrames {
    type Item = Frame;

    fn next(&mut self) -> Option<Frame> {
        if self.remaining.is_empty() {
            return None;
        }
        let take = self.remaining.len().min(MAX_RECORD_CONTENT);
        let content = self.remaining.split_to(take);
        Some(Frame::new(self.record_type, self.request_id, content))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let frames = self.remaining.len().div_ceil(MAX_RECORD_CONTENT);
        (frames, Some(frames))
    }
}

impl ExactSizeIterator for StreamFrames {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn written(frame: &Frame, skip: usize, slots: usize) -> Vec<u8> {
        let mut slices = vec![IoSlice::new(&[]); slots];
        let filled = frame.io_slices(skip, &mut slices);
        slices[..filled]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    #[test]
    fn slices_cover_header_content_and_padding() {
        let frame = Frame::new(RecordType::Stdin, RequestId(1), Bytes::from_static(b"abc"));
        assert_eq!(frame.len(), 16);
        let mut full = BytesMut::new();
        frame.encode_into(&mut full);
        assert_eq!(
            full.as_ref(),
            &[1, 5, 0, 1, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]
        );
        for skip in 0..=frame.len() {
            assert_eq!(
                written(&frame, skip, 3),
                full[skip..].to_vec(),
                "skip {skip}"
            );
        }
    }

    #[test]
    fn slices_stop_at_the_room_given() {
        let frame = Frame::new(RecordType::Stdin, RequestId(1), Bytes::from_static(b"abc"));
        assert_eq!(written(&frame, 0, 1), vec![1, 5, 0, 1, 0, 3, 5, 0]);
        let mut none: [IoSlice<'_>; 0] = [];
        assert_eq!(frame.io_slices(0, &mut none), 0);
    }

    #[test]
    fn end_of_stream_is_a_bare_header() {
        let frame = Frame::end_of_stream(RecordType::Params, RequestId(2));
        assert_eq!(frame.len(), 8);
        assert_eq!(written(&frame, 0, 3), vec![1, 4, 0, 2, 0, 0, 0, 0]);
        assert_eq!(written(&frame, 8, 3), Vec::<u8>::new());
    }

    #[test]
    fn stream_frames_split_without_copying() {
        let data = Bytes::from(vec![9u8; MAX_RECORD_CONTENT + 10]);
        let frames: Vec<Frame> =
            stream_frames(RecordType::Stdin, RequestId(1), data.clone()).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].content().len(), MAX_RECORD_CONTENT);
        assert_eq!(frames[1].content().len(), 10);
        assert_eq!(
            frames[0].content().as_ptr(),
            data.as_ptr(),
            "content is shared, not copied"
        );
        assert_eq!(
            stream_frames(RecordType::Stdin, RequestId(1), Bytes::new()).count(),
            0
        );
    }
}
