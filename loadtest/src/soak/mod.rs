//! `bistream-loadtest soak`: connection churn under a steady publish rate, and whether
//! the server's memory, descriptors and history come back to where they were.
//!
//! ```text
//! connect N ─► warm-up: publish + churn ─► pause churn (all closed) ─► settle ─► BASELINE
//!           ─► churn for --duration ──────► pause churn (all closed) ─► settle ─► FINAL
//! every --sample-every: RSS and fds (/proc/PID), bistream_history_bytes (GET /metrics)
//! verdict: FINAL against BASELINE within tolerances; no loss, no server close, no failure
//! ```
//!
//! Both readings are taken with no harness connection open and the publisher still
//! publishing, after the same settle time, so they compare like with like; the
//! baseline comes after a warm-up of the same churn, so that the allocator's high
//! water and the history's plateau are reached before it.
//!
//! - [`probe`]: the readings (`/proc`, `/metrics`)
//! - [`verdict`]: readings and counters against their tolerances

pub mod probe;
pub mod verdict;

use crate::cli::RunConfig;
use crate::procstat;
use crate::publisher::{self, Live, Mode, Plan};
use crate::run::{
    aggregate, handle_other, next, spawn_workers, Msg, RunError, Ticker, Wait, EXIT_FAILED,
    EXIT_OK, EXIT_SLO_BREACH,
};
use crate::subscriber::churn::ChurnSpec;
use crate::units::fmt_bytes;
use crate::worker::{Command as WorkerCommand, Final, Progress, Report};
use probe::Sample;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdict::{Check, Counters, Reading, Tolerances};

/// Extra time granted to workers to pause, report, and to the publisher to stop.
const GRACE: Duration = Duration::from_secs(30);

/// A validated soak.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Target, streams, connections (the churned population), rate, tokens, …
    pub run: RunConfig,
    pub server_pid: u32,
    pub churn: ChurnSpec,
    /// Disconnects a second over all workers (for the report).
    pub churn_rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub settle: Duration,
    pub sample_every: Duration,
    pub tolerances: Tolerances,
}

/// What a soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub series: Vec<Sample>,
    pub baseline: Sample,
    #[serde(rename = "final")]
    pub last: Sample,
    pub counters: Counters,
    /// Churned connections by kind.
    pub churned: BTreeMap<String, u64>,
    /// Churned closes the server did not answer within 2 s.
    pub close_timeouts: u64,
    pub tolerances: Tolerances,
    pub checks: Vec<Check>,
    pub ok: bool,
}

/// The state of a soak while it runs.
struct Soak<'a> {
    cfg: &'a SoakConfig,
    rx: Receiver<Msg>,
    ticker: Ticker,
    /// Latest progress of each worker.
    progress: Vec<Progress>,
    ready: Vec<bool>,
    paused: Vec<bool>,
    finals: Vec<Option<Final>>,
    published: Option<publisher::Outcome>,
    t0: Instant,
    next_sample: Instant,
    series: Vec<Sample>,
}

impl Soak<'_> {
    /// Takes a reading now.
    fn sample(&mut self, phase: &'static str) -> Result<Sample, RunError> {
        let p = procstat::sample(self.cfg.server_pid)
            .map_err(|e| RunError::Server(format!("pid {}: {e}", self.cfg.server_pid)))?;
        let history = probe::scrape(self.cfg.run.target.addr, &self.cfg.run.target.host_header)
            .map_err(|e| log::warn!("metrics: {e}"))
            .ok()
            .and_then(|text| probe::prom_value(&text, probe::HISTORY_BYTES));
        let s = Sample {
            t_s: self.t0.elapsed().as_secs_f64(),
            phase,
            rss_bytes: p.rss_bytes,
            fds: p.fds,
            history_bytes: history,
            open: self.progress.iter().map(|p| p.open).sum(),
            churned: self.progress.iter().map(|p| p.churned).sum(),
        };
        if !self.cfg.run.quiet {
            eprintln!("{}", sample_line(&s));
        }
        self.series.push(s.clone());
        Ok(s)
    }

    /// Handles messages and takes the periodic readings until `deadline`, or until
    /// `done` holds.
    fn run_until(
        &mut self,
        deadline: Instant,
        phase: &'static str,
        done: &dyn Fn(&Self) -> bool,
    ) -> Result<bool, RunError> {
        loop {
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= self.next_sample {
                self.next_sample = now + self.cfg.sample_every;
                self.sample(phase)?;
            }
            if now >= deadline {
                return Ok(false);
            }
            match next(&self.rx, &self.ticker, deadline.min(self.next_sample)) {
                Wait::Msg(Msg::Worker(w, Report::Progress(p))) => {
                    if let Some(slot) = self.progress.get_mut(w) {
                        *slot = p;
                    }
                }
                Wait::Msg(Msg::Worker(w, Report::Ready { .. })) => self.ready[w] = true,
                Wait::Msg(Msg::Worker(w, Report::Paused)) => {
                    self.paused[w] = true;
                    // Paused means nothing is open, whatever the last progress said.
                    if let Some(p) = self.progress.get_mut(w) {
                        p.open = 0;
                    }
                }
                Wait::Msg(Msg::Worker(w, Report::Final(f))) => self.finals[w] = Some(*f),
                Wait::Msg(Msg::WorkerEnded(w, _))
                    if self.finals.get(w).is_some_and(Option::is_some) => {}
                Wait::Msg(Msg::PublisherDone(out)) => self.published = Some(out),
                Wait::Msg(other) => handle_other(other, &mut self.ticker)?,
                Wait::Tick | Wait::Deadline => {}
            }
        }
    }

    /// Runs `phase` for `length`.
    fn phase(&mut self, phase: &'static str, length: Duration) -> Result<(), RunError> {
        self.run_until(Instant::now() + length, phase, &|_| false)
            .map(|_| ())
    }

    /// Pauses the churn in every worker and waits until each has closed everything.
    fn pause(&mut self, workers: &mut crate::run::Workers) -> Result<(), RunError> {
        self.paused.iter_mut().for_each(|p| *p = false);
        for w in &mut workers.0 {
            w.send(&WorkerCommand::Churn { on: false });
        }
        let all = |s: &Self| s.paused.iter().all(|p| *p);
        if self.run_until(Instant::now() + GRACE, "pausing", &all)? {
            Ok(())
        } else {
            Err(RunError::Timeout("pause"))
        }
    }
}

fn sample_line(s: &Sample) -> String {
    format!(
        "[{:7.1}s] {:<9} open {:>6}  churned {:>8}  RSS {:>10}  fds {:>6}  history {}",
        s.t_s,
        s.phase,
        s.open,
        s.churned,
        fmt_bytes(s.rss_bytes as f64),
        s.fds,
        s.history_bytes.map_or("-".to_owned(), fmt_bytes)
    )
}

fn reading(s: &Sample) -> Reading {
    Reading {
        rss_bytes: s.rss_bytes,
        fds: s.fds,
        history_bytes: s.history_bytes,
    }
}

fn execute(cfg: &SoakConfig) -> Result<SoakReport, RunError> {
    let run = &cfg.run;
    let (tx, rx) = mpsc::channel();
    let mut workers = spawn_workers(run, Some(cfg.churn.clone()), &tx)?;
    let now = Instant::now();
    let mut soak = Soak {
        cfg,
        rx,
        ticker: Ticker::new(run.procs, true),
        progress: vec![Progress::default(); run.procs],
        ready: vec![false; run.procs],
        paused: vec![false; run.procs],
        finals: vec![None; run.procs],
        published: None,
        t0: now,
        next_sample: now,
        series: Vec::new(),
    };

    // Connect the population.
    let connect_for = Duration::from_secs_f64(run.connections as f64 / run.connect_rate)
        + run.connect_timeout
        + GRACE;
    let all_ready = |s: &Soak| s.ready.iter().all(|r| *r);
    if !soak.run_until(Instant::now() + connect_for, "connect", &all_ready)? {
        return Err(RunError::Timeout("connect"));
    }

    // Publish steadily until told to stop.
    let live = Arc::new(Live::default());
    let plan = Plan {
        addr: run.target.addr,
        host_header: run.target.host_header.clone(),
        token: run.tokens.publisher.clone(),
        streams: run.streams.clone(),
        event_type: run.event_type.clone(),
        batch: run.batch,
        payload: run.payload,
        keys: 0,
        values: false,
        rate: run.rate,
        connections: run.publishers,
        warmup: Duration::ZERO,
        mode: Mode::Rate(Duration::from_secs(7 * 24 * 3600)),
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

    soak.phase("warm-up", cfg.warmup)?;
    soak.pause(&mut workers)?;
    soak.phase("settle", cfg.settle)?;
    let baseline = soak.sample("baseline")?;
    for w in &mut workers.0 {
        w.send(&WorkerCommand::Churn { on: true });
    }
    soak.phase("churn", cfg.duration)?;
    soak.pause(&mut workers)?;
    soak.phase("settle", cfg.settle)?;
    let last = soak.sample("final")?;

    // The harness's own accounting, then the publisher's.
    for w in &mut workers.0 {
        w.send(&WorkerCommand::Finish {
            published: vec![0; run.streams.len()],
            drain_ms: 0,
            last_values: Vec::new(),
        });
    }
    let all_final = |s: &Soak| s.finals.iter().all(Option::is_some);
    if !soak.run_until(Instant::now() + GRACE, "report", &all_final)? {
        return Err(RunError::Timeout("report"));
    }
    for w in &mut workers.0 {
        w.send(&WorkerCommand::Close);
    }
    live.stop.store(true, Ordering::Relaxed);
    let stopped = |s: &Soak| s.published.is_some();
    let wait = publisher::REQUEST_TIMEOUT + GRACE;
    if !soak.run_until(Instant::now() + wait, "stopping", &stopped)? {
        return Err(RunError::Timeout("stop publishing"));
    }
    let out = soak.published.take().unwrap_or_default();
    let finals: Vec<Final> = soak.finals.iter().flatten().cloned().collect();
    let summary = aggregate(run, &finals, &out);
    let mut churned = BTreeMap::new();
    let mut close_timeouts = 0;
    for f in &finals {
        for (k, v) in &f.churned {
            *churned.entry(k.clone()).or_default() += v;
        }
        close_timeouts += f.close_timeouts;
    }
    let counters = Counters {
        churned: churned.values().sum(),
        connect_failures: summary.connections.failed_total(),
        closed_by_server: summary.connections.closed_by_server,
        lost: summary.deliveries.lost,
        order_violations: summary.deliveries.order_violations,
        publish_errors: out.errors.values().sum(),
        published: out.events,
    };
    let checks = verdict::judge(
        &reading(&baseline),
        &reading(&last),
        &cfg.tolerances,
        &counters,
    );
    Ok(SoakReport {
        series: soak.series,
        baseline,
        last,
        counters,
        churned,
        close_timeouts,
        tolerances: cfg.tolerances,
        ok: checks.iter().all(|c| c.ok),
        checks,
    })
}

/// The report as text: the series, the two readings, the checks, the verdict.
pub fn render(cfg: &SoakConfig, r: &SoakReport) -> String {
    let mut o = String::new();
    let run = &cfg.run;
    let _ = writeln!(
        o,
        "bistream-loadtest soak  target {}  server pid {}  {} connections churned at {}/s ({} kinds), {} events/s on {} stream{}",
        run.target.host_header,
        cfg.server_pid,
        run.connections,
        cfg.churn_rate,
        cfg.churn
            .kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join("/"),
        run.rate,
        run.streams.len(),
        if run.streams.len() == 1 { "" } else { "s" },
    );
    let _ = writeln!(
        o,
        "phases       warm-up {:?}, settle {:?}, churn {:?}, settle {:?}; a reading every {:?}",
        cfg.warmup, cfg.settle, cfg.duration, cfg.settle, cfg.sample_every
    );
    let _ = writeln!(o, "series");
    for s in &r.series {
        let _ = writeln!(o, "  {}", sample_line(s));
    }
    let _ = writeln!(o, "baseline     {}", sample_line(&r.baseline));
    let _ = writeln!(o, "final        {}", sample_line(&r.last));
    let kinds: Vec<String> = r.churned.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        o,
        "churn        {} connections ({}), {} close handshakes unanswered in 2s",
        r.counters.churned,
        kinds.join(", "),
        r.close_timeouts
    );
    for (i, c) in r.checks.iter().enumerate() {
        let _ = writeln!(
            o,
            "{}{:<7}{:<17}{}  (allowed {})",
            if i == 0 {
                "verdict      "
            } else {
                "             "
            },
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.measured,
            c.allowed
        );
    }
    let _ = writeln!(
        o,
        "soak         {}",
        if r.ok {
            "OK: every reading came back within its tolerance"
        } else {
            "FAILED: see the checks marked FAIL"
        }
    );
    o
}

/// Runs a validated soak; answers the exit code (0 ok, 1 growth or a failed check,
/// 3 when it could not be carried out).
pub fn run(cfg: &SoakConfig) -> i32 {
    match execute(cfg) {
        Ok(report) => {
            let text = render(cfg, &report);
            if cfg.run.json {
                eprint!("{text}");
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{text}");
            }
            if report.ok {
                EXIT_OK
            } else {
                EXIT_SLO_BREACH
            }
        }
        Err(e) => {
            eprintln!("bistream-loadtest soak: {e}");
            EXIT_FAILED
        }
    }
}
