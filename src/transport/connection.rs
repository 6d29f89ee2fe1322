//! A framed connection over a Unix stream socket: buffered frame reads (two-pass, length
//! checked before the buffer grows), frame writes, and file descriptors passed alongside
//! frames with SCM_RIGHTS.
//!
//! Reads are bounded (DESIGN.md §6): a frame must arrive whole within
//! [`FRAME_DEADLINE`] of its first byte, or the connection is closed; a frame larger than
//! [`LARGE_FRAME`] is read only once the process-wide [`FRAME_BUDGET`] for partly received
//! large frames has room for all of it (until then its bytes stay in the socket, charged to
//! the sender), so N stalled 16 MiB half-frames cannot hold N × 16 MiB.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

use super::Error;
use crate::wire::{self, Frame, HARD_MAX_FRAME, HEADER_LEN, Msg};

/// Most file descriptors accepted with one read.
const MAX_FDS: usize = 8;
/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 64 * 1024;
/// A read buffer that grew past this for one large frame is given back once it is empty.
const SHRINK_ABOVE: usize = 1 << 20;

/// How long a frame may take to arrive whole, from its first byte (default; see
/// [`Connection::set_frame_deadline`]). A peer stalled inside a frame is closed after it.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(10);
/// Frames (header included) larger than this many bytes need room in [`FRAME_BUDGET`]
/// before their payload is read: 512 KiB, above the stream path's 256 KiB chunks.
pub const LARGE_FRAME: usize = 512 * 1024;
/// Bytes of partly received large frames one process holds at once: two frames of the
/// 16 MiB hard cap. A large frame waits (bounded by its deadline and the read timeout)
/// until it fits.
pub const FRAME_BUDGET: usize = 2 * (HEADER_LEN + HARD_MAX_FRAME as usize);

/// The process-wide budget for partly received large frames.
static BUDGET: Budget = Budget {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

struct Budget {
    used: Mutex<usize>,
    freed: Condvar,
}

/// Room for one large frame in [`BUDGET`], given back on drop. (Non-zero, so an optional
/// one costs no more than a `usize`: `Connection` stays small enough to move around.)
#[derive(Debug)]
struct Reservation(std::num::NonZeroUsize);

impl Reservation {
    /// Waits until `bytes` fit (or `until` passes: `None`).
    fn take(bytes: usize, until: Option<Instant>) -> Option<Reservation> {
        let bytes = std::num::NonZeroUsize::new(bytes.min(FRAME_BUDGET))?;
        let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used + bytes.get() > FRAME_BUDGET {
            let wait = match until {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if wait.is_zero() {
                return None;
            }
            used = BUDGET
                .freed
                .wait_timeout(used, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        *used += bytes.get();
        Some(Reservation(bytes))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.0.get();
        BUDGET.freed.notify_all();
    }
}

/// A place among a listener's open connections, given back when the connection drops.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a place when fewer than `max` are taken.
    pub(crate) fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A framed, bidirectional connection.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Where unread bytes start in `buf`: frames are consumed by moving this, and the
    /// buffer is compacted once per read rather than shifted once per frame.
    pos: usize,
    /// Read into once, then copied: re-zeroing a 64 KiB tail on every read cost more than
    /// the round trip it serves.
    scratch: Box<[u8]>,
    fds: VecDeque<OwnedFd>,
    max_frame: u32,
    seq: u32,
    out: Vec<u8>,
    /// Before a read blocks, poll without blocking for this long (zero: block at once).
    spin: Duration,
    /// When the first byte of the frame now buffered in part arrived.
    partial_since: Option<Instant>,
    /// See [`FRAME_DEADLINE`], ms.
    frame_deadline_ms: u32,
    /// Room in the budget for the large frame being read.
    reservation: Option<Reservation>,
    /// The listener's place for this connection, if a listener accepted it.
    slot: Option<Slot>,
}

impl Connection {
    /// Wraps a connected stream. Frames up to 16 MiB are accepted until
    /// [`Connection::set_max_frame`] lowers it after the handshake.
    pub fn new(stream: UnixStream) -> Connection {
        Connection {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            fds: VecDeque::new(),
            max_frame: HARD_MAX_FRAME,
            seq: 0,
            out: Vec::with_capacity(256),
            spin: Duration::ZERO,
            partial_since: None,
            frame_deadline_ms: FRAME_DEADLINE.as_millis() as u32,
            reservation: None,
            slot: None,
        }
    }

    /// Keeps the listener's place for this connection until it drops.
    pub(crate) fn hold(&mut self, slot: Slot) {
        self.slot = Some(slot);
    }

    /// How long a frame may take to arrive whole from its first byte (default
    /// [`FRAME_DEADLINE`]); past it [`Connection::read_frame`] fails with
    /// [`Error::Protocol`] and the connection should be closed.
    /// (Kept in whole milliseconds, at most ~49 days.)
    pub fn set_frame_deadline(&mut self, d: Duration) {
        self.frame_deadline_ms = d.as_millis().try_into().unwrap_or(u32::MAX);
    }

    fn frame_deadline(&self) -> Duration {
        Duration::from_millis(u64::from(self.frame_deadline_ms))
    }

    /// Spin before parking: a read first polls the socket without blocking for up to
    /// `spin` (e.g. 50 µs), then blocks. Saves the scheduler wake-up (tens of µs on a VM)
    /// when the peer answers within the window, at the price of a busy CPU meanwhile, so
    /// it pays only when the peers run on different CPUs. Zero (the default) blocks at once.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The socket.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sets the largest payload accepted and sent (the negotiated `max_frame`).
    pub fn set_max_frame(&mut self, max: u32) {
        self.max_frame = max.min(HARD_MAX_FRAME);
    }

    /// The largest payload accepted and sent, bytes.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// True when bytes of a next frame are already buffered (descriptors queued now may
    /// belong to it).
    pub fn has_buffered(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Limits how long a read blocks (`None`: forever).
    ///
    /// # Errors
    /// The socket option failed.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(t)
    }

    /// The peer's pid, uid and gid (SO_PEERCRED).
    ///
    /// # Errors
    /// The socket option failed.
    pub fn peer_credentials(&self) -> std::io::Result<rustix::net::UCred> {
        Ok(rustix::net::sockopt::socket_peercred(&self.stream)?)
    }

    /// Reads the next frame. `Ok(None)` on a clean end of stream (between frames).
    ///
    /// # Errors
    /// [`Error::Wire`] for invalid bytes (including `Truncated` at EOF inside a frame),
    /// [`Error::Io`] for socket errors and read timeouts (a partial frame stays buffered
    /// for the next call), [`Error::Protocol`] for a frame that did not arrive whole
    /// within the frame deadline of its first byte.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            if let Some((frame, used)) = wire::decode(&self.buf[self.pos..], self.max_frame)? {
                self.pos += used;
                self.reservation = None;
                self.partial_since = self.has_buffered().then(Instant::now);
                if !self.has_buffered() {
                    self.buf.clear();
                    self.pos = 0;
                    if self.buf.capacity() > SHRINK_ABOVE {
                        self.buf.shrink_to(READ_CHUNK);
                    }
                }
                return Ok(Some(frame));
            }
            // Compact before reading more: drop what was consumed.
            self.buf.drain(..self.pos);
            self.pos = 0;
            let deadline = self.partial_since.map(|t| t + self.frame_deadline());
            if self.buf.len() >= HEADER_LEN && self.reservation.is_none() {
                let total =
                    HEADER_LEN + wire::frame::parse_header(&self.buf, self.max_frame)?.len as usize;
                if total > LARGE_FRAME {
                    let until = self.wait_until(deadline)?;
                    match Reservation::take(total, until) {
                        Some(r) => self.reservation = Some(r),
                        None => return Err(self.stalled(deadline, total)),
                    }
                    self.buf.reserve_exact(total - self.buf.len());
                }
            }
            // Inside a frame, a read must not block past the frame's deadline: take what
            // is there without waiting, and wait (bounded) only when nothing is.
            let mut got = None;
            if deadline.is_some() {
                got = self.fill(false)?;
                if got.is_none() && !self.readable_by(deadline)? {
                    return Err(self.stalled(deadline, self.frame_len()));
                }
            }
            let n = match got {
                Some(n) => n,
                None => self.fill(true)?.unwrap_or(0),
            };
            if n == 0 {
                wire::at_eof(&self.buf, self.max_frame)?;
                return Ok(None);
            }
            if self.partial_since.is_none() {
                self.partial_since = Some(Instant::now());
            }
        }
    }

    /// The payload length the buffered header announces, header included (0: no header yet).
    fn frame_len(&self) -> usize {
        if self.buf.len() < HEADER_LEN {
            return 0;
        }
        wire::frame::parse_header(&self.buf, self.max_frame)
            .map_or(0, |h| HEADER_LEN + h.len as usize)
    }

    /// The earlier of the frame deadline and the socket's read timeout, from now.
    fn wait_until(&self, deadline: Option<Instant>) -> Result<Option<Instant>, Error> {
        let timeout = self.stream.read_timeout()?.map(|t| Instant::now() + t);
        Ok(match (deadline, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Waits for the socket to be readable, at most until the frame deadline or the read
    /// timeout. False when the frame deadline passed first.
    ///
    /// # Errors
    /// A read timeout (as a socket read would report it); poll errors.
    fn readable_by(&self, deadline: Option<Instant>) -> Result<bool, Error> {
        let until = self.wait_until(deadline)?;
        loop {
            let left = until.map(|t| t.saturating_duration_since(Instant::now()));
            let ts = left.map(|d| rustix::event::Timespec {
                tv_sec: d.as_secs() as _,
                tv_nsec: d.subsec_nanos() as _,
            });
            let mut fds = [rustix::event::PollFd::new(
                &self.stream,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(0) => {}
                Ok(_) => return Ok(true),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "read timed out inside a frame",
            )
            .into());
        }
    }

    /// The error for a frame that missed its deadline (or the read timeout while waiting
    /// for budget).
    fn stalled(&self, deadline: Option<Instant>, total: usize) -> Error {
        if deadline.is_some_and(|d| Instant::now() < d) {
            return std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "read timed out waiting for room for a large frame",
            )
            .into();
        }
        let arrived = self.buf.len().saturating_sub(self.pos);
        if arrived < crate::wire::HEADER_LEN {
            return Error::Protocol(format!(
                "a frame header ({arrived} of {} bytes) did not arrive within {} of its \
                 first byte; closed",
                crate::wire::HEADER_LEN,
                humantime::format_duration(self.frame_deadline())
            ));
        }
        Error::Protocol(format!(
            "a frame of {total} bytes did not arrive whole within {} of its first byte \
             ({arrived} arrived); closed",
            humantime::format_duration(self.frame_deadline()),
        ))
    }

    /// One `recvmsg`: appends bytes to the buffer and queues any passed descriptors.
    /// Without `wait`, `Ok(None)` when nothing is there yet.
    fn fill(&mut self, wait: bool) -> Result<Option<usize>, Error> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let spin_until = (!self.spin.is_zero()).then(|| std::time::Instant::now() + self.spin);
        let n = loop {
            let mut iov = [IoSliceMut::new(&mut self.scratch)];
            let spinning = spin_until.is_some_and(|t| std::time::Instant::now() < t);
            let flags = if spinning || !wait {
                RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
            } else {
                RecvFlags::CMSG_CLOEXEC
            };
            match recvmsg(&self.stream, &mut iov, &mut control, flags) {
                Ok(r) if r.flags.contains(rustix::net::ReturnFlags::CTRUNC) => {
                    // Descriptors were dropped by the kernel: the frames they came with
                    // can no longer be trusted.
                    return Err(Error::Protocol(format!(
                        "the peer sent more than {MAX_FDS} descriptors at once"
                    )));
                }
                Ok(r) => break r.bytes,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) if !wait => return Ok(None),
                Err(rustix::io::Errno::AGAIN) if spinning => std::hint::spin_loop(),
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        };
        self.buf.extend_from_slice(&self.scratch[..n]);
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                self.fds.extend(fds);
            }
        }
        Ok(Some(n))
    }

    /// Descriptors received so far (in arrival order), taken out of the connection.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.fds.drain(..).collect()
    }

    fn encode(&mut self, msg: Msg) -> Result<(), Error> {
        self.out.clear();
        let frame = Frame { seq: self.seq, msg };
        wire::encode(&frame, self.max_frame, &mut self.out)?;
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }

    /// Writes one frame.
    ///
    /// # Errors
    /// [`Error::Wire`] (`FrameTooLarge`) before anything is written; socket errors.
    pub fn write_frame(&mut self, msg: Msg) -> Result<(), Error> {
        self.encode(msg)?;
        self.stream.write_all(&self.out)?;
        Ok(())
    }

    /// Writes several frames with one system call (batching).
    ///
    /// # Errors
    /// As [`Connection::write_frame`]; nothing is written when any frame is too large.
    pub fn write_frames(&mut self, msgs: impl IntoIterator<Item = Msg>) -> Result<(), Error> {
        let mut batch = std::mem::take(&mut self.out);
        batch.clear();
        for msg in msgs {
            let frame = Frame { seq: self.seq, msg };
            if let Err(e) = wire::encode(&frame, self.max_frame, &mut batch) {
                self.out = batch;
                return Err(e.into());
            }
            self.seq = self.seq.wrapping_add(1);
        }
        let r = self.stream.write_all(&batch);
        self.out = batch;
        Ok(r?)
    }

    /// Writes one frame with file descriptors attached (SCM_RIGHTS, on its first byte).
    ///
    /// # Errors
    /// As [`Connection::write_frame`].
    pub fn send_with_fds(&mut self, msg: Msg, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        self.encode(msg)?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(Error::Protocol(format!(
                "at most {MAX_FDS} descriptors per frame"
            )));
        }
        let sent = loop {
            match sendmsg(
                self.stream.as_fd(),
                &[IoSlice::new(&self.out)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        };
        // The descriptors went with the first byte; the rest is a plain write.
        self.stream.write_all(&self.out[sent..])?;
        Ok(())
    }
}
