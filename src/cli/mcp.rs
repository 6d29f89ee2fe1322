//! `relay mcp`: serve the relay tools over MCP on stdio.

use super::{Ctx, EXIT_OK};

/// Arguments of `relay mcp`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Add it to an agent once:
  claude mcp add relay -- relay mcp
  codex mcp add relay -- relay mcp
Tools: whoami, register, roster, send, inbox, ack, wait, status. stdout carries only MCP
frames; logs go to stderr (RELAY_LOG=debug for more).")]
pub struct Args {}

pub(crate) fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = rt.block_on(crate::mcp::serve_stdio(ctx.config.clone(), ctx.as_.clone()));
    // A tool call still blocked in `wait` must not keep the process alive after the client
    // left: its messages are only leased, never acked, so dropping it loses nothing.
    rt.shutdown_background();
    served?;
    Ok(EXIT_OK)
}
