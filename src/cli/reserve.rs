//! `relay reserve`, `release`, `renew` and `reservations`: advisory file reservations in
//! a project (the git top-level of `--project` or the current directory). Globs are
//! relative to the project root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::{Ctx, EXIT_OK, UsageError, output};
use crate::clock::now_ms;
use crate::coord::reserve::{self, Ask, Changed, Listed, PathMatch};
use crate::store::{Mode, Reservation};

/// Arguments of `relay reserve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Globs are relative to the project root (the git top-level of \
--project or the current directory): 'src/store/**', 'Cargo.toml', 'docs/*.md'. No '..', \
no absolute paths, at most 64 globs. A plain path naming an existing directory ('src') \
is reserved as everything in it ('src/**'). A linked git worktree shares its main \
checkout's project. A glob that overlaps another session's exclusive \
reservation (or any of its reservations, when yours is exclusive) is refused with exit 3 \
naming the holder, its reason and when it lapses; nothing is reserved. Reservations of \
sessions that are gone are released first. Reserving a glob you hold again updates it."
)]
pub struct ReserveArgs {
    /// Globs to reserve, relative to the project root.
    #[arg(required = true, value_name = "GLOB")]
    pub globs: Vec<String>,
    /// Nobody else may reserve overlapping paths (the default).
    #[arg(long, conflicts_with = "shared")]
    pub exclusive: bool,
    /// Others may hold overlapping shared reservations, not exclusive ones.
    #[arg(long)]
    pub shared: bool,
    /// How long until it lapses unless renewed, 1s to 7 days (e.g. 30m, 2h).
    #[arg(long, default_value = "30m", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Why: shown to whoever it conflicts with (at most 512 bytes).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Record it even over conflicts (and say so).
    #[arg(long)]
    pub force: bool,
    /// The project: its git top-level, else the directory itself (default: current
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

/// Arguments of `relay release`.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// Globs to release (as reserved); or --all.
    #[arg(
        value_name = "GLOB",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub globs: Vec<String>,
    /// Release every reservation you hold in the project.
    #[arg(long)]
    pub all: bool,
    /// The project (default: the current directory's).
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

/// Arguments of `relay renew`.
#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    /// Globs to renew (default: every reservation you hold in the project).
    #[arg(value_name = "GLOB")]
    pub globs: Vec<String>,
    /// New time to live from now, 1s to 7 days.
    #[arg(long, default_value = "30m", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The project (default: the current directory's).
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

/// Arguments of `relay reservations`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With --conflicts, the live reservations whose globs match each \
path (relative to the current directory when it is inside the project, else to the \
project root; or absolute), for scripts and the git guard."
)]
pub struct ReservationsArgs {
    /// Only reservations matching these paths.
    #[arg(long, num_args = 1.., value_name = "PATH", conflicts_with = "all_projects")]
    pub conflicts: Vec<String>,
    /// The project (default: the current directory's).
    #[arg(long, value_name = "DIR", conflicts_with = "all_projects")]
    pub project: Option<PathBuf>,
    /// Every project's reservations.
    #[arg(long)]
    pub all_projects: bool,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    reserve::parse_ttl(s).map_err(|e| e.to_string())
}

/// The project root for `--project` or the current directory.
fn project(dir: Option<&Path>) -> anyhow::Result<String> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir()
            .map_err(|e| UsageError(format!("the current directory cannot be read: {e}")))?,
    };
    Ok(reserve::project_of(&dir)?)
}

/// The project for acting on recorded reservations ([`reserve::recorded_project_of`]): a
/// `--project` that does not exist any more is taken by its path, with a note saying so.
fn recorded_project(dir: Option<&Path>) -> anyhow::Result<(String, Option<String>)> {
    let cwd = std::env::current_dir()
        .map_err(|e| UsageError(format!("the current directory cannot be read: {e}")))?;
    match dir {
        Some(d) => Ok(reserve::recorded_project_of(d, &cwd)?),
        None => Ok((reserve::project_of(&cwd)?, None)),
    }
}

/// `doc` with `"note": note` added when there is one.
fn with_note(mut doc: serde_json::Value, note: Option<&str>) -> serde_json::Value {
    if let Some(n) = note {
        doc["note"] = json!(n);
    }
    doc
}

/// `text` after the note, when there is one.
fn noted(note: Option<&str>, text: String) -> String {
    match note {
        Some(n) => format!("note: {}\n{text}", output::escape_line(n)),
        None => text,
    }
}

#[derive(Serialize)]
struct Refusal<'a> {
    error: serde_json::Value,
    project: &'a str,
    granted: [(); 0],
    conflicts: &'a [crate::store::Conflict],
}

pub(crate) fn run_reserve(ctx: &Ctx, a: ReserveArgs) -> anyhow::Result<u8> {
    let project = project(a.project.as_deref())?;
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    let ask = Ask {
        project,
        globs: a.globs,
        mode: if a.shared {
            Mode::Shared
        } else {
            Mode::Exclusive
        },
        ttl: a.ttl,
        reason: a.reason,
        force: a.force,
    };
    let runtime = crate::transport::runtime_dir(&ctx.config.home);
    let out = match reserve::reserve(&store, &runtime, &me, &ask) {
        Ok(o) => o,
        Err(reserve::Error::Refused(r)) => {
            if ctx.json {
                // The conflicts, for scripts, beside the usual error object; main then
                // prints the reason to stderr and exits 3 without a second document.
                let err = anyhow::Error::new(reserve::Error::Refused(r.clone()));
                let doc = Refusal {
                    error: output::error_document(&err)["error"].clone(),
                    project: &r.project,
                    granted: [],
                    conflicts: &r.conflicts,
                };
                output::emit_outcome(true, &doc, false, String::new);
            }
            return Err(reserve::Error::Refused(r).into());
        }
        Err(e) => return Err(e.into()),
    };
    output::emit(ctx.json, &out, || {
        let now = now_ms();
        let mut s = String::new();
        for r in &out.released_gone {
            s.push_str(&format!(
                "released {} (its session is gone)\n",
                reserve::describe(r, now)
            ));
        }
        for d in &out.directories {
            s.push_str(&format!(
                "{} is a directory: reserved as {}/**\n",
                output::escape_line(d),
                output::escape_line(d)
            ));
        }
        let first = &out.granted[0];
        s.push_str(&format!(
            "reserved in {} ({}, lapses {}):\n",
            output::escape_line(&out.project),
            first.mode,
            reserve::lapses_in(first.expires_at, now)
        ));
        for r in &out.granted {
            s.push_str(&format!("  {}\n", output::escape_line(&r.glob)));
        }
        if out.forced {
            s.push_str(&format!(
                "recorded with --force over {} conflict{}:\n",
                out.conflicts.len(),
                if out.conflicts.len() == 1 { "" } else { "s" }
            ));
            for c in &out.conflicts {
                s.push_str(&format!(
                    "  {} overlaps {}\n",
                    output::escape_line(&c.glob),
                    output::escape_line(&reserve::describe(&c.held, now))
                ));
            }
        }
        s
    });
    Ok(EXIT_OK)
}

/// Text for a release or renewal.
fn changed_text(verb: &str, done: &str, c: &Changed, expiry: bool) -> String {
    let now = now_ms();
    let mut s = if c.reservations.is_empty() {
        format!("nothing to {verb} in {}\n", output::escape_line(&c.project))
    } else {
        format!("{done} in {}:\n", output::escape_line(&c.project))
    };
    for r in &c.reservations {
        s.push_str(&format!("  {}", output::escape_line(&r.glob)));
        if expiry {
            s.push_str(&format!(
                " (lapses {})",
                reserve::lapses_in(r.expires_at, now)
            ));
        }
        s.push('\n');
    }
    for g in &c.not_held {
        s.push_str(&format!(
            "  {}: not held by you (expired, released or never reserved)\n",
            output::escape_line(g)
        ));
    }
    s
}

pub(crate) fn run_release(ctx: &Ctx, a: ReleaseArgs) -> anyhow::Result<u8> {
    let (project, note) = recorded_project(a.project.as_deref())?;
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    let globs = (!a.all).then_some(a.globs.as_slice());
    let c = reserve::release(&store, &project, &me, globs)?;
    let doc = with_note(
        json!({"project": c.project, "released": c.reservations, "not_held": c.not_held}),
        note.as_deref(),
    );
    output::emit(ctx.json, &doc, || {
        noted(
            note.as_deref(),
            changed_text("release", "released", &c, false),
        )
    });
    Ok(EXIT_OK)
}

pub(crate) fn run_renew(ctx: &Ctx, a: RenewArgs) -> anyhow::Result<u8> {
    let (project, note) = recorded_project(a.project.as_deref())?;
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    let globs = (!a.globs.is_empty()).then_some(a.globs.as_slice());
    let c = reserve::renew(&store, &project, &me, globs, a.ttl)?;
    let doc = with_note(
        json!({"project": c.project, "renewed": c.reservations, "not_held": c.not_held}),
        note.as_deref(),
    );
    output::emit(ctx.json, &doc, || {
        noted(note.as_deref(), changed_text("renew", "renewed", &c, true))
    });
    Ok(EXIT_OK)
}

/// `path` (absolute, or relative to the current directory when that is inside the
/// project, else to the project root) relative to `project`.
fn project_path(project: &Path, cwd: &Path, path: &str) -> anyhow::Result<String> {
    let base = if cwd.starts_with(project) {
        cwd
    } else {
        project
    };
    let p = Path::new(path);
    // An existing absolute path may run through a symlink to the (canonical) project.
    let p = match p.is_absolute().then(|| p.canonicalize()) {
        Some(Ok(c)) => c,
        _ => p.to_path_buf(),
    };
    match crate::coord::project::relative(project, base, &p) {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(UsageError(format!(
            "--conflicts {path:?} is not a path inside the project {}; give a path in it",
            project.display()
        ))
        .into()),
    }
}

pub(crate) fn run_reservations(ctx: &Ctx, a: ReservationsArgs) -> anyhow::Result<u8> {
    let (project, note) = if a.all_projects {
        (None, None)
    } else {
        let (p, note) = recorded_project(a.project.as_deref())?;
        (Some(p), note)
    };
    let store = ctx.store()?;
    // Identity only marks the caller's own reservations: a listing needs none, but a
    // wrong --as is still an error.
    let me = if ctx.identity().is_some() {
        Some(ctx.me(&store)?)
    } else {
        ctx.me(&store).ok()
    };
    let me_id = me.as_ref().map(|e| e.id.as_str());
    if !a.conflicts.is_empty() {
        let project = project.unwrap_or_default();
        let root = PathBuf::from(&project);
        let cwd = std::env::current_dir()
            .and_then(|d| d.canonicalize())
            .unwrap_or_else(|_| root.clone());
        let paths = a
            .conflicts
            .iter()
            .map(|p| project_path(&root, &cwd, p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let found = reserve::matching(&store, &project, &paths, me_id)?;
        let doc = with_note(
            json!({"project": project, "paths": paths, "conflicts": found}),
            note.as_deref(),
        );
        output::emit(ctx.json, &doc, || {
            noted(note.as_deref(), matches_text(&project, &paths, &found))
        });
        return Ok(EXIT_OK);
    }
    let runtime = crate::transport::runtime_dir(&ctx.config.home);
    let listed = reserve::list(&store, &runtime, project.as_deref(), me_id)?;
    let doc = with_note(
        json!({"project": project, "reservations": listed}),
        note.as_deref(),
    );
    output::emit(ctx.json, &doc, || {
        noted(note.as_deref(), list_text(project.as_deref(), &listed))
    });
    Ok(EXIT_OK)
}

/// One reservation on a line: glob, mode, holder (presence), expiry, reason.
fn reservation_line(r: &Reservation, mine: bool, presence: Option<&str>) -> String {
    let now = now_ms();
    let mut s = format!(
        "  {}  {}  {}",
        output::escape_line(&r.glob),
        r.mode,
        if mine {
            "you".to_string()
        } else {
            output::escape_line(&reserve::holder(r))
        }
    );
    if let Some(p) = presence {
        s.push_str(&format!(" ({p})"));
    }
    s.push_str(&format!(
        ", lapses {}",
        reserve::lapses_in(r.expires_at, now)
    ));
    if r.forced {
        s.push_str(", forced");
    }
    if let Some(why) = &r.reason {
        // Quoted and escaped once, as `describe` (and so the guard) does: `{:?}` escapes
        // every control and invisible character (`\u{1b}`, `\u{200b}`, `\u{feff}`), and
        // nothing is escaped twice.
        s.push_str(&format!(" — {why:?}"));
    }
    s
}

fn list_text(project: Option<&str>, listed: &[Listed]) -> String {
    if listed.is_empty() {
        return match project {
            Some(p) => format!("no reservations in {}", output::escape_line(p)),
            None => "no reservations".into(),
        };
    }
    let mut s = String::new();
    let mut current: Option<&str> = None;
    for l in listed {
        let r = &l.reservation;
        if current != Some(r.project.as_str()) {
            s.push_str(&format!("{}\n", output::escape_line(&r.project)));
            current = Some(&r.project);
        }
        s.push_str(&reservation_line(r, l.mine, Some(l.presence.as_str())));
        s.push('\n');
    }
    s
}

fn matches_text(project: &str, paths: &[String], found: &[PathMatch]) -> String {
    let mut s = String::new();
    for p in paths {
        let here: Vec<&PathMatch> = found.iter().filter(|m| &m.path == p).collect();
        if here.is_empty() {
            s.push_str(&format!("{}: not reserved\n", output::escape_line(p)));
            continue;
        }
        s.push_str(&format!("{}:\n", output::escape_line(p)));
        for m in here {
            s.push_str(&reservation_line(&m.reservation, m.mine, None));
            s.push('\n');
        }
    }
    if s.is_empty() {
        s = format!("no paths given in {}", output::escape_line(project));
    }
    s
}
