//! `--slo "p99<10ms,p999<50ms,loss=0"`: parsing (errors are usage errors, exit 2) and
//! evaluation against a run's summary (any breach makes the run exit 1).
//!
//! Grammar: objectives separated by commas; each is `METRIC OP VALUE` with OP one of
//! `<`, `<=`, `=` (or `==`), `>=`, `>`. Metrics:
//!
//! | metric | value |
//! |---|---|
//! | `p50` `p90` `p95` `p99` `p999` (`p99.9`) `p9999` (`p99.99`) `max` `mean` | delivery latency: `10ms`, `1.5ms`, `250us`, `2s` |
//! | `connect_p50` `connect_p99` `connect_max` | connect time (TCP + upgrade + first message) |
//! | `loss` | lost deliveries: a count (`0`) or a share of expected (`0.1%`) |
//! | `order` | order violations (late or duplicate seqs), a count |
//! | `connect_errors` | connections that could not be established, a count |
//! | `closes` | connections the server closed during the run, a count |
//! | `rate` | measured deliveries a second, a number (`>=100000`, `1.5M`, `200k`) |
//! | `conflate_mismatch` | (connection, key) pairs of conflating connections not ending on the key's last published value, a count |
//! | `snapshot_errors` | snapshot connections with a malformed or missing snapshot, a count |
//! | `rss_per_conn` | server RSS per connection (`--server-pid`): bytes, `512`, `1KiB` |
//! | `cpu_per_delivery` | server CPU per delivery (`--server-pid`): a duration, `10us` |

use crate::report::{LatencySummary, Summary};
use crate::units::{fmt_bytes, fmt_ns, fmt_si, parse_latency_ns, parse_size};
use serde::Serialize;
use thiserror::Error;

/// A malformed `--slo` (exit 2).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SloError {
    #[error("--slo is empty")]
    Empty,
    #[error("objective `{0}` has no comparison (write e.g. p99<10ms, loss=0)")]
    NoOperator(String),
    #[error("objective `{term}`: unknown metric `{metric}` (known: p50 p90 p95 p99 p999 p9999 max mean connect_p50 connect_p99 connect_max loss order connect_errors closes rate conflate_mismatch snapshot_errors rss_per_conn cpu_per_delivery)")]
    UnknownMetric { term: String, metric: String },
    #[error("objective `{term}`: {reason}")]
    BadValue { term: String, reason: String },
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Op {
    fn holds(self, measured: f64, threshold: f64) -> bool {
        match self {
            Op::Lt => measured < threshold,
            Op::Le => measured <= threshold,
            Op::Eq => measured == threshold,
            Op::Ge => measured >= threshold,
            Op::Gt => measured > threshold,
        }
    }
}

/// Which latency figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    P50,
    P90,
    P95,
    P99,
    P999,
    P9999,
    Max,
    Mean,
}

impl Stat {
    fn of(self, l: &LatencySummary) -> u64 {
        match self {
            Stat::P50 => l.p50_ns,
            Stat::P90 => l.p90_ns,
            Stat::P95 => l.p95_ns,
            Stat::P99 => l.p99_ns,
            Stat::P999 => l.p999_ns,
            Stat::P9999 => l.p9999_ns,
            Stat::Max => l.max_ns,
            Stat::Mean => l.mean_ns,
        }
    }
}

/// What an objective constrains, with its threshold in the metric's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// Delivery latency, threshold in ns.
    Latency(Stat, u64),
    /// Connect time, threshold in ns.
    Connect(Stat, u64),
    /// Lost deliveries, a count.
    LossCount(u64),
    /// Lost deliveries as a fraction of expected (0.001 = 0.1%).
    LossRatio(f64),
    /// Order violations.
    Order(u64),
    /// Failed connections.
    ConnectErrors(u64),
    /// Server-initiated closes.
    Closes(u64),
    /// Measured deliveries a second.
    Rate(f64),
    /// Conflating (connection, key) pairs not on the last published value.
    ConflateMismatch(u64),
    /// Snapshot connections with errors.
    SnapshotErrors(u64),
    /// Server RSS per connection, bytes.
    RssPerConn(u64),
    /// Server CPU per delivery, ns.
    CpuPerDelivery(u64),
}

/// One objective as written and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// The objective as the user wrote it (trimmed), for messages.
    pub text: String,
    pub metric: Metric,
    pub op: Op,
}

/// The outcome of one objective.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub objective: String,
    pub measured: String,
    pub ok: bool,
}

/// Parses a whole `--slo` value.
pub fn parse(spec: &str) -> Result<Vec<Objective>, SloError> {
    let terms: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if terms.is_empty() {
        return Err(SloError::Empty);
    }
    terms.into_iter().map(parse_objective).collect()
}

fn split_op(term: &str) -> Option<(&str, Op, &str)> {
    let idx = term.find(['<', '>', '='])?;
    let (lhs, rest) = term.split_at(idx);
    let (op, len) = match rest.as_bytes() {
        [b'<', b'=', ..] => (Op::Le, 2),
        [b'>', b'=', ..] => (Op::Ge, 2),
        [b'=', b'=', ..] => (Op::Eq, 2),
        [b'<', ..] => (Op::Lt, 1),
        [b'>', ..] => (Op::Gt, 1),
        _ => (Op::Eq, 1),
    };
    Some((lhs.trim(), op, rest[len..].trim()))
}

fn latency_stat(name: &str) -> Option<Stat> {
    Some(match name {
        "p50" => Stat::P50,
        "p90" => Stat::P90,
        "p95" => Stat::P95,
        "p99" => Stat::P99,
        "p999" | "p99.9" => Stat::P999,
        "p9999" | "p99.99" => Stat::P9999,
        "max" => Stat::Max,
        "mean" => Stat::Mean,
        _ => return None,
    })
}

fn parse_objective(term: &str) -> Result<Objective, SloError> {
    let (name, op, value) = split_op(term).ok_or_else(|| SloError::NoOperator(term.into()))?;
    let bad = |reason: String| SloError::BadValue {
        term: term.into(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("no value after the comparison".into()));
    }
    if value.contains(['<', '>', '=']) {
        return Err(bad(format!("`{value}` is not a value")));
    }
    let count = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| bad(format!("`{v}` is not a whole number")))
    };
    let name_lc = name.to_ascii_lowercase();
    let metric = if let Some(stat) = latency_stat(&name_lc) {
        Metric::Latency(stat, parse_latency_ns(value).map_err(bad)?)
    } else if let Some(stat) = name_lc
        .strip_prefix("connect_")
        .and_then(latency_stat)
        .filter(|s| matches!(s, Stat::P50 | Stat::P99 | Stat::Max))
    {
        Metric::Connect(stat, parse_latency_ns(value).map_err(bad)?)
    } else {
        match name_lc.as_str() {
            "loss" => {
                if let Some(pct) = value.strip_suffix('%') {
                    let p: f64 = pct
                        .trim()
                        .parse()
                        .ok()
                        .filter(|p: &f64| p.is_finite() && (0.0..=100.0).contains(p))
                        .ok_or_else(|| bad(format!("`{value}` is not a percentage")))?;
                    Metric::LossRatio(p / 100.0)
                } else {
                    Metric::LossCount(count(value)?)
                }
            }
            "order" => Metric::Order(count(value)?),
            "connect_errors" => Metric::ConnectErrors(count(value)?),
            "closes" => Metric::Closes(count(value)?),
            "rate" => Metric::Rate(parse_rate(value).map_err(bad)?),
            "conflate_mismatch" => Metric::ConflateMismatch(count(value)?),
            "snapshot_errors" => Metric::SnapshotErrors(count(value)?),
            "rss_per_conn" => Metric::RssPerConn(parse_size(value).map_err(bad)? as u64),
            "cpu_per_delivery" => Metric::CpuPerDelivery(parse_latency_ns(value).map_err(bad)?),
            _ => {
                return Err(SloError::UnknownMetric {
                    term: term.into(),
                    metric: name.into(),
                })
            }
        }
    };
    Ok(Objective {
        text: term.into(),
        metric,
        op,
    })
}

fn parse_rate(v: &str) -> Result<f64, String> {
    let (num, scale) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1e3),
        Some(b'M') => (&v[..v.len() - 1], 1e6),
        _ => (v, 1.0),
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r >= 0.0)
        .map(|r| r * scale)
        .ok_or_else(|| format!("`{v}` is not a rate (write 100000, 200k, 1.5M)"))
}

/// Evaluates every objective against a run.
pub fn evaluate(objectives: &[Objective], s: &Summary) -> Vec<Verdict> {
    objectives.iter().map(|o| evaluate_one(o, s)).collect()
}

fn evaluate_one(o: &Objective, s: &Summary) -> Verdict {
    let verdict = |measured: String, ok: bool| Verdict {
        objective: o.text.clone(),
        measured,
        ok,
    };
    let counted = |measured: u64, threshold: u64| {
        verdict(
            measured.to_string(),
            o.op.holds(measured as f64, threshold as f64),
        )
    };
    match o.metric {
        Metric::Latency(stat, t) | Metric::Connect(stat, t) => {
            let lat = if matches!(o.metric, Metric::Latency(..)) {
                s.latency.as_ref()
            } else {
                s.connect.as_ref()
            };
            match lat {
                Some(l) => {
                    let m = stat.of(l);
                    verdict(fmt_ns(m), o.op.holds(m as f64, t as f64))
                }
                None => verdict("no data".into(), false),
            }
        }
        Metric::LossCount(t) => counted(s.deliveries.lost, t),
        Metric::LossRatio(t) => {
            let r = s.deliveries.loss_ratio();
            verdict(format!("{:.4}%", r * 100.0), o.op.holds(r, t))
        }
        Metric::Order(t) => counted(s.deliveries.order_violations, t),
        Metric::ConnectErrors(t) => counted(s.connections.failed_total(), t),
        Metric::Closes(t) => counted(s.connections.closed_by_server, t),
        Metric::Rate(t) => {
            let r = s.deliveries.per_second;
            verdict(format!("{}/s", fmt_si(r)), o.op.holds(r, t))
        }
        Metric::ConflateMismatch(t) => match &s.conflation {
            // No (connection, key) pair checked is no evidence either way.
            Some(c) if c.matching + c.mismatching > 0 => counted(c.mismatching, t),
            _ => verdict("no data (needs --conflate-share)".into(), false),
        },
        Metric::SnapshotErrors(t) => match &s.snapshots {
            Some(sn) if sn.connections > 0 => counted(sn.errors(), t),
            _ => verdict("no data (needs --snapshot-share)".into(), false),
        },
        Metric::RssPerConn(t) => match s.server.as_ref().and_then(|v| v.rss_per_connection_bytes) {
            Some(b) => verdict(fmt_bytes(b), o.op.holds(b, t as f64)),
            None => verdict("no data (needs --server-pid)".into(), false),
        },
        Metric::CpuPerDelivery(t) => match s.server.as_ref().and_then(|v| v.cpu_us_per_delivery) {
            Some(us) => verdict(
                fmt_ns((us * 1e3).round() as u64),
                o.op.holds(us * 1e3, t as f64),
            ),
            None => verdict("no data (needs --server-pid)".into(), false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procstat::ProcSample;
    use crate::report::tests::sample_summary;
    use crate::report::ServerSummary;

    #[test]
    fn parses_the_issue_example() {
        let o = parse("p99<10ms,p999<50ms,loss=0").unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].metric, Metric::Latency(Stat::P99, 10_000_000));
        assert_eq!(o[0].op, Op::Lt);
        assert_eq!(o[1].metric, Metric::Latency(Stat::P999, 50_000_000));
        assert_eq!(o[2].metric, Metric::LossCount(0));
        assert_eq!(o[2].op, Op::Eq);
    }

    #[test]
    fn parses_every_operator_and_metric() {
        let o = parse(
            " p50 <= 1.5ms , p99.9<2s, max<100ms, mean<1ms, connect_p99<=200ms, loss<0.1%, order==0, connect_errors=0, closes<1, rate>=200k, p9999>0us ",
        )
        .unwrap();
        assert_eq!(o[0].metric, Metric::Latency(Stat::P50, 1_500_000));
        assert_eq!(o[0].op, Op::Le);
        assert_eq!(o[0].text, "p50 <= 1.5ms");
        assert_eq!(o[1].metric, Metric::Latency(Stat::P999, 2_000_000_000));
        assert_eq!(o[4].metric, Metric::Connect(Stat::P99, 200_000_000));
        assert_eq!(o[5].metric, Metric::LossRatio(0.001));
        assert_eq!(o[6].op, Op::Eq);
        assert_eq!(o[9].metric, Metric::Rate(200_000.0));
        assert_eq!(o[9].op, Op::Ge);
        assert_eq!(o[10].op, Op::Gt);
    }

    #[test]
    fn reports_clear_errors() {
        assert_eq!(parse(""), Err(SloError::Empty));
        assert_eq!(parse(" , "), Err(SloError::Empty));
        assert!(matches!(parse("p99"), Err(SloError::NoOperator(t)) if t == "p99"));
        assert!(matches!(
            parse("p98<10ms"),
            Err(SloError::UnknownMetric { metric, .. }) if metric == "p98"
        ));
        assert!(matches!(parse("p99<10"), Err(SloError::BadValue { .. })));
        assert!(matches!(parse("p99<"), Err(SloError::BadValue { .. })));
        assert!(matches!(parse("loss<=x"), Err(SloError::BadValue { .. })));
        assert!(matches!(parse("loss=1.5"), Err(SloError::BadValue { .. })));
        assert!(matches!(parse("loss<200%"), Err(SloError::BadValue { .. })));
        assert!(matches!(parse("p99<<10ms"), Err(SloError::BadValue { .. })));
        assert!(matches!(
            parse("connect_p90<1s"),
            Err(SloError::UnknownMetric { .. })
        ));
        let msg = parse("p99<10").unwrap_err().to_string();
        assert!(msg.contains("p99<10"), "{msg}");
    }

    #[test]
    fn evaluation_names_the_breached_objective() {
        let s = sample_summary(); // p99 = 2ms, p999 = 8ms, 3 lost
        let v = evaluate(
            &parse("p99<10ms,p999<5ms,loss=0,loss<1%,rate>1k").unwrap(),
            &s,
        );
        assert_eq!(
            v.iter().map(|v| v.ok).collect::<Vec<_>>(),
            vec![true, false, false, true, true]
        );
        assert_eq!(v[1].objective, "p999<5ms");
        assert_eq!(v[1].measured, "8.00ms");
        assert_eq!(v[2].measured, "3");
    }

    #[test]
    fn server_objectives_need_the_server() {
        let o = parse("rss_per_conn<=1KiB, cpu_per_delivery<10us").unwrap();
        assert_eq!(o[0].metric, Metric::RssPerConn(1024));
        assert_eq!(o[1].metric, Metric::CpuPerDelivery(10_000));
        let mut s = sample_summary();
        assert!(evaluate(&o, &s).iter().all(|v| !v.ok));
        let p = ProcSample::default();
        let before = ProcSample {
            rss_bytes: 1 << 20,
            ..p
        };
        let connected = ProcSample {
            rss_bytes: (1 << 20) + 996 * 800,
            cpu_s: 1.0,
            ..p
        };
        let end = ProcSample { cpu_s: 4.0, ..p };
        s.server = Some(ServerSummary::new(7, before, connected, end, 996, 597_597));
        let v = evaluate(&o, &s);
        assert_eq!((v[0].ok, v[0].measured.as_str()), (true, "800 B"));
        assert_eq!((v[1].ok, v[1].measured.as_str()), (true, "5.02us"));
    }

    #[test]
    fn conflation_and_snapshot_objectives() {
        use crate::accounting::{ConflateTally, SnapshotTally};
        let o = parse("conflate_mismatch=0, snapshot_errors=0").unwrap();
        assert_eq!(o[0].metric, Metric::ConflateMismatch(0));
        let mut s = sample_summary();
        assert!(evaluate(&o, &s).iter().all(|v| !v.ok));
        s.conflation = Some(ConflateTally {
            connections: 2,
            matching: 10,
            ..Default::default()
        });
        s.snapshots = Some(SnapshotTally {
            connections: 2,
            failed: 1,
            markers: 1,
            missing_marker: 1,
            ..Default::default()
        });
        let v = evaluate(&o, &s);
        assert_eq!(
            (v[0].ok, v[1].ok, v[1].measured.as_str()),
            (true, false, "1")
        );
    }

    #[test]
    fn latency_objectives_fail_without_data() {
        let mut s = sample_summary();
        s.latency = None;
        let v = evaluate(&parse("p99<10ms").unwrap(), &s);
        assert!(!v[0].ok);
        assert_eq!(v[0].measured, "no data");
    }
}
