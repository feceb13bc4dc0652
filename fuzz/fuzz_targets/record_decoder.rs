//! Arbitrary bytes from a backend: the record decoder must return records or an error, never
//! panic, and never loop. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run record_decoder -- -max_total_time=60`
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    let mut decoder = fcgi::protocol::RecordDecoder;
    while let Ok(Some(_record)) = decoder.decode(&mut buffer) {}
});
