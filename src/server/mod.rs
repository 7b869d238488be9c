//! Start-up and shutdown: bind, spawn the publisher and the event loops, drain.

mod close;
mod connection;
mod ctx;
mod event_loop;
mod fanout;
pub mod handover;
mod http_conn;
pub mod inherit;
mod listener;
mod per_ip;
mod proxy_conn;
mod retire;
mod socket;
pub mod successor;
mod timers;
mod ws_conn;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};

use crate::auth::Verifier;
use crate::config::{Config, ListenAddr};
use crate::engine::{EngineKind, RedisEngine, RedisSettings};
use crate::hub::channels::{LoopHandle, PublisherHandle, ToLoop, ToPublisher};
use crate::hub::publisher::{new_epoch, Publisher, PublisherConfig};
use crate::hub::streams::Imported;
use crate::hub::transfer::State;
use crate::metrics::Metrics;

pub use listener::{BindError, ListenSocket};

/// Messages a loop's inbox holds before the publisher waits for it.
const LOOP_INBOX: usize = 4096;
/// Publish/subscribe requests the publisher's inbox holds before loops answer 503.
const PUBLISHER_INBOX: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot set up an event loop: {0}")]
    Poll(std::io::Error),
    #[error("invalid JWT configuration: {0}")]
    Auth(#[from] crate::auth::SecretError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// What every loop reads and the main thread can flip.
pub struct Shared {
    /// The validated configuration, read-only after start-up.
    pub config: Config,
    /// The process-wide registry behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Token checks; `None` when the server runs open (no `JWT_SECRET_KEY`).
    pub verifier: Option<Verifier>,
    /// Accepted sockets, handshakes in progress included: what
    /// `--max-connections` is checked against, across loops.
    pub(crate) open: AtomicUsize,
    /// Set by the main thread on SIGTERM/SIGINT, before the loops are told.
    pub draining: AtomicBool,
    /// This process's epoch: the prefix of every stream's epoch.
    pub epoch: String,
    /// Connections per client address, across loops (`--max-connections-per-ip`).
    pub(crate) per_ip: per_ip::PerIp,
    /// `--engine redis`: where publishes go and whether Redis can be reached.
    pub(crate) engine: Option<Arc<crate::engine::RedisEngine>>,
    /// The previous metrics sample behind `GET /api/stats` (with `--console`).
    pub(crate) stats: crate::console::StatsWindow,
    /// Set while a hand-over fences and exports (docs/protocol.md §11):
    /// publishes get 503 `restarting`. Cleared again if the hand-over fails.
    pub(crate) handing_over: AtomicBool,
    /// Event loops whose connections have not all closed in a drain. A loop
    /// that is done keeps its listener and answers on it (503 while
    /// draining) until every loop is: with `SO_REUSEPORT`, closing a listener
    /// early resets the connections the kernel has queued on it.
    pub(crate) loops_busy: AtomicUsize,
}

impl Shared {
    /// Publishes are on hold for a hand-over.
    pub(crate) fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Acquire)
    }
}

pub struct Server {
    /// The addresses actually bound (port 0 resolved).
    pub addrs: Vec<ListenAddr>,
    pub shared: Arc<Shared>,
    /// The event-loop threads, joined by [`Server::wait`].
    loops: Vec<JoinHandle<()>>,
    /// Each loop's inbox, for the drain signal.
    handles: Vec<LoopHandle>,
    publisher_tx: PublisherHandle,
    publisher: Option<JoinHandle<()>>,
    /// Unix socket files this process created, removed on exit.
    unix_paths: Vec<PathBuf>,
    /// Every listening socket once, for a hand-over.
    sockets: Vec<ListenSocket>,
}

/// Where the listening sockets come from.
pub enum Listeners {
    /// Bind `--listen`.
    Bind,
    /// Serve these (socket activation, or a hand-over); `--listen` is not used.
    Inherited(Vec<ListenSocket>),
}

/// A server with everything set up but no thread started: nothing is
/// accepted yet. A hand-over's new process gets here, reports that it is
/// ready, and launches only once the old process has committed.
pub struct Prepared {
    addrs: Vec<ListenAddr>,
    shared: Arc<Shared>,
    loops: Vec<event_loop::EventLoop>,
    handles: Vec<LoopHandle>,
    publisher: Publisher,
    publisher_rx: crossbeam_channel::Receiver<ToPublisher>,
    publisher_tx: PublisherHandle,
    unix_paths: Vec<PathBuf>,
    sockets: Vec<ListenSocket>,
    imported: Option<Imported>,
}

pub fn start(config: Config) -> Result<Server, StartError> {
    prepare(config, Listeners::Bind, None)?.launch()
}

/// Binds (or takes) the listeners and builds the loops and the publisher,
/// starting from `state` when a hand-over brought one.
pub fn prepare(
    config: Config,
    listeners: Listeners,
    state: Option<State>,
) -> Result<Prepared, StartError> {
    let bound = match listeners {
        Listeners::Bind => {
            listener::bind_all(&config.listen, config.threads, config.unix_socket_mode)?
        }
        Listeners::Inherited(sockets) => listener::assign(sockets, config.threads)?,
    };
    // docs/protocol.md §11: new streams of this process must never get an
    // epoch an imported stream has (their epochs are `<prefix>-<id>`).
    let epoch = loop {
        let e = new_epoch();
        if state.as_ref().is_none_or(|s| !s.uses_epoch_prefix(&e)) {
            break e;
        }
    };
    let metrics = Arc::new(Metrics::new());
    let verifier = match &config.auth {
        Some(a) => Some(Verifier::new(&a.secret, a.previous.as_deref(), a.leeway)?),
        None => None,
    };
    let (tx, publisher_rx) = crossbeam_channel::bounded(PUBLISHER_INBOX);
    let publisher_tx = PublisherHandle::new(tx);
    // Each loop's poll and inbox first: the engine answers publishes on them.
    let mut handles = Vec::new();
    let mut parts = Vec::new();
    for listeners in bound.per_loop {
        let poll = Poll::new().map_err(StartError::Poll)?;
        let waker =
            Arc::new(Waker::new(poll.registry(), event_loop::WAKER).map_err(StartError::Poll)?);
        let (tx, rx) = crossbeam_channel::bounded(LOOP_INBOX);
        let notified = Arc::new(AtomicBool::new(false));
        handles.push(LoopHandle {
            tx,
            waker,
            notified: notified.clone(),
        });
        parts.push((poll, listeners, rx, notified));
    }
    let engine = match config.engine {
        EngineKind::Memory => None,
        EngineKind::Redis => Some(Arc::new(
            RedisEngine::start(
                RedisSettings {
                    urls: config.redis_urls.clone(),
                    probe_interval: config.engine_probe_interval,
                    io_timeout: config.redis_timeout,
                    history_size: config.history_size,
                    last_values: config.last_values,
                    ttl: config.history_ttl,
                    node: epoch.clone(),
                },
                handles.clone(),
                publisher_tx.clone(),
                metrics.clone(),
            )
            .map_err(StartError::Thread)?,
        )),
    };
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        verifier,
        open: AtomicUsize::new(0),
        draining: AtomicBool::new(false),
        epoch,
        per_ip: per_ip::PerIp::new(config.max_connections_per_ip),
        engine: engine.clone(),
        stats: crate::console::StatsWindow::new(&metrics),
        handing_over: AtomicBool::new(false),
        loops_busy: AtomicUsize::new(parts.len()),
        config,
    });
    let mut loops = Vec::new();
    for (id, (poll, listeners, rx, notified)) in parts.into_iter().enumerate() {
        let el = event_loop::EventLoop::new(
            id,
            poll,
            listeners,
            rx,
            notified,
            publisher_tx.clone(),
            shared.clone(),
        )
        .map_err(StartError::Poll)?;
        loops.push(el);
    }
    let mut publisher = Publisher::new(
        PublisherConfig {
            epoch: shared.epoch.clone(),
            limits: crate::hub::streams::Limits {
                history_size: shared.config.history_size,
                history_max_bytes: shared.config.history_max_bytes,
                last_values: shared.config.last_values,
                last_values_max_bytes: shared.config.last_values_max_bytes,
            },
            history_ttl: shared.config.history_ttl,
        },
        handles.clone(),
        metrics,
    );
    // With the Redis engine there is no state to carry: Redis holds it.
    let imported = match engine {
        Some(e) => {
            publisher = publisher.with_redis(e);
            None
        }
        None => state.map(|s| publisher.import(s)),
    };
    Ok(Prepared {
        addrs: bound.addrs,
        shared,
        loops,
        handles,
        publisher,
        publisher_rx,
        publisher_tx,
        unix_paths: bound.unix_paths,
        sockets: bound.sockets,
        imported,
    })
}

impl Prepared {
    pub fn addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// What the state of a hand-over brought in.
    pub fn imported(&self) -> Option<Imported> {
        self.imported
    }

    /// The Unix socket files of the inherited listeners are this process's
    /// to remove at exit (a hand-over from a process that bound them).
    pub fn own_socket_files(&mut self) {
        self.unix_paths = self
            .addrs
            .iter()
            .filter_map(|a| match a {
                ListenAddr::Unix(p) if p.is_absolute() => Some(p.clone()),
                _ => None,
            })
            .collect();
    }

    /// Starts the publisher and the loops: from here on connections are accepted.
    pub fn launch(self) -> Result<Server, StartError> {
        let Prepared {
            addrs,
            shared,
            loops,
            handles,
            publisher,
            publisher_rx,
            publisher_tx,
            unix_paths,
            sockets,
            imported: _,
        } = self;
        let publisher = std::thread::Builder::new()
            .name("bistream-publisher".into())
            .spawn(move || publisher.run(publisher_rx))
            .map_err(StartError::Thread)?;
        publisher_tx.set_thread(publisher.thread().clone());
        let mut joins = Vec::new();
        for el in loops {
            let name = format!("bistream-loop-{}", el.id());
            joins.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || el.run())
                    .map_err(StartError::Thread)?,
            );
        }
        if shared.config.demo {
            crate::demo::spawn(publisher_tx.clone()).map_err(StartError::Thread)?;
        }
        Ok(Server {
            addrs,
            shared,
            loops: joins,
            handles,
            publisher_tx,
            publisher: Some(publisher),
            unix_paths,
            sockets,
        })
    }
}

impl Server {
    /// Starts the graceful drain: upgrades get 503, `/readyz` turns 503, every
    /// client is flushed and closed with 1001.
    pub fn drain(&mut self) {
        // No hand-over from here on: the copies kept for one go, so that a
        // loop that finishes early closes its socket (an open `SO_REUSEPORT`
        // member nobody accepts on would keep the connections hashed to it).
        self.sockets.clear();
        self.shared.draining.store(true, Ordering::SeqCst);
        for h in &self.handles {
            h.send(ToLoop::Drain);
        }
    }

    /// Waits for the loops to finish, at most `timeout`. True when all did.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.loops.iter().all(|j| j.is_finished()) {
                for j in self.loops.drain(..) {
                    let _ = j.join();
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.loops.is_empty()
    }

    /// Stops the publisher and removes Unix socket files. Call after [`Self::wait`].
    pub fn finish(&mut self) {
        let _ = self.publisher_tx.try_send(ToPublisher::Shutdown);
        if let Some(p) = self.publisher.take() {
            let _ = p.join();
        }
        self.remove_socket_files();
    }

    pub fn remove_socket_files(&self) {
        for p in &self.unix_paths {
            let _ = std::fs::remove_file(p);
        }
    }

    /// After a hand-over the socket files are the new process's.
    pub fn forget_socket_files(&mut self) {
        self.unix_paths.clear();
    }

    /// Whether the Unix socket files are this process's (bound here, or
    /// handed over with that ownership), for the next process.
    pub fn owns_socket_files(&self) -> bool {
        !self.unix_paths.is_empty()
    }
}
