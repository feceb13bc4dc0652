//! `/status.json`: what the status page shows — each backend's cap and where it came from,
//! busy/idle/queued now, and one sample a second for the last five minutes (requests/s, queue
//! length, queue wait p99, cap, busy). A task samples every second while the admin listener
//! runs; the history is kept here, in memory and bounded ([`HISTORY`] samples per server), so
//! the page has its plots the moment it is opened, with no Prometheus behind it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::client_connection::ClientConnections;
use crate::metrics::LatencySnapshot;
use crate::proxy::Gateway;

/// Time between samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept per server: five minutes at one a second.
pub const HISTORY: usize = 300;

/// The sampled history of every backend server, by address.
#[derive(Default)]
pub struct History {
    servers: Mutex<HashMap<String, ServerHistory>>,
}

#[derive(Default)]
struct ServerHistory {
    samples: VecDeque<Sample>,
    /// Counters at the previous sample, to take differences from.
    last_responses: Option<u64>,
    last_queue_wait: LatencySnapshot,
}

#[derive(Clone, Copy)]
struct Sample {
    time: u64,
    requests_per_second: f64,
    queue_length: usize,
    queue_wait_p99_ms: Option<f64>,
    cap: usize,
    busy: usize,
}

impl History {
    /// Takes one sample of every server, every [`SAMPLE_EVERY`], until `shutdown`.
    pub async fn run(self: Arc<Self>, gateway: Arc<Gateway>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_tick = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                tick = ticker.tick() => {
                    let elapsed = tick.duration_since(last_tick).as_secs_f64().max(0.001);
                    last_tick = tick;
                    self.sample(&gateway, unix_seconds(), elapsed);
                }
            }
        }
    }

    /// Records one sample per server, `elapsed` seconds after the previous one. Servers no
    /// longer configured (after a reload) lose their history.
    fn sample(&self, gateway: &Gateway, time: u64, elapsed: f64) {
        let upstreams: Vec<_> = gateway
            .upstreams()
            .iter()
            .map(|upstream| upstream.servers())
            .collect();
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen = Vec::new();
        for server in upstreams.iter().flat_map(|set| set.iter()) {
            let address = server.pool().address().to_string();
            let stats = server.pool().stats();
            let responses = server.metrics().responses.total();
            let queue_wait = server.metrics().queue_wait.snapshot();
            let history = servers.entry(address.clone()).or_default();
            #[allow(clippy::cast_precision_loss)]
            let requests_per_second = history
                .last_responses
                .map_or(0.0, |last| responses.saturating_sub(last) as f64 / elapsed);
            let recent_waits = queue_wait.since(&history.last_queue_wait);
            history.last_responses = Some(responses);
            history.last_queue_wait = queue_wait;
            if history.samples.len() == HISTORY {
                history.samples.pop_front();
            }
            history.samples.push_back(Sample {
                time,
                requests_per_second,
                queue_length: stats.waiting,
                queue_wait_p99_ms: recent_waits.quantile(0.99).map(|seconds| seconds * 1000.0),
                cap: stats.cap,
                busy: stats.busy,
            });
            seen.push(address);
        }
        servers.retain(|address, _| seen.contains(address));
    }

    /// The document `/status.json` answers.
    pub fn report(&self, gateway: &Gateway, connections: &ClientConnections) -> StatusReport {
        let upstreams: Vec<_> = gateway
            .upstreams()
            .iter()
            .map(|upstream| upstream.servers())
            .collect();
        let histories = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let servers = upstreams
            .iter()
            .flat_map(|set| set.iter())
            .map(|server| {
                let address = server.pool().address().to_string();
                let stats = server.pool().stats();
                let history = histories
                    .get(&address)
                    .map(ServerHistory::series)
                    .unwrap_or_default();
                ServerReport {
                    cap: stats.cap,
                    ceiling: stats.ceiling,
                    cap_source: stats.cap_source,
                    cap_reduced_by: stats.cap_reduced_by,
                    busy: stats.busy,
                    idle: stats.idle,
                    queued: stats.waiting,
                    down: server.is_down(),
                    multiplexing: stats.multiplexing,
                    multiplexed_in_flight: stats.multiplexed_in_flight,
                    opened: stats.opened,
                    reused: stats.reused,
                    queue_timeouts: stats.queue_timeouts,
                    queue_rejections: stats.queue_rejections,
                    connect_failures: stats.connect_failures,
                    saturation_events: stats.saturation_events,
                    overloaded: stats.overloaded,
                    responses: server.metrics().responses.total(),
                    name: server.name().map(str::to_owned),
                    address,
                    history,
                }
            })
            .collect();
        let metrics = gateway.metrics();
        StatusReport {
            version: env!("CARGO_PKG_VERSION"),
            time: unix_seconds(),
            sample_every_seconds: SAMPLE_EVERY.as_secs(),
            clients: ClientReport {
                open: connections.open(),
                http1: connections.http1(),
                http2: connections.http2(),
                parked: connections.parked(),
                limit: gateway.current().config.max_client_connections,
            },
            requests: metrics.requests.total(),
            retries: metrics.total_retries(),
            servers,
        }
    }
}

impl ServerHistory {
    fn series(&self) -> Series {
        let mut series = Series::default();
        for sample in &self.samples {
            series.time.push(sample.time);
            series.requests_per_second.push(sample.requests_per_second);
            series.queue_length.push(sample.queue_length);
            series.queue_wait_p99_ms.push(sample.queue_wait_p99_ms);
            series.cap.push(sample.cap);
            series.busy.push(sample.busy);
        }
        series
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// `/status.json`.
#[derive(Serialize)]
pub struct StatusReport {
    version: &'static str,
    /// Unix time of the report, in seconds.
    time: u64,
    sample_every_seconds: u64,
    clients: ClientReport,
    /// Responses sent to clients so far.
    requests: u64,
    retries: u64,
    servers: Vec<ServerReport>,
}

#[derive(Serialize)]
struct ClientReport {
    open: usize,
    http1: usize,
    http2: usize,
    parked: usize,
    limit: usize,
}

#[derive(Serialize)]
struct ServerReport {
    address: String,
    /// The host name it was found under (`upstream/discovery.rs`); `null` for a server
    /// configured by address.
    name: Option<String>,
    cap: usize,
    ceiling: usize,
    cap_source: String,
    cap_reduced_by: Option<String>,
    busy: usize,
    idle: usize,
    queued: usize,
    down: bool,
    multiplexing: bool,
    multiplexed_in_flight: usize,
    opened: u64,
    reused: u64,
    queue_timeouts: u64,
    queue_rejections: u64,
    connect_failures: u64,
    saturation_events: u64,
    overloaded: u64,
    responses: u64,
    history: Series,
}

/// Columns, oldest first, as uPlot takes them: `time[i]` goes with every other column's `[i]`.
#[derive(Serialize, Default)]
struct Series {
    time: Vec<u64>,
    requests_per_second: Vec<f64>,
    queue_length: Vec<usize>,
    /// `null` for a second without requests.
    queue_wait_p99_ms: Vec<Option<f64>>,
    cap: Vec<usize>,
    busy: Vec<usize>,
}
