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
    let transport = Stdio::new(
        tokio::io::stdin(),
        tokio::io::stdout(),
        server.after_write(),
    );
    let running = server.serve(transport).await?;
    running.waiting().await?;
    Ok(())
}
