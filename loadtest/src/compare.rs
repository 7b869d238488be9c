//! `bistream-loadtest compare`: the floor server and bistream, each started fresh for
//! every run, driven by the same client with the same scenario, alternately, N times;
//! then the medians of each figure and their ratio (bistream / floor). The table of
//! the performance issues is one command.
//!
//! ```text
//! for each scenario, for run 1..=N (order floor, bistream; then bistream, floor; …):
//!   pick a free port ─► start the server (pinned to the server CPUs) ─► wait for TCP
//!   ─► bistream-loadtest --url … --server-pid PID --json (pinned to the client CPUs)
//!   ─► figures of the run ─► stop the server
//! medians per server and figure ─► ratio ─► Markdown table (or --json)
//! ```
//!
//! Pinning: the compare process sets its own affinity to the server's CPUs, spawns the
//! server (a child inherits its parent's mask, before it runs a single instruction),
//! then does the same for the client, and goes back to its own mask.

use crate::units::{fmt_bytes, fmt_ns, fmt_si};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The scenarios of the performance table: name, what it is, client arguments.
pub const SCENARIOS: &[(&str, &str, &str)] = &[
    ("idle", "10,000 idle", "-c 10000 --idle --settle 5s"),
    (
        "10k-10",
        "10,000 x 10 events/s",
        "-c 10000 --rate 10 --publishers 4 --duration 10s --warmup 2s",
    ),
    (
        "1k-100",
        "1,000 x 100 events/s",
        "-c 1000 --rate 100 --publishers 4 --duration 10s --warmup 1s",
    ),
    (
        "1k-10",
        "1,000 x 10 events/s",
        "-c 1000 --rate 10 --duration 10s --warmup 1s",
    ),
    (
        "burst",
        "10,000 burst",
        "-c 10000 --burst 300 --batch 100 --publishers 2 --warmup 1s",
    ),
];

/// How long a server may take to accept TCP connections after its start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between runs, for the sockets of the last one to go.
const BETWEEN_RUNS: Duration = Duration::from_millis(500);

/// Why a comparison could not be made.
#[derive(Debug, Error)]
pub enum CompareError {
    #[error("unknown scenario `{0}` (known: idle, 10k-10, 1k-100, 1k-10, burst; or give client arguments after --)")]
    UnknownScenario(String),
    #[error("bad CPU list `{0}` (write 0, 0-3 or 0,2)")]
    BadCpuList(String),
    #[error(
        "the bistream binary {0} does not exist (build it with `make build`, or pass --bistream)"
    )]
    NoBinary(PathBuf),
    #[error("cannot start {what}: {err}")]
    Spawn { what: String, err: io::Error },
    #[error("{what} did not accept connections within {START_TIMEOUT:?}{stderr}")]
    NotStarted { what: String, stderr: String },
    #[error("cannot set the CPU affinity: {0}")]
    Affinity(io::Error),
}

/// The two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Server {
    Floor,
    Bistream,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Floor => "floor",
            Server::Bistream => "bistream",
        }
    }
}

/// A validated comparison.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub runs: usize,
    /// (name, client arguments).
    pub scenarios: Vec<(String, Vec<String>)>,
    pub threads: usize,
    /// CPUs of the server and of the client, when pinned.
    pub pin: Option<(Vec<usize>, Vec<usize>)>,
    pub bistream: PathBuf,
    pub bistream_args: Vec<String>,
    pub floor_args: Vec<String>,
    pub json: bool,
    /// Where each run's client JSON is written, when given.
    pub save: Option<PathBuf>,
}

/// The scenarios named in `list` (comma-separated) and, when `extra` is not empty, a
/// `custom` one with those client arguments.
pub fn scenarios(
    list: Option<&str>,
    extra: &[String],
) -> Result<Vec<(String, Vec<String>)>, CompareError> {
    let names: Vec<String> = match list {
        Some(l) => l
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        None if !extra.is_empty() => Vec::new(),
        None => SCENARIOS.iter().map(|(n, _, _)| (*n).to_owned()).collect(),
    };
    let mut out = Vec::new();
    for name in names {
        let (_, _, args) = SCENARIOS
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| CompareError::UnknownScenario(name.clone()))?;
        out.push((name, args.split_whitespace().map(str::to_owned).collect()));
    }
    if !extra.is_empty() {
        out.push(("custom".to_owned(), extra.to_vec()));
    }
    Ok(out)
}

/// Parses `0`, `0-3`, `0,2,4-5`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, CompareError> {
    let bad = || CompareError::BadCpuList(s.to_owned());
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let c: usize = part.parse().map_err(|_| bad())?;
                (c, c)
            }
        };
        if lo > hi || hi >= CpuSet::MAX_CPU {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    if cpus.is_empty() {
        return Err(bad());
    }
    Ok(cpus)
}

/// CPUs this process may run on.
pub fn available_cpus() -> usize {
    sched_getaffinity(None).map_or(1, |s| s.count() as usize)
}

/// The figures of one client run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub established: u64,
    pub deliveries: u64,
    pub expected: u64,
    pub lost: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub deliveries_per_s: Option<f64>,
    pub cpu_us_per_delivery: Option<f64>,
    pub rss_per_connection_bytes: Option<f64>,
}

impl Figures {
    /// Reads the client's `--json` summary.
    pub fn from_summary(j: &Value) -> Figures {
        let u = |v: &Value| v.as_u64().unwrap_or(0);
        let ms = |v: &Value| v.as_f64().map(|ns| ns / 1e6);
        let idle = j["run"]["mode"] == "idle";
        Figures {
            established: u(&j["connections"]["established"]),
            deliveries: u(&j["deliveries"]["total"]),
            expected: u(&j["deliveries"]["expected"]),
            lost: u(&j["deliveries"]["lost"]),
            p50_ms: ms(&j["latency"]["p50_ns"]),
            p99_ms: ms(&j["latency"]["p99_ns"]),
            deliveries_per_s: j["deliveries"]["per_second"]
                .as_f64()
                .filter(|r| !idle && *r > 0.0),
            cpu_us_per_delivery: j["server"]["cpu_us_per_delivery"].as_f64(),
            // Only an idle run holds its connections for a settle time before the reading.
            rss_per_connection_bytes: j["server"]["rss_per_connection_bytes"]
                .as_f64()
                .filter(|_| idle),
        }
    }
}

/// One figure of the table: its label, how to read it from a run, how to print it.
struct Figure {
    key: &'static str,
    label: &'static str,
    get: fn(&Figures) -> Option<f64>,
    show: fn(f64) -> String,
}

const FIGURES: &[Figure] = &[
    Figure {
        key: "rss_per_connection_bytes",
        label: "RSS per connection",
        get: |f| f.rss_per_connection_bytes,
        show: fmt_bytes,
    },
    Figure {
        key: "p50_ms",
        label: "p50 latency",
        get: |f| f.p50_ms,
        show: |ms| fmt_ns((ms * 1e6) as u64),
    },
    Figure {
        key: "p99_ms",
        label: "p99 latency",
        get: |f| f.p99_ms,
        show: |ms| fmt_ns((ms * 1e6) as u64),
    },
    Figure {
        key: "cpu_us_per_delivery",
        label: "server CPU per delivery",
        get: |f| f.cpu_us_per_delivery,
        show: |us| fmt_ns((us * 1e3) as u64),
    },
    Figure {
        key: "deliveries_per_s",
        label: "deliveries/s",
        get: |f| f.deliveries_per_s,
        show: |r| format!("{}/s", fmt_si(r)),
    },
];

/// The median (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Sets the calling thread's CPU mask (children spawned from it inherit it).
fn pin_to(cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// Spawns `cmd`, on `cpus` when given.
fn spawn_on(cmd: &mut Command, cpus: Option<&[usize]>, what: &str) -> Result<Child, CompareError> {
    let own = match cpus {
        Some(c) => {
            let own = sched_getaffinity(None).map_err(|e| CompareError::Affinity(e.into()))?;
            pin_to(c).map_err(CompareError::Affinity)?;
            Some(own)
        }
        None => None,
    };
    let child = cmd.spawn();
    if let Some(own) = own {
        sched_setaffinity(None, &own).map_err(|e| CompareError::Affinity(e.into()))?;
    }
    child.map_err(|err| CompareError::Spawn {
        what: what.to_owned(),
        err,
    })
}

/// A free loopback port (the kernel's pick; released just before the server binds it).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A started server; killed when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes what the environment could change about a run (auth, limits, an SLO).
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("BISTREAM_") || k.starts_with("JWT_SECRET") {
            cmd.env_remove(k);
        }
    }
}

fn start_server(cfg: &CompareConfig, server: Server) -> Result<Running, CompareError> {
    let self_exe = std::env::current_exe().map_err(|err| CompareError::Spawn {
        what: "the floor".into(),
        err,
    })?;
    let port = free_port().map_err(|err| CompareError::Spawn {
        what: server.name().into(),
        err,
    })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let threads = cfg.threads.to_string();
    let mut cmd = match server {
        Server::Floor => {
            let mut c = Command::new(self_exe);
            c.args([
                "floor",
                "--listen",
                &addr.to_string(),
                "--threads",
                &threads,
            ]);
            c.args(["--exit-after", "2h"]).args(&cfg.floor_args);
            c
        }
        Server::Bistream => {
            let mut c = Command::new(&cfg.bistream);
            c.args(["--listen", &addr.to_string(), "--threads", &threads]);
            if !cfg
                .bistream_args
                .iter()
                .any(|a| a.starts_with("--log-level"))
            {
                c.args(["--log-level", "warn"]);
            }
            c.args(&cfg.bistream_args);
            c
        }
    };
    clean_env(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let cpus = cfg.pin.as_ref().map(|(s, _)| s.as_slice());
    let child = spawn_on(&mut cmd, cpus, server.name())?;
    let mut running = Running { child, addr };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            // Drain its stderr from now on, so a chatty server never blocks on the pipe.
            if let Some(mut err) = running.child.stderr.take() {
                std::thread::spawn(move || {
                    let _ = io::copy(&mut err, &mut io::sink());
                });
            }
            return Ok(running);
        }
        let exited = matches!(running.child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() >= deadline {
            let mut text = String::new();
            if let Some(mut err) = running.child.stderr.take() {
                let _ = running.child.kill();
                let _ = err.read_to_string(&mut text);
            }
            let text = text.trim();
            return Err(CompareError::NotStarted {
                what: format!("{} on {addr}", server.name()),
                stderr: if text.is_empty() {
                    String::new()
                } else {
                    format!(": {text}")
                },
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one run gave: its figures, or why it failed.
type RunResult = Result<Figures, String>;

fn run_client(cfg: &CompareConfig, srv: &Running, args: &[String]) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(["--url", &srv.addr.to_string()])
        .args(["--server-pid", &srv.child.id().to_string()])
        .args(["--json", "--quiet"])
        .args(args);
    clean_env(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpus = cfg.pin.as_ref().map(|(_, c)| c.as_slice());
    let child = spawn_on(&mut cmd, cpus, "the client").map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let code = out.status.code().unwrap_or(-1);
    let json: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    match (code, json) {
        (0 | 1, Some(j)) => Ok(j),
        (_, _) => Err(format!(
            "client exited {code}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// One run of one server on one scenario.
fn run_once(cfg: &CompareConfig, server: Server, args: &[String], tag: &str) -> RunResult {
    let srv = start_server(cfg, server).map_err(|e| e.to_string())?;
    // Let it finish starting (threads, allocations) before it is read.
    std::thread::sleep(Duration::from_millis(300));
    let j = run_client(cfg, &srv, args)?;
    drop(srv);
    if let Some(dir) = &cfg.save {
        let path = dir.join(format!("{tag}.json"));
        if let Err(e) = std::fs::write(&path, j.to_string()) {
            log::warn!("cannot write {}: {e}", path.display());
        }
    }
    Ok(Figures::from_summary(&j))
}

/// The medians of one server on one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    pub runs: Vec<Figures>,
    pub failed: Vec<String>,
    pub median: BTreeMap<&'static str, f64>,
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub args: Vec<String>,
    pub floor: Side,
    pub bistream: Side,
    /// bistream median / floor median, per figure.
    pub ratio: BTreeMap<&'static str, f64>,
}

fn side(results: Vec<RunResult>) -> Side {
    let mut s = Side::default();
    for r in results {
        match r {
            Ok(f) => s.runs.push(f),
            Err(e) => s.failed.push(e),
        }
    }
    for fig in FIGURES {
        let values: Vec<f64> = s.runs.iter().filter_map(fig.get).collect();
        if let Some(m) = median(&values) {
            s.median.insert(fig.key, m);
        }
    }
    s
}

/// Runs every scenario; answers the results.
pub fn compare(cfg: &CompareConfig, progress: &mut dyn FnMut(&str)) -> Vec<ScenarioResult> {
    let stamp = std::process::id();
    let mut out = Vec::new();
    for (name, args) in &cfg.scenarios {
        let mut results: BTreeMap<Server, Vec<RunResult>> = BTreeMap::new();
        for i in 0..cfg.runs {
            let order = if i % 2 == 0 {
                [Server::Floor, Server::Bistream]
            } else {
                [Server::Bistream, Server::Floor]
            };
            for server in order {
                let tag = format!("{stamp}-{name}-{}-{}", server.name(), i + 1);
                let r = run_once(cfg, server, args, &tag);
                progress(&match &r {
                    Ok(f) => format!(
                        "  {name:8} {:8} run {}: {} established, {} of {} delivered, {}",
                        server.name(),
                        i + 1,
                        f.established,
                        f.deliveries,
                        f.expected,
                        FIGURES
                            .iter()
                            .filter_map(|fig| (fig.get)(f).map(|v| format!(
                                "{} {}",
                                fig.label,
                                (fig.show)(v)
                            )))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Err(e) => format!("  {name:8} {:8} run {}: FAILED: {e}", server.name(), i + 1),
                });
                results.entry(server).or_default().push(r);
                std::thread::sleep(BETWEEN_RUNS);
            }
        }
        let floor = side(results.remove(&Server::Floor).unwrap_or_default());
        let bistream = side(results.remove(&Server::Bistream).unwrap_or_default());
        let ratio = FIGURES
            .iter()
            .filter_map(|fig| {
                let (b, f) = (bistream.median.get(fig.key)?, floor.median.get(fig.key)?);
                (*f != 0.0).then(|| (fig.key, b / f))
            })
            .collect();
        out.push(ScenarioResult {
            name: name.clone(),
            args: args.clone(),
            floor,
            bistream,
            ratio,
        });
    }
    out
}

/// The Markdown table of the results.
pub fn render_table(results: &[ScenarioResult]) -> String {
    let mut o = String::from(
        "| scenario | figure | floor | bistream | bistream / floor |\n|---|---|---|---|---|\n",
    );
    for r in results {
        let what = SCENARIOS
            .iter()
            .find(|(n, _, _)| *n == r.name)
            .map_or_else(|| r.args.join(" "), |(_, w, _)| (*w).to_owned());
        for fig in FIGURES {
            let (Some(f), Some(b)) = (r.floor.median.get(fig.key), r.bistream.median.get(fig.key))
            else {
                continue;
            };
            let ratio = r
                .ratio
                .get(fig.key)
                .map_or("-".to_owned(), |x| format!("{x:.2}"));
            o.push_str(&format!(
                "| {what} | {} | {} | {} | {ratio} |\n",
                fig.label,
                (fig.show)(*f),
                (fig.show)(*b)
            ));
        }
        let lost = |s: &Side| s.runs.iter().map(|f| f.lost).sum::<u64>();
        let runs = |s: &Side| format!("{} ok, {} failed", s.runs.len(), s.failed.len());
        o.push_str(&format!(
            "| {what} | runs; lost deliveries | {}; {} | {}; {} | |\n",
            runs(&r.floor),
            lost(&r.floor),
            runs(&r.bistream),
            lost(&r.bistream)
        ));
    }
    o
}

/// The heading line: how the runs were made.
pub fn render_heading(cfg: &CompareConfig) -> String {
    let pin = match &cfg.pin {
        Some((s, c)) => format!("server on CPU {s:?}, client on CPU {c:?}"),
        None => "not pinned".to_owned(),
    };
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!(
        "# bistream-loadtest compare: medians of {} runs, --threads {}, {pin}, {} CPUs, load average {load} at start; bistream = {}",
        cfg.runs,
        cfg.threads,
        available_cpus(),
        cfg.bistream.display()
    )
}

/// Whether a path names an executable file that exists.
pub fn check_binary(p: &Path) -> Result<(), CompareError> {
    if p.is_file() {
        Ok(())
    } else {
        Err(CompareError::NoBinary(p.to_owned()))
    }
}

/// Runs the comparison and prints it; answers the exit code.
pub fn run(cfg: &CompareConfig) -> i32 {
    if let Some(dir) = &cfg.save {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!(
                "bistream-loadtest compare: cannot create {}: {e}",
                dir.display()
            );
            return crate::run::EXIT_USAGE;
        }
    }
    let heading = render_heading(cfg);
    eprintln!("{heading}");
    let results = compare(cfg, &mut |line| eprintln!("{line}"));
    if cfg.json {
        let doc = serde_json::json!({
            "runs": cfg.runs,
            "threads": cfg.threads,
            "pin": cfg.pin.as_ref().map(|(s, c)| serde_json::json!({"server": s, "client": c})),
            "bistream": cfg.bistream,
            "scenarios": results,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("{heading}\n");
        print!("{}", render_table(&results));
    }
    let failed = results
        .iter()
        .any(|r| !r.floor.failed.is_empty() || !r.bistream.failed.is_empty());
    if failed {
        crate::run::EXIT_FAILED
    } else {
        crate::run::EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_inherit_the_pinned_mask() {
        let own = sched_getaffinity(None).unwrap();
        let Some(cpu) = (0..CpuSet::MAX_CPU).find(|c| own.is_set(*c)) else {
            return;
        };
        let mut cmd = Command::new("sleep");
        cmd.arg("2");
        let mut child = spawn_on(&mut cmd, Some(&[cpu]), "sleep").unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        assert_eq!(allowed, cpu.to_string());
        // This thread is back on its own mask.
        assert_eq!(sched_getaffinity(None).unwrap().count(), own.count());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("2-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn scenario_lists() {
        let all = scenarios(None, &[]).unwrap();
        assert_eq!(all.len(), SCENARIOS.len());
        assert_eq!(all[0].1[..2], ["-c".to_string(), "10000".to_string()]);
        let extra = vec!["-c".to_string(), "50".to_string()];
        let custom = scenarios(None, &extra).unwrap();
        assert_eq!(custom, vec![("custom".to_string(), extra.clone())]);
        let both = scenarios(Some("idle,burst"), &extra).unwrap();
        assert_eq!(
            both.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["idle", "burst", "custom"]
        );
        assert!(matches!(
            scenarios(Some("nope"), &[]),
            Err(CompareError::UnknownScenario(_))
        ));
    }

    #[test]
    fn medians_and_figures() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let j = serde_json::json!({
            "run": {"mode": "rate"},
            "connections": {"established": 10},
            "deliveries": {"total": 100, "expected": 100, "lost": 0, "per_second": 50.0},
            "latency": {"p50_ns": 1_500_000, "p99_ns": 9_000_000},
            "server": {"cpu_us_per_delivery": 7.5, "rss_per_connection_bytes": 900.0}
        });
        let f = Figures::from_summary(&j);
        assert_eq!((f.p50_ms, f.p99_ms), (Some(1.5), Some(9.0)));
        assert_eq!(f.cpu_us_per_delivery, Some(7.5));
        assert_eq!(f.rss_per_connection_bytes, None); // only idle runs settle
        let mut idle = j.clone();
        idle["run"]["mode"] = "idle".into();
        let f = Figures::from_summary(&idle);
        assert_eq!(f.rss_per_connection_bytes, Some(900.0));
        assert_eq!(f.deliveries_per_s, None);
    }

    #[test]
    fn table_has_ratios() {
        let mut floor = Side::default();
        floor.median.insert("p99_ms", 10.0);
        floor.runs.push(Figures::default());
        let mut bistream = Side::default();
        bistream.median.insert("p99_ms", 12.0);
        bistream.runs.push(Figures {
            lost: 2,
            ..Default::default()
        });
        let r = ScenarioResult {
            name: "1k-100".into(),
            args: vec![],
            floor,
            bistream,
            ratio: [("p99_ms", 1.2)].into_iter().collect(),
        };
        let t = render_table(&[r]);
        assert!(
            t.contains("| 1,000 x 100 events/s | p99 latency | 10.0ms | 12.0ms | 1.20 |"),
            "{t}"
        );
        assert!(
            t.contains("| runs; lost deliveries | 1 ok, 0 failed; 0 | 1 ok, 0 failed; 2 | |"),
            "{t}"
        );
    }
}
