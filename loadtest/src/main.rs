//! `bistream-loadtest`: see the library's documentation and docs/loadtest.md.

#![forbid(unsafe_code)]

use bistream_loadtest::cli::{Cli, Cmd};
use bistream_loadtest::run::{self, EXIT_FAILED, EXIT_USAGE};
use bistream_loadtest::{compare, floor, rlimit, soak, worker_process};
use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Cmd::Worker) => worker_process::main(),
        Some(Cmd::Floor(args)) => match args.validate() {
            Err(e) => {
                eprintln!("bistream-loadtest floor: {e}");
                EXIT_USAGE
            }
            Ok(cfg) => {
                raise_limit();
                match floor::run(&cfg) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("bistream-loadtest floor: {e}");
                        EXIT_FAILED
                    }
                }
            }
        },
        Some(Cmd::Soak(args)) => {
            let hard = raise_limit();
            match args.validate(hard) {
                Err(e) => {
                    eprintln!("bistream-loadtest soak: {e}");
                    EXIT_USAGE
                }
                Ok(cfg) => soak::run(&cfg),
            }
        }
        Some(Cmd::Compare(args)) => match args.validate() {
            Err(e) => {
                eprintln!("bistream-loadtest compare: {e}");
                EXIT_USAGE
            }
            Ok(cfg) => {
                // The servers and clients it starts inherit the raised limit.
                raise_limit();
                compare::run(&cfg)
            }
        },
        None => {
            let hard = raise_limit();
            match cli.run.validate(hard) {
                Err(e) => {
                    eprintln!("bistream-loadtest: {e}");
                    EXIT_USAGE
                }
                Ok(cfg) => run::run(&cfg),
            }
        }
    };
    std::process::exit(code);
}

/// Raises the soft open-file limit to the hard one; answers the hard limit.
fn raise_limit() -> u64 {
    match rlimit::raise_nofile() {
        Ok((_, hard)) => hard,
        Err(e) => {
            log::warn!("cannot raise the open-file limit: {e}");
            1024
        }
    }
}
