#![warn(missing_docs)]
//! relay — a local message bus for AI agent sessions and ordinary processes.
//!
//! Every participant is an **endpoint** with a name and a durable **mailbox**. A message
//! travels one way through the layers below; each layer only calls the one after it.
//!
//! # Layout (data-flow order)
//!
//! - [`cli`] and [`mcp`] — interfaces: parse what a person or a model asked for, print the
//!   result. They never touch SQL.
//! - [`route`] — [`route::decide`] picks a route from facts about the target (pure, no I/O);
//!   [`route::dispatch`] carries the decision out.
//! - [`store`] — the [`store::Store`] trait (endpoints, messages, receipts, leases, wait) and
//!   its SQLite backend, with a doorbell so waiters wake without polling.
//! - [`agents`] — agent sessions: identity bindings, hooks, fence, install, discover, wake.
//! - [`errors`] — stable error kinds and exit codes for scripts and models.
//! - [`config`] — where data lives (`RELAY_HOME`), durability, the body cap.
//! - [`bench`] — measurements behind `relay bench`, with their baselines.
//!
//! The live socket transport, shared-memory streams and agent hooks slot in later as
//! `wire/`, `transport/`, `shm/` and `agents/` (see DESIGN.md §3).

pub mod agents;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod errors;
pub mod mcp;
pub mod route;
pub mod shm;
pub mod store;
pub mod subprocess;
pub mod transport;
pub mod wire;
