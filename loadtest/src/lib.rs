//! # bistream-loadtest
//!
//! The load generator of bistream, and the floor server it is measured against.
//!
//! ## Layout
//!
//! - [`cli`]: flags → validated [`cli::RunConfig`] / [`floor::FloorConfig`] (usage errors exit 2)
//! - [`run`]: the parent of a run: workers, publisher, progress, summary, exit code
//! - [`compare`]: the floor and bistream alternately, fresh each run, medians and ratios
//! - [`soak`]: connection churn under a steady publish rate; RSS, fds and history must come back
//! - [`worker`]: the parent–worker protocol (JSON lines, HDR histograms as hex)
//! - [`worker_process`]: the hidden `worker` subcommand around [`subscriber`]
//! - [`subscriber`]: one mio loop over thousands of WebSocket subscribers: its sans-io
//!   frame reader and connection sessions, its counters, its event loop
//! - [`handshake`], [`wsframe`], [`message`]: sans-io upgrade, frames, server messages
//! - [`accounting`]: loss and order by `seq`, per connection
//! - [`publisher`]: `POST /api/events` on one keep-alive connection, paced
//! - [`report`]: the summary, its table and its JSON
//! - [`slo`]: `--slo` parsing and verdicts
//! - [`procstat`]: the server's RSS, CPU time and descriptors from /proc
//! - [`tokens`]: HS256 tokens for servers with auth on
//! - [`contract`]: identifier syntax and publish limits, restated from the wire contract
//! - [`streams`], [`target`], [`units`]: channels and paths, the loopback rule, units
//! - [`floor`]: the minimal server: same paths and API, frames built once, writev fan-out
//! - [`rlimit`]: raising the open-file limit (through the `rlimit` crate)
//!
//! ## Independent of the server, on purpose
//!
//! The harness has its own WebSocket frame codec, upgrade parser, message parser and
//! HTTP client, and its floor server its own request parser; none of them comes from the
//! `bistream` crate, although it is in the same workspace. A load generator that reads
//! the server's frames with the server's own parser would share its bugs and hide them:
//! a frame the server encodes wrongly would be decoded just as wrongly. Where the two
//! restate the same contract (location syntax, body and batch limits), a test
//! (`tests/contract_limits.rs`) holds them equal, so they cannot drift apart.
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
pub mod compare;
pub mod contract;
pub mod floor;
pub mod handshake;
pub mod message;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod rlimit;
pub mod run;
pub mod slo;
pub mod soak;
pub mod streams;
pub mod subscriber;
pub mod target;
pub mod tokens;
pub mod units;
pub mod worker;
pub mod worker_process;
pub mod wsframe;
