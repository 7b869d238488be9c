//! A loop's deadline heap. Each connection has at most one live deadline (the
//! earliest thing it waits for: handshake timeout, next heartbeat, token
//! expiry, close linger); re-arming pushes a new entry and the old one is
//! recognised as stale when it comes out, so nothing is ever searched.

use crate::clock::Tick;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hub::subscriptions::ConnRef;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Tick, u32, u32)>>,
}

impl Timers {
    pub(crate) fn push(&mut self, at: Tick, conn: ConnRef) {
        self.heap.push(Reverse((at, conn.key, conn.gen)));
    }

    pub(crate) fn next(&self) -> Option<Tick> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next entry due at `now`; the caller checks it against the
    /// connection's current deadline and generation.
    pub(crate) fn pop_due(&mut self, now: Tick) -> Option<(Tick, ConnRef)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                let Reverse((at, key, gen)) = self.heap.pop()?;
                Some((at, ConnRef { key, gen }))
            }
            _ => None,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Tick::now();
        let mut t = Timers::default();
        t.push(t0 + Duration::from_secs(3), ConnRef { key: 3, gen: 1 });
        t.push(t0 + Duration::from_secs(1), ConnRef { key: 1, gen: 1 });
        t.push(t0 + Duration::from_secs(2), ConnRef { key: 2, gen: 1 });
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(t.pop_due(t0).is_none());
        let due: Vec<u32> = std::iter::from_fn(|| t.pop_due(t0 + Duration::from_secs(2)))
            .map(|(_, c)| c.key)
            .collect();
        assert_eq!(due, vec![1, 2]);
        assert_eq!(t.len(), 1);
    }
}
