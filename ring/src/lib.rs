//! relay's single-producer single-consumer byte ring (DESIGN.md §8), laid over a shared
//! memory region that two processes map: a 256-byte `#[repr(C)]` [`Header`], then
//! `capacity` data bytes (a power of two).
//!
//! The writer owns the `write` cursor, the reader the `read` cursor; both are byte counts
//! that wrap at 2⁶⁴, so `write - read` is the fill. A byte is published by the writer's
//! Release store of `write` and handed back by the reader's Release store of `read`.
//! Nothing here trusts the other side: a fill over capacity, a cursor that moves backwards,
//! or a cursor that changed under its owner poisons the ring ([`Error::Corrupt`]) before any
//! memory outside the region could be touched.
//!
//! Blocking is the caller's business (relay parks on eventfds); the ring only keeps the
//! `parked` flags that tell the other side a doorbell is wanted, with the fences that make
//! "check, then park" free of lost wake-ups.
//!
//! Under `--cfg loom` the atomics come from loom ([`sync`]) and the protocol is model-checked
//! (`RUSTFLAGS="--cfg loom" cargo test -p relay-ring --release`).

mod sync;

use std::ptr::NonNull;
use std::sync::Arc;

use sync::{AtomicU32, AtomicU64, Ordering, fence};

/// `"RING"` little-endian.
pub const MAGIC: u32 = 0x474E_4952;
/// Layout version.
pub const VERSION: u32 = 1;
/// Bytes before the data area. The data starts on its own cache line.
#[cfg(not(loom))]
pub const HEADER_LEN: usize = 256;
/// Under loom the atomics are bigger; the region is only ever on the heap then.
#[cfg(loom)]
pub const HEADER_LEN: usize = (std::mem::size_of::<Header>() + 63) / 64 * 64;
/// Smallest capacity, bytes.
pub const MIN_CAPACITY: u64 = 8;
/// Largest capacity, bytes (1 GiB).
pub const MAX_CAPACITY: u64 = 1 << 30;

/// `state` bit: the writer finished; after the drain the reader sees end of stream.
pub const WRITER_DONE: u32 = 1;
/// `state` bit: the reader is gone; writes fail with [`Error::Closed`].
pub const READER_GONE: u32 = 2;
/// `state` bit: the writer vanished without finishing (its process died); after the drain
/// the reader gets [`Error::WriterGone`].
pub const WRITER_GONE: u32 = 4;

/// The shared header. Cursors sit on their own cache lines so the two sides do not
/// invalidate each other's line on every store.
#[repr(C)]
pub struct Header {
    magic: u32,
    version: u32,
    capacity: u64,
    state: AtomicU32,
    reader_parked: AtomicU32,
    writer_parked: AtomicU32,
    _pad0: [u8; 36],
    write: AtomicU64,
    _pad1: [u8; 56],
    read: AtomicU64,
    _pad2: [u8; 56],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);

/// What went wrong with a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The reader is gone: nothing written now would be read.
    Closed,
    /// The cursors or header are impossible; the ring is poisoned for good.
    Corrupt(String),
    /// The writer vanished without finishing the stream; the bytes before it were read.
    WriterGone,
    /// The region is not a ring this version understands (magic, version, geometry).
    BadLayout(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Closed => f.write_str("the reader closed the stream"),
            Error::Corrupt(why) => write!(f, "stream corrupt: {why}"),
            Error::WriterGone => f.write_str("the writer vanished before finishing the stream"),
            Error::BadLayout(why) => write!(f, "not a relay ring: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// One read's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// This many bytes were copied out (at least 1).
    Data(usize),
    /// Nothing to read yet (also for an empty buffer, even when data waits).
    Pending,
    /// The writer finished and every byte was read. Sticky.
    Eof,
}

/// A mapped region holding a ring, kept alive while either half uses it.
#[derive(Clone)]
pub struct Ring {
    base: NonNull<u8>,
    cap: u64,
    _owner: Arc<dyn Send + Sync>,
}

// SAFETY: the region is shared memory designed for concurrent use: every field another
// thread or process writes is an atomic, and data bytes are only touched in the half of the
// ring the protocol gives to the accessing side.
unsafe impl Send for Ring {}
// SAFETY: as for Send; `&Ring` only reads the immutable geometry.
unsafe impl Sync for Ring {}

/// Bytes a region needs for a ring of `capacity`.
pub const fn region_len(capacity: u64) -> usize {
    HEADER_LEN + capacity as usize
}

impl Ring {
    /// Writes a fresh header for a ring of `capacity` at `base` (the opener's side).
    ///
    /// # Errors
    /// [`Error::BadLayout`] when `capacity` is not a power of two in
    /// [`MIN_CAPACITY`]..=[`MAX_CAPACITY`] or `len` is smaller than [`region_len`].
    ///
    /// # Safety
    /// `base` must be 64-byte aligned and valid for reads and writes of `len` bytes for as
    /// long as `owner` lives, and no one else may use the region until this returns.
    pub unsafe fn init(
        base: NonNull<u8>,
        len: usize,
        capacity: u64,
        owner: Arc<dyn Send + Sync>,
    ) -> Result<Ring, Error> {
        check_geometry(capacity, len)?;
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            capacity,
            state: AtomicU32::new(0),
            reader_parked: AtomicU32::new(0),
            writer_parked: AtomicU32::new(0),
            _pad0: [0; 36],
            write: AtomicU64::new(0),
            _pad1: [0; 56],
            read: AtomicU64::new(0),
            _pad2: [0; 56],
        };
        // SAFETY: the caller guarantees `base` is aligned (64 ≥ align of Header), valid for
        // `len ≥ HEADER_LEN` bytes, and not yet shared.
        unsafe { base.cast::<Header>().as_ptr().write(header) };
        Ok(Ring {
            base,
            cap: capacity,
            _owner: owner,
        })
    }

    /// Checks the header at `base` (the acceptor's side): magic, version, and a capacity
    /// that fits `len`.
    ///
    /// # Errors
    /// [`Error::BadLayout`] naming the field that is wrong and the value expected.
    ///
    /// # Safety
    /// As [`Ring::init`], except that the header was written by the opener.
    pub unsafe fn attach(
        base: NonNull<u8>,
        len: usize,
        owner: Arc<dyn Send + Sync>,
    ) -> Result<Ring, Error> {
        if len < HEADER_LEN {
            return Err(Error::BadLayout(format!(
                "region of {len} bytes is smaller than the {HEADER_LEN}-byte header"
            )));
        }
        // SAFETY: aligned and valid for HEADER_LEN bytes (caller); plain integer fields.
        let h = unsafe { base.cast::<Header>().as_ref() };
        if h.magic != MAGIC {
            return Err(Error::BadLayout(format!(
                "magic {:#010x}, expected {MAGIC:#010x}",
                h.magic
            )));
        }
        if h.version != VERSION {
            return Err(Error::BadLayout(format!(
                "layout version {}, expected {VERSION}",
                h.version
            )));
        }
        check_geometry(h.capacity, len)?;
        Ok(Ring {
            base,
            cap: h.capacity,
            _owner: owner,
        })
    }

    /// Data capacity, bytes.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// The header. The lifetime is not tied to `&self` so the halves can hold it across
    /// `&mut self` calls; callers only use it while their `Ring` (and so `_owner`) lives.
    fn header<'a>(&self) -> &'a Header {
        // SAFETY: `base` points to an initialised Header for the life of `_owner` (init or
        // attach checked it), every field written after init is atomic, and every caller
        // holds the Ring that owns the region while it uses the reference.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the region is HEADER_LEN + cap bytes (checked at init/attach).
        unsafe { self.base.as_ptr().add(HEADER_LEN) }
    }

    /// The `state` bits ([`WRITER_DONE`], [`READER_GONE`], [`WRITER_GONE`]).
    pub fn state(&self) -> u32 {
        self.header().state.load(Ordering::Acquire)
    }

    /// Sets `bits` in `state` (used by whoever notices a side is gone).
    pub fn mark(&self, bits: u32) {
        self.header().state.fetch_or(bits, Ordering::AcqRel);
    }

    /// The writing half.
    ///
    /// # Safety
    /// At most one `Writer` may exist for a ring, across every process mapping it: two
    /// writers would copy into the same bytes at once.
    pub unsafe fn writer(self) -> Writer {
        Writer {
            cur: Cursors::new(Side::Writer),
            ring: self,
        }
    }

    /// The reading half.
    ///
    /// # Safety
    /// At most one `Reader` may exist for a ring, across every process mapping it.
    pub unsafe fn reader(self) -> Reader {
        Reader {
            cur: Cursors::new(Side::Reader),
            eof: false,
            ring: self,
        }
    }

    /// Test hook: overwrites the cursors, as a broken or hostile peer could.
    #[doc(hidden)]
    pub fn forge_cursors(&self, write: u64, read: u64) {
        self.header().write.store(write, Ordering::Release);
        self.header().read.store(read, Ordering::Release);
    }
}

fn check_geometry(capacity: u64, len: usize) -> Result<(), Error> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(Error::BadLayout(format!(
            "capacity {capacity} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}"
        )));
    }
    if len < region_len(capacity) {
        return Err(Error::BadLayout(format!(
            "capacity {capacity} needs a {}-byte region, got {len}",
            region_len(capacity)
        )));
    }
    Ok(())
}

/// Which half a [`Cursors`] belongs to.
#[derive(Debug, Clone, Copy)]
enum Side {
    Writer,
    Reader,
}

/// One half's view of the cursors: its own position (the shared cursor it owns must
/// always equal it), the other cursor as last seen (it may only move forward, by at most
/// the capacity), and why the view was poisoned, once it was.
#[derive(Debug)]
struct Cursors {
    side: Side,
    pos: u64,
    seen: u64,
    poisoned: Option<String>,
}

impl Cursors {
    fn new(side: Side) -> Cursors {
        Cursors {
            side,
            pos: 0,
            seen: 0,
            poisoned: None,
        }
    }

    /// `Err(Corrupt)` for good once poisoned.
    fn healthy(&self) -> Result<(), Error> {
        match &self.poisoned {
            Some(why) => Err(Error::Corrupt(why.clone())),
            None => Ok(()),
        }
    }

    /// Loads `theirs` (Acquire) and checks both cursors; returns the fill.
    fn check(&mut self, mine: &AtomicU64, theirs: &AtomicU64, cap: u64) -> Result<u64, Error> {
        self.healthy()?;
        let (me, who, other) = match self.side {
            Side::Writer => ("write", "writer", "read"),
            Side::Reader => ("read", "reader", "write"),
        };
        let stored = mine.load(Ordering::Relaxed);
        let why = if stored != self.pos {
            format!(
                "{me} cursor is {stored}, but the {who} left it at {}",
                self.pos
            )
        } else {
            let t = theirs.load(Ordering::Acquire);
            let fill = match self.side {
                Side::Writer => self.pos.wrapping_sub(t),
                Side::Reader => t.wrapping_sub(self.pos),
            };
            if fill > cap {
                format!(
                    "fill {fill} is over capacity {cap} ({other} cursor {t}, {me} cursor {})",
                    self.pos
                )
            } else if t.wrapping_sub(self.seen) > cap {
                format!("{other} cursor moved backwards from {} to {t}", self.seen)
            } else {
                self.seen = t;
                return Ok(fill);
            }
        };
        self.poisoned = Some(why.clone());
        Err(Error::Corrupt(why))
    }
}

/// The writing half of a ring.
pub struct Writer {
    ring: Ring,
    cur: Cursors,
}

impl Writer {
    /// Copies as much of `buf` as fits; `Ok(0)` for a non-empty `buf` means the ring is
    /// full (backpressure), never an error.
    ///
    /// # Errors
    /// [`Error::Closed`] once the reader is gone; [`Error::Corrupt`] on impossible cursors
    /// (then forever).
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let h = self.ring.header();
        self.cur.healthy()?;
        let state = h.state.load(Ordering::Acquire);
        if state & READER_GONE != 0 {
            return Err(Error::Closed);
        }
        if state & WRITER_DONE != 0 {
            // Bytes after the end would never be read.
            return Err(Error::Closed);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let fill = self.cur.check(&h.write, &h.read, self.ring.cap)?;
        let n = (self.ring.cap - fill).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        copy_in(&self.ring, self.cur.pos, &buf[..n]);
        self.cur.pos = self.cur.pos.wrapping_add(n as u64);
        h.write.store(self.cur.pos, Ordering::Release);
        Ok(n)
    }

    /// Bytes the ring can take now.
    ///
    /// # Errors
    /// [`Error::Corrupt`] on impossible cursors.
    pub fn free(&mut self) -> Result<u64, Error> {
        let h = self.ring.header();
        Ok(self.ring.cap - self.cur.check(&h.write, &h.read, self.ring.cap)?)
    }

    /// Finishes the stream: after the drain the reader sees [`Read::Eof`].
    pub fn finish(&self) {
        self.ring.mark(WRITER_DONE);
    }

    /// Announces that the writer is about to park for space. Returns false when space
    /// appeared meanwhile (do not park) — the fence pairs with the one in
    /// [`Reader::writer_wants_doorbell`], so a reader that frees space after this either
    /// is seen here or sees the flag.
    pub fn park(&mut self) -> bool {
        let h = self.ring.header();
        h.writer_parked.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let full = matches!(self.free(), Ok(0));
        let open = h.state.load(Ordering::Acquire) & READER_GONE == 0;
        if !(full && open) {
            h.writer_parked.store(0, Ordering::Relaxed);
        }
        full && open
    }

    /// Clears the parked flag after a wake-up.
    pub fn unpark(&self) {
        self.ring.header().writer_parked.store(0, Ordering::Relaxed);
    }

    /// After a write: true when the reader is parked and must be rung.
    pub fn reader_wants_doorbell(&self) -> bool {
        fence(Ordering::SeqCst);
        self.ring.header().reader_parked.load(Ordering::SeqCst) != 0
    }

    /// The ring (for marking state).
    pub fn ring(&self) -> &Ring {
        &self.ring
    }
}

/// The reading half of a ring.
pub struct Reader {
    ring: Ring,
    cur: Cursors,
    eof: bool,
}

impl Reader {
    /// Copies out what is there, up to `buf.len()`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] on impossible cursors (then forever); [`Error::WriterGone`] when
    /// the ring is drained and the writer vanished without finishing.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Read, Error> {
        self.cur.healthy()?;
        if self.eof {
            return Ok(Read::Eof);
        }
        if buf.is_empty() {
            return Ok(Read::Pending);
        }
        let h = self.ring.header();
        let mut fill = self.cur.check(&h.read, &h.write, self.ring.cap)?;
        if fill == 0 {
            let state = h.state.load(Ordering::Acquire);
            if state & (WRITER_DONE | WRITER_GONE) == 0 {
                return Ok(Read::Pending);
            }
            // The writer's last cursor store happened before its state store: look again.
            fill = self.cur.check(&h.read, &h.write, self.ring.cap)?;
            if fill == 0 {
                if state & WRITER_DONE != 0 {
                    self.eof = true;
                    return Ok(Read::Eof);
                }
                return Err(Error::WriterGone);
            }
        }
        let n = fill.min(buf.len() as u64) as usize;
        copy_out(&self.ring, self.cur.pos, &mut buf[..n]);
        self.cur.pos = self.cur.pos.wrapping_add(n as u64);
        h.read.store(self.cur.pos, Ordering::Release);
        Ok(Read::Data(n))
    }

    /// Bytes waiting now.
    ///
    /// # Errors
    /// [`Error::Corrupt`] on impossible cursors.
    pub fn available(&mut self) -> Result<u64, Error> {
        let h = self.ring.header();
        self.cur.check(&h.read, &h.write, self.ring.cap)
    }

    /// Tells the writer the reader is gone.
    pub fn close(&self) {
        self.ring.mark(READER_GONE);
    }

    /// Announces that the reader is about to park for data. Returns false when data (or
    /// the end) appeared meanwhile — do not park then.
    pub fn park(&mut self) -> bool {
        let h = self.ring.header();
        h.reader_parked.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let empty = matches!(self.available(), Ok(0));
        let open = h.state.load(Ordering::Acquire) & (WRITER_DONE | WRITER_GONE) == 0;
        if !(empty && open && !self.eof) {
            h.reader_parked.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Clears the parked flag after a wake-up.
    pub fn unpark(&self) {
        self.ring.header().reader_parked.store(0, Ordering::Relaxed);
    }

    /// After a read: true when the writer is parked for space and must be rung.
    pub fn writer_wants_doorbell(&self) -> bool {
        fence(Ordering::SeqCst);
        self.ring.header().writer_parked.load(Ordering::SeqCst) != 0
    }

    /// The ring (for marking state).
    pub fn ring(&self) -> &Ring {
        &self.ring
    }
}

/// Copies `src` into the data area starting at cursor `pos`, wrapping at the end.
fn copy_in(ring: &Ring, pos: u64, src: &[u8]) {
    let at = (pos & (ring.cap - 1)) as usize;
    let first = src.len().min(ring.cap as usize - at);
    // SAFETY: `at + first ≤ cap` and `src.len() - first ≤ at` (src.len() ≤ cap), so both
    // ranges are inside the data area; the writer only writes bytes the reader has handed
    // back (fill checked against capacity), so no one else touches them now.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), ring.data().add(at), first);
        std::ptr::copy_nonoverlapping(src.as_ptr().add(first), ring.data(), src.len() - first);
    }
}

/// Copies from the data area starting at cursor `pos` into `dst`, wrapping at the end.
fn copy_out(ring: &Ring, pos: u64, dst: &mut [u8]) {
    let at = (pos & (ring.cap - 1)) as usize;
    let first = dst.len().min(ring.cap as usize - at);
    // SAFETY: as in copy_in; the reader only reads bytes the writer published (fill
    // checked), which the writer does not touch until the read cursor passes them.
    unsafe {
        std::ptr::copy_nonoverlapping(ring.data().add(at), dst.as_mut_ptr(), first);
        std::ptr::copy_nonoverlapping(ring.data(), dst.as_mut_ptr().add(first), dst.len() - first);
    }
}

/// A ring on the heap, for tests and the loom model (no memfd there).
pub struct HeapRegion {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: the allocation is plain memory used through the ring protocol.
unsafe impl Send for HeapRegion {}
// SAFETY: as above.
unsafe impl Sync for HeapRegion {}

impl HeapRegion {
    /// A new ring of `capacity` in a fresh zeroed allocation.
    ///
    /// # Errors
    /// [`Error::BadLayout`] for a capacity [`Ring::init`] refuses.
    pub fn ring(capacity: u64) -> Result<Ring, Error> {
        check_geometry(capacity, region_len(capacity))?;
        let layout = std::alloc::Layout::from_size_align(region_len(capacity), 64)
            .map_err(|e| Error::BadLayout(e.to_string()))?;
        // SAFETY: the layout has a non-zero size (HEADER_LEN > 0).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let owner = Arc::new(HeapRegion { ptr, layout });
        // SAFETY: freshly allocated, 64-aligned, region_len(capacity) bytes, kept alive by
        // `owner`, not shared yet.
        unsafe { Ring::init(ptr, layout.size(), capacity, owner) }
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: the header was written by Ring::init (its atomics may need dropping under
        // loom), and the allocation came from alloc_zeroed with this layout.
        unsafe {
            std::ptr::drop_in_place(self.ptr.cast::<Header>().as_ptr());
            std::alloc::dealloc(self.ptr.as_ptr(), self.layout);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pair(cap: u64) -> (Writer, Reader) {
        let ring = HeapRegion::ring(cap).unwrap();
        // SAFETY: one writer and one reader for this ring.
        unsafe { (ring.clone().writer(), ring.reader()) }
    }

    #[test]
    fn accepted_count_then_backpressure_then_the_rest_across_the_wrap() {
        let (mut w, mut r) = pair(16);
        let data: Vec<u8> = (0..40).collect();
        assert_eq!(w.write(&data[..10]).unwrap(), 10);
        let mut out = [0u8; 6];
        assert_eq!(r.read(&mut out).unwrap(), Read::Data(6));
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
        // 4 in the ring, 12 free: the write crosses the end of the data area.
        assert_eq!(w.write(&data[10..]).unwrap(), 12);
        assert_eq!(
            w.write(&data[22..]).unwrap(),
            0,
            "full: backpressure, not an error"
        );
        let mut all = vec![0u8; 16];
        assert_eq!(r.read(&mut all).unwrap(), Read::Data(16));
        assert_eq!(
            all,
            (6..22).collect::<Vec<u8>>(),
            "read crosses the wrap too"
        );
        assert_eq!(r.read(&mut all).unwrap(), Read::Pending);
    }

    #[test]
    fn eof_only_after_finish_and_drain_and_then_sticky() {
        let (mut w, mut r) = pair(8);
        w.write(b"abc").unwrap();
        let mut empty = [0u8; 0];
        assert_eq!(r.read(&mut empty).unwrap(), Read::Pending, "empty buf");
        w.finish();
        let mut b = [0u8; 2];
        assert_eq!(r.read(&mut b).unwrap(), Read::Data(2));
        assert_eq!(r.read(&mut b).unwrap(), Read::Data(1));
        assert_eq!(r.read(&mut b).unwrap(), Read::Eof);
        assert_eq!(r.read(&mut b).unwrap(), Read::Eof);
        assert_eq!(r.read(&mut empty).unwrap(), Read::Eof, "sticky");
    }

    #[test]
    fn a_vanished_writer_is_an_error_after_the_drain_not_eof() {
        let (mut w, mut r) = pair(8);
        w.write(b"xy").unwrap();
        r.ring().mark(WRITER_GONE);
        let mut b = [0u8; 8];
        assert_eq!(r.read(&mut b).unwrap(), Read::Data(2));
        assert_eq!(r.read(&mut b), Err(Error::WriterGone));
    }

    #[test]
    fn writes_after_finish_are_closed() {
        let (mut w, _r) = pair(8);
        w.finish();
        assert_eq!(w.write(b"x"), Err(Error::Closed));
    }

    #[test]
    fn writes_after_the_reader_left_are_closed() {
        let (mut w, r) = pair(8);
        r.close();
        assert_eq!(w.write(b"x"), Err(Error::Closed));
    }

    #[test]
    fn impossible_cursors_poison_both_sides() {
        let (mut w, mut r) = pair(8);
        w.write(b"abcd").unwrap();
        r.ring().forge_cursors(1 << 40, 0);
        let mut b = [0u8; 8];
        assert!(matches!(r.read(&mut b), Err(Error::Corrupt(_))));
        r.ring().forge_cursors(4, 0);
        assert!(
            matches!(r.read(&mut b), Err(Error::Corrupt(_))),
            "poisoned for good"
        );
        // A cursor that moves backwards is caught by the writer.
        let (mut w, mut r) = pair(8);
        w.write(b"abcd").unwrap();
        r.read(&mut b).unwrap();
        w.write(b"e").unwrap();
        w.ring().forge_cursors(5, 1);
        assert!(matches!(w.write(b"x"), Err(Error::Corrupt(_))));
    }

    #[test]
    fn attach_checks_magic_version_and_geometry() {
        let ring = HeapRegion::ring(64).unwrap();
        let owner: Arc<dyn Send + Sync> = Arc::new(());
        // SAFETY: the region is alive (held by `ring`) and big enough.
        let ok = unsafe { Ring::attach(ring.base, region_len(64), owner.clone()) };
        assert_eq!(ok.unwrap().capacity(), 64);
        // SAFETY: as above; a length shorter than the capacity needs is refused.
        let short = unsafe { Ring::attach(ring.base, region_len(32), owner) };
        assert!(matches!(short, Err(Error::BadLayout(m)) if m.contains("needs")));
        assert!(HeapRegion::ring(100).is_err(), "not a power of two");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// Writer sends 0..total in chunks through a ring smaller than the total; the reader
    /// must see every byte once, in order, and Eof only after the last one.
    /// Exhaustive up to 3 preemptions: enough to interleave every cursor load and store of
    /// one side between any two of the other's, while staying in CI's budget.
    fn model(cap: u64, total: u8, chunk: usize) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let ring = HeapRegion::ring(cap).unwrap();
            // SAFETY: one writer and one reader for this ring.
            let (mut w, mut r) = unsafe { (ring.clone().writer(), ring.reader()) };
            let t = loom::thread::spawn(move || {
                let data: Vec<u8> = (0..total).collect();
                let mut sent = 0;
                while sent < data.len() {
                    let end = (sent + chunk).min(data.len());
                    match w.write(&data[sent..end]).unwrap() {
                        0 => loom::thread::yield_now(),
                        n => sent += n,
                    }
                }
                w.finish();
            });
            let mut got = Vec::new();
            let mut buf = [0u8; 5];
            loop {
                match r.read(&mut buf).unwrap() {
                    Read::Data(n) => got.extend_from_slice(&buf[..n]),
                    Read::Pending => loom::thread::yield_now(),
                    Read::Eof => break,
                }
            }
            t.join().unwrap();
            assert_eq!(got, (0..total).collect::<Vec<u8>>());
        });
    }

    #[test]
    fn no_lost_or_duplicated_bytes_and_eof_after_drain() {
        // 11 bytes through 8: both cursors cross the wrap point.
        model(8, 11, 6);
    }

    #[test]
    fn small_chunks_through_the_smallest_ring() {
        model(8, 9, 3);
    }

    /// The writer's side of the park protocol: a writer that parks on a full ring never
    /// misses the reader's doorbell.
    #[test]
    fn a_parked_writer_never_misses_the_space_doorbell() {
        loom::model(|| {
            let ring = HeapRegion::ring(8).unwrap();
            // SAFETY: one writer and one reader for this ring.
            let (mut w, mut r) = unsafe { (ring.clone().writer(), ring.reader()) };
            assert_eq!(w.write(&[1; 8]).unwrap(), 8);
            let rung = std::sync::Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let rung2 = rung.clone();
            let t = loom::thread::spawn(move || {
                let mut b = [0u8; 3];
                assert_eq!(r.read(&mut b).unwrap(), Read::Data(3));
                if r.writer_wants_doorbell() {
                    rung2.store(true, loom::sync::atomic::Ordering::SeqCst);
                }
            });
            if w.write(&[2]).unwrap() == 0 && w.park() {
                t.join().unwrap();
                assert!(
                    rung.load(loom::sync::atomic::Ordering::SeqCst),
                    "lost wake-up"
                );
            } else {
                t.join().unwrap();
            }
        });
    }

    /// Finishing after the reader parked: the reader either sees the end on its re-check
    /// or is parked when the writer's unconditional doorbell after `finish` comes.
    #[test]
    fn finish_is_seen_by_a_reader_that_checks_or_parks() {
        loom::model(|| {
            let ring = HeapRegion::ring(8).unwrap();
            // SAFETY: one writer and one reader for this ring.
            let (w, mut r) = unsafe { (ring.clone().writer(), ring.reader()) };
            let t = loom::thread::spawn(move || w.finish());
            let mut b = [0u8; 1];
            let first = r.read(&mut b).unwrap();
            if first == Read::Pending && r.park() {
                // Parked: after the writer's finish (and its doorbell) the read is Eof.
                t.join().unwrap();
                r.unpark();
            } else {
                t.join().unwrap();
            }
            assert_eq!(r.read(&mut b).unwrap(), Read::Eof);
        });
    }

    /// The park protocol: a reader that parks never misses the writer's doorbell.
    #[test]
    fn parking_never_misses_a_doorbell() {
        loom::model(|| {
            let ring = HeapRegion::ring(8).unwrap();
            // SAFETY: one writer and one reader for this ring.
            let (mut w, mut r) = unsafe { (ring.clone().writer(), ring.reader()) };
            let rung = std::sync::Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let rung2 = rung.clone();
            let t = loom::thread::spawn(move || {
                w.write(b"x").unwrap();
                if w.reader_wants_doorbell() {
                    rung2.store(true, loom::sync::atomic::Ordering::SeqCst);
                }
            });
            let mut buf = [0u8; 1];
            if r.read(&mut buf).unwrap() == Read::Pending && r.park() {
                // Parked: the writer must have rung (or will, before join returns).
                t.join().unwrap();
                assert!(
                    rung.load(loom::sync::atomic::Ordering::SeqCst),
                    "lost wake-up"
                );
            } else {
                t.join().unwrap();
            }
        });
    }
}
