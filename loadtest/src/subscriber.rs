//! The subscriber side of a worker: one mio loop driving thousands of WebSocket
//! connections. Per connection it keeps a small state machine, the bytes of a partial
//! frame and a `SeqTracker`; reads go through one shared scratch buffer.
//!
//! Connection phases (`Phase`), each moving only forward:
//!
//! ```text
//! Connecting ──writable, connected──► Upgrading ──101──► Awaiting ──BI_CONNECTION_ESTABLISHED──► Live
//!      └──────────── error / timeout / refusal: failed (counted by kind) ──────┘       └─ close/EOF: closed
//! ```

use crate::accounting::SeqTracker;
use crate::handshake::{parse_response, upgrade_request};
use crate::message::{self, ServerMsg};
use crate::worker::{hist_to_hex, new_hist, Command, Final, Progress, Report, WorkerSpec};
use crate::wsframe::{self, Opcode};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Token of the waker the command thread uses.
pub const WAKER: Token = Token(usize::MAX);
/// Largest server message accepted (bigger ones end the connection).
const MAX_MESSAGE: usize = 16 << 20;
/// Read buffer shared by all connections of the loop.
const SCRATCH: usize = 256 * 1024;
/// Most connections started in one loop iteration, so handshakes keep being served.
const MAX_STARTS_PER_TURN: u64 = 256;
/// How often connect deadlines and drain completion are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// What the command thread passes to the loop.
pub enum Inbound {
    Command(Command),
    /// The parent closed our stdin: stop now.
    ParentGone,
}

enum Phase {
    /// TCP connect in progress; `key` is the upgrade key to send.
    Connecting { key: String },
    /// Request written (or being written); waiting for the 101.
    Upgrading { key: String },
    /// Upgraded; waiting for `BI_CONNECTION_ESTABLISHED`.
    Awaiting,
    /// Receiving events.
    Live(SeqTracker),
}

struct Conn {
    sock: TcpStream,
    /// Index into the spec's streams.
    stream: usize,
    started: Instant,
    phase: Phase,
    /// Bytes of an incomplete response head or frame.
    inbuf: Vec<u8>,
    /// Bytes to send (upgrade request, pongs, close).
    out: Vec<u8>,
    /// A fragmented message being assembled.
    frag: Option<Vec<u8>>,
}

/// How a connection's turn ended.
enum Outcome {
    Keep,
    /// Ended by the client side for `kind` (protocol error, refusal, I/O error).
    Failed(String),
    /// The server sent a close frame with this code, or 1006 for EOF/reset without one.
    Closed(u16),
}

/// Counters of the loop.
struct Stats {
    established: u64,
    /// Never established, by kind.
    failed: BTreeMap<String, u64>,
    failed_count: u64,
    /// Live connections the server ended (close frame, EOF, reset or a protocol error).
    closed_by_server: u64,
    closes: BTreeMap<u16, u64>,
    deliveries: u64,
    measured: u64,
    bad_messages: u64,
    untimed: u64,
    first_measured_ns: u64,
    last_measured_ns: u64,
    latency: Histogram<u64>,
    interval: Histogram<u64>,
    connect: Histogram<u64>,
}

/// Per-read context handed to the parser.
struct Ctx<'a> {
    stats: &'a mut Stats,
    now_ns: u64,
    now: Instant,
    rng: &'a mut u64,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn next_mask(rng: &mut u64) -> [u8; 4] {
    // xorshift64: masking keys need not be secret here, only present.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng as u32).to_le_bytes()
}

/// A short label for an I/O error.
pub fn io_kind(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => return "fd_limit".into(),
        Some(libc::EADDRNOTAVAIL) => return "no_local_port".into(),
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".into(),
        io::ErrorKind::ConnectionReset => "reset".into(),
        io::ErrorKind::TimedOut => "timeout".into(),
        io::ErrorKind::BrokenPipe => "broken_pipe".into(),
        k => format!("io_{k:?}").to_lowercase(),
    }
}

/// The loop of one worker.
pub struct Subscribers {
    spec: WorkerSpec,
    poll: Poll,
    conns: Slab<Conn>,
    /// Connections this worker opens in all.
    mine: u64,
    /// Of which started so far.
    started: u64,
    t0: Instant,
    scratch: Vec<u8>,
    stats: Stats,
    /// Trackers of live connections that ended (their losses still count).
    closed: Vec<(usize, SeqTracker)>,
    rng: u64,
    ready_sent: bool,
    inbound: Receiver<Inbound>,
}

impl Subscribers {
    /// A loop for `spec`; commands arrive on `inbound`, with `waker` (on `poll`, token
    /// `WAKER`) poked after each.
    pub fn new(spec: WorkerSpec, poll: Poll, inbound: Receiver<Inbound>) -> Self {
        let mine = if spec.index as u64 >= spec.connections {
            0
        } else {
            (spec.connections - spec.index as u64).div_ceil(spec.procs.max(1) as u64)
        };
        Subscribers {
            poll,
            conns: Slab::with_capacity(mine as usize),
            mine,
            started: 0,
            t0: Instant::now(),
            scratch: vec![0; SCRATCH],
            stats: Stats {
                established: 0,
                failed: BTreeMap::new(),
                failed_count: 0,
                closed_by_server: 0,
                closes: BTreeMap::new(),
                deliveries: 0,
                measured: 0,
                bad_messages: 0,
                untimed: 0,
                first_measured_ns: 0,
                last_measured_ns: 0,
                latency: new_hist(),
                interval: new_hist(),
                connect: new_hist(),
            },
            closed: Vec::new(),
            rng: wall_ns() | 1,
            ready_sent: false,
            inbound,
            spec,
        }
    }

    /// Creates the waker the command thread uses.
    pub fn waker(poll: &Poll) -> io::Result<Waker> {
        Waker::new(poll.registry(), WAKER)
    }

    fn pending(&self) -> u64 {
        self.started - self.stats.established - self.stats.failed_count
    }

    fn fail_unstarted(&mut self, kind: &str) {
        let n = self.mine - self.started;
        if n > 0 {
            *self.stats.failed.entry(kind.into()).or_default() += n;
            self.stats.failed_count += n;
            self.started = self.mine;
        }
    }

    /// Runs until the final report (returned) or until the parent is gone (`None`).
    pub fn run(mut self, emit: &mut dyn FnMut(&Report)) -> io::Result<Option<Final>> {
        let mut events = Events::with_capacity(4096);
        let progress_every = Duration::from_millis(self.spec.progress_ms.max(100));
        let mut next_progress = self.t0 + progress_every;
        let mut next_sweep = self.t0 + SWEEP_EVERY;
        let mut finish: Option<(Vec<u64>, Instant)> = None;
        loop {
            let now = Instant::now();
            let timeout = if self.started < self.mine {
                Duration::from_millis(2)
            } else if finish.is_some() {
                Duration::from_millis(10)
            } else {
                next_progress
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(100))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                self.on_ready(ev.token().0);
            }
            loop {
                match self.inbound.try_recv() {
                    Ok(Inbound::Command(Command::Finish {
                        published,
                        drain_ms,
                    })) => {
                        self.fail_unstarted("not_started");
                        finish =
                            Some((published, Instant::now() + Duration::from_millis(drain_ms)));
                    }
                    Ok(Inbound::Command(Command::Spec(_))) => {}
                    Ok(Inbound::ParentGone) | Err(TryRecvError::Disconnected) => return Ok(None),
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            if finish.is_none() {
                self.start_due(now);
            }
            if now >= next_sweep {
                next_sweep = now + SWEEP_EVERY;
                if self.pending() > 0 {
                    self.sweep_deadlines(now, finish.is_some());
                }
                if let Some((published, deadline)) = &finish {
                    if now >= *deadline || self.drained(published) {
                        let published = published.clone();
                        return Ok(Some(self.final_report(&published)));
                    }
                }
            }
            if !self.ready_sent && self.started == self.mine && self.pending() == 0 {
                self.ready_sent = true;
                emit(&Report::Ready {
                    established: self.stats.established,
                    failed: self.stats.failed_count,
                });
            }
            if now >= next_progress {
                next_progress = now + progress_every;
                emit(&Report::Progress(Progress {
                    established: self.stats.established,
                    failed: self.stats.failed_count,
                    closed: self.stats.closed_by_server,
                    deliveries: self.stats.deliveries,
                    interval_hist: hist_to_hex(&self.stats.interval),
                }));
                self.stats.interval.reset();
            }
        }
    }

    /// Starts the connections due by now under the connect rate.
    fn start_due(&mut self, now: Instant) {
        if self.started >= self.mine {
            return;
        }
        let rate = self.spec.connect_rate;
        let due = if rate.is_finite() && rate > 0.0 {
            ((now - self.t0).as_secs_f64() * rate) as u64 + 1
        } else {
            u64::MAX
        };
        let due = due.min(self.mine);
        let mut n = 0;
        while self.started < due && n < MAX_STARTS_PER_TURN {
            let global = self.spec.index as u64 + self.started * self.spec.procs.max(1) as u64;
            self.started += 1;
            n += 1;
            if let Err(e) = self.start_one(global) {
                *self.stats.failed.entry(io_kind(&e)).or_default() += 1;
                self.stats.failed_count += 1;
            }
        }
    }

    fn start_one(&mut self, global: u64) -> io::Result<()> {
        let addr: SocketAddr = self.spec.addr;
        let stream = (global % self.spec.streams.len().max(1) as u64) as usize;
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        if !self.spec.source_ips.is_empty() {
            let ips = &self.spec.source_ips;
            let src = ips[(global % ips.len() as u64) as usize];
            sock.bind(&SocketAddr::new(src, 0).into())?;
        }
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut tcp = TcpStream::from_std(std::net::TcpStream::from(sock));
        let entry = self.conns.vacant_entry();
        self.poll.registry().register(
            &mut tcp,
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Conn {
            sock: tcp,
            stream,
            started: Instant::now(),
            phase: Phase::Connecting {
                key: tungstenite::handshake::client::generate_key(),
            },
            inbuf: Vec::new(),
            out: Vec::new(),
            frag: None,
        });
        Ok(())
    }

    /// Fails connections not established within the connect timeout (or, once the
    /// run is finishing, all of them).
    fn sweep_deadlines(&mut self, now: Instant, all: bool) {
        let timeout = Duration::from_millis(self.spec.connect_timeout_ms);
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !matches!(c.phase, Phase::Live(_)) && (all || now - c.started > timeout)
            })
            .map(|(k, _)| k)
            .collect();
        for key in late {
            self.end(key, Outcome::Failed("timeout".into()));
        }
    }

    /// Whether every live connection has every seq it expects.
    fn drained(&self, published: &[u64]) -> bool {
        self.conns.iter().all(|(_, c)| match &c.phase {
            Phase::Live(t) => t.complete(t.base() + published.get(c.stream).copied().unwrap_or(0)),
            _ => true,
        })
    }

    fn on_ready(&mut self, key: usize) {
        let outcome = self.drive(key);
        if !matches!(outcome, Outcome::Keep) {
            self.end(key, outcome);
        }
    }

    fn drive(&mut self, key: usize) -> Outcome {
        let Subscribers {
            conns,
            scratch,
            stats,
            rng,
            spec,
            ..
        } = self;
        let Some(conn) = conns.get_mut(key) else {
            return Outcome::Keep;
        };
        if let Phase::Connecting { key: ws_key } = &conn.phase {
            match conn.sock.take_error() {
                Ok(Some(e)) | Err(e) => return Outcome::Failed(io_kind(&e)),
                Ok(None) => {}
            }
            match conn.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Outcome::Keep,
                Err(e) => return Outcome::Failed(io_kind(&e)),
            }
            let s = &spec.streams[conn.stream];
            conn.out = upgrade_request(&s.path, &spec.host_header, spec.token.as_deref(), ws_key);
            let ws_key = ws_key.clone();
            conn.phase = Phase::Upgrading { key: ws_key };
        }
        if let Err(e) = flush(conn) {
            return Outcome::Failed(io_kind(&e));
        }
        loop {
            match conn.sock.read(scratch) {
                Ok(0) => {
                    return match conn.phase {
                        Phase::Live(_) | Phase::Awaiting => Outcome::Closed(1006),
                        _ => Outcome::Failed("closed_early".into()),
                    }
                }
                Ok(n) => {
                    let mut ctx = Ctx {
                        stats,
                        now_ns: wall_ns(),
                        now: Instant::now(),
                        rng,
                    };
                    let out = on_data(conn, &scratch[..n], &mut ctx);
                    if !matches!(out, Outcome::Keep) {
                        return out;
                    }
                    // A short read drained the socket; more data (or EOF) raises a new
                    // edge. Saves the WouldBlock read, half the syscalls at low rates.
                    if n < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return match conn.phase {
                        Phase::Live(_) | Phase::Awaiting => Outcome::Closed(1006),
                        _ => Outcome::Failed(io_kind(&e)),
                    }
                }
            }
        }
        if let Err(e) = flush(conn) {
            return Outcome::Failed(io_kind(&e));
        }
        Outcome::Keep
    }

    /// Ends a connection: counts it, keeps its tracker, sends what is queued (a close
    /// reply) best-effort and drops the socket.
    fn end(&mut self, key: usize, outcome: Outcome) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = flush(&mut conn);
        let _ = self.poll.registry().deregister(&mut conn.sock);
        let live = matches!(conn.phase, Phase::Live(_));
        let st = &mut self.stats;
        match outcome {
            Outcome::Keep => {}
            Outcome::Closed(code) => {
                *st.closes.entry(code).or_default() += 1;
                if live {
                    st.closed_by_server += 1;
                } else {
                    *st.failed.entry(format!("closed_{code}")).or_default() += 1;
                    st.failed_count += 1;
                }
            }
            Outcome::Failed(kind) => {
                if live {
                    // A live connection ended by our side (the server broke the protocol):
                    // counted with the server's closes, under the code we sent.
                    st.closed_by_server += 1;
                    *st.closes.entry(1002).or_default() += 1;
                    log::warn!("live connection ended: {kind}");
                } else {
                    *st.failed.entry(kind).or_default() += 1;
                    st.failed_count += 1;
                }
            }
        }
        if let Phase::Live(t) = conn.phase {
            self.closed.push((conn.stream, t));
        }
    }

    fn final_report(mut self, published: &[u64]) -> Final {
        // Close what is still open, politely and without waiting.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(mut conn) = self.conns.try_remove(key) {
                if matches!(conn.phase, Phase::Live(_)) {
                    conn.out.clear();
                    wsframe::encode_close(&mut conn.out, 1000, "", Some(next_mask(&mut self.rng)));
                    let _ = flush(&mut conn);
                }
                let _ = self.poll.registry().deregister(&mut conn.sock);
                if let Phase::Live(t) = conn.phase {
                    self.closed.push((conn.stream, t));
                }
            }
        }
        let st = &self.stats;
        let mut f = Final {
            established: st.established,
            failed: st.failed.clone(),
            closed_by_server: st.closed_by_server,
            closes: st.closes.iter().map(|(k, v)| (*k, *v)).collect(),
            deliveries: st.deliveries,
            measured: st.measured,
            bad_messages: st.bad_messages,
            untimed: st.untimed,
            first_measured_ns: st.first_measured_ns,
            last_measured_ns: st.last_measured_ns,
            latency_hist: hist_to_hex(&st.latency),
            connect_hist: hist_to_hex(&st.connect),
            ..Default::default()
        };
        for (stream, t) in &self.closed {
            let tally = t.tally(t.base() + published.get(*stream).copied().unwrap_or(0));
            f.expected += tally.expected;
            f.lost += tally.lost;
            f.extra += tally.extra;
            f.imprecise |= tally.imprecise;
            f.order_violations += t.order_violations;
            f.duplicates += t.duplicates;
            f.gaps += t.gaps;
        }
        f
    }
}

/// Writes queued bytes until done or `WouldBlock`.
fn flush(conn: &mut Conn) -> io::Result<()> {
    while !conn.out.is_empty() {
        match conn.sock.write(&conn.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Feeds received bytes: the common case (no partial frame pending) parses straight
/// from the scratch buffer.
fn on_data(conn: &mut Conn, data: &[u8], ctx: &mut Ctx) -> Outcome {
    if conn.inbuf.is_empty() {
        let (used, out) = consume(conn, data, ctx);
        if matches!(out, Outcome::Keep) {
            conn.inbuf.extend_from_slice(&data[used..]);
        }
        out
    } else {
        let mut buf = std::mem::take(&mut conn.inbuf);
        buf.extend_from_slice(data);
        let (used, out) = consume(conn, &buf, ctx);
        buf.drain(..used);
        conn.inbuf = buf;
        out
    }
}

/// Consumes the complete response head and frames at the start of `buf`.
fn consume(conn: &mut Conn, buf: &[u8], ctx: &mut Ctx) -> (usize, Outcome) {
    let mut pos = 0;
    match &conn.phase {
        Phase::Upgrading { key } => match parse_response(buf, key) {
            Ok(None) => return (0, Outcome::Keep),
            Ok(Some(n)) => {
                pos = n;
                conn.phase = Phase::Awaiting;
            }
            Err(e) => return (0, Outcome::Failed(e.kind())),
        },
        Phase::Connecting { .. } => return (0, Outcome::Failed("data_before_upgrade".into())),
        _ => {}
    }
    loop {
        let h = match wsframe::decode(&buf[pos..], false, MAX_MESSAGE) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                wsframe::encode_close(&mut conn.out, e.close_code(), "", Some(next_mask(ctx.rng)));
                return (pos, Outcome::Failed("protocol_error".into()));
            }
        };
        let payload = &buf[pos + h.payload_start..pos + h.frame_len()];
        pos += h.frame_len();
        let out = match h.opcode {
            Opcode::Text | Opcode::Binary => {
                if conn.frag.is_some() {
                    Outcome::Failed("protocol_error".into())
                } else if h.fin {
                    on_message(conn, payload, ctx)
                } else {
                    conn.frag = Some(payload.to_vec());
                    Outcome::Keep
                }
            }
            Opcode::Continuation => match conn.frag.as_mut() {
                Some(f) if f.len() + payload.len() > MAX_MESSAGE => {
                    Outcome::Failed("message_too_big".into())
                }
                Some(f) => {
                    f.extend_from_slice(payload);
                    if h.fin {
                        let msg = conn.frag.take().unwrap_or_default();
                        on_message(conn, &msg, ctx)
                    } else {
                        Outcome::Keep
                    }
                }
                None => Outcome::Failed("protocol_error".into()),
            },
            Opcode::Ping => {
                wsframe::encode(
                    &mut conn.out,
                    Opcode::Pong,
                    payload,
                    Some(next_mask(ctx.rng)),
                );
                Outcome::Keep
            }
            Opcode::Pong => Outcome::Keep,
            Opcode::Close => {
                let code = wsframe::close_code(payload);
                let reply = if code == 1005 { 1000 } else { code };
                wsframe::encode_close(&mut conn.out, reply, "", Some(next_mask(ctx.rng)));
                Outcome::Closed(code)
            }
        };
        if !matches!(out, Outcome::Keep) {
            return (pos, out);
        }
    }
    (pos, Outcome::Keep)
}

/// One complete text (or binary) message.
fn on_message(conn: &mut Conn, text: &[u8], ctx: &mut Ctx) -> Outcome {
    let st = &mut *ctx.stats;
    let msg = match message::parse(text) {
        Ok(m) => m,
        Err(_) => {
            st.bad_messages += 1;
            return match conn.phase {
                Phase::Awaiting => Outcome::Failed("bad_first_message".into()),
                _ => Outcome::Keep,
            };
        }
    };
    match (&mut conn.phase, msg) {
        (Phase::Awaiting, ServerMsg::Established { last_seq }) => {
            let took = ctx.now.saturating_duration_since(conn.started);
            let _ = st.connect.record((took.as_nanos() as u64).max(1));
            st.established += 1;
            conn.phase = Phase::Live(SeqTracker::new(last_seq));
            Outcome::Keep
        }
        (Phase::Awaiting, _) => Outcome::Failed("bad_first_message".into()),
        (Phase::Live(tracker), ServerMsg::Event { seq, t_ns, warm }) => {
            tracker.observe(seq);
            st.deliveries += 1;
            match t_ns {
                Some(t) if !warm => {
                    let latency = ctx.now_ns.saturating_sub(t).max(1);
                    let _ = st.latency.record(latency);
                    let _ = st.interval.record(latency);
                    st.measured += 1;
                    if st.first_measured_ns == 0 {
                        st.first_measured_ns = ctx.now_ns;
                    }
                    st.last_measured_ns = ctx.now_ns;
                }
                Some(_) => {}
                None => st.untimed += 1,
            }
            Outcome::Keep
        }
        _ => Outcome::Keep,
    }
}
