/// A fatal framing error: the connection that produced it is closed (DESIGN.md §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The first four bytes are not `52 4C 41 59` ("RLAY").
    #[error("bad magic {found:#010x}: not a relay frame (expected 0x59414c52, \"RLAY\")")]
    BadMagic {
        /// The little-endian u32 found.
        found: u32,
    },
    /// The header's version is not one this build speaks.
    #[error(
        "unsupported wire version {found}; this relay speaks version {}",
        super::VERSION
    )]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The header's kind is 0 or not in the catalogue.
    #[error(
        "unknown message kind {kind}; catalogue v1 has kinds 1..={}",
        super::catalogue::MAX_KIND
    )]
    UnknownKind {
        /// The kind found.
        kind: u16,
    },
    /// The payload length exceeds the negotiated maximum (checked before allocating).
    #[error("frame of {len} payload bytes is over the {max}-byte maximum")]
    FrameTooLarge {
        /// The header's `len`.
        len: u32,
        /// The maximum in force.
        max: u32,
    },
    /// The payload does not decode as its kind, or has bytes left over.
    #[error("malformed {kind} payload: {reason}")]
    Malformed {
        /// The message kind's name.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes buffered.
        have: usize,
        /// Bytes the frame needs (header alone when unknown).
        need: usize,
    },
}
