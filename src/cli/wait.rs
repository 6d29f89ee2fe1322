//! `relay wait`: block until mail arrives (woken by the doorbell), then print it like
//! `relay inbox` does. Exit 4 when the timeout passes with no mail.

use std::time::Duration;

use serde::Serialize;

use super::inbox::{ReadArgs, print_then_ack};
use super::{Ctx, EXIT_OK, EXIT_TIMEOUT, output, parse_duration};
use crate::store::{MAX_WAIT, Store};

/// Arguments of `relay wait`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status 4 (and \"timed_out\": true with --json) when no \
matching message arrived in time. Example, answering requests in a loop:
  while relay wait --as bob --timeout 5m --thread build; do ...; done"
)]
pub struct Args {
    /// How long to wait, at most 300s (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Which messages, and what reading does to them (as for `inbox`).
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Serialize)]
struct TimedOut {
    messages: [(); 0],
    acked: bool,
    timed_out: bool,
    waited_ms: u128,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    if a.timeout > MAX_WAIT {
        return Err(super::UsageError(format!(
            "--timeout {}s is over the 300s limit; wait in a loop for longer",
            a.timeout.as_secs()
        ))
        .into());
    }
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    let req = a.read.fetch(&store)?;
    let messages = store.wait(&me.id, &req, a.timeout)?;
    if messages.is_empty() {
        let doc = TimedOut {
            messages: [],
            acked: false,
            timed_out: true,
            waited_ms: a.timeout.as_millis(),
        };
        output::emit_outcome(ctx.json, &doc, false, String::new);
        eprintln!(
            "relay: no mail for {} within {}",
            me.display_name(),
            humantime::format_duration(a.timeout)
        );
        return Ok(EXIT_TIMEOUT);
    }
    print_then_ack(
        ctx,
        &store as &dyn Store,
        &me.id,
        messages,
        a.read.acks(),
        Some(false),
    )?;
    Ok(EXIT_OK)
}
