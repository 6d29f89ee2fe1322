//! Shared memory between live endpoints (DESIGN.md §8): byte [`stream`]s over memfd rings
//! with a socket fallback, and latest-value [`frames`] buffers. Nothing is named in
//! /dev/shm: memory travels as file descriptors over the endpoint's socket, so a crash
//! leaves nothing behind.
//!
//! The ring protocol itself lives in the `relay-ring` crate so loom can model-check it
//! without compiling the rest of relay under `--cfg loom`.

pub mod async_io;
pub mod frames;
pub mod memory;
pub mod patterns;
pub mod stream;

pub use async_io::{AsyncStreamReader, AsyncStreamWriter};
pub use stream::{Options, Session, StreamReader, StreamWriter};

/// What went wrong with a stream or frame buffer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The other side is gone (reader closed, or the connection ended): nothing written now
    /// would be read.
    #[error("stream closed: {0}")]
    Closed(String),
    /// Impossible cursors or out-of-order data; the stream is poisoned.
    #[error("stream corrupt: {0}")]
    Corrupt(String),
    /// The writer's side vanished before it finished; the bytes before that were delivered.
    #[error("the writer vanished before finishing the stream (its process or connection ended)")]
    WriterGone,
    /// No stream with this id is open on the connection.
    #[error("stream {0} is not open on this connection (invalid handle)")]
    InvalidHandle(u32),
    /// The peer refused the stream, with its reason.
    #[error("the peer refused the stream: {0}")]
    Rejected(String),
    /// The peer broke the stream protocol.
    #[error("stream protocol: {0}")]
    Protocol(String),
    /// Waited too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A frame buffer's geometry or header does not match what the reader expects.
    #[error("frame buffer: {0}")]
    Layout(String),
}

impl From<relay_ring::Error> for Error {
    fn from(e: relay_ring::Error) -> Error {
        match e {
            relay_ring::Error::Closed => Error::Closed("the reader closed the stream".into()),
            relay_ring::Error::Corrupt(w) => Error::Corrupt(w),
            relay_ring::Error::WriterGone => Error::WriterGone,
            relay_ring::Error::BadLayout(w) => Error::Protocol(w),
        }
    }
}

impl From<crate::transport::Error> for Error {
    fn from(e: crate::transport::Error) -> Error {
        match e {
            crate::transport::Error::Io(e) => Error::Io(e),
            other => Error::Closed(other.to_string()),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        use std::io::ErrorKind;
        match e {
            Error::Io(e) => e,
            Error::Closed(_) => std::io::Error::new(ErrorKind::BrokenPipe, e),
            Error::WriterGone => std::io::Error::new(ErrorKind::UnexpectedEof, e),
            Error::Timeout(_) => std::io::Error::new(ErrorKind::TimedOut, e),
            other => std::io::Error::new(ErrorKind::InvalidData, other),
        }
    }
}
