//! Arbitrary PARAMS content fed in arbitrary pieces: the streaming name-value decoder must
//! yield pairs or an error, never panic, and respect its size cap.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, content)) = data.split_first() else {
        return;
    };
    let mut decoder = fcgi::protocol::NameValueDecoder::new(64 * 1024);
    let cut = (split as usize).min(content.len());
    for piece in [&content[..cut], &content[cut..]] {
        if decoder.feed(piece).is_err() {
            return;
        }
        while let Ok(Some(_pair)) = decoder.next_pair() {}
    }
    let _ = decoder.finish();
});
