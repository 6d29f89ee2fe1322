//! The git guard (DESIGN.md §12): a pre-commit hook that refuses a commit touching paths
//! another session holds exclusively (`relay reserve`), naming who.
//!
//! - `relay install guard` writes `pre-commit` into the hooks directory git uses
//!   (`git rev-parse --git-path hooks`, so `core.hooksPath` is honoured). A pre-commit hook
//!   already there is *chained*: renamed, bytes, mode and all (a symlink stays a symlink),
//!   to [`CHAINED`] beside it; relay's hook runs it first and fails when it fails. A hook
//!   that finds its work by its own name (`$0`; husky, lefthook, the pre-commit framework)
//!   is not chained — renamed, it would run nothing — and install changes nothing, printing
//!   the line to add to the user's own hook instead ([`check_line`]).
//! - `relay uninstall guard` removes relay's hook and renames the chained one back, so the
//!   hooks directory is as it was before install, byte for byte.
//! - Relay's hook is replaced (a reinstall) or removed only while it is byte for byte a
//!   script relay writes ([`is_pristine`]); one edited by hand is left alone, and the
//!   command says so and what to do.
//! - The hook runs `<absolute path of relay> guard check` ([`check`]): the staged paths
//!   (`git diff --cached --name-only -z --no-renames`, so a rename's old path counts too),
//!   against the live exclusive reservations of the project held by another endpoint whose
//!   presence is not gone ([`super::presence`]).
//!
//! Plans are computed first ([`plan`]), so `--dry-run` shows a diff and changes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::install::{self, Action, Applied, FileChange};
use super::presence::{self, Presence};
use crate::store::{self, Lookup, Mode, Reservation, Store};

/// The line that marks a pre-commit hook as relay's guard.
pub const MARKER: &str = "# managed-by: relay install guard";

/// The hook's file name in the hooks directory.
pub const HOOK: &str = "pre-commit";

/// Where a pre-commit hook that was there before relay's is kept (beside relay's), and
/// run first.
pub const CHAINED: &str = "pre-commit.relay-chained";

/// `RELAY_GUARD`: `warn` prints what the guard would refuse and lets the commit through;
/// unset (or `block`) refuses.
pub const MODE_ENV: &str = "RELAY_GUARD";

/// Why the guard could not be planned, applied or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `dir` is not inside a git repository.
    #[error(
        "{dir} is not in a git repository ({reason}); run this inside a repository's work \
         tree, or pass --project DIR"
    )]
    NotARepo {
        /// The directory asked about.
        dir: PathBuf,
        /// What git said.
        reason: String,
    },
    /// A git command failed (or git could not be run).
    #[error("git {args} in {dir}: {reason}")]
    Git {
        /// Its arguments.
        args: String,
        /// Where it ran.
        dir: PathBuf,
        /// What went wrong: git's message, or why it could not start.
        reason: String,
    },
    /// Both a pre-commit hook that is not relay's and a [`CHAINED`] one exist: chaining
    /// would lose one of them.
    #[error(
        "{hook} is not relay's guard, and {chained} exists too (left by an earlier install \
         whose hook was replaced); move one of them away, then run again (nothing was \
         changed)"
    )]
    Clash {
        /// The pre-commit hook.
        hook: PathBuf,
        /// The chained hook.
        chained: PathBuf,
    },
    /// The pre-commit hook there finds its work by its own file name (`$0`: husky v4 and
    /// v9, lefthook, the pre-commit framework, or any script that does), so renaming it to
    /// [`CHAINED`] would silently disable it. Nothing was changed.
    #[error(
        "{hook} {why}, so chaining it (renaming it to {CHAINED}) would quietly turn it off; \
         nothing was changed. Instead, add this line to the hook that runs your pre-commit \
         checks (with husky: .husky/pre-commit; with lefthook or pre-commit, a local hook \
         running it):\n    {line}"
    )]
    WontChain {
        /// The pre-commit hook.
        hook: PathBuf,
        /// What in it says it dispatches on its name.
        why: String,
        /// The line to add: `'<relay>' guard check || exit 1`.
        line: String,
    },
    /// Relay's hook was edited since relay wrote it: replacing or removing it would lose
    /// the edits. Nothing was changed.
    #[error(
        "{hook} is relay's guard but was edited since relay wrote it (it is not byte for byte \
         a hook relay writes), so it was left alone and nothing was changed; {what}"
    )]
    Edited {
        /// The hook.
        hook: PathBuf,
        /// What to do instead.
        what: String,
    },
    /// The hook path is a directory.
    #[error(
        "{path} is a directory, not a hook; move it away, then run again (nothing was changed)"
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
}

/// Runs `git args` in `dir` (with the environment git gave this process, so inside a hook
/// `GIT_INDEX_FILE` and `GIT_DIR` keep naming the commit's index); its stdout.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, Error> {
    let shown = args.join(" ");
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Git {
            args: shown.clone(),
            dir: dir.to_path_buf(),
            reason: format!("cannot run git: {e} (is git installed and on PATH?)"),
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if reason.contains("not a git repository") {
        return Err(Error::NotARepo {
            dir: dir.to_path_buf(),
            reason,
        });
    }
    Err(Error::Git {
        args: shown,
        dir: dir.to_path_buf(),
        reason: if reason.is_empty() {
            format!("exited with {}", out.status)
        } else {
            reason
        },
    })
}

/// One line of git's output as a path (its trailing newline dropped).
fn path_line(out: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = out;
    while out.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        out.pop();
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The directory of `dir` made absolute (against this process's working directory).
fn absolute(dir: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(dir).map_err(|err| Error::Io {
        path: dir.to_path_buf(),
        err,
    })
}

/// The hooks directory git uses for the repository of `dir`, absolute:
/// `git rev-parse --git-path hooks` (which honours `core.hooksPath`, relative paths taken
/// from the work tree's top, as git runs hooks there).
///
/// # Errors
/// [`Error::NotARepo`], [`Error::Git`].
pub fn hooks_dir(dir: &Path) -> Result<PathBuf, Error> {
    let dir = absolute(dir)?;
    // Absolute from git itself (2.31+), so a subdirectory's `../../.githooks` is never
    // shown; an older git answers relative paths, cleaned here.
    let p = match git(
        &dir,
        &["rev-parse", "--path-format=absolute", "--git-path", "hooks"],
    ) {
        Ok(out) => path_line(out),
        Err(e @ Error::NotARepo { .. }) => return Err(e),
        Err(_) => path_line(git(&dir, &["rev-parse", "--git-path", "hooks"])?),
    };
    Ok(if p.is_absolute() {
        clean(&p)
    } else {
        clean(&dir.join(p))
    })
}

/// `p` (absolute) without `.` and `..` segments, as a person would write it: the longest
/// part of it that exists is resolved by the kernel (`canonicalize`, so a `..` after a
/// symlinked directory goes where the kernel would take it), the rest appended as is.
/// Unchanged when it has no such segment.
fn clean(p: &Path) -> PathBuf {
    use std::path::Component;
    if !p
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return p.to_path_buf();
    }
    // The longest existing ancestor, resolved by the kernel, then the rest lexically.
    let mut base = p.to_path_buf();
    let mut rest = Vec::new();
    while !base.exists() {
        match (base.file_name().map(|n| n.to_os_string()), base.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                base = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&base).unwrap_or(base);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

/// The work tree's top directory of the repository of `dir` (`git rev-parse
/// --show-toplevel`).
///
/// # Errors
/// [`Error::NotARepo`] (also for a bare repository), [`Error::Git`].
pub fn top_level(dir: &Path) -> Result<PathBuf, Error> {
    let dir = absolute(dir)?;
    Ok(path_line(git(&dir, &["rev-parse", "--show-toplevel"])?))
}

/// The hook relay installs, running `exe` (absolute). It runs the chained hook first (as
/// git would have: only when it is executable) and stops with its status when it fails;
/// a relay binary that is gone is said so, and refuses unless `RELAY_GUARD=warn`.
pub fn script(exe: &Path) -> String {
    let relay = install::shell_quote(&exe.to_string_lossy());
    format!(
        "#!/bin/sh\n\
         {MARKER}\n\
         # Refuses a commit that touches paths another live relay session holds\n\
         # exclusively (relay reserve). RELAY_GUARD=warn only warns; git commit --no-verify\n\
         # skips every pre-commit hook. `relay uninstall guard` removes this hook and puts\n\
         # back the one it chained ({CHAINED}), if any.\n\
         chained=\"$(dirname -- \"$0\")/{CHAINED}\"\n\
         if [ -x \"$chained\" ]; then\n\
         \t\"$chained\" \"$@\" || exit $?\n\
         fi\n\
         relay={relay}\n\
         if [ ! -x \"$relay\" ]; then\n\
         \techo \"relay guard: $relay is missing; reinstall relay, or remove the guard with 'relay uninstall guard'\" >&2\n\
         \t[ \"$RELAY_GUARD\" = warn ] && exit 0\n\
         \texit 1\n\
         fi\n\
         exec \"$relay\" guard check\n"
    )
}

/// Whether `bytes` is exactly a hook relay writes ([`script`]) for some relay binary: the
/// binary is read back from its `relay=` line and the script regenerated. A hook that only
/// holds the [`MARKER`] was edited by hand.
pub fn is_pristine(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let Some(quoted) = text.lines().find_map(|l| l.strip_prefix("relay=")) else {
        return false;
    };
    let exe = match quoted.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')) {
        Some(inner) => inner.replace(r"'\''", "'"),
        None => quoted.to_string(),
    };
    script(Path::new(&exe)).as_bytes() == bytes
}

/// Why an existing pre-commit hook cannot be chained, if it cannot: it refers to its own
/// name (`$0`, `${0…}`) — renamed, it would look for the wrong hook (husky's `h` runs
/// `.husky/<basename "$0">`, and exits 0 when there is none) — or it names a hook manager
/// that works that way (husky, lefthook, the pre-commit framework).
fn dispatches_on_name(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let lower = text.to_lowercase();
    for tool in ["husky", "lefthook"] {
        if lower.contains(tool) {
            return Some(format!("is run by {tool}"));
        }
    }
    if lower.contains("pre-commit.com") || lower.contains("pre_commit") {
        return Some("is the pre-commit framework's hook".into());
    }
    let bytes = text.as_bytes();
    let by_name = bytes.windows(2).enumerate().any(|(i, w)| {
        let digit_at = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_digit);
        (w == b"$0" && !digit_at(i + 2))
            || (w == b"${" && bytes.get(i + 2) == Some(&b'0') && !digit_at(i + 3))
    });
    by_name.then(|| "uses its own file name ($0)".into())
}

/// The line that runs the guard from a user's own hook.
pub fn check_line(exe: &Path) -> String {
    format!(
        "{} guard check || exit 1",
        install::shell_quote(&exe.to_string_lossy())
    )
}

/// Whether hook contents are relay's guard (they hold the [`MARKER`] line).
pub fn is_guard(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'\n')
        .any(|l| l.strip_suffix(b"\r").unwrap_or(l) == MARKER.as_bytes())
}

/// One step of a guard install or uninstall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do for `hook` (relay's current guard, or not relay's on uninstall).
    Keep {
        /// The hook.
        hook: PathBuf,
        /// Its contents.
        bytes: Vec<u8>,
    },
    /// Rename the pre-commit hook that is there to `chained` (kept whole: bytes, mode, a
    /// symlink as a symlink), so relay's runs it first.
    Chain {
        /// The existing hook.
        hook: PathBuf,
        /// Where it goes.
        chained: PathBuf,
        /// Its contents (for the diff).
        bytes: Vec<u8>,
    },
    /// Write relay's hook (mode 0755).
    Write {
        /// The hook.
        hook: PathBuf,
        /// Relay's older hook there, if any (after a [`Step::Chain`]: none).
        before: Option<Vec<u8>>,
        /// The script.
        after: String,
    },
    /// Rename the chained hook back over relay's (or into the empty place).
    Restore {
        /// The chained hook.
        chained: PathBuf,
        /// The pre-commit path.
        hook: PathBuf,
        /// Relay's hook it replaces, if there.
        replacing: Option<Vec<u8>>,
        /// The chained hook's contents.
        bytes: Vec<u8>,
    },
    /// Delete relay's hook (nothing was chained).
    Remove {
        /// The hook.
        hook: PathBuf,
        /// Its contents.
        before: Vec<u8>,
    },
}

/// A guard install or uninstall, planned.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The hooks directory git uses.
    pub hooks_dir: PathBuf,
    /// What to do, in order.
    pub steps: Vec<Step>,
    /// Things to tell the user.
    pub notes: Vec<String>,
}

/// What is at `path`: `None` when nothing; the bytes it reads as otherwise (a dangling
/// symlink reads as empty).
fn existing(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let io = |err| Error::Io {
        path: path.to_path_buf(),
        err,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
        Ok(_) => {}
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
        });
    }
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(Vec::new())),
        Err(e) => Err(io(e)),
    }
}

/// Plans installing (or uninstalling) the guard in the repository of `project`, running
/// `exe`. Reads only.
///
/// Relay's hook is replaced or removed only when it is byte for byte one relay writes
/// ([`is_pristine`]); a foreign hook is chained only when it does not find its work by its
/// own name ([`Error::WontChain`]).
///
/// # Errors
/// [`Error::NotARepo`], [`Error::Git`]; [`Error::Clash`] when installing over a foreign
/// pre-commit hook while a [`CHAINED`] one exists; [`Error::WontChain`] for a hook that
/// uses `$0` or belongs to husky, lefthook or the pre-commit framework; [`Error::Edited`]
/// for relay's hook edited by hand; [`Error::NotAFile`], [`Error::Io`].
pub fn plan(project: &Path, exe: &Path, action: Action) -> Result<Plan, Error> {
    let hooks_dir = hooks_dir(project)?;
    let hook = hooks_dir.join(HOOK);
    let chained = hooks_dir.join(CHAINED);
    let now = existing(&hook)?;
    let kept = existing(&chained)?;
    let mut notes = Vec::new();
    let steps = match action {
        Action::Install => {
            let after = script(exe);
            match now {
                Some(b) if is_guard(&b) && b == after.as_bytes() => vec![Step::Keep {
                    hook: hook.clone(),
                    bytes: b,
                }],
                Some(b) if is_guard(&b) && !is_pristine(&b) => {
                    return Err(Error::Edited {
                        hook: hook.clone(),
                        what: "to keep your edits, keep it as it is (it still runs the \
                               guard if your edits do); to have relay's hook again, move it \
                               away or undo the edits, then run `relay install guard` again"
                            .into(),
                    });
                }
                Some(b) if is_guard(&b) => vec![Step::Write {
                    hook: hook.clone(),
                    before: Some(b),
                    after,
                }],
                Some(b) if dispatches_on_name(&b).is_some() => {
                    return Err(Error::WontChain {
                        hook: hook.clone(),
                        why: dispatches_on_name(&b).unwrap_or_default(),
                        line: check_line(exe),
                    });
                }
                Some(_) if kept.is_some() => {
                    return Err(Error::Clash {
                        hook: hook.clone(),
                        chained: chained.clone(),
                    });
                }
                Some(b) => {
                    notes.push(format!(
                        "the pre-commit hook that was there now lives at {} and runs first; \
                         its failure still refuses the commit",
                        chained.display()
                    ));
                    vec![
                        Step::Chain {
                            hook: hook.clone(),
                            chained: chained.clone(),
                            bytes: b,
                        },
                        Step::Write {
                            hook: hook.clone(),
                            before: None,
                            after,
                        },
                    ]
                }
                None => {
                    if kept.is_some() {
                        notes.push(format!(
                            "{} (chained by an earlier install) runs first again",
                            chained.display()
                        ));
                    }
                    vec![Step::Write {
                        hook: hook.clone(),
                        before: None,
                        after,
                    }]
                }
            }
        }
        Action::Uninstall => match (now, kept) {
            (Some(b), kept) if is_guard(&b) && !is_pristine(&b) => {
                return Err(Error::Edited {
                    hook: hook.clone(),
                    what: if kept.is_some() {
                        format!(
                            "to remove it, delete it yourself, then rename {} back to {HOOK}",
                            chained.display()
                        )
                    } else {
                        "to remove it, delete it yourself".into()
                    },
                });
            }
            (Some(b), Some(k)) if is_guard(&b) => vec![Step::Restore {
                chained: chained.clone(),
                hook: hook.clone(),
                replacing: Some(b),
                bytes: k,
            }],
            (Some(b), None) if is_guard(&b) => vec![Step::Remove {
                hook: hook.clone(),
                before: b,
            }],
            (None, Some(k)) => vec![Step::Restore {
                chained: chained.clone(),
                hook: hook.clone(),
                replacing: None,
                bytes: k,
            }],
            (Some(b), kept) => {
                notes.push(format!(
                    "{} is not relay's guard; it was left alone",
                    hook.display()
                ));
                if kept.is_some() {
                    notes.push(format!("{} was left alone too", chained.display()));
                }
                vec![Step::Keep {
                    hook: hook.clone(),
                    bytes: b,
                }]
            }
            (None, None) => {
                notes.push(format!(
                    "relay's guard is not installed in {}",
                    hooks_dir.display()
                ));
                Vec::new()
            }
        },
    };
    Ok(Plan {
        hooks_dir,
        steps,
        notes,
    })
}

const WHAT_GUARD: &str = "relay guard pre-commit hook";
const WHAT_CHAINED: &str = "pre-commit hook chained by the guard";
const WHAT_OTHER: &str = "pre-commit hook";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The plan as whole-file changes (what [`install::diff`] shows): a move is the old
/// place changing and the new one appearing.
fn changes(plan: &Plan) -> Vec<FileChange> {
    let mut out = Vec::new();
    for s in &plan.steps {
        match s {
            Step::Keep { .. } => {}
            Step::Chain {
                hook,
                chained,
                bytes,
            } => {
                out.push(FileChange {
                    path: chained.clone(),
                    what: WHAT_CHAINED,
                    before: None,
                    after: Some(text(bytes)),
                });
                out.push(FileChange {
                    path: hook.clone(),
                    what: WHAT_OTHER,
                    before: Some(text(bytes)),
                    after: None,
                });
            }
            Step::Write {
                hook,
                before,
                after,
            } => {
                // After a chain the hook's place is empty: one change from what was there.
                match out.iter_mut().find(|c| &c.path == hook) {
                    Some(c) => {
                        c.what = WHAT_GUARD;
                        c.after = Some(after.clone());
                    }
                    None => out.push(FileChange {
                        path: hook.clone(),
                        what: WHAT_GUARD,
                        before: before.as_deref().map(text),
                        after: Some(after.clone()),
                    }),
                }
            }
            Step::Restore {
                chained,
                hook,
                replacing,
                bytes,
            } => {
                out.push(FileChange {
                    path: hook.clone(),
                    what: WHAT_OTHER,
                    before: replacing.as_deref().map(text),
                    after: Some(text(bytes)),
                });
                out.push(FileChange {
                    path: chained.clone(),
                    what: WHAT_CHAINED,
                    before: Some(text(bytes)),
                    after: None,
                });
            }
            Step::Remove { hook, before } => out.push(FileChange {
                path: hook.clone(),
                what: WHAT_GUARD,
                before: Some(text(before)),
                after: None,
            }),
        }
    }
    out
}

/// A unified diff of the plan (invalid UTF-8 shown replaced; the files keep every byte).
pub fn diff(plan: &Plan) -> String {
    install::diff(&install::Plan {
        files: changes(plan),
        notes: Vec::new(),
    })
}

/// What [`apply`] would report, without doing it (`--dry-run`): each action prefixed
/// `would`.
pub fn preview(plan: &Plan) -> Vec<Applied> {
    report(plan, true)
}

fn report(plan: &Plan, dry: bool) -> Vec<Applied> {
    let act = |done: &'static str, would: &'static str| if dry { would } else { done };
    plan.steps
        .iter()
        .map(|s| match s {
            Step::Keep { hook, bytes } => Applied {
                path: hook.clone(),
                what: if is_guard(bytes) {
                    WHAT_GUARD
                } else {
                    WHAT_OTHER
                },
                action: "unchanged",
                backup: None,
            },
            Step::Chain { chained, .. } => Applied {
                path: chained.clone(),
                what: WHAT_CHAINED,
                action: act("chained", "would chain"),
                backup: None,
            },
            Step::Write { hook, before, .. } => Applied {
                path: hook.clone(),
                what: WHAT_GUARD,
                action: match before {
                    Some(_) => act("updated", "would update"),
                    None => act("created", "would create"),
                },
                backup: None,
            },
            Step::Restore { hook, .. } => Applied {
                path: hook.clone(),
                what: WHAT_OTHER,
                action: act("restored", "would restore"),
                backup: None,
            },
            Step::Remove { hook, .. } => Applied {
                path: hook.clone(),
                what: WHAT_GUARD,
                action: act("deleted", "would delete"),
                backup: None,
            },
        })
        .collect()
}

/// Carries a plan out. Moves are renames (the chained hook keeps its inode, bytes, mode
/// and symlink-ness); relay's hook is written to a temporary file (mode 0755) renamed
/// into place, so git never runs half a script.
///
/// # Errors
/// [`Error::Io`] for the first step that fails; steps before it are done. A chain whose
/// target appeared since planning is refused (nothing overwritten).
pub fn apply(plan: &Plan) -> Result<Vec<Applied>, Error> {
    for s in &plan.steps {
        match s {
            Step::Keep { .. } => {}
            Step::Chain { hook, chained, .. } => {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    hook,
                    rustix::fs::CWD,
                    chained,
                    rustix::fs::RenameFlags::NOREPLACE,
                )
                .map_err(|e| Error::Io {
                    path: chained.clone(),
                    err: e.into(),
                })?;
            }
            Step::Write { hook, after, .. } => write_hook(&plan.hooks_dir, hook, after)?,
            Step::Restore { chained, hook, .. } => {
                std::fs::rename(chained, hook).map_err(|err| Error::Io {
                    path: hook.clone(),
                    err,
                })?;
            }
            Step::Remove { hook, .. } => std::fs::remove_file(hook).map_err(|err| Error::Io {
                path: hook.clone(),
                err,
            })?,
        }
    }
    Ok(report(plan, false))
}

fn write_hook(dir: &Path, hook: &Path, script: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |err| Error::Io { path, err }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!("{HOOK}.relay-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(script.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, hook).map_err(io(hook))
}

/// Whether the guard blocks or only warns, from [`MODE_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuardMode {
    /// Refuse the commit (exit 1).
    Block,
    /// Print the same, let the commit through (exit 0).
    Warn,
}

impl GuardMode {
    /// From the value of `RELAY_GUARD`: `warn` warns; unset, empty or `block` blocks. Any
    /// other value blocks too (a typo must not let commits through), with a note saying
    /// so.
    pub fn from_env(value: Option<&str>) -> (GuardMode, Option<String>) {
        match value.map(str::trim) {
            Some("warn") => (GuardMode::Warn, None),
            None | Some("" | "block") => (GuardMode::Block, None),
            Some(other) => (
                GuardMode::Block,
                Some(format!(
                    "{MODE_ENV}={other:?} is neither 'warn' nor 'block'; blocking"
                )),
            ),
        }
    }
}

/// The paths the commit being made touches, relative to the work tree's top: `git diff
/// --cached --name-only -z --no-renames` in `dir` (a rename lists its old and new path;
/// deletions count). Paths that are not UTF-8 are read with U+FFFD in place of bad bytes,
/// which a `**` glob still matches.
///
/// # Errors
/// [`Error::NotARepo`], [`Error::Git`].
pub fn staged(dir: &Path) -> Result<Vec<String>, Error> {
    // diff.relative would make the paths relative to a subdirectory, and drop the rest.
    let out = git(
        dir,
        &[
            "-c",
            "diff.relative=false",
            "diff",
            "--cached",
            "--name-only",
            "-z",
            "--no-renames",
            "--no-ext-diff",
        ],
    )?;
    let mut paths: Vec<String> = out
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    paths.dedup();
    Ok(paths)
}

/// One reservation that stands in the commit's way.
#[derive(Debug, Clone, Serialize)]
pub struct Blocking {
    /// The reservation (exclusive, live, another holder's).
    pub reservation: Reservation,
    /// Its holder's presence now (never gone).
    pub presence: Presence,
    /// Why ([`presence::Seen::why`]).
    pub why: String,
    /// The staged paths its glob matches, in the order git listed them.
    pub paths: Vec<String>,
}

/// The live exclusive reservations in `project` that match any of `staged` and are held
/// by an endpoint other than `me` whose presence is not [`Presence::Gone`] (a holder no
/// endpoint has the id of is gone). With no `me`, every other holder counts. In store
/// order (oldest first).
///
/// Each reservation's glob is compiled once ([`store::overlap::matcher`]), so the cost is
/// one match per (path, reservation) pair: 10 000 staged paths against 40 reservations
/// take milliseconds. The holders' presences are judged together
/// ([`presence::of_many`]: their sockets probed in parallel, within one
/// [`presence::PROBE_TIMEOUT`]).
///
/// # Errors
/// Store errors.
pub fn check(
    store: &dyn Store,
    runtime_dir: &Path,
    project: &str,
    me: Option<&str>,
    staged: &[String],
) -> store::Result<Vec<Blocking>> {
    let now = crate::clock::now_ms();
    if staged.is_empty() {
        return Ok(Vec::new());
    }
    // As `overlap::matches` reads a path: a leading `./` is ignored.
    let staged_paths: Vec<&str> = staged.iter().map(|p| p.trim_start_matches("./")).collect();
    let mut matched: Vec<(Reservation, Vec<String>)> = Vec::new();
    for r in store.reservations(Some(project))? {
        if r.mode != Mode::Exclusive || r.expires_at <= now || me == Some(r.holder.as_str()) {
            continue;
        }
        // A glob that does not parse matches nothing (as `overlap::matches` says).
        let Some(m) = store::overlap::matcher(&r.glob) else {
            continue;
        };
        let paths: Vec<String> = staged
            .iter()
            .zip(&staged_paths)
            .filter(|(_, p)| m.is_match(p))
            .map(|(p, _)| p.clone())
            .collect();
        if !paths.is_empty() {
            matched.push((r, paths));
        }
    }
    // Each holder judged once, all of them together.
    let mut holders: HashMap<String, presence::Seen> = HashMap::new();
    let mut found: Vec<crate::store::Endpoint> = Vec::new();
    for (r, _) in &matched {
        if holders.contains_key(&r.holder) || found.iter().any(|e| e.id == r.holder) {
            continue;
        }
        match store.lookup(&r.holder)? {
            Lookup::Found(e) if e.id == r.holder => found.push(e),
            _ => {
                holders.insert(
                    r.holder.clone(),
                    presence::Seen {
                        presence: Presence::Gone,
                        last_seen: None,
                        why: "no endpoint has this id".into(),
                    },
                );
            }
        }
    }
    let seen = presence::of_many(&found, runtime_dir);
    holders.extend(found.into_iter().map(|e| e.id).zip(seen));
    Ok(matched
        .into_iter()
        .filter_map(|(reservation, paths)| {
            let seen = holders.get(&reservation.holder)?;
            (seen.presence != Presence::Gone).then(|| Blocking {
                presence: seen.presence,
                why: seen.why.clone(),
                reservation,
                paths,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_recognised_and_quotes_the_binary() {
        let s = script(Path::new("/opt/my relay/relay"));
        assert!(is_guard(s.as_bytes()));
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("relay='/opt/my relay/relay'\n"), "{s}");
        assert!(s.contains("exec \"$relay\" guard check\n"));
        assert!(!is_guard(
            b"#!/bin/sh\necho '# managed-by: relay install guard'\n"
        ));
        assert!(is_guard(
            b"#!/bin/sh\r\n# managed-by: relay install guard\r\n"
        ));
    }

    #[test]
    fn only_a_script_relay_writes_is_pristine() {
        for exe in ["/usr/bin/relay", "/opt/my relay/it's/relay"] {
            let s = script(Path::new(exe));
            assert!(is_pristine(s.as_bytes()), "{exe}");
            assert!(!is_pristine(format!("{s}# mine\n").as_bytes()), "{exe}");
        }
        assert!(!is_pristine(
            b"#!/bin/sh\n# managed-by: relay install guard\n"
        ));
    }

    #[test]
    fn hooks_that_dispatch_on_their_name_are_not_chained() {
        for hook in [
            "#!/bin/sh\n. \"$(dirname \"$0\")/h\"\n",
            "#!/bin/sh\nname=${0##*/}\n",
            "#!/bin/sh\n# husky\nexit 0\n",
            "#!/bin/sh\nlefthook run pre-commit\n",
            "#!/usr/bin/env bash\n# File generated by pre-commit: https://pre-commit.com\n",
        ] {
            assert!(dispatches_on_name(hook.as_bytes()).is_some(), "{hook}");
        }
        for hook in ["#!/bin/sh\nmake lint\n", "#!/bin/sh\necho $01\n"] {
            assert!(dispatches_on_name(hook.as_bytes()).is_none(), "{hook}");
        }
        assert_eq!(
            check_line(Path::new("/a b/relay")),
            "'/a b/relay' guard check || exit 1"
        );
    }

    #[test]
    fn guard_mode_blocks_unless_told_to_warn() {
        assert_eq!(GuardMode::from_env(None), (GuardMode::Block, None));
        assert_eq!(GuardMode::from_env(Some("warn")).0, GuardMode::Warn);
        assert_eq!(GuardMode::from_env(Some("block")), (GuardMode::Block, None));
        let (m, note) = GuardMode::from_env(Some("wran"));
        assert_eq!(m, GuardMode::Block);
        assert!(note.unwrap().contains("wran"));
    }
}
