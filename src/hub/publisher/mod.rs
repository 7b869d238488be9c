//! The publisher thread: the one owner of ordering, `seq` and history.
//!
//! Loops send it publish batches and subscription changes; it numbers each
//! stream event, encodes its frame once, keeps it in history, and sends it to
//! each loop that has subscribers of the stream, waking that loop.
//!
//! Backpressure without deadlock: loops never block on the publisher (they
//! `try_send` and answer 503, or retry control messages later), so the
//! publisher may block on a full loop inbox without either side waiting on
//! the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::engine::{EngineEvent, RedisEngine};
use crate::http::publish::PublishEvent;
use crate::hub::channels::{
    LoopHandle, Recovery, SubscribeAck, SubscribeRequest, ToLoop, ToPublisher,
};
use crate::hub::event::{Delivery, StreamId};
use crate::hub::export::Gate;
use crate::hub::streams::{Imported, Limits, Streams};
use crate::hub::transfer::State;
use crate::metrics::Metrics;

mod memory;
mod redis;

/// The seam between the publisher and where streams are numbered
/// (docs/protocol.md §10). The memory engine numbers here, in the publisher
/// thread (`memory.rs`), and answers a subscriber at once; the Redis engine
/// has Redis number (the loops hand publishes to it directly), relays what
/// comes back in `seq` order and answers a subscriber once the stream's state
/// is fetched. Both keep each stream's epoch, `seq`, history and last values
/// in the publisher's `Streams` (the whole state, or this node's copy), and
/// both fan out and answer subscribers through the same code: loops, fan-out
/// and the encode-once path do not know which engine runs.
trait Engine: Send {
    /// A publish request's events, from a loop.
    fn publish(&mut self, p: &mut Publisher, events: Vec<PublishEvent>);
    fn subscribe(&mut self, p: &mut Publisher, req: SubscribeRequest);
    /// A subscriber of `stream` left (the publisher's count is updated).
    fn unsubscribed(&mut self, p: &mut Publisher, stream: StreamId);
    /// News from the engine's own threads.
    fn on_engine(&mut self, p: &mut Publisher, ev: EngineEvent);
    /// Periodic work, at [`Engine::next_tick`] or later.
    fn tick(&mut self, p: &mut Publisher, now: Instant);
    fn next_tick(&self) -> Option<Instant>;
}

/// Deliveries per message to a loop: big enough to amortise the channel and the
/// wake-up, small enough that a `*` publish to thousands of streams does not
/// build one giant allocation.
const MAX_BATCH: usize = 1024;

pub struct PublisherConfig {
    pub epoch: String,
    pub limits: Limits,
    pub history_ttl: Duration,
}

pub struct Publisher {
    cfg: PublisherConfig,
    loops: Vec<LoopHandle>,
    /// Every stream's state (memory engine), or this node's cache of the
    /// streams it watches (Redis engine).
    streams: Streams,
    metrics: Arc<Metrics>,
    /// Per-loop batch being built.
    pending: Vec<Vec<Delivery>>,
    /// Where streams are numbered. `None` only while one of its methods runs
    /// (it is taken out to be handed the rest of the publisher).
    engine: Option<Box<dyn Engine>>,
    /// A hand-over's export, and the freeze after it.
    handover: Gate,
}

impl Publisher {
    pub fn new(cfg: PublisherConfig, loops: Vec<LoopHandle>, metrics: Arc<Metrics>) -> Publisher {
        let n = loops.len();
        Publisher {
            streams: Streams::new(&cfg.epoch, n, &cfg.limits),
            cfg,
            loops,
            metrics,
            pending: (0..n).map(|_| Vec::new()).collect(),
            engine: Some(Box::new(memory::Memory)),
            handover: Gate::new(n),
        }
    }

    /// Makes this the publisher of a node of the Redis engine.
    pub fn with_redis(mut self, engine: Arc<RedisEngine>) -> Publisher {
        self.engine = Some(Box::new(redis::RedisSide::new(engine)));
        self
    }

    /// Starts from the state an old process handed over (before `run`, before
    /// any loop accepts).
    pub fn import(&mut self, state: State) -> Imported {
        let done = self.streams.import(state, Instant::now());
        self.update_gauges();
        done
    }

    pub fn run(mut self, rx: Receiver<ToPublisher>) {
        let sweep_every =
            (self.cfg.history_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            // Parked, not blocked in `recv`: crossbeam's blocking receive spins
            // and calls sched_yield before it sleeps, which on a loop's core
            // steals time from fan-out (measured: docs/performance.md).
            // Senders unpark this thread (`PublisherHandle`).
            match rx.try_recv() {
                Ok(ToPublisher::Shutdown) | Err(TryRecvError::Disconnected) => return,
                Ok(msg) => {
                    self.handle(msg);
                    // Take what else is waiting before flushing, so that a burst of
                    // small publishes reaches each loop as one batch.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(ToPublisher::Shutdown) => return,
                            Ok(msg) => self.handle(msg),
                            Err(_) => break,
                        }
                    }
                    self.flush();
                }
                Err(TryRecvError::Empty) => {
                    let mut until = next_sweep;
                    if let Some(t) = self.engine.as_ref().and_then(|e| e.next_tick()) {
                        until = until.min(t);
                    }
                    std::thread::park_timeout(until.saturating_duration_since(Instant::now()));
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.streams.sweep(now, self.cfg.history_ttl);
                self.update_gauges();
                next_sweep = now + sweep_every;
            }
            self.with_engine(|e, p| e.tick(p, now));
            self.flush();
        }
    }

    fn handle(&mut self, msg: ToPublisher) {
        match msg {
            ToPublisher::Publish(_) if self.handover.frozen() => self.handover.drop_publish(),
            ToPublisher::Publish(events) => self.with_engine(|e, p| e.publish(p, events)),
            ToPublisher::Subscribe(req) => self.with_engine(|e, p| e.subscribe(p, req)),
            ToPublisher::Unsubscribe { loop_id, stream } => {
                self.streams.unsubscribe(stream, loop_id, Instant::now());
                self.with_engine(|e, p| e.unsubscribed(p, stream));
            }
            ToPublisher::Engine(ev) => self.with_engine(|e, p| e.on_engine(p, *ev)),
            ToPublisher::Handover(m) => self.handover.on(m, &self.streams),
            ToPublisher::Shutdown => {}
        }
    }

    /// Runs `f` on the engine, handing it the rest of the publisher.
    fn with_engine(&mut self, f: impl FnOnce(&mut dyn Engine, &mut Publisher)) {
        if let Some(mut e) = self.engine.take() {
            f(&mut *e, self);
            self.engine = Some(e);
        }
    }

    /// The subscription ack, from the stream's state as it is now: `last_seq`,
    /// the replay and the snapshot are decided in this one step, and every
    /// live event the loop gets after the ack has a greater seq.
    fn answer(&mut self, id: StreamId, req: SubscribeRequest) {
        let (last_seq, epoch) = self
            .streams
            .get(id)
            .map_or((0, String::new()), |s| (s.seq, s.epoch.to_string()));
        let recovery = req.since.map(|since| {
            let epoch_matches = req.epoch.as_deref().is_none_or(|e| e == epoch);
            let r = self.streams.replay(id, since, epoch_matches);
            self.metrics
                .recoveries
                .with_label_values(&[if r.complete { "true" } else { "false" }])
                .inc();
            Recovery {
                entries: r.entries,
                complete: r.complete,
            }
        });
        // docs/protocol.md §9: a complete recovery already carries every change; otherwise the
        // last values the replay does not reach, up to `last_seq`.
        let snapshot = match &recovery {
            _ if !req.snapshot => None,
            Some(r) if r.complete => None,
            Some(r) => {
                let below = r.entries.first().map_or(last_seq + 1, |e| e.seq);
                Some(self.streams.snapshot(id, 0..below))
            }
            None => Some(self.streams.snapshot(id, 0..last_seq + 1)),
        };
        // Live events already batched for this loop carry seq <= last_seq and
        // must reach the loop before the ack: flush them first.
        self.flush_loop(req.loop_id);
        let ack = ToLoop::Subscribed(Box::new(SubscribeAck {
            conn: req.conn,
            stream: id,
            epoch,
            last_seq,
            recovery,
            snapshot,
        }));
        if let Some(l) = self.loops.get(req.loop_id) {
            l.send(ack);
        }
    }

    fn flush_loop(&mut self, loop_id: usize) {
        if let (Some(batch), Some(l)) = (self.pending.get_mut(loop_id), self.loops.get(loop_id)) {
            if !batch.is_empty() {
                l.send(ToLoop::Deliver(std::mem::take(batch)));
            }
        }
    }

    fn flush(&mut self) {
        for i in 0..self.loops.len() {
            self.flush_loop(i);
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.history_bytes.set(self.streams.history_bytes() as i64);
        m.history_streams.set(self.streams.len() as i64);
        m.last_values.set(self.streams.last_values.count() as i64);
        m.last_values_bytes
            .set(self.streams.last_values.bytes() as i64);
    }
}

/// The frame a loop fans out. The first loop shares the encoded bytes; each
/// further one gets its own copy of them, so that the reference count every
/// recipient's queue bumps lives in a cache line of that loop alone: with 8
/// loops fanning out one event at once, a shared count would bounce between
/// cores on every delivery (docs/performance.md, "Scaling with cores"). The
/// event is still encoded once; a copy per loop is ~200 bytes per event.
pub(crate) fn frame_for_loop(frame: &bytes::Bytes, nth: usize) -> bytes::Bytes {
    if nth == 0 {
        frame.clone()
    } else {
        bytes::Bytes::copy_from_slice(frame)
    }
}

/// A random epoch per process start: 12 base-36 characters from the OS-seeded
/// hasher, the clock and the pid (no extra crate needed for 60 bits of noise).
pub fn new_epoch() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let mut n = h.finish();
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(12);
    for _ in 0..12 {
        out.push(digits[(n % 36) as usize] as char);
        n /= 36;
    }
    out
}
