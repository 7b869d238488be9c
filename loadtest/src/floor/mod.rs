//! The floor server: the least a machine must do to serve this protocol, so that
//! bistream's figures can be compared with the machine's own limit in the same session.
//!
//! It answers the same upgrade on the same paths, sends `BI_CONNECTION_ESTABLISHED`
//! with `last_seq`, accepts `POST /api/events` (keep-alive), and for each event builds
//! one frame once and writes those bytes to every subscriber of the stream with vectored
//! writes. Per connection it keeps no WebSocket library state and builds no JSON per
//! delivery; queues are bounded and a subscriber past the bound is dropped. It checks no
//! token, sends no heartbeat and keeps no history (no recovery).
//!
//! ```text
//!  POST /api/events ─► loop i: parse body ─► Hub::publish (one lock per request:
//!        seq per stream, frame built once, Arc pushed to each loop's inbox) ─► wake
//!  loop j: inbox ─► subscribers of the stream ─► bounded queue ─► writev
//! ```

pub mod conn;
pub mod event_loop;
pub mod http;
pub mod hub;

use event_loop::{FloorLoop, WAKER};
use hub::Hub;
use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Default bound of a subscriber's outbound queue (the contract's default).
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 1 << 20;
/// Listen backlog.
const BACKLOG: i32 = 4096;

/// Validated floor settings.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    pub listen: SocketAddr,
    /// Number of mio loops, each with its own `SO_REUSEPORT` listener.
    pub threads: usize,
    pub max_queue_bytes: usize,
    /// Stop after this long (for scripts); `None` runs until killed.
    pub exit_after: Option<Duration>,
    /// Print counters this often; `None` prints only at exit.
    pub stats_every: Option<Duration>,
}

/// Why the floor could not start.
#[derive(Debug, Error)]
pub enum FloorError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot set up a loop: {0}")]
    Setup(std::io::Error),
}

fn listener(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    sock.set_nonblocking(true)?;
    Ok(TcpListener::from_std(sock.into()))
}

fn print_counters(hub: &Hub, start: Instant) {
    let c = &hub.counters;
    eprintln!(
        "floor: {:.0}s  connections {}  events {}  frames queued {}  slow drops {}",
        start.elapsed().as_secs_f64(),
        c.connections.load(Ordering::Relaxed),
        c.published.load(Ordering::Relaxed),
        c.frames_queued.load(Ordering::Relaxed),
        c.slow_drops.load(Ordering::Relaxed),
    );
}

/// Binds, starts the loops and serves until `exit_after` (or forever).
pub fn run(cfg: &FloorConfig) -> Result<(), FloorError> {
    let threads = cfg.threads.max(1);
    let first = listener(cfg.listen, threads > 1).map_err(|e| FloorError::Listen(cfg.listen, e))?;
    let bound = first
        .local_addr()
        .map_err(|e| FloorError::Listen(cfg.listen, e))?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(listener(bound, true).map_err(|e| FloorError::Listen(bound, e))?);
    }
    let mut polls = Vec::with_capacity(threads);
    let mut wakers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let poll = Poll::new().map_err(FloorError::Setup)?;
        wakers.push(Waker::new(poll.registry(), WAKER).map_err(FloorError::Setup)?);
        polls.push(poll);
    }
    let hub = Arc::new(Hub::new(wakers));
    for (idx, (poll, l)) in polls.into_iter().zip(listeners).enumerate() {
        let lp = FloorLoop::new(idx, poll, l, hub.clone(), cfg.max_queue_bytes)
            .map_err(FloorError::Setup)?;
        std::thread::Builder::new()
            .name(format!("floor-{idx}"))
            .spawn(move || {
                if let Err(e) = lp.run() {
                    log::error!("floor loop {idx} stopped: {e}");
                    std::process::exit(1);
                }
            })
            .map_err(FloorError::Setup)?;
    }
    eprintln!(
        "floor: listening on {bound} with {threads} loop{} (queue bound {} bytes); no auth, no heartbeat, no history",
        if threads == 1 { "" } else { "s" },
        cfg.max_queue_bytes
    );
    let start = Instant::now();
    let deadline = cfg.exit_after.map(|d| start + d);
    let tick = cfg.stats_every.unwrap_or(Duration::from_secs(3600));
    let mut next_tick = start + tick;
    loop {
        let now = Instant::now();
        if let Some(d) = deadline {
            if now >= d {
                print_counters(&hub, start);
                return Ok(());
            }
        }
        let wake = match deadline {
            Some(d) => next_tick.min(d),
            None => next_tick,
        };
        std::thread::sleep(wake.saturating_duration_since(now));
        if Instant::now() >= next_tick {
            if cfg.stats_every.is_some() {
                print_counters(&hub, start);
            }
            next_tick += tick;
        }
    }
}
