//! `relay install <agent|guard>` and `relay uninstall <agent|guard>`: the MCP server and
//! hooks in an agent's config, or the git pre-commit guard in a repository
//! (agents::guard).

use std::path::PathBuf;

use serde::Serialize;

use super::{Ctx, EXIT_OK, output};
use crate::agents::install::{self, Action, Applied, Env, Scope};
use crate::agents::{Agent, guard};

/// Arguments of `relay install` and `relay uninstall`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Claude Code: hooks go into settings.json (~/.claude or .claude/), the MCP \
server into ~/.claude.json (user) or .mcp.json (project).
Codex: the MCP server into config.toml, hooks into hooks.json ($CODEX_HOME or .codex/); trust \
the hooks once in Codex's /hooks.
pi: one extension file, extensions/relay.ts in ~/.pi/agent ($PI_CODING_AGENT_DIR) or .pi/, that \
runs relay's hooks and offers relay's tools; relay replaces or removes it only while it is \
byte for byte relay's.
opencode: the MCP server into opencode.json ($XDG_CONFIG_HOME/opencode/ or the project's), and a \
plugin, plugin/relay.ts there (.opencode/plugin/ for a project), that runs relay's hooks.
Every changed file is backed up first as <file>.relay-backup-<time>. Running install twice \
changes nothing; uninstall removes exactly what install added.
guard: a git pre-commit hook in the hooks directory git uses (core.hooksPath honoured) of the \
repository of the current directory (or --project DIR), refusing commits that touch paths \
another live session reserved exclusively (relay reserve). A pre-commit hook already there is \
renamed to pre-commit.relay-chained and runs first; uninstall renames it back."
)]
pub struct Args {
    /// What to install: claude, codex, pi, opencode, or guard (the git pre-commit guard).
    #[arg(value_enum, value_name = "AGENT|guard")]
    pub target: Target,
    /// user (every project; default) or project (the current directory). Agents only.
    #[arg(long, value_enum)]
    pub scope: Option<Scope>,
    /// The repository to guard (default: the current directory's). guard only.
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Print the unified diff of what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What `relay install` installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Claude Code's MCP server and hooks.
    Claude,
    /// Codex's MCP server and hooks.
    Codex,
    /// pi's extension (relay's tools and hooks in one TypeScript file).
    Pi,
    /// OpenCode's MCP server and plugin.
    #[value(name = "opencode")]
    OpenCode,
    /// The git pre-commit guard of a repository.
    Guard,
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
    let agent = match a.target {
        Target::Claude => Agent::Claude,
        Target::Codex => Agent::Codex,
        Target::Pi => Agent::Pi,
        Target::OpenCode => Agent::OpenCode,
        Target::Guard => return run_guard(ctx, &a, action),
    };
    if a.project.is_some() {
        return Err(super::UsageError(format!(
            "--project is for `relay install guard`; for {} use --scope project in that directory",
            agent.name()
        ))
        .into());
    }
    let scope = a.scope.unwrap_or(Scope::User);
    let env = env()?;
    let mut plan = install::plan(agent, scope, action, &env)?;
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
        agent,
        scope,
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

#[derive(Serialize)]
struct GuardDoc {
    target: &'static str,
    dry_run: bool,
    /// The hooks directory git uses for the repository.
    hooks_dir: PathBuf,
    files: Vec<Applied>,
    diff: String,
    notes: Vec<String>,
}

/// `relay install guard` / `relay uninstall guard`.
fn run_guard(ctx: &Ctx, a: &Args, action: Action) -> anyhow::Result<u8> {
    if a.scope.is_some() {
        return Err(super::UsageError(
            "--scope is for agents; the guard goes into one repository: run it there, or \
             pass --project DIR"
                .into(),
        )
        .into());
    }
    let dir = match &a.project {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    // The hook runs this very binary, by its absolute path, as agent hooks do.
    let exe = std::env::current_exe()?.canonicalize()?;
    let plan = guard::plan(&dir, &exe, action).map_err(|e| match e {
        guard::Error::NotARepo { .. } => anyhow::Error::new(super::UsageError(e.to_string())),
        e => e.into(),
    })?;
    let diff = guard::diff(&plan);
    let files = if a.dry_run {
        guard::preview(&plan)
    } else {
        guard::apply(&plan)?
    };
    let doc = GuardDoc {
        target: "guard",
        dry_run: a.dry_run,
        hooks_dir: plan.hooks_dir.clone(),
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
                "{:<12} {} ({})\n",
                f.action,
                f.path.display(),
                f.what
            ));
        }
        for n in &doc.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        s
    });
    Ok(EXIT_OK)
}
