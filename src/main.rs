//! `bistream`: parse the configuration, start the server, wait for a signal
//! (`bistream::lifecycle`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use bistream::auth::{mint, MintRequest};
use bistream::config::{raise_fd_limit, Cli, Command, Config, TokenArgs};
use bistream::lifecycle::Startup;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.server.log_level.clone();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    // First, while this is the only thread: the path to start again on
    // SIGUSR2, and the sockets systemd or an old process passed.
    let startup = match Startup::capture() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bistream: {e}");
            return ExitCode::from(2);
        }
    };
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
        None => bistream::lifecycle::serve(config, startup),
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
