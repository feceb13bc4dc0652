//! The deterministic body pattern shared by the test backend (`size=N`) and the PHP fixture
//! `download.php?size=N`: byte `i` is the ASCII digit `i % 10`, so a test can check any large
//! body, or any slice of it at a known offset, without keeping a copy.

/// The first `len` bytes of the pattern.
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    pattern_from(0, len)
}

/// `len` bytes of the pattern starting at byte `offset` (for Range responses).
pub fn pattern_from(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(pattern_byte).collect()
}

/// True when `body` is exactly the first `body.len()` bytes of the pattern.
pub fn is_pattern(body: &[u8]) -> bool {
    body.iter()
        .enumerate()
        .all(|(index, &byte)| byte == pattern_byte(index))
}

fn pattern_byte(index: usize) -> u8 {
    // `index % 10` is below 10, so the cast cannot truncate.
    b'0' + (index % 10) as u8
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_repeating_digits_and_checkable() {
        assert_eq!(pattern_bytes(12), b"012345678901");
        assert_eq!(pattern_from(8, 4), b"8901");
        assert!(is_pattern(&pattern_bytes(100_003)));
        let mut corrupted = pattern_bytes(50);
        corrupted[37] = b'x';
        assert!(!is_pattern(&corrupted));
        assert!(!is_pattern(b"1"));
    }
}
