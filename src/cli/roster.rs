//! `relay roster`: every endpoint, its presence (agents::presence), when it was last seen
//! and its pending mail.

use serde::Serialize;

use super::{Ctx, EXIT_OK, output};
use crate::agents::presence::{self, PresentEntry};

/// Arguments of `relay roster`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "HOST is the machine an endpoint last registered from (RELAY_HOST, else the \
host name; '-' for endpoints stored before relay recorded hosts). With a NATS store the \
roster spans machines; a pid or a socket means something only on its own host.
PRESENCE is derived each time, never stored: live (its socket answers), active (its process \
runs), idle (at its prompt with mail injected in place, or a mailbox with no process \
recorded), dormant (not running, resumable with relay wake), gone. An endpoint of another \
host is judged from LAST SEEN only. --json gives each endpoint's presence, last_seen (ms \
since the epoch) and why (the fact behind it)."
)]
pub struct Args {}

#[derive(Serialize)]
struct Doc {
    endpoints: Vec<PresentEntry>,
}

/// Widest HOST cell, in characters: a longer host is cut to this many (ending in `…`) so
/// the columns stay aligned; `--json` has it whole.
const HOST_MAX: usize = 32;

/// Width of the HOST column: the longest cell shown, from the header's width to
/// [`HOST_MAX`].
fn host_width(rows: &[PresentEntry]) -> usize {
    rows.iter()
        .map(|r| host_cell(r).chars().count())
        .max()
        .unwrap_or(0)
        .max("HOST".len())
}

/// The HOST cell: the host escaped for one terminal line (it is another machine's text),
/// `-` when unknown, cut to [`HOST_MAX`] characters.
fn host_cell(r: &PresentEntry) -> String {
    let s = output::escape_line(r.entry.endpoint.host.as_deref().unwrap_or("-"));
    if s.chars().count() <= HOST_MAX {
        return s;
    }
    let mut cut: String = s.chars().take(HOST_MAX - 1).collect();
    cut.push('…');
    cut
}

pub(crate) fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let runtime = crate::transport::runtime_dir(&ctx.config.home);
    let doc = Doc {
        endpoints: presence::roster(&store, &runtime)?,
    };
    let now = crate::clock::now_ms();
    output::emit(ctx.json, &doc, || {
        if doc.endpoints.is_empty() {
            return "no endpoints yet; create one with `relay register NAME`".into();
        }
        let hw = host_width(&doc.endpoints);
        let mut s = format!(
            "{:<20} {:<36} {:<12} {:<hw$} {:<8} {:<10} {:>7}  CWD\n",
            "NAME", "ID", "KIND", "HOST", "PRESENCE", "LAST SEEN", "PENDING"
        );
        for r in &doc.endpoints {
            let e = &r.entry.endpoint;
            s.push_str(&format!(
                "{:<20} {:<36} {:<12} {:<hw$} {:<8} {:<10} {:>7}  {}\n",
                e.name.as_deref().unwrap_or("-"),
                e.id,
                e.kind.as_str(),
                host_cell(r),
                r.seen.presence.as_str(),
                r.seen
                    .last_seen
                    .map_or_else(|| "-".into(), |t| presence::ago(now, t)),
                r.entry.pending,
                output::escape_line(e.cwd.as_deref().unwrap_or("-"))
            ));
        }
        s
    });
    Ok(EXIT_OK)
}
