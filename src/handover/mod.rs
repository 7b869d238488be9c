//! Restarting without dropping anyone's place (docs/protocol.md §11): the
//! pieces of a hand-over that do not depend on the server's insides.
//!
//! - [`exe`]: the path the server was started from, and its arguments.
//! - [`wire`]: the messages on the channel between the old and new process.
//! - [`sd_notify`]: telling systemd that the new process is the service now.
//!
//! The state itself is `hub::transfer`; the sockets are `server::inherit`;
//! the sequence (fence, export, commit, retire) is `server::handover`.

pub mod exe;
pub mod sd_notify;
pub mod wire;

/// Set (to `1`) in the environment of the new process of a hand-over: its last
/// inherited descriptor is the channel to the old process, not a listener.
/// Read only together with `LISTEN_FDS`.
pub const MARKER_VAR: &str = "BISTREAM_HANDOVER";
