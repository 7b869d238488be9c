//! The mio loop of one worker: opens its share of the connections at the connect rate,
//! moves bytes between the sockets and their [`Session`]s, fails connections that take
//! too long, reports progress, and on `finish` drains and reports.

use super::session::{Ctx, Masks, Outcome, Session};
use super::stats::Stats;
use super::Inbound;
use crate::accounting::SeqTracker;
use crate::handshake::upgrade_request;
use crate::worker::{Command, Final, Report, WorkerSpec};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Token of the waker the command thread uses.
pub const WAKER: Token = Token(usize::MAX);
/// Read buffer shared by all connections of the loop.
const SCRATCH: usize = 256 * 1024;
/// Most connections started in one loop iteration, so handshakes keep being served.
const MAX_STARTS_PER_TURN: u64 = 256;
/// How often connect deadlines and drain completion are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// Wall-clock ns since the Unix epoch (the publisher's clock for `t_ns`).
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
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

/// A connection: its socket and its sans-io session.
struct Conn {
    sock: TcpStream,
    session: Session,
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
    masks: Masks,
    ready_sent: bool,
    inbound: Receiver<Inbound>,
}

impl Subscribers {
    /// A loop for `spec`; commands arrive on `inbound`, with the waker (on `poll`, token
    /// [`WAKER`]) poked after each.
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
            stats: Stats::default(),
            closed: Vec::new(),
            masks: Masks::new(wall_ns()),
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
            self.stats.fail(kind.into(), n);
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
                if ev.token() != WAKER {
                    self.on_ready(ev.token().0);
                }
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
                emit(&Report::Progress(self.stats.progress()));
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
                self.stats.fail(io_kind(&e), 1);
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
        let key = tungstenite::handshake::client::generate_key();
        let path = &self.spec.streams[stream].path;
        let request = upgrade_request(
            path,
            &self.spec.host_header,
            self.spec.token.as_deref(),
            &key,
        );
        entry.insert(Conn {
            sock: tcp,
            session: Session::new(stream, request, key, Instant::now()),
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
            .filter(|(_, c)| !c.session.is_live() && (all || now - c.session.started > timeout))
            .map(|(k, _)| k)
            .collect();
        for key in late {
            self.end(key, Outcome::Failed("timeout".into()));
        }
    }

    /// Whether every live connection has every seq it expects.
    fn drained(&self, published: &[u64]) -> bool {
        self.conns.iter().all(|(_, c)| match c.session.tracker() {
            Some(t) => t.complete(t.base() + published.get(c.session.stream).copied().unwrap_or(0)),
            None => true,
        })
    }

    fn on_ready(&mut self, key: usize) {
        let outcome = self.drive(key);
        if outcome != Outcome::Keep {
            self.end(key, outcome);
        }
    }

    /// Moves bytes for one ready connection.
    fn drive(&mut self, key: usize) -> Outcome {
        let Subscribers {
            conns,
            scratch,
            stats,
            masks,
            ..
        } = self;
        let Some(Conn { sock, session }) = conns.get_mut(key) else {
            return Outcome::Keep;
        };
        if session.connecting() {
            match sock.take_error() {
                Ok(Some(e)) | Err(e) => return Outcome::Failed(io_kind(&e)),
                Ok(None) => {}
            }
            match sock.peer_addr() {
                Ok(_) => session.on_connected(),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Outcome::Keep,
                Err(e) => return Outcome::Failed(io_kind(&e)),
            }
        }
        if let Err(e) = flush(sock, &mut session.out) {
            return Outcome::Failed(io_kind(&e));
        }
        loop {
            match sock.read(scratch) {
                Ok(0) => return session.on_end(|| "closed_early".into()),
                Ok(n) => {
                    let mut ctx = Ctx {
                        stats,
                        now_ns: wall_ns(),
                        now: Instant::now(),
                        masks,
                    };
                    let out = session.on_bytes(&scratch[..n], &mut ctx);
                    if out != Outcome::Keep {
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
                Err(e) => return session.on_end(|| io_kind(&e)),
            }
        }
        if let Err(e) = flush(sock, &mut session.out) {
            return Outcome::Failed(io_kind(&e));
        }
        Outcome::Keep
    }

    /// Ends a connection: counts it, keeps its tracker, sends what is queued (a close
    /// reply) best-effort and drops the socket.
    fn end(&mut self, key: usize, outcome: Outcome) {
        let Some(Conn {
            mut sock,
            mut session,
        }) = self.conns.try_remove(key)
        else {
            return;
        };
        let _ = flush(&mut sock, &mut session.out);
        let _ = self.poll.registry().deregister(&mut sock);
        let live = session.is_live();
        let st = &mut self.stats;
        match outcome {
            Outcome::Keep => {}
            Outcome::Closed(code) => {
                *st.closes.entry(code).or_default() += 1;
                if live {
                    st.closed_by_server += 1;
                } else {
                    st.fail(format!("closed_{code}"), 1);
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
                    st.fail(kind, 1);
                }
            }
        }
        let stream = session.stream;
        if let Some(t) = session.into_tracker() {
            self.closed.push((stream, t));
        }
    }

    fn final_report(mut self, published: &[u64]) -> Final {
        // Close what is still open, politely and without waiting.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(Conn {
                mut sock,
                mut session,
            }) = self.conns.try_remove(key)
            {
                if session.is_live() {
                    session.close(1000, &mut self.masks);
                    let _ = flush(&mut sock, &mut session.out);
                }
                let _ = self.poll.registry().deregister(&mut sock);
                let stream = session.stream;
                if let Some(t) = session.into_tracker() {
                    self.closed.push((stream, t));
                }
            }
        }
        self.stats.to_final(&self.closed, published)
    }
}

/// Writes queued bytes until done or `WouldBlock`.
fn flush(sock: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    while !out.is_empty() {
        match sock.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
