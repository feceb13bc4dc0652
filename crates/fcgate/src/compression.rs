//! Response compression (`[compression]`): which content coding a request gets, whether a
//! response may be compressed, `Vary: Accept-Encoding`, and the ETag of a compressed response.
//! Static files are compressed by default (they hold no secret); script responses only with
//! `scripts = true`, because compressing a page that reflects an attacker's input beside a
//! secret leaks the secret through the length (BREACH).
//!
//! The encoders are tower-http's (`Compression` over async-compression) and the precompressed
//! `.br`/`.zst`/`.gz` files are found by its `ServeFile` (`static_file.rs`): fcgate writes no
//! codec. The negotiation is ours because tower-http's is private, ranks ties by its own fixed
//! order instead of `encodings`, and turns an unsatisfiable `Accept-Encoding` into a 406, where
//! nginx, Caddy and RFC 9110 §12.5.3 send the uncompressed representation. Its result steers
//! both: `ServeFile` is handed the client's codings restated in our order, and `Compression` is
//! handed the one coding chosen.

use std::convert::Infallible;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tower::ServiceExt;
use tower_http::compression::{Compression, CompressionLevel};
use tower_http::services::ServeFile;

use crate::body::ResponseBody;
use crate::config::CompressionSettings;

/// A content coding fcgate compresses with (RFC 9110 §8.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// Zstandard (RFC 8878).
    Zstd,
    /// Brotli (RFC 7932).
    Brotli,
    /// gzip (RFC 1952).
    Gzip,
}

impl Coding {
    /// Every coding, in the default server preference: best ratio for its speed first.
    pub const ALL: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    /// The coding's name in `Accept-Encoding`, `Content-Encoding` and the config file.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The coding a config entry names.
    pub fn from_setting(text: &str) -> Option<Coding> {
        Coding::ALL
            .into_iter()
            .find(|coding| coding.token() == text)
    }

    /// The coding an `Accept-Encoding` element names (case-insensitive; `x-gzip` is gzip,
    /// RFC 9110 §8.4.1.3).
    fn from_accept(token: &str) -> Option<Coding> {
        if token.eq_ignore_ascii_case("x-gzip") {
            return Some(Coding::Gzip);
        }
        Coding::ALL
            .into_iter()
            .find(|coding| token.eq_ignore_ascii_case(coding.token()))
    }
}

/// The codings a client accepts among the enabled ones, best first: by its q-value, then by the
/// server's preference. Empty: identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ranked {
    codings: [Option<Coding>; 3],
}

impl Ranked {
    /// The best coding, if any is acceptable.
    pub fn first(&self) -> Option<Coding> {
        self.codings[0]
    }

    /// The acceptable codings, best first.
    pub fn iter(&self) -> impl Iterator<Item = Coding> + '_ {
        self.codings.iter().map_while(|coding| *coding)
    }
}

/// Ranks the codings of `preference` (the server's order, `encodings`) that the request's
/// `Accept-Encoding` fields accept (RFC 9110 §12.5.3): a coding's q-value is its own element's,
/// else the `*` element's, else it is not acceptable; q=0 means "not acceptable". No field at
/// all is identity, as every server sends it; so is an element whose q-value does not parse.
/// Identity is never refused (`identity;q=0`, `*;q=0`): a 406 would break more clients than an
/// uncompressed body, and RFC 9110 lets the server send it.
pub fn negotiate(headers: &HeaderMap, preference: &[Coding]) -> Ranked {
    // Thousandths (q=0.5 is 500); None: not mentioned.
    let mut weights: [Option<u16>; 3] = [None; 3];
    let mut wildcard = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for element in text.split(',') {
            let mut pieces = element.split(';');
            let name = pieces.next().unwrap_or_default().trim();
            let Some(weight) = weight_of(pieces) else {
                continue;
            };
            if name == "*" {
                wildcard = Some(weight);
            } else if let Some(coding) = Coding::from_accept(name) {
                let slot = &mut weights[index(coding)];
                // A coding named twice: the more favourable mention wins.
                *slot = Some(slot.map_or(weight, |earlier| earlier.max(weight)));
            }
        }
    }
    let mut ranked = [None; 3];
    let mut candidates: [(u16, usize, Coding); 3] = [(0, 0, Coding::Gzip); 3];
    let mut count = 0;
    for (position, &coding) in preference.iter().enumerate().take(3) {
        let weight = weights[index(coding)].or(wildcard).unwrap_or(0);
        if weight > 0 {
            candidates[count] = (weight, position, coding);
            count += 1;
        }
    }
    let candidates = &mut candidates[..count];
    // Highest q first; equal q in the server's order.
    candidates.sort_unstable_by_key(|&(weight, position, _)| (u16::MAX - weight, position));
    for (slot, &(_, _, coding)) in ranked.iter_mut().zip(candidates.iter()) {
        *slot = Some(coding);
    }
    Ranked { codings: ranked }
}

fn index(coding: Coding) -> usize {
    match coding {
        Coding::Zstd => 0,
        Coding::Brotli => 1,
        Coding::Gzip => 2,
    }
}

/// The q-value among an element's parameters (1 when absent), in thousandths; `None` when it
/// does not parse (RFC 9110 §12.4.2: "0", "1", "0.###" or "1.000" at most).
fn weight_of<'a>(parameters: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut weight = 1000;
    for parameter in parameters {
        let Some((name, value)) = parameter.trim().split_once('=') else {
            continue;
        };
        if !name.eq_ignore_ascii_case("q") {
            continue;
        }
        weight = parse_qvalue(value)?;
    }
    Some(weight)
}

fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |sum, digit| sum * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// What compression needs to know of a request, taken before the request is consumed.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    ranked: Ranked,
    head: bool,
    ranged: bool,
    /// `If-None-Match`, kept only when it holds a weak tag: see [`apply`] on 304s.
    if_none_match: Option<HeaderValue>,
}

impl Wanted {
    /// The request's codings, method and the fields compression looks at.
    pub fn of<B>(settings: &CompressionSettings, request: &Request<B>) -> Wanted {
        if !settings.static_files && !settings.scripts {
            return Wanted::default();
        }
        let headers = request.headers();
        Wanted {
            ranked: negotiate(headers, &settings.encodings),
            head: request.method() == Method::HEAD,
            ranged: headers.contains_key(header::RANGE),
            if_none_match: headers
                .get(header::IF_NONE_MATCH)
                .filter(|value| value.as_bytes().windows(2).any(|pair| pair == b"W/"))
                .cloned(),
        }
    }

    /// What the static-file path may serve precompressed for this request; `None`: the
    /// uncompressed file (compression of static files off, `precompressed = false`, a client
    /// that accepts no coding, or a Range request, answered from the uncompressed file by
    /// `static_file.rs`).
    pub fn precompressed(&self, settings: &CompressionSettings) -> Option<Precompressed> {
        let wanted = settings.static_files
            && settings.precompressed
            && !self.ranged
            && self.ranked.first().is_some();
        wanted.then_some(Precompressed {
            ranked: self.ranked,
            enabled: settings
                .encodings
                .iter()
                .fold([false; 3], |mut on, coding| {
                    on[index(*coding)] = true;
                    on
                }),
        })
    }
}

/// The precompressed variants a static file may be served from, and the client's codings in
/// fcgate's order: a request extension set by `Gateway::handle`, read by the static-file path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precompressed {
    ranked: Ranked,
    enabled: [bool; 3],
}

impl Precompressed {
    /// `serve` told to look for `x.zst`, `x.br` and `x.gz` beside `x`, for the enabled codings.
    pub fn configure(&self, mut serve: ServeFile) -> ServeFile {
        if self.enabled[index(Coding::Zstd)] {
            serve = serve.precompressed_zstd();
        }
        if self.enabled[index(Coding::Brotli)] {
            serve = serve.precompressed_br();
        }
        if self.enabled[index(Coding::Gzip)] {
            serve = serve.precompressed_gzip();
        }
        serve
    }

    /// The `Accept-Encoding` to hand `ServeFile`: the acceptable codings with falling q-values
    /// in fcgate's order, since it breaks ties by its own; `None` (the field removed): identity.
    pub fn accept_encoding(&self) -> Option<HeaderValue> {
        const WEIGHTS: [&str; 3] = ["", ";q=0.9", ";q=0.8"];
        let mut text = String::new();
        for (coding, weight) in self.ranked.iter().zip(WEIGHTS) {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(coding.token());
            text.push_str(weight);
        }
        HeaderValue::try_from(text)
            .ok()
            .filter(|value| !value.is_empty())
    }
}

/// Marks a response as a static file's (a response extension): compressed under `static`, not
/// `scripts`.
#[derive(Clone, Copy, Debug)]
pub struct StaticFile;

/// `response`, compressed when the settings and the request allow it, with `Vary` and its ETag
/// put right. Never compressed: HEAD, Range requests, 1xx/204/205/206/304, a response with a
/// `Content-Encoding` (a precompressed file, or the app's own), `Cache-Control: no-transform`,
/// a type not in `types`, `text/event-stream` (each event must leave when sent), and a body
/// known to be shorter than `min_length`.
pub async fn apply(
    settings: &CompressionSettings,
    wanted: &Wanted,
    mut response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let from_static = response.extensions().get::<StaticFile>().is_some();
    let enabled = if from_static {
        settings.static_files
    } else {
        settings.scripts
    };
    if !enabled {
        return response;
    }
    if response.status() == StatusCode::NOT_MODIFIED {
        confirm_weak_tag(wanted, response.headers_mut());
        return response;
    }
    if !compressible(settings, &response) {
        return response;
    }
    // Whatever this client gets, another Accept-Encoding could get another body (§12.5.5).
    add_vary(response.headers_mut());
    let Some(coding) = wanted.ranked.first() else {
        return response;
    };
    if wanted.head || wanted.ranged {
        return response;
    }
    weaken_etag(response.headers_mut());
    compress(settings, coding, response).await
}

/// Whether the response is of a kind and size worth compressing, leaving aside the request.
fn compressible(settings: &CompressionSettings, response: &Response<ResponseBody>) -> bool {
    let status = response.status();
    let bodiless = status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT
                | StatusCode::RESET_CONTENT
                | StatusCode::PARTIAL_CONTENT
                | StatusCode::NOT_MODIFIED
        );
    let headers = response.headers();
    if bodiless
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
        || lists(headers, &header::CACHE_CONTROL, "no-transform")
    {
        return false;
    }
    let listed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|content_type| type_listed(&settings.types, content_type));
    if !listed {
        return false;
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| response.body().size_hint().exact());
    length.is_none_or(|length| length > 0 && length >= settings.min_length)
}

/// Whether `content_type` (its media type, parameters aside) is one of `types`: `type/sub`
/// exactly or `type/*`, case-insensitively. `text/event-stream` never is.
pub fn type_listed(types: &[String], content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("text/event-stream") {
        return false;
    }
    let Some((major, _)) = media_type.split_once('/') else {
        return false;
    };
    types.iter().any(|listed| match listed.strip_suffix("/*") {
        Some(listed_major) => listed_major.eq_ignore_ascii_case(major),
        None => listed.eq_ignore_ascii_case(media_type),
    })
}

/// Whether a comma-separated field lists `token` (case-insensitive; parameters ignored) or
/// `*` (Vary's "everything"; Cache-Control has no such member).
fn lists(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').any(|element| {
                let element = element.split('=').next().unwrap_or_default().trim();
                element.eq_ignore_ascii_case(token) || element == "*"
            })
        })
    })
}

/// `Vary: Accept-Encoding`, unless `Vary` already names it or is `*`.
fn add_vary(headers: &mut HeaderMap) {
    if !lists(headers, &header::VARY, "accept-encoding") {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A strong ETag made weak (`W/"…"`, as nginx does): the compressed body is not byte for byte
/// the one the strong tag names, so If-Range and If-Match (strong comparison) must not match
/// it, while If-None-Match (weak comparison) still does, and revalidation still gets its 304.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = Vec::with_capacity(etag.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(etag.as_bytes());
        match HeaderValue::from_bytes(&weak) {
            Ok(weak) => {
                headers.insert(header::ETAG, weak);
            }
            // Cannot happen (the bytes were a valid value already); a tag that cannot be made
            // weak must not stay strong on a compressed body.
            Err(_) => {
                headers.remove(header::ETAG);
            }
        }
    }
}

/// On a 304 whose strong tag `"x"` the request presented as `W/"x"` (the tag of the
/// compressed response it holds), the tag as that 200 carried it, with its `Vary`: a 304
/// carries the validators the 200 would have (RFC 9110 §15.4.5), and a cache matching a stored
/// weak tag would not match the strong one. Neither `ServeFile` nor an app can know that tag.
fn confirm_weak_tag(wanted: &Wanted, headers: &mut HeaderMap) {
    let (Some(presented), Some(etag)) = (&wanted.if_none_match, headers.get(header::ETAG)) else {
        return;
    };
    let etag = etag.as_bytes();
    if !etag.starts_with(b"\"") {
        return;
    }
    let presented = presented.as_bytes();
    let held_weak = presented
        .windows(etag.len() + 2)
        .any(|window| window.starts_with(b"W/") && &window[2..] == etag);
    if held_weak {
        weaken_etag(headers);
        add_vary(headers);
    }
}

/// The body compressed with `coding` by tower-http, which also drops Content-Length and
/// Accept-Ranges and sets Content-Encoding.
async fn compress(
    settings: &CompressionSettings,
    coding: Coding,
    response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let level = match coding {
        Coding::Zstd => settings.zstd_level,
        Coding::Brotli => settings.brotli_level,
        Coding::Gzip => settings.gzip_level,
    };
    // tower-http decides from a request, so it gets one naming the chosen coding alone; the
    // checks it would make have been made above, so its predicate always says yes.
    let mut request = Request::new(());
    request.headers_mut().insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    let always: fn(StatusCode, Version, &HeaderMap, &http::Extensions) -> bool = |_, _, _, _| true;
    let mut response = Some(response);
    let service = tower::service_fn(move |_: Request<()>| {
        // `oneshot` calls it once; the empty answer stands for a second call that never comes.
        let response = response
            .take()
            .unwrap_or_else(|| Response::new(crate::body::full(bytes::Bytes::new())));
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let compression = Compression::new(service)
        .gzip(coding == Coding::Gzip)
        .br(coding == Coding::Brotli)
        .zstd(coding == Coding::Zstd)
        .quality(CompressionLevel::Precise(i32::from(level)))
        .compress_when(always);
    let response = match compression.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    response.map(|body| {
        body.map_err(|error| match error.downcast::<std::io::Error>() {
            Ok(error) => *error,
            Err(error) => std::io::Error::other(error),
        })
        .boxed_unsync()
    })
}

#[cfg(test)]
mod tests;
