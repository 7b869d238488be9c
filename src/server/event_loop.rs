//! One event loop thread: accept → read → (http_conn | ws_conn) → fan-out →
//! write → close. It owns its connections (a slab), its subscription index and
//! its timers; it talks to the publisher only through channels.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, TrySendError};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::clock;
use crate::hub::event::Delivery;
use crate::hub::publisher::{PublisherHandle, SubscribeAck, ToLoop, ToPublisher};
use crate::hub::subscriptions::{ConnRef, Subscriptions};
use crate::metrics::LoopMetrics;
use crate::server::connection::{passes, Connection, HttpState, State, WsKind};
use crate::server::socket::{Listener, Peer, Socket};
use crate::server::timers::Timers;
use crate::server::Shared;
use crate::ws::outbound::Flushed;

pub const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const CONN_BASE: usize = 1024;

/// Caps on the work of one wake-up, so that one busy peer cannot starve the rest.
const READ_BUDGET: usize = 256 * 1024;
const INBOX_BUDGET: usize = 64;
const SCRATCH: usize = 64 * 1024;
/// Accept errors such as EMFILE pause accepting this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Everything a connection handler may touch besides the connection itself.
pub struct Ctx {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub publisher: PublisherHandle,
    /// Unsubscribes that found the publisher's inbox full; retried each iteration.
    pub pending_ctrl: VecDeque<ToPublisher>,
    pub subs: Subscriptions,
    pub lm: LoopMetrics,
    /// Connections with bytes queued this iteration.
    pub dirty: Vec<usize>,
    /// Connections whose subscription position changed by a swap-remove.
    pub moved: Vec<(ConnRef, u32)>,
    pub now: Instant,
    pub conn_counter: u64,
    /// The drain deadline, once draining.
    pub draining: Option<Instant>,
}

impl Ctx {
    /// Sends a control message to the publisher, never blocking.
    pub fn send_ctrl(&mut self, msg: ToPublisher) {
        if !self.pending_ctrl.is_empty() {
            self.pending_ctrl.push_back(msg);
            return;
        }
        match self.publisher.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(m)) => self.pending_ctrl.push_back(m),
        }
    }

    pub fn mark_dirty(&mut self, key: usize, conn: &mut Connection) {
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Removes a stream connection from the subscription index and tells the publisher.
    pub fn detach(&mut self, ws_kind: &WsKind) {
        if let WsKind::Stream { stream, pos, .. } = ws_kind {
            if let Some(moved) = self.subs.remove(*stream, *pos) {
                self.moved.push((moved, *pos));
            }
            self.send_ctrl(ToPublisher::Unsubscribe {
                loop_id: self.id,
                stream: *stream,
            });
        }
    }
}

pub struct EventLoop {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Slab<Connection>,
    cx: Ctx,
    inbox: Receiver<ToLoop>,
    notified: Arc<AtomicBool>,
    timers: Timers,
    ready_again: Vec<usize>,
    scratch: Vec<u8>,
    next_gen: u32,
    accept_paused_until: Option<Instant>,
    accept_error_logged: bool,
}

impl EventLoop {
    pub fn new(
        id: usize,
        poll: Poll,
        mut listeners: Vec<Listener>,
        inbox: Receiver<ToLoop>,
        notified: Arc<AtomicBool>,
        publisher: PublisherHandle,
        shared: Arc<Shared>,
    ) -> io::Result<EventLoop> {
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        let lm = LoopMetrics::new(&shared.metrics);
        Ok(EventLoop {
            poll,
            listeners,
            // Reserved up front (virtual memory; pages become resident only as
            // slots are used), so growth never copies the slab or doubles it.
            conns: Slab::with_capacity(shared.config.max_connections / shared.config.threads + 1),
            cx: Ctx {
                id,
                shared,
                publisher,
                pending_ctrl: VecDeque::new(),
                subs: Subscriptions::default(),
                lm,
                dirty: Vec::new(),
                moved: Vec::new(),
                now: Instant::now(),
                conn_counter: 0,
                draining: None,
            },
            inbox,
            notified,
            timers: Timers::default(),
            ready_again: Vec::new(),
            scratch: vec![0; SCRATCH],
            next_gen: 0,
            accept_paused_until: None,
            accept_error_logged: false,
        })
    }

    pub fn id(&self) -> usize {
        self.cx.id
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("loop {}: poll failed: {e}", self.cx.id);
                    return;
                }
            }
            self.cx.now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    Token(t) if t >= CONN_BASE => {
                        let key = t - CONN_BASE;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(key);
                        }
                        if ev.is_writable() {
                            self.flush(key);
                        }
                    }
                    Token(t) => self.accept(t - LISTENER_BASE),
                }
            }
            self.drain_inbox();
            let again = std::mem::take(&mut self.ready_again);
            for key in again {
                self.on_readable(key);
            }
            self.retry_ctrl();
            self.flush_dirty();
            self.fire_timers();
            // What the timers queued (pings, 408s, close frames) goes out now,
            // not at the next wake-up, which may be a whole interval away.
            self.flush_dirty();
            if self.accept_paused_until.is_some_and(|t| t <= self.cx.now) {
                self.accept_paused_until = None;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            self.cx.lm.flush(&self.cx.shared.metrics);
            if let Some(deadline) = self.cx.draining {
                if self.conns.is_empty() || self.cx.now >= deadline {
                    break;
                }
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.remove(k);
        }
        self.cx.lm.flush(&self.cx.shared.metrics);
    }

    fn poll_timeout(&self) -> Duration {
        if !self.ready_again.is_empty() || !self.inbox.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut t = Duration::from_secs(1);
        if let Some(at) = self.timers.next() {
            t = t.min(at.saturating_duration_since(now));
        }
        if let Some(at) = self.accept_paused_until {
            t = t.min(at.saturating_duration_since(now));
        }
        if !self.cx.pending_ctrl.is_empty() {
            t = t.min(Duration::from_millis(5));
        }
        t
    }

    fn accept(&mut self, li: usize) {
        if self.accept_paused_until.is_some() {
            return;
        }
        let max = self.cx.shared.config.max_connections;
        loop {
            let Some(listener) = self.listeners.get(li) else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => {
                    self.accept_error_logged = false;
                    let open = self.cx.shared.open.fetch_add(1, Ordering::AcqRel) + 1;
                    if open > max + crate::config::FD_HEADROOM / 2 {
                        // No room even to answer 503: let the kernel close it.
                        self.cx.shared.open.fetch_sub(1, Ordering::AcqRel);
                        self.cx.shared.metrics.handshake_failure(0);
                        continue;
                    }
                    self.register(socket, peer, open > max);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: retrying at once would spin at 100 % CPU.
                    if !self.accept_error_logged {
                        log::warn!(
                            "loop {}: accept failed ({e}); pausing accepts for {:?}",
                            self.cx.id,
                            ACCEPT_BACKOFF
                        );
                        self.accept_error_logged = true;
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn register(&mut self, mut socket: Socket, peer: Peer, over_limit: bool) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if self
            .poll
            .registry()
            .register(&mut socket, Token(CONN_BASE + key), Interest::READABLE)
            .is_err()
        {
            self.cx.shared.open.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let deadline = self.cx.now + self.cx.shared.config.handshake_timeout;
        entry.insert(Connection {
            socket,
            gen: self.next_gen,
            peer,
            state: State::Http(HttpState {
                deadline,
                first: true,
                scanned: 0,
                body: None,
            }),
            inbuf: Vec::new(),
            out: Default::default(),
            timer_at: None,
            dirty: false,
            over_limit,
            dead: false,
            client: None,
            ip_slot: false,
            want_write: false,
        });
        self.after(key);
    }

    fn on_readable(&mut self, key: usize) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.dead {
                break;
            }
            if budget == 0 {
                self.ready_again.push(key);
                break;
            }
            match conn.socket.read(&mut self.scratch) {
                Ok(0) => {
                    self.on_eof(key);
                    break;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    let data = &self.scratch[..n];
                    match &mut conn.state {
                        State::Closing(_) => continue,
                        State::Open(ws) => ws.last_seen = self.cx.now,
                        _ => {}
                    }
                    conn.inbuf.extend_from_slice(data);
                    self.on_input(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.dead = true;
                    break;
                }
            }
        }
        self.after(key);
    }

    /// Hands buffered input to the handler of the connection's phase.
    fn on_input(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.state {
            State::Http(_) => super::http_conn::on_input(conn, key, &mut self.cx),
            State::Open(_) => super::ws_conn::on_input(conn, key, &mut self.cx),
            State::Subscribing(_) => {
                // Frames sent before the 101 are kept for when the stream opens,
                // within the message limit.
                let cap = self.cx.shared.config.max_message_size + 64 * 1024;
                if conn.inbuf.len() > cap {
                    super::close::refuse(
                        conn,
                        key,
                        &mut self.cx,
                        crate::http::response::Refusal::new(
                            400,
                            "bad_request",
                            "data sent before the handshake completed",
                        ),
                    );
                }
            }
            State::Closing(_) => conn.inbuf.clear(),
        }
        self.apply_moves();
    }

    fn on_eof(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.out.is_empty() {
            conn.dead = true;
            return;
        }
        match &conn.state {
            // The peer half-closed after its request: still answer what was asked.
            State::Http(_) => {
                let until = self.cx.now + self.cx.shared.config.close_linger;
                super::close::begin_closing(conn, &mut self.cx, until);
            }
            // Our close frame (or refusal) is still queued: it goes out before
            // TCP closes, even when the peer half-closed right after its last frame.
            State::Closing(_) => {}
            _ => {
                conn.dead = true;
                return;
            }
        }
        // The peer's EOF is in: once the answer is out there is nothing left
        // to wait for. What the socket does not take now goes out on
        // writability, within the linger.
        self.flush(key);
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.out.is_empty() {
                conn.dead = true;
            }
        }
    }

    fn flush(&mut self, key: usize) {
        let now_ns = clock::mono_ns();
        self.flush_at(key, now_ns);
    }

    /// Writes what is queued. Writable interest is held only while bytes wait
    /// for the kernel: a socket that drains at once costs no epoll_ctl, and
    /// idle sockets send no writable wake-ups on every ACK.
    fn flush_at(&mut self, key: usize, now_ns: u64) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        let lm = &mut self.cx.lm;
        let res = conn.out.write_to(&mut conn.socket, |stamp| {
            lm.delivered += 1;
            if stamp != crate::server::ws_conn::REPLAY_STAMP {
                lm.latency
                    .observe(now_ns.saturating_sub(stamp) as f64 / 1e9);
            }
        });
        let want_write = match res {
            Ok(Flushed::All) => {
                if let State::Closing(c) = &mut conn.state {
                    if !c.fin_sent {
                        c.fin_sent = true;
                        conn.socket.shutdown_write();
                    }
                }
                false
            }
            Ok(Flushed::Blocked) => true,
            Err(_) => {
                conn.dead = true;
                false
            }
        };
        if want_write != conn.want_write && !conn.dead {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut conn.socket, Token(CONN_BASE + key), interest)
                .is_err()
            {
                conn.dead = true;
            }
            conn.want_write = want_write;
        }
        self.after(key);
    }

    fn flush_dirty(&mut self) {
        while !self.cx.dirty.is_empty() {
            let now_ns = clock::mono_ns();
            let dirty = std::mem::take(&mut self.cx.dirty);
            for key in dirty {
                self.flush_at(key, now_ns);
            }
        }
    }

    fn retry_ctrl(&mut self) {
        while let Some(msg) = self.cx.pending_ctrl.pop_front() {
            match self.cx.publisher.try_send(msg) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(m)) => {
                    self.cx.pending_ctrl.push_front(m);
                    return;
                }
            }
        }
    }

    fn drain_inbox(&mut self) {
        // Cleared before reading, so a send racing with this drain wakes us again.
        self.notified.store(false, Ordering::Release);
        for _ in 0..INBOX_BUDGET {
            match self.inbox.try_recv() {
                Ok(ToLoop::Deliver(batch)) => self.deliver(&batch),
                Ok(ToLoop::Subscribed(ack)) => self.on_subscribed(*ack),
                Ok(ToLoop::Drain) => self.start_drain(),
                Err(_) => return,
            }
        }
    }

    /// Fan-out: each frame is a shared `Bytes`, pushed to every matching
    /// connection's queue; the sockets are written once per iteration.
    fn deliver(&mut self, batch: &[Delivery]) {
        let limit = self.cx.shared.config.max_queue_bytes;
        let mut slow: Vec<usize> = Vec::new();
        for d in batch {
            for c in self.cx.subs.get(d.stream) {
                let key = c.key as usize;
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                if conn.gen != c.gen {
                    continue;
                }
                let State::Open(ws) = &conn.state else {
                    continue;
                };
                let WsKind::Stream { filter, .. } = &ws.kind else {
                    continue;
                };
                if !passes(filter, &d.event_type) {
                    continue;
                }
                if conn.out.push(d.frame.clone(), d.stamp, limit).is_err() {
                    slow.push(key);
                    continue;
                }
                if !conn.dirty {
                    conn.dirty = true;
                    self.cx.dirty.push(key);
                }
            }
            for key in slow.drain(..) {
                if let Some(conn) = self.conns.get_mut(key) {
                    super::close::slow_consumer(conn, key, &mut self.cx);
                }
                self.apply_moves();
            }
        }
    }

    fn on_subscribed(&mut self, ack: SubscribeAck) {
        let key = ack.conn.key as usize;
        let live = self
            .conns
            .get(key)
            .is_some_and(|c| c.gen == ack.conn.gen && matches!(c.state, State::Subscribing(_)));
        if !live {
            // The client left while the publisher was registering it.
            self.cx.send_ctrl(ToPublisher::Unsubscribe {
                loop_id: self.cx.id,
                stream: ack.stream,
            });
            return;
        }
        if let Some(conn) = self.conns.get_mut(key) {
            super::ws_conn::open_stream(conn, key, ack, &mut self.cx);
            if !conn.inbuf.is_empty() && matches!(conn.state, State::Open(_)) {
                super::ws_conn::on_input(conn, key, &mut self.cx);
            }
        }
        self.apply_moves();
        self.after(key);
    }

    fn start_drain(&mut self) {
        if self.cx.draining.is_some() {
            return;
        }
        let deadline = self.cx.now + self.cx.shared.config.drain_timeout;
        self.cx.draining = Some(deadline);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                super::close::drain(conn, key, &mut self.cx, deadline);
            }
            self.apply_moves();
            self.after(key);
        }
    }

    fn fire_timers(&mut self) {
        let now = self.cx.now;
        while let Some((at, c)) = self.timers.pop_due(now) {
            let key = c.key as usize;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.gen != c.gen || conn.timer_at != Some(at) {
                continue;
            }
            conn.timer_at = None;
            super::close::on_timer(conn, key, &mut self.cx);
            self.apply_moves();
            self.after(key);
        }
    }

    fn apply_moves(&mut self) {
        for (c, new_pos) in self.cx.moved.drain(..) {
            if let Some(conn) = self.conns.get_mut(c.key as usize) {
                if conn.gen == c.gen {
                    if let State::Open(ws) = &mut conn.state {
                        if let WsKind::Stream { pos, .. } = &mut ws.kind {
                            *pos = new_pos;
                        }
                    }
                }
            }
        }
    }

    /// After any handler: remove a dead connection, or re-arm its deadline.
    fn after(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead {
            self.remove(key);
            return;
        }
        // Only an earlier deadline needs a new heap entry: when the armed one
        // fires early, the handler sees nothing is due and re-arms. So a
        // connection holds about one entry, not one per phase it went through.
        let at = conn.deadline();
        if conn.timer_at.is_none_or(|armed| at < armed) {
            conn.timer_at = Some(at);
            self.timers.push(
                at,
                ConnRef {
                    key: key as u32,
                    gen: conn.gen,
                },
            );
        }
    }

    fn remove(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.socket);
        if let State::Open(ws) = &conn.state {
            // The transport ended without a close handshake.
            self.cx.detach(&ws.kind);
            let m = &self.cx.shared.metrics;
            m.connections
                .with_label_values(&[ws.kind.metric_label()])
                .dec();
            m.disconnects.with_label_values(&["0"]).inc();
        }
        self.apply_moves();
        if let (true, Some(ip)) = (conn.ip_slot, conn.client) {
            self.cx.shared.per_ip.release(ip);
        }
        self.cx.shared.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Queues bytes that are an answer to this client (not a fan-out event).
pub fn queue_reply(conn: &mut Connection, key: usize, cx: &mut Ctx, bytes: Vec<u8>) -> bool {
    let limit = cx.shared.config.max_queue_bytes;
    if conn.out.push(Bytes::from(bytes), 0, limit).is_err() {
        super::close::slow_consumer(conn, key, cx);
        return false;
    }
    cx.mark_dirty(key, conn);
    true
}
