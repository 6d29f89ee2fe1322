//! The real agent CLIs (Claude Code 2.1.332, Codex 0.171.0, pi 0.73.1, OpenCode 1.18.33) against a stand-in model
//! ([`relay::standin`]): what relay's install, hooks, MCP server and idle waiter put into
//! the requests that reach the model. Each test has its own HOME, RELAY_HOME, cwd and
//! model; a missing client skips with a `skipped:` line, or fails under
//! `RELAY_REQUIRE_AGENTS=1` (CI). Run alone: `cargo test --test real_agents`.

mod common;

#[path = "real_agents/clients.rs"]
mod clients;

#[path = "real_agents/harness.rs"]
mod harness;

#[path = "real_agents/claude.rs"]
mod claude;

#[path = "real_agents/codex.rs"]
mod codex;

#[path = "real_agents/codex_tui.rs"]
mod codex_tui;

#[path = "real_agents/pi.rs"]
mod pi;

#[path = "real_agents/opencode.rs"]
mod opencode;
