//! The publisher: `POST /api/events` over one keep-alive connection, paced at a rate
//! (or as fast as possible for a burst), each event carrying its send time.

use crate::accounting::LastValues;
use crate::message::{SEND_TIME_KEY, VALUE_KEY, WARMUP_KEY};
use crate::streams::Stream;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// How long one request may take before the connection is given up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted.
const MAX_RESPONSE: usize = 64 * 1024;
/// Pause after a failed connect, so a down server is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What to publish.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub host_header: String,
    pub token: Option<String>,
    /// Event `j` of the run goes to `streams[j % streams.len()]`.
    pub streams: Vec<Stream>,
    pub event_type: String,
    /// Events per request (1 sends a single object, more send an array).
    pub batch: usize,
    /// Bytes of padding in each event's `data`.
    pub payload: usize,
    /// Keys published (`key` = `k0`..): 0 publishes none (the key is the event type).
    pub keys: usize,
    /// Whether events carry a value (`data.v`) and the last one per key is kept.
    pub values: bool,
    /// Events a second during warm-up and (in rate mode) the measured phase, over all
    /// connections.
    pub rate: f64,
    /// Keep-alive connections publishing in parallel, each paced at `rate / connections`.
    pub connections: usize,
    pub warmup: Duration,
    pub mode: Mode,
}

/// Measured phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `rate` events a second for this long.
    Rate(Duration),
    /// This many events as fast as the server takes them.
    Burst(u64),
}

/// Live counters the parent reads for its progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub accepted: AtomicU64,
    /// Set when the measured phase starts.
    pub measuring: AtomicBool,
    /// Set by the parent to end publishing early (the soak ends when its phases do).
    pub stop: AtomicBool,
}

/// Longest single sleep of a publisher, so that a stop is seen soon.
const NAP: Duration = Duration::from_millis(50);

impl Live {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps until `until` or until stopped.
    fn sleep_until(&self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until || self.stopped() {
                return;
            }
            std::thread::sleep((until - now).min(NAP));
        }
    }
}

/// What the publisher did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Events the server accepted per stream (index into `Plan::streams`).
    pub per_stream: Vec<u64>,
    pub events: u64,
    pub warmup_events: u64,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub unconfirmed_events: u64,
    /// Events of the schedule not sent because the phase ended first.
    pub unsent_events: u64,
    /// Accepted events of the measured phase and how long it took.
    pub measured_events: u64,
    pub measured_secs: f64,
    pub max_lag_ns: u64,
    /// With `Plan::values`: per stream, the last value published of each key (`None`
    /// when a request whose outcome is unknown may have changed it).
    pub last_values: Vec<LastValues>,
}

/// A request that did not get `202 {"accepted":N}`.
#[derive(Debug, Error)]
pub enum PostError {
    /// The server answered with another status (the events were not published).
    #[error("HTTP {0}")]
    Status(u16),
    /// 202 with an unexpected `accepted` count.
    #[error("accepted {got} of {sent}")]
    Mismatch { got: u64, sent: u64 },
    /// Connection failed before a request was sent (nothing published).
    #[error("connect: {0}")]
    Connect(io::Error),
    /// Connection lost mid-request: outcome unknown.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("bad response: {0}")]
    Malformed(String),
}

impl PostError {
    fn kind(&self) -> String {
        match self {
            PostError::Status(s) => format!("http_{s}"),
            PostError::Mismatch { .. } => "accepted_mismatch".into(),
            PostError::Connect(e) => format!("connect_{}", crate::subscriber::io_kind(e)),
            PostError::Io(e) => crate::subscriber::io_kind(e),
            PostError::Malformed(_) => "bad_response".into(),
        }
    }
}

/// A keep-alive HTTP/1.1 client for `POST /api/events`.
struct Client {
    addr: SocketAddr,
    head: String,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

/// What a complete response said: status, body and whether the server keeps the connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

/// Parses a response with a `Content-Length` body; `Ok(None)` when incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut len = None;
    let mut keep_alive = resp.version != Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_none() {
                return Err("bad Content-Length".into());
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".into());
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let len = len.unwrap_or(0);
    if buf.len() < head + len {
        return Ok(None);
    }
    Ok(Some((
        Response {
            status: resp.code.unwrap_or(0),
            body: buf[head..head + len].to_vec(),
            keep_alive,
        },
        head + len,
    )))
}

impl Client {
    fn new(addr: SocketAddr, host: &str, token: Option<&str>) -> Client {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        Client {
            addr,
            head: format!(
                "POST /api/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nUser-Agent: bistream-loadtest\r\n{auth}Content-Length: "
            ),
            conn: None,
            buf: Vec::with_capacity(4096),
        }
    }

    fn connect(&mut self) -> Result<(), PostError> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, REQUEST_TIMEOUT)
                .map_err(PostError::Connect)?;
            let _ = s.set_nodelay(true);
            s.set_read_timeout(Some(REQUEST_TIMEOUT))
                .map_err(PostError::Connect)?;
            s.set_write_timeout(Some(REQUEST_TIMEOUT))
                .map_err(PostError::Connect)?;
            self.conn = Some(s);
        }
        Ok(())
    }

    /// Sends one body; answers the accepted count.
    fn post(&mut self, body: &[u8], sent: u64) -> Result<u64, PostError> {
        let mut req = Vec::with_capacity(self.head.len() + 16 + body.len());
        req.extend_from_slice(self.head.as_bytes());
        req.extend_from_slice(format!("{}\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(body);
        let result = self.round_trip(&req);
        if result.is_err() {
            self.conn = None;
        }
        let resp = result?;
        if !resp.keep_alive {
            self.conn = None;
        }
        if resp.status != 202 {
            return Err(PostError::Status(resp.status));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&resp.body).map_err(|e| PostError::Malformed(e.to_string()))?;
        match v.get("accepted").and_then(serde_json::Value::as_u64) {
            Some(n) if n == sent => Ok(n),
            Some(n) => Err(PostError::Mismatch { got: n, sent }),
            None => Err(PostError::Malformed("no `accepted`".into())),
        }
    }

    fn round_trip(&mut self, req: &[u8]) -> Result<Response, PostError> {
        self.connect()?;
        let Client {
            conn: Some(conn),
            buf,
            ..
        } = self
        else {
            return Err(PostError::Malformed("no connection".into()));
        };
        buf.clear();
        conn.write_all(req)?;
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Err(PostError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse_response(buf) {
                Ok(Some((resp, _))) => return Ok(resp),
                Ok(None) if buf.len() > MAX_RESPONSE => {
                    return Err(PostError::Malformed("response too large".into()))
                }
                Ok(None) => {}
                Err(e) => return Err(PostError::Malformed(e)),
            }
        }
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What one event carries besides its stream and type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras<'a> {
    /// Its `key` (docs/protocol.md §9), when the run publishes keys.
    pub key: Option<&'a str>,
    /// Its value (`data.v`), when the run checks last values.
    pub value: Option<u64>,
    /// A warm-up event (`data.w`).
    pub warm: bool,
}

/// Appends one event object.
pub fn write_event(
    out: &mut Vec<u8>,
    s: &Stream,
    event_type: &str,
    t_ns: u64,
    extras: Extras,
    pad: &str,
) {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(180 + pad.len());
    let _ = write!(
        text,
        r#"{{"channel":"{}","location_id":"{}","event_type":"{event_type}","#,
        s.channel, s.location
    );
    if let Some(key) = extras.key {
        let _ = write!(text, r#""key":"{key}","#);
    }
    let _ = write!(text, r#""data":{{"{SEND_TIME_KEY}":{t_ns}"#);
    if let Some(v) = extras.value {
        let _ = write!(text, r#","{VALUE_KEY}":{v}"#);
    }
    if extras.warm {
        let _ = write!(text, r#","{WARMUP_KEY}":1"#);
    }
    if !pad.is_empty() {
        let _ = write!(text, r#","pad":"{pad}""#);
    }
    text.push_str("}}");
    out.extend_from_slice(text.as_bytes());
}

/// The name of key number `i`.
pub fn key_name(i: u32) -> String {
    format!("k{i}")
}

/// Which key each event of one publisher connection carries. Key `i` belongs to lane
/// `i % lanes` alone, so that each key's events are sent one request after another
/// on one connection and the server orders them as they were sent: the lane's last
/// accepted value of a key is then the key's last published value. Each lane takes
/// its keys in turn, per stream.
#[derive(Debug, Clone)]
pub struct LaneKeys {
    /// Key numbers this lane owns.
    owned: Vec<u32>,
    /// Per stream, how many keyed events it sent.
    next: Vec<usize>,
}

impl LaneKeys {
    pub fn new(keys: usize, lane: Lane, streams: usize) -> Self {
        let owned = (0..keys as u64)
            .filter(|i| i % lane.stride == lane.offset)
            .map(|i| i as u32)
            .collect();
        LaneKeys {
            owned,
            next: vec![0; streams],
        }
    }

    /// The key number of the next event to `stream`; `None` when the run has no keys.
    pub fn next(&mut self, stream: usize) -> Option<u32> {
        if self.owned.is_empty() {
            return None;
        }
        let n = self.next.get_mut(stream)?;
        let key = self.owned[*n % self.owned.len()];
        *n += 1;
        Some(key)
    }
}

/// What one event of a request was: its stream, key number and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub stream: usize,
    pub key: Option<u32>,
    pub value: u64,
}

/// Where the events of one publisher connection go: its `k`-th event is run-wide
/// event `k * stride + offset`, and run-wide event `j` goes to stream `j % streams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    pub stride: u64,
    pub offset: u64,
}

impl Lane {
    /// The stream of this lane's `k`-th event.
    pub fn stream(&self, k: u64, streams: usize) -> usize {
        ((k * self.stride + self.offset) % streams.max(1) as u64) as usize
    }
}

/// The body for `n` events starting at this lane's event number `first`, and what
/// each event was. An event's value is its number in the run (unique).
pub fn body(
    plan: &Plan,
    lane: Lane,
    first: u64,
    n: usize,
    warm: bool,
    pad: &str,
    keys: &mut LaneKeys,
) -> (Vec<u8>, Vec<Sent>) {
    let mut out = Vec::with_capacity(n * (200 + pad.len()) + 2);
    let mut sent = Vec::with_capacity(n);
    let t_ns = wall_ns();
    if n > 1 {
        out.push(b'[');
    }
    for i in 0..n as u64 {
        if i > 0 {
            out.push(b',');
        }
        let k = first + i;
        let stream = lane.stream(k, plan.streams.len());
        let key = keys.next(stream);
        let value = k * lane.stride + lane.offset;
        let name = key.map(key_name);
        let extras = Extras {
            key: name.as_deref(),
            value: plan.values.then_some(value),
            warm,
        };
        write_event(
            &mut out,
            &plan.streams[stream],
            &plan.event_type,
            t_ns,
            extras,
            pad,
        );
        sent.push(Sent { stream, key, value });
    }
    if n > 1 {
        out.push(b']');
    }
    (out, sent)
}

struct Publisher<'a> {
    plan: &'a Plan,
    client: Client,
    pad: String,
    lane: Lane,
    keys: LaneKeys,
    next_event: u64,
    out: Outcome,
    live: &'a Live,
}

impl Publisher<'_> {
    /// Sends `n` events; counts them per stream when accepted.
    fn send(&mut self, n: usize, warm: bool) -> u64 {
        let (body, sent) = body(
            self.plan,
            self.lane,
            self.next_event,
            n,
            warm,
            &self.pad,
            &mut self.keys,
        );
        self.next_event += n as u64;
        self.out.requests += 1;
        match self.client.post(&body, n as u64) {
            Ok(accepted) => {
                for s in &sent {
                    self.out.per_stream[s.stream] += 1;
                }
                self.remember(&sent, true);
                self.out.events += accepted;
                if warm {
                    self.out.warmup_events += accepted;
                }
                self.live.accepted.fetch_add(accepted, Ordering::Relaxed);
                accepted
            }
            Err(e) => {
                log::debug!("publish failed: {e}");
                if matches!(
                    e,
                    PostError::Io(_) | PostError::Mismatch { .. } | PostError::Malformed(_)
                ) {
                    self.out.unconfirmed_events += n as u64;
                    self.remember(&sent, false);
                }
                if matches!(e, PostError::Connect(_)) {
                    std::thread::sleep(RECONNECT_PAUSE);
                }
                *self.out.errors.entry(e.kind()).or_default() += 1;
                0
            }
        }
    }

    /// Keeps the last value of each key sent: known when the request was accepted,
    /// unknown when its outcome is.
    fn remember(&mut self, sent: &[Sent], accepted: bool) {
        if !self.plan.values {
            return;
        }
        for s in sent {
            let key = s.key.map_or_else(|| self.plan.event_type.clone(), key_name);
            if let Some(map) = self.out.last_values.get_mut(s.stream) {
                map.insert(key, accepted.then_some(s.value));
            }
        }
    }

    /// `rate` events a second for `length`; answers events accepted. A publisher that
    /// fell behind catches up as fast as the server answers, but never past `length`:
    /// what is not sent by then is not sent (the phase keeps its length).
    fn paced(&mut self, length: Duration, warm: bool) -> u64 {
        let rate = self.plan.rate / self.lane.stride as f64;
        let total = (length.as_secs_f64() * rate).floor() as u64;
        let batch = self.plan.batch as u64;
        let start = Instant::now();
        let end = start + length;
        let mut sent = 0u64;
        let mut accepted = 0u64;
        while sent < total && Instant::now() < end && !self.live.stopped() {
            // Event k is due at start + k / rate; send when a whole batch is due.
            let n = batch.min(total - sent);
            let due_at = start + Duration::from_secs_f64((sent + n - 1) as f64 / rate);
            let now = Instant::now();
            if due_at > now {
                self.live.sleep_until(due_at);
                if self.live.stopped() {
                    break;
                }
            } else {
                let lag = (now - due_at).as_nanos() as u64;
                self.out.max_lag_ns = self.out.max_lag_ns.max(lag);
            }
            accepted += self.send(n as usize, warm);
            sent += n;
        }
        if !self.live.stopped() {
            self.out.unsent_events += total - sent;
        }
        self.live.sleep_until(end);
        accepted
    }
}

/// Runs one connection's share of the plan: warm-up, then the measured phase.
fn run_lane(plan: &Plan, lane: Lane, live: &Live) -> Outcome {
    let mut p = Publisher {
        plan,
        client: Client::new(plan.addr, &plan.host_header, plan.token.as_deref()),
        pad: "x".repeat(plan.payload),
        lane,
        keys: LaneKeys::new(plan.keys, lane, plan.streams.len()),
        next_event: 0,
        out: Outcome {
            per_stream: vec![0; plan.streams.len()],
            last_values: if plan.values {
                vec![LastValues::new(); plan.streams.len()]
            } else {
                Vec::new()
            },
            ..Default::default()
        },
        live,
    };
    if !plan.warmup.is_zero() {
        p.paced(plan.warmup, true);
    }
    live.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let measured = match plan.mode {
        Mode::Rate(length) => p.paced(length, false),
        Mode::Burst(events) => {
            // This lane's share of the burst.
            let mut left = events / lane.stride + u64::from(lane.offset < events % lane.stride);
            let mut accepted = 0;
            while left > 0 && !live.stopped() {
                let n = left.min(plan.batch as u64);
                accepted += p.send(n as usize, false);
                left -= n;
            }
            accepted
        }
    };
    p.out.measured_events = measured;
    p.out.measured_secs = start.elapsed().as_secs_f64();
    p.out
}

/// Merges the outcomes of the publisher connections.
pub fn merge(outcomes: Vec<Outcome>, streams: usize) -> Outcome {
    let mut m = Outcome {
        per_stream: vec![0; streams],
        ..Default::default()
    };
    for o in outcomes {
        for (a, b) in m.per_stream.iter_mut().zip(&o.per_stream) {
            *a += b;
        }
        m.events += o.events;
        m.warmup_events += o.warmup_events;
        m.requests += o.requests;
        for (k, v) in o.errors {
            *m.errors.entry(k).or_default() += v;
        }
        m.unconfirmed_events += o.unconfirmed_events;
        m.unsent_events += o.unsent_events;
        m.measured_events += o.measured_events;
        m.measured_secs = m.measured_secs.max(o.measured_secs);
        m.max_lag_ns = m.max_lag_ns.max(o.max_lag_ns);
        if m.last_values.len() < o.last_values.len() {
            m.last_values.resize(o.last_values.len(), LastValues::new());
        }
        for (mine, theirs) in m.last_values.iter_mut().zip(o.last_values) {
            for (key, value) in theirs {
                // Two connections published the key: which came last is unknown.
                let merged = if mine.contains_key(&key) { None } else { value };
                mine.insert(key, merged);
            }
        }
    }
    m
}

/// Runs the plan over `plan.connections` keep-alive connections (one thread each).
pub fn run(plan: &Plan, live: &Live) -> Outcome {
    let lanes = plan.connections.max(1) as u64;
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|offset| {
                scope.spawn(move || {
                    run_lane(
                        plan,
                        Lane {
                            stride: lanes,
                            offset,
                        },
                        live,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
    });
    merge(outcomes, plan.streams.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(streams: usize) -> Plan {
        Plan {
            addr: "127.0.0.1:1".parse().unwrap(),
            host_header: "127.0.0.1:1".into(),
            token: None,
            streams: crate::streams::build_streams(&["dashboard"], streams, "loc-").unwrap(),
            event_type: "LOADTEST".into(),
            batch: 1,
            payload: 0,
            keys: 0,
            values: false,
            rate: 10.0,
            connections: 1,
            warmup: Duration::ZERO,
            mode: Mode::Burst(1),
        }
    }

    #[test]
    fn bodies_carry_send_time_and_rotate_streams() {
        let p = plan(2);
        let lane = Lane {
            stride: 1,
            offset: 0,
        };
        let mut keys = LaneKeys::new(0, lane, 2);
        let one: serde_json::Value =
            serde_json::from_slice(&body(&p, lane, 0, 1, false, "", &mut keys).0).unwrap();
        assert_eq!(one["location_id"], "loc-1");
        assert!(one["data"]["t_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000);
        assert!(one["data"].get("w").is_none());
        assert!(one.get("key").is_none() && one["data"].get("v").is_none());
        let many: serde_json::Value =
            serde_json::from_slice(&body(&p, lane, 1, 3, true, "ab", &mut keys).0).unwrap();
        let locs: Vec<&str> = many
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["location_id"].as_str().unwrap())
            .collect();
        assert_eq!(locs, ["loc-2", "loc-1", "loc-2"]);
        assert_eq!(many[0]["data"]["w"], 1);
        assert_eq!(many[0]["data"]["pad"], "ab");
        assert_eq!(many[0]["event_type"], "LOADTEST");
    }

    #[test]
    fn keys_belong_to_one_lane_and_rotate_per_stream() {
        let mut p = plan(2);
        p.keys = 5;
        p.values = true;
        let lanes: Vec<Lane> = (0..2).map(|offset| Lane { stride: 2, offset }).collect();
        let mut seen = std::collections::BTreeMap::new();
        for lane in &lanes {
            let mut keys = LaneKeys::new(5, *lane, 2);
            let (bytes, sent) = body(&p, *lane, 0, 8, false, "", &mut keys);
            let events: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for (e, s) in events.as_array().unwrap().iter().zip(&sent) {
                let key = e["key"].as_str().unwrap();
                assert_eq!(key, key_name(s.key.unwrap()));
                assert_eq!(e["data"]["v"], s.value);
                assert_eq!(s.value % 2, lane.offset);
                assert_eq!(
                    seen.insert(key.to_string(), lane.offset)
                        .unwrap_or(lane.offset),
                    lane.offset
                );
            }
        }
        // Lane 0 owns k0, k2, k4 and lane 1 owns k1, k3; every key is published.
        assert_eq!(seen.len(), 5);
        let mut keys = LaneKeys::new(5, lanes[0], 2);
        let per_stream: Vec<_> = (0..4).map(|_| keys.next(1).unwrap()).collect();
        assert_eq!(per_stream, [0, 2, 4, 0]);
        assert_eq!(LaneKeys::new(0, lanes[0], 2).next(0), None);
    }

    #[test]
    fn last_values_merge_and_conflict() {
        let a = Outcome {
            last_values: vec![[("k0".to_string(), Some(4)), ("E".to_string(), Some(6))].into()],
            ..Default::default()
        };
        let b = Outcome {
            last_values: vec![[("k1".to_string(), Some(5)), ("E".to_string(), Some(7))].into()],
            ..Default::default()
        };
        let m = merge(vec![a, b], 1);
        let want: LastValues = [
            ("E".to_string(), None),
            ("k0".to_string(), Some(4)),
            ("k1".to_string(), Some(5)),
        ]
        .into();
        assert_eq!(m.last_values, vec![want]);
    }

    #[test]
    fn lanes_spread_events_over_streams() {
        let lanes: Vec<Lane> = (0..2).map(|offset| Lane { stride: 2, offset }).collect();
        let of = |l: &Lane| (0..3).map(|k| l.stream(k, 6)).collect::<Vec<_>>();
        assert_eq!(of(&lanes[0]), [0, 2, 4]);
        assert_eq!(of(&lanes[1]), [1, 3, 5]);
        let a = Outcome {
            per_stream: vec![1, 2],
            events: 3,
            max_lag_ns: 5,
            measured_secs: 1.0,
            ..Default::default()
        };
        let b = Outcome {
            per_stream: vec![4, 0],
            events: 4,
            max_lag_ns: 2,
            measured_secs: 2.0,
            ..Default::default()
        };
        let m = merge(vec![a, b], 2);
        assert_eq!(
            (m.per_stream, m.events, m.max_lag_ns, m.measured_secs),
            (vec![5, 2], 7, 5, 2.0)
        );
    }

    #[test]
    fn responses_parse() {
        let r = b"HTTP/1.1 202 Accepted\r\nContent-Length: 14\r\n\r\n{\"accepted\":3}";
        let (resp, used) = parse_response(r).unwrap().unwrap();
        assert_eq!((resp.status, used, resp.keep_alive), (202, r.len(), true));
        assert_eq!(resp.body, b"{\"accepted\":3}");
        assert_eq!(parse_response(&r[..r.len() - 1]).unwrap(), None);
        let c = b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let (resp, _) = parse_response(c).unwrap().unwrap();
        assert_eq!((resp.status, resp.keep_alive), (503, false));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }
}
