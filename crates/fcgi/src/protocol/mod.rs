//! FastCGI 1.0 records as plain data: headers and types (`record`), fixed-size bodies (`body`),
//! name-value pairs (`name_value`), whole records on a byte stream (`codec`) and the client's
//! zero-copy write unit (`frame`). No I/O and no clock: everything here is a function of bytes.

pub mod body;
pub mod codec;
pub mod error;
pub mod frame;
pub mod name_value;
pub mod record;

pub use body::{BeginRequest, EndRequest, ProtocolStatus, Role, UnknownType};
pub use codec::{encode_stream_record, Record, RecordBody, RecordDecoder, RecordEncoder};
pub use error::ProtocolError;
pub use frame::{stream_frames, Frame, StreamFrames};
pub use name_value::{
    decode_pairs, encode_get_values, encode_get_values_result, encode_pair, encoded_pair_len,
    NameValueDecoder, ParamsWriter, FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS,
};
pub use record::{
    padding_for, RecordHeader, RecordType, RequestId, FCGI_VERSION_1, HEADER_LEN,
    MAX_RECORD_CONTENT,
};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod proptests;
