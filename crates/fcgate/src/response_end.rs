//! What happens when a response is over: its body has been sent to the end, or the client went
//! away. Every response's body is wrapped here to count the bytes sent and to notice the end;
//! then the request is counted in the gateway's metrics (status class, total time) and, when
//! the access log is on, its line is written. Measuring at the end of the body, not at the
//! head, is what makes the duration and byte count true for streamed and spooled responses.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::access_log::{AccessLog, BackendFacts, RequestFacts};
use crate::body::ResponseBody;
use crate::metrics::GatewayMetrics;

/// Where a finished response is reported.
pub struct Reporters {
    /// The access log (which may be off).
    pub access_log: Arc<AccessLog>,
    /// The gateway-wide figures.
    pub metrics: Arc<GatewayMetrics>,
}

/// What is known of a request before its response ends.
pub struct Pending {
    /// When the request head was received.
    pub started: Instant,
    /// The request's side of the access-log line; `None` when the log is off.
    pub logged: Option<RequestFacts>,
    /// What the backend side learnt.
    pub backend: BackendFacts,
}

/// Wraps `response`'s body so that the request is reported once the body is done or dropped.
pub fn attach(
    reporters: Reporters,
    pending: Pending,
    response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let status = response.status().as_u16();
    response.map(|body| {
        let observed = ObservedBody {
            body,
            pending: Some((pending, status)),
            bytes_sent: 0,
            reporters,
        };
        http_body_util::BodyExt::boxed_unsync(observed)
    })
}

/// A response body that counts what the client is sent and reports when it ends.
struct ObservedBody {
    body: ResponseBody,
    pending: Option<(Pending, u16)>,
    bytes_sent: u64,
    reporters: Reporters,
}

impl ObservedBody {
    fn finish(&mut self) {
        let Some((pending, status)) = self.pending.take() else {
            return;
        };
        let duration = pending.started.elapsed();
        let metrics = &self.reporters.metrics;
        metrics.requests.record(status);
        metrics.request_duration.observe(duration);
        if let Some(request) = &pending.logged {
            self.reporters.access_log.write(
                request,
                &pending.backend,
                status,
                self.bytes_sent,
                duration,
            );
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}
