//! # bistream-loadtest
//!
//! The load generator of bistream, and the floor server it is measured against.
//!
//! ## Layout
//!
//! - [`cli`]: flags → validated [`cli::RunConfig`] / [`floor::FloorConfig`] (usage errors exit 2)
//! - [`run`]: the parent of a run: workers, publisher, progress, summary, exit code
//! - [`worker`]: the parent–worker protocol (JSON lines, HDR histograms as hex)
//! - [`worker_process`]: the hidden `worker` subcommand around [`subscriber`]
//! - [`subscriber`]: one mio loop over thousands of WebSocket subscribers
//! - [`handshake`], [`wsframe`], [`message`]: sans-io upgrade, frames, server messages
//! - [`accounting`]: loss and order by `seq`, per connection
//! - [`publisher`]: `POST /api/events` on one keep-alive connection, paced
//! - [`report`]: the summary, its table and its JSON
//! - [`slo`]: `--slo` parsing and verdicts
//! - [`tokens`]: HS256 tokens for servers with auth on
//! - [`streams`], [`target`], [`units`]: channels and paths, the loopback rule, units
//! - [`floor`]: the minimal server: same paths and API, frames built once, writev fan-out
//! - [`rlimit`]: raising the open-file limit (through the `rlimit` crate)
//!
//! ## Data flow of a run
//!
//! ```text
//! parent: cli ─► run ─spawn─► worker processes (subscriber loops) ─ready─► run
//!         run ─► publisher thread ─POST─► server ─event frames─► subscriber loops
//!         run ─finish(published per stream)─► workers ─final(histograms, tallies)─► run
//!         run ─► report (table / JSON) ─► slo verdicts ─► exit code
//! ```

#![forbid(unsafe_code)]

pub mod accounting;
pub mod cli;
pub mod floor;
pub mod handshake;
pub mod message;
pub mod publisher;
pub mod report;
pub mod rlimit;
pub mod run;
pub mod slo;
pub mod streams;
pub mod subscriber;
pub mod target;
pub mod tokens;
pub mod units;
pub mod worker;
pub mod worker_process;
pub mod wsframe;
