//! Supervision (DESIGN.md §6): a parent spawns a child endpoint connected by a socket pair
//! (no socket file exists, so none can be left behind), notices the child's death at the
//! moment its end of the pair closes, restarts it once and re-handshakes. A child whose
//! parent dies reads end-of-stream and exits 0.

use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::heartbeat::{Heartbeat, is_timeout};
use super::{Connection, Error, Local, Session, handshake};
use crate::wire::Msg;
use crate::wire::catalogue::{Ping, Pong};

/// The environment variable naming the child's end of the pair.
pub const FD_ENV: &str = "RELAY_SUPERVISOR_FD";

/// A supervised child endpoint.
#[derive(Debug)]
pub struct Supervised {
    child: std::process::Child,
    conn: Connection,
    /// What the handshake agreed.
    pub session: Session,
    nonce: u64,
}

impl Supervised {
    /// Starts `exe args…` with one end of a socket pair inherited (its number in
    /// [`FD_ENV`]) and handshakes with it.
    ///
    /// # Errors
    /// Spawn, handshake and socket errors.
    pub fn spawn(exe: &Path, args: &[&str], me: &Local) -> Result<Supervised, Error> {
        let (ours, theirs) = UnixStream::pair()?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env(FD_ENV, fd.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: runs between fork and exec, where only async-signal-safe calls are
        // allowed; fcntl(F_SETFD) is one. It keeps the child's end open across exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = rustix::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        let mut conn = Connection::new(ours);
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let session = handshake::accept(&mut conn, me)?;
        Ok(Supervised {
            child,
            conn,
            session,
            nonce: 0,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One Ping/Pong round trip.
    ///
    /// # Errors
    /// [`Error::Closed`] when the child is gone; socket and protocol errors.
    pub fn echo(&mut self) -> Result<Duration, Error> {
        self.nonce += 1;
        let t = Instant::now();
        self.conn
            .write_frame(Msg::Ping(Ping { nonce: self.nonce }))?;
        match self.conn.read_frame()?.map(|f| f.msg) {
            Some(Msg::Pong(p)) if p.nonce == self.nonce => Ok(t.elapsed()),
            Some(other) => Err(Error::Protocol(format!(
                "expected Pong, got {}",
                other.name()
            ))),
            None => Err(Error::Closed),
        }
    }

    /// Blocks until the child's end closes (it died or exited), reaps it, and returns how
    /// long after `since` that was noticed.
    ///
    /// # Errors
    /// Socket errors other than the close itself.
    pub fn wait_for_death(&mut self, since: Instant) -> Result<Duration, Error> {
        self.conn.set_read_timeout(None)?;
        loop {
            match self.conn.read_frame() {
                Ok(Some(_)) => continue,
                Ok(None) | Err(Error::Wire(_)) => break,
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            }
        }
        let noticed = since.elapsed();
        let _ = self.child.wait();
        Ok(noticed)
    }

    /// Watches the child with heartbeats: a `Ping` after every `interval` of silence; the
    /// child is declared dead after 3 pings go unanswered ([`Health::Hung`]). End of stream
    /// is noticed at once ([`Health::Exited`]). Blocks until one of them happens.
    ///
    /// # Errors
    /// Socket errors other than the close or the timeouts.
    pub fn monitor(&mut self, interval: Duration) -> Result<Health, Error> {
        self.conn.set_read_timeout(Some(interval))?;
        let mut beat = Heartbeat::default();
        loop {
            match self.conn.read_frame() {
                Ok(Some(_)) => beat.alive(),
                Ok(None) | Err(Error::Wire(_)) => return Ok(Health::Exited),
                Err(e) if is_timeout(&e) => {
                    if let Some(missed) = beat.silence(&mut self.conn)? {
                        return Ok(Health::Hung { missed });
                    }
                }
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(Health::Exited);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends SIGKILL to the child.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }
}

pub use super::heartbeat::MISSED_PINGS;

/// Why [`Supervised::monitor`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The child's end closed: it exited or was killed.
    Exited,
    /// The child stopped answering pings (stopped, hung, or its host is wedged).
    Hung {
        /// Pings that went unanswered.
        missed: u32,
    },
}

/// Detection and recovery of one child crash.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Recovery {
    /// SIGKILL → the parent noticed (end of stream), µs.
    pub detected_us: u64,
    /// SIGKILL → restarted, re-handshaken and one echo completed, µs.
    pub recovered_us: u64,
}

/// Kills the supervised child, notices it, restarts it once and echoes: the measured
/// version of what a supervisor does when its child crashes.
///
/// # Errors
/// When the restart or the echo fails.
pub fn crash_and_recover(
    s: &mut Supervised,
    exe: &Path,
    args: &[&str],
    me: &Local,
) -> Result<Recovery, Error> {
    let t = Instant::now();
    s.kill();
    let detected = s.wait_for_death(t)?;
    let mut fresh = Supervised::spawn(exe, args, me)?;
    fresh.echo()?;
    let recovered = t.elapsed();
    *s = fresh;
    Ok(Recovery {
        detected_us: detected.as_micros() as u64,
        recovered_us: recovered.as_micros() as u64,
    })
}

/// The child side: handshake over the inherited descriptor, answer pings, and exit (0)
/// when the parent's end closes.
///
/// # Errors
/// When [`FD_ENV`] is missing or the handshake fails.
pub fn run_child(me: &Local) -> Result<(), Error> {
    let fd: i32 = std::env::var(FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Error::Protocol(format!("{FD_ENV} is not set: not started by a supervisor"))
        })?;
    // SAFETY: the supervisor put this descriptor here for us (see `Supervised::spawn`); we
    // take ownership of it exactly once.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let mut conn = Connection::new(stream);
    handshake::dial(&mut conn, me)?;
    loop {
        match conn.read_frame() {
            Ok(Some(f)) => {
                if let Msg::Ping(p) = f.msg {
                    conn.write_frame(Msg::Pong(Pong { nonce: p.nonce }))?;
                }
            }
            // The parent is gone: end cleanly.
            Ok(None) | Err(Error::Wire(_)) => return Ok(()),
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
