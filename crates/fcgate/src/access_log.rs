//! The access log: one line per request, whatever answered it (a static file, a script, a
//! redirect, an error fcgate answered itself), written when the response body is done (or the
//! client went away; `response_end.rs` notices that), so the line has the bytes sent and the
//! total time.
//!
//! Two formats: `combined`, byte for byte nginx's (`$remote_addr - $remote_user [$time_local]
//! "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`, with nginx's `\xHH`
//! escaping), so goaccess and fail2ban read it unchanged; and `json`, one object per line with
//! the gateway's own facts (request id, time in the queue, backend, reuse, time to the backend's
//! head, retries).
//!
//! Writing never stalls a request: a line is appended to a bounded buffer that a writer thread
//! takes whole and writes in one call (every 200 ms, or sooner once 64 KiB wait), and when the
//! disk cannot keep up lines are dropped and counted ([`AccessLog::dropped`]), with a warning
//! now and then. `SIGUSR1` makes the writer reopen its file (logrotate's `postrotate`). Letting
//! go of a log does not wait for its writer either (a reload's old log is let go of on a runtime
//! worker, when its last request ends): the writer writes what is left and ends by itself, and
//! only the process's exit waits for the writers ([`wait_for_writers`]).
//!
//! Time formatting is done here rather than with a date crate: UTC only, as nginx prints it with
//! `TZ=UTC`, and the conversion is a dozen lines.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue, Method, Uri, Version};

use crate::cgi_params::protocol_name;

/// Bytes of lines waiting for the writer before new ones are dropped: seconds of a busy
/// server, bounded whatever the disk does.
const MAX_PENDING: usize = 4 << 20;
/// The writer is woken early once this much is waiting; otherwise it writes every
/// [`FLUSH_EVERY`]. One write of many lines, not a write (and a thread wake-up) per request:
/// measured, a wake-up per line cost a fifth of the gateway's throughput on two cores.
const WRITE_AT: usize = 64 << 10;
/// The longest a line waits before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log.
    Off,
    /// The process's standard output.
    Stdout,
    /// A file, appended to, reopened on SIGUSR1.
    File(PathBuf),
}

/// How a line looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx's `combined`.
    Combined,
    /// One JSON object per line.
    Json,
}

/// The access log of one gateway.
pub struct AccessLog {
    format: AccessLogFormat,
    /// `None` when the log is off.
    queue: Option<Arc<LineQueue>>,
}

/// Writer threads not finished yet. A dropped log's writer may still be writing its last
/// lines; the process waits for them at exit ([`wait_for_writers`]) rather than any drop
/// waiting on a runtime worker.
static RUNNING_WRITERS: Mutex<usize> = Mutex::new(0);
/// Signalled as each writer thread ends.
static WRITER_ENDED: Condvar = Condvar::new();

/// Blocks until every access log writer has written its last lines and ended, or `limit` has
/// passed; true when they all ended. For the end of `main`, once the runtime (and with it
/// every access log) is gone: without it the process could exit with lines still in a
/// writer's hands. Bounded, unlike the join on drop this replaces: at most [`MAX_PENDING`]
/// bytes are left to write, so only a disk that stopped answering (or a log something still
/// holds) takes longer, and neither should keep the process from exiting.
pub fn wait_for_writers(limit: Duration) -> bool {
    let running = lock_running_writers();
    let (running, _) = WRITER_ENDED
        .wait_timeout_while(running, limit, |running| *running > 0)
        .unwrap_or_else(PoisonError::into_inner);
    *running == 0
}

fn lock_running_writers() -> MutexGuard<'static, usize> {
    RUNNING_WRITERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One writer thread in [`RUNNING_WRITERS`], from before it is spawned until it ends (or
/// could not be spawned): dropped with the thread's closure either way.
struct RunningWriter;

impl RunningWriter {
    fn register() -> RunningWriter {
        *lock_running_writers() += 1;
        RunningWriter
    }
}

impl Drop for RunningWriter {
    fn drop(&mut self) {
        let mut running = lock_running_writers();
        *running = running.saturating_sub(1);
        drop(running);
        WRITER_ENDED.notify_all();
    }
}

/// Lines on their way to the writer thread: requests append to one buffer, the writer takes
/// it whole.
struct LineQueue {
    pending: Mutex<Pending>,
    /// Wakes the writer when enough is waiting, or when the log is closed.
    wake: Condvar,
    dropped: AtomicU64,
    reopen: AtomicBool,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The gateway let go of this log (a reload replaced it, or shutdown): write what is left
    /// and stop.
    closed: bool,
}

impl AccessLog {
    /// Starts the writer thread for `target` (none for `Off`). A file that cannot be opened is
    /// an error now, not a silent loss later.
    pub fn start(target: &AccessLogTarget, format: AccessLogFormat) -> io::Result<AccessLog> {
        let output = match target {
            AccessLogTarget::Off => return Ok(AccessLog::off()),
            AccessLogTarget::Stdout => Output::Stdout,
            AccessLogTarget::File(path) => {
                let file = open_log(path).map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("cannot open the access log {}: {error}", path.display()),
                    )
                })?;
                Output::File {
                    path: path.clone(),
                    file,
                }
            }
        };
        let queue = Arc::new(LineQueue {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
        });
        let writer_queue = Arc::clone(&queue);
        let running = RunningWriter::register();
        // Not joined: it ends by itself once the log is closed and written out.
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let _running = running;
                write_lines(output, &writer_queue);
            })?;
        Ok(AccessLog {
            format,
            queue: Some(queue),
        })
    }

    /// An access log that writes nothing.
    pub fn off() -> AccessLog {
        AccessLog {
            format: AccessLogFormat::Combined,
            queue: None,
        }
    }

    /// Whether lines are written at all: requests skip collecting them when not.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue
            .as_ref()
            .map_or(0, |queue| queue.dropped.load(Ordering::Relaxed))
    }

    /// Asks the writer to reopen its file before its next write (SIGUSR1).
    pub fn reopen(&self) {
        if let Some(queue) = &self.queue {
            queue.reopen.store(true, Ordering::Release);
            queue.wake.notify_one();
        }
    }

    /// Queues the line for one finished response; drops it (counted) if the writer is behind.
    pub fn write(
        &self,
        request: &RequestFacts,
        backend: &BackendFacts,
        status: u16,
        bytes_sent: u64,
        duration: Duration,
    ) {
        let Some(queue) = &self.queue else {
            return;
        };
        let entry = Entry {
            request,
            backend,
            status,
            bytes_sent,
            duration,
        };
        let mut line = match self.format {
            AccessLogFormat::Combined => entry.combined(),
            AccessLogFormat::Json => entry.json(),
        };
        line.push('\n');
        let mut pending = queue.lock();
        if pending.bytes.len() + line.len() > MAX_PENDING {
            drop(pending);
            let dropped = queue.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "the access log cannot keep up; lines are being dropped"
                );
            }
            return;
        }
        let was_below = pending.bytes.len() < WRITE_AT;
        pending.bytes.extend_from_slice(line.as_bytes());
        let crossed = was_below && pending.bytes.len() >= WRITE_AT;
        drop(pending);
        if crossed {
            queue.wake.notify_one();
        }
    }
}

impl Drop for AccessLog {
    /// Has the writer write what is left and end, without waiting for it: this runs when a
    /// reload replaced the log and its last request has ended, on whichever runtime worker
    /// ended it, and a slow disk must not stall that worker's other requests. At exit,
    /// `main` waits for the writers ([`wait_for_writers`]).
    fn drop(&mut self) {
        if let Some(queue) = &self.queue {
            queue.lock().closed = true;
            queue.wake.notify_one();
        }
    }
}

impl LineQueue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

enum Output {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Output {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout => io::stdout().lock().write_all(bytes),
            Output::File { file, .. } => file.write_all(bytes),
        }
    }

    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            match open_log(path) {
                Ok(reopened) => *file = reopened,
                Err(error) => tracing::error!(
                    path = %path.display(),
                    "cannot reopen the access log, writing on to the old file: {error}"
                ),
            }
        }
    }
}

fn open_log(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread: every [`FLUSH_EVERY`], or sooner when [`WRITE_AT`] bytes wait, takes the
/// whole buffer and writes it in one go; reopens the file when asked; ends once the log is
/// closed and written out.
fn write_lines(mut output: Output, queue: &LineQueue) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut pending = queue.lock();
            if !pending.closed
                && pending.bytes.len() < WRITE_AT
                && !queue.reopen.load(Ordering::Acquire)
            {
                pending = queue
                    .wake
                    .wait_timeout(pending, FLUSH_EVERY)
                    .map_or_else(|poisoned| poisoned.into_inner().0, |(pending, _)| pending);
            }
            std::mem::swap(&mut batch, &mut pending.bytes);
            pending.closed
        };
        if queue.reopen.swap(false, Ordering::AcqRel) {
            // Lines of requests that ended before the signal belong to the old file.
            write_batch(&mut output, &batch);
            batch.clear();
            output.reopen();
        }
        write_batch(&mut output, &batch);
        batch.clear();
        if closed {
            return;
        }
    }
}

fn write_batch(output: &mut Output, batch: &[u8]) {
    if batch.is_empty() {
        return;
    }
    if let Err(error) = output.write_all(batch) {
        tracing::error!("writing the access log failed: {error}");
    }
}

/// What the gateway learnt about the backend side of one request.
#[derive(Debug, Default, Clone)]
pub struct BackendFacts {
    /// The server that answered, as configured (`unix:/run/php.sock`); shared with the server,
    /// which formats it once.
    pub address: Option<Arc<str>>,
    /// Whether its connection had served requests before.
    pub reused: Option<bool>,
    /// Time from asking the pool for a connection to having one.
    pub queue_wait: Option<Duration>,
    /// Time from sending the request to the end of the app's header block.
    pub header_time: Option<Duration>,
    /// Times the request was sent again (another server, a fresh connection, OVERLOADED).
    pub retries: u32,
}

/// The request's side of a line, taken before the request is consumed.
pub struct RequestFacts {
    time: SystemTime,
    request_id: u64,
    client: SocketAddr,
    /// `None` for a request so malformed that hyper answered it before it was one.
    line: Option<RequestLine>,
    /// Header values share the request's buffer: a clone is a reference count, not a copy.
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

impl RequestFacts {
    /// Reads what the line needs from the request head, now.
    pub fn new(
        request_id: u64,
        client: SocketAddr,
        method: &Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
    ) -> RequestFacts {
        let header_bytes = |name| headers.get(name).cloned();
        RequestFacts {
            time: SystemTime::now(),
            request_id,
            client,
            line: Some(RequestLine {
                method: method.clone(),
                uri: uri.clone(),
                version,
            }),
            referer: header_bytes(header::REFERER),
            user_agent: header_bytes(header::USER_AGENT),
        }
    }

    /// A request hyper refused before it had a method and a target (a malformed request line,
    /// a head too large): logged as `"-"`, as nginx logs what it cannot parse.
    pub fn unparsed(request_id: u64, client: SocketAddr) -> RequestFacts {
        RequestFacts {
            time: SystemTime::now(),
            request_id,
            client,
            line: None,
            referer: None,
            user_agent: None,
        }
    }
}

/// What the request line said.
struct RequestLine {
    method: Method,
    uri: Uri,
    version: Version,
}

impl RequestLine {
    fn target(&self) -> &str {
        self.uri
            .path_and_query()
            .map_or("/", |target| target.as_str())
    }
}

/// Everything one line says.
struct Entry<'a> {
    request: &'a RequestFacts,
    backend: &'a BackendFacts,
    status: u16,
    bytes_sent: u64,
    duration: Duration,
}

impl Entry<'_> {
    /// nginx's `combined`.
    fn combined(&self) -> String {
        let request = &self.request;
        let mut line = String::with_capacity(256);
        let _ = write!(line, "{} - - [", request.client.ip());
        push_nginx_time_local(&mut line, request.time);
        line.push_str("] \"");
        match &request.line {
            Some(request_line) => {
                push_nginx_escaped(&mut line, request_line.method.as_str().as_bytes());
                line.push(' ');
                push_nginx_escaped(&mut line, request_line.target().as_bytes());
                line.push(' ');
                line.push_str(protocol_name(request_line.version));
            }
            None => line.push('-'),
        }
        line.push_str("\" ");
        push_decimal(&mut line, self.status);
        line.push(' ');
        push_decimal(&mut line, self.bytes_sent);
        line.push_str(" \"");
        push_nginx_escaped(
            &mut line,
            request.referer.as_ref().map_or(b"-", HeaderValue::as_bytes),
        );
        line.push_str("\" \"");
        push_nginx_escaped(
            &mut line,
            request
                .user_agent
                .as_ref()
                .map_or(b"-", HeaderValue::as_bytes),
        );
        line.push('"');
        line
    }

    /// One JSON object; absent facts are `null`.
    fn json(&self) -> String {
        let request = &self.request;
        let backend = &self.backend;
        let mut line = String::with_capacity(512);
        let _ = write!(
            line,
            "{{\"time\":\"{}\",\"request_id\":",
            rfc3339(request.time)
        );
        push_decimal(&mut line, request.request_id);
        let _ = write!(line, ",\"client\":\"{}\",\"method\":", request.client.ip());
        let request_line = request.line.as_ref();
        push_json_optional(
            &mut line,
            request_line.map(|request_line| request_line.method.as_str().as_bytes()),
        );
        line.push_str(",\"uri\":");
        push_json_optional(
            &mut line,
            request_line.map(|request_line| request_line.target().as_bytes()),
        );
        line.push_str(",\"protocol\":");
        push_json_optional(
            &mut line,
            request_line.map(|request_line| protocol_name(request_line.version).as_bytes()),
        );
        line.push_str(",\"status\":");
        push_decimal(&mut line, self.status);
        line.push_str(",\"bytes_sent\":");
        push_decimal(&mut line, self.bytes_sent);
        line.push_str(",\"duration_ms\":");
        push_millis(&mut line, Some(self.duration));
        line.push_str(",\"queue_ms\":");
        push_millis(&mut line, backend.queue_wait);
        line.push_str(",\"backend\":");
        match &backend.address {
            Some(address) => push_json_string(&mut line, address.as_bytes()),
            None => line.push_str("null"),
        }
        let reused = backend
            .reused
            .map_or("null", |reused| if reused { "true" } else { "false" });
        line.push_str(",\"backend_reused\":");
        line.push_str(reused);
        line.push_str(",\"backend_header_ms\":");
        push_millis(&mut line, backend.header_time);
        line.push_str(",\"retries\":");
        push_decimal(&mut line, backend.retries);
        line.push_str(",\"referer\":");
        push_json_optional(
            &mut line,
            request.referer.as_ref().map(HeaderValue::as_bytes),
        );
        line.push_str(",\"user_agent\":");
        push_json_optional(
            &mut line,
            request.user_agent.as_ref().map(HeaderValue::as_bytes),
        );
        line.push('}');
        line
    }
}

/// An integer as `Display` writes it, without a pass through `core::fmt`.
fn push_decimal(line: &mut String, value: impl itoa::Integer) {
    line.push_str(itoa::Buffer::new().format(value));
}

/// Milliseconds with three decimals, or `null`; written in place, not through a `String` each.
fn push_millis(line: &mut String, duration: Option<Duration>) {
    match duration {
        Some(duration) => {
            let _ = write!(line, "{:.3}", duration.as_secs_f64() * 1000.0);
        }
        None => line.push_str("null"),
    }
}

/// nginx's default log escaping: `"`, `\`, control bytes and bytes above 0x7e as `\xHH`.
fn push_nginx_escaped(line: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            let _ = write!(line, "\\x{byte:02X}");
        } else {
            line.push(char::from(byte));
        }
    }
}

fn push_json_optional(line: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => push_json_string(line, bytes),
        None => line.push_str("null"),
    }
}

/// A JSON string; bytes that are not UTF-8 become U+FFFD.
fn push_json_string(line: &mut String, bytes: &[u8]) {
    line.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both fit: day is 1..=31, month 1..=12.
    (year, month as u32, day as u32)
}

/// Seconds since the epoch and the parts of the day, UTC.
fn utc_parts(time: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days(i64::try_from(seconds / 86_400).unwrap_or(0));
    let of_day = seconds % 86_400;
    (
        year,
        month,
        day,
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis(),
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `04/Dec/2026:21:40:13 +0000`, nginx's `$time_local` in UTC.
/// Written in place: a `format!` per line was most of the log's cost per request.
fn push_nginx_time_local(line: &mut String, time: SystemTime) {
    let (year, month, day, hour, minute, second, _) = utc_parts(time);
    let month = MONTHS[(month as usize).saturating_sub(1) % 12];
    push_two_digits(line, u64::from(day));
    line.push('/');
    line.push_str(month);
    line.push('/');
    push_decimal(line, year);
    line.push(':');
    push_two_digits(line, hour);
    line.push(':');
    push_two_digits(line, minute);
    line.push(':');
    push_two_digits(line, second);
    line.push_str(" +0000");
}

/// `value` (below 100) as two digits, `07`.
fn push_two_digits(line: &mut String, value: u64) {
    line.push(char::from(b'0' + (value / 10 % 10) as u8));
    line.push(char::from(b'0' + (value % 10) as u8));
}

/// `2026-12-04T21:40:13.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let (year, month, day, hour, minute, second, millis) = utc_parts(time);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A request and its backend facts, as a finished response would report them.
    fn facts() -> (RequestFacts, BackendFacts) {
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, "curl/8.0 \"quoted\"".parse().unwrap());
        let mut request = RequestFacts::new(
            42,
            "192.0.2.7:5555".parse().unwrap(),
            &Method::GET,
            &"/index.php?q=a%20b".parse().unwrap(),
            Version::HTTP_11,
            &headers,
        );
        // 2026-12-04 21:40:13.250 UTC
        request.time = UNIX_EPOCH + Duration::from_millis(1_796_420_413_250);
        let backend = BackendFacts {
            address: Some("unix:/run/php.sock".into()),
            reused: Some(true),
            queue_wait: Some(Duration::from_micros(1500)),
            header_time: Some(Duration::from_millis(12)),
            retries: 1,
        };
        (request, backend)
    }

    fn entry<'a>(request: &'a RequestFacts, backend: &'a BackendFacts) -> Entry<'a> {
        Entry {
            request,
            backend,
            status: 200,
            bytes_sent: 1234,
            duration: Duration::from_millis(15),
        }
    }

    #[test]
    fn combined_is_nginx_combined() {
        let (request, backend) = facts();
        assert_eq!(
            entry(&request, &backend).combined(),
            "192.0.2.7 - - [04/Dec/2026:21:40:13 +0000] \"GET /index.php?q=a%20b HTTP/1.1\" \
             200 1234 \"-\" \"curl/8.0 \\x22quoted\\x22\""
        );
    }

    #[test]
    fn json_carries_the_gateway_facts() {
        let (request, backend) = facts();
        assert_eq!(
            entry(&request, &backend).json(),
            "{\"time\":\"2026-12-04T21:40:13.250Z\",\"request_id\":42,\"client\":\"192.0.2.7\",\
             \"method\":\"GET\",\"uri\":\"/index.php?q=a%20b\",\"protocol\":\"HTTP/1.1\",\
             \"status\":200,\"bytes_sent\":1234,\"duration_ms\":15.000,\"queue_ms\":1.500,\
             \"backend\":\"unix:/run/php.sock\",\"backend_reused\":true,\
             \"backend_header_ms\":12.000,\"retries\":1,\"referer\":null,\
             \"user_agent\":\"curl/8.0 \\\"quoted\\\"\"}"
        );
    }

    #[test]
    fn a_request_hyper_refused_is_logged_without_a_request_line() {
        let mut request = RequestFacts::unparsed(7, "192.0.2.7:5555".parse().unwrap());
        request.time = UNIX_EPOCH + Duration::from_millis(1_796_420_413_250);
        let backend = BackendFacts::default();
        let entry = Entry {
            request: &request,
            backend: &backend,
            status: 400,
            bytes_sent: 0,
            duration: Duration::ZERO,
        };
        assert_eq!(
            entry.combined(),
            "192.0.2.7 - - [04/Dec/2026:21:40:13 +0000] \"-\" 400 0 \"-\" \"-\""
        );
        assert!(entry
            .json()
            .contains("\"method\":null,\"uri\":null,\"protocol\":null,\"status\":400"));
    }

    /// A FIFO stands for a disk that stopped answering: the test holds its read end and reads
    /// nothing until told, so the writer's write blocks once the pipe (64 KiB) is full. Then
    /// the log is let go of, as a reload's old log is on a runtime worker.
    #[test]
    fn letting_go_of_a_log_does_not_wait_for_a_stalled_writer_and_loses_no_line() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("access.log");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let (read_now, reading_allowed) = std::sync::mpsc::channel::<()>();
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || {
            // Opening a FIFO waits for the other end: the log's open below.
            let mut fifo = File::open(reader_path).unwrap();
            let _ = reading_allowed.recv();
            let mut written = Vec::new();
            io::Read::read_to_end(&mut fifo, &mut written).unwrap();
            written
        });
        let log =
            AccessLog::start(&AccessLogTarget::File(path), AccessLogFormat::Combined).unwrap();
        let (request, backend) = facts();
        let line_length = entry(&request, &backend).combined().len() + 1;
        // 1 MiB of lines: far more than the pipe holds, well under MAX_PENDING (none dropped).
        let lines = (1 << 20) / line_length;
        for _ in 0..lines {
            log.write(&request, &backend, 200, 1234, Duration::from_millis(15));
        }
        // The writer takes a batch every FLUSH_EVERY at the latest: it is stuck in a write now.
        std::thread::sleep(FLUSH_EVERY * 2);
        let (let_go, was_let_go) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(log);
            let _ = let_go.send(());
        });
        let promptly = was_let_go.recv_timeout(Duration::from_secs(5)).is_ok();
        // Unstall the disk before judging, so a failure does not leave the writer stuck.
        read_now.send(()).unwrap();
        let written = reader.join().unwrap();
        assert!(
            promptly,
            "letting go of the log waited for its stalled writer"
        );
        assert_eq!(whole_lines(&written, line_length), lines);
    }

    /// The lines in `written`, each checked to be whole.
    fn whole_lines(written: &[u8], line_length: usize) -> usize {
        assert_eq!(written.len() % line_length, 0, "a partial line");
        assert!(written
            .chunks(line_length)
            .all(|line| line.ends_with(b"\n") && line.starts_with(b"192.0.2.7 ")));
        written.len() / line_length
    }

    #[test]
    fn dates_convert_across_leap_years_and_epochs() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn control_and_non_ascii_bytes_are_escaped_as_nginx_does() {
        let mut line = String::new();
        push_nginx_escaped(&mut line, b"a\"b\\c\x1b\xff");
        assert_eq!(line, "a\\x22b\\x5Cc\\x1B\\xFF");
        let mut json = String::new();
        push_json_string(&mut json, b"a\nb\x01");
        assert_eq!(json, "\"a\\nb\\u0001\"".replace("\\n", "\\u000a"));
    }
}
