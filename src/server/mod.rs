//! Start-up and shutdown: bind, spawn the publisher and the event loops, drain.

mod close;
mod connection;
mod ctx;
mod event_loop;
mod fanout;
mod http_conn;
mod listener;
mod per_ip;
mod socket;
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
use crate::metrics::Metrics;

pub use listener::BindError;

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
}

pub fn start(config: Config) -> Result<Server, StartError> {
    let bound = listener::bind_all(&config.listen, config.threads, config.unix_socket_mode)?;
    let metrics = Arc::new(Metrics::new());
    let verifier = match &config.auth {
        Some(a) => Some(Verifier::new(&a.secret, a.previous.as_deref(), a.leeway)?),
        None => None,
    };
    let epoch = new_epoch();
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
    let publisher = Publisher::new(
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
    let publisher = match engine {
        Some(e) => publisher.with_redis(e),
        None => publisher,
    };
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
        addrs: bound.addrs,
        shared,
        loops: joins,
        handles,
        publisher_tx,
        publisher: Some(publisher),
        unix_paths: bound.unix_paths,
    })
}

impl Server {
    /// Starts the graceful drain: upgrades get 503, `/readyz` turns 503, every
    /// client is flushed and closed with 1001.
    pub fn drain(&self) {
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
}
