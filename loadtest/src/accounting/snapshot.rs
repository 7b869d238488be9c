//! A connection that asked for a snapshot on connect (`snapshot=1`, docs/protocol.md
//! §9). After `BI_CONNECTION_ESTABLISHED` (whose `last_seq` is L) come the last values,
//! as events marked `"snapshot":true` with seqs at or below L in ascending order, then
//! `{"type":"snapshot","count":N,"last_seq":L}`, then live events, all above L. This
//! checks that shape; the live events are accounted for as on any connection.

use serde::{Deserialize, Serialize};

/// Per-connection snapshot state.
#[derive(Debug, Clone)]
pub struct SnapshotCheck {
    /// `last_seq` of `BI_CONNECTION_ESTABLISHED`.
    last_seq: u64,
    /// Snapshot events received.
    events: u64,
    /// Highest snapshot seq so far.
    top: u64,
    marker: bool,
    bad_seq: bool,
    bad_marker: bool,
    live_before_marker: bool,
}

/// Snapshot connections, summed; each error kind counts connections that showed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTally {
    pub connections: u64,
    /// Connections with at least one of the errors below.
    pub failed: u64,
    /// Connections that got the marker.
    pub markers: u64,
    /// Snapshot events received.
    pub events: u64,
    /// No marker arrived.
    pub missing_marker: u64,
    /// A snapshot event above `last_seq`, out of order, or after the marker.
    pub bad_seq: u64,
    /// A marker whose `count` or `last_seq` is not what was received and announced,
    /// or a second marker.
    pub bad_marker: u64,
    /// A live event before the marker.
    pub live_before_marker: u64,
}

impl SnapshotTally {
    /// Connections with any error.
    pub fn errors(&self) -> u64 {
        self.failed
    }

    pub fn add(&mut self, o: &SnapshotTally) {
        self.connections += o.connections;
        self.failed += o.failed;
        self.markers += o.markers;
        self.events += o.events;
        self.missing_marker += o.missing_marker;
        self.bad_seq += o.bad_seq;
        self.bad_marker += o.bad_marker;
        self.live_before_marker += o.live_before_marker;
    }
}

impl SnapshotCheck {
    /// For a connection told `last_seq` on establishment.
    pub fn new(last_seq: u64) -> Self {
        SnapshotCheck {
            last_seq,
            events: 0,
            top: 0,
            marker: false,
            bad_seq: false,
            bad_marker: false,
            live_before_marker: false,
        }
    }

    /// An event marked `"snapshot":true`.
    pub fn event(&mut self, seq: u64) {
        if self.marker || seq > self.last_seq || (self.events > 0 && seq <= self.top) {
            self.bad_seq = true;
        }
        self.events += 1;
        self.top = self.top.max(seq);
    }

    /// The `snapshot` marker.
    pub fn marker(&mut self, count: u64, last_seq: u64) {
        if self.marker || count != self.events || last_seq != self.last_seq {
            self.bad_marker = true;
        }
        self.marker = true;
    }

    /// A live event (not part of the snapshot).
    pub fn live(&mut self) {
        if !self.marker {
            self.live_before_marker = true;
        }
    }

    /// What the connection showed.
    pub fn tally(&self) -> SnapshotTally {
        let failed = !self.marker || self.bad_seq || self.bad_marker || self.live_before_marker;
        SnapshotTally {
            connections: 1,
            failed: u64::from(failed),
            markers: u64::from(self.marker),
            events: self.events,
            missing_marker: u64::from(!self.marker),
            bad_seq: u64::from(self.bad_seq),
            bad_marker: u64::from(self.bad_marker),
            live_before_marker: u64::from(self.live_before_marker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_snapshot() {
        let mut s = SnapshotCheck::new(57);
        for seq in [3, 20, 57] {
            s.event(seq);
        }
        s.marker(3, 57);
        s.live();
        let t = s.tally();
        assert_eq!((t.markers, t.events, t.errors()), (1, 3, 0));
        // An empty snapshot: just the marker.
        let mut s = SnapshotCheck::new(0);
        s.marker(0, 0);
        assert_eq!(s.tally().errors(), 0);
    }

    #[test]
    fn every_kind_of_error() {
        let mut s = SnapshotCheck::new(10);
        s.live();
        assert_eq!(s.tally().missing_marker, 1);
        assert_eq!(s.tally().live_before_marker, 1);
        assert_eq!(s.tally().errors(), 1); // one connection, two errors

        let mut s = SnapshotCheck::new(10);
        s.event(11); // above last_seq
        s.marker(1, 10);
        assert_eq!(s.tally().bad_seq, 1);

        let mut s = SnapshotCheck::new(10);
        s.event(5);
        s.event(4); // out of order
        s.marker(2, 10);
        assert_eq!(s.tally().bad_seq, 1);

        let mut s = SnapshotCheck::new(10);
        s.event(5);
        s.marker(2, 10); // count differs
        assert_eq!(s.tally().bad_marker, 1);

        let mut s = SnapshotCheck::new(10);
        s.marker(0, 9); // last_seq differs
        assert_eq!(s.tally().bad_marker, 1);

        let mut s = SnapshotCheck::new(10);
        s.marker(0, 10);
        s.event(3); // after the marker
        assert_eq!(s.tally().bad_seq, 1);
        let mut total = SnapshotTally::default();
        total.add(&s.tally());
        total.add(&s.tally());
        assert_eq!((total.connections, total.errors()), (2, 2));
    }
}
