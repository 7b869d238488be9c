//! One connection's state. A connection moves only forward:
//!
//! ```text
//!                      head ok, API request: answer, stay (keep-alive)
//!                    ┌────┐
//!                    ▼    │
//! accept → [Proxy] → Http ─┴─ upgrade ok ─→ Subscribing ─ publisher's ack ─→ Open ─┐
//!             │      │  (echo: straight to Open)   │                          │   │
//!             │      └─ refusal / timeout ─────────┴──────────────────────────┴───┴─→ Closing → removed
//!             └─ bad, missing or late PROXY header: removed, no answer
//! ```
//!
//! Each phase has one module that answers the same four calls (input, timer,
//! drain, end of input) and returns a [`Step`] the loop acts on:
//! `Proxy` → `proxy_conn` (TCP with `--proxy-protocol` only), `Http` →
//! `http_conn`, `Subscribing`/`Open` → `ws_conn`, `Closing` → `close`.
//! `Closing` flushes what is queued (a refusal, a close frame), half-closes the
//! socket and waits for the peer's EOF or the linger deadline, whichever is first.

use crate::clock::Tick;

use crate::auth::Claims;
use crate::channel::Channel;
use crate::http::framing::RequestFramer;
use crate::http::head::RequestHead;
use crate::http::upgrade::Upgrade;
use crate::hub::event::StreamId;
use crate::server::socket::{Peer, Socket};
use crate::ws::outbound::Outbound;
use crate::ws::reader::MessageReader;

/// What the loop does after a phase handler ran.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing more until the next readiness, inbox message or deadline.
    Wait,
    /// Input is left over because this wake-up's budget for the connection ran
    /// out: come back next iteration, after the other connections had a turn.
    Again,
    /// The HTTP request was an accepted WebSocket upgrade: the WebSocket phase
    /// takes over (`ws_conn::start`).
    Upgrade(Box<Upgrade>),
    /// The connection is finished: remove it now.
    Remove,
}

pub(crate) struct Connection {
    pub(crate) socket: Socket,
    /// Distinguishes this tenant of the slab slot from earlier ones.
    pub(crate) gen: u32,
    pub(crate) peer: Peer,
    pub(crate) state: State,
    /// Bytes read but not yet consumed. Empty (unallocated) while idle.
    pub(crate) inbuf: Vec<u8>,
    pub(crate) out: Outbound,
    /// The deadline currently armed in the loop's timer heap.
    pub(crate) timer_at: Option<Tick>,
    /// Queued in the loop's list of connections to flush this iteration.
    pub(crate) dirty: bool,
    /// Accepted beyond `--max-connections`: an upgrade gets 503.
    pub(crate) over_limit: bool,
    /// The client's address once its head is parsed (through trusted proxies).
    pub(crate) client: Option<std::net::IpAddr>,
    /// Holds a `--max-connections-per-ip` slot for `client`, released on removal.
    pub(crate) ip_slot: bool,
    /// Registered for writability: bytes are waiting for the kernel.
    pub(crate) want_write: bool,
}

pub(crate) enum State {
    Proxy(ProxyState),
    Http(Box<HttpState>),
    Subscribing(Box<Subscribing>),
    Open(Box<WsState>),
    Closing(Closing),
}

pub(crate) struct HttpState {
    /// Request deadline: from accept for the first request (not reset by each
    /// byte), from the last response for a keep-alive connection.
    pub(crate) deadline: Tick,
    /// No request was answered on this connection yet: a timeout now is a
    /// failed handshake, not an idle keep-alive connection.
    pub(crate) first: bool,
    /// Where each request (and body) ends.
    pub(crate) framer: RequestFramer,
    /// The publisher token's claims, checked on the head of the publish whose
    /// body is being read (`None`: auth is off, or no body is being read).
    pub(crate) claims: Option<Claims>,
    /// The answers queued for this client passed the queue bound (it pipelines
    /// without reading): no more of its requests are read until they drain.
    pub(crate) paused: bool,
    /// A publish handed to the Redis engine, waiting for its answer: the
    /// requests behind it wait too, so that answers keep their order.
    pub(crate) awaiting: Option<Box<RequestHead>>,
}

/// Waiting for the PROXY protocol header (docs/protocol.md §11).
pub(crate) struct ProxyState {
    /// The handshake deadline from accept; the HTTP phase keeps it.
    pub(crate) deadline: Tick,
    /// The HTTP phase that follows the header, made at accept.
    pub(crate) next: Box<HttpState>,
}

/// Upgrade accepted; waiting for the publisher to register the subscription.
pub(crate) struct Subscribing {
    pub(crate) upgrade: Box<Upgrade>,
    pub(crate) channel: Channel,
    pub(crate) location: Box<str>,
    pub(crate) deadline: Tick,
}

/// Boxed in [`State::Open`]; every idle connection holds one, so it is kept
/// small (8-byte ticks, boxed rarely-used parts).
pub(crate) struct WsState {
    pub(crate) kind: WsKind,
    pub(crate) reader: MessageReader,
    pub(crate) last_seen: Tick,
    pub(crate) next_ping: Tick,
    /// `exp` + leeway of the token; [`Tick::NEVER`] when auth is off.
    pub(crate) token_deadline: Tick,
    pub(crate) bad_window_start: Tick,
    pub(crate) bad_in_window: u32,
}

pub(crate) enum WsKind {
    Stream {
        channel: Channel,
        stream: StreamId,
        /// `None` = every event type.
        filter: Option<Box<[Box<str>]>>,
        /// `conflate=1`: one unwritten live event per key (docs/protocol.md §9).
        conflate: bool,
    },
    Echo,
}

impl WsKind {
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            WsKind::Stream { channel, .. } => channel.id(),
            WsKind::Echo => crate::metrics::ECHO_LABEL,
        }
    }
}

pub(crate) struct Closing {
    pub(crate) until: Tick,
    /// Our side is half-closed (everything queued went out).
    pub(crate) fin_sent: bool,
    /// The peer's EOF is in: once our side is flushed, nothing is left to wait for.
    pub(crate) peer_done: bool,
}

impl Connection {
    /// The one deadline this connection waits for now.
    pub(crate) fn deadline(&self) -> Tick {
        match &self.state {
            State::Proxy(p) => p.deadline,
            State::Http(h) => h.deadline,
            State::Subscribing(s) => s.deadline,
            State::Open(ws) => ws.token_deadline.min(ws.next_ping),
            State::Closing(c) => c.until,
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing(_))
    }

    /// Reading from the socket is on hold (HTTP answers waiting to drain).
    pub(crate) fn read_paused(&self) -> bool {
        matches!(&self.state, State::Http(h) if h.paused || h.awaiting.is_some())
    }
}

/// Does the filter let this event type through?
pub(crate) fn passes(filter: Option<&[Box<str>]>, event_type: &str) -> bool {
    match filter {
        None => true,
        Some(types) => types.iter().any(|t| &**t == event_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_stays_small() {
        // The slab holds one of these per connection; the per-idle-connection
        // memory target is well under 1 KiB in all, so the inline part must stay small.
        let size = std::mem::size_of::<Connection>();
        eprintln!(
            "Connection: {size} bytes, WsState: {} bytes",
            std::mem::size_of::<WsState>()
        );
        assert!(size <= 256, "Connection grew to {size} bytes");
    }
}
