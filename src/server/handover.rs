//! The old process's side of a hand-over on `SIGUSR2` (docs/protocol.md §11),
//! run on a thread of its own while the loops go on serving:
//!
//! 1. start the binary at the path the server was started from, with the same
//!    arguments and environment, passing every listening socket (descriptors
//!    3…) and one end of a socket pair (the last descriptor), with
//!    `LISTEN_FDS` and `BISTREAM_HANDOVER=1`;
//! 2. wait for its `Hello` (its configuration is valid, it holds the sockets);
//! 3. fence: publishes get 503 `restarting`, each loop passes a fence, and
//!    the publisher exports the state once every fence is in (`hub::export`);
//!    sent as `State` (or `NoState` when the engine keeps no state here);
//! 4. wait for `Prepared` (state imported, server built, not yet accepting);
//! 5. `Commit`, tell systemd the new main pid, and retire the loops (stop
//!    accepting, 1012 over `--restart-spread`).
//!
//! Any failure before `Commit` has gone out (the binary does not start, exits,
//! says `Failed`, or misses `--handover-timeout`) kills the new process and
//! lifts the fence: this process goes on as before, and says why in its log.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};

use crate::handover::exe::Invocation;
use crate::handover::sd_notify;
use crate::handover::wire::{self, Msg, COMMIT_OWNS_SOCKET_FILES};
use crate::hub::channels::{LoopHandle, PublisherHandle, ToLoop, ToPublisher};
use crate::hub::export::HandoverMsg;
use crate::server::{Server, Shared};

/// Numbers the attempts, so that a late fence of a failed one counts for nothing.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);

/// The first descriptor a new process inherits (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// How a hand-over ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new process (this pid) serves; this one retires and exits 0.
    Committed { pid: u32 },
    /// This process goes on serving.
    Failed,
}

/// What the hand-over thread needs of the server.
pub struct Handover {
    shared: Arc<Shared>,
    loops: Vec<LoopHandle>,
    publisher: PublisherHandle,
    /// A copy of every listening socket, for the new process.
    sockets: Vec<OwnedFd>,
    owns_socket_files: bool,
    /// `false` for an engine that keeps its state outside the process (the
    /// Redis engine): no fence, no export, `NoState`.
    transfer_state: bool,
    started: Instant,
}

impl Server {
    /// Everything a hand-over needs, copied so that it can run on its own thread.
    pub fn handover(&self) -> std::io::Result<Handover> {
        let sockets = self
            .sockets
            .iter()
            .map(|s| s.duplicate())
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Handover {
            shared: self.shared.clone(),
            loops: self.handles.clone(),
            publisher: self.publisher_tx.clone(),
            sockets,
            owns_socket_files: self.owns_socket_files(),
            // With the Redis engine the state lives in Redis: nothing to fence
            // or carry, the new process fetches what it needs.
            transfer_state: self.shared.engine.is_none(),
            started: Instant::now(),
        })
    }

    /// After a committed hand-over: close every client with 1012 over
    /// `--restart-spread`; the listening sockets stay the new process's.
    pub fn retire(&mut self) {
        let spread = self.shared.config.restart_spread;
        self.shared.draining.store(true, Ordering::SeqCst);
        for h in &self.handles {
            h.send(ToLoop::Retire(spread));
        }
        self.forget_socket_files();
        // The new process holds the sockets; this one needs no copy any more.
        self.sockets.clear();
    }
}

/// A step that went wrong, for the log line.
struct Why(String);

impl<E: std::fmt::Display> From<E> for Why {
    fn from(e: E) -> Why {
        Why(e.to_string())
    }
}

impl Handover {
    /// Runs the whole sequence; logs and counts the outcome.
    pub fn run(self, inv: &Invocation) -> Outcome {
        let attempt = ATTEMPTS.fetch_add(1, Ordering::Relaxed) + 1;
        let timeout = self.shared.config.handover_timeout;
        let deadline = self.started + timeout;
        let metrics = self.shared.metrics.clone();
        let Some(exe) = inv.exe.clone() else {
            log::error!(
                "hand-over refused: the path this server was started from ({:?}) could not be \
                 resolved at start-up; this process goes on serving",
                inv.argv0
            );
            metrics.handovers.with_label_values(&["failed"]).inc();
            return Outcome::Failed;
        };
        log::info!(
            "SIGUSR2: handing over to a new {} (same arguments and environment; timeout {:?})",
            exe.display(),
            timeout
        );
        let mut child: Option<Child> = None;
        let fenced = std::cell::Cell::new(false);
        let result = self.exchange(&exe, inv, attempt, deadline, &mut child, &fenced);
        match result {
            Ok(pid) => {
                let took = self.started.elapsed();
                metrics.handovers.with_label_values(&["completed"]).inc();
                metrics.handover_duration.set(took.as_secs_f64());
                log::info!(
                    "hand-over complete after {} ms: pid {pid} serves now; this process (pid {}) \
                     stops accepting, closes its clients with 1012 over {:?}, and exits",
                    took.as_millis(),
                    std::process::id(),
                    self.shared.config.restart_spread
                );
                Outcome::Committed { pid }
            }
            Err(Why(why)) => {
                if fenced.get() {
                    self.shared.handing_over.store(false, Ordering::SeqCst);
                    send_until(
                        &self.publisher,
                        ToPublisher::Handover(HandoverMsg::Resume { attempt }),
                        Instant::now() + Duration::from_secs(5),
                    );
                }
                let mut why = why;
                if let Some(mut c) = child {
                    // It may be exiting already (the channel closed): say how.
                    let until = Instant::now() + Duration::from_millis(200);
                    let status = loop {
                        match c.try_wait() {
                            Ok(Some(status)) => break Some(status),
                            Ok(None) if Instant::now() < until => {
                                std::thread::sleep(Duration::from_millis(5))
                            }
                            _ => break None,
                        }
                    };
                    match status {
                        Some(status) => why.push_str(&format!(" (new process {status})")),
                        None => {
                            let _ = c.kill();
                            why.push_str(" (new process killed)");
                        }
                    }
                    let _ = c.wait();
                }
                metrics.handovers.with_label_values(&["failed"]).inc();
                log::error!(
                    "hand-over FAILED after {} ms: {why}; this process goes on serving{}",
                    self.started.elapsed().as_millis(),
                    if fenced.get() { " and publishing" } else { "" }
                );
                Outcome::Failed
            }
        }
    }

    fn exchange(
        &self,
        exe: &std::path::Path,
        inv: &Invocation,
        attempt: u64,
        deadline: Instant,
        child: &mut Option<Child>,
        fenced: &std::cell::Cell<bool>,
    ) -> Result<u32, Why> {
        let (mut ours, theirs) = UnixStream::pair()?;
        let n = self.sockets.len();
        let mut mappings = Vec::with_capacity(n + 1);
        for (i, fd) in self.sockets.iter().enumerate() {
            mappings.push(FdMapping {
                parent_fd: fd.try_clone()?,
                child_fd: FIRST_FD + i as i32,
            });
        }
        mappings.push(FdMapping {
            parent_fd: theirs.into(),
            child_fd: FIRST_FD + n as i32,
        });
        let mut cmd = Command::new(exe);
        cmd.args(&inv.args)
            // What systemd gave this process is not the new one's to read.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("LISTEN_FDS_FIRST_FD")
            .env("LISTEN_FDS", (n + 1).to_string())
            .env(crate::handover::MARKER_VAR, "1");
        cmd.fd_mappings(mappings)?;
        let spawned = cmd
            .spawn()
            .map_err(|e| Why(format!("cannot start {}: {e}", exe.display())))?;
        // The command holds our copies of the child's descriptors: close them,
        // so that the child's exit shows as the end of the channel.
        drop(cmd);
        let pid = spawned.id();
        *child = Some(spawned);
        log::info!("hand-over: new process pid {pid} started");

        match wire::read(&mut ours, deadline, 64).map_err(|e| step("Hello", e))? {
            Msg::Hello { pid: said } if said == pid => {}
            Msg::Hello { pid: said } => {
                return Err(Why(format!(
                    "the new process says it is pid {said}, not {pid}"
                )))
            }
            other => return Err(unexpected("Hello", &other)),
        }

        let t_fence = Instant::now();
        let state = if self.transfer_state {
            fenced.set(true);
            Msg::State(self.fence_and_export(attempt, deadline)?)
        } else {
            Msg::NoState
        };
        let bytes = match &state {
            Msg::State(b) => b.len(),
            _ => 0,
        };
        let t_send = Instant::now();
        wire::write(&mut ours, &state, deadline).map_err(|e| step("sending the state", e))?;
        drop(state);
        log::info!(
            "hand-over: {bytes} bytes of state sent to pid {pid} in {} ms (publishes on hold for {} ms so far)",
            t_send.elapsed().as_millis(),
            t_fence.elapsed().as_millis()
        );
        self.shared.metrics.handover_state_bytes.set(bytes as i64);

        match wire::read(&mut ours, deadline, 64 * 1024).map_err(|e| step("Prepared", e))? {
            Msg::Prepared => {}
            Msg::Failed(why) => return Err(Why(format!("the new process could not start: {why}"))),
            other => return Err(unexpected("Prepared", &other)),
        }
        let flags = if self.owns_socket_files {
            COMMIT_OWNS_SOCKET_FILES
        } else {
            0
        };
        // systemd must hear MAINPID before the new process's READY=1 (with
        // NotifyAccess=main it drops a READY from a pid that is not yet the
        // main one). The new process says READY only after it reads Commit,
        // so naming it first orders the two datagrams.
        sd_notify::tell(&format!("MAINPID={pid}"));
        // The point of no return: once the new process has this, it serves.
        if let Err(e) = wire::write(&mut ours, &Msg::Commit { flags }, deadline) {
            sd_notify::tell(&format!("MAINPID={}", std::process::id()));
            return Err(step("sending Commit", e));
        }
        Ok(pid)
    }

    /// Publishes on hold, a fence through every loop, and the publisher's
    /// export once all of them are in: the encoded state.
    fn fence_and_export(&self, attempt: u64, deadline: Instant) -> Result<Vec<u8>, Why> {
        let t0 = Instant::now();
        let (reply, rx) = crossbeam_channel::bounded(1);
        if !send_until(
            &self.publisher,
            ToPublisher::Handover(HandoverMsg::Begin { attempt, reply }),
            deadline,
        ) {
            return Err(Why("the publisher's inbox stayed full".into()));
        }
        self.shared.handing_over.store(true, Ordering::SeqCst);
        for l in &self.loops {
            l.send(ToLoop::Fence(attempt));
        }
        let exported = rx
            .recv_deadline(deadline)
            .map_err(|_| Why("timed out waiting for every loop's fence and the export".into()))?;
        log::info!(
            "hand-over: every loop fenced; exported {} stream(s), {} history event(s), {} last \
             value(s): {} bytes in {} ms ({} ms after the fence)",
            exported.streams,
            exported.history,
            exported.last_values,
            exported.bytes.len(),
            exported.took.as_millis(),
            t0.elapsed().as_millis()
        );
        Ok(exported.bytes)
    }
}

fn step(what: &str, e: wire::WireError) -> Why {
    Why(format!("waiting for {what}: {e}"))
}

fn unexpected(want: &str, got: &Msg) -> Why {
    Why(format!(
        "expected {want}, the new process sent {}",
        got.name()
    ))
}

/// Sends to the publisher, retrying while its inbox is full, until `deadline`.
fn send_until(publisher: &PublisherHandle, mut msg: ToPublisher, deadline: Instant) -> bool {
    loop {
        match publisher.try_send(msg) {
            Ok(()) => return true,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return false,
            Err(crossbeam_channel::TrySendError::Full(m)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
