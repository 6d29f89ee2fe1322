//! The listening socket of a live endpoint.
//!
//! - Its directory is created 0700.
//! - A socket file left by a crashed endpoint is reclaimed only after a connect to it is
//!   refused; a socket someone still listens on is never unlinked (the error names the pid).
//! - Connections from other users are closed before a byte is read (SO_PEERCRED).
//! - Dropping the listener removes its socket file.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::{Connection, Error};

/// A bound endpoint socket.
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    path: PathBuf,
}

impl std::os::fd::AsFd for Listener {
    /// The listening socket, to poll for a pending connection.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Listener {
    /// Binds `path`, reclaiming a stale socket file.
    ///
    /// # Errors
    /// [`Error::InUse`] when a live endpoint holds it; socket errors.
    pub fn bind(path: &Path) -> Result<Listener, Error> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            // An existing directory of ours is narrowed to 0700 too: sockets in it must
            // not be reachable by others (connect needs search permission on the path).
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = std::fs::metadata(dir)?;
            if meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
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
                std::fs::remove_file(path)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Listener {
            inner: UnixListener::bind(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection from this user.
    ///
    /// # Errors
    /// [`Error::PeerUid`] for a connection from another user (already closed: callers log
    /// it and accept again); socket errors.
    pub fn accept(&self) -> Result<Connection, Error> {
        let (stream, _) = self.inner.accept()?;
        let own = rustix::process::geteuid().as_raw();
        let uid = rustix::net::sockopt::socket_peercred(&stream)
            .map_err(std::io::Error::from)?
            .uid
            .as_raw();
        check_peer(uid, own)?;
        Ok(Connection::new(stream))
    }
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

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
