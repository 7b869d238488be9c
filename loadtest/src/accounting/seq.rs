//! Loss and order accounting of one subscriber connection, computed from `seq`.
//!
//! A connection learns its stream's `last_seq` (the *base*) from
//! `BI_CONNECTION_ESTABLISHED`; it expects every seq after it that was published,
//! `base+1 ..= base+published`, exactly once and in order. The tracker is sans-io: it
//! sees seq numbers and answers what each one was, then tallies against the final
//! seq once the publisher says how many events each stream got.

/// At most this many gap ranges are remembered for late arrivals; past it, the seqs of
/// a new gap count as lost for good, a late arrival of them counts as a duplicate, and
/// the tally says `imprecise` (its `lost` is then an upper bound).
pub const MAX_TRACKED_GAPS: usize = 4096;

/// What one observed seq was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// The next seq expected.
    InOrder,
    /// Ahead of the next expected: `skipped` seqs in between are missing (for now).
    Gap { skipped: u64 },
    /// A seq that was missing arrived after a higher one: reordered, not lost.
    Late,
    /// A seq already received, or one at or below the base (from before the subscription).
    Duplicate,
}

/// Per-connection seq state.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// `last_seq` announced by `BI_CONNECTION_ESTABLISHED`.
    base: u64,
    /// Highest seq received so far (`base` before any).
    last: u64,
    /// Inclusive ranges of seqs between `base` and `last` not received yet, ascending.
    missing: Vec<(u64, u64)>,
    /// Seqs skipped by gaps that could not be remembered (`MAX_TRACKED_GAPS`).
    untracked: u64,
    /// Seqs that arrived after a higher seq or twice (`Late` + `Duplicate`).
    pub order_violations: u64,
    /// Seqs received twice (or from before the subscription).
    pub duplicates: u64,
    /// Times a seq jumped ahead of the next expected one.
    pub gaps: u64,
}

/// The accounting of one connection against the final seq of its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events published to the stream while the connection was subscribed.
    pub expected: u64,
    /// Distinct expected seqs received.
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Distinct seqs received above the final seq (another publisher's events).
    pub extra: u64,
    /// Whether a forgotten gap makes `lost` an upper bound.
    pub imprecise: bool,
}

impl SeqTracker {
    /// A tracker for a connection whose stream stood at `base` when it subscribed.
    pub fn new(base: u64) -> Self {
        SeqTracker {
            base,
            last: base,
            missing: Vec::new(),
            untracked: 0,
            order_violations: 0,
            duplicates: 0,
            gaps: 0,
        }
    }

    /// The base (`last_seq` at subscription).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Highest seq received.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Records one received seq.
    pub fn observe(&mut self, seq: u64) -> SeqOutcome {
        if seq == self.last.wrapping_add(1) {
            self.last = seq;
            return SeqOutcome::InOrder;
        }
        if seq > self.last {
            let skipped = seq - self.last - 1;
            if self.missing.len() < MAX_TRACKED_GAPS {
                self.missing.push((self.last + 1, seq - 1));
            } else {
                self.untracked += skipped;
            }
            self.last = seq;
            self.gaps += 1;
            return SeqOutcome::Gap { skipped };
        }
        // seq <= last: a late arrival if it fills a gap, else a duplicate.
        self.order_violations += 1;
        if seq > self.base {
            let idx = self.missing.partition_point(|&(_, hi)| hi < seq);
            if let Some(&(lo, hi)) = self.missing.get(idx) {
                if lo <= seq {
                    match (lo == seq, hi == seq) {
                        (true, true) => {
                            self.missing.remove(idx);
                        }
                        (true, false) => self.missing[idx].0 = seq + 1,
                        (false, true) => self.missing[idx].1 = seq - 1,
                        (false, false) => {
                            self.missing[idx].1 = seq - 1;
                            self.missing.insert(idx + 1, (seq + 1, hi));
                        }
                    }
                    return SeqOutcome::Late;
                }
            }
        }
        self.duplicates += 1;
        SeqOutcome::Duplicate
    }

    /// Whether every seq up to `final_seq` has arrived (nothing more to wait for).
    pub fn complete(&self, final_seq: u64) -> bool {
        let gap_before_final = match self.missing.first() {
            Some(&(lo, _)) => lo <= final_seq,
            None => false,
        };
        self.last >= final_seq && !gap_before_final && self.untracked == 0
    }

    /// Missing seqs within `lo..=hi`.
    fn missing_within(&self, lo: u64, hi: u64) -> u64 {
        self.missing
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.max(lo), b.min(hi));
                if a <= b {
                    b - a + 1
                } else {
                    0
                }
            })
            .sum()
    }

    /// Tallies against the stream's final seq (`base + events published to it`).
    pub fn tally(&self, final_seq: u64) -> Tally {
        let expected = final_seq.saturating_sub(self.base);
        let top = self.last.min(final_seq);
        let received = if top > self.base {
            ((top - self.base) - self.missing_within(self.base + 1, top))
                .saturating_sub(self.untracked)
        } else {
            0
        };
        let extra = if self.last > final_seq {
            (self.last - final_seq) - self.missing_within(final_seq + 1, self.last)
        } else {
            0
        };
        Tally {
            expected,
            received,
            lost: expected - received,
            extra,
            imprecise: self.untracked > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut t = SeqTracker::new(41);
        for s in 42..=51 {
            assert_eq!(t.observe(s), SeqOutcome::InOrder);
        }
        assert!(t.complete(51));
        let tally = t.tally(51);
        assert_eq!(
            tally,
            Tally {
                expected: 10,
                received: 10,
                lost: 0,
                extra: 0,
                imprecise: false
            }
        );
        assert_eq!(t.order_violations, 0);
    }

    #[test]
    fn missing_tail_is_lost() {
        let mut t = SeqTracker::new(0);
        for s in 1..=7 {
            t.observe(s);
        }
        assert!(!t.complete(10));
        let tally = t.tally(10);
        assert_eq!((tally.expected, tally.received, tally.lost), (10, 7, 3));
    }

    #[test]
    fn gaps_count_as_lost_until_they_arrive_late() {
        let mut t = SeqTracker::new(0);
        t.observe(1);
        assert_eq!(t.observe(5), SeqOutcome::Gap { skipped: 3 });
        assert_eq!(t.tally(5).lost, 3);
        assert!(!t.complete(5));
        assert_eq!(t.observe(3), SeqOutcome::Late);
        assert_eq!(t.observe(2), SeqOutcome::Late);
        assert_eq!(t.tally(5).lost, 1);
        assert_eq!(t.observe(4), SeqOutcome::Late);
        assert!(t.complete(5));
        assert_eq!(t.tally(5).lost, 0);
        assert_eq!(t.order_violations, 3);
        assert_eq!(t.gaps, 1);
        assert_eq!(t.duplicates, 0);
    }

    #[test]
    fn duplicates_and_stale_seqs_are_order_violations() {
        let mut t = SeqTracker::new(10);
        t.observe(11);
        t.observe(12);
        assert_eq!(t.observe(12), SeqOutcome::Duplicate);
        assert_eq!(t.observe(9), SeqOutcome::Duplicate);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.order_violations, 2);
        let tally = t.tally(12);
        assert_eq!((tally.received, tally.lost), (2, 0));
    }

    #[test]
    fn seqs_past_the_final_one_are_extra() {
        let mut t = SeqTracker::new(0);
        for s in 1..=5 {
            t.observe(s);
        }
        t.observe(8); // 6 and 7 missing: 6 is expected and lost, 7 would be extra
        let tally = t.tally(6);
        assert_eq!(
            (tally.expected, tally.received, tally.lost, tally.extra),
            (6, 5, 1, 1)
        );
    }

    #[test]
    fn nothing_received_is_all_lost() {
        let t = SeqTracker::new(100);
        assert_eq!(t.tally(100).expected, 0);
        assert!(t.complete(100));
        let tally = t.tally(150);
        assert_eq!((tally.expected, tally.received, tally.lost), (50, 0, 50));
    }

    #[test]
    fn gap_memory_is_bounded() {
        let mut t = SeqTracker::new(0);
        for i in 0..(MAX_TRACKED_GAPS as u64 + 10) {
            t.observe(2 * i + 2); // every odd seq skipped
        }
        assert_eq!(t.missing.len(), MAX_TRACKED_GAPS);
        let tally = t.tally(t.last());
        assert!(tally.imprecise);
        assert_eq!(tally.lost, MAX_TRACKED_GAPS as u64 + 10);
    }
}
