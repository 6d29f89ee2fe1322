//! `relay gc`: delete acked messages older than N days, and expired ones.

use std::time::Duration;

use super::{Ctx, EXIT_OK, output};
use crate::store::Store;

/// Arguments of `relay gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Delete acked messages acked more than this many days ago.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let report = store.gc(Duration::from_secs(u64::from(a.days) * 86_400))?;
    output::emit(ctx.json, &report, || {
        format!(
            "deleted {} acked message(s) older than {} day(s) and {} expired message(s)",
            report.acked_deleted, a.days, report.expired_deleted
        )
    });
    Ok(EXIT_OK)
}
