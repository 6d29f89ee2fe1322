//! Catalogue v1: every message kind, its id and payload (DESIGN.md §5). Payloads are
//! encoded with postcard; field order is the encoding, so changing a struct changes the
//! catalogue hash and peers with different catalogues refuse each other at Hello.

use serde::{Deserialize, Serialize};

/// Capability bit: the peer accepts file descriptors over SCM_RIGHTS.
pub const FD_PASSING: u32 = 1 << 0;
/// Capability bit: the peer can run shared-memory streams.
pub const SHM_STREAMS: u32 = 1 << 1;
/// Capability bit: the peer can share latest-value frame buffers.
pub const FRAMES: u32 = 1 << 2;

/// Dialer's opening message. Nothing else is accepted before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Wire protocol version (1).
    pub protocol_version: u16,
    /// [`CATALOGUE_HASH`] of the dialer.
    pub catalogue_hash: u64,
    /// Dialer's endpoint id.
    pub endpoint_id: String,
    /// Dialer's name, if any.
    pub name: Option<String>,
    /// Capability bits ([`FD_PASSING`], [`SHM_STREAMS`], [`FRAMES`]).
    pub capabilities: u32,
    /// Largest payload the dialer accepts, bytes.
    pub max_frame: u32,
    /// Heartbeat interval the dialer proposes, ms.
    pub heartbeat_ms: u32,
}

/// Listener's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    /// False: the connection closes after this message.
    pub accepted: bool,
    /// Why it was refused, naming both values on a mismatch.
    pub reason: Option<String>,
    /// Listener's endpoint id.
    pub endpoint_id: String,
    /// Intersection of both sides' capability bits.
    pub capabilities: u32,
    /// Minimum of both sides' `max_frame`.
    pub max_frame: u32,
}

/// Liveness probe; answered with a [`Pong`] carrying the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the Pong.
    pub nonce: u64,
}

/// Answer to [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The Ping's nonce.
    pub nonce: u64,
}

/// A message handed to a live endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// Message id (UUIDv7).
    pub message_id: String,
    /// Sender endpoint id.
    pub from: String,
    /// Sender name, if any.
    pub from_name: Option<String>,
    /// Thread, if any.
    pub thread: Option<String>,
    /// Id of the message this answers, if any.
    pub reply_to: Option<String>,
    /// 0 = notify, 1 = request.
    pub intent: u8,
    /// MIME type of the body.
    pub content_type: String,
    /// The body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// ms since the epoch.
    pub created_at: i64,
}

/// The receiver's answer to [`Deliver`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverAck {
    /// The delivered message's id.
    pub message_id: String,
    /// True: the receiver has it (the sender may record it acked).
    pub accepted: bool,
    /// Why not, when refused.
    pub reason: Option<String>,
}

/// A reply to a request, correlated by the request's message id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The reply's own message id.
    pub message_id: String,
    /// The request it answers.
    pub reply_to: String,
    /// MIME type of the body.
    pub content_type: String,
    /// The body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Opens a stream (the memfd and eventfds travel with this frame over SCM_RIGHTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOpen {
    /// Opener-chosen id, unique on the connection.
    pub stream_id: u32,
    /// Ring capacity in bytes (a power of two); 0 for a socket-only stream.
    pub capacity: u32,
    /// True when shared memory is offered (fds attached).
    pub shm: bool,
}

/// The peer took the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAccept {
    /// The stream.
    pub stream_id: u32,
    /// True when it runs over shared memory; false: over [`StreamData`] frames.
    pub shm: bool,
}

/// The peer refused the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReject {
    /// The stream.
    pub stream_id: u32,
    /// Why.
    pub reason: String,
}

/// Stream bytes over the socket (fallback path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamData {
    /// The stream.
    pub stream_id: u32,
    /// Offset of the first byte in the stream.
    pub offset: u64,
    /// The bytes (postcard writes `serde_bytes` exactly as a `u8` sequence: a varint length,
    /// then the bytes — only faster).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The writer is done (after drain the reader sees end of stream), or the reader left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamClose {
    /// The stream.
    pub stream_id: u32,
    /// Total bytes written.
    pub total: u64,
}

/// Orderly close request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    /// Why, for the log.
    pub reason: String,
}

/// Answer to [`Shutdown`]; the connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAck {}

/// A non-fatal error about an earlier request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Machine-readable code.
    pub code: u16,
    /// What went wrong.
    pub message: String,
}

macro_rules! catalogue {
    ($( $id:literal $kind:ident ($ty:ty) { $($field:ident : $fty:literal),* } )*) => {
        /// Every message of catalogue v1.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Msg {
            $(
                #[doc = concat!("Kind ", stringify!($id), ".")]
                $kind($ty),
            )*
        }

        impl Msg {
            /// The kind id on the wire.
            pub fn kind(&self) -> u16 {
                match self { $( Msg::$kind(_) => $id, )* }
            }

            /// The kind's name.
            pub fn name(&self) -> &'static str {
                kind_name(self.kind()).unwrap_or("?")
            }

            /// Encodes the payload with postcard.
            pub fn encode_payload(&self, out: &mut Vec<u8>) {
                let r = match self {
                    $( Msg::$kind(m) => postcard::to_io(m, &mut *out).map(drop), )*
                };
                r.expect("postcard encodes to a Vec without error");
            }

            /// Decodes a payload of `kind`; the whole payload must be consumed.
            pub fn decode_payload(kind: u16, payload: &[u8]) -> Result<Msg, super::Error> {
                match kind {
                    $( $id => {
                        let (m, rest) = postcard::take_from_bytes::<$ty>(payload).map_err(|e| super::Error::Malformed {
                            kind: stringify!($kind),
                            reason: e.to_string(),
                        })?;
                        if !rest.is_empty() {
                            return Err(super::Error::Malformed {
                                kind: stringify!($kind),
                                reason: format!("{} trailing bytes", rest.len()),
                            });
                        }
                        // One message, one encoding: postcard also reads varints with
                        // redundant continuation bytes, which would re-encode differently.
                        if !super::canonical::matches(&m, payload) {
                            return Err(super::Error::Malformed {
                                kind: stringify!($kind),
                                reason: "non-canonical encoding (over-long varint)".into(),
                            });
                        }
                        Ok(Msg::$kind(m))
                    } )*
                    _ => Err(super::Error::UnknownKind { kind }),
                }
            }
        }

        /// The name of a kind id, if it is in the catalogue.
        pub fn kind_name(kind: u16) -> Option<&'static str> {
            match kind { $( $id => Some(stringify!($kind)), )* _ => None }
        }

        /// The catalogue as text: one line per kind, `id name field:type …`. Hashed into
        /// [`CATALOGUE_HASH`].
        pub const CATALOGUE: &str = concat!($( stringify!($id), " ", stringify!($kind), $( " ", stringify!($field), ":", $fty, )* "\n", )*);

        /// Field names per kind, for the test that keeps [`CATALOGUE`] true to the structs.
        #[cfg(test)]
        pub(crate) fn fields() -> Vec<(u16, Vec<&'static str>)> {
            vec![ $( ($id, vec![$(stringify!($field)),*]), )* ]
        }

        #[cfg(test)]
        impl Msg {
            /// The payload as JSON (field names as serde sees them).
            pub(crate) fn payload_json(&self) -> serde_json::Value {
                match self { $( Msg::$kind(m) => serde_json::to_value(m).expect("serializes"), )* }
            }
        }
    };
}

catalogue! {
    1 Hello(Hello) { protocol_version: "u16", catalogue_hash: "u64", endpoint_id: "string", name: "option<string>", capabilities: "u32", max_frame: "u32", heartbeat_ms: "u32" }
    2 HelloAck(HelloAck) { accepted: "bool", reason: "option<string>", endpoint_id: "string", capabilities: "u32", max_frame: "u32" }
    3 Ping(Ping) { nonce: "u64" }
    4 Pong(Pong) { nonce: "u64" }
    5 Deliver(Deliver) { message_id: "string", from: "string", from_name: "option<string>", thread: "option<string>", reply_to: "option<string>", intent: "u8", content_type: "string", body: "bytes", created_at: "i64" }
    6 DeliverAck(DeliverAck) { message_id: "string", accepted: "bool", reason: "option<string>" }
    7 Reply(Reply) { message_id: "string", reply_to: "string", content_type: "string", body: "bytes" }
    8 StreamOpen(StreamOpen) { stream_id: "u32", capacity: "u32", shm: "bool" }
    9 StreamAccept(StreamAccept) { stream_id: "u32", shm: "bool" }
    10 StreamReject(StreamReject) { stream_id: "u32", reason: "string" }
    11 StreamData(StreamData) { stream_id: "u32", offset: "u64", data: "bytes" }
    12 StreamClose(StreamClose) { stream_id: "u32", total: "u64" }
    13 Shutdown(Shutdown) { reason: "string" }
    14 ShutdownAck(ShutdownAck) { }
    15 Error(ErrorMsg) { code: "u16", message: "string" }
}

/// The highest kind id in catalogue v1.
pub const MAX_KIND: u16 = 15;

/// FNV-1a 64 over `s`, at compile time.
const fn fnv1a(s: &str) -> u64 {
    let bytes = s.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// FNV-1a 64 of [`CATALOGUE`]: fixed at build time, sent in [`Hello`].
pub const CATALOGUE_HASH: u64 = fnv1a(CATALOGUE);

/// One message of every kind, with non-default values (tests, docs/wire.md examples).
pub fn samples() -> Vec<Msg> {
    let s = |v: &str| v.to_string();
    vec![
        Msg::Hello(Hello {
            protocol_version: 1,
            catalogue_hash: CATALOGUE_HASH,
            endpoint_id: s("0190f5a2-7b3c-7def-8abc-0123456789ab"),
            name: Some(s("alice")),
            capabilities: FD_PASSING | SHM_STREAMS,
            max_frame: 1 << 20,
            heartbeat_ms: 1000,
        }),
        Msg::HelloAck(HelloAck {
            accepted: true,
            reason: None,
            endpoint_id: s("bob-id"),
            capabilities: FD_PASSING,
            max_frame: 65536,
        }),
        Msg::Ping(Ping { nonce: 7 }),
        Msg::Pong(Pong { nonce: 7 }),
        Msg::Deliver(Deliver {
            message_id: s("m1"),
            from: s("a"),
            from_name: Some(s("alice")),
            thread: Some(s("t")),
            reply_to: None,
            intent: 1,
            content_type: s("text/plain; charset=utf-8"),
            body: b"hello".to_vec(),
            created_at: 1_700_000_000_000,
        }),
        Msg::DeliverAck(DeliverAck {
            message_id: s("m1"),
            accepted: true,
            reason: None,
        }),
        Msg::Reply(Reply {
            message_id: s("m2"),
            reply_to: s("m1"),
            content_type: s("text/plain"),
            body: b"pong".to_vec(),
        }),
        Msg::StreamOpen(StreamOpen {
            stream_id: 3,
            capacity: 1 << 20,
            shm: true,
        }),
        Msg::StreamAccept(StreamAccept {
            stream_id: 3,
            shm: true,
        }),
        Msg::StreamReject(StreamReject {
            stream_id: 4,
            reason: s("no slots"),
        }),
        Msg::StreamData(StreamData {
            stream_id: 3,
            offset: 4096,
            data: vec![0, 1, 2, 255],
        }),
        Msg::StreamClose(StreamClose {
            stream_id: 3,
            total: 4100,
        }),
        Msg::Shutdown(Shutdown { reason: s("bye") }),
        Msg::ShutdownAck(ShutdownAck {}),
        Msg::Error(ErrorMsg {
            code: 2,
            message: s("unknown stream"),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_text_names_every_field_of_every_struct() {
        let samples = samples();
        assert_eq!(samples.len(), MAX_KIND as usize);
        for (msg, (id, fields)) in samples.iter().zip(fields()) {
            assert_eq!(msg.kind(), id);
            let keys: Vec<String> = msg
                .payload_json()
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert_eq!(keys, fields, "kind {id} ({})", msg.name());
        }
        assert!(CATALOGUE.starts_with("1 Hello protocol_version:u16 catalogue_hash:u64"));
        assert_ne!(CATALOGUE_HASH, 0);
    }
}
