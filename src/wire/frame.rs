//! The 16-byte frame header and the two-pass codec (DESIGN.md §5).
//!
//! ```text
//! offset 0  magic   u32 LE  0x59414C52 ("RLAY" on the wire)
//!        4  version u16 LE  1
//!        6  kind    u16 LE  message kind, 0 invalid
//!        8  seq     u32 LE  sender's counter, wraps
//!       12  len     u32 LE  payload bytes, ≤ negotiated max (hard cap 16 MiB)
//! ```
//!
//! Decoding is two passes, as in mini-redis: [`check`] says whether a whole frame is
//! buffered (validating the header and the length *before* anything is allocated), then
//! [`decode`] parses it. "Not enough bytes yet" is `Ok(None)`, never an error; running out
//! of input inside a frame at end of stream is [`Error::Truncated`] ([`at_eof`]).

use super::catalogue::{Msg, kind_name};
use super::{Error, HARD_MAX_FRAME, HEADER_LEN, MAGIC, VERSION};

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The sender's sequence number.
    pub seq: u32,
    /// The message.
    pub msg: Msg,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message kind.
    pub kind: u16,
    /// Sequence number.
    pub seq: u32,
    /// Payload length.
    pub len: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses and validates a header from the first 16 bytes of `buf`.
///
/// # Errors
/// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::UnknownKind`],
/// [`Error::FrameTooLarge`] (against `max`, itself capped at 16 MiB).
///
/// # Panics
/// Never for `buf.len() >= 16`; callers check that first.
pub fn parse_header(buf: &[u8], max: u32) -> Result<Header, Error> {
    let magic = u32_at(buf, 0);
    if magic != MAGIC {
        return Err(Error::BadMagic { found: magic });
    }
    let version = u16_at(buf, 4);
    if version != VERSION {
        return Err(Error::UnsupportedVersion { found: version });
    }
    let kind = u16_at(buf, 6);
    if kind_name(kind).is_none() {
        return Err(Error::UnknownKind { kind });
    }
    let len = u32_at(buf, 12);
    let max = max.min(HARD_MAX_FRAME);
    if len > max {
        return Err(Error::FrameTooLarge { len, max });
    }
    Ok(Header {
        kind,
        seq: u32_at(buf, 8),
        len,
    })
}

/// First pass: is a whole frame at the start of `buf`? `Ok(Some(total bytes))` when it
/// is, `Ok(None)` when more bytes are needed. The header is validated as soon as its 16
/// bytes are in, so an oversized length is refused before a buffer grows for it.
///
/// # Errors
/// Any header error of [`parse_header`].
pub fn check(buf: &[u8], max: u32) -> Result<Option<usize>, Error> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let h = parse_header(buf, max)?;
    let total = HEADER_LEN + h.len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// Second pass: decodes the frame at the start of `buf`, returning it and the bytes it
/// used, or `Ok(None)` when it is not all buffered yet.
///
/// # Errors
/// Header errors, and [`Error::Malformed`] when the payload does not decode as its kind
/// or leaves trailing bytes.
pub fn decode(buf: &[u8], max: u32) -> Result<Option<(Frame, usize)>, Error> {
    let Some(total) = check(buf, max)? else {
        return Ok(None);
    };
    let h = parse_header(buf, max)?;
    let msg = Msg::decode_payload(h.kind, &buf[HEADER_LEN..total])?;
    Ok(Some((Frame { seq: h.seq, msg }, total)))
}

/// What the bytes left at end of stream mean: nothing left is a clean close; anything
/// else ended inside a frame.
///
/// # Errors
/// [`Error::Truncated`] when `rest` is not empty (after header validation errors, which
/// take precedence).
pub fn at_eof(rest: &[u8], max: u32) -> Result<(), Error> {
    if rest.is_empty() {
        return Ok(());
    }
    let need = if rest.len() >= HEADER_LEN {
        HEADER_LEN + parse_header(rest, max)?.len as usize
    } else {
        HEADER_LEN
    };
    Err(Error::Truncated {
        have: rest.len(),
        need,
    })
}

/// Appends the encoded frame to `out`.
///
/// # Errors
/// [`Error::FrameTooLarge`] when the payload is over `max` (nothing is appended).
pub fn encode(frame: &Frame, max: u32, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    frame.msg.encode_payload(out);
    let len = out.len() - start - HEADER_LEN;
    let max = max.min(HARD_MAX_FRAME);
    if len > max as usize {
        out.truncate(start);
        return Err(Error::FrameTooLarge {
            len: u32::try_from(len).unwrap_or(u32::MAX),
            max,
        });
    }
    let h = &mut out[start..start + HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&frame.msg.kind().to_le_bytes());
    h[8..12].copy_from_slice(&frame.seq.to_le_bytes());
    h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}
