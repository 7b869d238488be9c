//! Where the streams' state lives (`docs/protocol.md` §10, `docs/cluster.md`).
//!
//! `--engine memory` (the default): in the publisher thread, nothing else.
//! `--engine redis`: in one or more Redis instances shared by every node. Per
//! instance ("shard") a node runs two threads that are the only ones ever to
//! wait on Redis:
//!
//! ```text
//!  loop ── PublishJob ──► shard::run (commands: a transaction per batch) ──► Redis
//!    ▲                        │  ▲ Fetch / Refresh                        │ PUBLISH
//!    └── ToLoop::Published ───┘  │                                        ▼
//!  publisher ◄── EngineEvent ────┴──────── subscriber::run (SUBSCRIBE) ◄──┘
//!    │ orders by seq, fills gaps from history, encodes each event once
//!    ▼
//!  loops (Deliver, as with the memory engine)
//! ```
//!
//! - [`wire`]: key layout, stored and published formats, the shard hash.
//! - [`scripts`]: the Lua scripts (publish, tail, fetch, rotate).
//! - `transaction`: a batch published as one check-and-set transaction.
//! - `resp`: commands encoded into a buffer kept between batches.
//! - `shard`: the command thread of one instance.
//! - `subscriber`: the subscription thread of one instance.

mod resp;
pub mod scripts;
mod shard;
mod subscriber;
mod transaction;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::channel::Channel;
use crate::http::publish::{ChannelSel, LocationSel, PublishEvent};
use crate::http::response::Refusal;
use crate::hub::channels::{LoopHandle, PublisherHandle, ToLoop};
use crate::hub::event::StreamId;
use crate::hub::subscriptions::ConnRef;
use crate::metrics::Metrics;

pub use shard::ShardCmd;
pub use subscriber::SubCmd;

/// Which engine holds the streams' state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    Memory,
    Redis,
}

/// Jobs a shard's command thread holds before loops answer 503.
const SHARD_INBOX: usize = 8 * 1024;
/// Subscription changes a shard's subscriber thread holds.
const SUB_INBOX: usize = 64 * 1024;

/// The Redis engine's settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL per instance; streams are spread over them by [`wire::shard_of`].
    pub urls: Vec<String>,
    pub probe_interval: Duration,
    /// Longest wait on one Redis round trip before the link counts as down.
    pub io_timeout: Duration,
    pub history_size: usize,
    pub last_values: usize,
    pub ttl: Duration,
    /// This node's name in probes and new epochs (the process epoch).
    pub node: String,
}

/// A URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}<redacted>@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// One stream event bound for Redis, from a loop's publish request: the
/// event to one of its channels (its location, or `*`, is the event's).
#[derive(Debug)]
pub struct JobEvent {
    pub channel: Channel,
    pub event: Arc<PublishEvent>,
}

/// A publish request's share for one shard.
pub struct PublishJob {
    pub events: Vec<JobEvent>,
    /// Wall-clock ms the request was accepted: the events' `published_at`.
    pub published_at: u64,
    pub done: Arc<Completion>,
}

/// Answers a publish request once every shard it went to has answered: a
/// `202` only when Redis holds every event (§10).
pub struct Completion {
    loop_handle: LoopHandle,
    conn: ConnRef,
    /// Event objects in the request body: the `accepted` of the 202.
    accepted: usize,
    remaining: AtomicUsize,
    failed: AtomicBool,
}

impl Completion {
    /// One shard is done with its part.
    pub fn finish(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let result = if self.failed.load(Ordering::Acquire) {
                Err(Refusal::engine_unavailable())
            } else {
                Ok(self.accepted)
            };
            self.loop_handle.send(ToLoop::Published {
                conn: self.conn,
                result,
            });
        }
    }
}

/// The health of one instance, as both of its threads see it.
#[derive(Debug, Default)]
pub struct ShardStatus {
    commands: AtomicBool,
    subscription: AtomicBool,
    /// Counts the subscription links that ended: a link that broke tells the
    /// command thread its own connection is likely dead too (a restarted
    /// Redis), so it reconnects before it next sends anything.
    links_lost: std::sync::atomic::AtomicU64,
}

impl ShardStatus {
    pub fn up(&self) -> bool {
        self.commands.load(Ordering::Acquire) && self.subscription.load(Ordering::Acquire)
    }

    fn links_lost(&self) -> u64 {
        self.links_lost.load(Ordering::Acquire)
    }
}

/// Every instance's health: what `bistream_engine_up` and `/readyz` report.
#[derive(Debug)]
pub struct Health {
    pub shards: Vec<Arc<ShardStatus>>,
}

impl Health {
    pub fn all_up(&self) -> bool {
        self.shards.iter().all(|s| s.up())
    }

    /// After a thread of shard `index` changed its half of the status (it was
    /// `was` before): a log line when the shard's state flipped, and the gauge.
    fn report(&self, metrics: &Metrics, index: usize, url: &str, was: bool) {
        let now = self.shards[index].up();
        if now != was {
            if now {
                log::info!("engine: redis {} (shard {index}) up", redact(url));
            } else {
                log::warn!("engine: redis {} (shard {index}) DOWN", redact(url));
            }
        }
        metrics.engine_up.set(i64::from(self.all_up()));
    }
}

/// The first wait before a lost Redis connection is made again; doubled
/// after each failed attempt up to [`BACKOFF_MAX`].
pub(super) const BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
pub(super) const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits out one reconnect backoff of a Redis thread, handing each message
/// that comes meanwhile to `offline` (nothing waits on a dead link). Returns
/// the next backoff, or `None` when the senders are gone: the node is
/// shutting down.
pub(super) fn wait_backoff<T>(
    rx: &crossbeam_channel::Receiver<T>,
    backoff: std::time::Duration,
    mut offline: impl FnMut(T),
) -> Option<std::time::Duration> {
    use crossbeam_channel::RecvTimeoutError;
    let until = std::time::Instant::now() + backoff;
    loop {
        match rx.recv_timeout(until.saturating_duration_since(std::time::Instant::now())) {
            Ok(msg) => offline(msg),
            Err(RecvTimeoutError::Timeout) => return Some((backoff * 2).min(BACKOFF_MAX)),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// What a node's engine tells its publisher.
pub enum EngineEvent {
    /// The subscription to a stream's channel is in place: its state can be fetched.
    Subscribed {
        shard: usize,
        channel: String,
    },
    /// A run of numbered events (one publish script's) on a stream's channel.
    Events {
        shard: usize,
        channel: Channel,
        location: String,
        msgs: Vec<wire::Message>,
    },
    /// The answer to [`ShardCmd::Fetch`]; `None` when Redis could not be asked.
    Fetched {
        stream: StreamId,
        state: Option<Fetched>,
    },
    /// The subscription link of a shard came up (again): every stream of it
    /// may have missed events and is fetched anew.
    LinkUp {
        shard: usize,
    },
    LinkDown {
        shard: usize,
    },
}

/// A stream's state in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub epoch: String,
    pub seq: u64,
    /// Oldest first.
    pub history: Vec<wire::Stored>,
    pub last_values: Vec<wire::Stored>,
}

/// One instance as the rest of the node sees it.
pub struct Shard {
    pub url: String,
    pub commands: Sender<ShardCmd>,
    pub subscriptions: Sender<SubCmd>,
    pub status: Arc<ShardStatus>,
}

/// The Redis engine of a node: what loops and the publisher use.
pub struct RedisEngine {
    pub settings: RedisSettings,
    pub shards: Vec<Shard>,
    urls: Vec<String>,
    loops: Vec<LoopHandle>,
    pub health: Arc<Health>,
}

impl RedisEngine {
    /// Starts the two threads of every instance.
    pub fn start(
        settings: RedisSettings,
        loops: Vec<LoopHandle>,
        publisher: PublisherHandle,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<RedisEngine> {
        let health = Arc::new(Health {
            shards: (0..settings.urls.len())
                .map(|_| Arc::new(ShardStatus::default()))
                .collect(),
        });
        metrics.engine_up.set(0);
        let mut shards = Vec::new();
        for (i, url) in settings.urls.iter().enumerate() {
            let (ctx, crx) = crossbeam_channel::bounded(SHARD_INBOX);
            let (stx, srx) = crossbeam_channel::bounded(SUB_INBOX);
            shard::spawn(
                i,
                url.clone(),
                settings.clone(),
                crx,
                health.clone(),
                publisher.clone(),
                metrics.clone(),
            )?;
            subscriber::spawn(
                i,
                url.clone(),
                settings.clone(),
                srx,
                health.clone(),
                publisher.clone(),
                metrics.clone(),
            )?;
            shards.push(Shard {
                url: url.clone(),
                commands: ctx,
                subscriptions: stx,
                status: health.shards[i].clone(),
            });
        }
        Ok(RedisEngine {
            urls: settings.urls.clone(),
            settings,
            shards,
            loops,
            health,
        })
    }

    pub fn shard_of(&self, channel: Channel, location: &str) -> usize {
        wire::shard_of(channel, location, &self.urls)
    }

    /// Every instance is reachable.
    pub fn all_up(&self) -> bool {
        self.health.all_up()
    }

    /// The instance of this stream is reachable: its upgrades may proceed.
    pub fn up_for(&self, channel: Channel, location: &str) -> bool {
        self.shards
            .get(self.shard_of(channel, location))
            .is_some_and(|s| s.status.up())
    }

    /// Hands a publish request to the instances its streams live on. The loop
    /// answers when [`ToLoop::Published`] comes back.
    pub fn publish(
        &self,
        events: Vec<PublishEvent>,
        loop_id: usize,
        conn: ConnRef,
        published_at: u64,
    ) -> Result<(), Refusal> {
        let accepted = events.len();
        let mut parts: Vec<Vec<JobEvent>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for ev in events {
            let ev = Arc::new(ev);
            let channels: &[Channel] = match &ev.channels {
                ChannelSel::All => &Channel::ALL,
                ChannelSel::List(l) => l,
            };
            for &channel in channels {
                match &ev.location {
                    LocationSel::One(loc) => {
                        let shard = self.shard_of(channel, loc);
                        if !self.shards[shard].status.up() {
                            return Err(Refusal::engine_unavailable());
                        }
                        parts[shard].push(JobEvent {
                            channel,
                            event: ev.clone(),
                        });
                    }
                    // Every instance expands `*` over the live locations it holds.
                    LocationSel::All => {
                        if !self.all_up() {
                            return Err(Refusal::engine_unavailable());
                        }
                        for p in parts.iter_mut() {
                            p.push(JobEvent {
                                channel,
                                event: ev.clone(),
                            });
                        }
                    }
                }
            }
        }
        let used = parts.iter().filter(|p| !p.is_empty()).count();
        let Some(loop_handle) = self.loops.get(loop_id).cloned() else {
            return Err(Refusal::publisher_gone());
        };
        let done = Arc::new(Completion {
            loop_handle,
            conn,
            accepted,
            remaining: AtomicUsize::new(used.max(1)),
            failed: AtomicBool::new(false),
        });
        if used == 0 {
            done.finish(true);
            return Ok(());
        }
        for (shard, events) in parts.into_iter().enumerate() {
            if events.is_empty() {
                continue;
            }
            let job = PublishJob {
                events,
                published_at,
                done: done.clone(),
            };
            match self.shards[shard].commands.try_send(ShardCmd::Publish(job)) {
                Ok(()) => {}
                Err(TrySendError::Full(ShardCmd::Publish(job)))
                | Err(TrySendError::Disconnected(ShardCmd::Publish(job))) => job.done.finish(false),
                Err(_) => done.finish(false),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379/2"),
            "redis://<redacted>@10.0.0.1:6379/2"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("unix:///run/redis.sock"), "unix:///run/redis.sock");
    }
}
