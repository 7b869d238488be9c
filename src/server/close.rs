//! Every way a connection ends: refusals, close frames, the slow-consumer
//! policy, timeouts and the drain. The server always queues its close frame
//! (or HTTP answer) before closing TCP, then lingers for the peer's EOF.

use std::time::Instant;

use bytes::Bytes;

use crate::http::response::{self, Refusal};
use crate::server::connection::{Closing, Connection, State};
use crate::server::event_loop::Ctx;
use crate::ws::close::CloseCode;
use crate::ws::frame;

/// Moves to `Closing` with a linger deadline; our side half-closes once the
/// queue is flushed.
pub fn begin_closing(conn: &mut Connection, cx: &mut Ctx, until: Instant) {
    if let State::Open(ws) = &conn.state {
        cx.detach(&ws.kind);
        cx.shared
            .metrics
            .connections
            .with_label_values(&[ws.kind.metric_label()])
            .dec();
    }
    conn.inbuf = Vec::new();
    conn.state = State::Closing(Closing {
        until,
        fin_sent: false,
    });
}

/// A handshake refusal (§1): a real HTTP response, then close.
pub fn refuse(conn: &mut Connection, key: usize, cx: &mut Ctx, r: Refusal) {
    cx.shared.metrics.handshake_failure(r.status);
    match conn.client {
        Some(ip) => log::debug!("refused handshake from {ip}: {} {}", r.status, r.code),
        None => log::debug!(
            "refused handshake from {}: {} {}",
            conn.peer,
            r.status,
            r.code
        ),
    }
    answer_and_close(conn, key, cx, r.to_response(false));
}

/// Writes a final HTTP answer and closes after it.
pub fn answer_and_close(conn: &mut Connection, key: usize, cx: &mut Ctx, bytes: Vec<u8>) {
    conn.out.push_unbounded(Bytes::from(bytes), 0);
    let until = cx.now + cx.shared.config.close_linger;
    begin_closing(conn, cx, until);
    cx.mark_dirty(key, conn);
}

/// Sends a close frame after whatever is queued and closes.
pub fn close_ws(conn: &mut Connection, key: usize, cx: &mut Ctx, code: CloseCode, reason: &str) {
    close_ws_until(
        conn,
        key,
        cx,
        code,
        reason,
        cx.now + cx.shared.config.close_linger,
    );
}

fn close_ws_until(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    code: CloseCode,
    reason: &str,
    until: Instant,
) {
    if conn.is_closing() {
        return;
    }
    cx.shared
        .metrics
        .disconnects
        .with_label_values(&[&code.as_u16().to_string()])
        .inc();
    conn.out
        .push_unbounded(Bytes::from(frame::close(code, reason)), 0);
    begin_closing(conn, cx, until);
    cx.mark_dirty(key, conn);
}

/// §6: drop what has not started to go out, finish a half-written frame, send
/// 1013, and close TCP after the linger even if the client never reads.
pub fn slow_consumer(conn: &mut Connection, key: usize, cx: &mut Ctx) {
    if conn.is_closing() {
        return;
    }
    conn.out.drop_unstarted();
    cx.shared.metrics.slow_consumer_disconnects.inc();
    log::debug!("closing slow consumer {}", conn.peer);
    close_ws(conn, key, cx, CloseCode::SlowConsumer, "slow consumer");
}

/// A replay that would not fit in the queue bound behind the 101 and the
/// hello: those still go out (the client learns the handshake succeeded and the
/// stream's `last_seq`), then 1013. Nothing of the replay is queued.
pub fn slow_replay(conn: &mut Connection, key: usize, cx: &mut Ctx) {
    if conn.is_closing() {
        return;
    }
    cx.shared.metrics.slow_consumer_disconnects.inc();
    log::debug!("closing {}: its replay exceeds the queue bound", conn.peer);
    close_ws(conn, key, cx, CloseCode::SlowConsumer, "slow consumer");
}

/// The connection's deadline passed.
pub fn on_timer(conn: &mut Connection, key: usize, cx: &mut Ctx) {
    let now = cx.now;
    if now < conn.deadline() {
        return;
    }
    match &mut conn.state {
        State::Http(h) => {
            if conn.inbuf.is_empty() && h.body.is_none() {
                // An idle keep-alive connection is simply closed; one that never
                // sent a byte is a failed handshake (counted as 408, though
                // nothing is written: there is no request to answer).
                if h.first && cx.draining.is_none() {
                    cx.shared.metrics.handshake_failure(408);
                }
                conn.dead = true;
            } else {
                cx.shared.metrics.handshake_failure(408);
                let r = Refusal::new(408, "timeout", "the request was not complete in time");
                answer_and_close(conn, key, cx, r.to_response(false));
            }
        }
        State::Subscribing(_) => {
            refuse(
                conn,
                key,
                cx,
                Refusal::new(
                    503,
                    "unavailable",
                    "the server is too busy to subscribe you",
                ),
            );
        }
        State::Open(ws) => {
            if ws.token_deadline.is_some_and(|t| t <= now) {
                close_ws(conn, key, cx, CloseCode::Policy, "token expired");
                return;
            }
            if now >= ws.next_ping {
                let interval = cx.shared.config.heartbeat_interval;
                if now.duration_since(ws.last_seen) >= 2 * interval {
                    close_ws(conn, key, cx, CloseCode::Policy, "heartbeat timeout");
                    return;
                }
                ws.next_ping = now + interval;
                conn.out.push_unbounded(Bytes::from(frame::ping(b"")), 0);
                cx.mark_dirty(key, conn);
            }
        }
        State::Closing(_) => conn.dead = true,
    }
}

/// The server is draining: every client is flushed and closed with 1001.
pub fn drain(conn: &mut Connection, key: usize, cx: &mut Ctx, deadline: Instant) {
    match &mut conn.state {
        State::Open(_) => {
            close_ws_until(conn, key, cx, CloseCode::GoingAway, "going away", deadline)
        }
        State::Subscribing(_) => {
            refuse(
                conn,
                key,
                cx,
                Refusal::new(503, "draining", "the server is shutting down"),
            );
        }
        State::Http(h) => {
            // An idle connection is closed after a short grace rather than at
            // once: one accepted just before the signal may have its request
            // in flight (it gets its 503), and closing a socket with unread
            // bytes would reset it. A request in progress is answered with
            // `Connection: close`.
            if conn.inbuf.is_empty() && h.body.is_none() && conn.out.is_empty() {
                h.deadline = h.deadline.min(cx.now + cx.shared.config.close_linger);
            }
        }
        State::Closing(_) => {}
    }
}

/// 503 for the readiness probe while draining; part of the drain contract.
pub fn readyz(draining: bool, keep_alive: bool) -> Vec<u8> {
    if draining {
        response::json(503, &serde_json::json!({"status": "draining"}), false)
    } else {
        response::json(200, &serde_json::json!({"status": "ready"}), keep_alive)
    }
}
