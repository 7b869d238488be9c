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
use crate::accounting::SeqTracker;
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

#[derive(Debug)]
enum Phase {
    /// TCP connect in progress; `request` is the upgrade request to send once connected.
    Connecting { request: Vec<u8>, key: String },
    /// Request sent (or being sent); `head` holds an incomplete response head.
    Upgrading { key: String, head: Vec<u8> },
    /// Upgraded; waiting for `BI_CONNECTION_ESTABLISHED`.
    Awaiting,
    /// Receiving events.
    Live(SeqTracker),
}

/// One connection's state, without its socket.
#[derive(Debug)]
pub struct Session {
    /// Index into the spec's streams.
    pub stream: usize,
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
    /// A connection to `stream` that sends `request` (an upgrade with `key`) once connected.
    pub fn new(stream: usize, request: Vec<u8>, key: String, started: Instant) -> Self {
        Session {
            stream,
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

    /// The tracker of a live connection.
    pub fn tracker(&self) -> Option<&SeqTracker> {
        match &self.phase {
            Phase::Live(t) => Some(t),
            _ => None,
        }
    }

    /// The tracker, when the connection is being dropped.
    pub fn into_tracker(self) -> Option<SeqTracker> {
        match self.phase {
            Phase::Live(t) => Some(t),
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
            ..
        } = self;
        let mut outcome = Outcome::Keep;
        let read = reader.feed(data, &mut |frame| {
            outcome = match frame {
                Frame::Message(text) => on_message(phase, *started, text, ctx),
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
fn on_message(phase: &mut Phase, started: Instant, text: &[u8], ctx: &mut Ctx) -> Outcome {
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
            *phase = Phase::Live(SeqTracker::new(last_seq));
            Outcome::Keep
        }
        (Phase::Awaiting, _) => Outcome::Failed("bad_first_message".into()),
        (Phase::Live(tracker), ServerMsg::Event { seq, t_ns, warm }) => {
            tracker.observe(seq);
            st.delivery(t_ns, warm, ctx.now_ns);
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
        let req = upgrade_request("/ws/dashboard/loc-1", "h", None, KEY);
        let mut s = Session::new(0, req, KEY.into(), Instant::now());
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
        let mut s = session();
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
            let t = s.tracker().unwrap();
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
        let mut s = Session::new(0, Vec::new(), KEY.into(), Instant::now());
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
