//! The dialing side of live delivery: probe a target's socket, then hand it one message.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Connection, Error, Local, handshake};
use crate::route::LiveState;
use crate::wire::Msg;
use crate::wire::catalogue::{Deliver, DeliverAck, Pong, Reply, Shutdown};

/// Connects to `path`: `Live` with the stream, or why not. A socket served by another
/// user's process is never `Live` (DESIGN.md §6: the dialer checks SO_PEERCRED): it is
/// `Indeterminate`, with a warning naming the socket and its uid, and nothing is written
/// to it, so the sender falls back to the mailbox.
/// The connect is bounded by [`PROBE_CONNECT`]: a listener that stopped accepting (its
/// backlog full) is `Indeterminate`, not a hang.
pub fn probe(path: &Path) -> (LiveState, Option<UnixStream>) {
    match connect_within(path, PROBE_CONNECT) {
        Ok(s) => (LiveState::Live, Some(s)),
        Err(e @ Error::ForeignListener { .. }) => {
            tracing::warn!("{e}");
            (LiveState::Indeterminate, None)
        }
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (LiveState::StaleSocket, None)
        }
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            (LiveState::NoSocket, None)
        }
        Err(_) => (LiveState::Indeterminate, None),
    }
}

/// How long [`probe`] waits for a connection: 500 ms. A listener that accepts at all is
/// connected to at once (the kernel queues us in its backlog); only a full backlog waits.
pub const PROBE_CONNECT: Duration = Duration::from_millis(500);

/// [`connect`] bounded by `timeout`. A blocking `connect(2)` to a Unix socket whose
/// listener's backlog is full waits without bound (the listener stopped accepting, or
/// `listen(0)`s); this one connects non-blocking, retrying `EAGAIN` every 5 ms until
/// `timeout` has passed. Returns a blocking stream, checked as [`connect`] checks it.
///
/// # Errors
/// As [`connect`]; [`Error::Io`] with `TimedOut` when no connection was made in time.
pub fn connect_within(path: &Path, timeout: Duration) -> Result<UnixStream, Error> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let deadline = std::time::Instant::now() + timeout;
    let addr = SocketAddrUnix::new(path).map_err(std::io::Error::from)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            // A Unix stream connect never completes later (no EINPROGRESS): EAGAIN means
            // the backlog is full now, so asking again is the only way to wait.
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "{} accepts no connection within {timeout:?} (its listener is \
                             not accepting)",
                            path.display()
                        ),
                    )
                    .into());
                }
                std::thread::sleep(left.min(Duration::from_millis(5)));
            }
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
    let s = UnixStream::from(fd);
    s.set_nonblocking(false)?;
    check_peer(path, s)
}

/// Connects to the listener at `path` and checks that it runs as our own uid
/// (SO_PEERCRED: the credentials of the process that called `listen`). Every dial of an
/// endpoint socket goes through here.
///
/// # Errors
/// [`Error::ForeignListener`] naming the socket and its uid (the connection is closed
/// before a byte is written); [`Error::Io`] from `connect` (e.g. `NotFound`,
/// `ConnectionRefused` for a stale socket).
pub fn connect(path: &Path) -> Result<UnixStream, Error> {
    check_peer(path, UnixStream::connect(path)?)
}

/// `s` if its peer (the process that called `listen` on `path`) runs as our uid.
fn check_peer(path: &Path, s: UnixStream) -> Result<UnixStream, Error> {
    let uid = rustix::net::sockopt::socket_peercred(&s)
        .map_err(std::io::Error::from)?
        .uid
        .as_raw();
    let own = rustix::process::geteuid().as_raw();
    if uid != own {
        return Err(Error::ForeignListener {
            path: path.to_path_buf(),
            uid,
            own,
        });
    }
    Ok(s)
}

/// Handshakes on `stream` as `me`, sends `d`, and waits at most `timeout` for the peer's
/// `DeliverAck` (answering `Ping`s meanwhile). The connection is returned open: a sender
/// of a request keeps it for [`await_reply`]; others hand it to [`close`].
///
/// # Errors
/// Handshake, wire and socket errors; [`Error::Closed`] when the peer hangs up first.
pub fn deliver(
    stream: UnixStream,
    me: &Local,
    d: Deliver,
    timeout: Duration,
) -> Result<(DeliverAck, Connection), Error> {
    let mut conn = open(stream, me, timeout)?;
    let ack = deliver_on(&mut conn, d)?;
    Ok((ack, conn))
}

/// Handshakes on `stream` as `me`, every read bounded by `timeout`: a connection ready for
/// [`deliver_on`]. Nothing has been handed over yet when this fails, so a caller may
/// retry on a fresh connection.
///
/// # Errors
/// Handshake, wire and socket errors.
pub fn open(stream: UnixStream, me: &Local, timeout: Duration) -> Result<Connection, Error> {
    let mut conn = Connection::new(stream);
    conn.set_read_timeout(Some(timeout))?;
    handshake::dial(&mut conn, me)?;
    Ok(conn)
}

/// Sends one `Deliver` on a connection [`open`] made and waits for its
/// `DeliverAck` (answering `Ping`s; a `Reply` to an earlier request is skipped, it is in
/// the asker's mailbox too), each read bounded by the connection's read timeout. Many
/// messages to one endpoint share one connection this way.
///
/// # Errors
/// Wire and socket errors (a read timeout is `Error::Io` with `WouldBlock`/`TimedOut`);
/// [`Error::Closed`] when the peer hangs up first.
pub fn deliver_on(conn: &mut Connection, d: Deliver) -> Result<DeliverAck, Error> {
    let id = d.message_id.clone();
    conn.write_frame(Msg::Deliver(d))?;
    loop {
        match conn.read_frame()?.map(|f| f.msg) {
            Some(Msg::DeliverAck(a)) if a.message_id == id => return Ok(a),
            Some(Msg::Reply(_)) => {}
            Some(Msg::Ping(p)) => conn.write_frame(Msg::Pong(Pong { nonce: p.nonce }))?,
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "expected DeliverAck, got {}",
                    other.name()
                )));
            }
            None => return Err(Error::Closed),
        }
    }
}

/// Ends a sender's connection politely: a `Shutdown`, then close. Errors are ignored; the
/// peer sees end of stream either way.
pub fn close(mut conn: Connection, reason: &str) {
    let _ = conn.write_frame(Msg::Shutdown(Shutdown {
        reason: reason.into(),
    }));
}

/// Reads the connection until the peer's `Reply` to `request_id` (answering `Ping`s),
/// blocking at most `timeout` in all. `Ok(None)` when the peer closed the connection
/// without replying on it (it may still reply through the mailbox).
///
/// # Errors
/// Wire and socket errors; `Error::Io` with `TimedOut` when `timeout` passed first.
pub fn await_reply(
    conn: &mut Connection,
    request_id: &str,
    timeout: Duration,
) -> Result<Option<Reply>, Error> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // The peer's pings keep each read short, so the deadline is checked per read.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no reply within the wait",
            )
            .into());
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read_frame()?.map(|f| f.msg) {
            Some(Msg::Reply(r)) if r.reply_to == request_id => return Ok(Some(r)),
            Some(Msg::Ping(p)) => conn.write_frame(Msg::Pong(Pong { nonce: p.nonce }))?,
            Some(Msg::Shutdown(_)) | None => return Ok(None),
            // Anything else (a reply to another request, a Pong) is not ours to handle.
            Some(_) => {}
        }
    }
}
