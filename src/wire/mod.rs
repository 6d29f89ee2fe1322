//! The wire format (DESIGN.md §5; docs/wire.md): a 16-byte little-endian header, then a
//! postcard payload of one catalogue message. No I/O here: the transport feeds bytes in
//! and takes bytes out.

mod canonical;
pub mod catalogue;
mod error;
pub mod frame;

pub use catalogue::{CATALOGUE_HASH, Msg};
pub use error::Error;
pub use frame::{Frame, at_eof, check, decode, encode};

/// Frame magic: `0x59414C52`, the bytes `52 4C 41 59` ("RLAY") on the wire.
pub const MAGIC: u32 = 0x5941_4C52;
/// Wire protocol version.
pub const VERSION: u16 = 1;
/// Header size, bytes.
pub const HEADER_LEN: usize = 16;
/// Largest payload any peer may negotiate: 16 MiB.
pub const HARD_MAX_FRAME: u32 = 16 * 1024 * 1024;
