//! Connection churn (the soak): connections that end by the client's choice after a
//! lifetime, each in one of several ways, and are replaced by new ones. Sans-io: which
//! way and when come from the connection's number alone, and the [`Pacer`] spaces the
//! connects.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How a churned connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnKind {
    /// The WebSocket closing handshake: close 1000, wait for the server's close frame.
    Close,
    /// An abortive close: `SO_LINGER` 0, so the kernel sends RST instead of FIN.
    Reset,
    /// A plain `close()` without a close frame: FIN, then nothing.
    Drop,
    /// Reset right after the upgrade request was sent, before the server's 101.
    Abort,
}

impl ChurnKind {
    pub const ALL: [ChurnKind; 4] = [
        ChurnKind::Close,
        ChurnKind::Reset,
        ChurnKind::Drop,
        ChurnKind::Abort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChurnKind::Close => "close",
            ChurnKind::Reset => "reset",
            ChurnKind::Drop => "drop",
            ChurnKind::Abort => "abort",
        }
    }

    pub fn parse(s: &str) -> Option<ChurnKind> {
        ChurnKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// What a worker's churn looks like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnSpec {
    /// Mean time from established to the client's disconnect; each connection lives
    /// between half and one and a half times this.
    pub mean_lifetime_ms: u64,
    /// The ways connections end, taken in turn by connection number.
    pub kinds: Vec<ChurnKind>,
}

impl ChurnSpec {
    /// How connection number `n` ends.
    pub fn kind(&self, n: u64) -> ChurnKind {
        if self.kinds.is_empty() {
            return ChurnKind::Close;
        }
        self.kinds[(n % self.kinds.len() as u64) as usize]
    }

    /// How long connection number `n` lives once established: spread evenly over
    /// 0.5..1.5 × the mean (a hash of `n`), so the disconnects do not come in waves.
    pub fn lifetime(&self, n: u64) -> Duration {
        // splitmix64: any fixed scramble of n does.
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let frac = (z >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(self.mean_lifetime_ms as f64 / 1e3 * (0.5 + frac))
    }
}

/// Spaces connects at a rate: a token bucket that holds at most `burst` starts.
#[derive(Debug)]
pub struct Pacer {
    /// Connects a second.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// One start is allowed at once.
    pub fn new(rate: f64, burst: u64, now: Instant) -> Self {
        Pacer {
            rate,
            burst: burst.max(1) as f64,
            tokens: 1.0,
            last: now,
        }
    }

    /// Starts allowed now (the caller then calls `take` for each it makes).
    pub fn allowed(&mut self, now: Instant) -> u64 {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return self.burst as u64;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens as u64
    }

    pub fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_take_turns_and_lifetimes_spread() {
        let spec = ChurnSpec {
            mean_lifetime_ms: 1000,
            kinds: ChurnKind::ALL.to_vec(),
        };
        let kinds: Vec<_> = (0..8).map(|n| spec.kind(n)).collect();
        assert_eq!(kinds[..4], ChurnKind::ALL);
        assert_eq!(kinds[4..], ChurnKind::ALL);
        let lives: Vec<f64> = (0..10_000)
            .map(|n| spec.lifetime(n).as_secs_f64())
            .collect();
        assert!(lives.iter().all(|l| (0.5..1.5).contains(l)));
        let mean = lives.iter().sum::<f64>() / lives.len() as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        let short = lives.iter().filter(|l| **l < 0.75).count();
        assert!((2000..3000).contains(&short), "{short}");
        assert_eq!(ChurnKind::parse("reset"), Some(ChurnKind::Reset));
        assert_eq!(ChurnKind::parse("nope"), None);
    }

    #[test]
    fn pacer_holds_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100.0, 10, t0);
        let mut started = 0;
        for ms in 0..=1000 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..p.allowed(now) {
                p.take();
                started += 1;
            }
        }
        assert!((100..=102).contains(&started), "{started}");
        // An idle pacer saves up no more than its burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.allowed(later), 10);
    }
}
