//! `relay gc`: delete acked messages older than N days, expired ones, and bindings of
//! agent processes that are gone.

use std::time::Duration;

use serde::Serialize;

use super::{Ctx, EXIT_OK, output};
use crate::agents::procfs;
use crate::store::{GcReport, ProcessRef, Store};

/// Arguments of `relay gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Delete acked messages acked more than this many days ago.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
}

#[derive(Serialize)]
struct Doc {
    #[serde(flatten)]
    messages: GcReport,
    /// Bindings whose agent process (pid + start time) no longer runs.
    bindings_deleted: u64,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let messages = store.gc(Duration::from_secs(u64::from(a.days) * 86_400))?;
    let stale: Vec<ProcessRef> = store
        .bindings()?
        .into_iter()
        .map(|b| b.process)
        .filter(|p| !procfs::alive(*p))
        .collect();
    let doc = Doc {
        messages,
        bindings_deleted: store.unbind(&stale)?,
    };
    output::emit(ctx.json, &doc, || {
        format!(
            "deleted {} acked message(s) older than {} day(s), {} expired message(s) and {} stale session binding(s)",
            doc.messages.acked_deleted, a.days, doc.messages.expired_deleted, doc.bindings_deleted
        )
    });
    Ok(EXIT_OK)
}
