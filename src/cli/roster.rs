//! `relay roster`: every endpoint and its pending mail.

use serde::Serialize;

use super::{Ctx, EXIT_OK, output};
use crate::store::{RosterEntry, Store};

/// Arguments of `relay roster`.
#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Serialize)]
struct Doc {
    endpoints: Vec<RosterEntry>,
}

pub(crate) fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let doc = Doc {
        endpoints: store.roster()?,
    };
    output::emit(ctx.json, &doc, || {
        if doc.endpoints.is_empty() {
            return "no endpoints yet; create one with `relay register NAME`".into();
        }
        let mut s = format!(
            "{:<20} {:<36} {:<12} {:>7}  CWD\n",
            "NAME", "ID", "KIND", "PENDING"
        );
        for r in &doc.endpoints {
            let e = &r.endpoint;
            s.push_str(&format!(
                "{:<20} {:<36} {:<12} {:>7}  {}\n",
                e.name.as_deref().unwrap_or("-"),
                e.id,
                e.kind.as_str(),
                r.pending,
                output::escape_line(e.cwd.as_deref().unwrap_or("-"))
            ));
        }
        s
    });
    Ok(EXIT_OK)
}
