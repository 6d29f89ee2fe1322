//! The dialing side of live delivery: probe a target's socket, then hand it one message.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Connection, Error, Local, handshake};
use crate::route::LiveState;
use crate::wire::Msg;
use crate::wire::catalogue::{Deliver, DeliverAck};

/// Connects to `path`: `Live` with the stream, or why not.
pub fn probe(path: &Path) -> (LiveState, Option<UnixStream>) {
    match UnixStream::connect(path) {
        Ok(s) => (LiveState::Live, Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (LiveState::StaleSocket, None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (LiveState::NoSocket, None),
        Err(_) => (LiveState::Indeterminate, None),
    }
}

/// Handshakes on `stream` as `me`, sends `d`, and waits at most `timeout` for the peer's
/// `DeliverAck` (answering `Ping`s meanwhile).
///
/// # Errors
/// Handshake, wire and socket errors; [`Error::Closed`] when the peer hangs up first.
pub fn deliver(
    stream: UnixStream,
    me: &Local,
    d: Deliver,
    timeout: Duration,
) -> Result<DeliverAck, Error> {
    let mut conn = Connection::new(stream);
    conn.set_read_timeout(Some(timeout))?;
    handshake::dial(&mut conn, me)?;
    let id = d.message_id.clone();
    conn.write_frame(Msg::Deliver(d))?;
    loop {
        match conn.read_frame()?.map(|f| f.msg) {
            Some(Msg::DeliverAck(a)) if a.message_id == id => {
                let _ = conn.write_frame(Msg::Shutdown(crate::wire::catalogue::Shutdown {
                    reason: "delivered".into(),
                }));
                return Ok(a);
            }
            Some(Msg::Ping(p)) => {
                conn.write_frame(Msg::Pong(crate::wire::catalogue::Pong { nonce: p.nonce }))?
            }
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
