//! `/metrics`: every figure the gateway keeps, in Prometheus' text format, encoded by
//! prometheus-client at scrape time. Nothing is copied into a registry as requests pass: the
//! pools already count (`Pool::stats`), `metrics.rs` records latencies, status classes and
//! retries, and this collector reads them all when Prometheus asks, so a scrape costs one pass
//! over the servers and the data path pays nothing for it.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::client_connection::ClientConnections;
use crate::metrics::{LatencySnapshot, RetryReason, StatusClasses};
use crate::proxy::Gateway;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Label pairs of one sample.
type Labels = Vec<(&'static str, String)>;

/// Reads one figure from a pool's stats.
type StatsField = fn(&fcgi::client::PoolStats) -> u64;

/// The registry `/metrics` encodes: one collector reading the gateway's live figures, every
/// name prefixed `fcgate_`.
pub fn registry(gateway: Arc<Gateway>, connections: Arc<ClientConnections>) -> Registry {
    let mut registry = Registry::with_prefix("fcgate");
    registry.register_collector(Box::new(LiveFigures {
        gateway,
        connections,
    }));
    registry
}

/// Encodes `registry` in the Prometheus text format (version 0.0.4).
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

struct LiveFigures {
    gateway: Arc<Gateway>,
    connections: Arc<ClientConnections>,
}

impl fmt::Debug for LiveFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveFigures").finish_non_exhaustive()
    }
}

impl Collector for LiveFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_gateway(&mut encoder)?;
        self.encode_clients(&mut encoder)?;
        self.encode_servers(&mut encoder)
    }
}

impl LiveFigures {
    fn encode_gateway(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let metrics = self.gateway.metrics();
        gauges(
            encoder,
            "build_info",
            "The running fcgate's version (always 1).",
            vec![(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1)],
        )?;
        counters(
            encoder,
            "http_requests",
            "Responses sent to clients by status class, whoever produced them.",
            status_rows(&metrics.requests, &Vec::new()),
        )?;
        histograms(
            encoder,
            "http_request_duration",
            "From the request head to the end of the response body.",
            vec![(Vec::new(), metrics.request_duration.snapshot())],
        )?;
        counters(
            encoder,
            "access_log_dropped_lines",
            "Access log lines dropped because the writer could not keep up.",
            vec![(Vec::new(), self.gateway.access_log().dropped())],
        )?;
        gauges(
            encoder,
            "request_body_buffered_bytes",
            "Request body bytes held now, in memory and temp files, against \
             max_request_body_buffer_total.",
            vec![(Vec::new(), self.gateway.request_body_bytes_held())],
        )
    }

    fn encode_clients(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let connections = &self.connections;
        let (http1, http2) = (connections.http1(), connections.http2());
        gauges(
            encoder,
            "client_connections",
            "Open client connections by protocol (`unknown`: accepted, first bytes not read yet).",
            vec![
                (vec![("protocol", "http1".to_owned())], http1 as u64),
                (vec![("protocol", "http2".to_owned())], http2 as u64),
                (
                    vec![("protocol", "unknown".to_owned())],
                    connections.open().saturating_sub(http1 + http2) as u64,
                ),
            ],
        )?;
        gauges(
            encoder,
            "client_connections_parked",
            "HTTP/1.1 keep-alive connections parked between requests, holding no buffers.",
            vec![(
                vec![("protocol", "http1".to_owned())],
                connections.parked() as u64,
            )],
        )?;
        gauges(
            encoder,
            "client_connections_limit",
            "max_client_connections: at the limit the longest-idle connection makes room.",
            vec![(
                Vec::new(),
                self.gateway.current().config.max_client_connections as u64,
            )],
        )
    }

    fn encode_servers(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let generation = self.gateway.current();
        let snapshots: Vec<_> = std::iter::once((None, generation.upstream.servers()))
            .chain(
                generation
                    .groups
                    .iter()
                    .map(|(group, upstream)| (Some(group.as_str()), upstream.servers())),
            )
            .collect();
        // `server` is the address connected to, as it always was; a server found by DNS also
        // has `name`, its host name as configured, to group its addresses by; one in an
        // `[upstreams.NAME]` group has `group` (an address is in one group only).
        let servers: Vec<_> = snapshots
            .iter()
            .flat_map(|(group, snapshot)| snapshot.iter().map(move |server| (*group, server)))
            .map(|(group, server)| {
                let mut labels: Labels = vec![("server", server.pool().address().to_string())];
                if let Some(name) = server.name() {
                    labels.push(("name", name.to_owned()));
                }
                if let Some(group) = group {
                    labels.push(("group", group.to_owned()));
                }
                (labels, server, server.pool().stats())
            })
            .collect();
        let (rounds_ok, rounds_failed) = generation
            .upstreams()
            .map(|upstream| upstream.resolution_rounds())
            .fold((0, 0), |(ok, failed), (more_ok, more_failed)| {
                (ok + more_ok, failed + more_failed)
            });
        counters(
            encoder,
            "upstream_resolutions",
            "Rounds of re-resolving the servers written as host names: `ok`, or `failed` (some \
             name kept its last addresses).",
            vec![
                (vec![("result", "ok".to_owned())], rounds_ok),
                (vec![("result", "failed".to_owned())], rounds_failed),
            ],
        )?;
        let label = |labels: &Labels| labels.clone();
        let per_server = |value: &dyn Fn(&fcgi::client::PoolStats) -> u64| -> Vec<(Labels, u64)> {
            servers
                .iter()
                .map(|(name, _, stats)| (label(name), value(stats)))
                .collect()
        };
        gauges(
            encoder,
            "backend_connection_cap",
            "Connections the gateway may open to the server now; `source` says where the \
             limit came from.",
            servers
                .iter()
                .map(|(name, _, stats)| {
                    let mut labels = label(name);
                    labels.push(("source", stats.cap_source.clone()));
                    (labels, stats.cap as u64)
                })
                .collect(),
        )?;
        gauges(
            encoder,
            "backend_connection_cap_ceiling",
            "The most the cap may rise to after the backend pushed it down.",
            per_server(&|stats| stats.ceiling as u64),
        )?;
        gauges(
            encoder,
            "backend_connections",
            "Connection slots in use by state: idle (parked, ready) or busy (serving or \
             connecting).",
            servers
                .iter()
                .flat_map(|(name, _, stats)| {
                    let mut idle = label(name);
                    idle.push(("state", "idle".to_owned()));
                    let mut busy = label(name);
                    busy.push(("state", "busy".to_owned()));
                    [(idle, stats.idle as u64), (busy, stats.busy as u64)]
                })
                .collect(),
        )?;
        gauges(
            encoder,
            "backend_queue_length",
            "Requests waiting for a connection now.",
            per_server(&|stats| stats.waiting as u64),
        )?;
        gauges(
            encoder,
            "backend_multiplexed_requests",
            "Requests in flight on shared (multiplexed) connections now.",
            per_server(&|stats| stats.multiplexed_in_flight as u64),
        )?;
        gauges(
            encoder,
            "backend_up",
            "1 unless the server is marked down after max_fails failures.",
            servers
                .iter()
                .map(|(name, server, _)| (label(name), u64::from(!server.is_down())))
                .collect(),
        )?;
        let server_counters: [(&str, &str, StatsField); 9] = [
            (
                "backend_connections_opened",
                "Connections established.",
                |stats| stats.opened,
            ),
            (
                "backend_connection_reuses",
                "Requests served by an already open connection.",
                |stats| stats.reused,
            ),
            (
                "backend_connect_failures",
                "Connects that failed or timed out.",
                |stats| stats.connect_failures,
            ),
            (
                "backend_saturation_events",
                "Fresh connections left unanswered while others were served (the backend is \
                 full).",
                |stats| stats.saturation_events,
            ),
            ("backend_overloaded", "FCGI_OVERLOADED answers.", |stats| {
                stats.overloaded
            }),
            (
                "backend_listen_queue_full",
                "Connects refused because the backend's listen queue was full.",
                |stats| stats.listen_queue_full,
            ),
            (
                "backend_connections_yielded",
                "Busy connections closed as their requests ended, for other clients seen waiting \
                 in the backend's listen queue.",
                |stats| stats.yielded,
            ),
            (
                "backend_queue_rejections",
                "Requests refused at once because max_queue were already waiting.",
                |stats| stats.queue_rejections,
            ),
            (
                "backend_queue_timeouts",
                "Requests that waited queue_timeout for a connection and got a 503.",
                |stats| stats.queue_timeouts,
            ),
        ];
        for (name, help, value) in server_counters {
            counters(encoder, name, help, per_server(&value))?;
        }
        counters(
            encoder,
            "backend_retries",
            "Requests sent to a backend again after an attempt on this server failed, by reason.",
            servers
                .iter()
                .flat_map(|(name, server, _)| {
                    RetryReason::ALL.iter().map(move |&reason| {
                        let mut labels = name.clone();
                        labels.push(("reason", reason.label().to_owned()));
                        (labels, server.metrics().retries.get(reason))
                    })
                })
                .collect(),
        )?;
        counters(
            encoder,
            "backend_responses",
            "The application's responses by status class.",
            servers
                .iter()
                .flat_map(|(name, server, _)| {
                    status_rows(&server.metrics().responses, &label(name))
                })
                .collect(),
        )?;
        histograms(
            encoder,
            "backend_queue_wait",
            "From asking the pool for a connection to having one.",
            servers
                .iter()
                .map(|(name, server, _)| (label(name), server.metrics().queue_wait.snapshot()))
                .collect(),
        )?;
        histograms(
            encoder,
            "backend_response_header",
            "From sending the request to the end of the application's header block (time to \
             first byte).",
            servers
                .iter()
                .map(|(name, server, _)| (label(name), server.metrics().response_header.snapshot()))
                .collect(),
        )
    }
}

/// One row per status class, each with `labels` and a `status_class` label.
fn status_rows(classes: &StatusClasses, labels: &Labels) -> Vec<(Labels, u64)> {
    StatusClasses::NAMES
        .iter()
        .zip(classes.counts())
        .map(|(class, count)| {
            let mut row = labels.clone();
            row.push(("status_class", (*class).to_owned()));
            (row, count)
        })
        .collect()
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// `name` without `_total`: the encoder appends it to counters.
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, f64>(&value, None)?;
    }
    Ok(())
}

/// `name` without `_seconds`: the unit is appended.
fn histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, LatencySnapshot)>,
) -> fmt::Result {
    let mut metric =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, snapshot) in rows {
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                snapshot.sum_seconds(),
                snapshot.count(),
                &snapshot.buckets(),
                None,
            )?;
    }
    Ok(())
}
