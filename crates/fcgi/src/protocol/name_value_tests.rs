//! Tests of name-value encoding, the PARAMS writer's packing rules and the stream decoder.

use tokio_util::codec::Decoder;

use super::*;
use crate::protocol::codec::{Record, RecordBody, RecordDecoder};

fn records(mut buf: BytesMut) -> Vec<Record> {
    let mut decoder = RecordDecoder;
    let mut out = Vec::new();
    while let Some(record) = decoder.decode(&mut buf).unwrap() {
        out.push(record);
    }
    assert!(buf.is_empty(), "trailing bytes after the last record");
    out
}

fn params_content(record: &Record) -> &Bytes {
    match &record.body {
        RecordBody::Params(content) => content,
        other => panic!("expected PARAMS, got {other:?}"),
    }
}

#[test]
fn short_and_long_lengths_have_the_spec_encoding() {
    let mut buf = BytesMut::new();
    encode_pair(&mut buf, &[b'n'; 127], &[b'v'; 128]);
    assert_eq!(buf[0], 127);
    assert_eq!(buf[1..5], [0x80, 0, 0, 128]);
    assert_eq!(buf.len(), 1 + 4 + 127 + 128);
    assert_eq!(encoded_pair_len(&[b'n'; 127], &[b'v'; 128]), buf.len());
    assert_eq!(encoded_pair_len(b"", b""), 2);

    let mut big = BytesMut::new();
    encode_pair(&mut big, b"", &vec![0u8; 0x0102_0304]);
    assert_eq!(big[..5], [0, 0x81, 0x02, 0x03, 0x04]);
}

#[test]
fn decode_pairs_reads_back_what_encode_pair_wrote() {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"SCRIPT_FILENAME".to_vec(), b"/srv/index.php".to_vec()),
        (b"EMPTY".to_vec(), Vec::new()),
        (vec![b'a'; 200], vec![b'b'; 70_000]),
    ];
    let mut buf = BytesMut::new();
    for (name, value) in &pairs {
        encode_pair(&mut buf, name, value);
    }
    let decoded = decode_pairs(&buf).unwrap();
    let decoded: Vec<(Vec<u8>, Vec<u8>)> = decoded
        .into_iter()
        .map(|(name, value)| (name.to_vec(), value.to_vec()))
        .collect();
    assert_eq!(decoded, pairs);
}

#[test]
fn stream_decoder_waits_for_pairs_cut_anywhere() {
    let mut buf = BytesMut::new();
    encode_pair(&mut buf, b"QUERY_STRING", &[b'q'; 300]);
    encode_pair(&mut buf, b"X", b"y");
    let mut decoder = NameValueDecoder::new(1 << 20);
    let mut pairs = Vec::new();
    for byte in buf.iter() {
        decoder.feed(&[*byte]).unwrap();
        while let Some(pair) = decoder.next_pair().unwrap() {
            pairs.push(pair);
        }
    }
    decoder.finish().unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].0, Bytes::from_static(b"QUERY_STRING"));
    assert_eq!(pairs[0].1.len(), 300);
    assert_eq!(
        pairs[1],
        (Bytes::from_static(b"X"), Bytes::from_static(b"y"))
    );
}

#[test]
fn a_pair_left_incomplete_is_reported() {
    let mut decoder = NameValueDecoder::new(100);
    decoder.feed(&[3, 5, b'a', b'b']).unwrap();
    assert_eq!(decoder.next_pair(), Ok(None));
    assert_eq!(decoder.finish(), Err(ProtocolError::NameValueTruncated(4)));
    assert_eq!(
        decode_pairs(&[0x80, 0]),
        Err(ProtocolError::NameValueTruncated(2))
    );
}

#[test]
fn the_cap_counts_every_encoded_byte() {
    let mut decoder = NameValueDecoder::new(10);
    decoder.feed(&[1, 1, b'a', b'b']).unwrap();
    decoder.feed(&[1, 1, b'c', b'd']).unwrap();
    assert_eq!(
        decoder.feed(&[1, 1, b'e']),
        Err(ProtocolError::ParamsTooLarge { limit: 10 })
    );
}

#[test]
fn the_cap_applies_to_declared_lengths_before_the_data_arrives() {
    let mut decoder = NameValueDecoder::new(1000);
    decoder.feed(&[0x80, 0, 0x10, 0, 0]).unwrap();
    assert_eq!(
        decoder.next_pair(),
        Err(ProtocolError::ParamsTooLarge { limit: 1000 })
    );
}

#[test]
fn params_writer_packs_small_pairs_and_ends_the_stream() {
    let mut buf = BytesMut::new();
    let mut writer = ParamsWriter::new(&mut buf, RecordType::Params, RequestId(7));
    writer.push(b"A", b"1");
    writer.push(b"BB", b"22");
    writer.finish();
    let mut expected = vec![1, 4, 0, 7, 0, 10, 6, 0];
    expected.extend_from_slice(&[1, 1, b'A', b'1', 2, 2, b'B', b'B', b'2', b'2']);
    expected.extend_from_slice(&[0; 6]);
    expected.extend_from_slice(&[1, 4, 0, 7, 0, 0, 0, 0]);
    assert_eq!(buf.as_ref(), expected.as_slice());
}

#[test]
fn params_writer_starts_a_new_record_rather_than_split_a_pair() {
    let mut buf = BytesMut::new();
    let mut writer = ParamsWriter::new(&mut buf, RecordType::Params, RequestId(1));
    writer.push(b"FIRST", &[b'x'; 40_000]);
    writer.push(b"SECOND", &[b'y'; 40_000]);
    writer.finish();
    let records = records(buf);
    assert_eq!(records.len(), 3);
    for record in &records[..2] {
        let pairs = decode_pairs(params_content(record)).unwrap();
        assert_eq!(pairs.len(), 1, "each record holds one whole pair");
    }
    assert!(params_content(&records[2]).is_empty());
}

#[test]
fn params_writer_splits_only_a_pair_larger_than_a_record() {
    let mut buf = BytesMut::new();
    let mut writer = ParamsWriter::new(&mut buf, RecordType::Params, RequestId(1));
    writer.push(b"SMALL", b"1");
    writer.push(b"HUGE", &[b'h'; 100_000]);
    writer.push(b"AFTER", b"2");
    writer.finish();
    let records = records(buf);
    assert_eq!(records.len(), 3, "two records of pairs and the terminator");
    let mut decoder = NameValueDecoder::new(usize::MAX);
    for record in &records {
        let content = params_content(record);
        assert!(content.len() <= MAX_RECORD_CONTENT);
        decoder.feed(content).unwrap();
    }
    let mut names = Vec::new();
    while let Some((name, value)) = decoder.next_pair().unwrap() {
        names.push((name, value.len()));
    }
    decoder.finish().unwrap();
    assert_eq!(
        names,
        vec![
            (Bytes::from_static(b"SMALL"), 1),
            (Bytes::from_static(b"HUGE"), 100_000),
            (Bytes::from_static(b"AFTER"), 1)
        ]
    );
}

#[test]
fn dropping_a_writer_still_closes_its_record() {
    let mut buf = BytesMut::new();
    {
        let mut writer = ParamsWriter::new(&mut buf, RecordType::Params, RequestId(2));
        writer.push(b"K", b"V");
    }
    let records = records(buf);
    assert_eq!(records.len(), 1);
    assert_eq!(decode_pairs(params_content(&records[0])).unwrap().len(), 1);
}

#[test]
fn get_values_is_one_management_record() {
    let mut buf = BytesMut::new();
    encode_get_values(&mut buf, &[FCGI_MAX_CONNS, FCGI_MPXS_CONNS]);
    let records = records(buf);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].request_id, RequestId::MANAGEMENT);
    let RecordBody::GetValues(content) = &records[0].body else {
        panic!("expected GET_VALUES, got {:?}", records[0].body);
    };
    let pairs = decode_pairs(content).unwrap();
    assert_eq!(
        pairs[0],
        (Bytes::from_static(b"FCGI_MAX_CONNS"), Bytes::new())
    );
    assert_eq!(
        pairs[1],
        (Bytes::from_static(b"FCGI_MPXS_CONNS"), Bytes::new())
    );

    let mut empty = BytesMut::new();
    encode_get_values(&mut empty, &[]);
    assert_eq!(empty.as_ref(), &[1, 9, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn get_values_result_carries_the_values() {
    let mut buf = BytesMut::new();
    encode_get_values_result(&mut buf, &[(FCGI_MAX_REQS, "50".to_owned())]);
    let records = records(buf);
    assert_eq!(records.len(), 1);
    let RecordBody::GetValuesResult(content) = &records[0].body else {
        panic!("expected GET_VALUES_RESULT, got {:?}", records[0].body);
    };
    assert_eq!(
        decode_pairs(content).unwrap(),
        vec![(
            Bytes::from_static(b"FCGI_MAX_REQS"),
            Bytes::from_static(b"50")
        )]
    );
}
