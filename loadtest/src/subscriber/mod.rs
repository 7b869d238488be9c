//! The subscriber side of a worker: one mio loop driving thousands of WebSocket
//! connections.
//!
//! - [`reader`]: sans-io reader of server frames (partial frames, fragments, control frames)
//! - [`session`]: one connection's state, sans-io: upgrade, messages, accounting, end
//! - [`stats`]: the worker's counters and histograms, its progress and final reports
//! - [`churn`]: how and when churned connections end (the soak), connect pacing
//! - [`event_loop`]: the mio loop: sockets, connect rate, deadlines, commands
//!
//! ```text
//! socket ─read─► event_loop ─bytes─► Session ─► FrameReader ─frames─► Session ─► Stats, SeqTracker
//!        ◄─write─ event_loop ◄─out (upgrade request, pongs, close replies)─┘
//! ```

pub mod churn;
pub mod event_loop;
pub mod reader;
pub mod session;
pub mod stats;

pub use event_loop::{io_kind, Subscribers, WAKER};

/// What the command thread passes to the loop.
pub enum Inbound {
    Command(crate::worker::Command),
    /// The parent closed our stdin: stop now.
    ParentGone,
}
