//! Latest-value frame buffers (DESIGN.md §8): large periodic state, such as a viewport's
//! pixels, published by one process and read by another without tearing.
//!
//! A memfd holds a header and three slots. The writer fills a slot that is neither the
//! latest nor the one the reader holds, then publishes it by storing `latest` =
//! `frame_id << 2 | slot`. The reader announces the slot it takes in `reading`, then checks
//! that `latest` did not move meanwhile (else it retries), so the writer — which reads
//! `reading` before choosing — never writes a slot being read. All three stores and loads
//! are SeqCst: the announce/check pair is a Dekker handshake.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::Error;
use super::memory::{self, Mapping};

/// `"FRAM"` little-endian.
pub const MAGIC: u32 = 0x4D41_5246;
/// Layout version.
pub const VERSION: u32 = 1;
/// Pixel format: 8-bit RGBA, 4 bytes per pixel.
pub const FORMAT_RGBA8: u32 = 1;
/// Bytes before slot 0 (slots start on a page boundary).
pub const HEADER_LEN: usize = 4096;
/// Slots in a buffer.
pub const SLOTS: u64 = 3;
/// Largest width or height, pixels.
pub const MAX_SIDE: u32 = 16384;

#[repr(C)]
struct Header {
    magic: u32,
    version: u32,
    width: u32,
    height: u32,
    format: u32,
    _pad: u32,
    slot_len: u64,
    /// `frame_id << 2 | slot`; 0 until the first publish (frame ids start at 1).
    latest: AtomicU64,
    /// Slot the reader holds, plus one; 0 when it holds none.
    reading: AtomicU32,
    /// 1 while a reader has the buffer open: `reading` has room for one reader only.
    readers: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);

/// Width, height and pixel format of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Pixel format ([`FORMAT_RGBA8`]).
    pub format: u32,
}

impl Geometry {
    /// RGBA8 of `width` × `height`.
    pub fn rgba8(width: u32, height: u32) -> Geometry {
        Geometry {
            width,
            height,
            format: FORMAT_RGBA8,
        }
    }

    /// Bytes per frame.
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 4
    }

    fn check(&self) -> Result<(), Error> {
        if self.format != FORMAT_RGBA8 {
            return Err(Error::Layout(format!(
                "pixel format {} is not supported (1 = RGBA8)",
                self.format
            )));
        }
        if !(1..=MAX_SIDE).contains(&self.width) || !(1..=MAX_SIDE).contains(&self.height) {
            return Err(Error::Layout(format!(
                "{}x{} is outside 1..={MAX_SIDE} on a side",
                self.width, self.height
            )));
        }
        Ok(())
    }
}

struct Shared {
    map: Arc<Mapping>,
    slot_len: usize,
}

impl Shared {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is page aligned and at least HEADER_LEN bytes (checked at
        // create/open); the fields changed after creation are atomics.
        unsafe { self.map.ptr().cast::<Header>().as_ref() }
    }

    fn slot_ptr(&self, slot: u64) -> *mut u8 {
        // SAFETY: slot < SLOTS and the mapping holds HEADER_LEN + SLOTS × slot_len bytes
        // (checked at create/open).
        unsafe {
            self.map
                .ptr()
                .as_ptr()
                .add(HEADER_LEN + slot as usize * self.slot_len)
        }
    }
}

/// The publishing side.
pub struct FrameWriter {
    shared: Shared,
    fd: OwnedFd,
    geometry: Geometry,
    next_id: u64,
}

impl FrameWriter {
    /// A new buffer for frames of `geometry` in a fresh memfd.
    ///
    /// # Errors
    /// [`Error::Layout`] for an unsupported geometry; [`Error::Io`] when the memfd cannot
    /// be made.
    pub fn create(geometry: Geometry) -> Result<FrameWriter, Error> {
        geometry.check()?;
        let slot_len = geometry.frame_len().next_multiple_of(4096);
        let (fd, map) = memory::create("relay-frames", HEADER_LEN + SLOTS as usize * slot_len)?;
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            width: geometry.width,
            height: geometry.height,
            format: geometry.format,
            _pad: 0,
            slot_len: slot_len as u64,
            latest: AtomicU64::new(0),
            reading: AtomicU32::new(0),
            readers: AtomicU32::new(0),
        };
        // SAFETY: fresh, page-aligned mapping of at least HEADER_LEN bytes, not yet shared.
        unsafe { map.ptr().cast::<Header>().as_ptr().write(header) };
        Ok(FrameWriter {
            shared: Shared {
                map: Arc::new(map),
                slot_len,
            },
            fd,
            geometry,
            next_id: 1,
        })
    }

    /// The memfd, to hand to a reader (SCM_RIGHTS, or `/proc/<pid>/fd/<n>` for a child).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The buffer's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Fills a free slot with `fill` (given the new frame's id — 1, 2, … — and its bytes,
    /// `geometry.frame_len()` of them) and publishes it. Returns the frame id.
    pub fn publish(&mut self, fill: impl FnOnce(u64, &mut [u8])) -> u64 {
        let h = self.shared.header();
        let latest = h.latest.load(Ordering::SeqCst);
        let held = h.reading.load(Ordering::SeqCst);
        let slot = (0..SLOTS)
            .find(|s| (latest == 0 || *s != latest & 3) && u64::from(held) != s + 1)
            .unwrap_or(0);
        // SAFETY: the slot is inside the mapping; the reader never reads a slot that is
        // neither latest nor announced in `reading` (module docs), so this is exclusive.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(self.shared.slot_ptr(slot), self.geometry.frame_len())
        };
        let id = self.next_id;
        fill(id, buf);
        self.next_id += 1;
        h.latest.store(id << 2 | slot, Ordering::SeqCst);
        id
    }
}

/// The reading side.
pub struct FrameReader {
    shared: Shared,
    geometry: Geometry,
}

/// A frame the reader holds; the writer does not touch its slot until this is dropped.
pub struct Frame<'a> {
    reader: &'a FrameReader,
    /// The frame's id (increasing).
    pub id: u64,
    bytes: &'a [u8],
}

impl std::ops::Deref for Frame<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        self.reader
            .shared
            .header()
            .reading
            .store(0, Ordering::SeqCst);
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        let h = self.shared.header();
        h.reading.store(0, Ordering::SeqCst);
        h.readers.store(0, Ordering::SeqCst);
    }
}

impl FrameReader {
    /// Opens a buffer from its memfd and checks it holds frames of `expected`.
    ///
    /// # Errors
    /// [`Error::Layout`] naming the mismatch (magic, version, width, height, format, size).
    pub fn open(fd: &OwnedFd, expected: Geometry) -> Result<FrameReader, Error> {
        // The header first, mapped alone: the slot length it names is the peer's word and
        // is checked before anything beyond the header is mapped.
        let head = memory::map_received(fd, HEADER_LEN)?;
        // SAFETY: page aligned, HEADER_LEN bytes mapped; plain fields are read once.
        let h = unsafe { head.ptr().cast::<Header>().as_ref() };
        if h.magic != MAGIC {
            return Err(Error::Layout(format!(
                "magic {:#010x}, expected {MAGIC:#010x}: not a relay frame buffer",
                h.magic
            )));
        }
        if h.version != VERSION {
            return Err(Error::Layout(format!(
                "layout version {}, expected {VERSION}",
                h.version
            )));
        }
        let got = Geometry {
            width: h.width,
            height: h.height,
            format: h.format,
        };
        if got != expected {
            return Err(Error::Layout(format!(
                "the buffer holds {}x{} format {} frames, expected {}x{} format {}",
                got.width, got.height, got.format, expected.width, expected.height, expected.format
            )));
        }
        expected.check()?;
        let slot_len = expected.frame_len().next_multiple_of(4096);
        if h.slot_len != slot_len as u64 {
            return Err(Error::Layout(format!(
                "slot length {} does not match {slot_len} for {}x{} frames",
                h.slot_len, got.width, got.height
            )));
        }
        // Bounded by MAX_SIDE, so this cannot overflow; checked anyway.
        let need = slot_len
            .checked_mul(SLOTS as usize)
            .and_then(|n| n.checked_add(HEADER_LEN))
            .ok_or_else(|| Error::Layout("frame buffer size overflows".into()))?;
        drop(head);
        let map = memory::map_received(fd, need)?;
        let shared = Shared {
            map: Arc::new(map),
            slot_len,
        };
        if shared
            .header()
            .readers
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(Error::Layout(
                "another reader has this frame buffer open (one reader per buffer)".into(),
            ));
        }
        Ok(FrameReader {
            shared,
            geometry: got,
        })
    }

    /// Opens a buffer by path (e.g. `/proc/<pid>/fd/<n>` of the publishing process).
    ///
    /// # Errors
    /// As [`FrameReader::open`], plus [`Error::Io`] when the path cannot be opened.
    pub fn open_path(path: &Path, expected: Geometry) -> Result<FrameReader, Error> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        FrameReader::open(&OwnedFd::from(f), expected)
    }

    /// The buffer's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The latest published frame, held until the returned guard drops; `None` before the
    /// first publish.
    pub fn latest(&mut self) -> Option<Frame<'_>> {
        let h = self.shared.header();
        loop {
            let l = h.latest.load(Ordering::SeqCst);
            if l == 0 {
                return None;
            }
            let slot = l & 3;
            if slot >= SLOTS {
                return None;
            }
            h.reading.store(slot as u32 + 1, Ordering::SeqCst);
            if h.latest.load(Ordering::SeqCst) != l {
                continue;
            }
            // SAFETY: slot < SLOTS is inside the mapping, and the writer will not choose it
            // while `reading` names it (module docs).
            let bytes = unsafe {
                std::slice::from_raw_parts(self.shared.slot_ptr(slot), self.geometry.frame_len())
            };
            return Some(Frame {
                reader: self,
                id: l >> 2,
                bytes,
            });
        }
    }
}
