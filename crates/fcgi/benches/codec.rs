//! Micro benchmarks of the codec's per-request work: encoding a typical PHP request's PARAMS
//! with `ParamsWriter`, and decoding a response's STDOUT stream with `RecordDecoder` the way a
//! pooled client connection reads it (a long-lived read buffer, socket-sized reads). Before
//! each benchmark the allocations per operation are counted and printed: the global allocator
//! here counts every allocation (`stats_alloc`; the workspace forbids the `unsafe` a
//! hand-written `GlobalAlloc` needs).
//!
//! `cargo bench -p fcgi --bench codec`

use std::alloc::System;
use std::hint::black_box;

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fcgi::protocol::{
    encode_stream_record, EndRequest, ParamsWriter, ProtocolStatus, Record, RecordBody,
    RecordDecoder, RecordEncoder, RecordType, RequestId,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio_util::codec::{Decoder, Encoder};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// What nginx's `fastcgi_params` plus a browser's headers put in front of php-fpm.
const PHP_REQUEST_PARAMS: [(&str, &str); 31] = [
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "fcgate/0.1.0"),
    ("REQUEST_METHOD", "GET"),
    ("REQUEST_SCHEME", "http"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    (
        "REQUEST_URI",
        "/blog/2024/05/a-post-title?page=2&sort=recent",
    ),
    ("DOCUMENT_URI", "/index.php"),
    ("SCRIPT_NAME", "/index.php"),
    ("SCRIPT_FILENAME", "/var/www/app/public/index.php"),
    ("DOCUMENT_ROOT", "/var/www/app/public"),
    ("PATH_INFO", ""),
    ("QUERY_STRING", "page=2&sort=recent"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("REMOTE_ADDR", "203.0.113.57"),
    ("REMOTE_PORT", "51234"),
    ("SERVER_ADDR", "10.0.0.5"),
    ("SERVER_PORT", "443"),
    ("SERVER_NAME", "www.example.org"),
    ("HTTPS", "on"),
    ("REDIRECT_STATUS", "200"),
    ("HTTP_HOST", "www.example.org"),
    (
        "HTTP_USER_AGENT",
        "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    ),
    (
        "HTTP_ACCEPT",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("HTTP_ACCEPT_LANGUAGE", "en-GB,en;q=0.7,de;q=0.3"),
    ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br, zstd"),
    ("HTTP_REFERER", "https://www.example.org/blog/2024/05/"),
    (
        "HTTP_COOKIE",
        "PHPSESSID=8f3c2a9be1d04c7a9f6e2b1d0c3a5e7f; theme=dark; consent=1",
    ),
    ("HTTP_UPGRADE_INSECURE_REQUESTS", "1"),
    ("HTTP_SEC_FETCH_DEST", "document"),
    ("HTTP_SEC_FETCH_MODE", "navigate"),
];

/// The head php-fpm puts before a page's body.
const PHP_HEAD: &[u8] =
    b"X-Powered-By: PHP/8.2.36\r\nContent-type: text/html; charset=UTF-8\r\n\r\n";

/// php-fpm flushes STDOUT from an 8 KiB buffer, so a long body arrives in records that size.
const PHP_RECORD_CONTENT: usize = 8192;

/// What one read(2) from the backend socket hands the decoder; the client reads into a 64 KiB
/// buffer and tops it up by 64 KiB when less than 16 KiB is free (`client/connection.rs`).
const SOCKET_READ: usize = 16 * 1024;
const READ_CHUNK: usize = 64 * 1024;

const REQUEST_ID: RequestId = RequestId(1);

fn encode_params(buffer: &mut BytesMut) {
    let mut writer = ParamsWriter::new(buffer, RecordType::Params, REQUEST_ID);
    for (name, value) in PHP_REQUEST_PARAMS {
        writer.push(name.as_bytes(), value.as_bytes());
    }
    writer.finish();
}

/// A whole response as php-fpm sends it: STDOUT records, the empty one ending the stream,
/// END_REQUEST.
fn stdout_stream(body: &[u8]) -> Vec<u8> {
    let mut wire = BytesMut::new();
    let mut content = PHP_HEAD.to_vec();
    content.extend_from_slice(body);
    for chunk in content.chunks(PHP_RECORD_CONTENT) {
        encode_stream_record(&mut wire, RecordType::Stdout, REQUEST_ID, chunk);
    }
    encode_stream_record(&mut wire, RecordType::Stdout, REQUEST_ID, &[]);
    let end = Record {
        request_id: REQUEST_ID,
        body: RecordBody::EndRequest(EndRequest {
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete,
        }),
    };
    if let Err(error) = RecordEncoder.encode(end, &mut wire) {
        panic!("END_REQUEST does not encode: {error}");
    }
    wire.to_vec()
}

/// Feeds `wire` to the decoder through `read_buffer` in socket-sized reads, as a pooled
/// connection does, and returns the STDOUT bytes received (dropping them, as the gateway does
/// once it has passed them on).
fn decode_response(read_buffer: &mut BytesMut, wire: &[u8]) -> usize {
    let mut received = 0;
    let mut unread = wire;
    while !unread.is_empty() {
        if read_buffer.capacity() - read_buffer.len() < READ_CHUNK / 4 {
            read_buffer.reserve(READ_CHUNK);
        }
        let read = unread.len().min(SOCKET_READ);
        read_buffer.put_slice(&unread[..read]);
        unread = &unread[read..];
        loop {
            match RecordDecoder.decode(read_buffer) {
                Ok(Some(Record {
                    body: RecordBody::Stdout(content),
                    ..
                })) => received += content.len(),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(error) => panic!("benchmark stream does not decode: {error}"),
            }
        }
    }
    received
}

/// Runs `operation` many times and prints the allocations and bytes it took per run.
fn print_allocations(name: &str, mut operation: impl FnMut()) {
    const RUNS: usize = 1000;
    operation(); // warm: buffers reach their steady-state size first
    let region = Region::new(GLOBAL);
    for _ in 0..RUNS {
        operation();
    }
    let change = region.change();
    println!(
        "{name}: {:.3} allocations, {:.3} reallocations, {:.0} bytes allocated per operation",
        change.allocations as f64 / RUNS as f64,
        change.reallocations as f64 / RUNS as f64,
        change.bytes_allocated as f64 / RUNS as f64,
    );
}

fn params(criterion: &mut Criterion) {
    // A pooled connection reuses its write buffer, so encoding starts from a cleared one.
    let mut buffer = BytesMut::with_capacity(4096);
    print_allocations("params/encode_php_request", || {
        buffer.clear();
        encode_params(&mut buffer);
        black_box(&buffer);
    });
    let mut group = criterion.benchmark_group("params");
    group.throughput(Throughput::Elements(PHP_REQUEST_PARAMS.len() as u64));
    group.bench_function("encode_php_request", |bencher| {
        bencher.iter(|| {
            buffer.clear();
            encode_params(&mut buffer);
            black_box(buffer.len())
        });
    });
    group.finish();
}

fn stdout(criterion: &mut Criterion) {
    let hello = stdout_stream(b"Hello, world!\n");
    let hundred_kib = stdout_stream(&[b'x'; 100 * 1024]);
    let mut group = criterion.benchmark_group("stdout");
    for (name, wire) in [("decode_hello", &hello), ("decode_100k", &hundred_kib)] {
        let mut read_buffer = BytesMut::with_capacity(READ_CHUNK);
        print_allocations(&format!("stdout/{name}"), || {
            black_box(decode_response(&mut read_buffer, wire));
        });
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(name, |bencher| {
            bencher.iter(|| decode_response(&mut read_buffer, black_box(wire)));
        });
    }
    group.finish();
}

criterion_group!(benches, params, stdout);
criterion_main!(benches);
