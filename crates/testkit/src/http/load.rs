//! Bounded load: a fixed number of requests over a fixed number of keep-alive connections, with
//! a deadline, so a load test always stops by itself and only ever talks to the server under test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;

use super::{HttpClient, Response};

/// What a [`run_load`] saw. Every one of the `total` requests is counted exactly once: in
/// `statuses` when a response came back, else in `transport_errors` (a failed exchange, or one
/// cut off or never sent because the deadline passed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no response.
    pub transport_errors: u64,
    /// The longest single exchange.
    pub slowest: Duration,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Responses `check_body` accepted.
    pub bodies_ok: u64,
}

impl LoadReport {
    /// Responses with status `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Responses of any status.
    pub fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn merge(&mut self, other: LoadReport) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        self.slowest = self.slowest.max(other.slowest);
        self.bodies_ok += other.bodies_ok;
    }
}

struct Plan<M, C> {
    next_index: AtomicU64,
    total: u64,
    stop_at: Instant,
    make_request: M,
    check_body: C,
}

/// Sends `total` requests, numbered `0..total`, over `concurrency` HTTP/1.1 keep-alive
/// connections; gives up on whatever is unfinished after `deadline`.
/// `make_request(i)` builds request `i`; `check_body(i, &response)` judges its response.
pub async fn run_load<M, C>(
    addr: SocketAddr,
    total: u64,
    concurrency: usize,
    deadline: Duration,
    make_request: M,
    check_body: C,
) -> LoadReport
where
    M: Fn(u64) -> http::Request<Full<Bytes>> + Send + Sync + 'static,
    C: Fn(u64, &Response) -> bool + Send + Sync + 'static,
{
    let started = Instant::now();
    let plan = Arc::new(Plan {
        next_index: AtomicU64::new(0),
        total,
        stop_at: started + deadline,
        make_request,
        check_body,
    });
    let connections = u64::try_from(concurrency.max(1))
        .unwrap_or(u64::MAX)
        .min(total);
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection_worker(addr, Arc::clone(&plan))))
        .collect();
    let mut report = LoadReport::default();
    for worker in workers {
        match worker.await {
            Ok(part) => report.merge(part),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("load worker failed: {error}"),
        }
    }
    let unanswered = total.saturating_sub(report.responses() + report.transport_errors);
    report.transport_errors += unanswered;
    report.elapsed = started.elapsed();
    report
}

async fn connection_worker<M, C>(addr: SocketAddr, plan: Arc<Plan<M, C>>) -> LoadReport
where
    M: Fn(u64) -> http::Request<Full<Bytes>>,
    C: Fn(u64, &Response) -> bool,
{
    let mut report = LoadReport::default();
    let Ok(mut client) = tokio::time::timeout_at(plan.stop_at, HttpClient::http1(addr)).await
    else {
        return report;
    };
    while Instant::now() < plan.stop_at {
        let index = plan.next_index.fetch_add(1, Ordering::SeqCst);
        if index >= plan.total {
            break;
        }
        let request = (plan.make_request)(index);
        let sent = Instant::now();
        let outcome = tokio::time::timeout_at(plan.stop_at, client.send(request)).await;
        report.slowest = report.slowest.max(sent.elapsed());
        match outcome {
            Ok(Ok(response)) => {
                *report.statuses.entry(response.status.as_u16()).or_default() += 1;
                if (plan.check_body)(index, &response) {
                    report.bodies_ok += 1;
                }
            }
            Ok(Err(_)) => report.transport_errors += 1,
            // Cut off by the deadline: counted with the unsent ones by the caller.
            Err(_) => break,
        }
    }
    report
}
