//! Arbitrary bytes as the start of an app's STDOUT: the CGI head parser must return a head,
//! "incomplete" or an error, never panic; and the proxy's framing of a parsed head (dropping
//! hop-by-hop headers, checking Content-Length) must not panic on whatever the app sent.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run cgi_head -- -max_total_time=60`
#![no_main]

use bytes::Bytes;
use fcgate::cgi_response::{parse_head, HeadParse, MAX_HEAD_LEN};
use fcgate::response_framing::{declared_length, strip_hop_by_hop};
use http::header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let Ok(HeadParse::Complete {
        mut head,
        body_start,
    }) = parse_head(&buf)
    else {
        return;
    };
    assert!(
        body_start <= buf.len(),
        "body_start {body_start} past the end"
    );
    assert!(
        body_start <= MAX_HEAD_LEN,
        "a head longer than MAX_HEAD_LEN was accepted"
    );
    assert!(
        !head.headers.contains_key("status"),
        "Status left among the headers"
    );
    strip_hop_by_hop(&mut head.headers);
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
    ] {
        assert!(
            !head.headers.contains_key(&name),
            "{name} survived strip_hop_by_hop"
        );
    }
    // Valid, invalid or conflicting: every outcome is fine but the header must be gone after
    // a success.
    if declared_length(&mut head.headers).is_ok() {
        assert!(!head.headers.contains_key(header::CONTENT_LENGTH));
    }
});
