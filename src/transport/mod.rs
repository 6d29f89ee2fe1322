//! Unix-socket transport (DESIGN.md §6): a framed [`Connection`] with fd passing, peer
//! credentials and bounded reads, the versioned [`handshake`], a [`Listener`] that holds
//! its endpoint's lock, reclaims stale socket files, refuses other users before reading a
//! byte and caps its connections, and a dialer ([`client`]) that refuses sockets served
//! by other users.
//!
//! Blocking std sockets, a thread per connection: a relay endpoint has a handful of peers,
//! and a blocking read wakes faster than a reactor hop, which is what the RTT is about.

pub mod client;
pub mod connection;
pub mod handshake;
pub mod heartbeat;
pub mod listener;
pub mod supervise;

use std::path::{Path, PathBuf};

pub use connection::Connection;
pub use handshake::{Local, Session};
pub use listener::Listener;

/// Where live endpoints put their sockets: `$RELAY_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/relay`, else `$RELAY_HOME/run` (mode 0700).
pub fn runtime_dir(relay_home: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("RELAY_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("relay");
    }
    relay_home.join("run")
}

/// `$RELAY_HOME/locks/<endpoint id>.lock`: the lock one live listener of an endpoint holds
/// for its lifetime, wherever its socket is ([`Listener::bind_locked`]).
pub fn endpoint_lock(relay_home: &Path, endpoint_id: &str) -> PathBuf {
    relay_home.join("locks").join(format!("{endpoint_id}.lock"))
}

/// `<runtime dir>/<endpoint id>.sock`. Endpoint ids are plain file names
/// (`store::names::check_id`).
pub fn socket_path(runtime: &Path, endpoint_id: &str) -> PathBuf {
    runtime.join(format!("{endpoint_id}.sock"))
}

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not valid frames; the connection is closed.
    #[error("{0}")]
    Wire(#[from] crate::wire::Error),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// The handshake was refused (by either side), with the reason.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// The peer sent a frame the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A connecting process runs as another user; it was closed before a byte was read.
    #[error("refused a connection from uid {uid} (relay accepts only its own user, uid {own})")]
    PeerUid {
        /// The peer's uid.
        uid: u32,
        /// Ours.
        own: u32,
    },
    /// A live endpoint already listens on the socket; it was left alone.
    #[error("{path} is in use by a live endpoint (pid {pid}); it was not touched")]
    InUse {
        /// The socket.
        path: PathBuf,
        /// The process holding it.
        pid: i32,
    },
    /// The socket path exists and is not a socket (a symlink, a file…); it was left alone.
    #[error(
        "{path} exists and is not a socket ({what}); relay will not replace it: remove it \
         if nothing needs it"
    )]
    NotASocket {
        /// The socket path.
        path: PathBuf,
        /// What is there instead, e.g. "a symlink to /x".
        what: String,
    },
    /// Binding the socket (or unlinking a stale one) failed.
    #[error("cannot bind {path}: {error}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why (not a `source`, so `{:#}` prints it once).
        error: std::io::Error,
    },
    /// Another listener holds the endpoint's lock (one listener per endpoint).
    #[error(
        "another listener already runs for this endpoint (pid {}, holding {}); stop it \
         first, or listen as another endpoint",
        pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        path.display()
    )]
    Locked {
        /// The lock file, `<runtime dir>/<id>.lock`.
        path: PathBuf,
        /// The holder, when the kernel's lock table (or the file) names it.
        pid: Option<i32>,
    },
    /// The runtime directory is not private to us; it was left as it is.
    #[error(
        "the runtime dir {path} is owned by uid {uid} with mode {mode:04o}: live sockets \
         need a directory owned by uid {own} that no one else can write; {}",
        if *uid != *own || *mode & 0o1000 != 0 {
            // Someone else's, or a shared sticky directory such as /tmp: not ours to narrow.
            "set RELAY_RUNTIME_DIR to a directory of your own (e.g. `mkdir -m 700 ~/.relay-run`)"
        } else {
            "if it is meant to be private, `chmod go-w` it; else set RELAY_RUNTIME_DIR to a \
             private directory"
        }
    )]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
        /// Our uid.
        own: u32,
    },
    /// The listener already serves its maximum of connections; this one was closed.
    #[error("the listener serves {max} connections already (its limit); try again later")]
    TooManyConnections {
        /// The cap.
        max: usize,
    },
    /// The socket we dialed is served by another user's process; nothing was sent.
    #[error(
        "{path} is served by uid {uid}, not by this user (uid {own}): not trusted, nothing \
         was sent over it"
    )]
    ForeignListener {
        /// The socket.
        path: PathBuf,
        /// The listener's uid (SO_PEERCRED).
        uid: u32,
        /// Ours.
        own: u32,
    },
}
