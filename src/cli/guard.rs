//! `relay guard check`: what the pre-commit hook of `relay install guard` runs
//! (agents::guard). Refuses (exit 1) a commit whose staged paths match a live exclusive
//! reservation of another session that is not gone; `RELAY_GUARD=warn` prints the same
//! and exits 0. Any failure to decide (git, the store, an identity that does not resolve)
//! is printed and refuses too, unless `RELAY_GUARD=warn`: a guard that cannot look must
//! not pass silently.

use std::path::PathBuf;

use serde::Serialize;

use super::{Ctx, EXIT_FAILURE, EXIT_OK, output};
use crate::agents::guard::{self, Blocking, GuardMode};
use crate::agents::identity;

/// Arguments of `relay guard`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Sub,
}

/// `relay guard` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Check the staged paths against other sessions' exclusive reservations (what the
    /// pre-commit hook of `relay install guard` runs).
    #[command(
        after_help = "Exit 0 when nothing staged is held exclusively by another \
session that is not gone, 1 when something is (or when the check itself failed: git, the \
store, an identity that does not resolve). RELAY_GUARD=warn prints the same and exits 0. \
Who you are: --as, RELAY_AS, else the agent session this runs in; your own reservations \
never block you, and with no identity every other holder's do."
    )]
    Check(CheckArgs),
}

/// Arguments of `relay guard check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The repository to check (default: the current directory's).
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Serialize)]
struct Doc {
    project: String,
    /// Who the check ran as (endpoint id), if anyone.
    me: Option<String>,
    mode: GuardMode,
    /// How many paths the commit touches.
    staged: usize,
    /// Reservations in the commit's way.
    blocking: Vec<Blocking>,
    /// True when the commit is refused (exit 1).
    refused: bool,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    match a.command {
        Sub::Check(c) => check(ctx, c),
    }
}

fn check(ctx: &Ctx, a: CheckArgs) -> anyhow::Result<u8> {
    let (mode, note) = GuardMode::from_env(std::env::var(guard::MODE_ENV).ok().as_deref());
    if let Some(n) = note {
        eprintln!("relay guard: {n}");
    }
    match decide(ctx, &a, mode) {
        Ok(code) => Ok(code),
        Err(e) if mode == GuardMode::Warn => {
            eprintln!(
                "relay guard: cannot check this commit: {e:#}\nrelay guard: RELAY_GUARD=warn, so \
                 the commit goes ahead unchecked"
            );
            Ok(EXIT_OK)
        }
        Err(e) => Err(e.context(
            "relay guard: cannot check this commit, so it is refused (RELAY_GUARD=warn lets it \
             through unchecked; git commit --no-verify skips the hook)",
        )),
    }
}

fn decide(ctx: &Ctx, a: &CheckArgs, mode: GuardMode) -> anyhow::Result<u8> {
    let dir = match &a.project {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    let top = guard::top_level(&dir)?;
    let project = crate::coord::reserve::project_of(&top)?;
    let staged = guard::staged(&top)?;
    // No store in this relay home: nobody reserved anything here. Said, since a hook run
    // with another RELAY_HOME than the sessions' would otherwise pass every commit in
    // silence; and the store is not created as a side effect of a commit.
    if ctx.config.store.is_none() && !ctx.config.db_path().exists() {
        eprintln!(
            "relay guard: warning: no relay store in {} yet (RELAY_HOME), so there are no \
             reservations to check and the commit goes ahead; if your sessions use another \
             RELAY_HOME, set it where git runs too",
            output::escape_line(&ctx.config.home.to_string_lossy())
        );
        if ctx.json {
            let doc = Doc {
                project,
                me: None,
                mode,
                staged: staged.len(),
                blocking: Vec::new(),
                refused: false,
            };
            output::emit_outcome(true, &doc, true, String::new);
        }
        return Ok(EXIT_OK);
    }
    let store = ctx.store()?;
    let me = match identity::resolve(&store, ctx.identity().as_ref()) {
        Ok(m) => Some(m.endpoint),
        Err(e) if e.downcast_ref::<identity::NoIdentity>().is_some() => None,
        Err(e) => return Err(e.context("resolving who makes this commit")),
    };
    let runtime = crate::transport::runtime_dir(&ctx.config.home);
    let blocking = guard::check(
        &store,
        &runtime,
        &project,
        me.as_ref().map(|e| e.id.as_str()),
        &staged,
    )?;
    let refused = !blocking.is_empty() && mode == GuardMode::Block;
    let doc = Doc {
        project,
        me: me.as_ref().map(|e| e.id.clone()),
        mode,
        staged: staged.len(),
        blocking,
        refused,
    };
    if !doc.blocking.is_empty() {
        // The hook's stderr is what git shows; with --json stdout carries the document.
        eprintln!("{}", output::terminal_safe(&explain(&doc)));
    }
    if ctx.json {
        output::emit_outcome(true, &doc, !refused, String::new);
    }
    Ok(if refused { EXIT_FAILURE } else { EXIT_OK })
}

/// Most staged paths named per reservation; the rest are counted.
const PATHS_SHOWN: usize = 5;

/// The refusal (or warning) in words: each reservation with its holder, glob, reason and
/// expiry, the paths it matches, and what to do.
fn explain(doc: &Doc) -> String {
    let now = crate::clock::now_ms();
    let mut s = format!(
        "relay guard: this commit touches paths another session holds exclusively (project \
         {}):",
        output::escape_line(&doc.project)
    );
    for b in &doc.blocking {
        let shown: Vec<String> = b
            .paths
            .iter()
            .take(PATHS_SHOWN)
            .map(|p| output::escape_line(p))
            .collect();
        let more = b.paths.len().saturating_sub(PATHS_SHOWN);
        s.push_str(&format!(
            "\n  {}{}\n    {} [{}: {}]",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            output::escape_line(&crate::coord::reserve::describe(&b.reservation, now)),
            b.presence,
            output::escape_line(&b.why),
        ));
    }
    let who = doc
        .blocking
        .first()
        .map(|b| {
            b.reservation
                .holder_name
                .clone()
                .unwrap_or_else(|| b.reservation.holder.clone())
        })
        .unwrap_or_default();
    match doc.mode {
        GuardMode::Block => s.push_str(&format!(
            "\nThe commit was refused. Ask the holder to release it (relay send {} …), wait \
             until it lapses, or commit with RELAY_GUARD=warn to only warn (git commit \
             --no-verify skips every pre-commit hook).",
            output::escape_line(&who)
        )),
        GuardMode::Warn => {
            s.push_str("\nRELAY_GUARD=warn: the commit goes ahead anyway.");
        }
    }
    s
}
