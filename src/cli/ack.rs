//! `relay ack <ids…>`: confirm messages. With `--as`/`RELAY_AS`, only your own messages
//! can be acked. Exit 3 when any id is unknown, ambiguous or someone else's.

use serde::Serialize;

use super::{Ctx, EXIT_OK, EXIT_REJECTED, output};
use crate::store::{AckOutcome, AckResult, Store};

/// Arguments of `relay ack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Message ids or unique id prefixes (at least 4 characters).
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Serialize)]
struct Doc {
    results: Vec<AckResult>,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let me = match ctx.identity() {
        Some(_) => Some(ctx.me(&store)?),
        None => None,
    };
    let results = store.ack(me.as_ref().map(|m| m.id.as_str()), &a.ids)?;
    let failed = results.iter().any(|r| {
        matches!(
            r.outcome,
            AckOutcome::Unknown | AckOutcome::Ambiguous | AckOutcome::NotYours
        )
    });
    let doc = Doc { results };
    output::emit(ctx.json, &doc, || {
        doc.results
            .iter()
            .map(|r| {
                let what = match r.outcome {
                    AckOutcome::Acked => "acked",
                    AckOutcome::AlreadyAcked => "already acked",
                    AckOutcome::Unknown => "unknown message",
                    AckOutcome::Ambiguous => "ambiguous prefix; give more of the id",
                    AckOutcome::NotYours => "not addressed to you; left alone",
                };
                format!("{}: {what}", r.id)
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(if failed { EXIT_REJECTED } else { EXIT_OK })
}
