//! `relay discover`: recent Claude Code, Codex, pi and OpenCode sessions on this machine (read-only).

use std::time::Duration;

use serde::Serialize;

use super::{Ctx, EXIT_OK, output, parse_duration};
use crate::agents::codex_app::Presence;
use crate::agents::{Agent, discover};
use crate::store::{Lookup, Store};

/// Arguments of `relay discover`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Reads Claude Code transcripts ($CLAUDE_CONFIG_DIR or ~/.claude/projects) \
and Codex sessions ($CODEX_HOME or ~/.codex/sessions); never writes to them. Codex sessions \
its app-server daemon holds are marked idle or running (asked over its control socket, 2 s \
at most). Sessions in the current directory come first, then the most recent."
)]
pub struct Args {
    /// Only sessions active within this long (e.g. 60m, 2h, 7d).
    #[arg(long, value_parser = parse_duration, default_value = "60m")]
    pub within: Duration,
    /// Only this agent's sessions.
    #[arg(long, value_enum)]
    pub tool: Option<Agent>,
}

#[derive(Serialize)]
struct Doc {
    sessions: Vec<discover::Session>,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let home = super::install::env()?;
    let mut sessions = discover::scan(&home.home, &home.project, a.within, a.tool);
    discover::codex_presence(
        &mut sessions,
        &crate::agents::codex::home_dir(&home.home),
        crate::agents::codex_app::PRESENCE_TIMEOUT,
    );
    // Mark registered sessions from an existing store, opened read-only: discover writes
    // nothing anywhere.
    let location = ctx.config.store.as_deref().unwrap_or_default();
    let store: Option<Box<dyn crate::store::Store>> =
        match crate::store::Location::parse(location, &ctx.config.home)? {
            // A NATS store is only read here too (lookups).
            crate::store::Location::Nats(_) => Some(ctx.store()?),
            crate::store::Location::Sqlite(dir) => {
                let mut c = ctx.config.clone();
                c.home = dir;
                crate::store::SqliteStore::open_read_only(&c)?
                    .map(|s| Box::new(s) as Box<dyn crate::store::Store>)
            }
        };
    if let Some(store) = store {
        for s in &mut sessions {
            if let Lookup::Found(e) = store.lookup(&s.id)?
                && e.id == s.id
            {
                s.registered = true;
                s.registered_as = e.name;
            }
        }
    }
    let doc = Doc { sessions };
    output::emit(ctx.json, &doc, || {
        if doc.sessions.is_empty() {
            return format!(
                "no sessions active within {}",
                humantime::format_duration(a.within)
            );
        }
        let mut s = format!(
            "{:<7} {:<36} {:<18} {:<25} CWD\n",
            "TOOL", "SESSION", "RELAY NAME", "MODIFIED"
        );
        for x in &doc.sessions {
            let held = match x.presence {
                Some(Presence::Held { running: true }) => "  (running in the Codex app-server)",
                Some(Presence::Held { running: false }) => "  (idle in the Codex app-server)",
                _ => "",
            };
            s.push_str(&format!(
                "{:<7} {:<36} {:<18} {:<25} {}{}{held}\n",
                x.tool.name(),
                x.id,
                x.registered_as
                    .as_deref()
                    .unwrap_or(if x.registered { "(no name)" } else { "-" }),
                output::time(x.modified_ms),
                x.cwd.as_deref().unwrap_or("?"),
                if x.same_cwd { "  (here)" } else { "" }
            ));
        }
        s
    });
    Ok(EXIT_OK)
}
