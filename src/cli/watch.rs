//! `relay watch`: the live full-screen view of the bus ([`crate::watch`]).

use std::sync::Arc;

use super::{Ctx, EXIT_OK, UsageError};
use crate::store::{Location, Store};
use crate::watch::{self, Options};

/// Arguments of `relay watch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Shows every endpoint, message and reservation of the store (it \
is an operator's view: no identity needed, nothing is acked by watching).
Panes: endpoints (presence, kind, host, pending mail, OLDEST: age of the oldest message \
waiting to be handed out), the message log (from → to, thread, route, receipt state \
changing in place: queued → delivered → acked; rejects in red with their reason), \
reservations (holder, glob, expiry).
Keys: ↑↓ or j/k move, Enter opens a message (control characters shown escaped), / filters \
by endpoint or thread, Esc clears, ? help, q quits.
Driven by the store's event stream, not by polling. Presence has no event when a process \
dies silently, so it is probed again every 5 s while the endpoint pane is on screen. \
Ctrl-L paints the screen again (say, after a log line on stderr; or run with 2>FILE).
Needs a terminal; for a pipe or a script use `relay events --follow --all`. No colour \
when NO_COLOR is set (and not empty) or with --no-color."
)]
pub struct Args {
    /// No colour (also when NO_COLOR is set and not empty).
    #[arg(long)]
    pub no_color: bool,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    if ctx.json {
        return Err(UsageError(
            "relay watch is a screen and has no --json; use `relay events --follow --all --json`"
                .into(),
        )
        .into());
    }
    let color = !a.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Refused before the store is opened: nothing to set up for a pipe.
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(UsageError(watch::Error::NotATerminal.to_string()).into());
    }
    let store: Arc<dyn Store> = Arc::from(ctx.store()?);
    let opts = Options {
        runtime_dir: crate::transport::runtime_dir(&ctx.config.home),
        title: title(ctx),
        color,
    };
    match watch::run(store, &opts) {
        Ok(()) => Ok(EXIT_OK),
        Err(watch::Error::NotATerminal) => {
            Err(UsageError(watch::Error::NotATerminal.to_string()).into())
        }
        // The store's own error, so its kind and exit status are the store's.
        Err(watch::Error::Store(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

/// Which store the view shows, for its title line (credentials never shown).
fn title(ctx: &Ctx) -> String {
    let given = ctx.config.store.as_deref().unwrap_or("");
    let s = match Location::parse(given, &ctx.config.home) {
        Ok(Location::Sqlite(dir)) => format!("sqlite {}", dir.display()),
        Ok(Location::Nats(urls)) => format!(
            "nats {}",
            urls.iter()
                .map(|u| crate::store::redact(u))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Err(_) => "store".into(),
    };
    watch::text::one_line(&s)
}
