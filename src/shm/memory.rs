//! Anonymous shared memory and doorbells: a memfd mapped shared (nothing is named, so
//! nothing is left in /dev/shm after a crash) and eventfds to park on.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, fstat, ftruncate, memfd_create};
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

use super::Error;

/// A shared mapping of a whole memfd, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics and the ring/frame
// protocols, which say which side may touch which bytes.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Start of the mapping (page aligned).
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length, bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, and no reference into the mapping
        // outlives it (rings and frame buffers hold the Mapping in an Arc).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Creates a memfd of `len` bytes (zeroed), sealed against shrinking so a peer cannot make
/// our mapping fault, and maps it.
///
/// # Errors
/// [`Error::Io`] when the kernel refuses (memory limits).
pub fn create(name: &str, len: usize) -> Result<(OwnedFd, Mapping), Error> {
    let fd = memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(io("memfd_create"))?;
    ftruncate(&fd, len as u64).map_err(io("ftruncate"))?;
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(io("seal"))?;
    let map = map(&fd, len)?;
    Ok((fd, map))
}

/// Maps the first `len` bytes of a memfd received from a peer (exactly `len`, whatever the
/// file's size).
///
/// # Errors
/// [`Error::Io`] when fstat or mmap fail; [`Error::Protocol`] when the file is smaller than
/// `len` or could still shrink (not sealed), which would let the peer fault us.
pub fn map_received(fd: &OwnedFd, len: usize) -> Result<Mapping, Error> {
    let st = fstat(fd).map_err(io("fstat"))?;
    let size = usize::try_from(st.st_size).unwrap_or(0);
    if size < len {
        return Err(Error::Protocol(format!(
            "shared memory of {size} bytes is smaller than the {len} bytes announced"
        )));
    }
    let seals = rustix::fs::fcntl_get_seals(fd).map_err(io("get seals"))?;
    if !seals.contains(SealFlags::SHRINK) {
        return Err(Error::Protocol(
            "shared memory is not sealed against shrinking; refusing to map it".into(),
        ));
    }
    map(fd, len)
}

fn map(fd: &OwnedFd, len: usize) -> Result<Mapping, Error> {
    // SAFETY: a fresh shared mapping of a file we hold; the kernel picks the address, so no
    // existing memory is replaced.
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(io("mmap"))?;
    let ptr =
        NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::Protocol("mmap gave null".into()))?;
    Ok(Mapping { ptr, len })
}

/// An eventfd used as a doorbell: `ring` adds one, `wait` blocks until it is non-zero and
/// resets it.
#[derive(Debug)]
pub struct Doorbell(OwnedFd);

impl Doorbell {
    /// A new doorbell (non-blocking eventfd, close-on-exec).
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses.
    pub fn new() -> Result<Doorbell, Error> {
        Ok(Doorbell(
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(io("eventfd"))?,
        ))
    }

    /// Wraps an eventfd received from a peer, after checking it is one and making it
    /// non-blocking (a blocking descriptor would let the peer stall our waits).
    ///
    /// # Errors
    /// [`Error::Protocol`] when `fd` is not an eventfd; [`Error::Io`] when fcntl fails.
    pub fn from_fd(fd: OwnedFd) -> Result<Doorbell, Error> {
        use std::os::fd::AsRawFd;
        let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        if target.as_os_str() != "anon_inode:[eventfd]" {
            return Err(Error::Protocol(format!(
                "expected an eventfd, got {}",
                target.display()
            )));
        }
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(io("fcntl"))?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK).map_err(io("fcntl"))?;
        Ok(Doorbell(fd))
    }

    /// The descriptor, to pass to the peer.
    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }

    /// Rings: wakes a waiter. Never blocks (the counter saturates only after 2⁶⁴−2 rings).
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Blocks until rung or `timeout` passes; consumes the rings. True when rung.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut buf = [0u8; 8];
            if rustix::io::read(&self.0, &mut buf).is_ok() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
            let ts = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            let _ = poll(&mut fds, Some(&ts));
        }
    }
}

fn io(what: &'static str) -> impl Fn(rustix::io::Errno) -> Error {
    move |e| Error::Io(std::io::Error::other(format!("{what}: {e}")))
}
