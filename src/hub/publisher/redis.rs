//! The publisher's side of the Redis engine (`docs/protocol.md` §10,
//! `docs/cluster.md`): which streams this node watches and how far each is in
//! step with Redis.
//!
//! A stream this node starts watching is *joining*: its channel is
//! subscribed first, then its state fetched; events that arrive in between
//! are buffered and merged by `seq`, so nothing is skipped or doubled between
//! the state and the live stream. Subscribers that arrive meanwhile wait and
//! are answered from the merged state, exactly as with the memory engine.
//!
//! A *live* stream delivers each event whose `seq` follows the last one. An
//! older `seq` is a duplicate (the same event again) or a regression (Redis's
//! state went back: a new epoch is started); a newer one is a gap, and a lost
//! link may have made one anywhere: the stream is fetched again and caught up
//! from history, or, when history no longer reaches back, its connections
//! are closed with 4010 so that their clients resume and are told the truth.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock;
use crate::engine::wire::{Message, Stored, StreamKeys};
use crate::engine::{EngineEvent, Fetched, RedisEngine, ShardCmd, SubCmd};
use crate::hub::channels::{SubscribeRequest, ToLoop};
use crate::hub::event::{Delivery, StreamId};
use crate::hub::streams::HistEntry;
use crate::ws::frame;

use super::{Engine, Publisher};
use crate::http::publish::PublishEvent;

/// Events buffered for one stream while its state is being fetched; past
/// this the buffer is dropped and the fetch alone (made again) catches up.
const MAX_BUFFER: usize = 64 * 1024;
/// A fetch not answered in this long is asked for again.
const FETCH_RETRY: Duration = Duration::from_secs(1);

enum Sync {
    /// Being (re)fetched. `prior`: the (epoch, seq) already delivered to
    /// this node's clients; `None` while joining.
    Fetching {
        prior: Option<(Arc<str>, u64)>,
        buffer: Vec<Message>,
        pending: Vec<SubscribeRequest>,
        /// When the outstanding fetch was asked for; `None`: none is.
        asked: Option<Instant>,
        /// Start a new epoch if the stream still has this one.
        rotate_from: Option<String>,
    },
    Live,
}

pub(super) struct RedisSide {
    engine: Arc<RedisEngine>,
    /// The streams this node watches, and their shard.
    sync: HashMap<StreamId, (usize, Sync)>,
    next_tick: Instant,
}

impl RedisSide {
    pub(super) fn new(engine: Arc<RedisEngine>) -> RedisSide {
        RedisSide {
            engine,
            sync: HashMap::new(),
            next_tick: Instant::now(),
        }
    }
}

impl Engine for RedisSide {
    /// Never sent: with this engine the loops hand publishes to Redis
    /// directly (`engine::RedisEngine::publish`).
    fn publish(&mut self, _: &mut Publisher, _: Vec<PublishEvent>) {}

    fn subscribe(&mut self, p: &mut Publisher, req: SubscribeRequest) {
        let now = Instant::now();
        let id = p.streams.get_or_create(req.channel, &req.location, now);
        p.streams.subscribe(id, req.loop_id);
        // A client resuming from another node may have seen events this node
        // has not delivered yet (they are on their way): catch up from Redis
        // first, rather than call its `since` unknown.
        let ahead = p.streams.get(id).is_some_and(|s| {
            req.since.is_some_and(|since| since > s.seq)
                && req.epoch.as_deref().is_none_or(|e| *e == *s.epoch)
        });
        match self.sync.get_mut(&id) {
            Some((_, Sync::Live)) if ahead => {
                self.refetch(p, id, None);
                if let Some((_, Sync::Fetching { pending, .. })) = self.sync.get_mut(&id) {
                    pending.push(req);
                }
            }
            Some((_, Sync::Live)) => p.answer(id, req),
            Some((_, Sync::Fetching { pending, .. })) => pending.push(req),
            None => {
                let shard = self.engine.shard_of(req.channel, &req.location);
                let channel = StreamKeys::new(req.channel, &req.location).events;
                self.sync.insert(
                    id,
                    (
                        shard,
                        Sync::Fetching {
                            prior: None,
                            buffer: Vec::new(),
                            pending: vec![req],
                            asked: None,
                            rotate_from: None,
                        },
                    ),
                );
                // The fetch follows the confirmation of this subscription
                // (`Subscribed`), so that no event falls between the two.
                let _ = self.engine.shards[shard]
                    .subscriptions
                    .try_send(SubCmd::Subscribe(channel));
            }
        }
    }

    /// A subscriber left: a stream nobody watches here any more is dropped
    /// (Redis keeps it; a new subscriber fetches it again).
    fn unsubscribed(&mut self, p: &mut Publisher, id: StreamId) {
        if p.streams.get(id).is_some_and(|s| s.subscribers > 0) {
            return;
        }
        let keys = Self::keys_of(p, id);
        if let Some((shard, _)) = self.sync.remove(&id) {
            if let Some(k) = keys {
                let _ = self.engine.shards[shard]
                    .subscriptions
                    .try_send(SubCmd::Unsubscribe(k.events));
            }
        }
        p.streams.drop_stream(id);
    }

    fn on_engine(&mut self, p: &mut Publisher, ev: EngineEvent) {
        match ev {
            EngineEvent::Subscribed { channel, .. } => {
                // Fetch (again): whatever was fetched before the subscription
                // held may have missed events.
                if let Some(id) = Self::stream_of_channel(p, &channel) {
                    self.refetch(p, id, None);
                }
            }
            EngineEvent::Events {
                channel,
                location,
                msgs,
                ..
            } => {
                if let Some(id) = p.streams.find(channel, &location) {
                    let now = Now::read();
                    for msg in msgs {
                        self.on_event(p, id, msg, now);
                    }
                }
            }
            EngineEvent::Fetched { stream, state } => self.on_fetched(p, stream, state),
            EngineEvent::LinkUp { shard } => {
                let ids: Vec<StreamId> = self
                    .sync
                    .iter()
                    .filter(|(_, (sh, _))| *sh == shard)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.refetch(p, id, None);
                }
            }
            EngineEvent::LinkDown { .. } => {}
        }
    }

    /// Every probe interval: renew the watched streams in Redis, and ask again
    /// for fetches that got no answer.
    fn tick(&mut self, p: &mut Publisher, now: Instant) {
        if now < self.next_tick {
            return;
        }
        let interval = self.engine.settings.probe_interval.min(FETCH_RETRY);
        self.next_tick = now + interval;
        let mut per_shard: Vec<Vec<(crate::channel::Channel, Arc<str>)>> =
            (0..self.engine.shards.len()).map(|_| Vec::new()).collect();
        let mut retry = Vec::new();
        for (id, (shard, state)) in &self.sync {
            if let Some(s) = p.streams.get(*id) {
                per_shard[*shard].push((s.channel, s.location.clone()));
            }
            if let Sync::Fetching { asked, .. } = state {
                if asked.is_none_or(|t| now.duration_since(t) >= FETCH_RETRY) {
                    retry.push(*id);
                }
            }
        }
        for (shard, list) in per_shard.into_iter().enumerate() {
            let _ = self.engine.shards[shard]
                .commands
                .try_send(ShardCmd::Refresh(list));
        }
        for id in retry {
            self.refetch(p, id, None);
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        Some(self.next_tick)
    }
}

fn hist_entry(s: &Stored) -> (Arc<str>, HistEntry) {
    (
        s.effective_key().clone(),
        HistEntry {
            seq: s.seq,
            event_type: s.event_type.clone(),
            frame: bytes::Bytes::from(frame::text(&s.json)),
        },
    )
}

/// The clocks, read once for every event of one message from Redis rather
/// than once each (two clock reads per event were 2 % of the node's time).
#[derive(Clone, Copy)]
struct Now {
    /// What a delivery is stamped with (latency metrics).
    stamp: u64,
    at: Instant,
}

impl Now {
    fn read() -> Now {
        Now {
            stamp: clock::mono_ns(),
            at: Instant::now(),
        }
    }
}

impl RedisSide {
    fn keys_of(p: &Publisher, id: StreamId) -> Option<StreamKeys> {
        let s = p.streams.get(id)?;
        Some(StreamKeys::new(s.channel, &s.location))
    }

    fn stream_of_channel(p: &Publisher, channel: &str) -> Option<StreamId> {
        let (ch, loc) = crate::engine::wire::parse_events_channel(channel.as_bytes())?;
        p.streams.find(ch, loc)
    }

    /// Puts a stream in `Fetching` (keeping what it delivered and its
    /// waiting subscribers) and asks its shard for its state.
    fn refetch(&mut self, p: &mut Publisher, id: StreamId, rotate: Option<String>) {
        let prior = p.streams.get(id).map(|s| (s.epoch.clone(), s.seq));
        let keys = p.streams.get(id).map(|s| (s.channel, s.location.clone()));
        let Some((shard, state)) = self.sync.get_mut(&id) else {
            return;
        };
        let shard = *shard;
        match state {
            Sync::Live => {
                *state = Sync::Fetching {
                    prior,
                    buffer: Vec::new(),
                    pending: Vec::new(),
                    asked: None,
                    rotate_from: rotate,
                };
            }
            Sync::Fetching { rotate_from, .. } => {
                if rotate.is_some() {
                    *rotate_from = rotate;
                }
            }
        }
        let Sync::Fetching {
            asked, rotate_from, ..
        } = state
        else {
            return;
        };
        let Some((channel, location)) = keys else {
            return;
        };
        *asked = Some(Instant::now());
        let cmd = ShardCmd::Fetch {
            stream: id,
            channel,
            location,
            rotate_from: rotate_from.clone(),
        };
        if self.engine.shards[shard].commands.try_send(cmd).is_err() {
            // Full or gone: the tick asks again.
            *asked = None;
        }
    }

    fn on_event(&mut self, p: &mut Publisher, id: StreamId, msg: Message, now: Now) {
        match self.sync.get_mut(&id) {
            None => {}
            Some((_, Sync::Fetching { buffer, .. })) => {
                if buffer.len() < MAX_BUFFER {
                    buffer.push(msg);
                } else {
                    // The fetch (asked again) will hold these events.
                    buffer.clear();
                }
            }
            Some((_, Sync::Live)) => self.apply_live(p, id, msg, now),
        }
    }

    /// An event for a live stream.
    fn apply_live(&mut self, p: &mut Publisher, id: StreamId, msg: Message, now: Now) {
        let Some(s) = p.streams.get(id) else {
            return;
        };
        let (epoch, seq) = (s.epoch.clone(), s.seq);
        if *msg.epoch != *epoch {
            // Redis lost the stream's state and a node started it anew.
            self.refetch(p, id, None);
            self.buffer(id, msg);
            return;
        }
        let n = msg.event.seq;
        if n == seq + 1 {
            self.deliver(p, id, &msg.event, now);
        } else if n <= seq {
            let same = p.streams.entry(id, n).is_some_and(|e| {
                frame::split_server_frame(&e.frame).map(|(_, p)| p) == Some(&msg.event.json[..])
            });
            if !same {
                // A new event under a seq already delivered: Redis's state
                // went back (an older snapshot, a lagging replica).
                log::warn!("engine: stream {id:x} was handed seq {n} after {seq}: new epoch");
                self.refetch(p, id, Some(epoch.to_string()));
            }
        } else {
            self.refetch(p, id, None);
            self.buffer(id, msg);
        }
    }

    fn buffer(&mut self, id: StreamId, msg: Message) {
        if let Some((_, Sync::Fetching { buffer, .. })) = self.sync.get_mut(&id) {
            buffer.push(msg);
        }
    }

    /// Numbers are Redis's: record the event in the cache and fan it out.
    fn deliver(&mut self, p: &mut Publisher, id: StreamId, ev: &Stored, now: Now) {
        let (key, entry) = hist_entry(ev);
        let stamp = now.stamp;
        if let Some(s) = p.streams.get(id) {
            let mut nth = 0;
            for (loop_id, refs) in s.loop_refs.iter().enumerate() {
                if *refs > 0 {
                    p.pending[loop_id].push(Delivery {
                        stream: id,
                        seq: entry.seq,
                        event_type: entry.event_type.clone(),
                        key: key.clone(),
                        frame: super::frame_for_loop(&entry.frame, nth),
                        stamp,
                    });
                    nth += 1;
                }
            }
        }
        p.streams.record_numbered(id, key, entry, now.at);
        p.metrics.events_published.inc();
        if p.pending.iter().any(|p| p.len() >= super::MAX_BATCH) {
            p.flush();
        }
    }

    /// Closes this node's connections of a stream with 4010.
    fn close_stream(&mut self, p: &mut Publisher, id: StreamId) {
        // Events already batched for the loops go first: the FIFO keeps the
        // close behind them.
        p.flush();
        if let Some(s) = p.streams.get(id) {
            for (loop_id, refs) in s.loop_refs.iter().enumerate() {
                if *refs > 0 {
                    if let Some(l) = p.loops.get(loop_id) {
                        l.send(ToLoop::Resync(id));
                    }
                }
            }
        }
    }

    fn on_fetched(&mut self, p: &mut Publisher, id: StreamId, state: Option<Fetched>) {
        let now = Now::read();
        let shard = match self.sync.get_mut(&id) {
            Some((shard, Sync::Fetching { asked, .. })) => {
                if state.is_none() {
                    // Redis could not be asked: the tick asks again.
                    *asked = None;
                    return;
                }
                *shard
            }
            _ => return,
        };
        let Some(f) = state else {
            return;
        };
        let Some((
            _,
            Sync::Fetching {
                prior,
                buffer,
                pending,
                ..
            },
        )) = self.sync.insert(id, (shard, Sync::Live))
        else {
            return;
        };
        let history: Vec<(Arc<str>, HistEntry)> = f.history.iter().map(hist_entry).collect();
        let last: Vec<(Arc<str>, HistEntry)> = f.last_values.iter().map(hist_entry).collect();
        match prior {
            None => p.streams.load(id, &f.epoch, f.seq, history, last),
            Some((epoch, _)) if *epoch != *f.epoch => {
                p.metrics
                    .engine_resyncs
                    .with_label_values(&["new_epoch"])
                    .inc();
                log::info!(
                    "engine: stream {id:x} has a new epoch {}: its clients resume",
                    f.epoch
                );
                self.close_stream(p, id);
                p.streams.load(id, &f.epoch, f.seq, history, last);
            }
            Some((epoch, seq)) if f.seq < seq => {
                // Back to `Fetching`, this time starting a new epoch.
                log::warn!(
                    "engine: stream {id:x}: Redis holds seq {} of epoch {epoch}, this node delivered {seq}: new epoch",
                    f.seq
                );
                self.sync.insert(
                    id,
                    (
                        shard,
                        Sync::Fetching {
                            prior: Some((epoch.clone(), seq)),
                            buffer,
                            pending,
                            asked: None,
                            rotate_from: None,
                        },
                    ),
                );
                self.refetch(p, id, Some(epoch.to_string()));
                return;
            }
            Some((_, seq)) => {
                let missing: Vec<&Stored> = f.history.iter().filter(|e| e.seq > seq).collect();
                let covered = f.seq == seq
                    || missing.first().is_some_and(|e| e.seq == seq + 1)
                        && missing.windows(2).all(|w| w[1].seq == w[0].seq + 1)
                        && missing.last().is_some_and(|e| e.seq == f.seq);
                if covered {
                    if f.seq > seq {
                        p.metrics
                            .engine_resyncs
                            .with_label_values(&["caught_up"])
                            .inc();
                    }
                    for e in missing {
                        self.deliver(p, id, e, now);
                    }
                } else {
                    p.metrics
                        .engine_resyncs
                        .with_label_values(&["resync"])
                        .inc();
                    log::info!(
                        "engine: stream {id:x} missed events {}..={} that history no longer holds: its clients resume",
                        seq + 1,
                        f.seq
                    );
                    self.close_stream(p, id);
                    p.streams.load(id, &f.epoch, f.seq, history, last);
                }
            }
        }
        // What arrived while fetching, in seq order after the fetched state.
        let mut buffer = buffer;
        buffer.sort_by_key(|m| m.event.seq);
        for m in buffer {
            let live = matches!(self.sync.get(&id), Some((_, Sync::Live)));
            if live {
                let Some(s) = p.streams.get(id) else { break };
                if *m.epoch == *s.epoch && m.event.seq <= s.seq {
                    continue;
                }
                self.apply_live(p, id, m, now);
            } else {
                self.buffer(id, m);
            }
        }
        // Subscribers waiting: answered now if the stream is live, else after
        // the next fetch.
        let live = matches!(self.sync.get(&id), Some((_, Sync::Live)));
        for req in pending {
            if live {
                p.answer(id, req);
            } else if let Some((_, Sync::Fetching { pending, .. })) = self.sync.get_mut(&id) {
                pending.push(req);
            }
        }
    }
}
