//! Metric names (part of the contract, docs/protocol.md §7) and the process-wide registry.
//!
//! Hot-path counters are kept per event loop ([`LoopMetrics`]) and folded into
//! the shared atomics once per loop iteration, so a delivery costs no atomic
//! operation on a contended cache line.

use prometheus::local::LocalHistogram;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::channel::Channel;

pub const CONNECTIONS: &str = "bistream_connections";
pub const CONNECTIONS_TOTAL: &str = "bistream_connections_total";
pub const HANDSHAKE_FAILURES_TOTAL: &str = "bistream_handshake_failures_total";
pub const EVENTS_PUBLISHED_TOTAL: &str = "bistream_events_published_total";
pub const MESSAGES_DELIVERED_TOTAL: &str = "bistream_messages_delivered_total";
pub const SLOW_CONSUMER_DISCONNECTS_TOTAL: &str = "bistream_slow_consumer_disconnects_total";
pub const DELIVERY_LATENCY_SECONDS: &str = "bistream_delivery_latency_seconds";
pub const RECOVERIES_TOTAL: &str = "bistream_recoveries_total";
pub const HISTORY_BYTES: &str = "bistream_history_bytes";
pub const HISTORY_STREAMS: &str = "bistream_history_streams";
pub const DISCONNECTS_TOTAL: &str = "bistream_disconnects_total";
pub const PUBLISH_REQUESTS_TOTAL: &str = "bistream_publish_requests_total";
pub const EVENTS_CONFLATED_TOTAL: &str = "bistream_events_conflated_total";
pub const LAST_VALUES: &str = "bistream_last_values";
pub const LAST_VALUES_BYTES: &str = "bistream_last_values_bytes";
pub const ENGINE_UP: &str = "bistream_engine_up";
pub const ENGINE_RESYNCS_TOTAL: &str = "bistream_engine_resyncs_total";
pub const ENGINE_PUBLISH_BATCHES_TOTAL: &str = "bistream_engine_publish_batches_total";
pub const ENGINE_PUBLISH_CONFLICTS_TOTAL: &str = "bistream_engine_publish_conflicts_total";
pub const HANDOVERS_TOTAL: &str = "bistream_handovers_total";
pub const HANDOVER_STATE_BYTES: &str = "bistream_handover_state_bytes";
pub const HANDOVER_DURATION_SECONDS: &str = "bistream_handover_duration_seconds";
pub const PROXY_HEADERS_TOTAL: &str = "bistream_proxy_headers_total";
pub const PROXY_REFUSALS_TOTAL: &str = "bistream_proxy_refusals_total";

/// `outcome` values of [`HANDOVERS_TOTAL`].
pub const HANDOVER_OUTCOMES: [&str; 3] = ["completed", "failed", "ignored"];
/// `reason` values of [`PROXY_REFUSALS_TOTAL`].
pub const PROXY_REFUSAL_REASONS: [&str; 4] = ["untrusted", "missing", "malformed", "incomplete"];

/// 100 µs to 10 s, as the contract asks.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Label value of `bistream_connections` for `/ws/echo`.
pub const ECHO_LABEL: &str = "echo";

pub struct Metrics {
    registry: Registry,
    pub connections: IntGaugeVec,
    pub connections_total: IntCounter,
    pub handshake_failures: IntCounterVec,
    pub events_published: IntCounter,
    pub messages_delivered: IntCounter,
    pub slow_consumer_disconnects: IntCounter,
    pub delivery_latency: Histogram,
    pub recoveries: IntCounterVec,
    pub history_bytes: IntGauge,
    pub history_streams: IntGauge,
    pub disconnects: IntCounterVec,
    pub publish_requests: IntCounterVec,
    pub events_conflated: IntCounter,
    pub last_values: IntGauge,
    pub last_values_bytes: IntGauge,
    pub engine_up: IntGauge,
    pub engine_resyncs: IntCounterVec,
    /// Batches of publishes applied in Redis, by `path`: `transaction` or `script`.
    pub engine_publish_batches: IntCounterVec,
    pub engine_publish_conflicts: IntCounter,
    pub handovers: IntCounterVec,
    pub handover_state_bytes: IntGauge,
    pub handover_duration: prometheus::Gauge,
    pub proxy_headers: IntCounterVec,
    pub proxy_refusals: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Names and label sets are compile-time constants: a failure is a programming error.
    r.expect("metric definition is valid")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let connections = must(IntGaugeVec::new(
            Opts::new(CONNECTIONS, "Open WebSocket connections"),
            &["channel"],
        ));
        let connections_total = must(IntCounter::new(
            CONNECTIONS_TOTAL,
            "WebSocket connections established since start",
        ));
        let handshake_failures = must(IntCounterVec::new(
            Opts::new(
                HANDSHAKE_FAILURES_TOTAL,
                "Upgrade requests refused, by HTTP status (0: closed without a response)",
            ),
            &["status"],
        ));
        let events_published = must(IntCounter::new(
            EVENTS_PUBLISHED_TOTAL,
            "Stream events published (after `*` and lists are expanded)",
        ));
        let messages_delivered = must(IntCounter::new(
            MESSAGES_DELIVERED_TOTAL,
            "Event messages written to client sockets",
        ));
        let slow_consumer_disconnects = must(IntCounter::new(
            SLOW_CONSUMER_DISCONNECTS_TOTAL,
            "Connections closed with 1013 because their outbound queue passed --max-queue-bytes",
        ));
        let delivery_latency = must(Histogram::with_opts(
            HistogramOpts::new(
                DELIVERY_LATENCY_SECONDS,
                "Time from acceptance by the publisher to the last byte written to the socket",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        ));
        let recoveries = must(IntCounterVec::new(
            Opts::new(RECOVERIES_TOTAL, "Reconnects with `since`, by outcome"),
            &["complete"],
        ));
        let history_bytes = must(IntGauge::new(
            HISTORY_BYTES,
            "Bytes of encoded frames held in stream history",
        ));
        let history_streams = must(IntGauge::new(
            HISTORY_STREAMS,
            "Streams the publisher currently tracks",
        ));
        let disconnects = must(IntCounterVec::new(
            Opts::new(
                DISCONNECTS_TOTAL,
                "WebSocket connections closed, by close code (0: transport closed without one)",
            ),
            &["code"],
        ));
        let publish_requests = must(IntCounterVec::new(
            Opts::new(
                PUBLISH_REQUESTS_TOTAL,
                "POST /api/events requests, by HTTP status",
            ),
            &["status"],
        ));
        let events_conflated = must(IntCounter::new(
            EVENTS_CONFLATED_TOTAL,
            "Live events dropped from a conflate=1 connection's queue for a newer one of the same key",
        ));
        let last_values = must(IntGauge::new(
            LAST_VALUES,
            "Last values (newest event per key and stream) held for snapshots",
        ));
        let last_values_bytes = must(IntGauge::new(
            LAST_VALUES_BYTES,
            "Bytes of last values held (frames and bookkeeping)",
        ));
        let engine_up = must(IntGauge::new(
            ENGINE_UP,
            "1 while the engine that holds the streams' state is reachable (always 1 for memory)",
        ));
        let engine_resyncs = must(IntCounterVec::new(
            Opts::new(
                ENGINE_RESYNCS_TOTAL,
                "Streams caught up from Redis after a gap or a lost link, by outcome",
            ),
            &["outcome"],
        ));
        let engine_publish_batches = must(IntCounterVec::new(
            Opts::new(
                ENGINE_PUBLISH_BATCHES_TOTAL,
                "Batches of publishes applied in Redis, by path (transaction or script)",
            ),
            &["path"],
        ));
        let engine_publish_conflicts = must(IntCounter::new(
            ENGINE_PUBLISH_CONFLICTS_TOTAL,
            "Publish transactions Redis refused because another node published to one of their streams meanwhile",
        ));
        let handovers = must(IntCounterVec::new(
            Opts::new(
                HANDOVERS_TOTAL,
                "Hand-overs to a new process (SIGUSR2) this process started, by outcome",
            ),
            &["outcome"],
        ));
        let handover_state_bytes = must(IntGauge::new(
            HANDOVER_STATE_BYTES,
            "Bytes of stream state in the last hand-over (sent by the old process, received by the new)",
        ));
        let handover_duration = must(prometheus::Gauge::new(
            HANDOVER_DURATION_SECONDS,
            "Duration of the last hand-over: SIGUSR2 to commit in the old process, start to commit in the new",
        ));
        let proxy_headers = must(IntCounterVec::new(
            Opts::new(
                PROXY_HEADERS_TOTAL,
                "PROXY protocol headers accepted, by version (--proxy-protocol)",
            ),
            &["version"],
        ));
        let proxy_refusals = must(IntCounterVec::new(
            Opts::new(
                PROXY_REFUSALS_TOTAL,
                "Connections closed without an answer for their PROXY header, by reason",
            ),
            &["reason"],
        ));
        for c in [
            Box::new(handovers.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(handover_state_bytes.clone()),
            Box::new(handover_duration.clone()),
            Box::new(proxy_headers.clone()),
            Box::new(proxy_refusals.clone()),
            Box::new(connections.clone()),
            Box::new(connections_total.clone()),
            Box::new(handshake_failures.clone()),
            Box::new(events_published.clone()),
            Box::new(messages_delivered.clone()),
            Box::new(slow_consumer_disconnects.clone()),
            Box::new(delivery_latency.clone()),
            Box::new(recoveries.clone()),
            Box::new(history_bytes.clone()),
            Box::new(history_streams.clone()),
            Box::new(disconnects.clone()),
            Box::new(publish_requests.clone()),
            Box::new(events_conflated.clone()),
            Box::new(last_values.clone()),
            Box::new(last_values_bytes.clone()),
            Box::new(engine_up.clone()),
            Box::new(engine_resyncs.clone()),
            Box::new(engine_publish_batches.clone()),
            Box::new(engine_publish_conflicts.clone()),
        ] {
            must(registry.register(c));
        }
        // Show every channel from the first scrape, so dashboards see zeros, not gaps.
        for ch in Channel::ALL {
            connections.with_label_values(&[ch.id()]).set(0);
        }
        for complete in ["true", "false"] {
            recoveries.with_label_values(&[complete]).inc_by(0);
        }
        engine_up.set(1);
        for outcome in ["caught_up", "resync", "new_epoch"] {
            engine_resyncs.with_label_values(&[outcome]).inc_by(0);
        }
        for path in ["transaction", "script"] {
            engine_publish_batches.with_label_values(&[path]).inc_by(0);
        }
        for outcome in HANDOVER_OUTCOMES {
            handovers.with_label_values(&[outcome]).inc_by(0);
        }
        for reason in PROXY_REFUSAL_REASONS {
            proxy_refusals.with_label_values(&[reason]).inc_by(0);
        }
        Metrics {
            registry,
            connections,
            connections_total,
            handshake_failures,
            events_published,
            messages_delivered,
            slow_consumer_disconnects,
            delivery_latency,
            recoveries,
            history_bytes,
            history_streams,
            disconnects,
            publish_requests,
            events_conflated,
            last_values,
            last_values_bytes,
            engine_up,
            engine_resyncs,
            engine_publish_batches,
            engine_publish_conflicts,
            handovers,
            handover_state_bytes,
            handover_duration,
            proxy_headers,
            proxy_refusals,
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }

    pub fn handshake_failure(&self, status: u16) {
        self.handshake_failures
            .with_label_values(&[&status.to_string()])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Per-loop accumulators for the hot path.
pub struct LoopMetrics {
    pub delivered: u64,
    pub conflated: u64,
    pub latency: LocalHistogram,
}

impl LoopMetrics {
    pub fn new(m: &Metrics) -> LoopMetrics {
        LoopMetrics {
            delivered: 0,
            conflated: 0,
            latency: m.delivery_latency.local(),
        }
    }

    pub fn flush(&mut self, m: &Metrics) {
        if self.conflated > 0 {
            m.events_conflated.inc_by(self.conflated);
            self.conflated = 0;
        }
        if self.delivered > 0 {
            m.messages_delivered.inc_by(self.delivered);
            self.delivered = 0;
            self.latency.flush();
        }
    }
}
