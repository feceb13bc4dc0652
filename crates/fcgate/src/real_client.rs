//! Who the real client is when fcgate runs behind a load balancer or reverse proxy: the peers
//! whose forwarding headers are believed (`trusted_proxies`) and what `X-Forwarded-For` or
//! `Forwarded` (RFC 7239) then say, as nginx's realip module does with `set_real_ip_from`,
//! `real_ip_header` and `real_ip_recursive on`, and Caddy with `trusted_proxies`. Pure: the
//! caller hands in the peer's address and the request's headers, and logs what [`resolve`] found.
//!
//! The rule: a peer outside `trusted_proxies` is the client, whatever headers it sent. From a
//! trusted peer, the header's entries (all its lines, in order, as one comma-separated list) are
//! read from the right, the end the nearest proxy wrote: a trusted address is one more proxy and
//! the walk goes on, the first untrusted address is the client, and when every address is
//! trusted the leftmost is. A malformed entry stops the walk and the client is the last address
//! believed, the one to its right (or the peer): what lies beyond it was relayed by something
//! that does not write well-formed headers, so none of it is believed. The work is bounded: at
//! most [`MAX_HOPS`] entries, and a header of at most [`MAX_HEADER_BYTES`].
//!
//! Hand-written: no established crate does nginx's walk (the young ones that walk these headers
//! choose differently on a malformed entry, or read both headers at once), and it is short;
//! ipnet does the CIDR matching.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED};
use ipnet::IpNet;

/// The most entries examined, counted from the right; one more is treated as malformed.
pub const MAX_HOPS: usize = 32;

/// The longest header, all its lines together, that is parsed at all.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The longest address an entry can hold: `[ffff:…:255.255.255.255]:65535` is 53 bytes, so
/// anything longer is malformed without being parsed.
const MAX_ADDRESS_BYTES: usize = 64;

/// How much of a malformed entry [`Resolution::Malformed`] keeps for the log.
const MAX_EXCERPT_BYTES: usize = 64;

/// `trusted_proxies`: the peers whose forwarding headers are believed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// A `trusted_proxies` entry that is neither an address nor a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`trusted_proxies` entry `{entry}` is neither an IP address nor a CIDR block")]
pub struct TrustedProxyError {
    /// The entry as configured.
    pub entry: String,
}

impl TrustedProxies {
    /// Parses config entries: CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or single addresses
    /// (`192.0.2.7`, `::1`). Host bits after the prefix are dropped (`192.0.2.7/24` is
    /// `192.0.2.0/24`), as nginx's `set_real_ip_from` does.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, TrustedProxyError> {
        let nets = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                parse_net(entry).ok_or_else(|| TrustedProxyError {
                    entry: entry.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// Whether no peer is trusted: forwarding headers are then always ignored.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, how a
    /// dual-stack socket shows an IPv4 peer) matches the IPv4 blocks too; a plain IPv4 address
    /// does not match IPv6 blocks, so `::/0` does not quietly trust all of IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let as_ipv4 = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .any(|net| net.contains(&ip) || as_ipv4.is_some_and(|mapped| net.contains(&mapped)))
    }
}

/// One `trusted_proxies` entry. The address goes through std's parser rather than ipnet's, which
/// accepts leading zeros (`010.0.0.1`, octal to some tools); ipnet then holds the block.
fn parse_net(entry: &str) -> Option<IpNet> {
    let Some((addr, prefix_len)) = entry.split_once('/') else {
        return entry.parse::<IpAddr>().ok().map(IpNet::from);
    };
    let addr = addr.parse::<IpAddr>().ok()?;
    // `u8::from_str` would take `+8`.
    if prefix_len.is_empty() || prefix_len.len() > 3 || !is_all_digits(prefix_len.as_bytes()) {
        return None;
    }
    let prefix_len = prefix_len.parse::<u8>().ok()?;
    IpNet::new(addr, prefix_len).ok().map(|net| net.trunc())
}

/// `real_ip_header`: which forwarding header names the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RealIpHeader {
    /// `X-Forwarded-For`, with `X-Forwarded-Proto` for the scheme: what nearly every load
    /// balancer sends.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), with each element's `proto=` for the scheme.
    Forwarded,
}

impl RealIpHeader {
    /// The setting's value, `X-Forwarded-For` or `Forwarded` in any case; `None` for anything else.
    pub fn from_setting(text: &str) -> Option<RealIpHeader> {
        if text.eq_ignore_ascii_case("x-forwarded-for") {
            Some(RealIpHeader::XForwardedFor)
        } else if text.eq_ignore_ascii_case("forwarded") {
            Some(RealIpHeader::Forwarded)
        } else {
            None
        }
    }

    /// The header's name as the setting spells it, for logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RealIpHeader::XForwardedFor => "X-Forwarded-For",
            RealIpHeader::Forwarded => "Forwarded",
        }
    }

    fn header_name(self) -> HeaderName {
        match self {
            RealIpHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            RealIpHeader::Forwarded => FORWARDED,
        }
    }
}

/// What the forwarding headers of a request from a trusted peer say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealClient {
    /// The client address: the first untrusted hop from the right; its port when the header
    /// gives one, else 0 (the peer's own port when the client is the peer).
    pub addr: SocketAddr,
    /// Whether the client reached the first proxy over TLS, when the headers say
    /// (`X-Forwarded-Proto`, or the client's `Forwarded` element's `proto=`); `None` when they
    /// do not.
    pub https: Option<bool>,
}

/// Why [`resolve`] stopped believing the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformation {
    /// An entry that is not an address (in `Forwarded`: an element that is not well-formed, or
    /// whose `for=` is missing, `unknown` or obfuscated).
    BadEntry,
    /// More than [`MAX_HOPS`] entries: the first one past the bound.
    TooManyHops,
    /// The header, all its lines together, is longer than [`MAX_HEADER_BYTES`]: nothing parsed.
    TooLong,
}

impl fmt::Display for Malformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformation::BadEntry => f.write_str("malformed entry"),
            Malformation::TooManyHops => write!(f, "more than {MAX_HOPS} entries"),
            Malformation::TooLong => write!(f, "header longer than {MAX_HEADER_BYTES} bytes"),
        }
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The peer is not a trusted proxy: its headers are ignored and it is the client.
    Untrusted,
    /// A trusted peer sent no usable header (none, or only empty entries): it is the client.
    NoHeader,
    /// The client the header names.
    Client(RealClient),
    /// The walk stopped at a malformed entry, or at a bound: the client is the last address
    /// believed (the peer when the rightmost entry is the bad one). Worth one log line.
    Malformed {
        /// The last address believed, right of the bad entry.
        client: RealClient,
        /// The bad entry (the start of the header for [`Malformation::TooLong`]), cut to about
        /// 64 bytes, invalid UTF-8 replaced.
        bad: String,
        /// What was wrong.
        reason: Malformation,
    },
}

impl Resolution {
    /// The client the header names, malformed or not; `None` when the peer is the client.
    pub fn client(&self) -> Option<RealClient> {
        match self {
            Resolution::Client(client) | Resolution::Malformed { client, .. } => Some(*client),
            Resolution::Untrusted | Resolution::NoHeader => None,
        }
    }
}

/// Finds the real client of a request that came from `peer` (module docs: the rule).
pub fn resolve(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
    header: RealIpHeader,
) -> Resolution {
    if !trusted.contains(peer.ip()) {
        return Resolution::Untrusted;
    }
    let lines = headers.get_all(header.header_name());
    // In Forwarded mode the scheme is the client element's own `proto=`; the peer has none.
    let peer_https = match header {
        RealIpHeader::XForwardedFor => forwarded_proto(headers),
        RealIpHeader::Forwarded => None,
    };
    let peer_client = RealClient {
        addr: peer,
        https: peer_https,
    };
    let mut total_len = 0usize;
    for line in &lines {
        total_len = total_len.saturating_add(line.len());
        if total_len > MAX_HEADER_BYTES {
            let first = lines.iter().next().map(HeaderValue::as_bytes);
            return Resolution::Malformed {
                client: peer_client,
                bad: excerpt(first.unwrap_or_default()),
                reason: Malformation::TooLong,
            };
        }
    }
    // The last line is the rightmost part of the list: walk the lines backwards.
    match header {
        RealIpHeader::XForwardedFor => {
            let entries = lines
                .iter()
                .rev()
                .flat_map(|line| line.as_bytes().rsplit(|&byte| byte == b','));
            walk(peer_client, entries, trusted, |entry| {
                parse_xff_entry(entry).map(|addr| RealClient {
                    addr,
                    https: peer_https,
                })
            })
        }
        RealIpHeader::Forwarded => {
            let elements = lines
                .iter()
                .rev()
                .flat_map(|line| ElementsFromRight::new(line.as_bytes()));
            walk(peer_client, elements, trusted, parse_forwarded_element)
        }
    }
}

/// The walk itself, shared by both headers: `entries` come from the right, `parse` turns one
/// into the hop it names or `None` when it is malformed.
fn walk<'a>(
    peer: RealClient,
    entries: impl Iterator<Item = &'a [u8]>,
    trusted: &TrustedProxies,
    parse: impl Fn(&[u8]) -> Option<RealClient>,
) -> Resolution {
    let mut candidate = peer;
    let mut hops = 0;
    for entry in entries {
        let entry = trim_blanks(entry);
        // `a,,b` and a trailing comma: nginx skips empty entries, and so does this.
        if entry.is_empty() {
            continue;
        }
        hops += 1;
        let malformed = |reason| Resolution::Malformed {
            client: candidate,
            bad: excerpt(entry),
            reason,
        };
        if hops > MAX_HOPS {
            return malformed(Malformation::TooManyHops);
        }
        let Some(hop) = parse(entry) else {
            return malformed(Malformation::BadEntry);
        };
        if !trusted.contains(hop.addr.ip()) {
            return Resolution::Client(hop);
        }
        candidate = hop;
    }
    if hops == 0 {
        Resolution::NoHeader
    } else {
        // Every entry was a trusted proxy: the leftmost is as far as the header goes.
        Resolution::Client(candidate)
    }
}

/// `X-Forwarded-Proto`'s rightmost value. Rightmost because a proxy that finds the header
/// already there (sent by the client, or by a proxy before it) may append its own value rather
/// than replace it: the nearest trusted proxy's value is the last, anything left of it may be the
/// client's own claim.
fn forwarded_proto(headers: &HeaderMap) -> Option<bool> {
    let lines = headers.get_all(HeaderName::from_static("x-forwarded-proto"));
    let rightmost = lines
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&byte| byte == b','))
        .map(trim_blanks)
        .find(|value| !value.is_empty())?;
    scheme_is_https(rightmost)
}

/// `https` is `Some(true)`, `http` `Some(false)` (any case); another scheme says nothing about TLS.
fn scheme_is_https(scheme: &[u8]) -> Option<bool> {
    if scheme.eq_ignore_ascii_case(b"https") {
        Some(true)
    } else if scheme.eq_ignore_ascii_case(b"http") {
        Some(false)
    } else {
        None
    }
}

/// One `X-Forwarded-For` entry, trimmed: `v4`, `v6`, `[v6]`, `v4:port` or `[v6]:port`.
fn parse_xff_entry(entry: &[u8]) -> Option<SocketAddr> {
    if entry.len() > MAX_ADDRESS_BYTES {
        return None;
    }
    parse_node(std::str::from_utf8(entry).ok()?, BareIpv6::Allowed)
}

/// Whether an IPv6 address may stand without brackets, as it may in `X-Forwarded-For` but not
/// in `Forwarded` (RFC 7239 §6: "[" IPv6address "]").
#[derive(Clone, Copy, PartialEq, Eq)]
enum BareIpv6 {
    Allowed,
    Refused,
}

/// An address with an optional port. Anything else, `unknown`, RFC 7239's obfuscated
/// identifiers (`_hidden`, `:_port`) and host names included, cannot be located and is `None`.
fn parse_node(text: &str, bare_ipv6: BareIpv6) -> Option<SocketAddr> {
    if let Some(bracketed) = text.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']')?;
        let v6 = v6.parse::<Ipv6Addr>().ok()?;
        let port = if after.is_empty() {
            0
        } else {
            parse_port(after.strip_prefix(':')?)?
        };
        return Some(SocketAddr::new(IpAddr::V6(v6), port));
    }
    if let Ok(v4) = text.parse::<Ipv4Addr>() {
        return Some(SocketAddr::new(IpAddr::V4(v4), 0));
    }
    if bare_ipv6 == BareIpv6::Allowed {
        if let Ok(v6) = text.parse::<Ipv6Addr>() {
            return Some(SocketAddr::new(IpAddr::V6(v6), 0));
        }
    }
    // A bare IPv6 address with a port would be ambiguous: only IPv4 takes one unbracketed.
    let (v4, port) = text.split_once(':')?;
    Some(SocketAddr::new(
        IpAddr::V4(v4.parse::<Ipv4Addr>().ok()?),
        parse_port(port)?,
    ))
}

/// 1 to 65535 in plain digits: `u16::from_str` would take `+80`, and port 0 is no port (nginx
/// refuses it too).
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !is_all_digits(text.as_bytes()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

fn is_all_digits(text: &[u8]) -> bool {
    text.iter().all(u8::is_ascii_digit)
}

/// A `Forwarded` line's elements, from the right. Splitting from the right rather than parsing
/// from the left keeps the elements proxies appended readable whatever the client put on the
/// left: an unclosed quote there would otherwise swallow every comma after it, and with them
/// the entries that name the client.
struct ElementsFromRight<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> ElementsFromRight<'a> {
    fn new(line: &'a [u8]) -> Self {
        ElementsFromRight { rest: Some(line) }
    }
}

impl<'a> Iterator for ElementsFromRight<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let mut in_quotes = false;
        for (index, &byte) in rest.iter().enumerate().rev() {
            let (left, right) = rest.split_at(index);
            match byte {
                // Seen from the right, a quote outside a quoted-string closes one.
                b'"' if !in_quotes => in_quotes = true,
                // Inside, a quote ends the string (opens it, read left to right) unless an odd
                // run of backslashes escapes it: `\\` is an escaped backslash, `\"` a quote.
                b'"' => {
                    let backslashes = left.iter().rev().take_while(|&&b| b == b'\\').count();
                    if backslashes % 2 == 0 {
                        in_quotes = false;
                    }
                }
                b',' if !in_quotes => {
                    self.rest = Some(left);
                    return Some(right.get(1..).unwrap_or_default());
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// A parameter's value as written: a token, or the inside of a quoted-string, still escaped.
#[derive(Clone, Copy)]
enum ParamValue<'a> {
    Token(&'a [u8]),
    Quoted(&'a [u8]),
}

/// One `Forwarded` element, trimmed: `pair *( ";" pair )` with `pair = token "=" value`. Its
/// `for=` must be a locatable address, its `proto=` sets `https`, other parameters are checked
/// for syntax and otherwise ignored. Strict, as RFC 7239 is: an IPv6 node must be quoted and
/// bracketed (`for="[2001:db8::1]"`; `[` and `:` are not token characters), no parameter may
/// appear twice. nginx has no lenient precedent to follow (its realip module does not parse
/// `Forwarded` at all); the one leniency is blanks around `;`, which some proxies write and
/// which cannot change what an element means.
fn parse_forwarded_element(element: &[u8]) -> Option<RealClient> {
    let mut addr = None;
    let mut https = None;
    let mut seen = SeenParams::default();
    let mut rest = element;
    loop {
        rest = trim_blanks_start(rest);
        // Empty pairs (`;;`, a trailing `;`) are allowed by the grammar.
        if let Some(after) = rest.strip_prefix(b";") {
            rest = after;
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let (name, after_name) = take_token(rest);
        if name.is_empty() {
            return None;
        }
        let after_equals = after_name.strip_prefix(b"=")?;
        let (value, after_value) = take_value(after_equals)?;
        if name.eq_ignore_ascii_case(b"for") {
            seen.first(SeenParam::For)?;
            addr = Some(parse_forwarded_node(value)?);
        } else if name.eq_ignore_ascii_case(b"proto") {
            seen.first(SeenParam::Proto)?;
            https = match value {
                ParamValue::Token(token) => scheme_is_https(token),
                ParamValue::Quoted(quoted) => {
                    unescape(quoted).and_then(|scheme| scheme_is_https(scheme.as_bytes()))
                }
            };
        } else if name.eq_ignore_ascii_case(b"by") {
            seen.first(SeenParam::By)?;
        } else if name.eq_ignore_ascii_case(b"host") {
            seen.first(SeenParam::Host)?;
        }
        rest = trim_blanks_start(after_value);
        if !rest.is_empty() && !rest.starts_with(b";") {
            return None;
        }
    }
    Some(RealClient { addr: addr?, https })
}

/// The parameters RFC 7239 defines, each allowed once per element (§4): a second `for=` would
/// leave the client ambiguous.
#[derive(Clone, Copy)]
enum SeenParam {
    For,
    Proto,
    By,
    Host,
}

#[derive(Default)]
struct SeenParams {
    seen: [bool; 4],
}

impl SeenParams {
    /// `Some` the first time `param` is seen, `None` after.
    fn first(&mut self, param: SeenParam) -> Option<()> {
        let seen = self.seen.get_mut(param as usize)?;
        if *seen {
            return None;
        }
        *seen = true;
        Some(())
    }
}

/// A `for=` node: unquoted only IPv4 can stand (`unknown` and `_hidden` are tokens too, and
/// fail here); quoted, an address with an optional port.
fn parse_forwarded_node(value: ParamValue<'_>) -> Option<SocketAddr> {
    match value {
        ParamValue::Token(token) => {
            if token.len() > MAX_ADDRESS_BYTES {
                return None;
            }
            parse_node(std::str::from_utf8(token).ok()?, BareIpv6::Refused)
        }
        ParamValue::Quoted(quoted) => parse_node(unescape(quoted)?.as_str()?, BareIpv6::Refused),
    }
}

/// A quoted-string's content with its escapes removed, on the stack: anything longer than an
/// address is not one, so a longer string is refused rather than copied.
struct Unescaped {
    bytes: [u8; MAX_ADDRESS_BYTES],
    len: usize,
}

impl Unescaped {
    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }
}

fn unescape(quoted: &[u8]) -> Option<Unescaped> {
    let mut out = Unescaped {
        bytes: [0; MAX_ADDRESS_BYTES],
        len: 0,
    };
    let mut bytes = quoted.iter();
    while let Some(&byte) = bytes.next() {
        // `take_value` checked that every backslash escapes something.
        let byte = if byte == b'\\' { *bytes.next()? } else { byte };
        *out.bytes.get_mut(out.len)? = byte;
        out.len += 1;
    }
    Some(out)
}

/// Splits a value (token or quoted-string) off the front of `input`.
fn take_value(input: &[u8]) -> Option<(ParamValue<'_>, &[u8])> {
    match input.strip_prefix(b"\"") {
        Some(quoted) => {
            let (inside, rest) = take_quoted(quoted)?;
            Some((ParamValue::Quoted(inside), rest))
        }
        None => {
            let (token, rest) = take_token(input);
            if token.is_empty() {
                return None;
            }
            Some((ParamValue::Token(token), rest))
        }
    }
}

/// Splits a quoted-string's content (RFC 9110 §5.6.4: qdtext and quoted-pairs) off the front of
/// `input`, which starts just after the opening quote, and drops the closing one.
fn take_quoted(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut escaped = false;
    for (index, &byte) in input.iter().enumerate() {
        if escaped {
            if !is_quoted_pair_char(byte) {
                return None;
            }
            escaped = false;
        } else if byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            let (inside, closing_and_rest) = input.split_at(index);
            return Some((inside, closing_and_rest.get(1..).unwrap_or_default()));
        } else if !is_qdtext(byte) {
            return None;
        }
    }
    None
}

/// Splits the longest run of token characters off the front of `input`.
fn take_token(input: &[u8]) -> (&[u8], &[u8]) {
    let len = input
        .iter()
        .position(|&byte| !is_tchar(byte))
        .unwrap_or(input.len());
    input.split_at(len)
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// RFC 9110 §5.6.4 qdtext: HTAB, SP, visible ASCII but `"` and `\`, obs-text.
fn is_qdtext(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// What a quoted-pair may escape: HTAB, SP, visible ASCII, obs-text.
fn is_quoted_pair_char(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

fn is_blank(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t')
}

fn trim_blanks_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| !is_blank(byte))
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn trim_blanks(bytes: &[u8]) -> &[u8] {
    let bytes = trim_blanks_start(bytes);
    let end = bytes
        .iter()
        .rposition(|byte| !is_blank(byte))
        .map_or(0, |last| last + 1);
    bytes.get(..end).unwrap_or_default()
}

/// The start of `bytes` for a log line: bounded, so a long header costs no more than a short one.
fn excerpt(bytes: &[u8]) -> String {
    let kept = bytes.get(..MAX_EXCERPT_BYTES).unwrap_or(bytes);
    let mut text = String::from_utf8_lossy(kept).into_owned();
    if kept.len() < bytes.len() {
        text.push('…');
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The load balancer's block; fcgate's peer is in it.
    const LB_NET: &str = "10.0.0.0/8";
    const LB: &str = "10.0.0.1:40000";
    const CLIENT: &str = "203.0.113.7";

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    fn lb_trusted() -> TrustedProxies {
        trusted(&[LB_NET])
    }

    fn sock(text: &str) -> SocketAddr {
        text.parse()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
            .unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn header_map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn xff_lines(lines: &[&str]) -> Resolution {
        let fields: Vec<_> = lines
            .iter()
            .map(|line| ("x-forwarded-for", *line))
            .collect();
        resolve(
            sock(LB),
            &header_map(&fields),
            &lb_trusted(),
            RealIpHeader::XForwardedFor,
        )
    }

    fn xff(value: &str) -> Resolution {
        xff_lines(&[value])
    }

    fn fwd_lines(lines: &[&str]) -> Resolution {
        let fields: Vec<_> = lines.iter().map(|line| ("forwarded", *line)).collect();
        resolve(
            sock(LB),
            &header_map(&fields),
            &lb_trusted(),
            RealIpHeader::Forwarded,
        )
    }

    fn fwd(value: &str) -> Resolution {
        fwd_lines(&[value])
    }

    fn client(addr: &str, https: Option<bool>) -> Resolution {
        Resolution::Client(RealClient {
            addr: sock(addr),
            https,
        })
    }

    fn malformed(addr: &str, https: Option<bool>, bad: &str) -> Resolution {
        Resolution::Malformed {
            client: RealClient {
                addr: sock(addr),
                https,
            },
            bad: bad.to_owned(),
            reason: Malformation::BadEntry,
        }
    }

    // TrustedProxies

    #[test]
    fn trusted_proxies_take_blocks_and_single_addresses() {
        let proxies = trusted(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::1"]);
        assert!(proxies.contains(ip("10.255.0.1")));
        assert!(proxies.contains(ip("2001:db8:ffff::1")));
        assert!(proxies.contains(ip("192.0.2.7")));
        assert!(!proxies.contains(ip("192.0.2.8")));
        assert!(proxies.contains(ip("::1")));
        assert!(!proxies.contains(ip("::2")));
        assert!(!proxies.contains(ip("11.0.0.1")));
        assert!(!proxies.contains(ip("2001:db9::1")));
        assert!(!proxies.is_empty());
    }

    #[test]
    fn trusted_proxies_error_names_the_bad_entry() {
        let error = TrustedProxies::parse(&["10.0.0.0/8", "10.0.0.0/33"]).unwrap_err();
        assert_eq!(error.entry, "10.0.0.0/33");
        assert_eq!(
            error.to_string(),
            "`trusted_proxies` entry `10.0.0.0/33` is neither an IP address nor a CIDR block"
        );
    }

    #[test]
    fn trusted_proxies_refuse_what_is_not_an_address_or_block() {
        for entry in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            " 10.0.0.0/8",
            " 192.0.2.7",
            "192.0.2.7 ",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
            "010.0.0.1",
            "10.0.0",
            "[::1]",
            "fe80::1%eth0",
        ] {
            let result = TrustedProxies::parse(&[entry]);
            assert_eq!(
                result,
                Err(TrustedProxyError {
                    entry: entry.to_owned()
                }),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn trusted_proxies_drop_host_bits() {
        let proxies = trusted(&["192.0.2.77/24"]);
        assert!(proxies.contains(ip("192.0.2.1")));
        assert!(!proxies.contains(ip("192.0.3.1")));
        assert_eq!(proxies, trusted(&["192.0.2.0/24"]));
    }

    #[test]
    fn no_trusted_proxies_trust_nothing() {
        let proxies = TrustedProxies::parse::<&str>(&[]).unwrap();
        assert!(proxies.is_empty());
        assert!(!proxies.contains(ip("10.0.0.1")));
        assert_eq!(proxies, TrustedProxies::default());
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_blocks() {
        let proxies = trusted(&["10.0.0.0/8"]);
        assert!(proxies.contains(ip("::ffff:10.1.2.3")));
        assert!(!proxies.contains(ip("::ffff:11.1.2.3")));
        // A v4-compatible address (deprecated ::a.b.c.d) is not a mapped one.
        assert!(!proxies.contains(ip("::10.1.2.3")));
    }

    #[test]
    fn ipv6_blocks_do_not_trust_plain_ipv4() {
        let proxies = trusted(&["::/0"]);
        assert!(proxies.contains(ip("2001:db8::1")));
        assert!(proxies.contains(ip("::ffff:10.1.2.3")));
        assert!(!proxies.contains(ip("10.1.2.3")));
    }

    // RealIpHeader

    #[test]
    fn real_ip_header_setting_in_any_case() {
        for text in ["X-Forwarded-For", "x-forwarded-for", "X-FORWARDED-FOR"] {
            assert_eq!(
                RealIpHeader::from_setting(text),
                Some(RealIpHeader::XForwardedFor)
            );
        }
        for text in ["Forwarded", "forwarded", "FORWARDED"] {
            assert_eq!(
                RealIpHeader::from_setting(text),
                Some(RealIpHeader::Forwarded)
            );
        }
        for text in ["", "X-Real-IP", "X-Forwarded-For ", "forwarded-for"] {
            assert_eq!(RealIpHeader::from_setting(text), None, "{text:?}");
        }
        assert_eq!(RealIpHeader::default(), RealIpHeader::XForwardedFor);
        assert_eq!(
            RealIpHeader::from_setting(RealIpHeader::Forwarded.as_str()),
            Some(RealIpHeader::Forwarded)
        );
        assert_eq!(
            RealIpHeader::from_setting(RealIpHeader::XForwardedFor.as_str()),
            Some(RealIpHeader::XForwardedFor)
        );
    }

    // The walk, X-Forwarded-For

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let headers = header_map(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=198.51.100.1;proto=https"),
        ]);
        for header in [RealIpHeader::XForwardedFor, RealIpHeader::Forwarded] {
            let outcome = resolve(sock("192.0.2.1:1234"), &headers, &lb_trusted(), header);
            assert_eq!(outcome, Resolution::Untrusted);
            assert_eq!(outcome.client(), None);
        }
    }

    #[test]
    fn nothing_trusted_means_every_peer_is_untrusted() {
        let headers = header_map(&[("x-forwarded-for", CLIENT)]);
        let outcome = resolve(
            sock(LB),
            &headers,
            &TrustedProxies::default(),
            RealIpHeader::XForwardedFor,
        );
        assert_eq!(outcome, Resolution::Untrusted);
    }

    #[test]
    fn trusted_peer_without_the_header() {
        assert_eq!(xff_lines(&[]), Resolution::NoHeader);
        assert_eq!(fwd_lines(&[]), Resolution::NoHeader);
        // The other header does not stand in for the configured one.
        let headers = header_map(&[("forwarded", "for=198.51.100.1")]);
        let outcome = resolve(
            sock(LB),
            &headers,
            &lb_trusted(),
            RealIpHeader::XForwardedFor,
        );
        assert_eq!(outcome, Resolution::NoHeader);
    }

    #[test]
    fn only_empty_entries_are_no_header() {
        assert_eq!(xff(""), Resolution::NoHeader);
        assert_eq!(xff(" , ,\t,"), Resolution::NoHeader);
        assert_eq!(xff_lines(&["", " ,"]), Resolution::NoHeader);
        assert_eq!(fwd(" , "), Resolution::NoHeader);
    }

    #[test]
    fn single_hop() {
        let outcome = xff(CLIENT);
        assert_eq!(outcome, client(CLIENT, None));
        assert_eq!(outcome.client().map(|c| c.addr), Some(sock(CLIENT)));
    }

    #[test]
    fn multi_hop_through_trusted_proxies() {
        assert_eq!(xff("203.0.113.7, 10.0.0.5, 10.0.0.6"), client(CLIENT, None));
    }

    #[test]
    fn spoofed_leftmost_entry_is_not_believed() {
        // The client sent `X-Forwarded-For: 198.51.100.66`; the load balancer appended the
        // address it saw.
        assert_eq!(xff("198.51.100.66, 203.0.113.7"), client(CLIENT, None));
        assert_eq!(
            xff("198.51.100.66, 203.0.113.7, 10.0.0.5"),
            client(CLIENT, None)
        );
    }

    #[test]
    fn every_entry_trusted_means_the_leftmost() {
        assert_eq!(
            xff("10.0.0.9, 10.0.0.5, 10.0.0.6"),
            client("10.0.0.9", None)
        );
        assert_eq!(xff("10.0.0.9:1234"), client("10.0.0.9:1234", None));
    }

    #[test]
    fn malformed_rightmost_entry_leaves_the_peer() {
        let outcome = xff("203.0.113.7, unknown");
        assert_eq!(outcome, malformed(LB, None, "unknown"));
        assert_eq!(outcome.client().map(|c| c.addr), Some(sock(LB)));
    }

    #[test]
    fn malformed_entry_in_the_middle_leaves_the_hop_to_its_right() {
        assert_eq!(
            xff("203.0.113.7, not-an-ip, 10.0.0.5, 10.0.0.6"),
            malformed("10.0.0.5", None, "not-an-ip")
        );
    }

    #[test]
    fn malformed_entry_left_of_the_client_is_never_read() {
        assert_eq!(xff("garbage, 203.0.113.7, 10.0.0.5"), client(CLIENT, None));
        assert_eq!(xff("\"\"\"[, 203.0.113.7"), client(CLIENT, None));
    }

    #[test]
    fn entries_with_ports() {
        assert_eq!(xff("1.2.3.4:55"), client("1.2.3.4:55", None));
        assert_eq!(xff("[::1]:80"), client("[::1]:80", None));
        assert_eq!(xff("[2001:db8::1]"), client("2001:db8::1", None));
        assert_eq!(xff("1.2.3.4:65535"), client("1.2.3.4:65535", None));
        // A trusted hop's port goes with it when it is the leftmost.
        assert_eq!(
            xff("10.0.0.9:8080, 10.0.0.5"),
            client("10.0.0.9:8080", None)
        );
    }

    #[test]
    fn ipv6_entries() {
        assert_eq!(xff("2001:db8::1"), client("2001:db8::1", None));
        assert_eq!(xff("2001:db8::1, 10.0.0.5"), client("2001:db8::1", None));
        assert_eq!(
            xff("::ffff:203.0.113.7"),
            client("::ffff:203.0.113.7", None)
        );
    }

    #[test]
    fn malformed_xff_entries() {
        for bad in [
            "unknown",
            "example.com",
            "1.2.3",
            "01.2.3.4",
            "1.2.3.4:0",
            "1.2.3.4:65536",
            "1.2.3.4:+80",
            "1.2.3.4:",
            "1.2.3.4:80:80",
            "[1.2.3.4]",
            "[::1",
            "[::1]:",
            "[::1]80",
            "[::1]:0",
            "fe80::1%eth0",
            "1.2.3.4 5.6.7.8",
            "_hidden",
            "\"1.2.3.4\"",
            "for=1.2.3.4",
        ] {
            assert_eq!(xff(bad), malformed(LB, None, bad), "{bad:?}");
        }
    }

    #[test]
    fn overlong_entry_is_malformed_and_cut_for_the_log() {
        // 65 bytes of an address-like string: refused before parsing.
        let long = format!("{}1", "0".repeat(64));
        let Resolution::Malformed {
            client,
            bad,
            reason,
        } = xff(&long)
        else {
            panic!("not malformed");
        };
        assert_eq!(client.addr, sock(LB));
        assert_eq!(reason, Malformation::BadEntry);
        assert_eq!(bad, format!("{}…", "0".repeat(64)));
    }

    #[test]
    fn non_utf8_entry_is_malformed() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.7, 1.2.3.4\xff").unwrap(),
        );
        let outcome = resolve(
            sock(LB),
            &headers,
            &lb_trusted(),
            RealIpHeader::XForwardedFor,
        );
        assert_eq!(outcome, malformed(LB, None, "1.2.3.4\u{fffd}"));
    }

    #[test]
    fn several_header_lines_are_one_list_in_order() {
        assert_eq!(
            xff_lines(&["203.0.113.7", "10.0.0.5"]),
            client(CLIENT, None)
        );
        assert_eq!(
            xff_lines(&["198.51.100.66, 203.0.113.7", "10.0.0.5, 10.0.0.6"]),
            client(CLIENT, None)
        );
        // The last line is the rightmost: it decides.
        assert_eq!(
            xff_lines(&["10.0.0.5", "203.0.113.7"]),
            client(CLIENT, None)
        );
        assert_eq!(
            xff_lines(&["198.51.100.66", "203.0.113.7"]),
            client(CLIENT, None)
        );
        assert_eq!(
            xff_lines(&["203.0.113.7", "bad", "10.0.0.5"]),
            malformed("10.0.0.5", None, "bad")
        );
    }

    #[test]
    fn empty_entries_between_commas_are_skipped() {
        assert_eq!(xff("203.0.113.7,, ,\t,10.0.0.5,"), client(CLIENT, None));
        assert_eq!(xff(",10.0.0.9"), client("10.0.0.9", None));
    }

    #[test]
    fn ipv4_mapped_peer_is_trusted_by_an_ipv4_block() {
        let headers = header_map(&[("x-forwarded-for", "203.0.113.7, ::ffff:10.0.0.5")]);
        let outcome = resolve(
            sock("[::ffff:10.0.0.1]:443"),
            &headers,
            &lb_trusted(),
            RealIpHeader::XForwardedFor,
        );
        assert_eq!(outcome, client(CLIENT, None));
    }

    // X-Forwarded-Proto

    fn xff_with_proto(protos: &[&str]) -> Option<bool> {
        let mut fields = vec![("x-forwarded-for", CLIENT)];
        fields.extend(protos.iter().map(|proto| ("x-forwarded-proto", *proto)));
        let outcome = resolve(
            sock(LB),
            &header_map(&fields),
            &lb_trusted(),
            RealIpHeader::XForwardedFor,
        );
        outcome.client().unwrap().https
    }

    #[test]
    fn forwarded_proto_rightmost_value_decides() {
        assert_eq!(xff_with_proto(&[]), None);
        assert_eq!(xff_with_proto(&["https"]), Some(true));
        assert_eq!(xff_with_proto(&["http"]), Some(false));
        assert_eq!(xff_with_proto(&["HTTPS"]), Some(true));
        // A client's claim on the left, the proxy's value appended on the right.
        assert_eq!(xff_with_proto(&["https, http"]), Some(false));
        assert_eq!(xff_with_proto(&["http, https"]), Some(true));
        assert_eq!(xff_with_proto(&["https", "http"]), Some(false));
        assert_eq!(xff_with_proto(&["http", "https"]), Some(true));
        assert_eq!(xff_with_proto(&["https, "]), Some(true));
        assert_eq!(xff_with_proto(&["ftp"]), None);
        assert_eq!(xff_with_proto(&["https, wss"]), None);
        assert_eq!(xff_with_proto(&[""]), None);
    }

    #[test]
    fn forwarded_proto_goes_with_every_client_the_walk_names() {
        let headers = header_map(&[
            ("x-forwarded-for", "203.0.113.7, junk, 10.0.0.5"),
            ("x-forwarded-proto", "https"),
        ]);
        let outcome = resolve(
            sock(LB),
            &headers,
            &lb_trusted(),
            RealIpHeader::XForwardedFor,
        );
        assert_eq!(outcome, malformed("10.0.0.5", Some(true), "junk"));

        let headers = header_map(&[("x-forwarded-for", "junk"), ("x-forwarded-proto", "http")]);
        let outcome = resolve(
            sock(LB),
            &headers,
            &lb_trusted(),
            RealIpHeader::XForwardedFor,
        );
        assert_eq!(outcome, malformed(LB, Some(false), "junk"));
    }

    #[test]
    fn forwarded_proto_is_not_read_in_forwarded_mode() {
        let headers = header_map(&[
            ("forwarded", "for=203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ]);
        let outcome = resolve(sock(LB), &headers, &lb_trusted(), RealIpHeader::Forwarded);
        assert_eq!(outcome, client(CLIENT, None));
        // Not for the peer either, when the walk stops on it.
        let headers = header_map(&[("forwarded", "junk"), ("x-forwarded-proto", "https")]);
        let outcome = resolve(sock(LB), &headers, &lb_trusted(), RealIpHeader::Forwarded);
        assert_eq!(outcome, malformed(LB, None, "junk"));
    }

    // Bounds

    fn trusted_chain(len: usize) -> String {
        vec!["10.0.0.5"; len].join(", ")
    }

    #[test]
    fn at_most_max_hops_entries_are_read() {
        // The client is the 32nd entry from the right: found.
        let within = format!("{CLIENT}, {}", trusted_chain(MAX_HOPS - 1));
        assert_eq!(xff(&within), client(CLIENT, None));
        // All 32 trusted: the leftmost.
        assert_eq!(xff(&trusted_chain(MAX_HOPS)), client("10.0.0.5", None));
        // The client is the 33rd: refused, and the 32nd is the last address believed.
        let beyond = format!("{CLIENT}, 10.0.0.9, {}", trusted_chain(MAX_HOPS - 1));
        assert_eq!(
            xff(&beyond),
            Resolution::Malformed {
                client: RealClient {
                    addr: sock("10.0.0.9"),
                    https: None
                },
                bad: CLIENT.to_owned(),
                reason: Malformation::TooManyHops,
            }
        );
    }

    #[test]
    fn empty_entries_do_not_count_as_hops() {
        let chain = format!("{CLIENT},,,, {}", trusted_chain(MAX_HOPS - 1));
        assert_eq!(xff(&chain), client(CLIENT, None));
    }

    #[test]
    fn forwarded_hops_are_bounded_too() {
        let proxies = vec!["for=10.0.0.5"; MAX_HOPS - 1].join(", ");
        assert_eq!(
            fwd(&format!("for={CLIENT}, {proxies}")),
            client(CLIENT, None)
        );
        let outcome = fwd(&format!("for={CLIENT}, for=10.0.0.9, {proxies}"));
        assert_eq!(
            outcome,
            Resolution::Malformed {
                client: RealClient {
                    addr: sock("10.0.0.9"),
                    https: None
                },
                bad: format!("for={CLIENT}"),
                reason: Malformation::TooManyHops,
            }
        );
    }

    /// A valid header of exactly `len` bytes: the client, then blanks, then a trusted hop.
    fn padded_xff(len: usize) -> String {
        let head = format!("{CLIENT},");
        let tail = ",10.0.0.5";
        format!("{head}{}{tail}", " ".repeat(len - head.len() - tail.len()))
    }

    #[test]
    fn header_longer_than_the_bound_is_not_parsed() {
        let at_bound = padded_xff(MAX_HEADER_BYTES);
        assert_eq!(at_bound.len(), MAX_HEADER_BYTES);
        assert_eq!(xff(&at_bound), client(CLIENT, None));

        let beyond = padded_xff(MAX_HEADER_BYTES + 1);
        let Resolution::Malformed {
            client,
            bad,
            reason,
        } = xff(&beyond)
        else {
            panic!("not malformed");
        };
        assert_eq!(client.addr, sock(LB));
        assert_eq!(reason, Malformation::TooLong);
        assert!(bad.starts_with(CLIENT));
        assert!(bad.len() <= MAX_EXCERPT_BYTES + '…'.len_utf8());
    }

    #[test]
    fn header_bound_counts_every_line() {
        let half = padded_xff(MAX_HEADER_BYTES / 2 + 1);
        let Resolution::Malformed { reason, .. } = xff_lines(&[half.as_str(), half.as_str()])
        else {
            panic!("not malformed");
        };
        assert_eq!(reason, Malformation::TooLong);
        let outcome = fwd_lines(&["x".repeat(MAX_HEADER_BYTES).as_str(), "for=203.0.113.7"]);
        let Resolution::Malformed { client, reason, .. } = outcome else {
            panic!("not malformed");
        };
        assert_eq!((client.addr, reason), (sock(LB), Malformation::TooLong));
    }

    #[test]
    fn malformation_reads_well_in_a_log_line() {
        assert_eq!(Malformation::BadEntry.to_string(), "malformed entry");
        assert_eq!(
            Malformation::TooManyHops.to_string(),
            "more than 32 entries"
        );
        assert_eq!(
            Malformation::TooLong.to_string(),
            "header longer than 8192 bytes"
        );
    }

    // Forwarded

    #[test]
    fn forwarded_single_element() {
        assert_eq!(fwd("for=203.0.113.7"), client(CLIENT, None));
        assert_eq!(fwd("for=\"203.0.113.7\""), client(CLIENT, None));
        assert_eq!(
            fwd("for=203.0.113.7;proto=https"),
            client(CLIENT, Some(true))
        );
        assert_eq!(
            fwd("proto=http;for=203.0.113.7;by=10.0.0.1;host=example.com"),
            client(CLIENT, Some(false))
        );
    }

    #[test]
    fn forwarded_ports_and_ipv6() {
        assert_eq!(
            fwd("for=\"203.0.113.7:8080\""),
            client("203.0.113.7:8080", None)
        );
        assert_eq!(fwd("for=\"[2001:db8::1]\""), client("2001:db8::1", None));
        assert_eq!(
            fwd("For=\"[2001:db8:cafe::17]:4711\""),
            client("[2001:db8:cafe::17]:4711", None)
        );
    }

    #[test]
    fn forwarded_ipv6_must_be_quoted_and_bracketed() {
        for bad in [
            "for=[2001:db8::1]",
            "for=2001:db8::1",
            "for=\"2001:db8::1\"",
            "for=203.0.113.7:8080",
            "for=\"[203.0.113.7]\"",
        ] {
            assert_eq!(fwd(bad), malformed(LB, None, bad), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_walk_through_trusted_proxies_takes_the_clients_proto() {
        assert_eq!(
            fwd("for=198.51.100.66;proto=http, for=203.0.113.7;proto=https, for=10.0.0.5;proto=http"),
            client(CLIENT, Some(true))
        );
        // The client's element says nothing about the scheme: no looking elsewhere.
        assert_eq!(
            fwd("for=203.0.113.7, for=10.0.0.5;proto=https"),
            client(CLIENT, None)
        );
        // All trusted: the leftmost element, its proto included.
        assert_eq!(
            fwd("for=10.0.0.9;proto=https, for=10.0.0.5;proto=http"),
            client("10.0.0.9", Some(true))
        );
    }

    #[test]
    fn forwarded_quoted_strings_with_escapes() {
        assert_eq!(
            fwd(r#"for="\[2001:db8::1\]:4711""#),
            client("[2001:db8::1]:4711", None)
        );
        assert_eq!(fwd(r#"for="\203.0.113.7""#), client(CLIENT, None));
        assert_eq!(fwd(r#"for=203.0.113.7;host="a\"b""#), client(CLIENT, None));
        assert_eq!(
            fwd(r#"for=203.0.113.7;proto="HTTPS""#),
            client(CLIENT, Some(true))
        );
        assert_eq!(
            fwd(r#"for=203.0.113.7;proto="htt\p""#),
            client(CLIENT, Some(false))
        );
    }

    #[test]
    fn forwarded_commas_and_semicolons_inside_quotes_do_not_split() {
        assert_eq!(
            fwd(r#"for=203.0.113.7;host="a,b;c", for=10.0.0.5"#),
            client(CLIENT, None)
        );
        // `\"` inside the quotes is an escaped quote, not the end of the string: the comma after
        // it is still inside.
        assert_eq!(
            fwd(r#"for=203.0.113.7;host="a\",b\\", for=10.0.0.5"#),
            client(CLIENT, None)
        );
        assert_eq!(
            fwd(r#"for=203.0.113.7;ext="x\\,y", for=10.0.0.5"#),
            client(CLIENT, None)
        );
    }

    #[test]
    fn forwarded_split_reads_backslash_runs_as_pairs() {
        // Seen from the right, the quote after `\\` is not escaped (`\\` is one escaped
        // backslash): the quoted part ends there and the comma left of it splits. The element
        // is malformed either way; the split decides which bytes are reported.
        let line = r#"for=10.0.0.9, x=\\"a, for=10.0.0.5""#;
        assert_eq!(fwd(line), malformed(LB, None, r#"x=\\"a, for=10.0.0.5""#));
    }

    #[test]
    fn quoted_strings_refuse_control_characters() {
        // HeaderValue already refuses these bytes; the grammar is checked all the same.
        assert_eq!(take_quoted(b"a\\\x7f\""), None);
        assert_eq!(take_quoted(b"a\x00\""), None);
        assert_eq!(
            take_quoted(b"a\\\"b\"rest"),
            Some((&b"a\\\"b"[..], &b"rest"[..]))
        );
        assert_eq!(take_quoted(b"unterminated\\\""), None);
    }

    #[test]
    fn forwarded_garbage_on_the_left_cannot_hide_the_proxies_elements() {
        // An unclosed quote from the client would, read left to right, swallow the rest.
        assert_eq!(fwd(r#"for="x, for=203.0.113.7"#), client(CLIENT, None));
        assert_eq!(
            fwd(r#"for="x, for=203.0.113.7, for=10.0.0.5"#),
            client(CLIENT, None)
        );
        assert_eq!(
            fwd_lines(&[r#"for="x"#, "for=203.0.113.7"]),
            client(CLIENT, None)
        );
        // A quote that the client left open on its own line stays on that line.
        assert_eq!(
            fwd_lines(&[r#"for="198.51.100.66"#, "for=10.0.0.5"]),
            malformed("10.0.0.5", None, r#"for="198.51.100.66"#)
        );
    }

    #[test]
    fn forwarded_unknown_and_obfuscated_nodes_are_malformed() {
        for bad in [
            "for=unknown",
            "for=\"unknown\"",
            "for=_hidden",
            "for=\"_hidden:1234\"",
            "for=\"203.0.113.7:_abc\"",
            "for=\"[2001:db8::1]:_abc\"",
            "for=example.com",
        ] {
            assert_eq!(fwd(bad), malformed(LB, None, bad), "{bad:?}");
        }
        // In the middle: the hop to its right, with that hop's proto.
        assert_eq!(
            fwd("for=203.0.113.7, for=unknown, for=10.0.0.5;proto=https"),
            malformed("10.0.0.5", Some(true), "for=unknown")
        );
    }

    #[test]
    fn forwarded_element_without_for_is_malformed() {
        for bad in ["proto=https", "by=10.0.0.1;host=example.com", ";", "a=b"] {
            assert_eq!(fwd(bad), malformed(LB, None, bad), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_names_are_case_insensitive() {
        assert_eq!(fwd("For=203.0.113.7"), client(CLIENT, None));
        assert_eq!(
            fwd("FOR=203.0.113.7;PROTO=HTTPS"),
            client(CLIENT, Some(true))
        );
        assert_eq!(
            fwd("fOr=203.0.113.7;Proto=Http"),
            client(CLIENT, Some(false))
        );
    }

    #[test]
    fn forwarded_syntax_errors_are_malformed() {
        for bad in [
            "for",
            "for=",
            "for 203.0.113.7",
            "=203.0.113.7",
            "for =203.0.113.7",
            "for= 203.0.113.7",
            "for=\"203.0.113.7",
            "for=\"203.0.113.7\"x",
            "for=203.0.113.7 proto=http",
            "for=203.0.113.7;for=198.51.100.1",
            "for=203.0.113.7;proto=http;proto=https",
            "for=203.0.113.7;host=a;host=b",
            "for=203.0.113.7;by=a;By=b",
            "for=203.0.113.7;host=a b",
            "for=203.0.113.7;host=(x)",
            "for=203.0.113.7;proto=https\"",
        ] {
            assert_eq!(fwd(bad), malformed(LB, None, bad), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_empty_pairs_and_blanks_around_semicolons_are_accepted() {
        assert_eq!(fwd("for=203.0.113.7;"), client(CLIENT, None));
        assert_eq!(
            fwd(";;for=203.0.113.7;;proto=https;"),
            client(CLIENT, Some(true))
        );
        assert_eq!(
            fwd("for=203.0.113.7 ; proto=https"),
            client(CLIENT, Some(true))
        );
        assert_eq!(fwd("  for=203.0.113.7\t"), client(CLIENT, None));
        // Unknown extension parameters are allowed and ignored, token or quoted.
        assert_eq!(
            fwd("for=203.0.113.7;secret=\"x;y\";v=1"),
            client(CLIENT, None)
        );
    }

    #[test]
    fn forwarded_several_lines() {
        assert_eq!(
            fwd_lines(&[
                "for=198.51.100.66, for=203.0.113.7",
                "for=10.0.0.5;proto=https"
            ]),
            client(CLIENT, None)
        );
        assert_eq!(
            fwd_lines(&["for=203.0.113.7;proto=https", "for=10.0.0.5"]),
            client(CLIENT, Some(true))
        );
    }

    #[test]
    fn forwarded_overlong_node_is_malformed() {
        let long = format!("for=\"{}\"", "1".repeat(MAX_ADDRESS_BYTES + 1));
        let Resolution::Malformed {
            client: believed,
            reason,
            ..
        } = fwd(&long)
        else {
            panic!("not malformed");
        };
        assert_eq!((believed.addr, reason), (sock(LB), Malformation::BadEntry));
        // A long value of another parameter is fine.
        let long_host = format!("for=203.0.113.7;host=\"{}\"", "h".repeat(200));
        assert_eq!(fwd(&long_host), client(CLIENT, None));
    }

    // Properties

    /// The walk written the obvious way, over a list of already-parsed addresses.
    fn model(entries: &[IpAddr], trusted: &TrustedProxies) -> Option<IpAddr> {
        let mut candidate = None;
        for &entry in entries.iter().rev() {
            candidate = Some(entry);
            if !trusted.contains(entry) {
                break;
            }
        }
        candidate
    }

    fn any_header_bytes() -> impl Strategy<Value = Vec<u8>> {
        // Mostly the bytes that matter to the parsers, with the rest of the range mixed in.
        let interesting = prop::sample::select(
            b"0123456789.:[]abcdef,;=\"\\ \tforFORproto_unknownhttps".to_vec(),
        );
        prop::collection::vec(prop_oneof![3 => interesting, 1 => any::<u8>()], 0..200)
    }

    proptest! {
        #[test]
        fn resolve_never_panics(
            lines in prop::collection::vec(any_header_bytes(), 0..4),
            proto in any_header_bytes(),
            trust_all in any::<bool>(),
        ) {
            let proxies = if trust_all {
                trusted(&["0.0.0.0/0", "::/0"])
            } else {
                lb_trusted()
            };
            for header in [RealIpHeader::XForwardedFor, RealIpHeader::Forwarded] {
                let mut headers = HeaderMap::new();
                for line in &lines {
                    if let Ok(value) = HeaderValue::from_bytes(line) {
                        headers.append(header.header_name(), value);
                    }
                }
                if let Ok(value) = HeaderValue::from_bytes(&proto) {
                    headers.append("x-forwarded-proto", value);
                }
                let outcome = resolve(sock(LB), &headers, &proxies, header);
                prop_assert_ne!(&outcome, &Resolution::Untrusted);
                if let Resolution::Malformed { bad, .. } = &outcome {
                    prop_assert!(bad.len() <= 3 * MAX_EXCERPT_BYTES + '…'.len_utf8());
                }
            }
        }

        #[test]
        fn xff_walk_matches_the_model(
            entries in prop::collection::vec(
                prop::sample::select(vec![
                    "10.0.0.5", "10.9.9.9", "203.0.113.7", "198.51.100.66", "2001:db8::1",
                    "::ffff:10.0.0.7",
                ]),
                1..MAX_HOPS,
            ),
            split_at in any::<prop::sample::Index>(),
        ) {
            let proxies = lb_trusted();
            let addrs: Vec<IpAddr> = entries.iter().map(|entry| ip(entry)).collect();
            // The same list as one line or cut into two.
            let cut = split_at.index(entries.len() + 1);
            let (left, right) = entries.split_at(cut);
            let lines: Vec<String> = [left, right]
                .iter()
                .filter(|part| !part.is_empty())
                .map(|part| part.join(", "))
                .collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let outcome = xff_lines(&lines);
            let expected = model(&addrs, &proxies).map(|ip| SocketAddr::new(ip, 0));
            prop_assert_eq!(outcome.client().map(|c| c.addr), expected);
            prop_assert!(matches!(outcome, Resolution::Client(_)));
        }

        #[test]
        fn nothing_on_the_left_hides_the_rightmost_client(
            garbage in any_header_bytes(),
            forwarded in any::<bool>(),
        ) {
            let (header, hop) = if forwarded {
                (RealIpHeader::Forwarded, format!("for={CLIENT}"))
            } else {
                (RealIpHeader::XForwardedFor, CLIENT.to_owned())
            };
            let mut line = garbage;
            line.extend_from_slice(b", ");
            line.extend_from_slice(hop.as_bytes());
            let Ok(value) = HeaderValue::from_bytes(&line) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.append(header.header_name(), value);
            let outcome = resolve(sock(LB), &headers, &lb_trusted(), header);
            prop_assert_eq!(outcome.client().map(|c| c.addr), Some(sock(CLIENT)));
            prop_assert!(matches!(outcome, Resolution::Client(_)));
        }
    }
}
