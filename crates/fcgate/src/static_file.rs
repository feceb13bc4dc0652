//! Static files in PHP mode, to RFC 9110. tower-http's `ServeFile` answers everything it gets
//! right: the content type, ETag and Last-Modified, the If-Match, If-None-Match,
//! If-Modified-Since and If-Unmodified-Since preconditions with their 304 and 412, HEAD, and
//! every request without a `Range`. This module answers GET and HEAD with a `Range`.
//!
//! Hand-written because tower-http 0.7 gets range requests wrong in two ways no option changes:
//! it ignores `If-Range`, so a client resuming the download of a file that has since changed
//! gets 206 and splices new bytes onto old ones; and it answers several ranges with 416
//! ("Cannot serve multipart range requests") where RFC 9110 §14.6 sends a
//! `multipart/byteranges` 206 (its one alternative, `ignore_multi_range_requests`, sends the
//! whole file instead). What it does right is reused, not redone: a range request first gets
//! `ServeFile`'s answer to the same request as a HEAD without its Range, whose 304 or 412 stands
//! (If-Range is evaluated last, RFC 9110 §13.2.2) and whose headers describe the file. The file
//! is then opened here, and its metadata must give the ETag that answer carries; otherwise it
//! changed in between, and `ServeFile` sends the whole new file. The Range is read in
//! `range_header.rs`, If-Range in `validators.rs`, and the 206 bodies are `byteranges.rs`.
//!
//! Precompressed variants (`x.br` beside `x`) are `ServeFile`'s too, steered by
//! `compression::Precompressed`. A Range request never gets one: it is answered from the
//! uncompressed file, whose ETag the range code checks, so a resumed download always splices
//! bytes of one and the same representation.
//!
//! One case is answered here without `ServeFile`, because it is most of a site's traffic and
//! `ServeFile` spends more on it than the file is worth: a GET or HEAD of a small file (up to
//! [`INLINE_READ_LIMIT`]) with no Range, no precondition and no precompressed variant in play.
//! `ServeFile` opens, stats and reads through tokio's blocking pool, a thread hop each (about 15
//! futex calls per request); here the file is opened, stat'ed and read in one go on the worker,
//! as routing's stat calls already are and as nginx reads files: from the page cache that costs
//! less than one hop. The headers are `ServeFile`'s, byte for byte (its ETag format is pinned in
//! `validators.rs`), so a client sees the same answer whichever path served it, and a later
//! conditional or Range request validates against the same ETag and Last-Modified.

mod byteranges;
mod range_header;
mod validators;

use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::fs::File;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::body::{self, ResponseBody};
use crate::compression::Precompressed;
use byteranges::Layout;
use range_header::RangePlan;
use validators::Current;

/// Answers a request for the regular file at `path`, which routing found inside the root,
/// from a precompressed variant when `precompressed` allows one and one is present.
pub async fn serve(
    path: &Path,
    mut parts: Parts,
    precompressed: Option<Precompressed>,
) -> Response<ResponseBody> {
    // Range applies to GET (RFC 9110 §14.2), and HEAD answers with GET's headers.
    let ranged = matches!(parts.method, Method::GET | Method::HEAD)
        && parts.headers.contains_key(header::RANGE);
    if ranged {
        return serve_range(path, parts).await;
    }
    let Some(precompressed) = precompressed else {
        if let Some(response) = serve_small_inline(path, &parts) {
            return response;
        }
        return serve_file(path, parts).await;
    };
    // ServeFile picks among the variants by this field: the client's codings in our order.
    match precompressed.accept_encoding() {
        Some(ranked) => parts.headers.insert(header::ACCEPT_ENCODING, ranked),
        None => parts.headers.remove(header::ACCEPT_ENCODING),
    };
    let request = Request::from_parts(parts, Empty::<Bytes>::new());
    match precompressed
        .configure(serve_file_service(path))
        .oneshot(request)
        .await
    {
        Ok(response) => response.map(|body| body.boxed_unsync()),
        Err(never) => match never {},
    }
}

/// Files up to this size may be read whole on the worker thread (module doc): 64 KiB is
/// nginx's default `output_buffers` total, a read the page cache serves in microseconds.
pub const INLINE_READ_LIMIT: u64 = 64 * 1024;

/// The headers that make a request's answer depend on more than the file: preconditions.
const CONDITIONS: [HeaderName; 4] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// `ServeFile`'s 200 for an unconditional GET or HEAD of a small regular file, made here in
/// one open, fstat and read (module doc); `None` when the request or the file is not that
/// case (large, not a regular file, unreadable, changing while read), and `ServeFile` answers.
fn serve_small_inline(path: &Path, parts: &Parts) -> Option<Response<ResponseBody>> {
    let is_head = match parts.method {
        Method::GET => false,
        Method::HEAD => true,
        _ => return None,
    };
    if CONDITIONS
        .iter()
        .any(|name| parts.headers.contains_key(name))
    {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let metadata = file.metadata().ok()?;
    let length = metadata.len();
    if !metadata.is_file() || length > INLINE_READ_LIMIT {
        return None;
    }
    let modified = metadata.modified().ok()?;
    let etag = validators::serve_file_etag(length, modified)?;
    let content = if is_head {
        Bytes::new()
    } else {
        // Within the limit, so it fits in usize; one byte more shows a file that grew.
        let mut content = Vec::with_capacity(length as usize + 1);
        file.take(length + 1).read_to_end(&mut content).ok()?;
        if content.len() as u64 != length {
            return None;
        }
        Bytes::from(content)
    };
    let content_type = mime_guess::from_path(path).first_raw().map_or(
        HeaderValue::from_static("application/octet-stream"),
        HeaderValue::from_static,
    );
    let mut response = Response::new(body::full(content));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::LAST_MODIFIED,
        header_value(httpdate::fmt_http_date(modified)),
    );
    headers.insert(header::ETAG, header_value(etag));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Some(response)
}

/// How much of a large file `ServeFile` reads per trip to the blocking pool. Its default,
/// 64 KiB, makes a 1 MiB download 16 thread hops; 256 KiB makes it 4, for at most 256 KiB held
/// per response whose client reads slowly (hyper asks for the next chunk only when it has sent
/// the last).
const READ_CHUNK: usize = 256 * 1024;

fn serve_file_service(path: &Path) -> ServeFile {
    ServeFile::new(path).with_buf_chunk_size(READ_CHUNK)
}

/// The uncompressed file: ServeFile is not told of any variant.
async fn serve_file(path: &Path, parts: Parts) -> Response<ResponseBody> {
    let request = Request::from_parts(parts, Empty::<Bytes>::new());
    match serve_file_service(path).oneshot(request).await {
        Ok(response) => response.map(|body| body.boxed_unsync()),
        Err(never) => match never {},
    }
}

async fn serve_range(path: &Path, mut parts: Parts) -> Response<ResponseBody> {
    // Neither field is a list: a repeated one is as unreadable as a malformed one, and the
    // whole file is always a correct answer.
    let readable =
        !repeated(&parts.headers, &header::RANGE) && !repeated(&parts.headers, &header::IF_RANGE);
    let range = parts.headers.remove(header::RANGE);
    let if_range = parts.headers.remove(header::IF_RANGE);
    let (true, Some(range)) = (readable, range) else {
        return serve_file(path, parts).await;
    };
    let described = serve_file(path, head_of(&parts)).await;
    match described.status() {
        StatusCode::OK => {}
        // The bodies are empty, whatever the method.
        StatusCode::NOT_MODIFIED | StatusCode::PRECONDITION_FAILED => return described,
        // Gone or unreadable since routing looked: ServeFile says which.
        _ => return serve_file(path, parts).await,
    }
    let headers = described.into_parts().0.headers;
    let Some((file, length, modified)) = open_as_described(path, &headers).await else {
        return serve_file(path, parts).await;
    };
    let current = Current {
        etag: headers.get(header::ETAG).map(HeaderValue::as_bytes),
        last_modified: headers
            .get(header::LAST_MODIFIED)
            .map(HeaderValue::as_bytes),
        modified,
    };
    let honoured = if_range.is_none_or(|value| {
        validators::if_range_holds(value.as_bytes(), &current, SystemTime::now())
    });
    let plan = if honoured {
        range_header::plan(range.as_bytes(), length)
    } else {
        RangePlan::Whole
    };
    // HEAD answers with GET's headers, Content-Length included, and no body.
    let file = (parts.method != Method::HEAD).then_some(file);
    respond(plan, headers, length, file)
}

/// The answer `plan` makes of the file described by `headers` (ServeFile's 200 headers), of
/// `length` bytes, its body read from `file` (`None` for HEAD).
fn respond(
    plan: RangePlan,
    mut headers: HeaderMap,
    length: u64,
    file: Option<File>,
) -> Response<ResponseBody> {
    let (status, layout) = match plan {
        // The 200 ServeFile would send, from the file already opened.
        RangePlan::Whole => (StatusCode::OK, Some(Layout::whole(length))),
        RangePlan::Unsatisfiable => {
            headers.remove(header::CONTENT_TYPE);
            let content_range = format!("bytes */{length}");
            headers.insert(header::CONTENT_RANGE, header_value(content_range));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            (StatusCode::RANGE_NOT_SATISFIABLE, None)
        }
        RangePlan::Ranges(ranges) => match ranges.as_slice() {
            [range] => {
                let content_range = format!("bytes {}-{}/{length}", range.first, range.last);
                headers.insert(header::CONTENT_RANGE, header_value(content_range));
                (StatusCode::PARTIAL_CONTENT, Some(Layout::single(*range)))
            }
            several => {
                let boundary = byteranges::boundary();
                let content_type = headers.get(header::CONTENT_TYPE);
                let layout = Layout::multipart(several, length, content_type, &boundary);
                let content_type = format!("multipart/byteranges; boundary={boundary}");
                headers.insert(header::CONTENT_TYPE, header_value(content_type));
                (StatusCode::PARTIAL_CONTENT, Some(layout))
            }
        },
    };
    if let Some(layout) = &layout {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(layout.length()));
    }
    let body = match (layout, file) {
        (Some(layout), Some(file)) => layout.into_body(file),
        _ => body::full(Bytes::new()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Whether the field appears more than once.
fn repeated(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(name).iter().nth(1).is_some()
}

/// The same request as a HEAD: what `ServeFile` would answer, without reading the file.
fn head_of(parts: &Parts) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = Method::HEAD;
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

/// The file, opened, with its length and mtime, if it is still the one `described` describes:
/// its metadata gives the same ETag (which covers the length and the mtime to the nanosecond).
async fn open_as_described(path: &Path, described: &HeaderMap) -> Option<(File, u64, SystemTime)> {
    let file = File::open(path).await.ok()?;
    let metadata = file.metadata().await.ok()?;
    let modified = metadata.modified().ok()?;
    let etag = validators::serve_file_etag(metadata.len(), modified)?;
    let same = described
        .get(header::ETAG)
        .is_some_and(|described| described.as_bytes() == etag.as_bytes());
    same.then_some((file, metadata.len(), modified))
}

/// Header text built here from digits, hex and ASCII header values, so never invalid; the
/// empty fallback keeps that claim from becoming a panic.
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests;
