//! Command-line flags (every one also an environment variable where it makes sense)
//! and their validation into a `RunConfig`. Every usage error exits 2.

use crate::compare::{self, CompareConfig};
use crate::contract::{self, MAX_PUBLISH_BODY, MAX_PUBLISH_EVENTS};
use crate::floor::FloorConfig;
use crate::procstat;
use crate::publisher::Mode;
use crate::slo::{self, Objective, SloError};
use crate::soak::verdict::{Allowance, Tolerances};
use crate::soak::SoakConfig;
use crate::streams::{self, Stream, StreamError};
use crate::subscriber::churn::{ChurnKind, ChurnSpec};
use crate::target::{self, Target, TargetError};
use crate::tokens::{self, TokenError, Tokens};
use crate::units::{parse_duration, parse_size};
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use thiserror::Error;

/// Connections one worker process opens at most by default (the machine's hard
/// open-file limit is 20,000; the rest is headroom).
pub const CONNECTIONS_PER_PROC: u64 = 15_000;
/// Connections per loopback source address before another one is used (the ephemeral
/// port range holds about 28,000 ports per source address).
pub const CONNECTIONS_PER_SOURCE_IP: u64 = 25_000;
/// Open files a worker needs besides its connections.
const FD_HEADROOM: u64 = 64;
/// Bytes of one event in a body besides its padding (upper bound).
const EVENT_OVERHEAD: usize = 256;
/// Most events in one request.
pub const MAX_BATCH: usize = MAX_PUBLISH_EVENTS;
/// Most publisher connections (each is a thread).
pub const MAX_PUBLISHERS: usize = 64;
/// Most keys (`--keys`); the last value of each travels to every worker.
pub const MAX_KEYS: usize = 10_000;
/// Most (stream, key) pairs whose last values travel to the workers.
pub const MAX_KEY_STREAMS: usize = 200_000;

#[derive(Debug, Parser)]
#[command(
    name = "bistream-loadtest",
    version,
    about = "Load generator for bistream: WebSocket subscribers, HTTP publisher, latency histograms, SLO gate, floor server",
    long_about = "Opens --connections WebSocket subscribers on the bistream endpoints, publishes through \
POST /api/events at --rate (or a --burst), records send-to-receive latency, losses and order by seq, \
and prints a table (or --json). --slo makes it a CI gate: exit 1 on a breach, 2 on usage errors, \
3 when the run could not be carried out. Targets must be loopback unless --allow-remote.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the floor server: a minimal mio server of the same protocol, the machine's own limit to compare bistream with
    Floor(FloorArgs),
    /// Run the floor and bistream alternately, fresh for each run, under the same scenarios; print medians and ratios
    Compare(CompareArgs),
    /// Connection churn under a steady publish rate; exit 1 unless the server's RSS, descriptors and history bytes come back to their baseline
    Soak(SoakArgs),
    /// Internal: a subscriber worker process (spec on stdin, reports on stdout)
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server under test: ws://HOST:PORT, http://HOST:PORT or HOST:PORT (loopback only unless --allow-remote)
    #[arg(
        long,
        env = "BISTREAM_LOADTEST_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
    /// Allow a target that is not a loopback address
    #[arg(long)]
    pub allow_remote: bool,
    /// Subscriber connections in all
    #[arg(
        short = 'c',
        long,
        env = "BISTREAM_LOADTEST_CONNECTIONS",
        default_value_t = 1000
    )]
    pub connections: u64,
    /// Channels: a count (the first N of dashboard, revenue-intelligence, bot-performance, business-intelligence, ai-concierge, analytics-advanced), `all`, or a comma-separated list of ids
    #[arg(long, default_value = "1")]
    pub channels: String,
    /// Locations per channel: {prefix}1 ..= {prefix}N
    #[arg(long, default_value_t = 1)]
    pub locations: usize,
    /// Prefix of location ids
    #[arg(long, default_value = "loc-")]
    pub location_prefix: String,
    /// New connections a second, over all worker processes
    #[arg(long, default_value_t = 5000.0)]
    pub connect_rate: f64,
    /// How long one connection may take to get BI_CONNECTION_ESTABLISHED
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Subscriber worker processes [default: ceil(connections / 15000)]
    #[arg(long)]
    pub procs: Option<usize>,
    /// Events a second published (in the measured phase, and during warm-up)
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Instead of a rate: publish this many events as fast as the server takes them (after the warm-up)
    #[arg(long, conflicts_with = "idle")]
    pub burst: Option<u64>,
    /// Publish nothing: connect, hold the connections for --settle, and report (with --server-pid) the server's RSS per connection
    #[arg(long)]
    pub idle: bool,
    /// With --idle: how long to hold the connections before the server's RSS is read
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub settle: Duration,
    /// PID of the server under test: its RSS, CPU time and descriptors (from /proc) go into the report
    #[arg(long, env = "BISTREAM_LOADTEST_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// Share of the connections (0 to 1) that subscribe with conflate=1 (docs/protocol.md §9); their final value of each key is checked
    #[arg(long, default_value_t = 0.0)]
    pub conflate_share: f64,
    /// Share of the connections (0 to 1) that subscribe with snapshot=1; the snapshot's shape is checked
    #[arg(long, default_value_t = 0.0)]
    pub snapshot_share: f64,
    /// Publish with a `key` field over this many keys (k0..); 0 publishes none (the key is then the event type)
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// Publisher connections (keep-alive, one request in flight each), sharing --rate
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Events per POST request (1 sends one object, more an array; at most 1000)
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Bytes of padding added to each event's data
    #[arg(long, default_value_t = 0)]
    pub payload: usize,
    /// event_type of published events
    #[arg(long, default_value = "LOADTEST")]
    pub event_type: String,
    /// Length of the measured phase (rate mode)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Publishing before the measured phase; its deliveries are checked but not in the latency figures
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// After publishing, how long to wait for outstanding deliveries
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// HS256 secret of the server: mint a subscriber token (locations ["*"]) and a publisher token (scope "publish")
    #[arg(long, env = "JWT_SECRET_KEY", hide_env_values = true)]
    pub secret: Option<String>,
    /// A token used as-is for subscribers and the publisher (wins over --secret)
    #[arg(long, env = "BISTREAM_LOADTEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Objectives, e.g. "p99<10ms,p999<50ms,loss=0"; exit 1 when one is breached
    #[arg(long, env = "BISTREAM_LOADTEST_SLO")]
    pub slo: Option<String>,
    /// Print the summary as JSON on stdout (the table goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// No progress lines
    #[arg(short, long)]
    pub quiet: bool,
    /// Loopback source addresses to spread connections over (127.0.0.1..) [default: 1 per 25000 connections]
    #[arg(long)]
    pub source_ips: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Address to listen on (loopback only unless --allow-remote)
    #[arg(long, env = "BISTREAM_FLOOR_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Number of mio loops (threads), each with its own SO_REUSEPORT listener
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Bound of a subscriber's outbound queue; past it the subscriber is dropped (close 1013)
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub max_queue_bytes: usize,
    /// Exit after this long (for scripts); runs until killed otherwise
    #[arg(long, value_parser = parse_duration)]
    pub exit_after: Option<Duration>,
    /// Print counters this often
    #[arg(long, value_parser = parse_duration)]
    pub stats: Option<Duration>,
    /// Allow listening on a non-loopback address
    #[arg(long)]
    pub allow_remote: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Runs of each server per scenario (medians are printed)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Scenarios, comma-separated: idle, 10k-10, 1k-100, 1k-10, burst [default: all; only the custom one when client arguments follow --]
    #[arg(long)]
    pub scenarios: Option<String>,
    /// Event-loop threads of both servers
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pin the server and the client to their CPUs: auto (when --threads is 1 and there are 2 CPUs or more), on, off
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub pin: String,
    /// CPUs of the server when pinned
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    /// CPUs of the load client (and its workers) when pinned
    #[arg(long, default_value = "1")]
    pub client_cpus: String,
    /// The bistream binary [default: `bistream` next to this binary]
    #[arg(long)]
    pub bistream: Option<std::path::PathBuf>,
    /// An extra argument for bistream (repeat for more)
    #[arg(long, allow_hyphen_values = true)]
    pub bistream_arg: Vec<String>,
    /// An extra argument for the floor (repeat for more)
    #[arg(long, allow_hyphen_values = true)]
    pub floor_arg: Vec<String>,
    /// Print the results as JSON on stdout (progress stays on stderr)
    #[arg(long)]
    pub json: bool,
    /// Write each run's client JSON into this directory
    #[arg(long)]
    pub save: Option<std::path::PathBuf>,
    /// Client arguments of a custom scenario (after --)
    #[arg(last = true)]
    pub client_args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Server under test (loopback only unless --allow-remote)
    #[arg(
        long,
        env = "BISTREAM_LOADTEST_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
    /// Allow a target that is not a loopback address
    #[arg(long)]
    pub allow_remote: bool,
    /// PID of the server: its RSS and descriptors are read from /proc
    #[arg(long, env = "BISTREAM_LOADTEST_SERVER_PID")]
    pub server_pid: u32,
    /// Connections kept open while churning (each is replaced when it ends)
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub connections: u64,
    /// Connections the client ends a second, over all workers (mean lifetime = connections / churn-rate)
    #[arg(long, default_value_t = 100.0)]
    pub churn_rate: f64,
    /// How churned connections end, taken in turn: close (handshake), reset (SO_LINGER 0), drop (no close frame), abort (reset before the 101)
    #[arg(long, default_value = "close,reset,drop,abort")]
    pub churn_kinds: String,
    /// Events a second, published throughout
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Channels (as for a run)
    #[arg(long, default_value = "1")]
    pub channels: String,
    /// Locations per channel
    #[arg(long, default_value_t = 2)]
    pub locations: usize,
    /// Publisher connections
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Bytes of padding in each event's data
    #[arg(long, default_value_t = 0)]
    pub payload: usize,
    /// Churn and publishing before the baseline reading
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Length of the churn between the two readings
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub duration: Duration,
    /// After the churn stops (every connection closed), wait this long before a reading
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Time between readings of the series
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Allowed RSS growth of the final reading over the baseline: bytes (8MiB) or a share (10%)
    #[arg(long, default_value = "8MiB")]
    pub rss_tolerance: String,
    /// Allowed descriptors more than at the baseline
    #[arg(long, default_value_t = 2)]
    pub fd_tolerance: u64,
    /// Allowed difference of history bytes from the baseline, either way (a share: 2%)
    #[arg(long, default_value = "2%")]
    pub history_tolerance: String,
    /// New connections a second at most [default: 5000, and at least twice the churn rate]
    #[arg(long, default_value_t = 5000.0)]
    pub connect_rate: f64,
    /// Worker processes [default: ceil(connections / 15000)]
    #[arg(long)]
    pub procs: Option<usize>,
    /// Loopback source addresses to spread the connections over [default: 4 on an IPv4 loopback target]
    #[arg(long)]
    pub source_ips: Option<usize>,
    /// HS256 secret of the server (mints the tokens)
    #[arg(long, env = "JWT_SECRET_KEY", hide_env_values = true)]
    pub secret: Option<String>,
    /// A token used as-is for subscribers and the publisher
    #[arg(long, env = "BISTREAM_LOADTEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the report as JSON on stdout (the text goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// No reading lines while it runs
    #[arg(short, long)]
    pub quiet: bool,
}

/// A flag value that cannot be used.
#[derive(Debug, Error)]
pub enum UsageError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("--slo: {0}")]
    Slo(#[from] SloError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{0}")]
    Invalid(String),
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub connections: u64,
    pub channels: Vec<&'static str>,
    pub locations: usize,
    pub streams: Vec<Stream>,
    pub connect_rate: f64,
    pub connect_timeout: Duration,
    pub procs: usize,
    pub source_ips: Vec<IpAddr>,
    pub rate: f64,
    pub mode: Mode,
    pub batch: usize,
    pub publishers: usize,
    pub payload: usize,
    pub event_type: String,
    pub warmup: Duration,
    pub drain: Duration,
    /// `--idle`: publish nothing, hold the connections this long (the settle time).
    pub idle: Option<Duration>,
    pub server_pid: Option<u32>,
    pub conflate_share: f64,
    pub snapshot_share: f64,
    pub keys: usize,
    pub tokens: Tokens,
    pub slo: Vec<Objective>,
    pub json: bool,
    pub quiet: bool,
}

fn invalid(msg: impl Into<String>) -> UsageError {
    UsageError::Invalid(msg.into())
}

/// Worker processes: `ceil(connections / CONNECTIONS_PER_PROC)` unless given.
pub fn auto_procs(connections: u64) -> usize {
    connections.div_ceil(CONNECTIONS_PER_PROC).max(1) as usize
}

impl RunArgs {
    /// Validates; `fd_limit` is the hard open-file limit a worker can raise itself to.
    pub fn validate(&self, fd_limit: u64) -> Result<RunConfig, UsageError> {
        let target = target::resolve(&self.url, self.allow_remote)?;
        if self.connections == 0 {
            return Err(invalid("--connections must be at least 1"));
        }
        let channels = streams::parse_channels(&self.channels)?;
        let streams = streams::build_streams(&channels, self.locations, &self.location_prefix)?;
        if !(self.connect_rate.is_finite() && self.connect_rate > 0.0) {
            return Err(invalid("--connect-rate must be a positive number"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(invalid(
                "--rate must be a positive number of events a second",
            ));
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(invalid(format!("--batch must be 1..={MAX_BATCH}")));
        }
        if self.batch * (self.payload + EVENT_OVERHEAD) > MAX_PUBLISH_BODY {
            return Err(invalid(
                "--batch x (--payload + 256) exceeds the server's 1 MiB body limit",
            ));
        }
        if self.publishers == 0 || self.publishers > MAX_PUBLISHERS {
            return Err(invalid(format!(
                "--publishers must be 1..={MAX_PUBLISHERS}"
            )));
        }
        if !contract::valid_event_type(&self.event_type) {
            return Err(StreamError::BadEventType(self.event_type.clone()).into());
        }
        let mode = match self.burst {
            Some(0) => return Err(invalid("--burst must be at least 1")),
            Some(n) => Mode::Burst(n),
            None if self.duration.is_zero() => return Err(invalid("--duration must be above 0")),
            None => Mode::Rate(self.duration),
        };
        for (flag, share) in [
            ("--conflate-share", self.conflate_share),
            ("--snapshot-share", self.snapshot_share),
        ] {
            if !(share.is_finite() && (0.0..=1.0).contains(&share)) {
                return Err(invalid(format!("{flag} must be a share from 0 to 1")));
            }
        }
        if self.keys > MAX_KEYS {
            return Err(invalid(format!("--keys must be at most {MAX_KEYS}")));
        }
        if self.keys > 0 && self.keys < self.publishers {
            return Err(invalid(
                "--keys must be at least --publishers (each key is published by one connection)",
            ));
        }
        if self.conflate_share > 0.0 && self.keys == 0 && self.publishers > 1 {
            return Err(invalid(
                "conflating connections with several --publishers need --keys (at least one per publisher), \
                 so that each key's last value is known",
            ));
        }
        let pairs = self.keys.max(1) * streams.len();
        if self.conflate_share > 0.0 && pairs > MAX_KEY_STREAMS {
            return Err(invalid(format!(
                "--keys x streams must stay under {MAX_KEY_STREAMS} with conflating connections \
                 (the last value of each goes to every worker)"
            )));
        }
        if let Some(pid) = self.server_pid {
            if !procstat::exists(pid) {
                return Err(invalid(format!(
                    "--server-pid {pid}: no such process can be read in /proc"
                )));
            }
        }
        let procs = match self.procs {
            None => auto_procs(self.connections),
            Some(0) => return Err(invalid("--procs must be at least 1")),
            Some(p) => p.min(self.connections as usize),
        };
        let per_proc = self.connections.div_ceil(procs as u64);
        if per_proc + FD_HEADROOM > fd_limit {
            return Err(invalid(format!(
                "{per_proc} connections per process exceed the open-file limit ({fd_limit}); raise --procs"
            )));
        }
        let loopback_v4 = matches!(target.addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        let n_ips = match self.source_ips {
            Some(0) => return Err(invalid("--source-ips must be at least 1")),
            Some(n) if n > 1 && !loopback_v4 => {
                return Err(invalid("--source-ips needs an IPv4 loopback target"))
            }
            Some(n) if n > 254 => return Err(invalid("--source-ips must be at most 254")),
            Some(n) => n,
            None if loopback_v4 => self.connections.div_ceil(CONNECTIONS_PER_SOURCE_IP) as usize,
            None => 1,
        };
        let source_ips = if n_ips > 1 {
            (1..=n_ips as u8)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect()
        } else {
            Vec::new()
        };
        let slo = match &self.slo {
            Some(s) => slo::parse(s)?,
            None => Vec::new(),
        };
        let tokens = match (&self.token, &self.secret) {
            (Some(t), _) if !t.is_empty() => tokens::given(t),
            (_, Some(s)) => {
                let ttl = Duration::from_secs_f64(self.connections as f64 / self.connect_rate)
                    + self.connect_timeout
                    + self.warmup
                    + self.duration
                    + self.drain
                    + Duration::from_secs(600);
                tokens::mint(s.as_bytes(), ttl)?
            }
            _ => Tokens::default(),
        };
        Ok(RunConfig {
            target,
            connections: self.connections,
            channels,
            locations: self.locations,
            streams,
            connect_rate: self.connect_rate,
            connect_timeout: self.connect_timeout,
            procs,
            source_ips,
            rate: self.rate,
            mode,
            batch: self.batch,
            publishers: self.publishers,
            payload: self.payload,
            event_type: self.event_type.clone(),
            warmup: self.warmup,
            drain: self.drain,
            idle: self.idle.then_some(self.settle),
            server_pid: self.server_pid,
            conflate_share: self.conflate_share,
            snapshot_share: self.snapshot_share,
            keys: self.keys,
            tokens,
            slo,
            json: self.json,
            quiet: self.quiet,
        })
    }
}

impl SoakArgs {
    /// Validates; `fd_limit` is the hard open-file limit a worker can raise itself to.
    pub fn validate(&self, fd_limit: u64) -> Result<SoakConfig, UsageError> {
        if !(self.churn_rate.is_finite() && self.churn_rate > 0.0) {
            return Err(invalid("--churn-rate must be a positive number"));
        }
        let kinds = self
            .churn_kinds
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                ChurnKind::parse(k).ok_or_else(|| {
                    invalid(format!(
                        "--churn-kinds: unknown kind `{k}` (close, reset, drop, abort)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if kinds.is_empty() {
            return Err(invalid("--churn-kinds is empty"));
        }
        if self.sample_every.is_zero() || self.duration.is_zero() {
            return Err(invalid("--duration and --sample-every must be above 0"));
        }
        let tol_err = |flag: &str, e: String| invalid(format!("{flag}: {e}"));
        let rss =
            Allowance::parse(&self.rss_tolerance).map_err(|e| tol_err("--rss-tolerance", e))?;
        let history = match Allowance::parse(&self.history_tolerance)
            .map_err(|e| tol_err("--history-tolerance", e))?
        {
            Allowance::Share(s) => s,
            Allowance::Bytes(_) => {
                return Err(invalid("--history-tolerance is a share: write e.g. 2%"))
            }
        };
        let mut run = RunArgs {
            url: self.url.clone(),
            allow_remote: self.allow_remote,
            connections: self.connections,
            channels: self.channels.clone(),
            locations: self.locations,
            location_prefix: "soak-".into(),
            connect_rate: self.connect_rate.max(2.0 * self.churn_rate),
            connect_timeout: Duration::from_secs(10),
            procs: self.procs,
            rate: self.rate,
            burst: None,
            idle: false,
            settle: self.settle,
            server_pid: Some(self.server_pid),
            conflate_share: 0.0,
            snapshot_share: 0.0,
            keys: 0,
            publishers: self.publishers,
            batch: 1,
            payload: self.payload,
            event_type: "SOAK".into(),
            duration: self.duration,
            warmup: self.warmup,
            drain: Duration::ZERO,
            secret: self.secret.clone(),
            token: self.token.clone(),
            slo: None,
            json: self.json,
            quiet: self.quiet,
            source_ips: self.source_ips,
        }
        .validate(fd_limit)?;
        // Churned connections leave TIME_WAIT sockets behind; spreading them over a few
        // loopback source addresses multiplies the ephemeral ports available.
        let loopback_v4 = matches!(run.target.addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        if self.source_ips.is_none() && loopback_v4 && run.source_ips.len() < 4 {
            run.source_ips = (1..=4)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect();
        }
        // A connection that aborts its upgrade lives no time at all, so the others live
        // longer for the whole population to end `churn_rate` connections a second: the
        // mean life over all kinds is connections / churn_rate.
        let lasting = kinds
            .iter()
            .filter(|k| **k != ChurnKind::Abort)
            .count()
            .max(1);
        let mean = self.connections as f64 / self.churn_rate * kinds.len() as f64 / lasting as f64;
        Ok(SoakConfig {
            run,
            server_pid: self.server_pid,
            churn: ChurnSpec {
                mean_lifetime_ms: (mean * 1e3).round().max(1.0) as u64,
                kinds,
            },
            churn_rate: self.churn_rate,
            warmup: self.warmup,
            duration: self.duration,
            settle: self.settle,
            sample_every: self.sample_every,
            tolerances: Tolerances {
                rss,
                fds: self.fd_tolerance,
                history,
            },
        })
    }
}

impl CompareArgs {
    pub fn validate(&self) -> Result<CompareConfig, UsageError> {
        if self.runs == 0 || self.runs > 100 {
            return Err(invalid("--runs must be 1..=100"));
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(invalid("--threads must be 1..=256"));
        }
        let usage = |e: compare::CompareError| invalid(e.to_string());
        let scenarios =
            compare::scenarios(self.scenarios.as_deref(), &self.client_args).map_err(usage)?;
        let pin = match self.pin.as_str() {
            "on" => true,
            "off" => false,
            _ => self.threads == 1 && compare::available_cpus() >= 2,
        };
        let pin = if pin {
            Some((
                compare::parse_cpu_list(&self.server_cpus).map_err(usage)?,
                compare::parse_cpu_list(&self.client_cpus).map_err(usage)?,
            ))
        } else {
            None
        };
        let bistream = match &self.bistream {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("bistream")))
                .unwrap_or_else(|| "target/release/bistream".into()),
        };
        compare::check_binary(&bistream).map_err(usage)?;
        Ok(CompareConfig {
            runs: self.runs,
            scenarios,
            threads: self.threads,
            pin,
            bistream,
            bistream_args: self.bistream_arg.clone(),
            floor_args: self.floor_arg.clone(),
            json: self.json,
            save: self.save.clone(),
        })
    }
}

impl FloorArgs {
    pub fn validate(&self) -> Result<FloorConfig, UsageError> {
        target::check_listen(self.listen, self.allow_remote)?;
        if self.threads == 0 || self.threads > 256 {
            return Err(invalid("--threads must be 1..=256"));
        }
        if self.max_queue_bytes < 1024 {
            return Err(invalid("--max-queue-bytes must be at least 1KiB"));
        }
        Ok(FloorConfig {
            listen: self.listen,
            threads: self.threads,
            max_queue_bytes: self.max_queue_bytes,
            exit_after: self.exit_after,
            stats_every: self.stats.filter(|d| !d.is_zero()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(extra: &[&str]) -> Result<RunConfig, UsageError> {
        let mut argv = vec!["bistream-loadtest"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).map_err(|e| invalid(e.to_string()))?;
        cli.run.validate(20_000)
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_a_small_loopback_run() {
        let c = args(&[]).unwrap();
        assert_eq!(c.target.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!((c.connections, c.procs, c.streams.len()), (1000, 1, 1));
        assert_eq!(c.mode, Mode::Rate(Duration::from_secs(10)));
        assert!(c.source_ips.is_empty());
        assert_eq!(c.tokens, Tokens::default());
    }

    #[test]
    fn procs_and_source_ips_scale_with_connections() {
        let c = args(&["-c", "50000"]).unwrap();
        assert_eq!(c.procs, 4);
        assert_eq!(c.source_ips.len(), 2);
        assert_eq!(auto_procs(15_000), 1);
        assert_eq!(auto_procs(15_001), 2);
        assert!(args(&["-c", "40000", "--procs", "1"]).is_err());
        assert_eq!(args(&["-c", "3", "--procs", "8"]).unwrap().procs, 3);
    }

    #[test]
    fn refuses_remote_targets_and_bad_values() {
        assert!(matches!(
            args(&["--url", "ws://10.0.0.1:8000"]),
            Err(UsageError::Target(TargetError::NotLoopback { .. }))
        ));
        assert!(matches!(args(&["--slo", "p99<"]), Err(UsageError::Slo(_))));
        assert!(args(&["--batch", "1001"]).is_err());
        assert!(args(&["--batch", "1000", "--payload", "2000"]).is_err());
        assert!(args(&["--rate", "0"]).is_err());
        assert!(args(&["--publishers", "0"]).is_err());
        assert!(args(&["--burst", "0"]).is_err());
        assert!(args(&["--channels", "9"]).is_err());
        assert!(args(&["--event-type", "a b"]).is_err());
        assert!(args(&["--secret", "short"]).is_err());
    }

    #[test]
    fn conflation_flags() {
        let c = args(&[
            "--conflate-share",
            "0.5",
            "--snapshot-share",
            "0.25",
            "--keys",
            "20",
        ])
        .unwrap();
        assert_eq!(
            (c.conflate_share, c.snapshot_share, c.keys),
            (0.5, 0.25, 20)
        );
        assert!(args(&["--conflate-share", "1.5"]).is_err());
        assert!(args(&["--snapshot-share", "-0.1"]).is_err());
        assert!(args(&["--keys", "10001"]).is_err());
        assert!(args(&["--keys", "2", "--publishers", "4"]).is_err());
        assert!(args(&["--conflate-share", "0.5", "--publishers", "2"]).is_err());
        assert!(args(&[
            "--conflate-share",
            "0.5",
            "--publishers",
            "2",
            "--keys",
            "2"
        ])
        .is_ok());
        assert!(args(&["--conflate-share", "0.5"]).is_ok());
    }

    #[test]
    fn idle_and_server_pid() {
        let own = std::process::id().to_string();
        let c = args(&["--idle", "--settle", "2s", "--server-pid", &own]).unwrap();
        assert_eq!(c.idle, Some(Duration::from_secs(2)));
        assert_eq!(c.server_pid, Some(std::process::id()));
        assert!(args(&["--idle", "--burst", "5"]).is_err());
        assert!(args(&["--server-pid", "4294967295"]).is_err());
    }

    #[test]
    fn tokens_from_secret_or_given() {
        let c = args(&["--secret", "0123456789abcdef0123456789abcdef"]).unwrap();
        assert!(c.tokens.subscriber.is_some() && c.tokens.publisher.is_some());
        assert_ne!(c.tokens.subscriber, c.tokens.publisher);
        let c = args(&[
            "--token",
            "a.b.c",
            "--secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap();
        assert_eq!(c.tokens.subscriber.as_deref(), Some("a.b.c"));
        assert_eq!(c.tokens.publisher.as_deref(), Some("a.b.c"));
    }

    #[test]
    fn floor_flags() {
        let cli =
            Cli::try_parse_from(["x", "floor", "--threads", "2", "--max-queue-bytes", "64KiB"])
                .unwrap();
        let Some(Cmd::Floor(f)) = cli.command else {
            panic!("not floor")
        };
        let cfg = f.validate().unwrap();
        assert_eq!((cfg.threads, cfg.max_queue_bytes), (2, 64 << 10));
        let cli = Cli::try_parse_from(["x", "floor", "--listen", "0.0.0.0:8000"]).unwrap();
        let Some(Cmd::Floor(f)) = cli.command else {
            panic!("not floor")
        };
        assert!(f.validate().is_err());
    }
}
