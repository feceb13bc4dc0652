//! Byte sizes as operators write them: `8388608`, `"64KiB"`, `"8MiB"`, `"1GiB"`, or nginx's
//! `"64k"`, `"8m"`, `"1g"`.
//!
//! One parser serves the config file (serde) and the command line (`FromStr`, used by clap), so
//! both accept exactly the same spellings. Units are binary: nginx's `k` means 1024 bytes, and so
//! does ours. `KB`/`MB`/`GB` are refused because half the world reads them as powers of 1000.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A number of bytes read from configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Why a size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing, or only a unit, was given.
    #[error("size `{0}` has no number (write e.g. 65536, \"64KiB\" or \"64k\")")]
    MissingNumber(String),
    /// The unit is not one of the accepted ones.
    #[error("size `{0}` has an unknown unit (use B, KiB, MiB, GiB or nginx's k, m, g)")]
    UnknownUnit(String),
    /// `KB`, `MB`, `GB`: decimal or binary is anyone's guess.
    #[error("size `{0}` is ambiguous: write KiB/MiB/GiB (powers of 1024)")]
    AmbiguousUnit(String),
    /// More than `u64::MAX` bytes.
    #[error("size `{0}` is too large")]
    Overflow(String),
    /// A negative integer in the config file.
    #[error("size {0} is negative")]
    Negative(i64),
}

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Parses a size: an integer of bytes with an optional unit, case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(SizeError::MissingNumber(text.to_owned()));
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" | "mb" | "gb" => return Err(SizeError::AmbiguousUnit(text.to_owned())),
        _ => return Err(SizeError::UnknownUnit(text.to_owned())),
    };
    let overflow = || SizeError::Overflow(text.to_owned());
    let count: u64 = number.parse().map_err(|_| overflow())?;
    count.checked_mul(multiplier).ok_or_else(overflow)
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_size(text).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly, so `Display` output parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (scale, unit) in UNITS {
            if self.0 != 0 && self.0 % scale == 0 {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a string such as \"64KiB\", \"8MiB\" or \"64k\"")
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom(SizeError::Negative(bytes)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size(" 512 B "), Ok(512));
    }

    #[test]
    fn binary_and_nginx_units_are_powers_of_1024() {
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("64k"), Ok(64 * 1024));
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("8m"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2 mib"), Ok(2 << 20));
    }

    #[test]
    fn refuses_bad_spellings() {
        assert!(matches!(parse_size(""), Err(SizeError::MissingNumber(_))));
        assert!(matches!(
            parse_size("KiB"),
            Err(SizeError::MissingNumber(_))
        ));
        assert!(matches!(parse_size("-1"), Err(SizeError::MissingNumber(_))));
        assert!(matches!(
            parse_size("1.5MiB"),
            Err(SizeError::UnknownUnit(_))
        ));
        assert!(matches!(
            parse_size("10 parsecs"),
            Err(SizeError::UnknownUnit(_))
        ));
        assert!(matches!(
            parse_size("8MB"),
            Err(SizeError::AmbiguousUnit(_))
        ));
        assert!(matches!(
            parse_size("17179869184GiB"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn display_parses_back() {
        for bytes in [0, 1, 1023, 1024, 65536, 8 << 20, 3 << 30, (1 << 20) + 1] {
            let shown = ByteSize(bytes).to_string();
            assert_eq!(parse_size(&shown), Ok(bytes), "{shown}");
        }
        assert_eq!(ByteSize(8 << 20).to_string(), "8MiB");
    }

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        size: ByteSize,
    }

    #[test]
    fn deserializes_integers_and_strings() {
        let from_int: Holder = toml::from_str("size = 4096").unwrap();
        assert_eq!(from_int.size, ByteSize(4096));
        let from_text: Holder = toml::from_str("size = \"4k\"").unwrap();
        assert_eq!(from_text.size, ByteSize(4096));
        let negative = toml::from_str::<Holder>("size = -4").unwrap_err();
        assert!(negative.to_string().contains("negative"), "{negative}");
        let wrong_type = toml::from_str::<Holder>("size = true").unwrap_err();
        assert!(wrong_type.to_string().contains("size"), "{wrong_type}");
    }
}
