//! A framed connection over a Unix stream socket: buffered frame reads (two-pass, length
//! checked before the buffer grows), frame writes, and file descriptors passed alongside
//! frames with SCM_RIGHTS.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

use super::Error;
use crate::wire::{self, Frame, HARD_MAX_FRAME, Msg};

/// Most file descriptors accepted with one read.
const MAX_FDS: usize = 8;
/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 64 * 1024;

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
        }
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
    /// [`Error::Io`] for socket errors and read timeouts.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            if let Some((frame, used)) = wire::decode(&self.buf[self.pos..], self.max_frame)? {
                self.pos += used;
                return Ok(Some(frame));
            }
            // Compact before reading more: drop what was consumed.
            self.buf.drain(..self.pos);
            self.pos = 0;
            if self.fill()? == 0 {
                wire::at_eof(&self.buf, self.max_frame)?;
                return Ok(None);
            }
        }
    }

    /// One `recvmsg`: appends bytes to the buffer and queues any passed descriptors.
    fn fill(&mut self) -> Result<usize, Error> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let spin_until = (!self.spin.is_zero()).then(|| std::time::Instant::now() + self.spin);
        let n = loop {
            let mut iov = [IoSliceMut::new(&mut self.scratch)];
            let spinning = spin_until.is_some_and(|t| std::time::Instant::now() < t);
            let flags = if spinning {
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
        Ok(n)
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
