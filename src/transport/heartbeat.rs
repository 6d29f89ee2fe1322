//! Heartbeats (DESIGN.md §6): after each interval of silence send a `Ping`; a peer that
//! leaves [`MISSED_PINGS`] in a row unanswered is dead. Any frame from the peer counts as
//! an answer. End of stream needs no heartbeat: it is noticed at once by the read.

use super::{Connection, Error};
use crate::wire::Msg;
use crate::wire::catalogue::Ping;

/// Unanswered pings after which a peer is declared dead.
pub const MISSED_PINGS: u32 = 3;

/// One connection's heartbeat state. Use with a read timeout of one interval: call
/// [`Heartbeat::alive`] for every frame read and [`Heartbeat::silence`] when a read times
/// out ([`is_timeout`]).
#[derive(Debug, Default)]
pub struct Heartbeat {
    missed: u32,
    outstanding: bool,
    nonce: u64,
}

impl Heartbeat {
    /// A frame arrived: the peer is alive.
    pub fn alive(&mut self) {
        self.missed = 0;
        self.outstanding = false;
    }

    /// An interval passed in silence: counts the ping that went unanswered (if one was
    /// out) and sends the next. Returns the count of missed pings once it reaches
    /// [`MISSED_PINGS`] (the peer is dead; no ping is sent then), else `None`.
    ///
    /// # Errors
    /// Writing the `Ping` failed.
    pub fn silence(&mut self, conn: &mut Connection) -> Result<Option<u32>, Error> {
        if self.outstanding {
            self.missed += 1;
            if self.missed >= MISSED_PINGS {
                return Ok(Some(self.missed));
            }
        }
        self.nonce += 1;
        conn.write_frame(Msg::Ping(Ping { nonce: self.nonce }))?;
        self.outstanding = true;
        Ok(None)
    }
}

/// True when `e` is a read timeout (the socket's receive timeout expired).
pub fn is_timeout(e: &Error) -> bool {
    matches!(e, Error::Io(e) if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ))
}
