//! Numbers and IP addresses as param text, kept in fixed buffers on the stack: every request
//! carries a few (ports, addresses), and `to_string` would cost an allocation and a pass through
//! `core::fmt` for each. The digits are `itoa`'s; [`Decimal`] only keeps them, so a client
//! connection's ports are written once, when it is accepted.

use std::fmt::Write;
use std::net::IpAddr;

/// Digits of the largest `u64`.
const MAX_DECIMAL_LEN: usize = 20;

/// An unsigned number in decimal, as `u64::to_string` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decimal {
    digits: [u8; MAX_DECIMAL_LEN],
    start: u8,
}

impl Decimal {
    pub(super) fn new(value: u64) -> Decimal {
        let mut buffer = itoa::Buffer::new();
        let text = buffer.format(value).as_bytes();
        // itoa writes at most MAX_DECIMAL_LEN digits for a u64.
        let start = MAX_DECIMAL_LEN - text.len();
        let mut digits = [0u8; MAX_DECIMAL_LEN];
        digits[start..].copy_from_slice(text);
        Decimal {
            digits,
            // Below MAX_DECIMAL_LEN.
            start: start as u8,
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.digits[usize::from(self.start)..]
    }
}

/// Longest text an address takes here: a full IPv6 address (39) in brackets.
const MAX_IP_TEXT_LEN: usize = 48;

/// An IP address as text, v4-mapped v6 shown as v4 (what nginx and apps' IPv4 allow-lists
/// expect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IpText {
    bytes: [u8; MAX_IP_TEXT_LEN],
    len: u8,
}

impl IpText {
    /// Without brackets: REMOTE_ADDR, SERVER_ADDR.
    pub(super) fn plain(ip: IpAddr) -> IpText {
        IpText::write(ip, false)
    }

    /// An IPv6 address in brackets, as in a Host header: SERVER_NAME.
    pub(super) fn host(ip: IpAddr) -> IpText {
        IpText::write(ip, true)
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn write(ip: IpAddr, bracket_v6: bool) -> IpText {
        let mut text = IpText {
            bytes: [0; MAX_IP_TEXT_LEN],
            len: 0,
        };
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                for (index, octet) in v4.octets().into_iter().enumerate() {
                    if index > 0 {
                        text.push(b".");
                    }
                    text.push(Decimal::new(u64::from(octet)).as_bytes());
                }
            }
            // Rare enough for the formatter; it picks the `::` compression RFC 5952 asks for.
            // The buffer holds the longest form, so the write cannot fail.
            IpAddr::V6(v6) if bracket_v6 => {
                let _ = write!(text, "[{v6}]");
            }
            IpAddr::V6(v6) => {
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    fn push(&mut self, bytes: &[u8]) -> bool {
        let len = usize::from(self.len);
        let Some(room) = self.bytes.get_mut(len..len + bytes.len()) else {
            return false;
        };
        room.copy_from_slice(bytes);
        // Within MAX_IP_TEXT_LEN.
        self.len = (len + bytes.len()) as u8;
        true
    }
}

impl Write for IpText {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        if self.push(text.as_bytes()) {
            Ok(())
        } else {
            Err(std::fmt::Error)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decimal_edges() {
        for value in [0, 9, 10, 65535, u64::MAX] {
            assert_eq!(Decimal::new(value).as_bytes(), value.to_string().as_bytes());
        }
    }

    #[test]
    fn longest_v6_fits_in_brackets() {
        let longest = Ipv6Addr::new(0xffff, 0xfffe, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 1);
        assert_eq!(
            IpText::host(IpAddr::V6(longest)).as_bytes(),
            b"[ffff:fffe:ffff:ffff:ffff:ffff:ffff:1]"
        );
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    proptest! {
        #[test]
        fn decimal_is_to_string(value in any::<u64>()) {
            prop_assert_eq!(text(Decimal::new(value).as_bytes()), value.to_string());
        }

        #[test]
        fn v4_is_display(octets in any::<[u8; 4]>()) {
            let ip = Ipv4Addr::from(octets);
            prop_assert_eq!(text(IpText::plain(IpAddr::V4(ip)).as_bytes()), ip.to_string());
            prop_assert_eq!(text(IpText::host(IpAddr::V4(ip)).as_bytes()), ip.to_string());
        }

        #[test]
        fn v6_is_canonical_display(segments in any::<[u16; 8]>(), mapped in any::<bool>()) {
            let mut segments = segments;
            if mapped {
                segments[..6].copy_from_slice(&[0, 0, 0, 0, 0, 0xffff]);
            }
            let ip = IpAddr::V6(Ipv6Addr::from(segments));
            let canonical = ip.to_canonical();
            prop_assert_eq!(text(IpText::plain(ip).as_bytes()), canonical.to_string());
            let in_host = match canonical {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            };
            prop_assert_eq!(text(IpText::host(ip).as_bytes()), in_host);
        }
    }
}
