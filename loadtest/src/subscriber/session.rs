//! One subscriber connection, sans-io: the upgrade, then the server's frames and
//! messages, then the end. The event loop hands it the bytes it read and sends the
//! bytes it queues (`out`: the upgrade request, pongs, close replies); the session says
//! after each step whether the connection goes on ([`Outcome`]).
//!
//! ```text
//! Connecting ──connected──► Upgrading ──101──► Awaiting ──BI_CONNECTION_ESTABLISHED──► Live
//!      └──── error / timeout / refusal: Failed(kind) ─────────┘              └─ close / EOF: Closed(code)
//! ```

use super::reader::{Flow, Frame, FrameReader};
use super::stats::Stats;
use crate::accounting::{ConflateTracker, SeqTracker, SnapshotCheck};
use crate::handshake::parse_response;
use crate::message::{self, ServerMsg};
use crate::wsframe::{self, Opcode};
use std::time::Instant;

/// Largest server message accepted (bigger ones end the connection with 1009).
pub const MAX_MESSAGE: usize = 16 << 20;

/// How a step of a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    /// Ended by the client side for `kind` (protocol error, refusal, I/O error).
    Failed(String),
    /// The server sent a close frame with this code, or 1006 for EOF/reset without one.
    Closed(u16),
}

/// Masking keys for the client's frames: they need not be secret here, only present.
#[derive(Debug)]
pub struct Masks(u64);

impl Masks {
    pub fn new(seed: u64) -> Self {
        Masks(seed | 1)
    }

    /// The next key (xorshift64).
    pub fn next_key(&mut self) -> [u8; 4] {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 as u32).to_le_bytes()
    }
}

/// What a session needs from its loop for one read.
pub struct Ctx<'a> {
    pub stats: &'a mut Stats,
    /// Wall-clock time of the read (ns since the Unix epoch), for latency.
    pub now_ns: u64,
    pub now: Instant,
    pub masks: &'a mut Masks,
}

/// What a connection asks for on its upgrade (docs/protocol.md §9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscription {
    /// `conflate=1`: at most one unwritten event per key; seqs may skip.
    pub conflate: bool,
    /// `snapshot=1`: the last value of each key right after the establishment.
    pub snapshot: bool,
}

impl Subscription {
    /// What connection number `n` asks for when `conflate_share` of the connections
    /// conflate and `snapshot_share` ask for a snapshot. Connection `n` is the
    /// `n / streams`-th of its stream (`n % streams`), and the shares are spread evenly
    /// over those ranks, so that every stream gets its share: rank `i` conflates when
    /// `⌊(i+1)·share⌋ > ⌊i·share⌋`; snapshots take the same rule half a step later, so
    /// that at a share of ½ each the two sets are disjoint.
    pub fn for_connection(
        n: u64,
        streams: usize,
        conflate_share: f64,
        snapshot_share: f64,
    ) -> Self {
        let rank = (n / streams.max(1) as u64) as f64;
        let picked = |share: f64, phase: f64| {
            share > 0.0 && ((rank + 1.0) * share + phase).floor() > (rank * share + phase).floor()
        };
        Subscription {
            conflate: picked(conflate_share, 0.0),
            snapshot: picked(snapshot_share, 0.5),
        }
    }

    /// Its query parameters.
    pub fn params(self) -> Vec<(&'static str, &'static str)> {
        let mut p = Vec::new();
        if self.conflate {
            p.push(("conflate", "1"));
        }
        if self.snapshot {
            p.push(("snapshot", "1"));
        }
        p
    }
}

/// How a live connection's seqs are accounted for.
#[derive(Debug, Clone)]
pub enum Tracking {
    /// Every seq, once, in order.
    Strict(SeqTracker),
    /// Ascending seqs that may skip; the last value per key.
    Conflating(ConflateTracker),
}

impl Tracking {
    pub fn base(&self) -> u64 {
        match self {
            Tracking::Strict(t) => t.base(),
            Tracking::Conflating(c) => c.base(),
        }
    }

    /// Highest seq received.
    pub fn last(&self) -> u64 {
        match self {
            Tracking::Strict(t) => t.last(),
            Tracking::Conflating(c) => c.last(),
        }
    }

    /// Whether nothing more is owed up to `final_seq`.
    pub fn complete(&self, final_seq: u64) -> bool {
        match self {
            Tracking::Strict(t) => t.complete(final_seq),
            Tracking::Conflating(c) => c.complete(final_seq),
        }
    }
}

/// Everything a live connection accounts for.
#[derive(Debug, Clone)]
pub struct Accounting {
    pub tracking: Tracking,
    /// With `snapshot=1`: the shape of the snapshot.
    pub snapshot: Option<SnapshotCheck>,
}

#[derive(Debug)]
enum Phase {
    /// TCP connect in progress; `request` is the upgrade request to send once connected.
    Connecting { request: Vec<u8>, key: String },
    /// Request sent (or being sent); `head` holds an incomplete response head.
    Upgrading { key: String, head: Vec<u8> },
    /// Upgraded; waiting for `BI_CONNECTION_ESTABLISHED`.
    Awaiting,
    /// Receiving events.
    Live(Accounting),
}

/// One connection's state, without its socket.
#[derive(Debug)]
pub struct Session {
    /// Index into the spec's streams.
    pub stream: usize,
    /// What it asked for.
    pub subscription: Subscription,
    /// When the TCP connect started (connect time is measured from here).
    pub started: Instant,
    phase: Phase,
    reader: FrameReader,
    /// Bytes to send.
    pub out: Vec<u8>,
    /// When the client started the closing handshake (churn); the server's close
    /// frame is then the answer, not a close of its own.
    closing: Option<Instant>,
}

impl Session {
    /// A connection to `stream` that sends `request` (an upgrade with `key`, asking for
    /// `subscription`) once connected.
    pub fn new(
        stream: usize,
        subscription: Subscription,
        request: Vec<u8>,
        key: String,
        started: Instant,
    ) -> Self {
        Session {
            stream,
            subscription,
            started,
            phase: Phase::Connecting { request, key },
            reader: FrameReader::new(MAX_MESSAGE),
            out: Vec::new(),
            closing: None,
        }
    }

    /// Whether the TCP connect is still in progress.
    pub fn connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. })
    }

    /// Whether `BI_CONNECTION_ESTABLISHED` has arrived.
    pub fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live(_))
    }

    /// Whether the upgrade succeeded (a live connection, or one awaiting its first message).
    fn upgraded(&self) -> bool {
        matches!(self.phase, Phase::Live(_) | Phase::Awaiting)
    }

    /// The accounting of a live connection.
    pub fn accounting(&self) -> Option<&Accounting> {
        match &self.phase {
            Phase::Live(a) => Some(a),
            _ => None,
        }
    }

    /// The accounting, when the connection is being dropped.
    pub fn into_accounting(self) -> Option<Accounting> {
        match self.phase {
            Phase::Live(a) => Some(a),
            _ => None,
        }
    }

    /// The TCP connect completed: queue the upgrade request.
    pub fn on_connected(&mut self) {
        if let Phase::Connecting { request, key } = &mut self.phase {
            self.out = std::mem::take(request);
            let key = std::mem::take(key);
            self.phase = Phase::Upgrading {
                key,
                head: Vec::new(),
            };
        }
    }

    /// The server closed the connection (EOF) or it failed with `kind`.
    pub fn on_end(&self, kind: impl FnOnce() -> String) -> Outcome {
        if self.upgraded() {
            Outcome::Closed(1006)
        } else {
            Outcome::Failed(kind())
        }
    }

    /// Queues a close frame with `code` (the client ends the connection).
    pub fn close(&mut self, code: u16, masks: &mut Masks) {
        self.out.clear();
        wsframe::encode_close(&mut self.out, code, "", Some(masks.next_key()));
    }

    /// Starts the closing handshake: close 1000 now; the server's close frame ends it.
    pub fn begin_close(&mut self, masks: &mut Masks, now: Instant) {
        if self.closing.is_none() {
            self.close(1000, masks);
            self.closing = Some(now);
        }
    }

    /// When the client started closing, if it did.
    pub fn closing_since(&self) -> Option<Instant> {
        self.closing
    }

    /// Bytes read from the socket.
    pub fn on_bytes(&mut self, data: &[u8], ctx: &mut Ctx) -> Outcome {
        let frames = match &mut self.phase {
            Phase::Connecting { .. } => return Outcome::Failed("data_before_upgrade".into()),
            Phase::Upgrading { key, head } => {
                head.extend_from_slice(data);
                match parse_response(head, key) {
                    Ok(None) => return Outcome::Keep,
                    Err(e) => return Outcome::Failed(e.kind()),
                    Ok(Some(n)) => {
                        let rest = head.split_off(n);
                        self.phase = Phase::Awaiting;
                        return if rest.is_empty() {
                            Outcome::Keep
                        } else {
                            self.on_frames(&rest, ctx)
                        };
                    }
                }
            }
            _ => data,
        };
        self.on_frames(frames, ctx)
    }

    fn on_frames(&mut self, data: &[u8], ctx: &mut Ctx) -> Outcome {
        let Session {
            reader,
            phase,
            out,
            started,
            closing,
            subscription,
            ..
        } = self;
        let mut outcome = Outcome::Keep;
        let read = reader.feed(data, &mut |frame| {
            outcome = match frame {
                Frame::Message(text) => on_message(phase, *subscription, *started, text, ctx),
                Frame::Ping(payload) => {
                    wsframe::encode(out, Opcode::Pong, payload, Some(ctx.masks.next_key()));
                    Outcome::Keep
                }
                Frame::Pong => Outcome::Keep,
                Frame::Close(code) => {
                    if closing.is_none() {
                        let reply = if code == 1005 { 1000 } else { code };
                        wsframe::encode_close(out, reply, "", Some(ctx.masks.next_key()));
                    }
                    Outcome::Closed(code)
                }
            };
            if outcome == Outcome::Keep {
                Flow::Continue
            } else {
                Flow::Stop
            }
        });
        match read {
            Ok(_) => outcome,
            Err(e) => {
                wsframe::encode_close(out, e.close_code(), "", Some(ctx.masks.next_key()));
                Outcome::Failed(e.kind().into())
            }
        }
    }
}

/// One complete text (or binary) message.
fn on_message(
    phase: &mut Phase,
    sub: Subscription,
    started: Instant,
    text: &[u8],
    ctx: &mut Ctx,
) -> Outcome {
    let st = &mut *ctx.stats;
    let msg = match message::parse(text) {
        Ok(m) => m,
        Err(_) => {
            st.bad_messages += 1;
            return match phase {
                Phase::Awaiting => Outcome::Failed("bad_first_message".into()),
                _ => Outcome::Keep,
            };
        }
    };
    match (&mut *phase, msg) {
        (Phase::Awaiting, ServerMsg::Established { last_seq }) => {
            let took = ctx.now.saturating_duration_since(started);
            let _ = st.connect.record((took.as_nanos() as u64).max(1));
            st.established += 1;
            *phase = Phase::Live(Accounting {
                tracking: if sub.conflate {
                    Tracking::Conflating(ConflateTracker::new(last_seq))
                } else {
                    Tracking::Strict(SeqTracker::new(last_seq))
                },
                snapshot: sub.snapshot.then(|| SnapshotCheck::new(last_seq)),
            });
            Outcome::Keep
        }
        (Phase::Awaiting, _) => Outcome::Failed("bad_first_message".into()),
        (Phase::Live(acc), ServerMsg::Event(ev)) if ev.snapshot => {
            // A last value sent on connect: not a delivery of a live event.
            match (&mut acc.snapshot, &mut acc.tracking) {
                (Some(check), tracking) => {
                    check.event(ev.seq);
                    if let Tracking::Conflating(c) = tracking {
                        c.observe_snapshot(ev.seq, &ev.key, ev.value);
                    }
                }
                // A snapshot nobody asked for.
                (None, _) => st.bad_messages += 1,
            }
            Outcome::Keep
        }
        (Phase::Live(acc), ServerMsg::Event(ev)) => {
            if let Some(check) = &mut acc.snapshot {
                check.live();
            }
            match &mut acc.tracking {
                Tracking::Strict(t) => {
                    t.observe(ev.seq);
                }
                Tracking::Conflating(c) => {
                    c.observe(ev.seq, &ev.key, ev.value);
                }
            }
            st.delivery(ev.t_ns, ev.warm, ctx.now_ns);
            Outcome::Keep
        }
        (Phase::Live(acc), ServerMsg::Snapshot { count, last_seq }) => {
            match &mut acc.snapshot {
                Some(check) => check.marker(count, last_seq),
                None => st.bad_messages += 1,
            }
            Outcome::Keep
        }
        _ => Outcome::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::upgrade_request;
    use crate::wsframe::{decode, encode, encode_close};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    fn session() -> Session {
        session_for(Subscription::default())
    }

    fn session_for(sub: Subscription) -> Session {
        let req = upgrade_request("/ws/dashboard/loc-1", "h", &sub.params(), KEY);
        let mut s = Session::new(0, sub, req, KEY.into(), Instant::now());
        s.on_connected();
        s
    }

    fn text(out: &mut Vec<u8>, msg: &str) {
        encode(out, Opcode::Text, msg.as_bytes(), None);
    }

    /// The server's side of a short life: 101, established, events, a ping, a close.
    fn server_bytes() -> Vec<u8> {
        let mut b = SWITCH.to_vec();
        text(
            &mut b,
            r#"{"type":"BI_CONNECTION_ESTABLISHED","last_seq":10}"#,
        );
        text(&mut b, r#"{"type":"event","seq":11,"data":{"t_ns":100}}"#);
        encode(&mut b, Opcode::Ping, b"p", None);
        text(
            &mut b,
            r#"{"type":"event","seq":12,"data":{"t_ns":100,"w":1}}"#,
        );
        text(&mut b, r#"{"type":"event","seq":14,"data":{}}"#);
        encode_close(&mut b, 1001, "shutdown", None);
        b
    }

    /// Feeds `bytes` in pieces; answers the outcome of the last piece and the stats.
    fn play(bytes: &[u8], piece: usize) -> (Session, Outcome, Stats) {
        play_as(Subscription::default(), bytes, piece)
    }

    fn play_as(sub: Subscription, bytes: &[u8], piece: usize) -> (Session, Outcome, Stats) {
        let mut s = session_for(sub);
        let mut stats = Stats::default();
        let mut masks = Masks::new(7);
        let mut outcome = Outcome::Keep;
        for chunk in bytes.chunks(piece) {
            assert_eq!(outcome, Outcome::Keep, "bytes after the end");
            let mut ctx = Ctx {
                stats: &mut stats,
                now_ns: 1100,
                now: Instant::now(),
                masks: &mut masks,
            };
            outcome = s.on_bytes(chunk, &mut ctx);
        }
        (s, outcome, stats)
    }

    #[test]
    fn sends_the_upgrade_once_connected() {
        let s = session();
        assert!(s.out.starts_with(b"GET /ws/dashboard/loc-1 HTTP/1.1\r\n"));
        assert!(!s.connecting() && !s.is_live());
    }

    #[test]
    fn a_life_in_any_pieces() {
        let bytes = server_bytes();
        for piece in [1, 3, 40, 150, bytes.len()] {
            let (s, outcome, st) = play(&bytes, piece);
            assert_eq!(outcome, Outcome::Closed(1001), "pieces of {piece}");
            assert_eq!((st.established, st.deliveries, st.measured), (1, 3, 1));
            assert_eq!(st.untimed, 1);
            assert_eq!(st.latency.max(), st.latency.min());
            assert_eq!(st.latency.len(), 1);
            let Some(Tracking::Strict(t)) = s.accounting().map(|a| &a.tracking) else {
                panic!("not a strict tracker")
            };
            assert_eq!((t.base(), t.last(), t.gaps), (10, 14, 1));
            // The pong and the close reply, both masked, after the upgrade request.
            let frames = &s.out[s.out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
            let pong = decode(frames, true, 125).unwrap().unwrap();
            assert_eq!((pong.opcode, pong.len), (Opcode::Pong, 1));
            let close = decode(&frames[pong.frame_len()..], true, 125)
                .unwrap()
                .unwrap();
            assert_eq!(close.opcode, Opcode::Close);
        }
    }

    #[test]
    fn refusals_and_bad_first_messages_fail() {
        let (_, outcome, st) = play(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", 7);
        assert_eq!(outcome, Outcome::Failed("http_503".into()));
        assert_eq!(st.established, 0);
        let mut b = SWITCH.to_vec();
        text(&mut b, r#"{"type":"event","seq":1}"#);
        assert_eq!(play(&b, 9).1, Outcome::Failed("bad_first_message".into()));
        let mut b = SWITCH.to_vec();
        text(&mut b, "not json");
        let (_, outcome, st) = play(&b, 500);
        assert_eq!(outcome, Outcome::Failed("bad_first_message".into()));
        assert_eq!(st.bad_messages, 1);
    }

    #[test]
    fn a_bad_frame_is_answered_with_a_close() {
        let mut b = SWITCH.to_vec();
        text(
            &mut b,
            r#"{"type":"BI_CONNECTION_ESTABLISHED","last_seq":0}"#,
        );
        b.extend([0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0]); // masked: not from a server
        let (s, outcome, _) = play(&b, 1000);
        assert_eq!(outcome, Outcome::Failed("protocol_error".into()));
        assert!(s.is_live());
        let tail = &s.out[s.out.len() - 8..];
        let h = decode(tail, true, 125).unwrap().unwrap();
        assert_eq!(h.opcode, Opcode::Close);
    }

    #[test]
    fn a_close_the_client_began_is_not_answered_again() {
        let mut b = SWITCH.to_vec();
        text(
            &mut b,
            r#"{"type":"BI_CONNECTION_ESTABLISHED","last_seq":0}"#,
        );
        let (mut s, _, mut stats) = play(&b, 1000);
        let mut masks = Masks::new(3);
        s.begin_close(&mut masks, Instant::now());
        assert!(s.closing_since().is_some());
        let queued = s.out.len();
        assert_eq!(queued, 8); // masked close 1000, nothing else
        let mut reply = Vec::new();
        encode_close(&mut reply, 1000, "", None);
        let mut ctx = Ctx {
            stats: &mut stats,
            now_ns: 0,
            now: Instant::now(),
            masks: &mut masks,
        };
        assert_eq!(s.on_bytes(&reply, &mut ctx), Outcome::Closed(1000));
        assert_eq!(s.out.len(), queued);
    }

    /// A snapshot connection that conflates: two last values, the marker, then live
    /// events of which the server conflated some away.
    #[test]
    fn snapshot_then_conflated_live_events() {
        let sub = Subscription {
            conflate: true,
            snapshot: true,
        };
        assert_eq!(
            String::from_utf8_lossy(&session_for(sub).out)
                .lines()
                .next(),
            Some("GET /ws/dashboard/loc-1?conflate=1&snapshot=1 HTTP/1.1")
        );
        let mut b = SWITCH.to_vec();
        text(
            &mut b,
            r#"{"type":"BI_CONNECTION_ESTABLISHED","last_seq":20,"conflate":true}"#,
        );
        text(
            &mut b,
            r#"{"type":"event","seq":12,"key":"a","snapshot":true,"data":{"v":12}}"#,
        );
        text(
            &mut b,
            r#"{"type":"event","seq":20,"key":"b","snapshot":true,"data":{"v":20}}"#,
        );
        text(&mut b, r#"{"type":"snapshot","count":2,"last_seq":20}"#);
        text(
            &mut b,
            r#"{"type":"event","seq":21,"key":"a","data":{"v":21,"t_ns":1}}"#,
        );
        text(
            &mut b,
            r#"{"type":"event","seq":25,"key":"b","data":{"v":25,"t_ns":1}}"#,
        );
        let (s, outcome, st) = play_as(sub, &b, 17);
        assert_eq!(outcome, Outcome::Keep);
        assert_eq!((st.deliveries, st.bad_messages), (2, 0));
        let acc = s.accounting().unwrap();
        let snap = acc.snapshot.as_ref().unwrap().tally();
        assert_eq!((snap.markers, snap.events, snap.errors()), (1, 2, 0));
        let Tracking::Conflating(c) = &acc.tracking else {
            panic!("not conflating")
        };
        assert_eq!((c.last(), c.skipped, c.order_violations), (25, 3, 0));
        let want = [("a".to_string(), Some(21)), ("b".to_string(), Some(25))]
            .into_iter()
            .collect();
        assert_eq!(c.tally(&want).matching, 2);
    }

    #[test]
    fn a_snapshot_nobody_asked_for_is_not_understood() {
        let mut b = SWITCH.to_vec();
        text(
            &mut b,
            r#"{"type":"BI_CONNECTION_ESTABLISHED","last_seq":5}"#,
        );
        text(
            &mut b,
            r#"{"type":"event","seq":3,"snapshot":true,"data":{}}"#,
        );
        text(&mut b, r#"{"type":"snapshot","count":1,"last_seq":5}"#);
        let (s, _, st) = play(&b, 64);
        assert_eq!((st.bad_messages, st.deliveries), (2, 0));
        assert!(s.accounting().unwrap().snapshot.is_none());
    }

    #[test]
    fn shares_are_spread_over_each_stream() {
        let pick = |streams: usize, c: f64, s: f64| -> Vec<Subscription> {
            (0..120)
                .map(|n| Subscription::for_connection(n, streams, c, s))
                .collect()
        };
        let subs = pick(3, 0.5, 0.5);
        for stream in 0..3 {
            let mine: Vec<_> = subs.iter().skip(stream).step_by(3).collect();
            assert_eq!(mine.iter().filter(|s| s.conflate).count(), 20);
            assert_eq!(mine.iter().filter(|s| s.snapshot).count(), 20);
            assert!(mine.iter().all(|s| !(s.conflate && s.snapshot)));
        }
        let subs = pick(1, 0.25, 0.0);
        assert_eq!(subs.iter().filter(|s| s.conflate).count(), 30);
        assert!(subs.iter().all(|s| !s.snapshot));
        assert!(pick(2, 1.0, 1.0).iter().all(|s| s.conflate && s.snapshot));
        assert!(pick(2, 0.0, 0.0).iter().all(|s| s.params().is_empty()));
    }

    #[test]
    fn eof_is_a_close_once_upgraded() {
        let s = session();
        assert_eq!(
            s.on_end(|| "closed_early".into()),
            Outcome::Failed("closed_early".into())
        );
        let (s, outcome, _) = play(SWITCH, 5);
        assert_eq!(outcome, Outcome::Keep);
        assert_eq!(s.on_end(|| "x".into()), Outcome::Closed(1006));
    }

    #[test]
    fn data_before_the_connect_completes_is_an_error() {
        let mut s = Session::new(
            0,
            Subscription::default(),
            Vec::new(),
            KEY.into(),
            Instant::now(),
        );
        let mut stats = Stats::default();
        let mut masks = Masks::new(1);
        let mut ctx = Ctx {
            stats: &mut stats,
            now_ns: 0,
            now: Instant::now(),
            masks: &mut masks,
        };
        assert_eq!(
            s.on_bytes(b"x", &mut ctx),
            Outcome::Failed("data_before_upgrade".into())
        );
    }
}
