//! WebSocket framing (sans-io) and the per-connection outbound queue.

pub mod close;
pub mod frame;
pub mod messages;
pub mod outbound;
pub mod reader;
