//! The hidden `worker` subcommand: the same binary, re-executed by the parent, runs
//! one subscriber loop with the spec it reads from stdin and reports on stdout.

use crate::subscriber::{Inbound, Subscribers};
use crate::worker::{from_line, to_line, Command, Report};
use std::io::{self, BufRead, Write};
use std::sync::mpsc;

fn emit(out: &mut io::StdoutLock, report: &Report) {
    // A parent that stopped reading is gone; the next stdin read ends the worker.
    let _ = writeln!(out, "{}", to_line(report));
    let _ = out.flush();
}

/// Runs a worker; the process exit code.
pub fn main() -> i32 {
    if let Err(e) = crate::rlimit::raise_nofile() {
        log::warn!("worker: cannot raise the open-file limit: {e}");
    }
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = io::stdout().lock();
    let spec = match lines.next() {
        Some(Ok(line)) => match from_line::<Command>(&line) {
            Ok(Command::Spec(spec)) => *spec,
            Ok(_) => {
                emit(
                    &mut out,
                    &Report::Fatal {
                        message: "first command must be the spec".into(),
                    },
                );
                return 3;
            }
            Err(e) => {
                emit(
                    &mut out,
                    &Report::Fatal {
                        message: e.to_string(),
                    },
                );
                return 3;
            }
        },
        _ => return 3, // no parent
    };
    drop(lines);
    let poll = match mio::Poll::new() {
        Ok(p) => p,
        Err(e) => {
            emit(
                &mut out,
                &Report::Fatal {
                    message: format!("poll: {e}"),
                },
            );
            return 3;
        }
    };
    let waker = match Subscribers::waker(&poll) {
        Ok(w) => w,
        Err(e) => {
            emit(
                &mut out,
                &Report::Fatal {
                    message: format!("waker: {e}"),
                },
            );
            return 3;
        }
    };
    let (tx, rx) = mpsc::channel();
    // Commands after the spec: a reader thread that wakes the loop.
    let reader = std::thread::Builder::new()
        .name("commands".into())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                let msg = match line {
                    Ok(l) => match from_line::<Command>(&l) {
                        Ok(c) => Inbound::Command(c),
                        Err(e) => {
                            log::error!("worker: {e}");
                            Inbound::ParentGone
                        }
                    },
                    Err(_) => Inbound::ParentGone,
                };
                let gone = matches!(msg, Inbound::ParentGone);
                if tx.send(msg).is_err() || waker.wake().is_err() || gone {
                    return;
                }
            }
            let _ = tx.send(Inbound::ParentGone);
            let _ = waker.wake();
        });
    if let Err(e) = reader {
        emit(
            &mut out,
            &Report::Fatal {
                message: format!("thread: {e}"),
            },
        );
        return 3;
    }
    let subs = Subscribers::new(spec, poll, rx);
    match subs.run(&mut |r| emit(&mut out, r)) {
        Ok(()) => 0,
        Err(e) => {
            emit(
                &mut out,
                &Report::Fatal {
                    message: format!("poll: {e}"),
                },
            );
            3
        }
    }
}
