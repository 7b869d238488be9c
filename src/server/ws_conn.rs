//! The WebSocket phase: subscribing (waiting for the publisher), opening a
//! stream (101, `BI_CONNECTION_ESTABLISHED`, replay, `recovered`), then the
//! client's messages, heartbeats and token expiry.
//!
//! Answers the four calls of every phase: [`on_input`], [`on_timer`],
//! [`on_drain`], [`on_eof`]; and [`start`] / [`on_subscribed`], the two ways in.

use std::time::Duration;

use crate::clock::Tick;

use bytes::Bytes;

use crate::clock;
use crate::http::response::{self, Refusal};
use crate::http::upgrade::{Target, Upgrade};
use crate::hub::channels::{SubscribeAck, SubscribeRequest, ToPublisher};
use crate::hub::subscriptions::ConnRef;
use crate::server::close::{close_ws, close_ws_until, refuse, slow_consumer};
use crate::server::connection::{
    passes, Closing, Connection, State, Step, Subscribing, WsKind, WsState,
};
use crate::server::ctx::Ctx;
use crate::ws::close::{ClientClose, CloseCode};
use crate::ws::frame;
use crate::ws::messages::{self, ClientMessage, Established};
use crate::ws::reader::{Inbound, MessageReader};

/// More bad client messages than this within one second close the connection.
const MAX_BAD_PER_SECOND: u32 = 10;
/// Client messages handled per connection per wake-up, and their bytes: a
/// client sending many large valid messages (each `subscribe` costs a JSON
/// parse) waits for the next iteration rather than delaying everyone else.
const MESSAGE_BUDGET: usize = 16;
const MESSAGE_BYTES_BUDGET: usize = 64 * 1024;

fn new_ws(cx: &mut Ctx, kind: WsKind, token_exp: Option<u64>) -> Box<WsState> {
    let now = cx.now;
    let token_deadline = token_exp.map_or(Tick::NEVER, |exp| deadline_for(exp, cx));
    Box::new(WsState {
        kind,
        reader: MessageReader::default(),
        last_seen: now,
        next_ping: now + cx.shared.config.heartbeat_interval,
        token_deadline,
        bad_window_start: now,
        bad_in_window: 0,
    })
}

/// `exp` + leeway as a loop deadline. `exp` may be anything up to 2^64-1:
/// every step saturates, and a year is "never" for a connection.
fn deadline_for(exp: u64, cx: &Ctx) -> Tick {
    let leeway = cx
        .shared
        .verifier
        .as_ref()
        .map_or(Duration::ZERO, |v| v.leeway());
    let at_ms = exp
        .saturating_mul(1000)
        .saturating_add(leeway.as_millis() as u64);
    let now_ms = clock::wall_ms();
    let wait = Duration::from_millis(at_ms.saturating_sub(now_ms));
    cx.now + wait.min(Duration::from_secs(365 * 24 * 3600))
}

/// Queues an answer to this client; past the queue bound it is a slow consumer.
fn reply(conn: &mut Connection, key: usize, cx: &mut Ctx, bytes: Vec<u8>) -> bool {
    let limit = cx.shared.config.max_queue_bytes;
    if conn.out.push(Bytes::from(bytes), 0, limit).is_err() {
        slow_consumer(conn, key, cx);
        return false;
    }
    cx.mark_dirty(key, conn);
    true
}

/// The HTTP phase accepted an upgrade: open an echo connection at once, or ask
/// the publisher to register the stream subscription.
pub(crate) fn start(conn: &mut Connection, key: usize, cx: &mut Ctx, up: Box<Upgrade>) -> Step {
    let (channel, location) = match &up.target {
        Target::Echo => return open_echo(conn, key, cx, &up),
        Target::Stream { channel, location } => (*channel, location.clone()),
    };
    let req = SubscribeRequest {
        loop_id: cx.id,
        conn: ConnRef {
            key: key as u32,
            gen: conn.gen,
        },
        channel,
        location: location.clone(),
        since: up.since,
        epoch: up.epoch.clone(),
        snapshot: up.snapshot,
    };
    if cx.publisher.try_send(ToPublisher::Subscribe(req)).is_err() {
        refuse(conn, key, cx, Refusal::subscribe_busy());
        return Step::Wait;
    }
    conn.state = State::Subscribing(Box::new(Subscribing {
        deadline: cx.now + cx.shared.config.handshake_timeout,
        upgrade: up,
        channel,
        location,
    }));
    Step::Wait
}

fn open_echo(conn: &mut Connection, key: usize, cx: &mut Ctx, up: &Upgrade) -> Step {
    let ws = new_ws(cx, WsKind::Echo, None);
    conn.state = State::Open(ws);
    cx.shared.metrics.connections_total.inc();
    cx.shared
        .metrics
        .connections
        .with_label_values(&[crate::metrics::ECHO_LABEL])
        .inc();
    if reply(conn, key, cx, response::switching_protocols(&up.accept_key)) {
        return on_input(conn, key, cx);
    }
    Step::Wait
}

/// The publisher registered the subscription: everything the client gets
/// before live events goes into the queue in order; the replay is fed to the
/// socket as the client reads it.
pub(crate) fn on_subscribed(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    ack: SubscribeAck,
) -> Step {
    let placeholder = State::Closing(Closing {
        until: cx.now,
        fin_sent: false,
        peer_done: false,
    });
    let State::Subscribing(sub) = std::mem::replace(&mut conn.state, placeholder) else {
        return Step::Wait;
    };
    let shared = cx.shared.clone();
    cx.subs.add(
        ack.stream,
        ConnRef {
            key: key as u32,
            gen: conn.gen,
        },
    );
    let filter = sub.upgrade.filter.clone().map(Vec::into_boxed_slice);
    let conflate = sub.upgrade.conflate;
    if conflate {
        conn.out.conflate();
    }
    let ws = new_ws(
        cx,
        WsKind::Stream {
            channel: sub.channel,
            stream: ack.stream,
            filter,
            conflate,
        },
        sub.upgrade.token_exp,
    );
    let conn_id = format!("c-{:x}", cx.next_conn_id());
    conn.state = State::Open(ws);
    shared.metrics.connections_total.inc();
    shared
        .metrics
        .connections
        .with_label_values(&[sub.channel.id()])
        .inc();

    let mut head = response::switching_protocols(&sub.upgrade.accept_key);
    head.extend_from_slice(&frame::text(&messages::established(&Established {
        connection_id: &conn_id,
        channel: sub.channel,
        location_id: &sub.location,
        epoch: &ack.epoch,
        last_seq: ack.last_seq,
        server_time: clock::wall_ms(),
        heartbeat_interval_ms: shared.config.heartbeat_interval.as_millis() as u64,
        conflate,
    })));
    if !reply(conn, key, cx, head) {
        return Step::Wait;
    }
    if let Some(rec) = ack.recovery {
        let mut replay = rec.entries;
        replay.retain(|e| passes(sub.upgrade.filter.as_deref(), &e.event_type));
        let (from, to) = (replay.first().map(|e| e.seq), replay.last().map(|e| e.seq));
        conn.out.push_replay(replay.into_iter().map(|e| e.frame));
        let msg = frame::text(&messages::recovered(rec.complete, from, to));
        if !reply(conn, key, cx, msg) {
            return Step::Wait;
        }
    }
    // docs/protocol.md §9: the last values (already in seq order, each ≤ last_seq), through the
    // same filter as everything else, then the marker.
    if let Some(mut values) = ack.snapshot {
        values.retain(|e| passes(sub.upgrade.filter.as_deref(), &e.event_type));
        let count = values.len();
        conn.out.push_replay(values.into_iter().map(|e| e.frame));
        let msg = frame::text(&messages::snapshot(count, ack.last_seq));
        if !reply(conn, key, cx, msg) {
            return Step::Wait;
        }
    }
    cx.mark_dirty(key, conn);
    // Frames the client sent before the 101 are handled now.
    on_input(conn, key, cx)
}

/// Works through the client's buffered frames, within this wake-up's budget.
pub(crate) fn on_input(conn: &mut Connection, key: usize, cx: &mut Ctx) -> Step {
    match &conn.state {
        State::Subscribing(_) => {
            // Frames sent before the 101 are kept for when the stream opens,
            // within the message limit.
            let cap = cx.shared.config.max_message_size + 64 * 1024;
            if conn.inbuf.len() > cap {
                refuse(conn, key, cx, Refusal::early_data());
            }
            return Step::Wait;
        }
        State::Open(_) => {}
        _ => return Step::Wait,
    }
    let max = cx.shared.config.max_message_size;
    let mut pos = 0;
    let mut handled = 0;
    let mut step = Step::Wait;
    while let State::Open(ws) = &mut conn.state {
        if handled == MESSAGE_BUDGET || pos >= MESSAGE_BYTES_BUDGET {
            if pos < conn.inbuf.len() {
                step = Step::Again;
            }
            break;
        }
        match ws.reader.next(&mut conn.inbuf, max, &mut pos) {
            Ok(Some(msg)) => {
                handled += 1;
                handle(conn, key, cx, msg);
            }
            Ok(None) => break,
            Err(e) => {
                close_ws(conn, key, cx, e.close_code(), e.reason());
                break;
            }
        }
    }
    if matches!(conn.state, State::Open(_)) {
        conn.inbuf.drain(..pos.min(conn.inbuf.len()));
        if conn.inbuf.is_empty() {
            conn.inbuf = Vec::new();
        }
    }
    step
}

fn handle(conn: &mut Connection, key: usize, cx: &mut Ctx, msg: Inbound) {
    let State::Open(ws) = &mut conn.state else {
        return;
    };
    let echo = matches!(ws.kind, WsKind::Echo);
    match msg {
        Inbound::Ping(p) => {
            reply(conn, key, cx, frame::pong(&p));
        }
        Inbound::Pong => {}
        // The client's code is echoed, as RFC 6455 §5.5.1 asks.
        Inbound::Close(ClientClose::Valid(code)) => close_ws(conn, key, cx, code, ""),
        Inbound::Close(ClientClose::Invalid(code, why)) => close_ws(conn, key, cx, code, why),
        Inbound::Text(t) if echo => {
            reply(conn, key, cx, frame::text(t.as_bytes()));
        }
        Inbound::Binary(b) if echo => {
            reply(conn, key, cx, frame::binary(&b));
        }
        Inbound::Binary(_) => bad(
            conn,
            key,
            cx,
            "binary messages are not accepted; send JSON text",
        ),
        Inbound::Text(t) => match messages::parse_client(&t) {
            Ok(ClientMessage::Ping { id }) => {
                let msg = messages::pong(clock::wall_ms(), id.as_ref());
                reply(conn, key, cx, frame::text(&msg));
            }
            Ok(ClientMessage::Subscribe { event_types }) => {
                let msg = messages::subscribed(&event_types);
                if let WsKind::Stream { filter, .. } = &mut ws.kind {
                    *filter = if event_types.is_empty() {
                        None
                    } else {
                        Some(event_types.into_boxed_slice())
                    };
                }
                reply(conn, key, cx, frame::text(&msg));
            }
            Err(why) => bad(conn, key, cx, why),
        },
    }
}

/// An `error` reply; past ten a second, close 1008.
fn bad(conn: &mut Connection, key: usize, cx: &mut Ctx, why: &str) {
    let State::Open(ws) = &mut conn.state else {
        return;
    };
    if cx.now.duration_since(ws.bad_window_start) >= Duration::from_secs(1) {
        ws.bad_window_start = cx.now;
        ws.bad_in_window = 0;
    }
    ws.bad_in_window += 1;
    if ws.bad_in_window > MAX_BAD_PER_SECOND {
        close_ws(
            conn,
            key,
            cx,
            CloseCode::Policy,
            "too many invalid messages",
        );
        return;
    }
    let msg = frame::text(&messages::error("invalid_message", why));
    reply(conn, key, cx, msg);
}

/// The connection's deadline passed: the publisher never answered (503), the
/// token expired (1008), or a heartbeat is due (ping, or 1008 after two
/// silent intervals).
pub(crate) fn on_timer(conn: &mut Connection, key: usize, cx: &mut Ctx) -> Step {
    let now = cx.now;
    if now < conn.deadline() {
        return Step::Wait;
    }
    match &mut conn.state {
        State::Subscribing(_) => refuse(conn, key, cx, Refusal::subscribe_busy()),
        State::Open(ws) => {
            if ws.token_deadline <= now {
                close_ws(conn, key, cx, CloseCode::Policy, "token expired");
                return Step::Wait;
            }
            if now >= ws.next_ping {
                let interval = cx.shared.config.heartbeat_interval;
                if now.duration_since(ws.last_seen) >= 2 * interval {
                    close_ws(conn, key, cx, CloseCode::Policy, "heartbeat timeout");
                    return Step::Wait;
                }
                ws.next_ping = now + interval;
                conn.out.push_unbounded(Bytes::from(frame::ping(b"")), 0);
                cx.mark_dirty(key, conn);
            }
        }
        _ => {}
    }
    Step::Wait
}

/// The server is draining: every client is flushed and closed with 1001; one
/// still subscribing gets the same 503 `draining` as a new upgrade.
pub(crate) fn on_drain(conn: &mut Connection, key: usize, cx: &mut Ctx, deadline: Tick) -> Step {
    match &conn.state {
        State::Open(_) => {
            close_ws_until(conn, key, cx, CloseCode::GoingAway, "going away", deadline)
        }
        State::Subscribing(_) => refuse(conn, key, cx, Refusal::draining()),
        _ => {}
    }
    Step::Wait
}

/// The stream's numbering could not be continued (docs/protocol.md §10): the
/// client is to reconnect with `since`/`epoch` and learn what it missed.
pub(crate) fn resync(conn: &mut Connection, key: usize, cx: &mut Ctx) {
    close_ws(conn, key, cx, CloseCode::Resync, "resync");
}

/// The transport ended without a close handshake.
pub(crate) fn on_eof() -> Step {
    Step::Remove
}

/// Any bytes from the client count as a sign of life for the heartbeat.
pub(crate) fn saw_input(conn: &mut Connection, now: Tick) {
    if let State::Open(ws) = &mut conn.state {
        ws.last_seen = now;
    }
}
