//! # bistream
//!
//! A real-time BI event server: clients hold WebSocket connections, back-end
//! services `POST /api/events`, and each event is fanned out to every client
//! of its stream. No async runtime: a few `mio` loops and one publisher thread.
//!
//! # Layout (the path of one event, top to bottom)
//!
//! ```text
//!  accept ──► http::head ──► http::router ──► http::upgrade ─┐      POST /api/events
//!  (server::event_loop)       (sans-io)        (+ auth)       │      http::publish
//!                                                             ▼          │
//!                         hub::publisher (one thread: seq, history) ◄────┘
//!                                │ encodes each event once (hub::event)
//!                                ▼ crossbeam channel + mio::Waker, per loop
//!  server::event_loop ── hub::subscriptions ──► ws::outbound (shared Bytes)
//!                                                   │ one writev per socket
//!                                                   ▼
//!                                         socket ── server::close
//! ```
//!
//! - [`config`]: flags and environment → validated [`config::Config`].
//! - [`channel`]: the six channels and the id syntax.
//! - [`http`]: request heads, routes, upgrade checks, publish bodies, responses.
//! - [`ws`]: client frame reader, server frames, messages, the outbound queue.
//! - [`hub`]: the publisher thread, streams, history and last values, subscriptions.
//! - [`engine`]: where stream state lives with `--engine redis` (several nodes).
//! - [`server`]: start-up, the event loops, connection phases, closing, drain.
//! - [`auth`]: HS256 token checks (pure).
//! - [`clock`]: wall-clock ms for the wire, monotonic ns stamps for latency.
//! - [`proxy_protocol`]: PROXY protocol v1/v2 header parser (sans-io).
//! - [`metrics`]: metric names and the Prometheus registry.
//! - [`demo`]: the `--demo` event source.
//! - [`console`]: the `--console` page and `GET /api/stats`.
//! - [`lifecycle`]: start-up and signals: drain, hand-over.
//! - [`handover`]: restarts on `SIGUSR2`: the channel to the new process, the
//!   executable's path, systemd notifications (with `server::handover`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod channel;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod engine;
pub mod handover;
pub mod http;
pub mod hub;
pub mod lifecycle;
pub mod metrics;
pub mod proxy_protocol;
pub mod server;
pub mod ws;
