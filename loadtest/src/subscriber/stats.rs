//! The counters and histograms of one worker's subscribers, and its final report.

use super::session::{Accounting, Tracking};
use crate::accounting::LastValues;
use crate::worker::{hist_to_hex, new_hist, Final, Progress};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Counters of the loop.
#[derive(Debug)]
pub struct Stats {
    pub established: u64,
    /// Never established, by kind.
    pub failed: BTreeMap<String, u64>,
    pub failed_count: u64,
    /// Live connections the server ended (close frame, EOF, reset or a protocol error).
    pub closed_by_server: u64,
    pub closes: BTreeMap<u16, u64>,
    pub deliveries: u64,
    pub measured: u64,
    pub bad_messages: u64,
    pub untimed: u64,
    /// Wall-clock ns of the first and last measured delivery.
    pub first_measured_ns: u64,
    pub last_measured_ns: u64,
    pub latency: Histogram<u64>,
    /// Latencies since the last progress report.
    pub interval: Histogram<u64>,
    pub connect: Histogram<u64>,
    /// Connections the client ended (churn), by kind.
    pub churned: BTreeMap<String, u64>,
    pub churned_count: u64,
    /// Churned closes the server did not answer in time.
    pub close_timeouts: u64,
}

/// The accounting of a connection that has ended.
#[derive(Debug)]
pub struct Ended {
    pub stream: usize,
    pub accounting: Accounting,
    /// Tally up to this seq instead of the stream's final one: a connection that joined
    /// or left while events were being published (churn) is owed only what was
    /// published while it was there, and what it had not received when it left was
    /// not lost.
    pub upto: Option<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            established: 0,
            failed: BTreeMap::new(),
            failed_count: 0,
            closed_by_server: 0,
            closes: BTreeMap::new(),
            deliveries: 0,
            measured: 0,
            bad_messages: 0,
            untimed: 0,
            first_measured_ns: 0,
            last_measured_ns: 0,
            latency: new_hist(),
            interval: new_hist(),
            connect: new_hist(),
            churned: BTreeMap::new(),
            churned_count: 0,
            close_timeouts: 0,
        }
    }
}

impl Stats {
    /// A connection that never got established, by kind.
    pub fn fail(&mut self, kind: String, n: u64) {
        *self.failed.entry(kind).or_default() += n;
        self.failed_count += n;
    }

    /// One delivery of an event sent at `t_ns` (publisher's clock), read at `now_ns`.
    pub fn delivery(&mut self, t_ns: Option<u64>, warm: bool, now_ns: u64) {
        self.deliveries += 1;
        match t_ns {
            Some(t) if !warm => {
                let latency = now_ns.saturating_sub(t).max(1);
                let _ = self.latency.record(latency);
                let _ = self.interval.record(latency);
                self.measured += 1;
                if self.first_measured_ns == 0 {
                    self.first_measured_ns = now_ns;
                }
                self.last_measured_ns = now_ns;
            }
            Some(_) => {}
            None => self.untimed += 1,
        }
    }

    /// A connection the client ended on purpose.
    pub fn churn(&mut self, kind: &str) {
        *self.churned.entry(kind.to_owned()).or_default() += 1;
        self.churned_count += 1;
    }

    /// The progress report (with `open` connections now); starts a new latency interval.
    pub fn progress(&mut self, open: u64) -> Progress {
        let p = Progress {
            established: self.established,
            failed: self.failed_count,
            closed: self.closed_by_server,
            deliveries: self.deliveries,
            open,
            churned: self.churned_count,
            interval_hist: hist_to_hex(&self.interval),
        };
        self.interval.reset();
        p
    }

    /// The final report: these counters; the loss accounting of every ordinary
    /// connection against its stream's final seq (`published[stream]` events after its
    /// base) or its own `upto`; every conflating connection's last values against
    /// `last_values` of its stream (unless it was churned: `upto` is set); and the
    /// snapshots.
    pub fn to_final<'a>(
        &self,
        connections: impl Iterator<Item = (usize, &'a Accounting, Option<u64>)>,
        published: &[u64],
        last_values: &[LastValues],
    ) -> Final {
        let mut f = Final {
            established: self.established,
            failed: self.failed.clone(),
            closed_by_server: self.closed_by_server,
            closes: self.closes.iter().map(|(k, v)| (*k, *v)).collect(),
            deliveries: self.deliveries,
            measured: self.measured,
            bad_messages: self.bad_messages,
            untimed: self.untimed,
            first_measured_ns: self.first_measured_ns,
            last_measured_ns: self.last_measured_ns,
            latency_hist: hist_to_hex(&self.latency),
            connect_hist: hist_to_hex(&self.connect),
            churned: self.churned.clone(),
            close_timeouts: self.close_timeouts,
            ..Default::default()
        };
        let none = LastValues::new();
        for (stream, acc, upto) in connections {
            if let Some(check) = &acc.snapshot {
                f.snapshots.add(&check.tally());
            }
            match &acc.tracking {
                Tracking::Strict(t) => {
                    let final_seq = upto
                        .unwrap_or_else(|| t.base() + published.get(stream).copied().unwrap_or(0));
                    let tally = t.tally(final_seq);
                    f.expected += tally.expected;
                    f.lost += tally.lost;
                    f.extra += tally.extra;
                    f.imprecise |= tally.imprecise;
                    f.order_violations += t.order_violations;
                    f.duplicates += t.duplicates;
                    f.gaps += t.gaps;
                }
                Tracking::Conflating(c) => {
                    let want = match upto {
                        None => last_values.get(stream).unwrap_or(&none),
                        Some(_) => &none,
                    };
                    let tally = c.tally(want);
                    f.order_violations += tally.order_violations;
                    f.conflation.add(&tally);
                }
            }
        }
        f
    }
}
