//! Time in the two forms the server needs: wall-clock milliseconds for the wire
//! (`server_time`, `published_at`) and a cheap monotonic nanosecond stamp for
//! measuring delivery latency across threads.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static BASE: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn wall_secs() -> u64 {
    wall_ms() / 1000
}

/// Monotonic nanoseconds since the first call in this process. Never 0, so that
/// 0 can mean "no stamp" in the outbound queue.
pub fn mono_ns() -> u64 {
    let base = *BASE.get_or_init(Instant::now);
    base.elapsed().as_nanos() as u64 + 1
}

/// A moment on the monotonic clock, in whole milliseconds since the process
/// first read the clock: 8 bytes where an `Instant` takes 16. Connection
/// deadlines and heartbeat stamps are kept as these, so an idle connection
/// and its timer entry stay small. Milliseconds are fine enough for every
/// deadline the server keeps (the shortest is a 10 ms heartbeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tick(u64);

impl Tick {
    /// Never: later than every other tick.
    pub const NEVER: Tick = Tick(u64::MAX);

    pub fn now() -> Tick {
        Tick::of(Instant::now())
    }

    pub fn of(at: Instant) -> Tick {
        let base = *BASE.get_or_init(Instant::now);
        Tick(at.saturating_duration_since(base).as_millis() as u64)
    }

    /// How long from `earlier` to this tick (zero if `earlier` is later).
    pub fn duration_since(self, earlier: Tick) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// How long from now until this tick; zero when it is due.
    pub fn until_from(self, now: Instant) -> std::time::Duration {
        let base = *BASE.get_or_init(Instant::now);
        let at = base + std::time::Duration::from_millis(self.0.min(u64::MAX / 2));
        at.saturating_duration_since(now)
    }
}

impl std::ops::Add<std::time::Duration> for Tick {
    type Output = Tick;
    fn add(self, d: std::time::Duration) -> Tick {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Tick(self.0.saturating_add(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ticks_order_add_and_saturate() {
        let t = Tick::now();
        let later = t + Duration::from_millis(1500);
        assert!(later > t);
        assert_eq!(later.duration_since(t), Duration::from_millis(1500));
        assert_eq!(t.duration_since(later), Duration::ZERO);
        assert_eq!(Tick::NEVER + Duration::from_secs(1), Tick::NEVER);
        assert!(t + Duration::MAX <= Tick::NEVER);
        assert!(later.until_from(Instant::now()) <= Duration::from_millis(1500));
        assert_eq!(
            t.until_from(Instant::now() + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
