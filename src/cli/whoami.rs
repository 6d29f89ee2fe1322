//! `relay whoami`: which endpoint this command acts as, and how that was decided.

use super::{Ctx, EXIT_OK, output};
use crate::agents::identity::Source;

/// Arguments of `relay whoami`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Identity: --as, else RELAY_AS, else the agent session this \
command runs in (bound by relay's SessionStart hook), else none (exit 2 with what to do)."
)]
pub struct Args {}

pub(crate) fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let me = ctx.whoami(&store)?;
    output::emit(ctx.json, &me, || {
        let how = match (me.source, me.process) {
            (Source::Binding, Some(p)) => format!("bound to agent process {}", p.pid),
            (s, _) => format!("from {}", s.describe()),
        };
        format!(
            "{} (id {}, kind {}) — {how}",
            me.endpoint.display_name(),
            me.endpoint.id,
            me.endpoint.kind
        )
    });
    Ok(EXIT_OK)
}
