//! Command line and environment → a validated [`Config`].
//!
//! Every limit has a named `DEFAULT_*` constant so that the code, `--help` and
//! `docs/operations.md` agree. Every option is also an environment variable
//! (`--max-connections` / `BISTREAM_MAX_CONNECTIONS`); `JWT_SECRET_KEY` keeps its name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 1 << 20;
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 10;
pub const DEFAULT_MAX_HEAD_SIZE: usize = 8 << 10;
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(25);
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CLOSE_LINGER: Duration = Duration::from_secs(1);
pub const DEFAULT_HISTORY_SIZE: usize = 1000;
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 256 << 20;
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(5);
pub const DEFAULT_LAST_VALUES: usize = 256;
pub const DEFAULT_LAST_VALUES_MAX_BYTES: usize = 64 << 20;
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_ENGINE_PROBE_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// docs/protocol.md §11: how long a hand-over spreads its 1012 closes.
pub const DEFAULT_RESTART_SPREAD: Duration = Duration::from_secs(5);
/// docs/protocol.md §11: the longest wait for the new process of a hand-over.
pub const DEFAULT_HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The publish API's limits are part of the contract (docs/protocol.md §5), so they are not flags.
pub const MAX_PUBLISH_BODY: usize = 1 << 20;
pub const MAX_PUBLISH_EVENTS: usize = 1000;
/// File descriptors kept back from `--max-connections` for listeners, the poll
/// instances, wakers, log files and the sockets that are only accepted to be refused.
pub const FD_HEADROOM: usize = 64;

/// A listen address: TCP or a Unix socket path (`unix:/run/bistream.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    pub fn is_loopback(&self) -> bool {
        match self {
            ListenAddr::Tcp(a) => a.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a path, e.g. unix:/run/bistream/bistream.sock".into());
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    s.parse::<SocketAddr>()
        .map(ListenAddr::Tcp)
        .map_err(|_| format!("`{s}` is neither HOST:PORT (e.g. 127.0.0.1:8000) nor unix:/path"))
}

/// Sizes: plain bytes or a binary/decimal unit (`64KiB`, `1MiB`, `1MB`, `512k`).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (write 65536, 64KiB or 1MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => return Err(format!("`{s}`: unknown size unit (use B, KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// An octal file mode: `0660`, `660` or `0o660`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("`{s}` is not an octal file mode (write 0660)")),
    }
}

/// A CIDR block, or a bare address meaning just that address.
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let t = s.trim();
    if let Ok(net) = t.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    t.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("`{s}` is not a CIDR block (write 10.0.0.0/8 or 127.0.0.1)"))
}

/// Durations: `25s`, `500ms`, `2m`, `1h` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration (write 25s, 500ms or 2m): {e}"))
}

#[derive(Debug, Parser)]
#[command(
    name = "bistream",
    version,
    about = "Real-time business-intelligence event server (WebSocket fan-out)",
    long_about = "Real-time business-intelligence event server.\n\nClients hold WebSocket connections \
                  on /ws/...; back-end services publish with POST /api/events; every event is \
                  fanned out to the clients of its stream. Every option is also an environment \
                  variable (shown in brackets)."
)]
pub struct Cli {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mint a JWT from the configured secret (for local testing and scripts).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Location id the token grants (repeatable; `*` for all).
    #[arg(long = "location", value_name = "ID")]
    pub locations: Vec<String>,
    /// Channel id the token grants (repeatable; default: all six).
    #[arg(long = "channel", value_name = "ID")]
    pub channels: Vec<String>,
    /// Mint a publisher token (`scope: publish`) instead of a subscriber token.
    #[arg(long)]
    pub publisher: bool,
    /// Time to live.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// `sub` claim.
    #[arg(long, default_value = "bistream-cli")]
    pub sub: String,
}

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// Address to listen on: HOST:PORT or unix:/path (repeatable).
    #[arg(global = true, long, env = "BISTREAM_LISTEN", value_delimiter = ',', default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: Vec<ListenAddr>,

    /// Event-loop threads (default: the number of cores).
    #[arg(global = true, long, env = "BISTREAM_THREADS")]
    pub threads: Option<usize>,

    /// Most open connections, handshakes in progress included
    /// (default: the process's open-file limit minus a small headroom).
    #[arg(global = true, long, env = "BISTREAM_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Outbound bytes held per connection beyond what the kernel accepted; past it: close 1013.
    #[arg(global = true, long, env = "BISTREAM_MAX_QUEUE_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_queue_bytes: usize,

    /// Largest client message; larger ones close the connection with 1009.
    #[arg(global = true, long, env = "BISTREAM_MAX_MESSAGE_SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub max_message_size: usize,

    /// Largest HTTP request head; larger ones get 431.
    #[arg(global = true, long, env = "BISTREAM_MAX_HEAD_SIZE", default_value = "8KiB", value_parser = parse_size)]
    pub max_head_size: usize,

    /// Interval between server pings; a connection silent for two intervals is closed (1008).
    #[arg(global = true, long, env = "BISTREAM_HEARTBEAT_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Time from accept within which the request head must be complete.
    #[arg(global = true, long, env = "BISTREAM_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Idle time after which a keep-alive HTTP (publish API) connection is closed.
    #[arg(global = true, long, env = "BISTREAM_KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// On SIGTERM/SIGINT: time allowed to flush clients and close them with 1001.
    #[arg(global = true, long, env = "BISTREAM_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Events kept per stream for recovery (`since`/`epoch`); 0 disables recovery.
    #[arg(global = true, long, env = "BISTREAM_HISTORY_SIZE", default_value_t = DEFAULT_HISTORY_SIZE)]
    pub history_size: usize,

    /// Process-wide cap on history bytes; the oldest events are evicted first.
    #[arg(global = true, long, env = "BISTREAM_HISTORY_MAX_BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub history_max_bytes: usize,

    /// A stream with no subscribers and no events for this long is forgotten.
    #[arg(global = true, long, env = "BISTREAM_HISTORY_TTL", default_value = "10m", value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// Last values (newest event per key) kept per stream for `snapshot=1`; 0 turns them off.
    #[arg(global = true, long, env = "BISTREAM_LAST_VALUES", default_value_t = DEFAULT_LAST_VALUES)]
    pub last_values: usize,

    /// Process-wide cap on last-value bytes; the oldest last values are forgotten first.
    #[arg(global = true, long, env = "BISTREAM_LAST_VALUES_MAX_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub last_values_max_bytes: usize,

    /// Where stream state lives: `memory` (this process) or `redis` (shared by every node).
    #[arg(
        global = true,
        long,
        env = "BISTREAM_ENGINE",
        value_enum,
        default_value = "memory"
    )]
    pub engine: crate::engine::EngineKind,

    /// Redis instance of the redis engine: redis://HOST:PORT[/DB] or unix:///path (repeatable:
    /// streams are spread over the instances).
    #[arg(global = true, long = "redis-url", env = "BISTREAM_REDIS_URL", value_delimiter = ',', default_value = DEFAULT_REDIS_URL)]
    pub redis_urls: Vec<String>,

    /// How often a node probes its Redis subscription; a link silent for two intervals is remade.
    #[arg(global = true, long, env = "BISTREAM_ENGINE_PROBE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub engine_probe_interval: Duration,

    /// Longest wait for one Redis round trip before the engine counts as unreachable.
    #[arg(global = true, long, env = "BISTREAM_REDIS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// HS256 secret (at least 32 bytes). Without one the server runs open, on loopback only.
    #[arg(global = true, long, env = "JWT_SECRET_KEY", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Read the JWT secret from a file (systemd credentials, Kubernetes secrets).
    #[arg(global = true, long, env = "BISTREAM_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Previous secret, accepted for verification only (rotation).
    #[arg(
        global = true,
        long,
        env = "JWT_SECRET_KEY_PREVIOUS",
        hide_env_values = true
    )]
    pub jwt_secret_previous: Option<String>,

    /// Read the previous secret from a file.
    #[arg(global = true, long, env = "BISTREAM_JWT_SECRET_PREVIOUS_FILE")]
    pub jwt_secret_previous_file: Option<PathBuf>,

    /// Clock-skew leeway for `exp` and `nbf`.
    #[arg(global = true, long, env = "BISTREAM_JWT_LEEWAY", default_value = "5s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Run without tokens even on a non-loopback address.
    #[arg(global = true, long, env = "BISTREAM_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Allowed `Origin` values, comma-separated exact matches (default: any origin).
    #[arg(
        global = true,
        long,
        env = "BISTREAM_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Serve /ws/echo for conformance suites (test deployments only).
    #[arg(global = true, long, env = "BISTREAM_ENABLE_ECHO")]
    pub enable_echo: bool,

    /// Publish plausible demo BI events to a few locations every second.
    #[arg(global = true, long, env = "BISTREAM_DEMO")]
    pub demo: bool,

    /// Serve the operator console at /console and its numbers at /api/stats.
    #[arg(global = true, long, env = "BISTREAM_CONSOLE")]
    pub console: bool,

    /// File mode of Unix sockets given with `--listen unix:/path`, in octal (e.g. 0660).
    #[arg(global = true, long, env = "BISTREAM_UNIX_SOCKET_MODE", value_parser = parse_mode)]
    pub unix_socket_mode: Option<u32>,

    /// Proxies (CIDR list, e.g. 127.0.0.1/32,10.0.0.0/8) whose X-Forwarded-For / X-Real-IP
    /// name the client. From anyone else these headers are ignored.
    #[arg(global = true, long, env = "BISTREAM_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Most WebSocket connections per client address (default: no per-address limit); past it: 503.
    #[arg(global = true, long, env = "BISTREAM_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// On SIGUSR2 (hand-over to a new process): time over which the old process spreads
    /// the 1012 closes of its clients, so that they do not all reconnect at once.
    #[arg(global = true, long, env = "BISTREAM_RESTART_SPREAD", default_value = "5s", value_parser = parse_duration)]
    pub restart_spread: Duration,

    /// On SIGUSR2: the longest wait for the new process to take over; past it the old
    /// process goes on serving.
    #[arg(global = true, long, env = "BISTREAM_HANDOVER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handover_timeout: Duration,

    /// Require a PROXY protocol header (v1 or v2) on every TCP connection, from
    /// --trusted-proxies only (connections from other peers are closed).
    #[arg(global = true, long, env = "BISTREAM_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Print the effective configuration (secrets redacted) and exit; non-zero if it is invalid.
    #[arg(global = true, long)]
    pub check_config: bool,

    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(
        global = true,
        long,
        env = "BISTREAM_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--threads must be between 1 and 64 (got {0})")]
    Threads(usize),
    #[error("--{name} must be at least {min}")]
    TooSmall { name: &'static str, min: String },
    #[error("no --listen address given")]
    NoListen,
    #[error("cannot read {what} from {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{value} and {file} are both set: give the {what} one way only")]
    SecretTwice {
        what: &'static str,
        value: &'static str,
        file: &'static str,
    },
    #[error(
        "JWT_SECRET_KEY_PREVIOUS (or --jwt-secret-previous-file) is set but JWT_SECRET_KEY is not: \
         the previous secret only verifies tokens during a rotation; set the current secret too"
    )]
    PreviousWithoutCurrent,
    #[error(transparent)]
    Secret(#[from] crate::auth::SecretError),
    #[error("--redis-url `{0}`: {1} (write redis://HOST:PORT[/DB] or unix:///path)")]
    RedisUrl(String, String),
    #[error(
        "no JWT_SECRET_KEY and a non-loopback listener ({0}): refusing to run open to the network; \
         set JWT_SECRET_KEY (or --jwt-secret-file) or pass --allow-anonymous"
    )]
    OpenOnNetwork(String),
    #[error(
        "--proxy-protocol needs --trusted-proxies: the PROXY header names the client, so only \
         the load balancers listed there may send one"
    )]
    ProxyWithoutTrust,
}

/// The effective configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<ListenAddr>,
    pub threads: usize,
    pub max_connections: usize,
    pub max_queue_bytes: usize,
    pub max_message_size: usize,
    pub max_head_size: usize,
    pub heartbeat_interval: Duration,
    pub handshake_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub drain_timeout: Duration,
    pub close_linger: Duration,
    pub history_size: usize,
    pub history_max_bytes: usize,
    pub history_ttl: Duration,
    pub last_values: usize,
    pub last_values_max_bytes: usize,
    pub engine: crate::engine::EngineKind,
    pub redis_urls: Vec<String>,
    pub engine_probe_interval: Duration,
    pub redis_timeout: Duration,
    /// `None`: the server runs open (no tokens checked).
    pub auth: Option<AuthConfig>,
    pub allowed_origins: Vec<String>,
    pub enable_echo: bool,
    pub demo: bool,
    /// `--console`: serve `/console` and `/api/stats`.
    pub console: bool,
    pub unix_socket_mode: Option<u32>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub max_connections_per_ip: Option<usize>,
    /// `--allow-anonymous`, kept for the check of inherited listeners (socket
    /// activation), whose addresses are known only once they are taken.
    pub allow_anonymous: bool,
    /// docs/protocol.md §11: hand-over on SIGUSR2.
    pub restart_spread: Duration,
    pub handover_timeout: Duration,
    /// docs/protocol.md §11: a PROXY header before the request on TCP listeners.
    pub proxy_protocol: bool,
}

#[derive(Clone)]
pub struct AuthConfig {
    pub secret: Vec<u8>,
    pub previous: Option<Vec<u8>>,
    pub leeway: Duration,
}

impl std::fmt::Debug for AuthConfig {
    // Secrets never reach a log line, not even a debug dump of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &"<redacted>")
            .field("previous", &self.previous.as_ref().map(|_| "<redacted>"))
            .field("leeway", &self.leeway)
            .finish()
    }
}

fn read_secret(
    value: &Option<String>,
    file: &Option<PathBuf>,
    what: &'static str,
    names: (&'static str, &'static str),
) -> Result<Option<Vec<u8>>, ConfigError> {
    // Two sources for one secret: refuse rather than let one win silently.
    if value.is_some() && file.is_some() {
        return Err(ConfigError::SecretTwice {
            what,
            value: names.0,
            file: names.1,
        });
    }
    if let Some(path) = file {
        let raw = std::fs::read(path).map_err(|source| ConfigError::SecretFile {
            what,
            path: path.clone(),
            source,
        })?;
        // A trailing newline from `echo secret > file` is not part of the secret.
        let trimmed = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        return Ok(Some(trimmed.to_vec()));
    }
    Ok(value.as_ref().map(|v| v.as_bytes().to_vec()))
}

impl Config {
    /// The effective configuration as `name = value` lines, secrets redacted:
    /// what `--check-config` prints.
    pub fn describe(&self) -> String {
        let d = |v: Duration| humantime::format_duration(v).to_string();
        let listen: Vec<String> = self.listen.iter().map(ToString::to_string).collect();
        let list = |v: &[String]| {
            if v.is_empty() {
                "(any)".to_string()
            } else {
                v.join(",")
            }
        };
        let proxies: Vec<String> = self
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        // Passwords in a Redis URL are secrets too.
        let redis_urls: Vec<String> = self
            .redis_urls
            .iter()
            .map(|u| crate::engine::redact(u))
            .collect();
        let auth = match &self.auth {
            None => "off (open: no tokens checked)".to_string(),
            Some(a) => format!(
                "HS256, secret <redacted {} bytes>{}, leeway {}",
                a.secret.len(),
                if a.previous.is_some() {
                    ", previous secret <redacted>"
                } else {
                    ""
                },
                d(a.leeway)
            ),
        };
        let lines = [
            ("listen", listen.join(",")),
            ("threads", self.threads.to_string()),
            ("max-connections", self.max_connections.to_string()),
            (
                "max-connections-per-ip",
                self.max_connections_per_ip
                    .map_or("(none)".into(), |n| n.to_string()),
            ),
            ("max-queue-bytes", self.max_queue_bytes.to_string()),
            ("max-message-size", self.max_message_size.to_string()),
            ("max-head-size", self.max_head_size.to_string()),
            ("heartbeat-interval", d(self.heartbeat_interval)),
            ("handshake-timeout", d(self.handshake_timeout)),
            ("keepalive-timeout", d(self.keepalive_timeout)),
            ("drain-timeout", d(self.drain_timeout)),
            ("history-size", self.history_size.to_string()),
            ("history-max-bytes", self.history_max_bytes.to_string()),
            ("history-ttl", d(self.history_ttl)),
            ("last-values", self.last_values.to_string()),
            (
                "last-values-max-bytes",
                self.last_values_max_bytes.to_string(),
            ),
            (
                "engine",
                match self.engine {
                    crate::engine::EngineKind::Memory => "memory".into(),
                    crate::engine::EngineKind::Redis => "redis".into(),
                },
            ),
            ("redis-url", redis_urls.join(",")),
            ("engine-probe-interval", d(self.engine_probe_interval)),
            ("redis-timeout", d(self.redis_timeout)),
            ("auth", auth),
            ("allowed-origins", list(&self.allowed_origins)),
            (
                "trusted-proxies",
                if proxies.is_empty() {
                    "(none)".into()
                } else {
                    proxies.join(",")
                },
            ),
            (
                "unix-socket-mode",
                self.unix_socket_mode
                    .map_or("(umask default)".into(), |m| format!("{m:04o}")),
            ),
            ("restart-spread", d(self.restart_spread)),
            ("handover-timeout", d(self.handover_timeout)),
            ("proxy-protocol", self.proxy_protocol.to_string()),
            ("enable-echo", self.enable_echo.to_string()),
            ("demo", self.demo.to_string()),
            ("console", self.console.to_string()),
        ];
        lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }
}

/// The open-file limit after raising the soft limit to the hard one.
pub fn raise_fd_limit() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
            .unwrap_or(1024),
    }
}

impl Config {
    pub fn from_args(a: &ServerArgs, fd_limit: usize) -> Result<Config, ConfigError> {
        if a.listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        let threads = a.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if threads == 0 || threads > 64 {
            return Err(ConfigError::Threads(threads));
        }
        let min = |name: &'static str, ok: bool, m: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::TooSmall {
                    name,
                    min: m.to_string(),
                })
            }
        };
        min("max-queue-bytes", a.max_queue_bytes >= 1024, "1KiB")?;
        min("max-message-size", a.max_message_size >= 125, "125")?;
        min("max-head-size", a.max_head_size >= 1024, "1KiB")?;
        min(
            "heartbeat-interval",
            a.heartbeat_interval >= Duration::from_millis(10),
            "10ms",
        )?;
        min(
            "handshake-timeout",
            a.handshake_timeout >= Duration::from_millis(10),
            "10ms",
        )?;
        min("max-connections", a.max_connections != Some(0), "1")?;
        min(
            "engine-probe-interval",
            a.engine_probe_interval >= Duration::from_millis(50),
            "50ms",
        )?;
        min(
            "redis-timeout",
            a.redis_timeout >= Duration::from_millis(10),
            "10ms",
        )?;
        if a.engine == crate::engine::EngineKind::Redis {
            for url in &a.redis_urls {
                if let Err(e) = redis::Client::open(url.as_str()) {
                    return Err(ConfigError::RedisUrl(
                        crate::engine::redact(url),
                        e.to_string(),
                    ));
                }
            }
            if a.redis_urls.is_empty() {
                return Err(ConfigError::RedisUrl(
                    String::new(),
                    "no --redis-url given".into(),
                ));
            }
        }
        min(
            "max-connections-per-ip",
            a.max_connections_per_ip != Some(0),
            "1",
        )?;

        let secret = read_secret(
            &a.jwt_secret,
            &a.jwt_secret_file,
            "the JWT secret",
            ("JWT_SECRET_KEY (or --jwt-secret)", "--jwt-secret-file"),
        )?;
        let previous = read_secret(
            &a.jwt_secret_previous,
            &a.jwt_secret_previous_file,
            "the previous JWT secret",
            (
                "JWT_SECRET_KEY_PREVIOUS (or --jwt-secret-previous)",
                "--jwt-secret-previous-file",
            ),
        )?;
        if secret.is_none() && previous.is_some() {
            return Err(ConfigError::PreviousWithoutCurrent);
        }
        let auth = match secret {
            Some(secret) => {
                // Validate now so that a short secret stops start-up, not the first handshake.
                crate::auth::Verifier::new(&secret, previous.as_deref(), a.jwt_leeway)?;
                Some(AuthConfig {
                    secret,
                    previous,
                    leeway: a.jwt_leeway,
                })
            }
            None => {
                if let Some(open) = a.listen.iter().find(|l| !l.is_loopback()) {
                    if !a.allow_anonymous {
                        return Err(ConfigError::OpenOnNetwork(open.to_string()));
                    }
                }
                None
            }
        };

        if a.proxy_protocol && a.trusted_proxies.is_empty() {
            return Err(ConfigError::ProxyWithoutTrust);
        }
        min(
            "handover-timeout",
            a.handover_timeout >= Duration::from_millis(10),
            "10ms",
        )?;

        let max_connections = a
            .max_connections
            .unwrap_or_else(|| fd_limit.saturating_sub(FD_HEADROOM).max(16));

        Ok(Config {
            listen: a.listen.clone(),
            threads,
            max_connections,
            max_queue_bytes: a.max_queue_bytes,
            max_message_size: a.max_message_size,
            max_head_size: a.max_head_size,
            heartbeat_interval: a.heartbeat_interval,
            handshake_timeout: a.handshake_timeout,
            keepalive_timeout: a.keepalive_timeout,
            drain_timeout: a.drain_timeout,
            close_linger: DEFAULT_CLOSE_LINGER,
            history_size: a.history_size,
            history_max_bytes: a.history_max_bytes,
            history_ttl: a.history_ttl,
            last_values: a.last_values,
            last_values_max_bytes: a.last_values_max_bytes,
            engine: a.engine,
            redis_urls: a.redis_urls.clone(),
            engine_probe_interval: a.engine_probe_interval,
            redis_timeout: a.redis_timeout,
            auth,
            allowed_origins: a.allowed_origins.clone(),
            enable_echo: a.enable_echo,
            demo: a.demo,
            console: a.console,
            unix_socket_mode: a.unix_socket_mode,
            trusted_proxies: a.trusted_proxies.clone(),
            max_connections_per_ip: a.max_connections_per_ip,
            allow_anonymous: a.allow_anonymous,
            restart_spread: a.restart_spread,
            handover_timeout: a.handover_timeout,
            proxy_protocol: a.proxy_protocol,
        })
    }

    /// docs/protocol.md §4 for listeners known only at start (socket
    /// activation): without a secret, only loopback and Unix sockets, unless
    /// `--allow-anonymous`.
    pub fn check_open_listeners(&self, addrs: &[ListenAddr]) -> Result<(), ConfigError> {
        if self.auth.is_some() || self.allow_anonymous {
            return Ok(());
        }
        match addrs.iter().find(|l| !l.is_loopback()) {
            Some(open) => Err(ConfigError::OpenOnNetwork(open.to_string())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("16777216"), Ok(16 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn modes_and_cidrs() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("01777").is_err());
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("proxy").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:8000"),
            Ok(ListenAddr::Tcp("127.0.0.1:8000".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("unix:/tmp/x.sock"),
            Ok(ListenAddr::Unix("/tmp/x.sock".into()))
        );
        assert!(parse_listen("unix:").is_err());
        assert!(parse_listen("localhost").is_err());
    }

    fn args(extra: &[&str]) -> ServerArgs {
        let mut v = vec!["bistream"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().server
    }

    #[test]
    fn defaults_run_open_on_loopback() {
        let c = Config::from_args(&args(&[]), 20_000).unwrap();
        assert!(c.auth.is_none());
        assert_eq!(c.max_connections, 20_000 - FD_HEADROOM);
        assert_eq!(c.max_queue_bytes, DEFAULT_MAX_QUEUE_BYTES);
        assert_eq!(c.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(c.max_head_size, DEFAULT_MAX_HEAD_SIZE);
        assert_eq!(c.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL);
        assert_eq!(c.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(c.history_size, DEFAULT_HISTORY_SIZE);
        assert_eq!(c.history_max_bytes, DEFAULT_HISTORY_MAX_BYTES);
        assert_eq!(c.history_ttl, DEFAULT_HISTORY_TTL);
        assert_eq!(c.last_values, DEFAULT_LAST_VALUES);
        assert_eq!(c.last_values_max_bytes, DEFAULT_LAST_VALUES_MAX_BYTES);
        assert_eq!(c.restart_spread, DEFAULT_RESTART_SPREAD);
        assert_eq!(c.handover_timeout, DEFAULT_HANDOVER_TIMEOUT);
        assert!(!c.proxy_protocol);
    }

    #[test]
    fn inherited_public_listeners_need_a_secret() {
        let open = Config::from_args(&args(&[]), 1024).unwrap();
        let public = [ListenAddr::Tcp("0.0.0.0:8000".parse().unwrap())];
        let local = [
            ListenAddr::Tcp("127.0.0.1:8000".parse().unwrap()),
            ListenAddr::Unix("/run/b.sock".into()),
        ];
        assert!(matches!(
            open.check_open_listeners(&public),
            Err(ConfigError::OpenOnNetwork(_))
        ));
        assert!(open.check_open_listeners(&local).is_ok());
        let anon = Config::from_args(&args(&["--allow-anonymous"]), 1024).unwrap();
        assert!(anon.check_open_listeners(&public).is_ok());
        let secret = "s".repeat(32);
        let auth = Config::from_args(&args(&["--jwt-secret", &secret]), 1024).unwrap();
        assert!(auth.check_open_listeners(&public).is_ok());
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies() {
        let e = Config::from_args(&args(&["--proxy-protocol"]), 1024);
        assert!(matches!(e, Err(ConfigError::ProxyWithoutTrust)));
        let ok = Config::from_args(
            &args(&["--proxy-protocol", "--trusted-proxies", "10.0.0.0/8"]),
            1024,
        );
        assert!(ok.is_ok_and(|c| c.proxy_protocol));
    }

    #[test]
    fn open_on_network_refused_unless_anonymous() {
        let e = Config::from_args(&args(&["--listen", "0.0.0.0:8000"]), 1024);
        assert!(matches!(e, Err(ConfigError::OpenOnNetwork(_))));
        let ok = Config::from_args(
            &args(&["--listen", "0.0.0.0:8000", "--allow-anonymous"]),
            1024,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn ambiguous_or_orphaned_secrets_refused() {
        let s = "x".repeat(32);
        let e = Config::from_args(
            &args(&["--jwt-secret", &s, "--jwt-secret-file", "/dev/null"]),
            1024,
        );
        assert!(matches!(e, Err(ConfigError::SecretTwice { .. })));
        let e = Config::from_args(&args(&["--jwt-secret-previous", &s]), 1024);
        assert!(matches!(e, Err(ConfigError::PreviousWithoutCurrent)));
        let ok = Config::from_args(
            &args(&["--jwt-secret", &s, "--jwt-secret-previous", &s]),
            1024,
        );
        assert!(ok.is_ok_and(|c| c.auth.is_some_and(|a| a.previous.is_some())));
    }

    #[test]
    fn describe_redacts_secrets() {
        let secret = "s".repeat(40);
        let c = Config::from_args(&args(&["--jwt-secret", &secret]), 1024).unwrap();
        let text = c.describe();
        assert!(text.contains("listen = 127.0.0.1:8000"));
        assert!(text.contains("auth = HS256, secret <redacted 40 bytes>"));
        assert!(!text.contains(&secret));
    }

    #[test]
    fn describe_shows_the_engine_without_redis_passwords() {
        let c = Config::from_args(
            &args(&[
                "--engine",
                "redis",
                "--redis-url",
                "redis://:s3cret@10.0.0.1:6379/2",
                "--redis-url",
                "redis://10.0.0.2:6379",
            ]),
            1024,
        )
        .unwrap();
        let text = c.describe();
        assert!(text.contains("engine = redis\n"), "{text}");
        assert!(
            text.contains("redis-url = redis://<redacted>@10.0.0.1:6379/2,redis://10.0.0.2:6379\n")
        );
        assert!(text.contains("engine-probe-interval = 5s\n"));
        assert!(text.contains("redis-timeout = 2s\n"));
        assert!(!text.contains("s3cret"));
    }

    #[test]
    fn short_secret_refused() {
        let e = Config::from_args(&args(&["--jwt-secret", "short"]), 1024);
        assert!(matches!(e, Err(ConfigError::Secret(_))));
    }
}
