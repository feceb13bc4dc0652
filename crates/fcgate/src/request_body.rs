//! Reads a request body completely before any backend connection is taken.
//!
//! The body is kept in memory up to `client_body_buffer_size` and moved to a nameless temp file
//! beyond that; more than `client_max_body_size` is refused with 413. Chunked bodies arrive
//! de-chunked from hyper, so the exact length is known before the request goes out: php-fpm
//! hangs a worker on a CONTENT_LENGTH that does not match the bytes sent, and an app worker must
//! never wait on a slow uploader. A client that stops sending for `client_body_timeout` gets a
//! 408 (nginx's `client_body_timeout`): a body announced and never finished must not hold its
//! connection, memory and temp file for ever. All bodies being read or held at once share one
//! budget, `max_request_body_buffer_total` ([`BodyBudget`]): HTTP/2 lets one connection open
//! hundreds of streams, each with a body up to `client_max_body_size`, which would otherwise
//! fill the disk; past the budget a request gets a 503.

use std::io::SeekFrom;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fcgi::client::RequestBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::config::ClientLimits;
use crate::error::GatewayError;

/// The bytes of request bodies held at once, memory and temp files together, and their bound.
#[derive(Debug)]
pub struct BodyBudget {
    held: AtomicU64,
    limit: u64,
}

impl BodyBudget {
    /// A budget of `limit` bytes (`u64::MAX`: unbounded).
    pub fn new(limit: u64) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            held: AtomicU64::new(0),
            limit,
        })
    }

    /// Bytes held right now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// Bytes of one body counted against the [`BodyBudget`]; given back when dropped.
struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl Reservation {
    fn new(budget: &Arc<BodyBudget>) -> Reservation {
        Reservation {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    /// Counts `more` bytes; false, counting nothing, when the budget has no room for them.
    fn grow(&mut self, more: u64) -> bool {
        let budget = &self.budget;
        let granted = budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more)
                    .filter(|total| *total <= budget.limit)
            })
            .is_ok();
        if granted {
            self.bytes += more;
        }
        granted
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A request body read to its end, counted against the budget until dropped.
pub struct SpooledBody {
    content: Content,
    _reservation: Reservation,
}

/// Where a body's bytes are.
enum Content {
    /// In memory.
    Memory(Bytes),
    /// In a temp file, rewound to its start.
    File {
        /// The temp file; it disappears when closed.
        file: tokio::fs::File,
        /// Its length in bytes.
        length: u64,
    },
}

impl SpooledBody {
    /// No body, as an error page's own request has.
    pub fn empty(budget: &Arc<BodyBudget>) -> SpooledBody {
        SpooledBody {
            content: Content::Memory(Bytes::new()),
            _reservation: Reservation {
                budget: Arc::clone(budget),
                bytes: 0,
            },
        }
    }

    /// The body's exact length, which becomes CONTENT_LENGTH.
    pub fn len(&self) -> u64 {
        match &self.content {
            Content::Memory(bytes) => bytes.len() as u64,
            Content::File { length, .. } => *length,
        }
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the FastCGI client sends as STDIN. Can be called again for a retry: memory is
    /// shared, a file is reopened from its start.
    pub async fn request_body(&self) -> Result<RequestBody, GatewayError> {
        Ok(match &self.content {
            Content::Memory(bytes) if bytes.is_empty() => RequestBody::Empty,
            Content::Memory(bytes) => RequestBody::Memory(bytes.clone()),
            Content::File { file, length } => {
                let mut reader = file.try_clone().await.map_err(GatewayError::Spool)?;
                reader
                    .seek(SeekFrom::Start(0))
                    .await
                    .map_err(GatewayError::Spool)?;
                RequestBody::Reader {
                    reader: Box::new(reader),
                    length: *length,
                }
            }
        })
    }
}

/// Reads `body` to its end. `declared_length` is the Content-Length header, if any: a body
/// announced as too large is refused before a byte of it is read.
pub async fn read_body(
    mut body: Incoming,
    declared_length: Option<u64>,
    limits: &ClientLimits,
    budget: &Arc<BodyBudget>,
) -> Result<SpooledBody, GatewayError> {
    let limit = limits.client_max_body_size;
    if declared_length.is_some_and(|length| length > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut reservation = Reservation::new(budget);
    let over_budget = || GatewayError::BodyBuffersFull {
        limit: budget.limit,
    };
    // A body that announces its length takes its share up front, so it is refused before
    // a byte of it is read rather than halfway.
    if let Some(length) = declared_length {
        if !reservation.grow(length) {
            return Err(over_budget());
        }
    }
    let mut memory = BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut total: u64 = 0;
    loop {
        let frame = tokio::time::timeout(limits.client_body_timeout, body.frame())
            .await
            .map_err(|_elapsed| GatewayError::ClientBodyTimeout {
                timeout: limits.client_body_timeout,
                received: total,
            })?;
        let Some(frame) = frame else {
            break;
        };
        let frame = frame.map_err(GatewayError::ClientBody)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing FastCGI can pass on
        };
        total += data.len() as u64;
        if total > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        if total > reservation.bytes && !reservation.grow(total - reservation.bytes) {
            return Err(over_budget());
        }
        match file.as_mut() {
            Some(file) => file.write_all(&data).await.map_err(GatewayError::Spool)?,
            None if memory.len() + data.len() <= limits.client_body_buffer_size => {
                if memory.is_empty() {
                    if declared_length == Some(data.len() as u64) {
                        // The whole body came in one frame: keep hyper's buffer, no copy.
                        return Ok(SpooledBody {
                            content: Content::Memory(data),
                            _reservation: reservation,
                        });
                    }
                    // Sized once for the announced length, as nginx sizes its body buffer:
                    // grown frame by frame, a 64 KiB body that arrived in four reads was
                    // copied again at each doubling, as many bytes as the body itself.
                    let announced = declared_length
                        .and_then(|length| usize::try_from(length).ok())
                        .unwrap_or(0);
                    memory.reserve(announced.min(limits.client_body_buffer_size));
                }
                memory.extend_from_slice(&data);
            }
            None => {
                let mut spool = create_temp_file().await?;
                spool
                    .write_all(&memory)
                    .await
                    .map_err(GatewayError::Spool)?;
                spool.write_all(&data).await.map_err(GatewayError::Spool)?;
                memory = BytesMut::new();
                file = Some(spool);
            }
        }
    }
    let content = match file {
        None => Content::Memory(memory.freeze()),
        Some(mut file) => {
            file.flush().await.map_err(GatewayError::Spool)?;
            file.seek(SeekFrom::Start(0))
                .await
                .map_err(GatewayError::Spool)?;
            Content::File {
                file,
                length: total,
            }
        }
    };
    Ok(SpooledBody {
        content,
        _reservation: reservation,
    })
}

/// A nameless temp file (O_TMPFILE where available): nothing to clean up, even after a crash.
pub async fn create_temp_file() -> Result<tokio::fs::File, GatewayError> {
    tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(|join_error| GatewayError::Spool(std::io::Error::other(join_error)))?
        .map(tokio::fs::File::from_std)
        .map_err(GatewayError::Spool)
}
