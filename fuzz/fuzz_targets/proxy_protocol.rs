//! Arbitrary bytes as the start of a connection on a `proxy_protocol` listener: the PROXY header
//! parser must return a header, "incomplete" or an error, never panic; a header it accepts must
//! lie within the bytes given and not depend on what follows it; and it must never ask for more
//! bytes than a header may have. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run proxy_protocol -- -max_total_time=60`
#![no_main]

use fcgate::proxy_protocol::{parse, Parsed, MAX_V1_HEADER_LEN, MAX_V2_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Complete { header, length }) => {
            assert!(length <= data.len(), "length {length} past the end");
            assert!(length <= MAX_V2_HEADER_LEN, "a header of {length} bytes");
            // The header alone parses the same: nothing after it was looked at.
            assert_eq!(
                parse(&data[..length]).ok(),
                Some(Parsed::Complete { header, length }),
                "the header parses differently without what follows it"
            );
            // One byte short, it is only the start of a header.
            if let Some(short) = length.checked_sub(1) {
                assert!(
                    matches!(parse(&data[..short]), Ok(Parsed::Incomplete)),
                    "a header one byte short is not incomplete"
                );
            }
        }
        Ok(Parsed::Incomplete) => {
            // v1 has no length field: the 107-byte bound is the parser's own, not ppp's.
            if data.first() == Some(&b'P') {
                assert!(
                    data.len() < MAX_V1_HEADER_LEN,
                    "{} bytes of v1 still incomplete",
                    data.len()
                );
            }
            assert!(data.len() < MAX_V2_HEADER_LEN);
        }
        Err(_) => {}
    }
});
