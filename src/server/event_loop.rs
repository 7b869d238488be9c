//! One event loop thread: accept → read → phase handler → fan-out → write →
//! close. It owns its connections (a slab), its subscription index and its
//! timers; it talks to the publisher only through channels.
//!
//! The loop matches a connection's state once per call and hands it to the
//! module of that phase (`http_conn`, `ws_conn`, `close`); each answers with a
//! [`Step`] that the loop acts on ([`EventLoop::apply`]).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::clock::{self, Tick};
use crate::hub::channels::{PublisherHandle, SubscribeAck, ToLoop, ToPublisher};
use crate::hub::subscriptions::ConnRef;
use crate::server::connection::{Connection, State, Step};
use crate::server::ctx::Ctx;
use crate::server::socket::{Listener, Peer, Socket};
use crate::server::timers::Timers;
use crate::server::{close, fanout, http_conn, proxy_conn, retire, ws_conn, Shared};
use crate::ws::outbound::{Flushed, Written};

pub(crate) const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const CONN_BASE: usize = 1024;

/// Caps on the work of one wake-up, so that one busy peer cannot starve the rest.
const READ_BUDGET: usize = 256 * 1024;
const INBOX_BUDGET: usize = 64;
const SCRATCH: usize = 64 * 1024;
/// Accept errors such as EMFILE pause accepting this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) struct EventLoop {
    poll: Poll,
    /// This loop's listening sockets (its own `SO_REUSEPORT` TCP listener per
    /// address, a shared duplicate for Unix sockets).
    listeners: Vec<Listener>,
    /// Every connection of this loop, from accept to removal; the slab key is
    /// the mio token (minus `CONN_BASE`) and, with `gen`, the `ConnRef`.
    conns: Slab<Connection>,
    cx: Ctx,
    /// Deliveries, subscription acks and the drain signal from the publisher.
    inbox: Receiver<ToLoop>,
    /// Set by the publisher when it woke us; cleared before the inbox is read.
    notified: Arc<AtomicBool>,
    /// One live deadline per connection.
    timers: Timers,
    /// Connections whose input was cut short by a budget: continued next iteration.
    ready_again: Vec<usize>,
    /// Every read lands here first; connections keep only what they must.
    scratch: Vec<u8>,
    next_gen: u32,
    accept_paused_until: Option<Tick>,
    accept_error_logged: bool,
    /// In a drain, this loop's connections have all closed (counted off
    /// `Shared::loops_busy` once).
    drained: bool,
    /// Reused list of connections found slow during a fan-out.
    slow: Vec<usize>,
    /// After a hand-over: when each client gets its 1012 (`retire`).
    retirement: Option<retire::Retirement>,
}

impl EventLoop {
    pub(crate) fn new(
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
        // Reserved up front (virtual memory; pages become resident only as
        // slots are used), so growth never copies the slab or doubles it.
        let capacity = shared.config.max_connections / shared.config.threads + 1;
        Ok(EventLoop {
            poll,
            listeners,
            conns: Slab::with_capacity(capacity),
            cx: Ctx::new(id, shared, publisher),
            inbox,
            notified,
            timers: Timers::default(),
            ready_again: Vec::new(),
            scratch: vec![0; SCRATCH],
            next_gen: 0,
            accept_paused_until: None,
            drained: false,
            accept_error_logged: false,
            slow: Vec::new(),
            retirement: None,
        })
    }

    pub(crate) fn id(&self) -> usize {
        self.cx.id
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("loop {}: poll failed: {e}", self.cx.id);
                    return;
                }
            }
            self.cx.now = Tick::now();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    Token(t) if t >= CONN_BASE => {
                        let key = t - CONN_BASE;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(key);
                        }
                        if ev.is_writable() {
                            self.flush(key, clock::mono_ns());
                        }
                    }
                    Token(t) => self.accept(t - LISTENER_BASE),
                }
            }
            self.drain_inbox();
            for key in std::mem::take(&mut self.ready_again) {
                self.resume(key);
            }
            self.cx.retry_ctrl();
            self.flush_dirty();
            self.fire_timers();
            self.fire_retirement();
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
                if self.cx.now >= deadline || self.drain_done() {
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

    /// This loop may end its drain: its own connections have closed, and so
    /// have every other loop's (until then it goes on answering on its
    /// listener; see `Shared::loops_busy`).
    fn drain_done(&mut self) -> bool {
        if !self.conns.is_empty() {
            return false;
        }
        let busy = &self.cx.shared.loops_busy;
        if !self.drained {
            self.drained = true;
            busy.fetch_sub(1, Ordering::AcqRel);
        }
        busy.load(Ordering::Acquire) == 0
    }

    fn poll_timeout(&self) -> Duration {
        if !self.ready_again.is_empty() || !self.inbox.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut t = Duration::from_secs(1);
        if let Some(at) = self.timers.next() {
            t = t.min(at.until_from(now));
        }
        if let Some(at) = self.accept_paused_until {
            t = t.min(at.until_from(now));
        }
        if let Some(at) = self.retirement.as_ref().and_then(|r| r.next()) {
            t = t.min(at.until_from(now));
        }
        if self.cx.has_pending_ctrl() {
            t = t.min(Duration::from_millis(5));
        }
        if self.drained {
            // Waiting for the other loops to finish their drain: look again
            // soon (they do not wake this one).
            t = t.min(Duration::from_millis(20));
        }
        t
    }

    // ---- the four calls, dispatched on the connection's phase ----

    fn input(&mut self, key: usize) -> Step {
        let Some(conn) = self.conns.get_mut(key) else {
            return Step::Wait;
        };
        match conn.state {
            State::Proxy(_) => proxy_conn::on_input(conn, &mut self.cx),
            State::Http(_) => http_conn::on_input(conn, key, &mut self.cx),
            State::Subscribing(_) | State::Open(_) => ws_conn::on_input(conn, key, &mut self.cx),
            State::Closing(_) => close::on_input(conn),
        }
    }

    fn timer(&mut self, key: usize) -> Step {
        let Some(conn) = self.conns.get_mut(key) else {
            return Step::Wait;
        };
        match conn.state {
            State::Proxy(_) => proxy_conn::on_timer(conn, &mut self.cx),
            State::Http(_) => http_conn::on_timer(conn, key, &mut self.cx),
            State::Subscribing(_) | State::Open(_) => ws_conn::on_timer(conn, key, &mut self.cx),
            State::Closing(_) => close::on_timer(conn, self.cx.now),
        }
    }

    fn drain(&mut self, key: usize, deadline: Tick) -> Step {
        let Some(conn) = self.conns.get_mut(key) else {
            return Step::Wait;
        };
        match conn.state {
            State::Proxy(_) => proxy_conn::on_drain(conn, &mut self.cx),
            State::Http(_) => http_conn::on_drain(conn, &mut self.cx),
            State::Subscribing(_) | State::Open(_) => {
                ws_conn::on_drain(conn, key, &mut self.cx, deadline)
            }
            State::Closing(_) => Step::Wait,
        }
    }

    fn eof(&mut self, key: usize) -> Step {
        let Some(conn) = self.conns.get_mut(key) else {
            return Step::Wait;
        };
        match conn.state {
            State::Proxy(_) => proxy_conn::on_eof(&mut self.cx),
            State::Http(_) => http_conn::on_eof(conn, key, &mut self.cx),
            State::Subscribing(_) | State::Open(_) => ws_conn::on_eof(),
            State::Closing(_) => close::on_eof(conn),
        }
    }

    /// Acts on what a handler said, then re-arms the connection's deadline.
    fn apply(&mut self, key: usize, step: Step) {
        match step {
            Step::Wait => {}
            Step::Again => self.ready_again.push(key),
            Step::Upgrade(up) => {
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                let step = ws_conn::start(conn, key, &mut self.cx, up);
                return self.apply(key, step);
            }
            Step::Remove => return self.remove(key),
        }
        self.after(key);
    }

    // ---- readiness ----

    fn on_readable(&mut self, key: usize) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.read_paused() {
                break;
            }
            if budget == 0 {
                self.ready_again.push(key);
                break;
            }
            match conn.socket.read(&mut self.scratch) {
                Ok(0) => {
                    let step = self.eof(key);
                    if matches!(step, Step::Wait) {
                        // The peer's EOF is in: what is queued goes out now.
                        self.flush(key, clock::mono_ns());
                    }
                    return self.apply(key, step);
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    ws_conn::saw_input(conn, self.cx.now);
                    if conn.is_closing() {
                        continue;
                    }
                    conn.inbuf.extend_from_slice(&self.scratch[..n]);
                    match self.input(key) {
                        Step::Wait => {}
                        Step::Again => {
                            self.ready_again.push(key);
                            break;
                        }
                        step => self.apply(key, step),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.remove(key),
            }
        }
        self.after(key);
    }

    /// A connection whose input was cut short: finish what is buffered, then
    /// read on (its readiness was not drained, so no new edge will come).
    fn resume(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        match self.input(key) {
            Step::Wait => self.on_readable(key),
            step => self.apply(key, step),
        }
    }

    /// Writes what is queued. Writable interest is held only while bytes wait
    /// for the kernel: a socket that drains at once costs no epoll_ctl, and
    /// idle sockets send no writable wake-ups on every ACK.
    fn flush(&mut self, key: usize, now_ns: u64) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        let lm = &mut self.cx.lm;
        let window = self.cx.shared.config.max_queue_bytes;
        let res = conn.out.write_to(&mut conn.socket, window, |w| {
            lm.delivered += 1;
            if let Written::Live(stamp) = w {
                lm.latency
                    .observe(now_ns.saturating_sub(stamp) as f64 / 1e9);
            }
        });
        let want_write = match res {
            Ok(Flushed::All) => {
                if close::on_flushed(conn) {
                    return self.remove(key);
                }
                if http_conn::resume(conn) {
                    self.ready_again.push(key);
                }
                false
            }
            Ok(Flushed::Blocked) => true,
            Err(_) => return self.remove(key),
        };
        if want_write != conn.want_write {
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
                return self.remove(key);
            }
            conn.want_write = want_write;
        }
        self.after(key);
    }

    fn flush_dirty(&mut self) {
        while self.cx.has_dirty() {
            let now_ns = clock::mono_ns();
            for key in self.cx.take_dirty() {
                self.flush(key, now_ns);
            }
        }
    }

    // ---- the publisher's messages ----

    fn drain_inbox(&mut self) {
        // Cleared before reading, so a send racing with this drain wakes us again.
        self.notified.store(false, Ordering::Release);
        for _ in 0..INBOX_BUDGET {
            match self.inbox.try_recv() {
                Ok(ToLoop::Deliver(batch)) => {
                    for d in &batch {
                        fanout::deliver(&mut self.conns, &mut self.cx, d, &mut self.slow);
                        self.close_slow();
                    }
                }
                Ok(ToLoop::Subscribed(ack)) => self.on_subscribed(*ack),
                Ok(ToLoop::Published { conn, result }) => self.on_published(conn, result),
                Ok(ToLoop::Resync(stream)) => self.resync(stream),
                Ok(ToLoop::Drain) => self.start_drain(),
                Ok(ToLoop::Fence(attempt)) => self.cx.fence(attempt),
                Ok(ToLoop::Retire(spread)) => self.start_retirement(spread),
                Err(_) => return,
            }
        }
    }

    fn close_slow(&mut self) {
        for key in std::mem::take(&mut self.slow) {
            if let Some(conn) = self.conns.get_mut(key) {
                close::slow_consumer(conn, key, &mut self.cx);
            }
            self.after(key);
        }
    }

    fn on_subscribed(&mut self, ack: SubscribeAck) {
        let key = ack.conn.key as usize;
        let conn = match self.conns.get_mut(key) {
            Some(c) if c.gen == ack.conn.gen && matches!(c.state, State::Subscribing(_)) => c,
            _ => {
                // The client left while the publisher was registering it.
                self.cx.send_ctrl(ToPublisher::Unsubscribe {
                    loop_id: self.cx.id,
                    stream: ack.stream,
                });
                return;
            }
        };
        let step = ws_conn::on_subscribed(conn, key, &mut self.cx, ack);
        self.apply(key, step);
    }

    fn on_published(&mut self, c: ConnRef, result: Result<usize, crate::http::response::Refusal>) {
        let key = c.key as usize;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.gen != c.gen {
            return;
        }
        let step = http_conn::on_published(conn, key, &mut self.cx, result);
        self.apply(key, step);
    }

    /// The stream's numbering could not be continued: its clients resume (4010).
    fn resync(&mut self, stream: crate::hub::event::StreamId) {
        let members: Vec<ConnRef> = self.cx.subs.get(stream).to_vec();
        for c in members {
            let key = c.key as usize;
            if let Some(conn) = self.conns.get_mut(key) {
                if conn.gen == c.gen {
                    ws_conn::resync(conn, key, &mut self.cx);
                    self.after(key);
                }
            }
        }
    }

    fn start_drain(&mut self) {
        if self.cx.draining.is_some() {
            return;
        }
        let deadline = self.cx.now + self.cx.shared.config.drain_timeout;
        self.cx.draining = Some(deadline);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let step = self.drain(key, deadline);
            self.apply(key, step);
        }
    }

    /// docs/protocol.md §11, `retire`: the new process serves; stop
    /// accepting, finish API requests as in a drain, and close each WebSocket
    /// client with 1012 at its own random instant over `spread`.
    fn start_retirement(&mut self, spread: Duration) {
        if self.cx.draining.is_some() {
            return;
        }
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        let linger = self.cx.shared.config.close_linger;
        let deadline = self.cx.now + spread + 2 * linger;
        self.cx.draining = Some(deadline);
        let mut open = Vec::new();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns.get(key) {
                Some(c) if matches!(c.state, State::Open(_)) => open.push(ConnRef {
                    key: key as u32,
                    gen: c.gen,
                }),
                Some(_) => {
                    let step = self.drain(key, deadline);
                    self.apply(key, step);
                }
                None => {}
            }
        }
        log::info!(
            "loop {}: stopped accepting; closing {} client(s) with 1012 over {:?}",
            self.cx.id,
            open.len(),
            spread
        );
        self.retirement = Some(retire::Retirement::new(self.cx.now, spread, &open));
    }

    fn fire_retirement(&mut self) {
        let Some(r) = self.retirement.as_mut() else {
            return;
        };
        let mut due = Vec::new();
        while let Some(c) = r.pop_due(self.cx.now) {
            due.push(c);
        }
        for c in due {
            let key = c.key as usize;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.gen != c.gen {
                continue;
            }
            close::close_ws(
                conn,
                key,
                &mut self.cx,
                crate::ws::close::CloseCode::ServiceRestart,
                "service restart",
            );
            self.after(key);
        }
        self.flush_dirty();
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
            let step = self.timer(key);
            self.apply(key, step);
        }
    }

    // ---- accept, deadlines, removal ----

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
                    self.accept_paused_until = Some(Tick::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn register(&mut self, mut socket: Socket, peer: Peer, over_limit: bool) {
        let first = http_conn::new_state(&self.cx);
        let Some(state) = proxy_conn::first_state(&peer, first, &self.cx) else {
            // An untrusted peer where a PROXY header is required: closed unanswered.
            self.cx.shared.open.fetch_sub(1, Ordering::AcqRel);
            return;
        };
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
        entry.insert(Connection {
            socket,
            gen: self.next_gen,
            peer,
            state,
            inbuf: Vec::new(),
            out: Default::default(),
            timer_at: None,
            dirty: false,
            over_limit,
            client: None,
            ip_slot: false,
            want_write: false,
        });
        self.after(key);
    }

    /// After any handler: re-arm the connection's deadline.
    fn after(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
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
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.socket);
        if let State::Open(ws) = &conn.state {
            // The transport ended without a close handshake.
            self.cx.leave_open(key, conn.gen, ws);
            self.cx
                .shared
                .metrics
                .disconnects
                .with_label_values(&["0"])
                .inc();
        }
        if let (true, Some(ip)) = (conn.ip_slot, conn.client) {
            self.cx.shared.per_ip.release(ip);
        }
        self.cx.shared.open.fetch_sub(1, Ordering::AcqRel);
    }
}
