//! `--max-connections-per-ip`: WebSocket connections per client address,
//! shared by every loop. Touched once per upgrade and once per close, never
//! per event, so a mutex is cheap here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

pub(crate) struct PerIp {
    limit: Option<usize>,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    pub(crate) fn new(limit: Option<usize>) -> PerIp {
        PerIp {
            limit,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for `ip`; false when the address is at its limit.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub(crate) fn release(&self, ip: IpAddr) {
        if self.limit.is_none() {
            return;
        }
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.limit.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address() {
        let p = PerIp::new(Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(p.try_acquire(a));
        assert!(p.try_acquire(a));
        assert!(!p.try_acquire(a));
        assert!(p.try_acquire(b));
        p.release(a);
        assert!(p.try_acquire(a));
        let unlimited = PerIp::new(None);
        for _ in 0..100 {
            assert!(unlimited.try_acquire(a));
        }
    }
}
