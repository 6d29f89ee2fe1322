//! `relay status <msg-id>`: the receipt of one message.

use super::{Ctx, EXIT_OK, output};
use crate::store::Store;

/// Arguments of `relay status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Message id or unique id prefix (at least 4 characters).
    #[arg(value_parser = super::parse_message_id)]
    pub id: String,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let r = store.receipt(&a.id)?;
    output::emit(ctx.json, &r, || {
        let mut s = format!(
            "{} to {}: {}\n  queued    {}",
            r.id,
            r.to_name.as_deref().unwrap_or(&r.to),
            r.state,
            output::time(r.created_at)
        );
        if let Some(t) = r.delivered_at {
            s.push_str(&format!(
                "\n  delivered {} ({} time{})",
                output::time(t),
                r.deliveries,
                if r.deliveries == 1 { "" } else { "s" }
            ));
        }
        if let Some(t) = r.injected_at {
            s.push_str(&format!(
                "\n  injected  {} (into the idle session, in place)",
                output::time(t)
            ));
        }
        if let Some(t) = r.acked_at {
            s.push_str(&format!("\n  acked     {}", output::time(t)));
        }
        s
    });
    Ok(EXIT_OK)
}
