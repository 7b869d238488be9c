//! The subscription thread of one Redis instance: its own connection,
//! subscribed to the channels of the streams this node has subscribers on
//! (the publisher says which) and to the node's probe channel.
//!
//! A link that is open but silent (Redis paused, a proxy that dropped it) is
//! noticed when the node's own probe, published every
//! `--engine-probe-interval` by the command thread, has not come back for two
//! intervals; the link is then dropped and made again, and the publisher told
//! ([`EngineEvent::LinkDown`] / [`EngineEvent::LinkUp`]) so that it catches
//! every stream up from history.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::engine::wire;
use crate::engine::{
    redact, wait_backoff, EngineEvent, Health, RedisSettings, ShardStatus, BACKOFF_MIN,
};
use crate::hub::channels::{PublisherHandle, ToPublisher};
use crate::metrics::Metrics;

/// How long one wait for a message lasts before subscription changes are
/// looked at: the most a first subscriber waits for its channel.
const POLL: Duration = Duration::from_millis(20);

/// Messages to a shard's subscriber thread.
pub enum SubCmd {
    Subscribe(String),
    Unsubscribe(String),
}

struct Worker {
    index: usize,
    url: String,
    settings: RedisSettings,
    rx: Receiver<SubCmd>,
    status: Arc<ShardStatus>,
    all: Arc<Health>,
    publisher: PublisherHandle,
    metrics: Arc<Metrics>,
    /// The channels to be subscribed to, kept across reconnects.
    channels: HashSet<String>,
}

pub(super) fn spawn(
    index: usize,
    url: String,
    settings: RedisSettings,
    rx: Receiver<SubCmd>,
    all: Arc<Health>,
    publisher: PublisherHandle,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let status = all.shards[index].clone();
    let w = Worker {
        index,
        url,
        settings,
        rx,
        status,
        all,
        publisher,
        metrics,
        channels: HashSet::new(),
    };
    std::thread::Builder::new()
        .name(format!("bistream-redis-sub-{index}"))
        .spawn(move || w.run())
        .map(|_| ())
}

/// Why a link ended.
enum End {
    Failed(String),
    Shutdown,
}

impl Worker {
    fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.session() {
                End::Shutdown => return,
                // The shard's state change is logged once (`Health::report`);
                // each failed attempt only at debug level.
                End::Failed(why) => log::debug!(
                    "engine: redis {} (shard {}) subscription: {why}",
                    redact(&self.url),
                    self.index
                ),
            }
            // Changes made while down are kept for the next session.
            let rx = self.rx.clone();
            match wait_backoff(&rx, backoff, |cmd| self.apply_offline(cmd)) {
                Some(next) => backoff = next,
                None => return,
            }
        }
    }

    fn apply_offline(&mut self, cmd: SubCmd) {
        match cmd {
            SubCmd::Subscribe(c) => {
                self.channels.insert(c);
            }
            SubCmd::Unsubscribe(c) => {
                self.channels.remove(&c);
            }
        }
    }

    fn set_up(&self, up: bool) {
        let was = self.status.up();
        self.status.subscription.store(up, Ordering::Release);
        self.all.report(&self.metrics, self.index, &self.url, was);
    }

    fn tell(&self, ev: EngineEvent) {
        self.publisher
            .send_blocking(ToPublisher::Engine(Box::new(ev)));
    }

    /// One connection's life: subscribe to everything wanted, then relay.
    fn session(&mut self) -> End {
        let client = match redis::Client::open(self.url.as_str()) {
            Ok(c) => c,
            Err(e) => return End::Failed(e.to_string()),
        };
        let mut con = match client.get_connection_with_timeout(self.settings.io_timeout) {
            Ok(c) => c,
            Err(e) => return End::Failed(e.to_string()),
        };
        if let Err(e) = con.set_write_timeout(Some(self.settings.io_timeout)) {
            return End::Failed(e.to_string());
        }
        // Subscribing waits for Redis's confirmation: bound it by the I/O timeout.
        if let Err(e) = con.set_read_timeout(Some(self.settings.io_timeout)) {
            return End::Failed(e.to_string());
        }
        let probe = wire::probe_channel(&self.settings.node);
        let mut ps = con.as_pubsub();
        if let Err(e) = ps.subscribe(&probe) {
            return End::Failed(e.to_string());
        }
        let initial: Vec<String> = self.channels.iter().cloned().collect();
        for c in &initial {
            if let Err(e) = ps.subscribe(c) {
                return End::Failed(e.to_string());
            }
        }
        if let Err(e) = ps.set_read_timeout(Some(POLL)) {
            return End::Failed(e.to_string());
        }
        self.set_up(true);
        self.tell(EngineEvent::LinkUp { shard: self.index });
        let silent_after = 2 * self.settings.probe_interval;
        let mut last_probe = Instant::now();
        let end = loop {
            // Subscription changes first: a new subscriber waits on them.
            let mut changed = Vec::new();
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => changed.push(cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.set_up(false);
                        return End::Shutdown;
                    }
                }
            }
            if !changed.is_empty() {
                if let Err(e) = ps.set_read_timeout(Some(self.settings.io_timeout)) {
                    break End::Failed(e.to_string());
                }
                let mut failed = None;
                for cmd in changed {
                    let r = match cmd {
                        SubCmd::Subscribe(c) => {
                            let r = ps.subscribe(&c);
                            if r.is_ok() {
                                self.tell(EngineEvent::Subscribed {
                                    shard: self.index,
                                    channel: c.clone(),
                                });
                            }
                            self.channels.insert(c);
                            r
                        }
                        SubCmd::Unsubscribe(c) => {
                            self.channels.remove(&c);
                            ps.unsubscribe(&c)
                        }
                    };
                    if let Err(e) = r {
                        failed = Some(e.to_string());
                        break;
                    }
                }
                if let Some(why) = failed {
                    break End::Failed(why);
                }
                if let Err(e) = ps.set_read_timeout(Some(POLL)) {
                    break End::Failed(e.to_string());
                }
            }
            match ps.get_message() {
                Ok(msg) => {
                    let channel = msg.get_channel_name().as_bytes();
                    if channel == probe.as_bytes() {
                        last_probe = Instant::now();
                        continue;
                    }
                    let Some((ch, location)) = wire::parse_events_channel(channel) else {
                        continue;
                    };
                    // One copy of the message; its events are views of it.
                    let payload = bytes::Bytes::copy_from_slice(msg.get_payload_bytes());
                    match wire::parse_message(&payload) {
                        Ok(msgs) => self.tell(EngineEvent::Events {
                            shard: self.index,
                            channel: ch,
                            location: location.to_string(),
                            msgs,
                        }),
                        Err(e) => log::warn!("engine: unreadable message on {location}: {e}"),
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => break End::Failed(e.to_string()),
            }
            if last_probe.elapsed() > silent_after {
                break End::Failed(format!(
                    "no probe came back for {:?}: the link is silent",
                    last_probe.elapsed()
                ));
            }
        };
        self.set_up(false);
        self.status.links_lost.fetch_add(1, Ordering::AcqRel);
        log::warn!(
            "engine: redis {} (shard {}) subscription lost: {}",
            redact(&self.url),
            self.index,
            match &end {
                End::Failed(why) => why.as_str(),
                End::Shutdown => "shutting down",
            }
        );
        self.tell(EngineEvent::LinkDown { shard: self.index });
        end
    }
}
