//! A connection's bounded outbound queue of shared frames.
//!
//! Each entry is a reference-counted [`Bytes`]: an event frame is encoded once by
//! the publisher and every recipient's queue points at the same bytes. Whatever
//! waits on one socket goes out in one vectored write.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

/// Slices per `writev`; Linux takes up to 1024, but past a few dozen frames the
/// kernel's socket buffer, not the syscall count, is the limit.
const MAX_IOV: usize = 64;

#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    /// Monotonic ns when the publisher accepted the event; 0 for anything that
    /// is not an event (handshake, replies, control frames).
    stamp: u64,
}

/// The bound was passed: the caller applies the slow-consumer policy.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is in the kernel.
    All,
    /// The socket would block; wait for writability.
    Blocked,
}

#[derive(Debug, Default)]
pub struct Outbound {
    q: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Bytes held beyond what the kernel accepted.
    queued: usize,
}

impl Outbound {
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Queues `bytes` unless that would hold more than `limit` bytes.
    pub fn push(&mut self, bytes: Bytes, stamp: u64, limit: usize) -> Result<(), Overflow> {
        if self.queued + bytes.len() > limit {
            return Err(Overflow);
        }
        self.push_unbounded(bytes, stamp);
        Ok(())
    }

    /// For the few small frames that must go out whatever the bound (a close frame).
    pub fn push_unbounded(&mut self, bytes: Bytes, stamp: u64) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        self.q.push_back(Chunk { bytes, stamp });
    }

    /// Drops everything that has not started to go out; a half-written frame is
    /// kept, since cutting it would corrupt the stream. Returns the bytes dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        let keep = usize::from(self.offset > 0).min(self.q.len());
        let mut dropped = 0;
        while self.q.len() > keep {
            if let Some(c) = self.q.pop_back() {
                dropped += c.bytes.len();
            }
        }
        self.queued -= dropped;
        dropped
    }

    /// Writes as much as the socket takes. `delivered(stamp)` is called for each
    /// event frame whose last byte went out.
    pub fn write_to<W: Write>(
        &mut self,
        w: &mut W,
        mut delivered: impl FnMut(u64),
    ) -> io::Result<Flushed> {
        while !self.q.is_empty() {
            let n = {
                let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                for (i, c) in self.q.iter().take(MAX_IOV).enumerate() {
                    let b = if i == 0 {
                        &c.bytes[self.offset..]
                    } else {
                        &c.bytes[..]
                    };
                    iov[k] = IoSlice::new(b);
                    k += 1;
                }
                match w.write_vectored(&iov[..k]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.advance(n, &mut delivered);
        }
        // Give back the ring's memory once a burst is over, so idle connections stay small.
        if self.q.capacity() > 16 {
            self.q = VecDeque::new();
        }
        Ok(Flushed::All)
    }

    fn advance(&mut self, mut n: usize, delivered: &mut impl FnMut(u64)) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.q.front() else { break };
            let left = front.bytes.len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                if let Some(c) = self.q.pop_front() {
                    if c.stamp != 0 {
                        delivered(c.stamp);
                    }
                }
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `cap` bytes per call and `budget` in all.
    struct Trickle {
        out: Vec<u8>,
        cap: usize,
        budget: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.cap - n).min(self.budget);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                self.budget -= take;
                if n == self.cap || self.budget == 0 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_vectored_write_for_many_frames() {
        let mut o = Outbound::default();
        for i in 0..10u8 {
            o.push(Bytes::from(vec![i; 10]), 1 + i as u64, 1 << 20)
                .unwrap();
        }
        let mut w = Trickle {
            out: vec![],
            cap: usize::MAX,
            budget: usize::MAX,
            calls: 0,
        };
        let mut got = vec![];
        assert_eq!(o.write_to(&mut w, |s| got.push(s)).unwrap(), Flushed::All);
        assert_eq!(w.calls, 1);
        assert_eq!(w.out.len(), 100);
        assert_eq!(got, (1..=10).collect::<Vec<u64>>());
        assert_eq!(o.queued(), 0);
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"abcdef"), 7, 100).unwrap();
        o.push(Bytes::from_static(b"ghij"), 0, 100).unwrap();
        let mut w = Trickle {
            out: vec![],
            cap: 4,
            budget: 5,
            calls: 0,
        };
        let mut got = vec![];
        assert_eq!(
            o.write_to(&mut w, |s| got.push(s)).unwrap(),
            Flushed::Blocked
        );
        assert_eq!(o.queued(), 5);
        assert!(got.is_empty());
        w.budget = 100;
        assert_eq!(o.write_to(&mut w, |s| got.push(s)).unwrap(), Flushed::All);
        assert_eq!(w.out, b"abcdefghij");
        assert_eq!(got, vec![7]);
    }

    #[test]
    fn bound_and_drop_unstarted_keeps_the_torn_frame() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"0123456789"), 1, 25).unwrap();
        o.push(Bytes::from_static(b"0123456789"), 2, 25).unwrap();
        assert_eq!(
            o.push(Bytes::from_static(b"0123456789"), 3, 25),
            Err(Overflow)
        );
        let mut w = Trickle {
            out: vec![],
            cap: 3,
            budget: 3,
            calls: 0,
        };
        let _ = o.write_to(&mut w, |_| {});
        assert_eq!(o.drop_unstarted(), 10);
        assert_eq!(o.queued(), 7);
        o.push_unbounded(Bytes::from_static(b"CLOSE"), 0);
        w.budget = 100;
        w.cap = 100;
        o.write_to(&mut w, |_| {}).unwrap();
        assert_eq!(w.out, b"0123456789CLOSE");
    }

    #[test]
    fn drop_unstarted_with_nothing_started_drops_all() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"abc"), 1, 25).unwrap();
        assert_eq!(o.drop_unstarted(), 3);
        assert!(o.is_empty());
        assert_eq!(o.queued(), 0);
    }
}
