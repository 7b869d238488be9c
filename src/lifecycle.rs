//! The process's life: start (binding `--listen`, serving sockets systemd
//! passed, or taking over from an old process), then signals until the end.
//!
//! - SIGTERM / SIGINT: the graceful drain (docs/protocol.md §6); a second one
//!   exits at once.
//! - SIGUSR2: a hand-over to a new process (docs/protocol.md §11), on a thread
//!   of its own while the loops serve; one at a time. Committed, this process
//!   retires (1012 over `--restart-spread`) and exits 0; failed, it goes on.

use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::handover::exe::Invocation;
use crate::handover::sd_notify;
use crate::server::handover::Outcome;
use crate::server::inherit::{self, InheritError, Inherited, Origin};
use crate::server::{prepare, successor, Listeners, Server};

/// What `main` captures before anything else (before any thread exists).
pub struct Startup {
    pub invocation: Invocation,
    pub inherited: Option<Inherited>,
    pub started: Instant,
}

impl Startup {
    /// The executable path and arguments, and the inherited sockets (which
    /// changes the environment: call it while the process has one thread).
    pub fn capture() -> Result<Startup, InheritError> {
        let started = Instant::now();
        let invocation = Invocation::capture();
        let inherited = inherit::take()?;
        Ok(Startup {
            invocation,
            inherited,
            started,
        })
    }
}

/// How often the main thread looks at signals and at a hand-over under way.
const TICK: Duration = Duration::from_millis(20);

pub fn serve(config: Config, startup: Startup) -> ExitCode {
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGUSR2]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bistream: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let Startup {
        invocation,
        inherited,
        started,
    } = startup;
    let server = match start(config, inherited, started) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let drain_timeout = server.shared.config.drain_timeout;
    let mut under_way: Option<JoinHandle<Outcome>> = None;
    let mut stop: Option<i32> = None;
    // A SIGUSR2 that came while this process was starting (or being handed
    // to) was sent during a hand-over: ignored, as the contract says. Read
    // before the banner and READY=1, after which a SIGUSR2 counts.
    for sig in signals.pending() {
        if sig == SIGUSR2 {
            log::warn!("SIGUSR2 ignored: it arrived while this process was starting");
        } else {
            stop.get_or_insert(sig);
        }
    }
    banner(&server);
    sd_notify::tell("READY=1");
    loop {
        // A hand-over that has ended is reaped before new signals are read, so
        // that a SIGUSR2 after its last log line starts a new one.
        if under_way.as_ref().is_some_and(|j| j.is_finished()) {
            let outcome = under_way
                .take()
                .and_then(|j| j.join().ok())
                .unwrap_or(Outcome::Failed);
            if let Outcome::Committed { .. } = outcome {
                return retire(server, &mut signals);
            }
        }
        for sig in signals.pending() {
            match sig {
                SIGUSR2 if stop.is_some() => {
                    log::warn!("SIGUSR2 ignored: the server is shutting down");
                }
                SIGUSR2 if under_way.is_some() => {
                    server
                        .shared
                        .metrics
                        .handovers
                        .with_label_values(&["ignored"])
                        .inc();
                    log::warn!("SIGUSR2 ignored: a hand-over is already under way");
                }
                SIGUSR2 => match server.handover() {
                    Ok(h) => {
                        let inv = invocation.clone();
                        let spawned = std::thread::Builder::new()
                            .name("bistream-handover".into())
                            .spawn(move || h.run(&inv));
                        match spawned {
                            Ok(j) => under_way = Some(j),
                            Err(e) => log::error!("hand-over not started: no thread ({e})"),
                        }
                    }
                    Err(e) => log::error!("hand-over not started: cannot copy the sockets ({e})"),
                },
                sig => {
                    if under_way.is_some() && stop.is_none() {
                        log::info!(
                            "received {}: draining once the hand-over under way has ended",
                            name(sig)
                        );
                    }
                    stop.get_or_insert(sig);
                }
            }
        }
        if under_way.is_none() {
            if let Some(sig) = stop {
                log::info!("received {}: draining (up to {drain_timeout:?})", name(sig));
                return drain(server, &mut signals, drain_timeout);
            }
        }
        std::thread::sleep(TICK);
    }
}

fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGUSR2 => "SIGUSR2",
        _ => "a signal",
    }
}

/// Binds or takes the listeners and starts serving; a hand-over's new process
/// first takes the state over.
fn start(
    config: Config,
    inherited: Option<Inherited>,
    started: Instant,
) -> Result<Server, ExitCode> {
    let Some(inh) = inherited else {
        return crate::server::start(config).map_err(|e| {
            eprintln!("bistream: {e}");
            ExitCode::from(1)
        });
    };
    match (inh.origin, inh.channel) {
        (Origin::Handover, Some(channel)) => {
            successor::take_over(config, inh.sockets, channel, started).map_err(|e| {
                log::error!("hand-over: {e}; this process exits and the old one goes on serving");
                ExitCode::from(1)
            })
        }
        _ => {
            log::info!(
                "socket activation: serving {} inherited socket(s){}; --listen is not used",
                inh.sockets.len(),
                if inh.names.is_empty() {
                    String::new()
                } else {
                    format!(" (LISTEN_FDNAMES {})", inh.names.join(":"))
                }
            );
            let prepared =
                prepare(config, Listeners::Inherited(inh.sockets), None).map_err(|e| {
                    eprintln!("bistream: {e}");
                    ExitCode::from(1)
                })?;
            // docs/protocol.md §4: the open-server check, on the real addresses.
            if let Err(e) = prepared
                .shared()
                .config
                .check_open_listeners(prepared.addrs())
            {
                eprintln!("bistream: {e}");
                return Err(ExitCode::from(2));
            }
            prepared.launch().map_err(|e| {
                eprintln!("bistream: {e}");
                ExitCode::from(1)
            })
        }
    }
}

fn banner(server: &Server) {
    let config = &server.shared.config;
    for a in &server.addrs {
        log::info!("bistream {} listening on {a}", env!("CARGO_PKG_VERSION"));
    }
    let auth_mode = if config.auth.is_some() {
        "HS256 tokens required"
    } else {
        "OPEN (no tokens checked)"
    };
    log::info!(
        "{} event loop(s), max {} connections, auth: {auth_mode}, epoch {}, pid {}",
        config.threads,
        config.max_connections,
        server.shared.epoch,
        std::process::id()
    );
    if server.shared.verifier.is_none() {
        log::warn!(
            "NO JWT_SECRET_KEY: the server is running OPEN; anyone who can reach it may \
             subscribe to any stream and publish. Set JWT_SECRET_KEY for real deployments."
        );
    }
    if config.proxy_protocol {
        log::info!("PROXY protocol required on TCP listeners, from --trusted-proxies only");
    }
    if config.demo {
        log::info!("demo source on: publishing to loc-1, loc-2, loc-3 every second");
    }
}

/// After a committed hand-over: 1012 over the spread, then exit 0. The socket
/// files are left to the new process.
fn retire(mut server: Server, signals: &mut Signals) -> ExitCode {
    let config = &server.shared.config;
    let limit = config.restart_spread + 2 * config.close_linger + Duration::from_secs(2);
    server.retire();
    let deadline = Instant::now() + limit;
    loop {
        if server.wait(TICK) {
            break;
        }
        if signals.pending().any(|s| s != SIGUSR2) {
            log::info!(
                "signal during the hand-over's retirement: its clients are being closed already"
            );
        }
        if Instant::now() >= deadline {
            log::warn!("retirement took longer than {limit:?}; exiting");
            break;
        }
    }
    server.finish();
    log::info!("handed over; bye");
    ExitCode::SUCCESS
}

/// The graceful drain (docs/protocol.md §6).
fn drain(mut server: Server, signals: &mut Signals, drain_timeout: Duration) -> ExitCode {
    server.drain();
    let deadline = Instant::now() + drain_timeout + Duration::from_millis(500);
    loop {
        if server.wait(Duration::from_millis(50)) {
            break;
        }
        if signals.pending().any(|s| s != SIGUSR2) {
            log::warn!("second signal: exiting now");
            server.remove_socket_files();
            return ExitCode::from(1);
        }
        if Instant::now() >= deadline {
            log::warn!("drain timeout passed; exiting");
            break;
        }
    }
    server.finish();
    log::info!("drained; bye");
    ExitCode::SUCCESS
}
