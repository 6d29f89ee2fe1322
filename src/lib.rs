#![warn(missing_docs)]
//! relay — a local message bus for AI agent sessions and ordinary processes.
//!
//! Every participant is an **endpoint** with a name and a durable **mailbox**. A message
//! travels one way through the layers below, in this order; a layer calls only layers
//! after it (the router's fact and result types, such as [`route::Sent`], are shared).
//!
//! # Layout (data-flow order)
//!
//! Interfaces — what a person, a model or an agent asked for comes in here, and the result
//! goes out; they never touch SQL:
//! - [`cli`] — the `relay` command line: one thin file per subcommand.
//! - [`mcp`] — the relay tools over MCP on stdio.
//! - [`watch`] — `relay watch`: a live full-screen terminal view, fed by the event stream.
//! - [`agents::hook`] — agent hooks (SessionStart, UserPromptSubmit, PostToolUse, Stop) that
//!   put mail into a session's context, behind the untrusted-data [`agents::fence`].
//!
//! Coordination — what interfaces ask beyond mail, over the store trait:
//! - [`coord`] — the project a session works in, search results, conversations
//!   (threads and reply chains) and file reservations; the query language and the glob
//!   overlap rule are the store's ([`store::query`], [`store::overlap`]), and
//!   [`agents::presence`] says who is actually there.
//!
//! Routing — every send goes through here:
//! - [`route`] — [`route::decide`] picks a route (live, inject, mailbox, wake, reject) from
//!   facts about the target and the loop guard's counts (pure, no I/O); [`route::dispatch`]
//!   gathers the facts and carries the decision out.
//!
//! Carriers — where a routed message goes:
//! - [`transport`] — live delivery over a Unix socket: framed connections, the versioned
//!   handshake, peer-uid checks, heartbeats and supervision; it speaks [`wire`], the frame
//!   format and message catalogue (no I/O of its own).
//! - [`shm`] — shared-memory byte streams and frame buffers between live endpoints, set up
//!   over the transport.
//! - [`store`] — the durable mailbox: the [`store::Store`] trait (endpoints, messages,
//!   receipts, leases, wait, history and full-text search, reservations), chosen by [`store::open`]: SQLite on one machine (a doorbell
//!   file so waiters wake without polling), or NATS JetStream across machines
//!   ([`store::NatsStore`], feature `nats`: a mail stream, receipts changed by
//!   compare-and-set, a doorbell subject).
//! - [`agents`]' session APIs — who a session is ([`agents::identity`]), config install,
//!   session discovery, in-place delivery to an idle session ([`agents::idle`], Claude
//!   Code's waiter; [`agents::codex_app`], a turn through Codex's app-server), and
//!   [`agents::wake`] for a dormant session.
//!
//! Alongside:
//! - [`demo`] — `relay demo`: the main job on real processes, with a lost/duplicated count.
//! - [`bench`](mod@bench) — measurements behind `relay bench`, with their baselines.
//! - [`config`] — where data lives (`RELAY_HOME`), durability, the body cap.
//! - [`errors`] — stable error kinds and exit codes for scripts and models.
//! - [`clock`] — wall-clock milliseconds and microseconds.
//! - [`subprocess`] — line-by-line output of child relay processes, with deadlines.
//! - [`standin`] — a stand-in model server on 127.0.0.1 for real agent CLIs in tests, benches.
//! - [`natsd`] — a local nats-server cluster (127.0.0.1) for tests, the demo and benches.

pub mod agents;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod coord;
pub mod demo;
pub mod errors;
pub mod mcp;
pub mod natsd;
pub mod route;
pub mod shm;
pub mod standin;
pub mod store;
pub mod subprocess;
pub mod transport;
pub mod watch;
pub mod wire;
