//! A connection's bounded outbound queue of shared frames.
//!
//! Each entry is a reference-counted [`Bytes`]: an event frame is encoded once by
//! the publisher and every recipient's queue points at the same bytes. Whatever
//! waits on one socket goes out in one vectored write.
//!
//! Two kinds of bytes wait here (`docs/protocol.md` §6):
//! - *live* bytes (events as they are published, replies, control frames)
//!   count toward the slow-consumer bound; past it the caller closes with 1013;
//! - a *replay* (recovery, snapshot: frames history already holds) is fed into
//!   the write queue only as the socket drains, at most one bound's worth at a
//!   time, so a client that reads gets all of it however long it is, and a
//!   client that does not read is caught by the bound on what arrives live.
//!
//! Live bytes queued behind a replay wait in the backlog with it, in order.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

/// Slices per `writev`; Linux takes up to 1024, but past a few dozen frames the
/// kernel's socket buffer, not the syscall count, is the limit.
const MAX_IOV: usize = 64;

/// Stamp of a replayed or snapshot event: delivered, but not a live delivery
/// (kept out of the latency histogram), and not counted toward the bound.
pub const REPLAY_STAMP: u64 = u64::MAX;

/// What a written chunk was, for the caller's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A live event accepted by the publisher at this monotonic ns stamp.
    Live(u64),
    /// A replayed or snapshot event.
    Replayed,
}

#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    /// Monotonic ns when the publisher accepted the event; 0 for anything that
    /// is not an event (handshake, replies, control frames); [`REPLAY_STAMP`].
    stamp: u64,
}

impl Chunk {
    fn is_live(&self) -> bool {
        self.stamp != REPLAY_STAMP
    }
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
    /// What the next `writev` takes from.
    q: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Live bytes held (in `q` and the backlog), beyond what the kernel accepted.
    live: usize,
    /// Bytes in `q`, beyond what the kernel accepted (bounds the replay window).
    in_q: usize,
    /// A replay not yet in `q`, and what arrived behind it. Boxed: most
    /// connections never have one, and an idle connection's size counts.
    #[allow(clippy::box_collection)]
    backlog: Option<Box<VecDeque<Chunk>>>,
}

impl Outbound {
    /// Live bytes held: what the slow-consumer bound applies to.
    pub fn queued(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty() && self.backlog.is_none()
    }

    /// Queues live `bytes` unless that would hold more than `limit` live bytes.
    pub fn push(&mut self, bytes: Bytes, stamp: u64, limit: usize) -> Result<(), Overflow> {
        if self.live + bytes.len() > limit {
            return Err(Overflow);
        }
        self.push_unbounded(bytes, stamp);
        Ok(())
    }

    /// For the few small frames that must go out whatever the bound (a close
    /// frame, a ping, a refusal). In order behind anything already queued.
    pub fn push_unbounded(&mut self, bytes: Bytes, stamp: u64) {
        if bytes.is_empty() {
            return;
        }
        debug_assert!(stamp != REPLAY_STAMP);
        self.live += bytes.len();
        let chunk = Chunk { bytes, stamp };
        match &mut self.backlog {
            Some(b) => b.push_back(chunk),
            None => {
                self.in_q += chunk.bytes.len();
                self.q.push_back(chunk);
            }
        }
    }

    /// Queues replayed frames behind everything else; they enter the write
    /// queue as it drains (see [`Self::write_to`]).
    pub fn push_replay(&mut self, frames: impl IntoIterator<Item = Bytes>) {
        let mut frames = frames.into_iter().filter(|b| !b.is_empty()).peekable();
        if frames.peek().is_none() {
            return;
        }
        let b = self.backlog.get_or_insert_with(Default::default);
        b.extend(frames.map(|bytes| Chunk {
            bytes,
            stamp: REPLAY_STAMP,
        }));
    }

    /// Drops everything that has not started to go out; a half-written frame is
    /// kept, since cutting it would corrupt the stream. Returns the bytes dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        let keep = usize::from(self.offset > 0).min(self.q.len());
        let mut dropped = 0;
        while self.q.len() > keep {
            if let Some(c) = self.q.pop_back() {
                dropped += c.bytes.len();
                self.in_q -= c.bytes.len();
                if c.is_live() {
                    self.live -= c.bytes.len();
                }
            }
        }
        if let Some(b) = self.backlog.take() {
            for c in b.iter() {
                dropped += c.bytes.len();
                if c.is_live() {
                    self.live -= c.bytes.len();
                }
            }
        }
        dropped
    }

    /// Moves backlog chunks into the write queue: live ones as they come (they
    /// are counted already), replayed ones while the queue holds less than
    /// `window` bytes.
    fn refill(&mut self, window: usize) {
        let Some(b) = &mut self.backlog else { return };
        while let Some(front) = b.front() {
            if !front.is_live() && !self.q.is_empty() && self.in_q + front.bytes.len() > window {
                return;
            }
            let Some(c) = b.pop_front() else { break };
            self.in_q += c.bytes.len();
            self.q.push_back(c);
        }
        self.backlog = None;
    }

    /// Writes as much as the socket takes, feeding the replay in as it goes
    /// (at most `window` bytes of it queued at a time). `written` is called for
    /// each event frame whose last byte went out.
    pub fn write_to<W: Write>(
        &mut self,
        w: &mut W,
        window: usize,
        mut written: impl FnMut(Written),
    ) -> io::Result<Flushed> {
        loop {
            self.refill(window);
            if self.q.is_empty() {
                break;
            }
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
            self.advance(n, &mut written);
        }
        // Give back the ring's memory once a burst is over, so idle connections stay small.
        if self.q.capacity() > 16 {
            self.q = VecDeque::new();
        }
        Ok(Flushed::All)
    }

    fn advance(&mut self, mut n: usize, written: &mut impl FnMut(Written)) {
        self.in_q -= n;
        while n > 0 {
            let Some(front) = self.q.front() else { break };
            let left = front.bytes.len() - self.offset;
            let step = n.min(left);
            if front.is_live() {
                self.live -= step;
            }
            n -= step;
            if step < left {
                self.offset += step;
                break;
            }
            self.offset = 0;
            if let Some(c) = self.q.pop_front() {
                match c.stamp {
                    0 => {}
                    REPLAY_STAMP => written(Written::Replayed),
                    s => written(Written::Live(s)),
                }
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

    impl Trickle {
        fn open() -> Trickle {
            Trickle {
                out: vec![],
                cap: usize::MAX,
                budget: usize::MAX,
                calls: 0,
            }
        }
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

    fn stamps(o: &mut Outbound, w: &mut Trickle, window: usize) -> (Flushed, Vec<Written>) {
        let mut got = vec![];
        let r = o.write_to(w, window, |s| got.push(s)).unwrap();
        (r, got)
    }

    #[test]
    fn one_vectored_write_for_many_frames() {
        let mut o = Outbound::default();
        for i in 0..10u8 {
            o.push(Bytes::from(vec![i; 10]), 1 + i as u64, 1 << 20)
                .unwrap();
        }
        let mut w = Trickle::open();
        let (r, got) = stamps(&mut o, &mut w, 1 << 20);
        assert_eq!(r, Flushed::All);
        assert_eq!(w.calls, 1);
        assert_eq!(w.out.len(), 100);
        assert_eq!(got, (1..=10).map(Written::Live).collect::<Vec<_>>());
        assert_eq!(o.queued(), 0);
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"abcdef"), 7, 100).unwrap();
        o.push(Bytes::from_static(b"ghij"), 0, 100).unwrap();
        let mut w = Trickle {
            cap: 4,
            budget: 5,
            ..Trickle::open()
        };
        let (r, got) = stamps(&mut o, &mut w, 100);
        assert_eq!(r, Flushed::Blocked);
        assert_eq!(o.queued(), 5);
        assert!(got.is_empty());
        w.budget = 100;
        let (r, got) = stamps(&mut o, &mut w, 100);
        assert_eq!(r, Flushed::All);
        assert_eq!(w.out, b"abcdefghij");
        assert_eq!(got, vec![Written::Live(7)]);
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
            cap: 3,
            budget: 3,
            ..Trickle::open()
        };
        let _ = stamps(&mut o, &mut w, 25);
        assert_eq!(o.drop_unstarted(), 10);
        assert_eq!(o.queued(), 7);
        o.push_unbounded(Bytes::from_static(b"CLOSE"), 0);
        w.budget = 100;
        w.cap = 100;
        let _ = stamps(&mut o, &mut w, 25);
        assert_eq!(w.out, b"0123456789CLOSE");
    }

    #[test]
    fn drop_unstarted_with_nothing_started_drops_all() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"abc"), 1, 25).unwrap();
        o.push_replay([Bytes::from_static(b"replay")]);
        o.push(Bytes::from_static(b"live"), 2, 25).unwrap();
        assert_eq!(o.drop_unstarted(), 13);
        assert!(o.is_empty());
        assert_eq!(o.queued(), 0);
    }

    #[test]
    fn a_replay_longer_than_the_bound_is_fed_as_the_socket_drains() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"HELLO"), 0, 20).unwrap();
        o.push_replay((0..10u8).map(|i| Bytes::from(vec![b'a' + i; 10])));
        // Live bytes behind the replay wait for it, and are what the bound counts.
        o.push(Bytes::from_static(b"RECOVERED"), 0, 20).unwrap();
        o.push(Bytes::from_static(b"LIVE"), 9, 20).unwrap();
        assert_eq!(o.queued(), 5 + 9 + 4);
        assert_eq!(
            o.push(Bytes::from_static(b"TOO-MUCH"), 10, 20),
            Err(Overflow)
        );
        // A socket taking 12 bytes at a time: the queue never holds more than
        // the window of replay, and everything arrives in order.
        let mut w = Trickle {
            cap: 12,
            budget: 12,
            ..Trickle::open()
        };
        let mut all = vec![];
        loop {
            let (r, got) = stamps(&mut o, &mut w, 20);
            all.extend(got);
            assert!(o.in_q <= 20 + 10, "queue holds {}", o.in_q);
            if r == Flushed::All {
                break;
            }
            w.budget = 12;
        }
        let mut want = b"HELLO".to_vec();
        for i in 0..10u8 {
            want.extend(vec![b'a' + i; 10]);
        }
        want.extend_from_slice(b"RECOVEREDLIVE");
        assert_eq!(w.out, want);
        assert_eq!(all.len(), 11);
        assert_eq!(all[10], Written::Live(9));
        assert!(all[..10].iter().all(|s| *s == Written::Replayed));
        assert!(o.is_empty());
        assert_eq!(o.queued(), 0);
    }
}
