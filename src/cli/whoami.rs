//! `relay whoami`: which endpoint this command acts as, and why.

use serde::Serialize;

use super::{Ctx, EXIT_OK, output, resolve_me};
use crate::identity::{self, Source};
use crate::store::Endpoint;

/// Arguments of `relay whoami`.
#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Serialize)]
struct Doc {
    endpoint: Endpoint,
    source: Source,
}

pub(crate) fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<u8> {
    let id = ctx
        .identity()
        .ok_or_else(|| super::UsageError(identity::HOW_TO_SET.into()))?;
    let store = ctx.store()?;
    let endpoint = resolve_me(&store, &id)?;
    let doc = Doc {
        endpoint,
        source: id.source,
    };
    output::emit(ctx.json, &doc, || {
        let how = match doc.source {
            Source::Flag => "from --as",
            Source::Env => "from RELAY_AS",
            Source::Register => "registered in this session",
        };
        format!(
            "{} (id {}, kind {}) — {how}",
            doc.endpoint.display_name(),
            doc.endpoint.id,
            doc.endpoint.kind
        )
    });
    Ok(EXIT_OK)
}
