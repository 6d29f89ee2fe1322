//! `relay ack <ids…>`: confirm messages addressed to you (`--as`, `RELAY_AS` or the agent
//! session binding). Exit 3 when any id is unknown, ambiguous or someone else's.

use serde::Serialize;

use super::{Ctx, EXIT_OK, EXIT_REJECTED, output};
use crate::store::{AckOutcome, AckResult, Store};

/// Arguments of `relay ack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Message ids or unique id prefixes (at least 4 characters).
    #[arg(required = true, value_parser = super::parse_message_id)]
    pub ids: Vec<String>,
}

#[derive(Serialize)]
struct Doc {
    results: Vec<AckResult>,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    // Acking is the recipient's word that it read the message: only "me" may give it.
    let me = ctx.me(&store)?;
    let results = store.ack(Some(&me.id), &a.ids)?;
    let failed = results.iter().any(|r| {
        matches!(
            r.outcome,
            AckOutcome::Unknown | AckOutcome::Ambiguous | AckOutcome::NotYours
        )
    });
    let doc = Doc { results };
    output::emit_outcome(ctx.json, &doc, !failed, || {
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
