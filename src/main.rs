//! `bistream`: parse the configuration, start the server, wait for a signal, drain.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use bistream::auth::{mint, MintRequest};
use bistream::config::{raise_fd_limit, Cli, Command, Config, TokenArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.server.log_level.clone();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    let fd_limit = raise_fd_limit();
    let config = match Config::from_args(&cli.server, fd_limit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bistream: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.server.check_config {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Token(t)) => token(&config, &t),
        None => serve(config),
    }
}

fn token(config: &Config, t: &TokenArgs) -> ExitCode {
    let Some(auth) = &config.auth else {
        eprintln!("bistream token: no secret configured (set JWT_SECRET_KEY or --jwt-secret-file)");
        return ExitCode::from(2);
    };
    let req = MintRequest {
        sub: t.sub.clone(),
        locations: t.locations.clone(),
        channels: (!t.channels.is_empty()).then(|| t.channels.clone()),
        publisher: t.publisher,
        ttl: t.ttl,
        now_unix: bistream::clock::wall_secs(),
    };
    for c in &t.channels {
        if bistream::channel::Channel::from_id(c).is_none() {
            eprintln!("bistream token: unknown channel `{c}`");
            return ExitCode::from(2);
        }
    }
    match mint(&auth.secret, &req) {
        Ok(tok) => {
            println!("{tok}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bistream token: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let drain_timeout = config.drain_timeout;
    let auth_mode = if config.auth.is_some() {
        "HS256 tokens required"
    } else {
        "OPEN (no tokens checked)"
    };
    let threads = config.threads;
    let max_conn = config.max_connections;
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bistream: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let mut server = match bistream::server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bistream: {e}");
            return ExitCode::from(1);
        }
    };
    for a in &server.addrs {
        log::info!("bistream {} listening on {a}", env!("CARGO_PKG_VERSION"));
    }
    log::info!(
        "{threads} event loop(s), max {max_conn} connections, auth: {auth_mode}, epoch {}",
        server.shared.epoch
    );
    if server.shared.verifier.is_none() {
        log::warn!(
            "NO JWT_SECRET_KEY: the server is running OPEN; anyone who can reach it may \
             subscribe to any stream and publish. Set JWT_SECRET_KEY for real deployments."
        );
    }
    if server.shared.config.demo {
        log::info!("demo source on: publishing to loc-1, loc-2, loc-3 every second");
    }

    let first = signals.forever().next();
    log::info!(
        "received {}: draining (up to {:?})",
        if first == Some(SIGINT) {
            "SIGINT"
        } else {
            "SIGTERM"
        },
        drain_timeout
    );
    server.drain();
    let deadline = std::time::Instant::now() + drain_timeout + Duration::from_millis(500);
    loop {
        if server.wait(Duration::from_millis(50)) {
            break;
        }
        if signals.pending().next().is_some() {
            log::warn!("second signal: exiting now");
            server.remove_socket_files();
            return ExitCode::from(1);
        }
        if std::time::Instant::now() >= deadline {
            log::warn!("drain timeout passed; exiting");
            break;
        }
    }
    server.finish();
    log::info!("drained; bye");
    ExitCode::SUCCESS
}
