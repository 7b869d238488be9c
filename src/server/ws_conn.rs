//! The WebSocket phase: opening a stream (101, `BI_CONNECTION_ESTABLISHED`,
//! replay, `recovered`), then the client's messages.

use std::time::{Duration, Instant};

use crate::clock;
use crate::http::response;
use crate::http::upgrade::Upgrade;
use crate::hub::publisher::SubscribeAck;
use crate::hub::subscriptions::ConnRef;
use crate::server::close::{close_ws, slow_replay};
use crate::server::connection::{passes, Connection, State, WsKind, WsState};
use crate::server::event_loop::{queue_reply, Ctx};
use crate::ws::close::{ClientClose, CloseCode};
use crate::ws::frame;
use crate::ws::messages::{self, ClientMessage, Established};
use crate::ws::reader::{Inbound, MessageReader};

/// Stamp of replayed events: counted as delivered, kept out of the latency histogram.
pub const REPLAY_STAMP: u64 = u64::MAX;

/// More bad client messages than this within one second close the connection.
const MAX_BAD_PER_SECOND: u32 = 10;

fn new_ws(cx: &mut Ctx, kind: WsKind, token_exp: Option<u64>) -> Box<WsState> {
    cx.conn_counter += 1;
    let now = cx.now;
    let token_deadline = token_exp.map(|exp| deadline_for(exp, cx));
    Box::new(WsState {
        id: ((cx.id as u64) << 48) | cx.conn_counter,
        kind,
        reader: MessageReader::default(),
        last_seen: now,
        next_ping: now + cx.shared.config.heartbeat_interval,
        token_deadline,
        bad_window_start: now,
        bad_in_window: 0,
    })
}

/// `exp` + leeway as a loop deadline.
fn deadline_for(exp: u64, cx: &Ctx) -> Instant {
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
    // Far-future tokens: a year is "never" for a connection.
    cx.now + wait.min(Duration::from_secs(365 * 24 * 3600))
}

pub fn open_echo(conn: &mut Connection, key: usize, cx: &mut Ctx, up: &Upgrade) {
    let ws = new_ws(cx, WsKind::Echo, None);
    conn.state = State::Open(ws);
    cx.shared.metrics.connections_total.inc();
    cx.shared
        .metrics
        .connections
        .with_label_values(&[crate::metrics::ECHO_LABEL])
        .inc();
    if queue_reply(conn, key, cx, response::switching_protocols(&up.accept_key)) {
        on_input(conn, key, cx);
    }
}

/// The publisher registered the subscription: everything the client gets
/// before live events goes into the queue in order, under the same bound.
pub fn open_stream(conn: &mut Connection, key: usize, ack: SubscribeAck, cx: &mut Ctx) {
    let State::Subscribing(sub) = std::mem::replace(
        &mut conn.state,
        State::Closing(crate::server::connection::Closing {
            until: cx.now,
            fin_sent: false,
        }),
    ) else {
        return;
    };
    let shared = cx.shared.clone();
    let cref = ConnRef {
        key: key as u32,
        gen: conn.gen,
    };
    let pos = cx.subs.add(ack.stream, cref);
    let filter = sub.upgrade.filter.clone();
    let ws = new_ws(
        cx,
        WsKind::Stream {
            channel: sub.channel,
            stream: ack.stream,
            pos,
            filter,
        },
        sub.upgrade.token_exp,
    );
    let conn_id = format!("c-{:x}", ws.id);
    conn.state = State::Open(ws);
    shared.metrics.connections_total.inc();
    shared
        .metrics
        .connections
        .with_label_values(&[sub.channel.id()])
        .inc();

    let limit = shared.config.max_queue_bytes;
    let mut head = response::switching_protocols(&sub.upgrade.accept_key);
    head.extend_from_slice(&frame::text(&messages::established(&Established {
        connection_id: &conn_id,
        channel: sub.channel,
        location_id: &sub.location,
        epoch: &ack.epoch,
        last_seq: ack.last_seq,
        server_time: clock::wall_ms(),
        heartbeat_interval_ms: shared.config.heartbeat_interval.as_millis() as u64,
    })));
    if !queue_reply(conn, key, cx, head) {
        return;
    }
    if let Some(rec) = ack.recovery {
        let mut replay = rec.entries;
        replay.retain(|e| passes(&sub.upgrade.filter, &e.event_type));
        let (from, to) = (replay.first().map(|e| e.seq), replay.last().map(|e| e.seq));
        let msg = frame::text(&messages::recovered(rec.complete, from, to));
        // Measured whole before any of it is queued: `slow_consumer` drops what
        // has not started to go out, which here would be the 101 and the hello.
        let need = replay.iter().map(|e| e.frame.len()).sum::<usize>() + msg.len();
        if conn.out.queued() + need > limit {
            slow_replay(conn, key, cx);
            return;
        }
        for e in replay {
            conn.out.push_unbounded(e.frame, REPLAY_STAMP);
        }
        if !queue_reply(conn, key, cx, msg) {
            return;
        }
    }
    cx.mark_dirty(key, conn);
}

/// Works through the client's buffered frames.
pub fn on_input(conn: &mut Connection, key: usize, cx: &mut Ctx) {
    let max = cx.shared.config.max_message_size;
    let mut pos = 0;
    while let State::Open(ws) = &mut conn.state {
        match ws.reader.next(&mut conn.inbuf, max, &mut pos) {
            Ok(Some(msg)) => handle(conn, key, cx, msg),
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
}

fn handle(conn: &mut Connection, key: usize, cx: &mut Ctx, msg: Inbound) {
    let State::Open(ws) = &mut conn.state else {
        return;
    };
    let echo = matches!(ws.kind, WsKind::Echo);
    match msg {
        Inbound::Ping(p) => {
            queue_reply(conn, key, cx, frame::pong(&p));
        }
        Inbound::Pong => {}
        // The client's code is echoed, as RFC 6455 §5.5.1 asks.
        Inbound::Close(ClientClose::Valid(code)) => close_ws(conn, key, cx, code, ""),
        Inbound::Close(ClientClose::Invalid(code, why)) => close_ws(conn, key, cx, code, why),
        Inbound::Text(t) if echo => {
            queue_reply(conn, key, cx, frame::text(t.as_bytes()));
        }
        Inbound::Binary(b) if echo => {
            queue_reply(conn, key, cx, frame::binary(&b));
        }
        Inbound::Binary(_) => bad(
            conn,
            key,
            cx,
            "binary messages are not accepted; send JSON text",
        ),
        Inbound::Text(t) => match messages::parse_client(&t) {
            Ok(ClientMessage::Ping { id }) => {
                let reply = messages::pong(clock::wall_ms(), id.as_ref());
                queue_reply(conn, key, cx, frame::text(&reply));
            }
            Ok(ClientMessage::Subscribe { event_types }) => {
                let reply = messages::subscribed(&event_types);
                if let WsKind::Stream { filter, .. } = &mut ws.kind {
                    *filter = if event_types.is_empty() {
                        None
                    } else {
                        Some(event_types)
                    };
                }
                queue_reply(conn, key, cx, frame::text(&reply));
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
    let reply = frame::text(&messages::error("invalid_message", why));
    queue_reply(conn, key, cx, reply);
}
