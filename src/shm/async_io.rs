//! tokio adapters: [`AsyncStreamReader`] (AsyncRead) and [`AsyncStreamWriter`]
//! (AsyncWrite) over the same stream halves. They never block a runtime thread: a pending
//! read or write parks on the stream's eventfd registered with tokio's reactor (the shm
//! doorbell the peer rings, or, on the socket path, the stream's own bell that the
//! session's demultiplexer rings on every arrival).
//!
//! Must be created inside a tokio runtime with I/O enabled.

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use relay_ring::Read;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::memory::Doorbell;
use super::{StreamReader, StreamWriter};

/// Polls `bell` (registering a duplicate of its eventfd on first use) and consumes its
/// rings once readable.
fn poll_bell(
    slot: &mut Option<AsyncFd<OwnedFd>>,
    bell: &Doorbell,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    if slot.is_none() {
        let fd = bell.fd().try_clone()?;
        // SAFETY: the AsyncFd owns `fd` (an OwnedFd), so the descriptor stays open and
        // names the same eventfd for as long as it is registered.
        *slot = Some(unsafe { AsyncFd::register(fd) }?);
    }
    let Some(fd) = slot.as_ref() else {
        return Poll::Ready(Ok(()));
    };
    let mut guard = ready!(fd.poll_read_ready(cx))?;
    let mut buf = [0u8; 8];
    // Non-blocking eventfd: EAGAIN means someone else consumed it; readiness is cleared
    // either way and the caller retries its read or write.
    let _ = rustix::io::read(fd.get_ref(), &mut buf);
    guard.clear_ready();
    Poll::Ready(Ok(()))
}

/// A stream half that can park on an eventfd (see `StreamReader::arm`).
trait Park {
    fn arm(&mut self) -> Option<std::sync::Arc<Doorbell>>;
    fn disarm(&mut self);
}

impl Park for StreamReader {
    fn arm(&mut self) -> Option<std::sync::Arc<Doorbell>> {
        StreamReader::arm(self)
    }
    fn disarm(&mut self) {
        StreamReader::disarm(self)
    }
}

impl Park for StreamWriter {
    fn arm(&mut self) -> Option<std::sync::Arc<Doorbell>> {
        StreamWriter::arm(self)
    }
    fn disarm(&mut self) {
        StreamWriter::disarm(self)
    }
}

/// After a try that found nothing to do: arms `half` and polls its bell. `Ready(Ok(()))`
/// means try again (woken, or progress appeared while arming).
fn park(
    half: &mut impl Park,
    fd: &mut Option<AsyncFd<OwnedFd>>,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    let Some(bell) = half.arm() else {
        return Poll::Ready(Ok(()));
    };
    let polled = poll_bell(fd, &bell, cx);
    if polled.is_ready() {
        half.disarm();
    }
    polled
}

/// A stream's reading half as a tokio `AsyncRead`. End of stream reads as 0 bytes; a
/// writer that vanished is `UnexpectedEof`.
pub struct AsyncStreamReader {
    inner: StreamReader,
    fd: Option<AsyncFd<OwnedFd>>,
}

impl AsyncStreamReader {
    /// Wraps a reader.
    pub fn new(inner: StreamReader) -> AsyncStreamReader {
        AsyncStreamReader { inner, fd: None }
    }

    /// The blocking half back.
    pub fn into_inner(self) -> StreamReader {
        self.inner
    }
}

impl AsyncRead for AsyncStreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.inner.try_read(buf.initialize_unfilled()) {
                Ok(Read::Data(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Read::Eof) => return Poll::Ready(Ok(())),
                Ok(Read::Pending) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            ready!(park(&mut this.inner, &mut this.fd, cx))?;
        }
    }
}

/// A stream's writing half as a tokio `AsyncWrite`. `shutdown` finishes the stream (the
/// reader sees end of stream after the drain).
pub struct AsyncStreamWriter {
    inner: StreamWriter,
    fd: Option<AsyncFd<OwnedFd>>,
}

impl AsyncStreamWriter {
    /// Wraps a writer.
    pub fn new(inner: StreamWriter) -> AsyncStreamWriter {
        AsyncStreamWriter { inner, fd: None }
    }

    /// The blocking half back.
    pub fn into_inner(self) -> StreamWriter {
        self.inner
    }
}

impl AsyncWrite for AsyncStreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.inner.try_write(buf) {
                Ok(0) => {}
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            ready!(park(&mut this.inner, &mut this.fd, cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Bytes are in the ring (or on the socket) as soon as a write returns.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().inner.end_now().map_err(std::io::Error::from))
    }
}

impl From<StreamReader> for AsyncStreamReader {
    fn from(r: StreamReader) -> Self {
        AsyncStreamReader::new(r)
    }
}

impl From<StreamWriter> for AsyncStreamWriter {
    fn from(w: StreamWriter) -> Self {
        AsyncStreamWriter::new(w)
    }
}
