//! The run's summary: what the final table and `--json` show, and what `--slo` judges.

use crate::accounting::{ConflateTally, SnapshotTally};
use crate::procstat::ProcSample;
use crate::slo::Verdict;
use crate::units::{fmt_bytes, fmt_ns, fmt_si};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency figures of one histogram, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p95_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub p9999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
}

impl LatencySummary {
    /// The figures of a histogram of nanoseconds; `None` when it is empty.
    pub fn from_hist(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: h.len(),
            min_ns: h.min(),
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p95_ns: h.value_at_quantile(0.95),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            p9999_ns: h.value_at_quantile(0.9999),
            max_ns: h.max(),
            mean_ns: h.mean().round() as u64,
        })
    }
}

/// What was asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunInfo {
    pub target: String,
    pub connections: u64,
    pub channels: Vec<String>,
    pub locations: usize,
    pub streams: usize,
    pub procs: usize,
    /// `rate`, `burst` or `idle`.
    pub mode: String,
    /// Events a second (`rate`) or events in the burst (`burst`).
    pub mode_value: u64,
    pub batch: usize,
    /// Publisher connections.
    pub publishers: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
}

/// Subscriber connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConnSummary {
    pub requested: u64,
    pub established: u64,
    /// Connections that never got `BI_CONNECTION_ESTABLISHED`, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Established connections the server closed before the run ended.
    pub closed_by_server: u64,
}

impl ConnSummary {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// The publisher's side.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishSummary {
    /// Events the server accepted (`202`), warm-up included.
    pub events: u64,
    /// Of which during warm-up.
    pub warmup_events: u64,
    /// Requests sent.
    pub requests: u64,
    /// Failed requests by reason (`http_503`, `io`); their events are not counted.
    pub errors: BTreeMap<String, u64>,
    /// Events of requests whose outcome is unknown (connection lost mid-request).
    pub unconfirmed_events: u64,
    /// Scheduled events not sent because the phase ended first (the publisher was behind).
    pub unsent_events: u64,
    /// Accepted events a second over the measured phase.
    pub events_per_second: f64,
    /// The rate asked for in the measured phase (0 for a burst).
    pub target_per_second: f64,
    /// Longest the publisher fell behind its schedule.
    pub max_lag_ns: u64,
}

/// The subscribers' side.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliverySummary {
    /// Events received by all connections, warm-up included.
    pub total: u64,
    /// Events received that were sent after the warm-up (the latency histogram's count).
    pub measured: u64,
    /// Events the connections should have received (Σ events published to each one's stream).
    pub expected: u64,
    /// Expected events not received (by seq).
    pub lost: u64,
    /// Events received above the expected seq range (another publisher's).
    pub extra: u64,
    /// Seqs that arrived after a higher one, or twice.
    pub order_violations: u64,
    pub duplicates: u64,
    /// Times a seq jumped ahead of the next expected one.
    pub gaps: u64,
    /// Whether gap bookkeeping overflowed (losses are then an upper bound).
    pub imprecise: bool,
    /// Text messages that were not JSON the harness understands.
    pub bad_messages: u64,
    /// Events without a send time (not from this harness).
    pub untimed: u64,
    /// Measured deliveries a second (first to last measured delivery).
    pub per_second: f64,
}

impl DeliverySummary {
    /// Lost deliveries as a fraction of expected (0 when nothing was expected).
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

/// The server process, read from `/proc` (with `--server-pid`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerSummary {
    pub pid: u32,
    /// Before the first connection.
    pub before: ProcSample,
    /// Once every connection was established (or failed), after `--settle` with `--idle`.
    pub connected: ProcSample,
    /// After the drain, before the harness closed its connections.
    pub end: ProcSample,
    /// `(connected.rss − before.rss) / established connections`.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU time of the whole run, connects included.
    pub cpu_total_s: f64,
    /// CPU time from the first publish to the end of the drain.
    pub cpu_publish_s: f64,
    /// `cpu_publish_s` over every delivery (warm-up included), in µs.
    pub cpu_us_per_delivery: Option<f64>,
}

impl ServerSummary {
    /// The figures of three readings of the server.
    pub fn new(
        pid: u32,
        before: ProcSample,
        connected: ProcSample,
        end: ProcSample,
        established: u64,
        deliveries: u64,
    ) -> Self {
        let cpu_publish_s = (end.cpu_s - connected.cpu_s).max(0.0);
        ServerSummary {
            pid,
            before,
            connected,
            end,
            rss_per_connection_bytes: (established > 0).then(|| {
                (connected.rss_bytes as f64 - before.rss_bytes as f64) / established as f64
            }),
            cpu_total_s: (end.cpu_s - before.cpu_s).max(0.0),
            cpu_publish_s,
            cpu_us_per_delivery: (deliveries > 0).then(|| cpu_publish_s * 1e6 / deliveries as f64),
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub run: RunInfo,
    pub connections: ConnSummary,
    /// Connect times: TCP connect to `BI_CONNECTION_ESTABLISHED`.
    pub connect: Option<LatencySummary>,
    pub published: PublishSummary,
    pub deliveries: DeliverySummary,
    /// Delivery latency: publisher's send time to the subscriber's read.
    pub latency: Option<LatencySummary>,
    /// Close codes the server sent (1006: connection closed without a close frame).
    pub closes: BTreeMap<u16, u64>,
    /// The server's memory and CPU, when its PID was given.
    pub server: Option<ServerSummary>,
    /// Conflating connections (`--conflate-share`): their last value of each key.
    pub conflation: Option<ConflateTally>,
    /// Snapshot connections (`--snapshot-share`): the shape of their snapshots.
    pub snapshots: Option<SnapshotTally>,
    pub slo: Vec<Verdict>,
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short text for a close code.
pub fn close_name(code: u16) -> &'static str {
    match code {
        1000 => "normal",
        1001 => "going away",
        1002 => "protocol error",
        1005 => "no status",
        1006 => "no close frame",
        1007 => "bad data",
        1008 => "policy",
        1009 => "too big",
        1011 => "internal error",
        1013 => "slow consumer",
        _ => "other",
    }
}

/// The human table printed at the end of a run.
pub fn render_table(s: &Summary) -> String {
    let mut o = String::new();
    let r = &s.run;
    let _ = writeln!(
        o,
        "bistream-loadtest  target {}  {} connections on {} stream{} ({} channel{} x {} location{}), {} worker process{}",
        r.target,
        r.connections,
        r.streams,
        plural(r.streams as u64),
        r.channels.len(),
        plural(r.channels.len() as u64),
        r.locations,
        plural(r.locations as u64),
        r.procs,
        if r.procs == 1 { "" } else { "es" },
    );
    let mode = if r.mode == "burst" {
        format!("burst of {} events, batch {}", r.mode_value, r.batch)
    } else if r.mode == "idle" {
        format!("idle: no events, connections held {}s", r.duration_s)
    } else {
        format!(
            "rate {} events/s, batch {}, {}s after {}s warm-up",
            r.mode_value, r.batch, r.duration_s, r.warmup_s
        )
    };
    let publishers = if r.publishers > 1 {
        format!(", {} publisher connections", r.publishers)
    } else {
        String::new()
    };
    let _ = writeln!(o, "run          {mode}{publishers}");
    let c = &s.connections;
    let _ = writeln!(
        o,
        "connections  {} established, {} failed, {} closed by server",
        c.established,
        c.failed_total(),
        c.closed_by_server
    );
    if !c.failed.is_empty() {
        let _ = writeln!(o, "  failures   {}", counts(&c.failed));
    }
    match &s.connect {
        Some(l) => {
            let _ = writeln!(
                o,
                "connect      p50 {}  p99 {}  max {}",
                fmt_ns(l.p50_ns),
                fmt_ns(l.p99_ns),
                fmt_ns(l.max_ns)
            );
        }
        None => {
            let _ = writeln!(o, "connect      no connection established");
        }
    }
    let p = &s.published;
    let _ = writeln!(
        o,
        "published    {} events ({} warm-up), {} requests, {} errors, {} events/s, max lag {}",
        p.events,
        p.warmup_events,
        p.requests,
        p.errors.values().sum::<u64>(),
        fmt_si(p.events_per_second),
        fmt_ns(p.max_lag_ns)
    );
    if p.requests > 0
        && p.target_per_second > 0.0
        && p.events_per_second < 0.95 * p.target_per_second
    {
        let _ = writeln!(
            o,
            "  behind     the publisher sent {} of the {} events/s asked for ({} events unsent): the server (or the machine) did not keep up",
            fmt_si(p.events_per_second),
            fmt_si(p.target_per_second),
            p.unsent_events
        );
    }
    if !p.errors.is_empty() {
        let _ = writeln!(
            o,
            "  errors     {} ({} events unconfirmed)",
            counts(&p.errors),
            p.unconfirmed_events
        );
    }
    let d = &s.deliveries;
    let _ = writeln!(
        o,
        "deliveries   {} of {} expected, {} measured, {}/s",
        d.total,
        d.expected,
        d.measured,
        fmt_si(d.per_second)
    );
    match &s.latency {
        Some(l) => {
            let _ = writeln!(
                o,
                "latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}, min {})",
                fmt_ns(l.p50_ns),
                fmt_ns(l.p90_ns),
                fmt_ns(l.p99_ns),
                fmt_ns(l.p999_ns),
                fmt_ns(l.max_ns),
                fmt_ns(l.mean_ns),
                fmt_ns(l.min_ns)
            );
        }
        None => {
            let _ = writeln!(o, "latency      no measured delivery");
        }
    }
    let _ = writeln!(
        o,
        "losses       {} lost ({:.4}%){}, {} order violations ({} duplicates, {} gaps), {} extra",
        d.lost,
        d.loss_ratio() * 100.0,
        if d.imprecise { " (upper bound)" } else { "" },
        d.order_violations,
        d.duplicates,
        d.gaps,
        d.extra
    );
    if d.bad_messages > 0 || d.untimed > 0 {
        let _ = writeln!(
            o,
            "  messages   {} not understood, {} events without send time",
            d.bad_messages, d.untimed
        );
    }
    if s.closes.is_empty() {
        let _ = writeln!(o, "closes       none");
    } else {
        let list: Vec<String> = s
            .closes
            .iter()
            .map(|(code, n)| format!("{code} ({}) {n}", close_name(*code)))
            .collect();
        let _ = writeln!(o, "closes       {}", list.join(", "));
    }
    if let Some(c) = &s.conflation {
        let _ = writeln!(
            o,
            "conflation   {} connection{}: {} (connection, key) pairs end on the last published value, {} do not ({} never received the key), {} unknown; {} seqs skipped, {} order violations",
            c.connections,
            plural(c.connections),
            c.matching,
            c.mismatching,
            c.missing,
            c.unknown,
            c.skipped,
            c.order_violations
        );
    }
    if let Some(t) = &s.snapshots {
        let _ = writeln!(
            o,
            "snapshots    {} connection{}: {} markers, {} snapshot events; {} with errors ({} no marker, {} bad seq, {} bad marker, {} live before the marker)",
            t.connections,
            plural(t.connections),
            t.markers,
            t.events,
            t.errors(),
            t.missing_marker,
            t.bad_seq,
            t.bad_marker,
            t.live_before_marker
        );
    }
    if let Some(srv) = &s.server {
        let per_conn = srv
            .rss_per_connection_bytes
            .map(|b| format!(" ({} per connection)", fmt_bytes(b)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "server       pid {}  RSS {} before, {} connected{per_conn}, {} at end (peak {}); fds {} / {} / {}",
            srv.pid,
            fmt_bytes(srv.before.rss_bytes as f64),
            fmt_bytes(srv.connected.rss_bytes as f64),
            fmt_bytes(srv.end.rss_bytes as f64),
            fmt_bytes(srv.end.peak_rss_bytes as f64),
            srv.before.fds,
            srv.connected.fds,
            srv.end.fds,
        );
        let per_delivery = srv
            .cpu_us_per_delivery
            .map(|us| format!(", {us:.2}us per delivery"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  cpu        {:.2}s in all, {:.2}s from the first publish to the end of the drain{per_delivery}",
            srv.cpu_total_s, srv.cpu_publish_s
        );
    }
    for (i, v) in s.slo.iter().enumerate() {
        let _ = writeln!(
            o,
            "{}{:<7}{}  (measured {})",
            if i == 0 {
                "slo          "
            } else {
                "             "
            },
            if v.ok { "ok" } else { "BREACH" },
            v.objective,
            v.measured
        );
    }
    o
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The `--json` document.
pub fn render_json(s: &Summary) -> String {
    serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run of 1000 connections with p99 = 2ms, p99.9 = 8ms and 3 lost deliveries.
    pub(crate) fn sample_summary() -> Summary {
        let mut closes = BTreeMap::new();
        closes.insert(1013, 2);
        let mut failed = BTreeMap::new();
        failed.insert("http_503".to_string(), 4);
        Summary {
            run: RunInfo {
                target: "127.0.0.1:8000".into(),
                connections: 1000,
                channels: vec!["dashboard".into()],
                locations: 1,
                streams: 1,
                procs: 1,
                mode: "rate".into(),
                mode_value: 100,
                batch: 1,
                publishers: 1,
                duration_s: 5.0,
                warmup_s: 1.0,
            },
            connections: ConnSummary {
                requested: 1000,
                established: 996,
                failed,
                closed_by_server: 2,
            },
            connect: Some(LatencySummary {
                count: 996,
                p50_ns: 1_200_000,
                p99_ns: 4_300_000,
                max_ns: 8_000_000,
                ..Default::default()
            }),
            published: PublishSummary {
                events: 600,
                warmup_events: 100,
                requests: 600,
                events_per_second: 100.0,
                target_per_second: 100.0,
                max_lag_ns: 1_500_000,
                ..Default::default()
            },
            deliveries: DeliverySummary {
                total: 597_597,
                measured: 497_997,
                expected: 597_600,
                lost: 3,
                per_second: 99_600.0,
                ..Default::default()
            },
            latency: Some(LatencySummary {
                count: 497_997,
                min_ns: 90_000,
                p50_ns: 500_000,
                p90_ns: 900_000,
                p95_ns: 1_000_000,
                p99_ns: 2_000_000,
                p999_ns: 8_000_000,
                p9999_ns: 9_000_000,
                max_ns: 12_000_000,
                mean_ns: 600_000,
            }),
            closes,
            server: None,
            conflation: None,
            snapshots: None,
            slo: Vec::new(),
        }
    }

    #[test]
    fn table_shows_every_figure() {
        let mut s = sample_summary();
        s.slo = vec![
            Verdict {
                objective: "p99<10ms".into(),
                measured: "2.00ms".into(),
                ok: true,
            },
            Verdict {
                objective: "loss=0".into(),
                measured: "3".into(),
                ok: false,
            },
        ];
        let t = render_table(&s);
        for needle in [
            "1000 connections on 1 stream (1 channel x 1 location), 1 worker process\n",
            "rate 100 events/s, batch 1, 5s after 1s warm-up",
            "996 established, 4 failed, 2 closed by server",
            "failures   http_503 4",
            "connect      p50 1.20ms  p99 4.30ms  max 8.00ms",
            "published    600 events (100 warm-up), 600 requests, 0 errors, 100 events/s, max lag 1.50ms",
            "deliveries   597597 of 597600 expected, 497997 measured, 99.6k/s",
            "latency      p50 500us  p90 900us  p99 2.00ms  p99.9 8.00ms  max 12.0ms  (mean 600us, min 90.0us)",
            "losses       3 lost (0.0005%), 0 order violations (0 duplicates, 0 gaps), 0 extra",
            "closes       1013 (slow consumer) 2",
            "slo          ok     p99<10ms  (measured 2.00ms)",
            "             BREACH loss=0  (measured 3)",
        ] {
            assert!(t.contains(needle), "missing `{needle}` in:\n{t}");
        }
    }

    #[test]
    fn empty_runs_render() {
        let mut s = sample_summary();
        s.latency = None;
        s.connect = None;
        s.closes.clear();
        s.run.mode = "burst".into();
        s.run.mode_value = 5000;
        s.run.publishers = 4;
        s.published.events_per_second = 50.0;
        let t = render_table(&s);
        assert!(t.contains(
            "behind     the publisher sent 50 of the 100 events/s asked for (0 events unsent)"
        ));
        assert!(t.contains("latency      no measured delivery"));
        assert!(t.contains("connect      no connection established"));
        assert!(t.contains("closes       none"));
        assert!(t.contains("burst of 5000 events, batch 1, 4 publisher connections"));
    }

    #[test]
    fn conflation_and_snapshot_lines() {
        let mut s = sample_summary();
        s.conflation = Some(ConflateTally {
            connections: 500,
            matching: 9_990,
            mismatching: 10,
            missing: 4,
            unknown: 0,
            skipped: 1234,
            order_violations: 0,
        });
        s.snapshots = Some(SnapshotTally {
            connections: 250,
            failed: 1,
            markers: 249,
            events: 5000,
            missing_marker: 1,
            ..Default::default()
        });
        let t = render_table(&s);
        assert!(t.contains("conflation   500 connections: 9990 (connection, key) pairs end on the last published value, 10 do not (4 never received the key), 0 unknown; 1234 seqs skipped, 0 order violations"), "{t}");
        assert!(t.contains("snapshots    250 connections: 249 markers, 5000 snapshot events; 1 with errors (1 no marker"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&render_json(&s)).unwrap();
        assert_eq!(j["conflation"]["mismatching"], 10);
        assert_eq!(j["snapshots"]["missing_marker"], 1);
    }

    #[test]
    fn json_has_machine_fields() {
        let j: serde_json::Value = serde_json::from_str(&render_json(&sample_summary())).unwrap();
        assert_eq!(j["latency"]["p99_ns"], 2_000_000);
        assert_eq!(j["deliveries"]["lost"], 3);
        assert_eq!(j["closes"]["1013"], 2);
        assert_eq!(j["connections"]["failed"]["http_503"], 4);
    }

    #[test]
    fn histogram_figures() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let l = LatencySummary::from_hist(&h).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50_ns as i64 - 500_000).abs() < 1000);
        assert!((l.p99_ns as i64 - 990_000).abs() < 1000);
        assert!(LatencySummary::from_hist(&Histogram::<u64>::new(3).unwrap()).is_none());
    }
}
