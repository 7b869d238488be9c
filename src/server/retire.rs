//! The old process's end of a hand-over, in each loop (docs/protocol.md §11):
//! once the new process serves, the loop stops accepting (the new process
//! holds the same listening sockets, so their accept queues carry over) and
//! closes its WebSocket clients with 1012 `service restart`, each at an instant
//! drawn uniformly at random over `--restart-spread`, so that they do not all
//! reconnect (and recover) in the same second. API connections finish as in a
//! drain: what was read is answered, with `Connection: close`.

use std::time::Duration;

use crate::clock::Tick;

use crate::hub::subscriptions::ConnRef;
use crate::server::timers::Timers;

/// When each open WebSocket connection of the loop is to be closed.
#[derive(Debug, Default)]
pub(crate) struct Retirement {
    due: Timers,
}

impl Retirement {
    /// One instant per connection in `[now, now + spread)`.
    pub(crate) fn new(now: Tick, spread: Duration, conns: &[ConnRef]) -> Retirement {
        let mut rng = Rng::seeded();
        let mut due = Timers::default();
        for &c in conns {
            due.push(now + spread.mul_f64(rng.unit()), c);
        }
        Retirement { due }
    }

    pub(crate) fn next(&self) -> Option<Tick> {
        self.due.next()
    }

    pub(crate) fn pop_due(&mut self, now: Tick) -> Option<ConnRef> {
        self.due.pop_due(now).map(|(_, c)| c)
    }
}

/// xorshift64*, seeded from the OS-seeded hasher: spreading closes needs
/// uniform instants, not secrets.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Rng(h.finish() | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_spread_uniformly_over_the_window() {
        let now = Tick::now();
        let spread = Duration::from_secs(10);
        let conns: Vec<ConnRef> = (0..10_000).map(|k| ConnRef { key: k, gen: 1 }).collect();
        let mut r = Retirement::new(now, spread, &conns);
        let mut buckets = [0usize; 10];
        let mut n = 0;
        let mut last = now;
        while let Some(at) = r.next() {
            assert!(at >= last && at < now + spread);
            last = at;
            let c = r.pop_due(at).unwrap();
            assert_eq!(c.gen, 1);
            buckets[(at.duration_since(now).as_secs_f64()) as usize] += 1;
            n += 1;
        }
        assert_eq!(n, 10_000);
        // Each tenth of the window gets about a tenth of the closes.
        for b in buckets {
            assert!((800..1200).contains(&b), "{buckets:?}");
        }
        assert!(Retirement::new(now, spread, &[]).next().is_none());
    }
}
