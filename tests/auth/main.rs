//! Authentication and authorisation (docs/protocol.md §4 and the docs/protocol.md §1 refusals)
//! against the real server, one module per part of the contract:
//!
//! - [`sources`]: where tokens come from (query, bearer header, precedence).
//! - [`validation`]: what a token must pass; every failure's 401 code.
//! - [`grants`]: locations and channels a valid token grants; 403 otherwise.
//! - [`expiry`]: open connections closed 1008 at `exp` + leeway.
//! - [`publish`]: publisher tokens and their scope (docs/protocol.md §5).
//! - [`rotation`]: the previous secret during a rotation; secret files.
//! - [`origins`]: `--allowed-origins` matches exactly; no `Origin` passes.
//! - [`paths`]: odd paths are 400 and never authorised elsewhere (docs/protocol.md §1 item 7).
//! - [`precedence`]: which refusal wins where auth is involved (docs/protocol.md §1).
//! - [`secrecy`]: no token in any body or log line.
//! - [`startup`]: fail closed at start-up.
//! - [`cli`]: `bistream token`.
//! - [`environment`]: the harness clears every variable the server reads.
//!
//! [`tokens`] signs tokens; [`servers`] starts auth-enabled servers (through
//! tests/common, like every suite) and sends raw requests.

#[path = "../common/mod.rs"]
mod common;
mod servers;
mod tokens;

mod cli;
mod environment;
mod expiry;
mod grants;
mod origins;
mod paths;
mod precedence;
mod publish;
mod rotation;
mod secrecy;
mod sources;
mod startup;
mod validation;
