//! The parent of a run: spawns the subscriber workers, waits for their connections,
//! runs the publisher, prints progress, collects the workers' finals and builds the
//! summary.
//!
//! ```text
//!  parent ──spec──► worker 0..P (mio loops)   connect at --connect-rate, then `ready`
//!  parent: publisher thread ──POST /api/events──► server ──frames──► workers
//!  parent ──finish{published per stream}──► workers: drain, tally by seq, `final`
//!  parent: merge histograms and counters ─► table / JSON ─► SLO verdicts ─► exit code
//! ```

use crate::accounting::{ConflateTally, SnapshotTally};
use crate::cli::RunConfig;
use crate::procstat::{self, ProcSample};
use crate::publisher::{self, Live, Mode, Plan};
use crate::report::{
    render_json, render_table, ConnSummary, DeliverySummary, LatencySummary, PublishSummary,
    RunInfo, ServerSummary, Summary,
};
use crate::slo;
use crate::subscriber::churn::ChurnSpec;
use crate::units::{fmt_ns, fmt_si};
use crate::worker::{
    from_line, hist_from_hex, new_hist, to_line, Command as WorkerCommand, Final, Progress, Report,
    WorkerSpec,
};
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Exit code: the run was carried out and every objective held.
pub const EXIT_OK: i32 = 0;
/// Exit code: an objective was breached.
pub const EXIT_SLO_BREACH: i32 = 1;
/// Exit code: usage error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the run could not be carried out (no connection, a worker died).
pub const EXIT_FAILED: i32 = 3;
/// How often progress is printed and workers report.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Extra time granted beyond the computed phase lengths before giving up on workers.
const GRACE: Duration = Duration::from_secs(15);

/// Why a run could not be carried out.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot start a worker process: {0}")]
    Spawn(std::io::Error),
    #[error("worker {0} ended early: {1}")]
    WorkerEnded(usize, String),
    #[error("worker {0}: {1}")]
    WorkerFatal(usize, String),
    #[error("workers did not {0} in time")]
    Timeout(&'static str),
    #[error("no subscriber connection could be established")]
    NoConnection,
    #[error("cannot read the server: {0}")]
    Server(String),
}

pub(crate) enum Msg {
    Worker(usize, Report),
    WorkerEnded(usize, String),
    PublisherDone(publisher::Outcome),
}

pub(crate) struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Worker {
    pub(crate) fn send(&mut self, cmd: &WorkerCommand) {
        if let Some(stdin) = self.stdin.as_mut() {
            // A worker that is gone reports itself through its stdout reader.
            let _ = writeln!(stdin, "{}", to_line(cmd)).and_then(|_| stdin.flush());
        }
    }
}

/// Kills and reaps every worker still running (on every path out of a run).
pub(crate) struct Workers(pub(crate) Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            w.stdin = None; // EOF: a healthy worker exits by itself
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for w in &mut self.0 {
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                }
            }
        }
    }
}

pub(crate) fn spawn_workers(
    cfg: &RunConfig,
    churn: Option<ChurnSpec>,
    tx: &Sender<Msg>,
) -> Result<Workers, RunError> {
    let exe = std::env::current_exe().map_err(RunError::Spawn)?;
    let mut workers = Workers(Vec::with_capacity(cfg.procs));
    for index in 0..cfg.procs {
        let mut child = Command::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(RunError::Spawn)?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        let mut w = Worker { child, stdin };
        w.send(&WorkerCommand::Spec(Box::new(WorkerSpec {
            index,
            procs: cfg.procs,
            connections: cfg.connections,
            addr: cfg.target.addr,
            host_header: cfg.target.host_header.clone(),
            streams: cfg.streams.clone(),
            connect_rate: cfg.connect_rate / cfg.procs as f64,
            connect_timeout_ms: cfg.connect_timeout.as_millis() as u64,
            token: cfg.tokens.subscriber.clone(),
            source_ips: cfg.source_ips.clone(),
            progress_ms: PROGRESS_EVERY.as_millis() as u64,
            churn: churn.clone(),
            conflate_share: cfg.conflate_share,
            snapshot_share: cfg.snapshot_share,
        })));
        workers.0.push(w);
        let tx = tx.clone();
        let Some(stdout) = stdout else {
            return Err(RunError::WorkerEnded(index, "no stdout".into()));
        };
        std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let msg = match line {
                        Ok(l) => match from_line::<Report>(&l) {
                            Ok(r) => Msg::Worker(index, r),
                            Err(e) => Msg::WorkerEnded(index, e.to_string()),
                        },
                        Err(e) => Msg::WorkerEnded(index, e.to_string()),
                    };
                    let ended = matches!(msg, Msg::WorkerEnded(..));
                    if tx.send(msg).is_err() || ended {
                        return;
                    }
                }
                let _ = tx.send(Msg::WorkerEnded(index, "exited".into()));
            })
            .map_err(RunError::Spawn)?;
    }
    Ok(workers)
}

/// The progress line's state.
pub(crate) struct Ticker {
    quiet: bool,
    start: Instant,
    next: Instant,
    last_at: Instant,
    last_deliveries: u64,
    last_accepted: u64,
    progress: Vec<Progress>,
    interval: Histogram<u64>,
}

impl Ticker {
    pub(crate) fn new(procs: usize, quiet: bool) -> Self {
        let now = Instant::now();
        Ticker {
            quiet,
            start: now,
            next: now + PROGRESS_EVERY,
            last_at: now,
            last_deliveries: 0,
            last_accepted: 0,
            progress: vec![Progress::default(); procs],
            interval: new_hist(),
        }
    }

    fn record(&mut self, w: usize, p: Progress) {
        if let Ok(h) = hist_from_hex(&p.interval_hist) {
            let _ = self.interval.add(&h);
        }
        if let Some(slot) = self.progress.get_mut(w) {
            *slot = p;
        }
    }

    /// A worker's connect phase ended: its counts are final until its next progress.
    pub(crate) fn ready(&mut self, w: usize, established: u64, failed: u64) {
        if let Some(slot) = self.progress.get_mut(w) {
            slot.established = established;
            slot.failed = failed;
        }
    }

    fn timeout(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    pub(crate) fn maybe_print(&mut self, phase: &str, requested: u64, accepted: u64) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + PROGRESS_EVERY;
        let secs = (now - self.last_at).as_secs_f64().max(1e-3);
        self.last_at = now;
        let up: u64 = self.progress.iter().map(|p| p.established).sum();
        let failed: u64 = self.progress.iter().map(|p| p.failed).sum();
        let closed: u64 = self.progress.iter().map(|p| p.closed).sum();
        let deliveries: u64 = self.progress.iter().map(|p| p.deliveries).sum();
        let d_rate = deliveries.saturating_sub(self.last_deliveries) as f64 / secs;
        let p_rate = accepted.saturating_sub(self.last_accepted) as f64 / secs;
        self.last_deliveries = deliveries;
        self.last_accepted = accepted;
        let p99 = if self.interval.is_empty() {
            "-".to_string()
        } else {
            fmt_ns(self.interval.value_at_quantile(0.99))
        };
        self.interval.reset();
        if !self.quiet {
            eprintln!(
                "[{:6.1}s] {phase:<8} up {up}/{requested}  failed {failed}  closed {closed}  published {}/s  deliveries {}/s  p99 {p99}",
                self.start.elapsed().as_secs_f64(),
                fmt_si(p_rate),
                fmt_si(d_rate),
            );
        }
    }
}

/// Runs a validated configuration; answers the process exit code.
pub fn run(cfg: &RunConfig) -> i32 {
    match execute(cfg) {
        Ok(summary) => finish(cfg, summary),
        Err(e) => {
            eprintln!("bistream-loadtest: {e}");
            EXIT_FAILED
        }
    }
}

fn finish(cfg: &RunConfig, mut summary: Summary) -> i32 {
    summary.slo = slo::evaluate(&cfg.slo, &summary);
    let table = render_table(&summary);
    if cfg.json {
        eprint!("{table}");
        println!("{}", render_json(&summary));
    } else {
        print!("{table}");
    }
    if summary.connections.established == 0 {
        eprintln!("bistream-loadtest: {}", RunError::NoConnection);
        return EXIT_FAILED;
    }
    let breaches: Vec<_> = summary.slo.iter().filter(|v| !v.ok).collect();
    if breaches.is_empty() {
        EXIT_OK
    } else {
        for b in breaches {
            eprintln!(
                "bistream-loadtest: SLO breached: {} (measured {})",
                b.objective, b.measured
            );
        }
        EXIT_SLO_BREACH
    }
}

/// Reads the server under test; `None` (with a warning) when it cannot be read.
fn read_server(pid: Option<u32>) -> Option<ProcSample> {
    let pid = pid?;
    match procstat::sample(pid) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("cannot read the server (pid {pid}) in /proc: {e}");
            None
        }
    }
}

fn execute(cfg: &RunConfig) -> Result<Summary, RunError> {
    let server_before = read_server(cfg.server_pid);
    let (tx, rx) = mpsc::channel();
    let mut workers = spawn_workers(cfg, None, &tx)?;
    let mut ticker = Ticker::new(cfg.procs, cfg.quiet);
    let live = Arc::new(Live::default());

    // 1. Connect.
    let connect_for = Duration::from_secs_f64(cfg.connections as f64 / cfg.connect_rate)
        + cfg.connect_timeout
        + GRACE;
    let mut ready = vec![false; cfg.procs];
    let deadline = Instant::now() + connect_for;
    let mut established = 0;
    while ready.iter().any(|r| !r) {
        match next(&rx, &ticker, deadline) {
            Wait::Msg(Msg::Worker(
                w,
                Report::Ready {
                    established: e,
                    failed,
                },
            )) => {
                ready[w] = true;
                established += e;
                ticker.ready(w, e, failed);
            }
            Wait::Msg(other) => handle_other(other, &mut ticker)?,
            Wait::Tick => {}
            Wait::Deadline => return Err(RunError::Timeout("connect")),
        }
        ticker.maybe_print("connect", cfg.connections, 0);
    }

    // 2. Hold (`--idle`): let the server settle with every connection open.
    if let Some(settle) = cfg.idle {
        let deadline = Instant::now() + settle;
        loop {
            match next(&rx, &ticker, deadline) {
                Wait::Msg(other) => handle_other(other, &mut ticker)?,
                Wait::Tick => {}
                Wait::Deadline => break,
            }
            ticker.maybe_print("idle", cfg.connections, 0);
        }
    }
    let server_connected = read_server(cfg.server_pid);

    // 3. Publish (nothing to publish to when nobody is connected, or when idle).
    let outcome = if established == 0 || cfg.idle.is_some() {
        publisher::Outcome {
            per_stream: vec![0; cfg.streams.len()],
            ..Default::default()
        }
    } else {
        let plan = Plan {
            addr: cfg.target.addr,
            host_header: cfg.target.host_header.clone(),
            token: cfg.tokens.publisher.clone(),
            streams: cfg.streams.clone(),
            event_type: cfg.event_type.clone(),
            batch: cfg.batch,
            payload: cfg.payload,
            keys: cfg.keys,
            values: cfg.keys > 0 || cfg.conflate_share > 0.0,
            rate: cfg.rate,
            connections: cfg.publishers,
            warmup: cfg.warmup,
            mode: cfg.mode,
        };
        let ptx = tx.clone();
        let plive = live.clone();
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let out = publisher::run(&plan, &plive);
                let _ = ptx.send(Msg::PublisherDone(out));
            })
            .map_err(RunError::Spawn)?;
        // The publisher bounds itself (timeouts per request, a fixed number of events).
        let publish_for = cfg.warmup
            + match cfg.mode {
                Mode::Rate(d) => d,
                Mode::Burst(n) => Duration::from_secs(
                    publisher::REQUEST_TIMEOUT
                        .as_secs()
                        .saturating_mul(n.div_ceil(cfg.batch as u64)),
                ),
            }
            + GRACE;
        let deadline = Instant::now() + publish_for;
        loop {
            match next(&rx, &ticker, deadline) {
                Wait::Msg(Msg::PublisherDone(out)) => break out,
                Wait::Msg(other) => handle_other(other, &mut ticker)?,
                Wait::Tick => {}
                Wait::Deadline => return Err(RunError::Timeout("finish publishing")),
            }
            let phase = if live.measuring.load(Ordering::Relaxed) {
                "measure"
            } else {
                "warm-up"
            };
            ticker.maybe_print(
                phase,
                cfg.connections,
                live.accepted.load(Ordering::Relaxed),
            );
        }
    };

    // 4. Drain and collect.
    let drain = if established == 0 || cfg.idle.is_some() {
        Duration::ZERO
    } else {
        cfg.drain
    };
    for w in &mut workers.0 {
        w.send(&WorkerCommand::Finish {
            published: outcome.per_stream.clone(),
            drain_ms: drain.as_millis() as u64,
            last_values: if cfg.conflate_share > 0.0 {
                outcome.last_values.clone()
            } else {
                Vec::new()
            },
        });
    }
    let mut finals: Vec<Option<Final>> = vec![None; cfg.procs];
    let deadline = Instant::now() + drain + GRACE;
    while finals.iter().any(Option::is_none) {
        match next(&rx, &ticker, deadline) {
            Wait::Msg(Msg::Worker(w, Report::Final(f))) => finals[w] = Some(*f),
            Wait::Msg(Msg::WorkerEnded(w, _)) if finals.get(w).is_some_and(Option::is_some) => {}
            Wait::Msg(other) => handle_other(other, &mut ticker)?,
            Wait::Tick => {}
            Wait::Deadline => return Err(RunError::Timeout("report")),
        }
        ticker.maybe_print(
            "drain",
            cfg.connections,
            live.accepted.load(Ordering::Relaxed),
        );
    }
    // Read the server while the connections are still open, then let them go.
    let server_end = read_server(cfg.server_pid);
    for w in &mut workers.0 {
        w.send(&WorkerCommand::Close);
    }
    let finals: Vec<Final> = finals.into_iter().flatten().collect();
    let mut summary = aggregate(cfg, &finals, &outcome);
    if let (Some(pid), Some(before), Some(connected), Some(end)) =
        (cfg.server_pid, server_before, server_connected, server_end)
    {
        summary.server = Some(ServerSummary::new(
            pid,
            before,
            connected,
            end,
            summary.connections.established,
            summary.deliveries.total,
        ));
    }
    Ok(summary)
}

/// What waiting for workers gave.
pub(crate) enum Wait {
    Msg(Msg),
    /// Time to print progress.
    Tick,
    /// The phase's deadline passed (or every sender is gone).
    Deadline,
}

/// The next message, a progress tick, or the deadline.
pub(crate) fn next(rx: &Receiver<Msg>, ticker: &Ticker, deadline: Instant) -> Wait {
    let now = Instant::now();
    if now >= deadline {
        return Wait::Deadline;
    }
    let wait = ticker.timeout().min(deadline - now);
    match rx.recv_timeout(wait) {
        Ok(m) => Wait::Msg(m),
        Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => Wait::Deadline,
        Err(RecvTimeoutError::Timeout) => Wait::Tick,
        Err(RecvTimeoutError::Disconnected) => Wait::Deadline,
    }
}

pub(crate) fn handle_other(msg: Msg, ticker: &mut Ticker) -> Result<(), RunError> {
    match msg {
        Msg::Worker(w, Report::Progress(p)) => {
            ticker.record(w, p);
            Ok(())
        }
        Msg::Worker(w, Report::Fatal { message }) => Err(RunError::WorkerFatal(w, message)),
        Msg::Worker(w, Report::Final(_)) => {
            Err(RunError::WorkerEnded(w, "reported before finish".into()))
        }
        Msg::Worker(_, Report::Ready { .. } | Report::Paused) => Ok(()),
        Msg::WorkerEnded(w, why) => Err(RunError::WorkerEnded(w, why)),
        Msg::PublisherDone(_) => Ok(()),
    }
}

/// Merges the workers' finals and the publisher's outcome into the summary.
pub fn aggregate(cfg: &RunConfig, finals: &[Final], out: &publisher::Outcome) -> Summary {
    let mut latency = new_hist();
    let mut connect = new_hist();
    let mut conns = ConnSummary {
        requested: cfg.connections,
        ..Default::default()
    };
    let mut d = DeliverySummary::default();
    let mut closes = std::collections::BTreeMap::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    for f in finals {
        if let Ok(h) = hist_from_hex(&f.latency_hist) {
            let _ = latency.add(&h);
        }
        if let Ok(h) = hist_from_hex(&f.connect_hist) {
            let _ = connect.add(&h);
        }
        conns.established += f.established;
        conns.closed_by_server += f.closed_by_server;
        for (k, v) in &f.failed {
            *conns.failed.entry(k.clone()).or_default() += v;
        }
        for (code, n) in &f.closes {
            *closes.entry(*code).or_default() += n;
        }
        d.total += f.deliveries;
        d.measured += f.measured;
        d.expected += f.expected;
        d.lost += f.lost;
        d.extra += f.extra;
        d.order_violations += f.order_violations;
        d.duplicates += f.duplicates;
        d.gaps += f.gaps;
        d.imprecise |= f.imprecise;
        d.bad_messages += f.bad_messages;
        d.untimed += f.untimed;
        if f.measured > 0 {
            first = first.min(f.first_measured_ns);
            last = last.max(f.last_measured_ns);
        }
    }
    if last > first {
        d.per_second = d.measured as f64 / ((last - first) as f64 / 1e9);
    }
    let (mode, mode_value, duration_s) = match (cfg.idle, cfg.mode) {
        (Some(settle), _) => ("idle", 0, settle.as_secs_f64()),
        (None, Mode::Rate(dur)) => ("rate", cfg.rate.round() as u64, dur.as_secs_f64()),
        (None, Mode::Burst(n)) => ("burst", n, 0.0),
    };
    Summary {
        run: RunInfo {
            target: cfg.target.host_header.clone(),
            connections: cfg.connections,
            channels: cfg.channels.iter().map(|c| (*c).to_owned()).collect(),
            locations: cfg.locations,
            streams: cfg.streams.len(),
            procs: cfg.procs,
            mode: mode.into(),
            mode_value,
            batch: cfg.batch,
            publishers: cfg.publishers,
            duration_s,
            warmup_s: cfg.warmup.as_secs_f64(),
        },
        connections: conns,
        connect: LatencySummary::from_hist(&connect),
        published: PublishSummary {
            events: out.events,
            warmup_events: out.warmup_events,
            requests: out.requests,
            errors: out.errors.clone(),
            unconfirmed_events: out.unconfirmed_events,
            unsent_events: out.unsent_events,
            events_per_second: if out.measured_secs > 0.0 {
                out.measured_events as f64 / out.measured_secs
            } else {
                0.0
            },
            target_per_second: match (cfg.idle, cfg.mode) {
                (None, Mode::Rate(_)) => cfg.rate,
                _ => 0.0,
            },
            max_lag_ns: out.max_lag_ns,
        },
        deliveries: d,
        latency: LatencySummary::from_hist(&latency),
        closes,
        server: None,
        conflation: (cfg.conflate_share > 0.0).then(|| {
            let mut t = ConflateTally::default();
            finals.iter().for_each(|f| t.add(&f.conflation));
            t
        }),
        snapshots: (cfg.snapshot_share > 0.0).then(|| {
            let mut t = SnapshotTally::default();
            finals.iter().for_each(|f| t.add(&f.snapshots));
            t
        }),
        slo: Vec::new(),
    }
}
