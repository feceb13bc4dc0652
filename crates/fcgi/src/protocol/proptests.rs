//! Property tests across the codec: round trips, chunking independence, the PARAMS packing rules
//! php-fpm depends on, and that no input makes a decoder panic.

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::*;

/// Content of any length up to `max`; the bytes follow a seeded pattern so large contents stay
/// cheap to generate and shrink.
fn bytes_up_to(max: usize) -> impl Strategy<Value = Bytes> + Clone {
    (0..=max, any::<u8>()).prop_map(|(len, seed)| {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    })
}

/// Lengths around the 1-byte/4-byte boundary, small ones, and ones needing a split record.
fn interesting_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(127),
        Just(128),
        0..300usize,
        (MAX_RECORD_CONTENT - 20)..70_000usize,
    ]
}

fn name_value_pairs() -> impl Strategy<Value = Vec<(Bytes, Bytes)>> {
    let pair = (interesting_len(), interesting_len(), any::<u8>()).prop_map(|(n, v, fill)| {
        (
            Bytes::from(vec![fill; n.min(1000)]),
            Bytes::from(vec![fill.wrapping_add(1); v]),
        )
    });
    vec(pair, 0..6)
}

fn record() -> impl Strategy<Value = Record> {
    let stream = bytes_up_to(MAX_RECORD_CONTENT);
    let body = prop_oneof![
        (any::<u16>(), any::<bool>()).prop_map(|(role, keep_conn)| RecordBody::BeginRequest(
            BeginRequest {
                role: Role::from_u16(role),
                keep_conn
            }
        )),
        Just(RecordBody::AbortRequest),
        (any::<u32>(), any::<u8>()).prop_map(|(app_status, status)| RecordBody::EndRequest(
            EndRequest {
                app_status,
                protocol_status: ProtocolStatus::from_u8(status)
            }
        )),
        stream.clone().prop_map(RecordBody::Params),
        stream.clone().prop_map(RecordBody::Stdin),
        stream.clone().prop_map(RecordBody::Stdout),
        stream.clone().prop_map(RecordBody::Stderr),
        stream.prop_map(RecordBody::Data),
        bytes_up_to(65_535).prop_map(RecordBody::GetValues),
        bytes_up_to(300).prop_map(RecordBody::GetValuesResult),
        any::<u8>().prop_map(|record_type| RecordBody::UnknownType(UnknownType { record_type })),
        (12u8.., bytes_up_to(300)).prop_map(|(record_type, content)| RecordBody::Unknown {
            record_type,
            content
        }),
        (Just(0u8), bytes_up_to(300)).prop_map(|(record_type, content)| RecordBody::Unknown {
            record_type,
            content
        }),
    ];
    (any::<u16>(), body).prop_map(|(id, body)| Record {
        request_id: RequestId(id),
        body,
    })
}

fn encode_all(records: &[Record]) -> BytesMut {
    let mut wire = BytesMut::new();
    for record in records {
        RecordEncoder.encode(record.clone(), &mut wire).unwrap();
    }
    wire
}

fn decode_all(wire: &mut BytesMut) -> Vec<Record> {
    let mut records = Vec::new();
    while let Some(record) = RecordDecoder.decode(wire).unwrap() {
        records.push(record);
    }
    records
}

/// Every record header in `wire`, checked for php-fpm's content+padding limit on the way.
fn headers(wire: &[u8]) -> Vec<RecordHeader> {
    let mut headers = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let bytes: [u8; HEADER_LEN] = wire[at..at + HEADER_LEN].try_into().unwrap();
        let header = RecordHeader::decode(&bytes).unwrap();
        assert!(usize::from(header.content_length) + usize::from(header.padding_length) <= 65_535);
        at += header.record_len();
        headers.push(header);
    }
    assert_eq!(at, wire.len());
    headers
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_record_round_trips(record in record()) {
        let mut wire = encode_all(std::slice::from_ref(&record));
        let header = headers(&wire)[0];
        if usize::from(header.content_length) <= MAX_RECORD_CONTENT {
            prop_assert_eq!(wire.len() % 8, 0, "records are padded to a multiple of 8");
        }
        prop_assert_eq!(decode_all(&mut wire), vec![record]);
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn chunking_the_input_does_not_change_the_records(
        records in vec(record(), 1..5),
        chunk_sizes in vec(1..5000usize, 1..50),
    ) {
        let wire = encode_all(&records);
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        let mut rest = &wire[..];
        let mut sizes = chunk_sizes.iter().cycle();
        while !rest.is_empty() {
            let take = sizes.next().copied().unwrap_or(1).min(rest.len());
            buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            decoded.extend(decode_all(&mut buffer));
        }
        prop_assert_eq!(decoded, records);
        prop_assert!(buffer.is_empty());
    }

    #[test]
    fn params_round_trip_without_splitting_pairs_that_fit(pairs in name_value_pairs(), id in 1u16..) {
        let mut wire = BytesMut::new();
        let mut writer = ParamsWriter::new(&mut wire, RecordType::Params, RequestId(id));
        for (name, value) in &pairs {
            writer.push(name, value);
        }
        writer.finish();
        let headers = headers(&wire);
        prop_assert_eq!(headers.last().map(|h| h.content_length), Some(0));

        let mut decoder = NameValueDecoder::new(usize::MAX);
        let mut decoded = Vec::new();
        for record in decode_all(&mut wire) {
            let RecordBody::Params(content) = record.body else {
                return Err(TestCaseError::fail("not a PARAMS record"));
            };
            prop_assert_eq!(record.request_id, RequestId(id));
            decoder.feed(&content).unwrap();
            while let Some(pair) = decoder.next_pair().unwrap() {
                decoded.push(pair);
            }
            if decoder.finish().is_err() {
                let (name, value) = &pairs[decoded.len()];
                prop_assert!(
                    encoded_pair_len(name, value) > MAX_RECORD_CONTENT,
                    "a pair that fits one record was split"
                );
            }
        }
        prop_assert_eq!(decoded, pairs);
    }

    #[test]
    fn frames_write_what_the_encoder_writes(
        data in bytes_up_to(3 * MAX_RECORD_CONTENT),
        id in any::<u16>(),
        skip_seed in any::<usize>(),
    ) {
        let mut expected = BytesMut::new();
        if !data.is_empty() {
            RecordEncoder
                .encode(Record { request_id: RequestId(id), body: RecordBody::Stdin(data.clone()) }, &mut expected)
                .unwrap();
        }
        let mut via_slices = Vec::new();
        for frame in stream_frames(RecordType::Stdin, RequestId(id), data) {
            let skip = skip_seed % (frame.len() + 1);
            let mut prefix = BytesMut::new();
            frame.encode_into(&mut prefix);
            via_slices.extend_from_slice(&prefix[..skip]);
            let mut slices = [IoSlice::new(&[]), IoSlice::new(&[]), IoSlice::new(&[])];
            let filled = frame.io_slices(skip, &mut slices);
            for slice in &slices[..filled] {
                via_slices.extend_from_slice(slice);
            }
        }
        prop_assert_eq!(via_slices, expected.to_vec());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_record_decoder(bytes in vec(any::<u8>(), 0..2000)) {
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = RecordDecoder.decode(&mut buffer) {}
    }

    /// Random bytes mostly fail on the version byte; these carry version 1 headers with any
    /// type, id and lengths, over content that may not match them.
    #[test]
    fn plausible_headers_over_random_content_never_panic_the_record_decoder(
        pieces in vec((any::<u8>(), any::<u16>(), 0..64u16, any::<u8>(), vec(any::<u8>(), 0..80)), 0..20),
    ) {
        let mut buffer = BytesMut::new();
        for (record_type, id, content_length, padding_length, content) in pieces {
            let header = RecordHeader {
                record_type: RecordType::from_u8(record_type % 14),
                request_id: RequestId(id),
                content_length,
                padding_length: padding_length % 9,
            };
            buffer.extend_from_slice(&header.encode());
            buffer.extend_from_slice(&content);
        }
        let total = buffer.len();
        let mut consumed_before = total;
        while let Ok(Some(_)) = RecordDecoder.decode(&mut buffer) {
            prop_assert!(buffer.len() < consumed_before, "a decoded record consumed bytes");
            consumed_before = buffer.len();
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_name_value_decoder(
        chunks in vec(vec(any::<u8>(), 0..200), 0..10),
        cap in 0..5000usize,
    ) {
        let mut decoder = NameValueDecoder::new(cap);
        for chunk in &chunks {
            if decoder.feed(chunk).is_err() {
                break;
            }
            while let Ok(Some((name, value))) = decoder.next_pair() {
                prop_assert!(name.len() + value.len() <= cap);
            }
        }
        let _ = decoder.finish();
    }
}
