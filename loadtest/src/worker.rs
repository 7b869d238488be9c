//! The parent–worker protocol: one JSON object a line. The parent writes commands to
//! a worker's stdin (first the spec, later `finish`, then `close`); the worker writes
//! reports to its stdout. Histograms travel as hex of their HDR V2 serialization. A
//! worker whose stdin closes (the parent is gone) stops at once.
//!
//! ```text
//! parent ─spec─► worker ─progress…, ready─► parent
//! parent ─churn{on:false}─► worker: closes every connection ─paused─► parent   (soak)
//! parent ─churn{on:true}─► worker: connects and churns again                   (soak)
//! parent ─finish{published}─► worker: drains ─final─► parent (connections still open)
//! parent ─close─► worker: closes its connections politely and exits
//! ```

use crate::accounting::{ConflateTally, LastValues, SnapshotTally};
use crate::streams::Stream;
use crate::subscriber::churn::ChurnSpec;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// Highest latency the histograms track: one hour, in ns.
pub const HIST_MAX_NS: u64 = 3_600_000_000_000;
/// Significant digits of the histograms.
pub const HIST_DIGITS: u8 = 3;

/// A histogram of nanoseconds with the run's bounds.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_DIGITS).expect("constant bounds are valid")
}

/// A protocol line that cannot be read (the parent treats the worker as failed).
#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("bad protocol line: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bad histogram: {0}")]
    Hist(String),
}

/// What a worker does: its share of the connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerSpec {
    /// This worker's number, `0..procs`; it opens connections `i` with `i % procs == index`.
    pub index: usize,
    pub procs: usize,
    /// Connections of the whole run.
    pub connections: u64,
    pub addr: SocketAddr,
    pub host_header: String,
    /// Connection `i` subscribes to `streams[i % streams.len()]`.
    pub streams: Vec<Stream>,
    /// New connections a second for this worker.
    pub connect_rate: f64,
    pub connect_timeout_ms: u64,
    /// Query `token=` of every upgrade.
    pub token: Option<String>,
    /// Source addresses to bind, round-robin (empty: let the kernel choose).
    pub source_ips: Vec<IpAddr>,
    /// How often to send progress.
    pub progress_ms: u64,
    /// Churn (the soak): connections end after a lifetime and are replaced.
    #[serde(default)]
    pub churn: Option<ChurnSpec>,
    /// Share of the connections that ask for `conflate=1`.
    #[serde(default)]
    pub conflate_share: f64,
    /// Share of the connections that ask for `snapshot=1`.
    #[serde(default)]
    pub snapshot_share: f64,
}

/// Parent to worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Spec(Box<WorkerSpec>),
    /// Publishing is over: `published[s]` events went to stream `s`. Wait at most
    /// `drain_ms` for them, then report.
    Finish {
        published: Vec<u64>,
        drain_ms: u64,
        /// The last value published per key of each stream (for conflating connections).
        #[serde(default)]
        last_values: Vec<LastValues>,
    },
    /// With churn: `false` closes every connection (each in its own way) and stops
    /// connecting, answered by `paused`; `true` connects and churns again.
    Churn {
        on: bool,
    },
    /// After `final`: close the connections (close 1000) and exit.
    Close,
}

/// Counters a worker sends about once a second.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub established: u64,
    pub failed: u64,
    pub closed: u64,
    /// All events received so far.
    pub deliveries: u64,
    /// Connections open now (established or not).
    #[serde(default)]
    pub open: u64,
    /// Connections ended by the client's churn so far.
    #[serde(default)]
    pub churned: u64,
    /// Latencies recorded since the previous progress (hex V2).
    pub interval_hist: String,
}

/// A worker's final figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Final {
    pub established: u64,
    pub failed: BTreeMap<String, u64>,
    pub closed_by_server: u64,
    /// (close code, count); a list because the tagged enum cannot carry integer map keys.
    pub closes: Vec<(u16, u64)>,
    pub deliveries: u64,
    pub measured: u64,
    pub expected: u64,
    pub lost: u64,
    pub extra: u64,
    pub order_violations: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub imprecise: bool,
    pub bad_messages: u64,
    pub untimed: u64,
    /// Wall-clock ns of the first and last measured delivery (0 when none).
    pub first_measured_ns: u64,
    pub last_measured_ns: u64,
    pub latency_hist: String,
    pub connect_hist: String,
    /// Connections ended by the client's churn, by kind (`close`, `reset`, …).
    #[serde(default)]
    pub churned: BTreeMap<String, u64>,
    /// Churned closes the server did not answer with a close frame in time.
    #[serde(default)]
    pub close_timeouts: u64,
    /// Conflating connections against the last values published.
    #[serde(default)]
    pub conflation: ConflateTally,
    /// Connections that asked for a snapshot.
    #[serde(default)]
    pub snapshots: SnapshotTally,
}

/// Worker to parent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Report {
    Progress(Progress),
    /// Every connection of the worker is established or has failed.
    Ready {
        established: u64,
        failed: u64,
    },
    Final(Box<Final>),
    /// Churn is off and every connection of the worker is closed.
    Paused,
    /// The worker cannot go on.
    Fatal {
        message: String,
    },
}

/// One protocol line (without the newline).
pub fn to_line<T: Serialize>(msg: &T) -> String {
    serde_json::to_string(msg)
        .unwrap_or_else(|e| format!(r#"{{"msg":"fatal","message":"cannot encode a report: {e}"}}"#))
}

/// Parses one line.
pub fn from_line<'a, T: Deserialize<'a>>(line: &'a str) -> Result<T, ProtocolError> {
    Ok(serde_json::from_str(line)?)
}

/// Hex of a histogram's V2 serialization.
pub fn hist_to_hex(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    if V2Serializer::new().serialize(h, &mut bytes).is_err() {
        return String::new();
    }
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// A histogram from `hist_to_hex` (empty string: empty histogram).
pub fn hist_from_hex(s: &str) -> Result<Histogram<u64>, ProtocolError> {
    if s.is_empty() {
        return Ok(new_hist());
    }
    if s.len() & 1 == 1 {
        return Err(ProtocolError::Hist("odd hex length".into()));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(ProtocolError::Hist("not hex".into())),
    };
    let bytes = s
        .as_bytes()
        .chunks(2)
        .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect::<Result<Vec<u8>, ProtocolError>>()?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| ProtocolError::Hist(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_round_trip() {
        let mut h = new_hist();
        for v in [1u64, 999, 12_345, 1_000_000, 3_000_000_000] {
            h.record(v).unwrap();
        }
        let back = hist_from_hex(&hist_to_hex(&h)).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(hist_from_hex("").unwrap().is_empty());
        assert!(hist_from_hex("zz").is_err());
        assert!(hist_from_hex("abc").is_err());
    }

    #[test]
    fn messages_round_trip() {
        let f = Report::Final(Box::new(Final {
            established: 3,
            closes: vec![(1013, 1)],
            failed: [("timeout".to_string(), 2u64)].into_iter().collect(),
            ..Default::default()
        }));
        let line = to_line(&f);
        assert!(!line.contains('\n'));
        assert_eq!(from_line::<Report>(&line).unwrap(), f);
        let c = Command::Finish {
            published: vec![5, 6],
            drain_ms: 100,
            last_values: vec![[("k1".to_string(), Some(7))].into_iter().collect()],
        };
        assert_eq!(from_line::<Command>(&to_line(&c)).unwrap(), c);
        assert!(from_line::<Report>("{\"msg\":\"nope\"}").is_err());
    }
}
