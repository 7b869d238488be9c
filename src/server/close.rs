//! Every way a connection ends, and the `Closing` phase itself. The server
//! always queues its close frame (or HTTP answer) before closing TCP, then
//! lingers for the peer's EOF (`docs/protocol.md` §6).
//!
//! This module sits below the other phases: it uses only `connection` and `ctx`.

use crate::clock::Tick;

use bytes::Bytes;

use crate::http::response::Refusal;
use crate::server::connection::{Closing, Connection, State, Step};
use crate::server::ctx::Ctx;
use crate::ws::close::CloseCode;
use crate::ws::frame;

/// Moves to `Closing` with a linger deadline; our side half-closes once the
/// queue is flushed.
pub(crate) fn begin_closing(conn: &mut Connection, key: usize, cx: &mut Ctx, until: Tick) {
    if let State::Open(ws) = &conn.state {
        cx.leave_open(key, conn.gen, ws);
    }
    conn.inbuf = Vec::new();
    conn.state = State::Closing(Closing {
        until,
        fin_sent: false,
        peer_done: false,
    });
    cx.mark_dirty(key, conn);
}

/// A handshake refusal (docs/protocol.md §1): a real HTTP response, then close.
pub(crate) fn refuse(conn: &mut Connection, key: usize, cx: &mut Ctx, r: Refusal) {
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
pub(crate) fn answer_and_close(conn: &mut Connection, key: usize, cx: &mut Ctx, bytes: Vec<u8>) {
    conn.out.push_unbounded(Bytes::from(bytes), 0);
    let until = cx.now + cx.shared.config.close_linger;
    begin_closing(conn, key, cx, until);
}

/// Sends a close frame after whatever is queued and closes.
pub(crate) fn close_ws(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    code: CloseCode,
    reason: &str,
) {
    let until = cx.now + cx.shared.config.close_linger;
    close_ws_until(conn, key, cx, code, reason, until);
}

pub(crate) fn close_ws_until(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    code: CloseCode,
    reason: &str,
    until: Tick,
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
    begin_closing(conn, key, cx, until);
}

/// docs/protocol.md §6: drop what has not started to go out, finish a half-written frame, send
/// 1013, and close TCP after the linger even if the client never reads.
/// WebSocket connections only: an HTTP client that does not read is paused.
pub(crate) fn slow_consumer(conn: &mut Connection, key: usize, cx: &mut Ctx) {
    if conn.is_closing() {
        return;
    }
    conn.out.drop_unstarted();
    cx.shared.metrics.slow_consumer_disconnects.inc();
    log::debug!("closing slow consumer {}", conn.peer);
    close_ws(conn, key, cx, CloseCode::SlowConsumer, "slow consumer");
}

fn closing(conn: &mut Connection) -> Option<&mut Closing> {
    match &mut conn.state {
        State::Closing(c) => Some(c),
        _ => None,
    }
}

/// Input after we decided to close is read and dropped (closing a socket with
/// unread bytes would reset it, and the peer might miss our answer).
pub(crate) fn on_input(conn: &mut Connection) -> Step {
    conn.inbuf.clear();
    Step::Wait
}

/// The linger is over: close whether or not the peer said goodbye.
pub(crate) fn on_timer(conn: &mut Connection, now: Tick) -> Step {
    match closing(conn) {
        Some(c) if now >= c.until => Step::Remove,
        _ => Step::Wait,
    }
}

/// The peer's EOF: once our answer is out there is nothing left to wait for.
/// What is still queued goes out on writability, within the linger.
pub(crate) fn on_eof(conn: &mut Connection) -> Step {
    if conn.out.is_empty() {
        return Step::Remove;
    }
    if let Some(c) = closing(conn) {
        c.peer_done = true;
    }
    Step::Wait
}

/// Everything queued is in the kernel: half-close our side. True when the
/// peer is done too and the connection can go.
pub(crate) fn on_flushed(conn: &mut Connection) -> bool {
    let Connection { socket, state, .. } = conn;
    let State::Closing(c) = state else {
        return false;
    };
    if !c.fin_sent {
        c.fin_sent = true;
        socket.shutdown_write();
    }
    c.peer_done
}
