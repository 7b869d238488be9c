//! One floor loop: accepts on its own `SO_REUSEPORT` listener, serves HTTP and
//! WebSocket on its connections, and fans out the frames the hub queues for it.

use super::conn::{Chunk, Conn, Flush, State};
use super::http::{self, Request};
use super::hub::{established_frame, Delivery, Hub};
use crate::wsframe::{self, Opcode};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Token of the listener.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the hub's waker.
pub const WAKER: Token = Token(usize::MAX);
/// Largest client message accepted on a WebSocket (contract default 64 KiB, else 1009).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Read buffer size.
const SCRATCH: usize = 64 * 1024;

/// What to do with a connection after handling it.
enum Next {
    Keep,
    Drop,
}

/// One mio loop of the floor server.
pub struct FloorLoop {
    idx: usize,
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    /// Subscribers of each stream on this loop (slab keys).
    subs: HashMap<u32, Vec<usize>>,
    hub: Arc<Hub>,
    max_queue: usize,
    scratch: Vec<u8>,
    dirty: Vec<usize>,
    accepted: u64,
}

impl FloorLoop {
    pub fn new(
        idx: usize,
        poll: Poll,
        mut listener: TcpListener,
        hub: Arc<Hub>,
        max_queue: usize,
    ) -> io::Result<Self> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(FloorLoop {
            idx,
            poll,
            listener,
            conns: Slab::with_capacity(1024),
            subs: HashMap::new(),
            hub,
            max_queue,
            scratch: vec![0; SCRATCH],
            dirty: Vec::new(),
            accepted: 0,
        })
    }

    /// Runs forever (the process ends the floor).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut inbox: Vec<Delivery> = Vec::new();
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(key) => {
                        if let Next::Drop = self.on_ready(key, ev.is_writable()) {
                            self.remove(key);
                        }
                    }
                }
            }
            // Deliveries are drained every iteration: a wake may be coalesced with I/O.
            inbox = self.fan_out(std::mem::take(&mut inbox));
            self.flush_dirty();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("floor: register: {e}");
                        continue;
                    }
                    entry.insert(Conn::new(sock));
                    self.accepted += 1;
                    self.hub
                        .counters
                        .connections
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the rest of the backlog waits for the next event.
                    log::warn!("floor: accept: {e}");
                    return;
                }
            }
        }
    }

    fn on_ready(&mut self, key: usize, writable: bool) -> Next {
        let Some(conn) = self.conns.get_mut(key) else {
            return Next::Keep;
        };
        if writable && conn.out_bytes > 0 {
            match conn.flush() {
                Ok(Flush::Done) if conn.closing => return Next::Drop,
                Ok(_) => {}
                Err(_) => return Next::Drop,
            }
        }
        // Drain readiness until WouldBlock.
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return Next::Keep;
            };
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => return Next::Drop,
                Ok(n) => {
                    if !conn.closing {
                        conn.inbuf.extend_from_slice(&self.scratch[..n]);
                        if let Next::Drop = self.process(key) {
                            return Next::Drop;
                        }
                    }
                    // A short read drained the socket: new data will raise a new edge.
                    if n < self.scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Drop,
            }
        }
        // Answer HTTP requests (publishers) before the fan-out of what they published.
        if let Some(conn) = self.conns.get_mut(key) {
            if matches!(conn.state, State::Http) && conn.out_bytes > 0 {
                match conn.flush() {
                    Ok(Flush::Done) if conn.closing => return Next::Drop,
                    Ok(_) => {}
                    Err(_) => return Next::Drop,
                }
            }
        }
        self.queue_flush(key);
        Next::Keep
    }

    fn queue_flush(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.out_bytes > 0 && !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Consumes complete requests or frames from the connection's input.
    fn process(&mut self, key: usize) -> Next {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return Next::Keep;
            };
            if conn.closing || conn.inbuf.is_empty() {
                return Next::Keep;
            }
            let progressed = match conn.state {
                State::Http => self.process_http(key),
                State::Ws { .. } => self.process_ws(key),
            };
            match progressed {
                Some(true) => {}
                Some(false) => return Next::Keep,
                None => return Next::Drop,
            }
        }
    }

    /// One HTTP request; `Some(true)` when one was consumed, `Some(false)` when more
    /// bytes are needed, `None` to drop the connection.
    fn process_http(&mut self, key: usize) -> Option<bool> {
        let conn = self.conns.get_mut(key)?;
        let Some(head) = http::parse_head(&conn.inbuf) else {
            return Some(false);
        };
        match head.request {
            Request::Refuse { status, message } => {
                conn.push(Chunk::Own(http::error_response(status, message, false)));
                conn.closing = true;
                conn.inbuf.clear();
                Some(false)
            }
            Request::Health => {
                conn.inbuf.drain(..head.len);
                conn.push(Chunk::Own(http::response(
                    200,
                    r#"{"status":"ok"}"#,
                    head.keep_alive,
                )));
                conn.closing = !head.keep_alive;
                Some(true)
            }
            Request::Publish { body_len } => {
                let end = head.len + body_len;
                if conn.inbuf.len() < end {
                    return Some(false);
                }
                let reply = match http::parse_publish(&conn.inbuf[head.len..end]) {
                    Ok(events) => {
                        let n = self.hub.publish(&events);
                        http::response(202, &format!(r#"{{"accepted":{n}}}"#), head.keep_alive)
                    }
                    Err((status, msg)) => http::error_response(status, &msg, head.keep_alive),
                };
                let conn = self.conns.get_mut(key)?;
                conn.inbuf.drain(..end);
                conn.push(Chunk::Own(reply));
                conn.closing = !head.keep_alive;
                Some(true)
            }
            Request::Upgrade {
                channel,
                location,
                accept,
            } => {
                conn.inbuf.drain(..head.len);
                let (stream, last_seq) = self.hub.subscribe(self.idx, channel, &location);
                let list = self.subs.entry(stream).or_default();
                let pos = list.len();
                list.push(key);
                let conn = self.conns.get_mut(key)?;
                conn.state = State::Ws {
                    stream,
                    start_seq: last_seq,
                    pos,
                };
                let mut reply = http::switching(&accept);
                let id = format!("f-{}-{}", self.idx, self.accepted);
                reply.extend_from_slice(&established_frame(&id, channel, &location, last_seq));
                conn.push(Chunk::Own(reply));
                Some(true)
            }
        }
    }

    /// One client frame: close is answered, ping gets a pong, the rest is ignored.
    fn process_ws(&mut self, key: usize) -> Option<bool> {
        let conn = self.conns.get_mut(key)?;
        let h = match wsframe::decode(&conn.inbuf, true, MAX_CLIENT_MESSAGE) {
            Ok(Some(h)) => h,
            Ok(None) => return Some(false),
            Err(e) => {
                let mut out = Vec::new();
                wsframe::encode_close(&mut out, e.close_code(), "", None);
                conn.push(Chunk::Own(out));
                conn.closing = true;
                conn.inbuf.clear();
                return Some(false);
            }
        };
        let mut payload = conn.inbuf[h.payload_start..h.frame_len()].to_vec();
        if let Some(mask) = h.mask {
            wsframe::apply_mask(&mut payload, mask);
        }
        conn.inbuf.drain(..h.frame_len());
        match h.opcode {
            Opcode::Close => {
                let mut out = Vec::new();
                wsframe::encode_close(&mut out, wsframe::close_code(&payload), "", None);
                conn.push(Chunk::Own(out));
                conn.closing = true;
            }
            Opcode::Ping => {
                let mut out = Vec::new();
                wsframe::encode(&mut out, Opcode::Pong, &payload, None);
                conn.push(Chunk::Own(out));
            }
            _ => {}
        }
        Some(true)
    }

    /// Queues the hub's deliveries on subscribers; returns the emptied vector.
    fn fan_out(&mut self, spare: Vec<Delivery>) -> Vec<Delivery> {
        let mut batch = self.hub.take(self.idx, spare);
        let mut slow: Vec<usize> = Vec::new();
        let mut queued = 0u64;
        for d in batch.drain(..) {
            let Some(list) = self.subs.get(&d.stream) else {
                continue;
            };
            for &key in list {
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                let State::Ws { start_seq, .. } = conn.state else {
                    continue;
                };
                if d.seq <= start_seq || conn.closing {
                    continue;
                }
                if conn.out_bytes + d.frame.len() > self.max_queue {
                    conn.closing = true;
                    slow.push(key);
                    continue;
                }
                conn.push(Chunk::Shared(d.frame.clone()));
                queued += 1;
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(key);
                }
            }
        }
        self.hub
            .counters
            .frames_queued
            .fetch_add(queued, Ordering::Relaxed);
        for key in slow {
            self.drop_slow(key);
        }
        batch
    }

    /// Drops a subscriber over its queue bound, with a best-effort close 1013.
    fn drop_slow(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.at_frame_boundary() {
                let mut out = Vec::new();
                wsframe::encode_close(&mut out, 1013, "slow consumer", None);
                let _ = conn.sock.write(&out);
            }
            self.hub.counters.slow_drops.fetch_add(1, Ordering::Relaxed);
        }
        self.remove(key);
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            match conn.flush() {
                Ok(Flush::Done) if conn.closing => self.remove(key),
                Ok(_) => {}
                Err(_) => self.remove(key),
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn remove(&mut self, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.sock);
        self.hub
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        if let State::Ws { stream, pos, .. } = conn.state {
            self.hub.unsubscribe(self.idx, stream);
            if let Some(list) = self.subs.get_mut(&stream) {
                if list.get(pos) == Some(&key) {
                    list.swap_remove(pos);
                    if let Some(&moved) = list.get(pos) {
                        if let Some(State::Ws { pos: p, .. }) =
                            self.conns.get_mut(moved).map(|c| &mut c.state)
                        {
                            *p = pos;
                        }
                    }
                }
            }
        }
    }
}
