//! The command thread of one Redis instance: the only thread that waits on
//! its replies. It takes what is queued (publishes from the loops, fetches and
//! refreshes from the publisher), sends it as one pipeline, reads every reply,
//! and answers each sender. It also publishes the node's probe.
//!
//! When Redis cannot be reached every job is answered at once (503 for a
//! publish, `None` for a fetch) and the thread reconnects with a growing
//! backoff; nothing waits on a dead link.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use redis::{Connection, Value};

use crate::channel::Channel;
use crate::clock;
use crate::engine::resp::Commands;
use crate::engine::transaction::{self, Limits, Outcome, Pending, StreamEvents, MAX_RUN};
use crate::engine::wire::{self, StreamKeys};
use crate::engine::{
    redact, scripts, wait_backoff, EngineEvent, Fetched, Health, PublishJob, RedisSettings,
    ShardStatus, BACKOFF_MIN,
};
use crate::http::publish::LocationSel;
use crate::hub::channels::{PublisherHandle, ToPublisher};
use crate::hub::event::{json_around_seq, EventParts, StreamId};
use crate::metrics::Metrics;

/// What a stream's message buffer may keep between batches.
const SCRATCH_KEEP: usize = 4 << 20;
/// Jobs taken into one pipeline.
const BATCH: usize = 512;
/// Events taken into one batch (the job that crosses it included): one
/// transaction, which Redis runs without serving anyone else meanwhile.
const BATCH_EVENTS: usize = 4096;

/// Messages to a shard's command thread.
pub enum ShardCmd {
    Publish(PublishJob),
    /// A stream's whole state; with `rotate_from`, first start a new epoch
    /// unless the stream's epoch is no longer that one.
    Fetch {
        stream: StreamId,
        channel: Channel,
        location: Arc<str>,
        rotate_from: Option<String>,
    },
    /// The streams this node has subscribers on: keep them alive in Redis and
    /// in the live sets that `location_id: "*"` reads.
    Refresh(Vec<(Channel, Arc<str>)>),
}

/// Transactions Redis refused as a whole (out of memory, mostly): one log
/// line for the first, then at most one every ten seconds with the count, so
/// that a full Redis under load does not flood the log.
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    unlogged: u64,
}

impl Refusals {
    fn note(&mut self, why: &str) {
        let now = Instant::now();
        if self
            .logged
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.unlogged += 1;
            return;
        }
        log::warn!(
            "engine: Redis refused a publish (503 to its publishers): {why}{}",
            if self.unlogged > 0 {
                format!(" ({} more since the last such line)", self.unlogged)
            } else {
                String::new()
            }
        );
        self.logged = Some(now);
        self.unlogged = 0;
    }
}

impl ShardCmd {
    fn events(&self) -> usize {
        match self {
            ShardCmd::Publish(j) => j.events.len(),
            _ => 0,
        }
    }
}

struct Scripts {
    publish: redis::Script,
    fetch: redis::Script,
    rotate: redis::Script,
}

struct Worker {
    index: usize,
    url: String,
    settings: RedisSettings,
    rx: Receiver<ShardCmd>,
    status: Arc<ShardStatus>,
    all: Arc<Health>,
    publisher: PublisherHandle,
    metrics: Arc<Metrics>,
    scripts: Scripts,
    epochs: u64,
    refresh: Vec<(Channel, Arc<str>)>,
    /// Batches left to publish by script after the transaction lost a race.
    cas_skip: u32,
    /// How many it was last time: doubles with each loss in a row.
    cas_penalty: u32,
    /// The publish transaction, encoded (kept between batches).
    out: Commands,
    refusals: Refusals,
    /// Where a stream's messages are built (kept between batches).
    scratch: Vec<u8>,
}

pub(super) fn spawn(
    index: usize,
    url: String,
    settings: RedisSettings,
    rx: Receiver<ShardCmd>,
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
        scripts: Scripts {
            publish: redis::Script::new(scripts::PUBLISH),
            fetch: redis::Script::new(scripts::FETCH),
            rotate: redis::Script::new(scripts::ROTATE),
        },
        epochs: 0,
        refresh: Vec::new(),
        cas_skip: 0,
        cas_penalty: 0,
        out: Commands::default(),
        scratch: Vec::new(),
        refusals: Refusals::default(),
    };
    std::thread::Builder::new()
        .name(format!("bistream-redis-{index}"))
        .spawn(move || w.run())
        .map(|_| ())
}

impl Worker {
    fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.connect() {
                Ok(con) => {
                    backoff = BACKOFF_MIN;
                    self.set_up(true);
                    let why = self.serve(con);
                    self.set_up(false);
                    match why {
                        Some(e) => log::warn!(
                            "engine: redis {} (shard {}) commands down: {e}",
                            redact(&self.url),
                            self.index
                        ),
                        None => return,
                    }
                }
                Err(e) => log::debug!(
                    "engine: redis {} (shard {}) unreachable: {e}",
                    redact(&self.url),
                    self.index
                ),
            }
            // Down: answer everything at once, until it is time to try again.
            match wait_backoff(&self.rx, backoff, |cmd| self.refuse(cmd)) {
                Some(next) => backoff = next,
                None => return,
            }
        }
    }

    fn set_up(&self, up: bool) {
        let was = self.status.up();
        self.status.commands.store(up, Ordering::Release);
        self.all.report(&self.metrics, self.index, &self.url, was);
    }

    fn connect(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut con = client.get_connection_with_timeout(self.settings.io_timeout)?;
        con.set_read_timeout(Some(self.settings.io_timeout))?;
        con.set_write_timeout(Some(self.settings.io_timeout))?;
        for s in [
            &self.scripts.publish,
            &self.scripts.fetch,
            &self.scripts.rotate,
        ] {
            s.load(&mut con)?;
        }
        Ok(con)
    }

    fn refuse(&self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Publish(job) => job.done.finish(false),
            ShardCmd::Fetch { stream, .. } => self.tell(EngineEvent::Fetched {
                stream,
                state: None,
            }),
            ShardCmd::Refresh(_) => {}
        }
    }

    fn tell(&self, ev: EngineEvent) {
        self.publisher
            .send_blocking(ToPublisher::Engine(Box::new(ev)));
    }

    /// Serves until the link fails (`Some(why)`) or the node shuts down (`None`).
    fn serve(&mut self, mut con: Connection) -> Option<redis::RedisError> {
        let probe = wire::probe_channel(&self.settings.node);
        let mut next_probe = Instant::now();
        let mut links_lost = self.status.links_lost();
        loop {
            let wait = next_probe.saturating_duration_since(Instant::now());
            let mut batch = Vec::new();
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => batch.push(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
            let mut events = batch.iter().map(ShardCmd::events).sum::<usize>();
            while batch.len() < BATCH && events < BATCH_EVENTS {
                match self.rx.try_recv() {
                    Ok(cmd) => {
                        events += cmd.events();
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            let probe_now = Instant::now() >= next_probe;
            if probe_now {
                next_probe = Instant::now() + self.settings.probe_interval;
            }
            if self.status.links_lost() != links_lost {
                // The subscription broke since this connection was made: it
                // is likely dead too. A fresh one serves this batch.
                links_lost = self.status.links_lost();
                match self.connect() {
                    Ok(c) => con = c,
                    Err(e) => {
                        for cmd in batch {
                            self.refuse(cmd);
                        }
                        return Some(e);
                    }
                }
            }
            if let Err(e) = self.run_batch(&mut con, batch, probe_now.then_some(&probe)) {
                return Some(e);
            }
        }
    }

    fn new_epoch(&mut self) -> String {
        self.epochs += 1;
        epoch_name(&self.settings.node, self.epochs)
    }

    fn ttl_ms(&self) -> u64 {
        self.settings.ttl.as_millis() as u64
    }

    /// The limits the publishing node applies to a stream in Redis.
    fn limits(&self) -> Limits {
        Limits {
            history_size: self.settings.history_size,
            last_values: self.settings.last_values,
            ttl_ms: self.ttl_ms(),
        }
    }

    /// One round trip for the `*` lookups the batch needs (if any); one for
    /// fetches, renewals, the probe and the streams' counters; one for the
    /// transaction that publishes; and, if that lost a race, one through the
    /// publish script.
    fn run_batch(
        &mut self,
        con: &mut Connection,
        batch: Vec<ShardCmd>,
        probe: Option<&String>,
    ) -> Result<(), redis::RedisError> {
        let mut jobs: Vec<PublishJob> = Vec::new();
        let mut fetches = Vec::new();
        for cmd in batch {
            match cmd {
                ShardCmd::Publish(j) => jobs.push(j),
                ShardCmd::Fetch {
                    stream,
                    channel,
                    location,
                    rotate_from,
                } => fetches.push((stream, channel, location, rotate_from)),
                ShardCmd::Refresh(list) => self.refresh = list,
            }
        }
        let live = match self.live_locations(con, &jobs) {
            Ok(l) => l,
            Err(e) => {
                self.fail(jobs, fetches);
                return Err(e);
            }
        };
        let streams = group_by_stream(&jobs, &live);
        let fast = !streams.is_empty() && self.try_transaction();

        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut fetched = Vec::new();
        self.add_fetches(&mut pipe, &fetches, &mut fetched);
        let mut others = fetched.len();
        if probe.is_some() {
            others += self.add_refresh(&mut pipe);
        }
        if let Some(p) = probe {
            pipe.cmd("PUBLISH").arg(p).arg(b"probe".as_slice());
            others += 1;
        }
        // The counters are read after the renewals: a `PEXPIRE` on a watched
        // key counts as a change to it.
        if fast {
            transaction::watch_and_read(&mut pipe, &streams);
        }
        let replies: Vec<redis::RedisResult<Value>> = if pipe.is_empty() {
            Vec::new()
        } else {
            match pipe.query(con) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(jobs, fetches);
                    return Err(e);
                }
            }
        };
        // The fetches' replies come first; taken, not copied (a whole history).
        let mut replies = replies.into_iter();
        for (stream, reply) in fetched.iter().zip(replies.by_ref()) {
            self.tell(EngineEvent::Fetched {
                stream: *stream,
                state: reply.ok().and_then(parse_fetched),
            });
        }
        if streams.is_empty() {
            return Ok(());
        }
        let counters = if fast {
            let rest: Vec<_> = replies.skip(others - fetched.len()).collect();
            transaction::counters(&rest)
        } else {
            None
        };
        let mut ok = vec![true; jobs.len()];
        let result = self.publish(con, &streams, counters, fast, &mut ok);
        for (job, ok) in jobs.iter().zip(ok) {
            job.done.finish(ok && result.is_ok());
        }
        result
    }

    /// The fast way while it wins; after it loses a race, the script for a
    /// while (twice as long after each loss in a row, at most 64 batches),
    /// so that nodes publishing to the same streams do not keep colliding.
    fn try_transaction(&mut self) -> bool {
        if self.cas_skip > 0 {
            self.cas_skip -= 1;
            return false;
        }
        true
    }

    /// Publishes the batch's streams, through the transaction when the
    /// counters were read, else (or when it lost the race) through the
    /// script; `ok[j]` turns false for each job with an event not applied.
    fn publish(
        &mut self,
        con: &mut Connection,
        streams: &[StreamEvents<'_>],
        counters: Option<Vec<transaction::Counter>>,
        watched: bool,
        ok: &mut [bool],
    ) -> Result<(), redis::RedisError> {
        // A read that failed may have left the counters watched.
        let unwatch = watched && counters.is_none();
        if let Some(counters) = counters {
            let limits = self.limits();
            let (node, epochs) = (&self.settings.node, &mut self.epochs);
            let layout = transaction::commit(
                &mut self.out,
                &mut self.scratch,
                streams,
                &counters,
                limits,
                || {
                    *epochs += 1;
                    epoch_name(node, *epochs)
                },
            );
            if self.scratch.capacity() > SCRATCH_KEEP {
                self.scratch = Vec::new();
            }
            let replies = self.out.send(con)?;
            match transaction::outcome(&layout, &replies) {
                Ok(Outcome::Committed(applied)) => {
                    self.cas_penalty = 0;
                    self.metrics
                        .engine_publish_batches
                        .with_label_values(&["transaction"])
                        .inc();
                    for (s, applied) in streams.iter().zip(applied) {
                        if !applied {
                            log::warn!(
                                "engine: a command failed publishing to {}: its events may be \
                                 partly applied",
                                s.keys.events
                            );
                            fail_stream(s, ok);
                        }
                    }
                    return Ok(());
                }
                Ok(Outcome::Conflict) => {
                    self.metrics.engine_publish_conflicts.inc();
                    self.cas_penalty = (self.cas_penalty * 2).clamp(1, 64);
                    self.cas_skip = self.cas_penalty;
                    log::debug!("engine: a batch lost the race to another node; by script");
                }
                Err(why) => {
                    self.refusals.note(&why);
                    for s in streams {
                        fail_stream(s, ok);
                    }
                    return Ok(());
                }
            }
        }
        self.publish_by_script(con, streams, unwatch, ok)
    }

    /// Each stream's events in runs of up to [`MAX_RUN`], one publish script
    /// call per run, in one pipeline.
    fn publish_by_script(
        &mut self,
        con: &mut Connection,
        streams: &[StreamEvents<'_>],
        unwatch: bool,
        ok: &mut [bool],
    ) -> Result<(), redis::RedisError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if unwatch {
            pipe.cmd("UNWATCH").ignore();
        }
        let ttl = self.ttl_ms();
        let mut runs: Vec<Vec<usize>> = Vec::new();
        for s in streams {
            for chunk in s.events.chunks(MAX_RUN) {
                let mut args: Vec<Vec<u8>> = Vec::with_capacity(chunk.len() * 4);
                let mut jobs: Vec<usize> = Vec::new();
                for p in chunk {
                    let e = p.event;
                    let (prefix, suffix) = json_around_seq(&EventParts {
                        channel: s.channel,
                        location: s.location,
                        event_type: &e.event_type,
                        key: e.key.as_deref(),
                        seq: 0,
                        published_at_ms: p.published_at,
                        data: &e.data,
                    });
                    args.push(prefix);
                    args.push(suffix);
                    args.push(e.event_type.as_bytes().to_vec());
                    args.push(e.key.as_deref().unwrap_or("").as_bytes().to_vec());
                    if jobs.last() != Some(&p.job) {
                        jobs.push(p.job);
                    }
                }
                let epoch = self.new_epoch();
                pipe.cmd("EVALSHA")
                    .arg(self.scripts.publish.get_hash())
                    .arg(4)
                    .arg(&s.keys.keys()[..])
                    .arg(epoch)
                    .arg(self.settings.history_size)
                    .arg(self.settings.last_values)
                    .arg(ttl)
                    .arg(&s.keys.events)
                    .arg(args);
                runs.push(jobs);
            }
        }
        let replies: Vec<redis::RedisResult<Value>> = pipe.query(con)?;
        self.metrics
            .engine_publish_batches
            .with_label_values(&["script"])
            .inc();
        let mut lost_scripts = None;
        for (jobs, reply) in runs.iter().zip(replies) {
            if let Err(e) = &reply {
                if e.code() == Some("NOSCRIPT") {
                    lost_scripts = Some(e.clone());
                } else {
                    self.refusals.note(&e.to_string());
                }
                for j in jobs {
                    ok[*j] = false;
                }
            }
        }
        // Someone flushed the scripts: reconnecting loads them again.
        match lost_scripts {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The fetch (or rotate) script for each stream asked for.
    fn add_fetches(
        &mut self,
        pipe: &mut redis::Pipeline,
        fetches: &[(StreamId, Channel, Arc<str>, Option<String>)],
        fetched: &mut Vec<StreamId>,
    ) {
        let ttl = self.ttl_ms();
        for (stream, channel, location, rotate_from) in fetches {
            let keys = StreamKeys::new(*channel, location);
            let epoch = self.new_epoch();
            match rotate_from {
                None => pipe
                    .cmd("EVALSHA")
                    .arg(self.scripts.fetch.get_hash())
                    .arg(4)
                    .arg(&keys.keys()[..])
                    .arg(epoch)
                    .arg(ttl),
                Some(old) => pipe
                    .cmd("EVALSHA")
                    .arg(self.scripts.rotate.get_hash())
                    .arg(4)
                    .arg(&keys.keys()[..])
                    .arg(old)
                    .arg(epoch)
                    .arg(ttl),
            };
            fetched.push(*stream);
        }
    }

    /// Renews every locally watched stream: its keys' TTL, and its place in
    /// the live set of its channel (until three probe intervals from now).
    /// Returns how many commands it added.
    fn add_refresh(&self, pipe: &mut redis::Pipeline) -> usize {
        let ttl = self.ttl_ms();
        let until = clock::wall_ms() + 3 * self.settings.probe_interval.as_millis() as u64;
        let mut added = 0;
        for (channel, location) in &self.refresh {
            let keys = StreamKeys::new(*channel, location);
            for k in keys.keys() {
                pipe.cmd("PEXPIRE").arg(k).arg(ttl);
                added += 1;
            }
            pipe.cmd("ZADD")
                .arg(wire::live_key(*channel))
                .arg(until)
                .arg(&**location);
            added += 1;
        }
        added
    }

    /// The locations with subscribers somewhere, for the channels that this
    /// batch publishes to `*`; stale entries are dropped on the way.
    fn live_locations(
        &self,
        con: &mut Connection,
        jobs: &[PublishJob],
    ) -> Result<HashMap<Channel, Vec<String>>, redis::RedisError> {
        let mut wanted: Vec<Channel> = jobs
            .iter()
            .flat_map(|j| j.events.iter())
            .filter(|e| matches!(e.event.location, LocationSel::All))
            .map(|e| e.channel)
            .collect();
        wanted.sort();
        wanted.dedup();
        let mut out = HashMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        let now = clock::wall_ms();
        let mut pipe = redis::pipe();
        for ch in &wanted {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(wire::live_key(*ch))
                .arg("-inf")
                .arg(now)
                .ignore();
            pipe.cmd("ZRANGE").arg(wire::live_key(*ch)).arg(0).arg(-1);
        }
        let lists: Vec<Vec<String>> = pipe.query(con)?;
        for (ch, list) in wanted.into_iter().zip(lists) {
            out.insert(ch, list);
        }
        Ok(out)
    }

    fn fail(
        &self,
        jobs: Vec<PublishJob>,
        fetches: Vec<(StreamId, Channel, Arc<str>, Option<String>)>,
    ) {
        for j in jobs {
            j.done.finish(false);
        }
        for (stream, ..) in fetches {
            self.tell(EngineEvent::Fetched {
                stream,
                state: None,
            });
        }
    }
}

/// The events of the batch grouped by stream, each stream's in the order
/// they came (which is the order of every stream's publishers); an event to
/// `location_id: "*"` goes to every live location of its channel.
fn group_by_stream<'a>(
    jobs: &'a [PublishJob],
    live: &'a HashMap<Channel, Vec<String>>,
) -> Vec<StreamEvents<'a>> {
    let mut g = Grouping::default();
    for (j, job) in jobs.iter().enumerate() {
        for ev in &job.events {
            let p = Pending {
                job: j,
                published_at: job.published_at,
                event: &ev.event,
            };
            match &ev.event.location {
                LocationSel::One(l) => g.add(ev.channel, l, p),
                LocationSel::All => {
                    for l in live.get(&ev.channel).into_iter().flatten() {
                        g.add(ev.channel, l, p);
                    }
                }
            }
        }
    }
    g.streams
}

#[derive(Default)]
struct Grouping<'a> {
    streams: Vec<StreamEvents<'a>>,
    index: HashMap<(Channel, &'a str), usize>,
}

impl<'a> Grouping<'a> {
    fn add(&mut self, channel: Channel, location: &'a str, p: Pending<'a>) {
        // A request's events mostly go to one stream: no lookup for those.
        let at = match self.streams.last() {
            Some(s) if s.channel == channel && s.location == location => self.streams.len() - 1,
            _ => {
                let streams = &mut self.streams;
                *self.index.entry((channel, location)).or_insert_with(|| {
                    streams.push(StreamEvents {
                        channel,
                        location,
                        keys: StreamKeys::new(channel, location),
                        events: Vec::new(),
                    });
                    streams.len() - 1
                })
            }
        };
        self.streams[at].events.push(p);
    }
}

/// The `n`-th epoch this node creates: `<node>-r<n in hex>`.
fn epoch_name(node: &str, n: u64) -> String {
    format!("{node}-r{n:x}")
}

fn fail_stream(s: &StreamEvents<'_>, ok: &mut [bool]) {
    for p in &s.events {
        ok[p.job] = false;
    }
}

fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(bulk(other)?).ok()?.parse().ok(),
    }
}

fn stored_list(v: Value) -> Option<Vec<wire::Stored>> {
    let Value::Array(items) = v else {
        return None;
    };
    Some(wire::parse_stored_list(items.into_iter().filter_map(
        |it| match it {
            Value::BulkString(b) => Some(Bytes::from(b)),
            _ => None,
        },
    )))
}

/// `{epoch, seq, {history...}, {last values...}}` from the fetch script.
fn parse_fetched(v: Value) -> Option<Fetched> {
    let Value::Array(parts) = v else {
        return None;
    };
    let Ok([epoch, seq, hist, last]) = <[Value; 4]>::try_from(parts) else {
        return None;
    };
    let mut history = stored_list(hist)?;
    history.sort_by_key(|s| s.seq);
    let mut last_values = stored_list(last)?;
    last_values.sort_by_key(|s| s.seq);
    Some(Fetched {
        epoch: String::from_utf8(bulk(&epoch)?.to_vec()).ok()?,
        seq: number(&seq)?,
        history,
        last_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn fetched_state_parses_and_sorts() {
        let v = Value::Array(vec![
            b("ep"),
            b("5"),
            Value::Array(vec![b("4\nE\n\n{}"), b("5\nE\nk\n{}")]),
            Value::Array(vec![b("5\nE\nk\n{}"), b("2\nF\n\n{}"), b("junk")]),
        ]);
        let f = parse_fetched(v).unwrap();
        assert_eq!(f.epoch, "ep");
        assert_eq!(f.seq, 5);
        assert_eq!(
            f.history.iter().map(|s| s.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(
            f.last_values.iter().map(|s| s.seq).collect::<Vec<_>>(),
            vec![2, 5]
        );
        assert!(parse_fetched(Value::Array(vec![b("ep")])).is_none());
        assert!(parse_fetched(Value::Nil).is_none());
    }
}
