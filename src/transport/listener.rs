//! The listening socket of a live endpoint (DESIGN.md §6).
//!
//! - Its directory is created 0700 when missing (with any missing parents). An existing
//!   directory is never chmod-ed: it must be ours and not group/other-writable, or it is
//!   refused ([`Error::UnsafeDir`]).
//! - One listener per endpoint: a kernel `flock` on `<id>.lock` next to the socket, held
//!   for the listener's lifetime, decides ([`Error::Locked`] names the holder's pid). Only
//!   the lock holder reclaims a socket file left by a crashed endpoint, and only after a
//!   connect to it is refused; a socket someone still listens on is never unlinked.
//! - Connections from other users are closed before a byte is read (SO_PEERCRED).
//! - At most [`MAX_CONNECTIONS`] connections are open at once; one more is told why (a
//!   `HelloAck` refusal naming the limit) and closed.
//! - Dropping the listener removes its socket file, then releases the lock.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::connection::Slot;
use super::{Connection, Error};
use crate::wire::Msg;
use crate::wire::catalogue::HelloAck;

/// Connections one listener serves at once (each costs a thread in `relay listen`).
pub const MAX_CONNECTIONS: usize = 64;

/// A bound endpoint socket.
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    path: PathBuf,
    /// Connections accepted and not yet dropped.
    open: Arc<AtomicUsize>,
    max_connections: usize,
    /// The endpoint lock (`<id>.lock`), released when this closes, after `Drop` removed
    /// the socket file.
    _lock: File,
    /// The endpoint's lock in its store's home, when taken ([`Listener::bind_locked`]).
    _store_lock: Option<File>,
}

impl std::os::fd::AsFd for Listener {
    /// The listening socket, to poll for a pending connection.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Listener {
    /// Binds `path` (`<runtime dir>/<id>.sock`): makes sure its directory is private,
    /// takes the endpoint lock `<id>.lock`, then reclaims a stale socket file and binds.
    ///
    /// # Errors
    /// [`Error::UnsafeDir`] for a directory of another user or one others can write;
    /// [`Error::Locked`] when another listener holds the endpoint; [`Error::InUse`] when
    /// something outside the lock listens on the socket; [`Error::NotASocket`] when
    /// something else is at the path; [`Error::Bind`] naming the path; file errors.
    pub fn bind(path: &Path) -> Result<Listener, Error> {
        Self::bind_locked(path, None)
    }

    /// [`Listener::bind`] that first takes a second endpoint lock, `store_lock`, which
    /// does not depend on the runtime dir: the runtime dir comes from the environment
    /// (`RELAY_RUNTIME_DIR`, `XDG_RUNTIME_DIR`), so two shells could otherwise run two
    /// listeners for one endpoint in two runtime dirs. `relay listen` passes
    /// [`super::endpoint_lock`] of its home. Its directory is made private like the
    /// socket's.
    ///
    /// # Errors
    /// As [`Listener::bind`]; [`Error::Locked`] naming `store_lock` when another listener
    /// of this endpoint runs anywhere.
    pub fn bind_locked(path: &Path, store_lock: Option<&Path>) -> Result<Listener, Error> {
        let held = match store_lock {
            Some(l) => {
                if let Some(dir) = l.parent().filter(|d| !d.as_os_str().is_empty()) {
                    private_dir(dir)?;
                }
                Some(lock_endpoint(l)?)
            }
            None => None,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir)?;
        }
        let lock = lock_endpoint(&path.with_extension("lock"))?;
        // Only the lock holder gets here, so the check and the unlink cannot race another
        // relay listener. Only a socket is ever reclaimed: anything else at the path
        // (a symlink, even a dangling one; a file) is someone's, and is left alone.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            if !t.is_socket() {
                let what = if t.is_symlink() {
                    match std::fs::read_link(path) {
                        Ok(to) => format!("a symlink to {}", to.display()),
                        Err(_) => "a symlink".into(),
                    }
                } else if t.is_dir() {
                    "a directory".into()
                } else {
                    "a file".into()
                };
                return Err(Error::NotASocket {
                    path: path.to_path_buf(),
                    what,
                });
            }
        }
        match UnixStream::connect(path) {
            Ok(s) => {
                let pid = rustix::net::sockopt::socket_peercred(&s)
                    .map_or(0, |c| c.pid.as_raw_nonzero().get());
                return Err(Error::InUse {
                    path: path.to_path_buf(),
                    pid,
                });
            }
            // Nothing listens: the file (if any) is stale.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|error| Error::Bind {
                    path: path.to_path_buf(),
                    error,
                })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Error::Bind {
                    path: path.to_path_buf(),
                    error,
                });
            }
        }
        let inner = UnixListener::bind(path).map_err(|error| Error::Bind {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(Listener {
            inner,
            path: path.to_path_buf(),
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: MAX_CONNECTIONS,
            _lock: lock,
            _store_lock: held,
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections accepted by this listener that are still open.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Accepts one connection from this user. A connection past [`MAX_CONNECTIONS`] is
    /// told why (a `HelloAck` refusal naming the limit), closed and logged, and the wait
    /// goes on: callers never see it.
    ///
    /// # Errors
    /// [`Error::PeerUid`] for a connection from another user (already closed: callers log
    /// it and accept again); socket errors.
    pub fn accept(&self) -> Result<Connection, Error> {
        loop {
            let (stream, _) = self.inner.accept()?;
            let own = rustix::process::geteuid().as_raw();
            let uid = rustix::net::sockopt::socket_peercred(&stream)
                .map_err(std::io::Error::from)?
                .uid
                .as_raw();
            check_peer(uid, own)?;
            let Some(slot) = Slot::take(&self.open, self.max_connections) else {
                tracing::warn!(
                    "{}: {}",
                    self.path.display(),
                    refuse_busy(stream, self.max_connections)
                );
                continue;
            };
            let mut conn = Connection::new(stream);
            conn.hold(slot);
            // Nothing but a Hello is expected before the handshake: no big frames yet.
            conn.set_max_frame(super::handshake::MAX_HELLO);
            return Ok(conn);
        }
    }
}

/// Tells a connection past the cap why it is closed: a `HelloAck` refusal, written at once
/// (the dialer reads it as the answer to its Hello), without waiting for a thread.
fn refuse_busy(stream: UnixStream, max: usize) -> Error {
    let e = Error::TooManyConnections { max };
    let mut conn = Connection::new(stream);
    let _ = conn
        .stream()
        .set_write_timeout(Some(std::time::Duration::from_millis(100)));
    let _ = conn.write_frame(Msg::HelloAck(HelloAck {
        accepted: false,
        reason: Some(e.to_string()),
        endpoint_id: String::new(),
        capabilities: 0,
        max_frame: 0,
    }));
    let _ = conn.stream().shutdown(std::net::Shutdown::Write);
    e
}

/// The credential rule: only our own user may connect.
///
/// # Errors
/// [`Error::PeerUid`].
pub fn check_peer(uid: u32, own: u32) -> Result<(), Error> {
    if uid == own {
        Ok(())
    } else {
        Err(Error::PeerUid { uid, own })
    }
}

/// Makes sure `dir` is a private directory of ours: creates it (and any missing parents)
/// with mode 0700 when missing; an existing one is accepted only when it is a directory
/// owned by our uid and not writable by group or others. Never changes an existing mode.
///
/// # Errors
/// [`Error::UnsafeDir`] naming the path, its owner and mode; creation errors.
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    if let Ok(m) = std::fs::metadata(dir)
        && !m.is_dir()
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!(
                "{} is not a directory; point RELAY_RUNTIME_DIR at a directory of yours",
                dir.display()
            ),
        )
        .into());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
    let meta = std::fs::metadata(dir)?;
    let own = rustix::process::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if !meta.is_dir() || meta.uid() != own || mode & 0o022 != 0 {
        return Err(Error::UnsafeDir {
            path: dir.to_path_buf(),
            uid: meta.uid(),
            mode,
            own,
        });
    }
    Ok(())
}

/// Takes the endpoint lock at `path` without blocking, and writes our pid into it (for
/// people; the holder is read from the kernel's lock table).
fn lock_endpoint(path: &Path) -> Result<File, Error> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
        })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(Error::Locked {
                path: path.to_path_buf(),
                pid: lock_holder(&mut file),
            });
        }
        Err(e) => return Err(std::io::Error::from(e).into()),
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

/// The pid holding a flock on `file`: from `/proc/locks` (the kernel's word), else the pid
/// the holder wrote into the file.
fn lock_holder(file: &mut File) -> Option<i32> {
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let from_kernel = std::fs::read_to_string("/proc/locks").ok().and_then(|t| {
        t.lines().find_map(|l| {
            // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
                .then(|| f.get(4)?.parse().ok())
                .flatten()
        })
    });
    from_kernel.or_else(|| {
        let mut s = String::new();
        file.read_to_string(&mut s).ok()?;
        s.trim().parse().ok()
    })
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
