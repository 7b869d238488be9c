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
