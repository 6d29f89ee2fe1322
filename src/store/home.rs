//! Who may own `RELAY_HOME` and what is in it (DESIGN.md §4): relay keeps mail only where
//! no other user can read it or swap it.
//!
//! - A directory relay needs and that is missing is created, with missing parents, mode
//!   0700. An existing one is checked, never chmod-ed: it must be a directory owned by this
//!   user that no one else can write (group/other `w` refused); one others can merely read
//!   (0755, as older relays left it) is used with a warning naming the fix.
//! - A symlink is followed, and what it points to must pass the same checks; the link
//!   itself must belong to this user or root (whoever owns the link decides where it points).
//! - relay's files (`relay.db`) follow the same rules with 0600: owned by this user, not
//!   writable by others.
//! - A directory or file relay must write to and cannot is named in the error.
//!
//! The same rule covers every directory under the home (`doorbell/`, `wake/`):
//! [`private_dir`] is the one way relay makes one.

use std::fs::{DirBuilder, Metadata};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Error as StoreError;

/// Why relay refused a directory or file of its home. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// It belongs to another user.
    #[error(
        "{} is owned by {} rather than by you, {}; mode {mode:o}. relay keeps mail only where no other user can read or replace it, and left it untouched: point RELAY_HOME at a directory of your own (or remove this one if you did not make it)",
        described(path, target.as_deref()), user(*uid), user(*own)
    )]
    NotOwned {
        /// The path relay was given.
        path: PathBuf,
        /// Where it leads, when `path` is a symlink.
        target: Option<PathBuf>,
        /// The owner found.
        uid: u32,
        /// This process's effective uid.
        own: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// Other users can write to it.
    #[error(
        "{} has mode {mode:o}: other users can write to it, so they could replace your mail. relay left it untouched; fix: chmod {fix:o} {}",
        described(path, target.as_deref()), target.as_deref().unwrap_or(path).display()
    )]
    Writable {
        /// The path relay was given.
        path: PathBuf,
        /// Where it leads, when `path` is a symlink.
        target: Option<PathBuf>,
        /// Its permission bits.
        mode: u32,
        /// The mode that would be right: 700 for a directory, 600 for a file.
        fix: u32,
    },
    /// It is not the kind of file relay needs there.
    #[error(
        "{} is not a {want}; relay left it untouched: move it away or point RELAY_HOME elsewhere",
        described(path, target.as_deref())
    )]
    WrongType {
        /// The path relay was given.
        path: PathBuf,
        /// Where it leads, when `path` is a symlink.
        target: Option<PathBuf>,
        /// `directory` or `regular file`.
        want: &'static str,
    },
    /// A directory above the home lets another user rename what is in it, so the home
    /// could be swapped for theirs between relay's check and its open.
    #[error(
        "{ancestor} (above {}) is {why}: another user could swap your relay home for one of theirs and read your mail. relay left it untouched; point RELAY_HOME at a directory whose parents only you (or root) can change, or fix: {fix}",
        home.display()
    )]
    UnsafeAncestor {
        /// The home relay was given.
        home: PathBuf,
        /// The directory above it that is unsafe.
        ancestor: String,
        /// What is wrong with it.
        why: String,
        /// The command that would make it safe.
        fix: String,
    },
    /// relay must write there and cannot.
    // The OS error is part of the message, not a `source`: `{:#}` would print it twice.
    #[error(
        "cannot write to {} ({err}): relay keeps its mail there; make it writable for you (chmod u+w {}), or point RELAY_HOME at a directory you can write",
        path.display(), path.display()
    )]
    ReadOnly {
        /// The directory or file.
        path: PathBuf,
        /// Why not, from access(2): permission denied, read-only file system.
        err: std::io::Error,
    },
}

/// `path`, or `target (where the symlink path points)`.
fn described(path: &Path, target: Option<&Path>) -> String {
    match target {
        Some(t) => format!(
            "{} (where the symlink {} points)",
            t.display(),
            path.display()
        ),
        None => path.display().to_string(),
    }
}

/// `uid 1000 (alice)`, or `uid 1000` when /etc/passwd does not name it.
pub(crate) fn user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The login name of `uid` from /etc/passwd (local users only; an error message is the
/// only use, so a directory service is not worth a dependency).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// What kind of thing a path must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "regular file",
        }
    }
    fn private_mode(self) -> u32 {
        match self {
            Kind::Dir => 0o700,
            Kind::File => 0o600,
        }
    }
}

fn io(what: &'static str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Io {
        what,
        path: path.to_path_buf(),
        err,
    }
}

/// Checks an existing `path` against the rules of this module; `writable` also demands
/// that this process can write it. Reads metadata only.
fn check(path: &Path, kind: Kind, writable: bool) -> Result<(), StoreError> {
    let link = std::fs::symlink_metadata(path).map_err(|e| io("cannot inspect", path, e))?;
    let (meta, target): (Metadata, Option<PathBuf>) = if link.file_type().is_symlink() {
        // Whoever owns the link decides where relay writes.
        if link.uid() != euid() && link.uid() != 0 {
            return Err(Error::NotOwned {
                // The link itself is what belongs to someone else.
                path: path.to_path_buf(),
                target: None,
                uid: link.uid(),
                own: euid(),
                mode: link.mode() & 0o7777,
            }
            .into());
        }
        let target = std::fs::canonicalize(path).map_err(|e| io("cannot follow", path, e))?;
        let meta = std::fs::metadata(&target).map_err(|e| io("cannot inspect", &target, e))?;
        (meta, Some(target))
    } else {
        (link, None)
    };
    let right_type = match kind {
        Kind::Dir => meta.is_dir(),
        Kind::File => meta.is_file(),
    };
    if !right_type {
        return Err(Error::WrongType {
            path: path.to_path_buf(),
            target,
            want: kind.name(),
        }
        .into());
    }
    let mode = meta.mode() & 0o7777;
    if meta.uid() != euid() {
        return Err(Error::NotOwned {
            path: path.to_path_buf(),
            target,
            uid: meta.uid(),
            own: euid(),
            mode,
        }
        .into());
    }
    if mode & 0o022 != 0 {
        return Err(Error::Writable {
            path: path.to_path_buf(),
            target,
            mode,
            fix: kind.private_mode(),
        }
        .into());
    }
    if mode & 0o077 != 0 {
        // Readable by others but not writable: what relays before 0.1 left behind, and a
        // directory relay did not create is never chmod-ed. Used, with the fix.
        let shown = target.as_deref().unwrap_or(path);
        tracing::warn!(
            "{} has mode {mode:o}: other users can read it; fix: chmod {:o} {}",
            described(path, target.as_deref()),
            kind.private_mode(),
            shown.display()
        );
    }
    if writable {
        let need = match kind {
            Kind::Dir => rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            Kind::File => rustix::fs::Access::WRITE_OK | rustix::fs::Access::READ_OK,
        };
        rustix::fs::access(path, need).map_err(|e| Error::ReadOnly {
            path: path.to_path_buf(),
            err: e.into(),
        })?;
    }
    Ok(())
}

/// Refuses a home that another user could replace: every directory above it (on the path
/// as given and on the path it resolves to) must belong to this user or root, and must
/// not be writable by others unless it is sticky (`/tmp`: others cannot rename your
/// entries there). Group write is allowed only for this user's own group (user private
/// groups). Otherwise a user who can rename entries above the home could swap it with one
/// of theirs between relay's checks and SQLite's opens (the rule OpenSSH applies to
/// `~/.ssh`). Reads metadata only.
///
/// # Errors
/// [`Error::UnsafeAncestor`] naming the directory; [`StoreError::Io`] when one cannot be
/// inspected.
pub(crate) fn safe_ancestors(home: &Path) -> Result<(), StoreError> {
    let given = std::path::absolute(home).map_err(|e| io("cannot resolve", home, e))?;
    let resolved = std::fs::canonicalize(home).ok();
    let egid = rustix::process::getegid().as_raw();
    for path in std::iter::once(given).chain(resolved) {
        for dir in path.ancestors().skip(1) {
            let m = std::fs::symlink_metadata(dir).map_err(|e| io("cannot inspect", dir, e))?;
            let mode = m.mode() & 0o7777;
            let sticky = mode & 0o1000 != 0;
            let unsafe_because = if m.uid() != euid() && m.uid() != 0 {
                Some(format!("owned by {}", user(m.uid())))
            } else if m.file_type().is_symlink() {
                // A link's own mode means nothing; its parent is checked in turn.
                None
            } else if mode & 0o002 != 0 && !sticky {
                Some(format!(
                    "writable by every user (mode {mode:o}) and not sticky"
                ))
            } else if mode & 0o020 != 0 && !sticky && m.gid() != egid {
                Some(format!(
                    "writable by group {} (mode {mode:o}) and not sticky",
                    m.gid()
                ))
            } else {
                None
            };
            if let Some(why) = unsafe_because {
                return Err(Error::UnsafeAncestor {
                    home: home.to_path_buf(),
                    ancestor: dir.display().to_string(),
                    fix: if m.uid() != euid() && m.uid() != 0 {
                        "use a home outside it".to_string()
                    } else {
                        format!("chmod +t {} (or chmod go-w)", dir.display())
                    },
                    why,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Makes sure `dir` is a private directory relay can write: creates it (and missing
/// parents) with mode 0700, or checks the existing one — never changing its mode.
///
/// # Errors
/// [`Error`] (as [`StoreError::Home`]) when it belongs to another user, others can write
/// it, it is not a directory, or this process cannot write it; [`StoreError::Io`] when it
/// cannot be created or inspected.
pub(crate) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::PermissionDenied)
                        || e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) =>
                {
                    return Err(Error::ReadOnly {
                        path: dir.to_path_buf(),
                        err: e,
                    }
                    .into());
                }
                Err(e) => return Err(io("cannot create directory", dir, e)),
            }
        }
        Err(e) => return Err(io("cannot inspect", dir, e)),
        Ok(_) => {}
    }
    // Checked even when just created: another process may have made it first.
    check(dir, Kind::Dir, true)
}

/// Checks an existing directory of the home without creating or needing to write it (for
/// read-only opens).
///
/// # Errors
/// As [`private_dir`], without the write check.
pub(crate) fn existing_dir(dir: &Path) -> Result<(), StoreError> {
    check(dir, Kind::Dir, false)
}

/// Checks one of relay's files in the home (it exists): a regular file owned by this
/// user, not writable by others, and — with `writable` — one this process can write.
///
/// # Errors
/// As [`private_dir`].
pub(crate) fn private_file(path: &Path, writable: bool) -> Result<(), StoreError> {
    check(path, Kind::File, writable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_name_and_unknown_uids_only_a_number() {
        assert_eq!(user(0), "uid 0 (root)");
        assert_eq!(user(4_000_000_123), "uid 4000000123");
    }

    #[test]
    fn a_missing_directory_is_created_private_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o750);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o730)).unwrap();
        let e = private_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o730);
    }
}
