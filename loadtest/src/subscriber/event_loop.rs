//! The mio loop of one worker: opens its share of the connections at the connect rate,
//! moves bytes between the sockets and their [`Session`]s, fails connections that take
//! too long, churns connections when asked to (the soak), reports progress, and on
//! `finish` drains and reports.
//!
//! ```text
//! Running ──churn{on:false}──► Pausing ──no connection left──► Paused ──churn{on:true}──► Running
//! Running / Paused ──finish──► Draining ──all delivered or drain time over──► Reported ──close──► exit
//! ```

use super::churn::{ChurnKind, ChurnSpec, Pacer};
use super::session::{Ctx, Masks, Outcome, Session, Subscription};
use super::stats::{Ended, Stats};
use super::Inbound;
use crate::accounting::LastValues;
use crate::handshake::upgrade_request;
use crate::worker::{Command, Report, WorkerSpec};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
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
/// How often deadlines, lifetimes and drain completion are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// How long a churned connection waits for the server's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

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

/// A connection: its socket, its sans-io session, and its number in the run.
struct Conn {
    sock: TcpStream,
    session: Session,
    /// Run-wide connection number (picks its stream and, with churn, its end).
    n: u64,
    /// With churn: when the client ends it (set once it is live and the worker ready).
    ends_at: Option<Instant>,
}

/// Why a connection ends.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The server ended it, or the client found it broken.
    Session(Outcome),
    /// The client ends it on purpose (churn), in this way.
    Churn(ChurnKind),
}

enum State {
    /// Connecting (and, with churn, churning).
    Running,
    /// Churn off: the connections are closing; `paused` is reported once none is left.
    Pausing,
    Paused,
    /// Publishing is over: `published[s]` events went to stream `s`, whose keys'
    /// last values are `last_values[s]`.
    Draining {
        published: Vec<u64>,
        last_values: Vec<LastValues>,
        until: Instant,
    },
    /// The final report is out; the connections stay open until `close`.
    Reported,
}

/// The loop of one worker.
pub struct Subscribers {
    spec: WorkerSpec,
    poll: Poll,
    conns: Slab<Conn>,
    /// Connections this worker keeps open (without churn: opens in all).
    mine: u64,
    /// Connections started so far.
    started: u64,
    /// Connections ended by the client before they were established (churn).
    aborted: u64,
    /// Connections in the client's closing handshake.
    closing: u64,
    t0: Instant,
    scratch: Vec<u8>,
    stats: Stats,
    /// Seq accounting of connections that ended (their losses still count).
    ended: Vec<Ended>,
    masks: Masks,
    pacer: Pacer,
    ready_sent: bool,
    state: State,
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
        let now = Instant::now();
        Subscribers {
            poll,
            conns: Slab::with_capacity(mine as usize),
            mine,
            started: 0,
            aborted: 0,
            closing: 0,
            t0: now,
            scratch: vec![0; SCRATCH],
            stats: Stats::default(),
            ended: Vec::new(),
            masks: Masks::new(wall_ns()),
            pacer: Pacer::new(spec.connect_rate, MAX_STARTS_PER_TURN, now),
            ready_sent: false,
            state: State::Running,
            inbound,
            spec,
        }
    }

    /// Creates the waker the command thread uses.
    pub fn waker(poll: &Poll) -> io::Result<Waker> {
        Waker::new(poll.registry(), WAKER)
    }

    fn churn(&self) -> Option<&ChurnSpec> {
        self.spec.churn.as_ref()
    }

    /// Connections started and neither established, failed nor aborted yet.
    fn pending(&self) -> u64 {
        self.started - self.stats.established - self.stats.failed_count - self.aborted
    }

    fn fail_unstarted(&mut self, kind: &str) {
        if self.churn().is_none() && self.started < self.mine {
            self.stats.fail(kind.into(), self.mine - self.started);
            self.started = self.mine;
        }
    }

    /// Runs until `close` or until the parent is gone.
    pub fn run(mut self, emit: &mut dyn FnMut(&Report)) -> io::Result<()> {
        let mut events = Events::with_capacity(4096);
        let progress_every = Duration::from_millis(self.spec.progress_ms.max(100));
        let mut next_progress = self.t0 + progress_every;
        let mut next_sweep = self.t0 + SWEEP_EVERY;
        loop {
            let now = Instant::now();
            let connecting = matches!(self.state, State::Running)
                && (self.started < self.mine || self.churn().is_some());
            let timeout = if connecting {
                Duration::from_millis(2)
            } else if matches!(self.state, State::Draining { .. } | State::Pausing) {
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
                    Ok(Inbound::Command(cmd)) => {
                        if self.command(cmd) {
                            self.close_all();
                            return Ok(());
                        }
                    }
                    Ok(Inbound::ParentGone) | Err(TryRecvError::Disconnected) => return Ok(()),
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            if matches!(self.state, State::Running) {
                self.start_due(now);
            }
            if now >= next_sweep {
                next_sweep = now + SWEEP_EVERY;
                self.sweep(now, emit);
            }
            if !self.ready_sent && self.started >= self.mine && self.pending() == 0 {
                self.ready_sent = true;
                self.arm_lifetimes(now);
                emit(&Report::Ready {
                    established: self.stats.established,
                    failed: self.stats.failed_count,
                });
            }
            if now >= next_progress {
                next_progress = now + progress_every;
                emit(&Report::Progress(
                    self.stats.progress(self.conns.len() as u64),
                ));
            }
        }
    }

    /// Acts on a command; `true` when the worker is to close its connections and exit.
    fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Finish {
                published,
                drain_ms,
                last_values,
            } => {
                self.fail_unstarted("not_started");
                self.state = State::Draining {
                    published,
                    last_values,
                    until: Instant::now() + Duration::from_millis(drain_ms),
                };
            }
            Command::Churn { on: false } => {
                let now = Instant::now();
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    let kind = match self.conns.get(key) {
                        Some(c) if c.session.is_live() => self.churn_kind(c.n),
                        _ => ChurnKind::Abort,
                    };
                    self.churn_end(key, kind, now);
                }
                self.state = State::Pausing;
            }
            Command::Churn { on: true } => {
                self.pacer =
                    Pacer::new(self.spec.connect_rate, MAX_STARTS_PER_TURN, Instant::now());
                self.state = State::Running;
            }
            Command::Close => return true,
            Command::Spec(_) => {}
        }
        false
    }

    fn churn_kind(&self, n: u64) -> ChurnKind {
        self.churn().map_or(ChurnKind::Close, |c| c.kind(n))
    }

    /// Gives every live connection without one its lifetime (churn only).
    fn arm_lifetimes(&mut self, now: Instant) {
        let Some(churn) = self.spec.churn.as_ref() else {
            return;
        };
        for (_, c) in self.conns.iter_mut() {
            if c.ends_at.is_none() && c.session.is_live() {
                c.ends_at = Some(now + churn.lifetime(c.n));
            }
        }
    }

    /// Starts the connections due by now under the connect rate.
    fn start_due(&mut self, now: Instant) {
        let room = if self.churn().is_some() {
            let open = self.conns.len() as u64 - self.closing;
            self.mine.saturating_sub(open)
        } else {
            self.mine - self.started
        };
        if room == 0 {
            return;
        }
        let n = self.pacer.allowed(now).min(room).min(MAX_STARTS_PER_TURN);
        for _ in 0..n {
            self.pacer.take();
            let global = self.spec.index as u64 + self.started * self.spec.procs.max(1) as u64;
            self.started += 1;
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
        let sub = Subscription::for_connection(
            global,
            self.spec.streams.len(),
            self.spec.conflate_share,
            self.spec.snapshot_share,
        );
        let mut params = sub.params();
        if let Some(token) = &self.spec.token {
            params.push(("token", token));
        }
        let path = &self.spec.streams[stream].path;
        let request = upgrade_request(path, &self.spec.host_header, &params, &key);
        entry.insert(Conn {
            sock: tcp,
            session: Session::new(stream, sub, request, key, Instant::now()),
            n: global,
            ends_at: None,
        });
        Ok(())
    }

    /// Deadlines, lifetimes, pause and drain completion.
    fn sweep(&mut self, now: Instant, emit: &mut dyn FnMut(&Report)) {
        let finishing = matches!(self.state, State::Draining { .. });
        let timeout = Duration::from_millis(self.spec.connect_timeout_ms);
        let churning = self.churn().is_some() && matches!(self.state, State::Running);
        if self.pending() > 0 || self.closing > 0 || churning {
            let mut due: Vec<(usize, Ending)> = Vec::new();
            for (k, c) in self.conns.iter() {
                if let Some(since) = c.session.closing_since() {
                    if now - since > CLOSE_WAIT {
                        due.push((k, Ending::Churn(ChurnKind::Close)));
                    }
                } else if !c.session.is_live() {
                    if finishing || now - c.session.started > timeout {
                        due.push((k, Ending::Session(Outcome::Failed("timeout".into()))));
                    }
                } else if churning && c.ends_at.is_some_and(|t| t <= now) {
                    due.push((k, Ending::Churn(self.churn_kind(c.n))));
                }
            }
            for (key, ending) in due {
                match ending {
                    Ending::Churn(ChurnKind::Close)
                        if self
                            .conns
                            .get(key)
                            .is_some_and(|c| c.session.closing_since().is_some()) =>
                    {
                        // Unanswered: counted as a close all the same, and reset.
                        self.stats.close_timeouts += 1;
                        self.end(key, Ending::Churn(ChurnKind::Close));
                    }
                    Ending::Churn(kind) => self.churn_end(key, kind, now),
                    other => self.end(key, other),
                }
            }
        }
        match &self.state {
            State::Pausing if self.conns.is_empty() => {
                self.state = State::Paused;
                emit(&Report::Paused);
            }
            State::Draining {
                published,
                last_values,
                until,
            } if now >= *until || self.drained(published) => {
                let report = self.final_report(published, last_values);
                emit(&Report::Final(Box::new(report)));
                self.state = State::Reported;
            }
            _ => {}
        }
    }

    /// Whether every live connection has every seq it expects (with churn there is
    /// nothing to wait for: each connection is owed only what it was there for).
    fn drained(&self, published: &[u64]) -> bool {
        self.churn().is_some()
            || self
                .conns
                .iter()
                .all(|(_, c)| match c.session.accounting() {
                    Some(a) => a.tracking.complete(
                        a.tracking.base() + published.get(c.session.stream).copied().unwrap_or(0),
                    ),
                    None => true,
                })
    }

    fn on_ready(&mut self, key: usize) {
        if let Some(ending) = self.drive(key) {
            self.end(key, ending);
        }
    }

    /// Moves bytes for one ready connection; says why it ends, if it does.
    fn drive(&mut self, key: usize) -> Option<Ending> {
        let churn = self.spec.churn.as_ref();
        let armed = self.ready_sent;
        let Subscribers {
            conns,
            scratch,
            stats,
            masks,
            ..
        } = self;
        let conn = conns.get_mut(key)?;
        let Conn {
            sock,
            session,
            n,
            ends_at,
        } = conn;
        let fail = |e: &io::Error| Some(Ending::Session(Outcome::Failed(io_kind(e))));
        if session.connecting() {
            match sock.take_error() {
                Ok(Some(e)) | Err(e) => return fail(&e),
                Ok(None) => {}
            }
            match sock.peer_addr() {
                Ok(_) => session.on_connected(),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                Err(e) => return fail(&e),
            }
            if let Some(c) = churn.filter(|c| c.kind(*n) == ChurnKind::Abort) {
                let _ = flush(sock, &mut session.out);
                return Some(Ending::Churn(c.kind(*n)));
            }
        }
        if let Err(e) = flush(sock, &mut session.out) {
            return fail(&e);
        }
        loop {
            match sock.read(scratch) {
                Ok(0) => return Some(Ending::Session(session.on_end(|| "closed_early".into()))),
                Ok(got) => {
                    let mut ctx = Ctx {
                        stats,
                        now_ns: wall_ns(),
                        now: Instant::now(),
                        masks,
                    };
                    let out = session.on_bytes(&scratch[..got], &mut ctx);
                    if out != Outcome::Keep {
                        return Some(Ending::Session(out));
                    }
                    if let Some(c) = churn {
                        if armed && ends_at.is_none() && session.is_live() {
                            *ends_at = Some(ctx.now + c.lifetime(*n));
                        }
                    }
                    // A short read drained the socket; more data (or EOF) raises a new
                    // edge. Saves the WouldBlock read, half the syscalls at low rates.
                    if got < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Ending::Session(session.on_end(|| io_kind(&e)))),
            }
        }
        if let Err(e) = flush(sock, &mut session.out) {
            return fail(&e);
        }
        None
    }

    /// The client ends a connection on purpose, in the way `kind` says.
    fn churn_end(&mut self, key: usize, kind: ChurnKind, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if kind == ChurnKind::Close && c.session.is_live() {
            if c.session.closing_since().is_none() {
                c.session.begin_close(&mut self.masks, now);
                self.closing += 1;
            }
            if flush(&mut c.sock, &mut c.session.out).is_err() {
                self.end(key, Ending::Churn(ChurnKind::Close));
            }
        } else {
            self.end(key, Ending::Churn(kind));
        }
    }

    /// Ends a connection: counts it, keeps its seq accounting, and drops the socket
    /// (after what is queued, such as a close reply, best-effort; with RST for the
    /// churn kinds that reset).
    fn end(&mut self, key: usize, ending: Ending) {
        let Some(Conn {
            mut sock,
            mut session,
            ..
        }) = self.conns.try_remove(key)
        else {
            return;
        };
        let was_closing = session.closing_since().is_some();
        if was_closing {
            self.closing -= 1;
        }
        let live = session.is_live();
        let st = &mut self.stats;
        match ending {
            // The answer to (or the end of) a closing handshake the client began.
            Ending::Session(_) if was_closing => st.churn(ChurnKind::Close.name()),
            Ending::Session(Outcome::Keep) => {}
            Ending::Session(Outcome::Closed(code)) => {
                let _ = flush(&mut sock, &mut session.out);
                *st.closes.entry(code).or_default() += 1;
                if live {
                    st.closed_by_server += 1;
                } else {
                    st.fail(format!("closed_{code}"), 1);
                }
            }
            Ending::Session(Outcome::Failed(kind)) => {
                let _ = flush(&mut sock, &mut session.out);
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
            Ending::Churn(kind) => {
                let kind = if live { kind } else { ChurnKind::Abort };
                if kind != ChurnKind::Drop {
                    let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                }
                if kind == ChurnKind::Abort {
                    self.aborted += 1;
                }
                st.churn(kind.name());
            }
        }
        let _ = self.poll.registry().deregister(&mut sock);
        let stream = session.stream;
        let churn = self.spec.churn.is_some();
        if let Some(accounting) = session.into_accounting() {
            let upto = churn.then(|| accounting.tracking.last());
            self.ended.push(Ended {
                stream,
                accounting,
                upto,
            });
        }
    }

    /// The final figures: the ended connections and the open ones.
    fn final_report(&self, published: &[u64], last_values: &[LastValues]) -> crate::worker::Final {
        let churn = self.churn().is_some();
        let ended = self.ended.iter().map(|e| (e.stream, &e.accounting, e.upto));
        let open = self.conns.iter().filter_map(|(_, c)| {
            let a = c.session.accounting()?;
            Some((c.session.stream, a, churn.then(|| a.tracking.last())))
        });
        self.stats
            .to_final(ended.chain(open), published, last_values)
    }

    /// Closes what is still open, politely and without waiting.
    fn close_all(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.conns) {
            if c.session.is_live() && c.session.closing_since().is_none() {
                c.session.close(1000, &mut self.masks);
                let _ = flush(&mut c.sock, &mut c.session.out);
            }
            let _ = self.poll.registry().deregister(&mut c.sock);
        }
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
