//! `relay install <agent>` and `relay uninstall <agent>`: the MCP server and hooks in an
//! agent's config.

use serde::Serialize;

use super::{Ctx, EXIT_OK, output};
use crate::agents::Agent;
use crate::agents::install::{self, Action, Applied, Env, Scope};

/// Arguments of `relay install` and `relay uninstall`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Claude Code: hooks go into settings.json (~/.claude or .claude/), the MCP \
server into ~/.claude.json (user) or .mcp.json (project).
Codex: the MCP server into config.toml, hooks into hooks.json ($CODEX_HOME or .codex/); trust \
the hooks once in Codex's /hooks.
Every changed file is backed up first as <file>.relay-backup-<time>. Running install twice \
changes nothing; uninstall removes exactly what install added."
)]
pub struct Args {
    /// The agent: claude or codex.
    #[arg(value_enum)]
    pub agent: Agent,
    /// user (every project; default) or project (the current directory).
    #[arg(long, value_enum, default_value = "user")]
    pub scope: Scope,
    /// Print the unified diff of what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Serialize)]
struct Doc {
    agent: Agent,
    scope: Scope,
    dry_run: bool,
    files: Vec<Applied>,
    diff: String,
    notes: Vec<String>,
}

/// Paths for planning: $HOME, the current directory, this binary, and the relay home to
/// pin (when `RELAY_HOME` or `XDG_STATE_HOME` is set).
pub(crate) fn env() -> anyhow::Result<Env> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            super::UsageError("HOME is not set: cannot find the agent's config".into())
        })?;
    let project = std::env::current_dir()?;
    Ok(Env {
        relay_home: install::pinned_home(
            std::env::var_os("RELAY_HOME").as_deref(),
            std::env::var_os("XDG_STATE_HOME").as_deref(),
            &project,
        ),
        home: home.into(),
        project,
        exe: std::env::current_exe()?.canonicalize()?,
    })
}

pub(crate) fn run(ctx: &Ctx, a: Args, action: Action) -> anyhow::Result<u8> {
    let env = env()?;
    let mut plan = install::plan(a.agent, a.scope, action, &env)?;
    if action == Action::Uninstall {
        install::prefer_backups(&mut plan);
    }
    let diff = install::diff(&plan);
    let files = if a.dry_run {
        plan.files
            .iter()
            .map(|f| Applied {
                path: f.path.clone(),
                what: f.what,
                action: if f.unchanged() {
                    "unchanged"
                } else {
                    "would change"
                },
                backup: None,
            })
            .collect()
    } else {
        install::apply(&plan)?
    };
    let doc = Doc {
        agent: a.agent,
        scope: a.scope,
        dry_run: a.dry_run,
        files,
        diff,
        notes: plan.notes,
    };
    output::emit(ctx.json, &doc, || {
        let mut s = String::new();
        if a.dry_run {
            s.push_str(if doc.diff.is_empty() {
                "nothing would change\n"
            } else {
                &doc.diff
            });
        }
        for f in &doc.files {
            s.push_str(&format!(
                "{:<12} {} ({})",
                f.action,
                f.path.display(),
                f.what
            ));
            if let Some(b) = &f.backup {
                s.push_str(&format!(", backup {}", b.display()));
            }
            s.push('\n');
        }
        if !a.dry_run {
            for n in &doc.notes {
                s.push_str(&format!("note: {n}\n"));
            }
        }
        s
    });
    Ok(EXIT_OK)
}
