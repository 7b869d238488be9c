//! What each subscriber connection received, judged against what was published, all
//! sans-io:
//!
//! - [`seq`]: an ordinary connection: every seq after its base, once and in order
//!   (losses, gaps, duplicates, late arrivals)
//! - [`conflate`]: a conflating connection (`conflate=1`, docs/protocol.md §9): seqs
//!   ascend but may skip; its last value of each key must be the last one published
//! - [`snapshot`]: a connection that asked for the last values on connect
//!   (`snapshot=1`): the snapshot events, their marker, then live events

pub mod conflate;
pub mod seq;
pub mod snapshot;

pub use conflate::{ConflateTally, ConflateTracker, LastValues};
pub use seq::{SeqOutcome, SeqTracker, Tally, MAX_TRACKED_GAPS};
pub use snapshot::{SnapshotCheck, SnapshotTally};
