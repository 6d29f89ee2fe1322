//! The handshake (DESIGN.md §5): the dialer sends `Hello`, the listener answers `HelloAck`.
//! Nothing but `Hello` is read before it; a version or catalogue mismatch is refused with a
//! reason naming both values, then the connection closes.

use std::ops::RangeInclusive;

use super::{Connection, Error};
use crate::wire::catalogue::{Hello, HelloAck};
use crate::wire::{CATALOGUE_HASH, HARD_MAX_FRAME, Msg, VERSION};

/// Heartbeat intervals a listener accepts, ms (DESIGN.md §6: 100 ms–60 s). A `Hello`
/// outside is refused, naming the range: clamping would leave the dialer expecting pings
/// at an interval the listener never uses, and a refusal shows the mistake at once.
pub const HEARTBEAT_MS: RangeInclusive<u32> = 100..=60_000;

/// Largest frame read before the handshake, bytes: a `Hello` (ids and names are short),
/// so a peer cannot make a fresh connection buffer a 16 MiB frame.
pub const MAX_HELLO: u32 = 64 * 1024;

/// What this side offers.
#[derive(Debug, Clone)]
pub struct Local {
    /// Our endpoint id.
    pub endpoint_id: String,
    /// Our name, if any.
    pub name: Option<String>,
    /// Capability bits we support.
    pub capabilities: u32,
    /// Largest payload we accept, bytes.
    pub max_frame: u32,
    /// Heartbeat interval we propose, ms.
    pub heartbeat_ms: u32,
}

impl Local {
    /// Defaults for `endpoint_id`: all capabilities relay has, 16 MiB frames, 1 s heartbeat.
    pub fn new(endpoint_id: impl Into<String>) -> Local {
        Local {
            endpoint_id: endpoint_id.into(),
            name: None,
            capabilities: crate::wire::catalogue::FD_PASSING,
            max_frame: HARD_MAX_FRAME,
            heartbeat_ms: 1000,
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            protocol_version: VERSION,
            catalogue_hash: CATALOGUE_HASH,
            endpoint_id: self.endpoint_id.clone(),
            name: self.name.clone(),
            capabilities: self.capabilities,
            max_frame: self.max_frame,
            heartbeat_ms: self.heartbeat_ms,
        }
    }
}

/// What both sides agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The peer's endpoint id.
    pub peer_id: String,
    /// The peer's name (dialer side only knows the id).
    pub peer_name: Option<String>,
    /// Capability bits both have.
    pub capabilities: u32,
    /// The smaller of both `max_frame`s.
    pub max_frame: u32,
    /// Heartbeat interval, ms (the dialer's proposal).
    pub heartbeat_ms: u32,
}

/// Dialer side: send `Hello`, read `HelloAck`.
///
/// # Errors
/// [`Error::Refused`] with the listener's reason; [`Error::Protocol`] when the answer is
/// not a `HelloAck`; [`Error::Closed`], wire and socket errors.
pub fn dial(conn: &mut Connection, me: &Local) -> Result<Session, Error> {
    if let Err(e) = conn.write_frame(Msg::Hello(me.hello())) {
        // A listener past its connection cap writes its refusal and closes without
        // reading: the reason may be waiting even though our Hello could not go out.
        return match conn.read_frame() {
            Ok(Some(f)) => match f.msg {
                Msg::HelloAck(ack) if !ack.accepted => Err(Error::Refused(
                    ack.reason.unwrap_or_else(|| "no reason given".into()),
                )),
                _ => Err(e),
            },
            _ => Err(e),
        };
    }
    match conn.read_frame()?.map(|f| f.msg) {
        Some(Msg::HelloAck(ack)) if ack.accepted => {
            conn.set_max_frame(ack.max_frame);
            Ok(Session {
                peer_id: ack.endpoint_id,
                peer_name: None,
                capabilities: ack.capabilities,
                max_frame: ack.max_frame,
                heartbeat_ms: me.heartbeat_ms,
            })
        }
        Some(Msg::HelloAck(ack)) => Err(Error::Refused(
            ack.reason.unwrap_or_else(|| "no reason given".into()),
        )),
        Some(other) => Err(Error::Protocol(format!(
            "expected HelloAck, got {}",
            other.name()
        ))),
        None => Err(Error::Closed),
    }
}

/// Listener side: the first frame must be `Hello`; answer `HelloAck`.
///
/// # Errors
/// [`Error::Refused`] after telling the peer why (version or catalogue mismatch, a
/// `heartbeat_ms` outside [`HEARTBEAT_MS`], or a first frame that is not `Hello`); wire
/// and socket errors.
pub fn accept(conn: &mut Connection, me: &Local) -> Result<Session, Error> {
    let refuse = |conn: &mut Connection, reason: String| -> Result<Session, Error> {
        let _ = conn.write_frame(Msg::HelloAck(HelloAck {
            accepted: false,
            reason: Some(reason.clone()),
            endpoint_id: me.endpoint_id.clone(),
            capabilities: 0,
            max_frame: 0,
        }));
        Err(Error::Refused(reason))
    };
    let hello = match conn.read_frame()?.map(|f| f.msg) {
        Some(Msg::Hello(h)) => h,
        Some(other) => {
            return refuse(conn, format!("expected Hello first, got {}", other.name()));
        }
        None => return Err(Error::Closed),
    };
    if hello.protocol_version != VERSION {
        return refuse(
            conn,
            format!(
                "protocol version {} is not {} (this relay)",
                hello.protocol_version, VERSION
            ),
        );
    }
    if hello.catalogue_hash != CATALOGUE_HASH {
        return refuse(
            conn,
            format!(
                "catalogue hash {:#018x} differs from {:#018x} (this relay): the peers were built with different message catalogues",
                hello.catalogue_hash, CATALOGUE_HASH
            ),
        );
    }
    if !HEARTBEAT_MS.contains(&hello.heartbeat_ms) {
        return refuse(
            conn,
            format!(
                "heartbeat_ms {} is outside {}..={} (100 ms to 60 s)",
                hello.heartbeat_ms,
                HEARTBEAT_MS.start(),
                HEARTBEAT_MS.end()
            ),
        );
    }
    let session = Session {
        peer_id: hello.endpoint_id,
        peer_name: hello.name,
        capabilities: hello.capabilities & me.capabilities,
        max_frame: hello.max_frame.min(me.max_frame).min(HARD_MAX_FRAME),
        heartbeat_ms: hello.heartbeat_ms,
    };
    conn.write_frame(Msg::HelloAck(HelloAck {
        accepted: true,
        reason: None,
        endpoint_id: me.endpoint_id.clone(),
        capabilities: session.capabilities,
        max_frame: session.max_frame,
    }))?;
    conn.set_max_frame(session.max_frame);
    Ok(session)
}
