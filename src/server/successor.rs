//! The new process's side of a hand-over (docs/protocol.md §11): it holds the
//! old process's listening sockets and the channel to it (`inherit`), says
//! `Hello`, imports the state before anything is accepted, builds the server,
//! says `Prepared`, and launches its loops only once the old process has
//! committed (`handover::wire`). If anything fails it says `Failed` (or just
//! exits) and never serves: the old process goes on.

use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::config::Config;
use crate::handover::wire::{self, Msg, WireError, COMMIT_OWNS_SOCKET_FILES};
use crate::hub::transfer;
use crate::server::{prepare, ListenSocket, Listeners, Server};

#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    #[error("the channel to the old process: {0}")]
    Channel(#[from] WireError),
    #[error("the old process sent {0} where its state was due")]
    Unexpected(&'static str),
    #[error("the state cannot be imported: {0}")]
    State(#[from] transfer::StateError),
    #[error(transparent)]
    Start(#[from] crate::server::StartError),
}

/// Takes over from the old process at the other end of `channel`.
/// `started`: when this process started, for the duration metric.
pub fn take_over(
    config: Config,
    sockets: Vec<ListenSocket>,
    mut channel: UnixStream,
    started: Instant,
) -> Result<Server, TakeOverError> {
    let deadline = started + config.handover_timeout;
    // The state is history and last values (each bounded by its byte cap) plus
    // their bookkeeping; the old process runs with these very settings.
    let max_state =
        4 * (config.history_max_bytes as u64 + config.last_values_max_bytes as u64) + (64 << 20);
    wire::write(
        &mut channel,
        &Msg::Hello {
            pid: std::process::id(),
        },
        deadline,
    )?;
    let t0 = Instant::now();
    let (state, bytes) = match wire::read(&mut channel, deadline, max_state)? {
        Msg::State(b) => (Some(b), true),
        Msg::NoState => (None, false),
        other => return Err(TakeOverError::Unexpected(other.name())),
    };
    let received = state.as_ref().map_or(0, Vec::len);
    let received_in = t0.elapsed();
    let prepared = state
        .as_deref()
        .map(transfer::decode)
        .transpose()
        .map_err(TakeOverError::from)
        .and_then(|state| {
            prepare(config, Listeners::Inherited(sockets), state).map_err(TakeOverError::from)
        });
    let mut prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = wire::write(&mut channel, &Msg::Failed(e.to_string()), deadline);
            return Err(e);
        }
    };
    if let Some(i) = prepared.imported() {
        log::info!(
            "hand-over: imported {} stream(s), {} history event(s), {} last value(s) ({received} \
             bytes, received in {} ms, imported in {} ms)",
            i.streams,
            i.history,
            i.last_values,
            received_in.as_millis(),
            (t0.elapsed() - received_in).as_millis()
        );
    } else if !bytes {
        log::info!("hand-over: no state to import (the engine keeps it elsewhere)");
    }
    wire::write(&mut channel, &Msg::Prepared, deadline)?;
    let flags = match wire::read(&mut channel, deadline, 64)? {
        Msg::Commit { flags } => flags,
        other => return Err(TakeOverError::Unexpected(other.name())),
    };
    if flags & COMMIT_OWNS_SOCKET_FILES != 0 {
        prepared.own_socket_files();
    }
    let metrics = prepared.shared().metrics.clone();
    let server = prepared.launch()?;
    metrics.handover_state_bytes.set(received as i64);
    metrics
        .handover_duration
        .set(started.elapsed().as_secs_f64());
    Ok(server)
}
