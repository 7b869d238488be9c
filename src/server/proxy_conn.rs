//! The PROXY phase of a TCP connection with `--proxy-protocol`
//! (docs/protocol.md §11): before its first request, a trusted load balancer
//! says who the client is, in a PROXY protocol v1 or v2 header
//! (`proxy_protocol`, sans-io). The address it names replaces the peer's for
//! logs, the per-address limit and `X-Forwarded-For` (which is then ignored);
//! `LOCAL` and `UNKNOWN` headers keep the peer's own address.
//!
//! Every failure closes the connection without an answer: a peer not in
//! `--trusted-proxies` (at accept, [`first_state`]), a missing or malformed
//! header, and one not complete within the handshake timeout or before the
//! peer's end of stream. The deadline is the handshake's, from accept: the
//! HTTP phase that follows keeps it.
//!
//! Answers the four calls of every phase: [`on_input`], [`on_timer`],
//! [`on_drain`], [`on_eof`].

use crate::proxy_protocol::{parse, ProxyError, ProxyStatus, Version, DEFAULT_MAX_LEN};
use crate::server::connection::{Connection, HttpState, ProxyState, State, Step};
use crate::server::ctx::Ctx;
use crate::server::socket::Peer;

/// The phase a new connection starts in: `Proxy` for a TCP peer when
/// `--proxy-protocol` is on, `Http` otherwise (Unix sockets carry no header).
/// `None`: a TCP peer that is not a trusted proxy, to be closed at once.
pub(crate) fn first_state(peer: &Peer, http: Box<HttpState>, cx: &Ctx) -> Option<State> {
    let config = &cx.shared.config;
    let Peer::Tcp(addr) = peer else {
        return Some(State::Http(http));
    };
    if !config.proxy_protocol {
        return Some(State::Http(http));
    }
    let ip = addr.ip();
    if !config.trusted_proxies.iter().any(|n| n.contains(&ip)) {
        refused(cx, "untrusted");
        log::debug!("closed a connection from {addr}: not a trusted proxy (--proxy-protocol)");
        return None;
    }
    Some(State::Proxy(ProxyState {
        deadline: http.deadline,
        next: http,
    }))
}

fn refused(cx: &Ctx, reason: &str) {
    cx.shared
        .metrics
        .proxy_refusals
        .with_label_values(&[reason])
        .inc();
}

/// Bytes arrived: once the header is complete, the HTTP phase takes over
/// (`Again`: the loop hands it what follows the header, if anything).
pub(crate) fn on_input(conn: &mut Connection, cx: &mut Ctx) -> Step {
    let (header, len) = match parse(&conn.inbuf, DEFAULT_MAX_LEN) {
        Ok(ProxyStatus::Partial { .. }) => return Step::Wait,
        Ok(ProxyStatus::Complete { header, len }) => (header, len),
        Err(e) => {
            let reason = if e == ProxyError::WrongSignature {
                "missing"
            } else {
                "malformed"
            };
            refused(cx, reason);
            log::debug!("closed a connection from {}: {e}", conn.peer);
            return Step::Remove;
        }
    };
    let Peer::Tcp(own) = conn.peer else {
        return Step::Remove;
    };
    let placeholder = State::Closing(crate::server::connection::Closing {
        until: cx.now,
        fin_sent: false,
        peer_done: false,
    });
    let State::Proxy(p) = std::mem::replace(&mut conn.state, placeholder) else {
        return Step::Remove;
    };
    let version = match header.version {
        Version::V1 => "1",
        Version::V2 => "2",
    };
    cx.shared
        .metrics
        .proxy_headers
        .with_label_values(&[version])
        .inc();
    conn.peer = Peer::Proxied(header.client().unwrap_or(own));
    conn.inbuf.drain(..len);
    conn.state = State::Http(p.next);
    if conn.inbuf.is_empty() {
        conn.inbuf = Vec::new();
        return Step::Wait;
    }
    Step::Again
}

/// The handshake deadline passed before the header was complete.
pub(crate) fn on_timer(conn: &mut Connection, cx: &mut Ctx) -> Step {
    match &conn.state {
        State::Proxy(p) if cx.now >= p.deadline => {
            refused(cx, "incomplete");
            Step::Remove
        }
        _ => Step::Wait,
    }
}

/// Draining: a connection still owing its header gets the short grace of an
/// idle one, not the whole handshake timeout.
pub(crate) fn on_drain(conn: &mut Connection, cx: &mut Ctx) -> Step {
    let linger = cx.now + cx.shared.config.close_linger;
    if let State::Proxy(p) = &mut conn.state {
        p.deadline = p.deadline.min(linger);
    }
    Step::Wait
}

/// The peer ended before a complete header.
pub(crate) fn on_eof(cx: &mut Ctx) -> Step {
    refused(cx, "incomplete");
    Step::Remove
}
