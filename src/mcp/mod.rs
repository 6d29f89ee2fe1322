//! `relay mcp`: the relay tools over MCP on stdio, with the official Rust SDK (`rmcp`).
//!
//! stdout carries protocol frames only (newline-delimited JSON-RPC); logs go to stderr.
//! Lines that are not JSON are ignored by the transport and the server keeps serving.
//! Tool failures are tool results with `isError: true` whose text is a JSON object
//! `{"error": <kind>, "message": <what was wrong and what would be right>}`; kinds are the
//! stable names of [`crate::errors::classify`].

mod server;
mod stdio;

pub use server::RelayServer;
pub use stdio::{AfterWrite, MAX_LINE, Stdio};

use rmcp::ServiceExt;

use crate::config::Config;

/// Serves MCP on stdin/stdout until the client disconnects.
///
/// `as_` is the identity from `--as` (else `RELAY_AS` is used, else none until the
/// `register` tool is called).
///
/// # Errors
/// When the transport fails to start or the initialize handshake fails.
pub async fn serve_stdio(config: Config, as_: Option<String>) -> anyhow::Result<()> {
    let server = RelayServer::new(config, as_);
    let after = server.after_write();
    let transport = Stdio::new(tokio::io::stdin(), tokio::io::stdout(), after.clone());
    // Agents end their MCP servers with SIGTERM (Claude Code does, right after a
    // `claude -p` run's last tool call), often before stdin's end is read: settle the mail
    // of written responses then too, or it would stay unacked though the client had it.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let running = server.serve(transport).await?;
    let ended = tokio::select! {
        ended = running.waiting() => ended.map(drop).map_err(anyhow::Error::from),
        _ = term.recv() => Ok(()),
        _ = hup.recv() => Ok(()),
    };
    // However the session ended, no cancel can come now: settle what is left.
    after.finish();
    ended
}
