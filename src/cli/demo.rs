//! `relay demo` and the hidden `relay demo-child`: arguments and printing. The demo itself
//! is [`crate::demo`].

use super::{Ctx, EXIT_FAILURE, EXIT_OK, output};
use crate::demo::{self, Role};
use crate::store::Store;

/// Arguments of `relay demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent sender processes in the burst [range: 1-64]
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub senders: u32,
    /// Messages each sender sends [range: 1-100000]
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub per_sender: u32,
    /// Request/reply rounds in the conversation [range: 1-1000]
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Keep the temporary RELAY_HOME and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// Arguments of the hidden `relay demo-child` (one demo process).
#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    /// What this process does.
    #[arg(value_enum)]
    pub role: Role,
    /// The other endpoint.
    #[arg(long)]
    pub peer: String,
    /// Messages or rounds.
    #[arg(long)]
    pub count: u32,
}

pub(crate) fn child(ctx: &Ctx, a: ChildArgs) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    let peer = store.resolve(&a.peer)?;
    demo::child(&store, &me, &peer, a.role, a.count)?;
    Ok(EXIT_OK)
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let options = demo::Options {
        senders: a.senders,
        per_sender: a.per_sender,
        rounds: a.rounds,
        keep: a.keep,
        progress: !ctx.json,
    };
    let say = |s: String| {
        if !ctx.json {
            output::line(&s);
        }
    };
    let summary = demo::run(&ctx.config, &options, &say)?;
    let failure = summary.failure();
    output::emit_outcome(ctx.json, &summary, failure.is_none(), || summary.human());
    if let Some(kept) = &summary.kept {
        say(format!("kept {}", kept.display()));
    }
    if let Some(why) = failure {
        eprintln!("relay demo: {why}");
        return Ok(EXIT_FAILURE);
    }
    Ok(EXIT_OK)
}
