//! Doorbells: how a waiter learns that mail arrived without polling the database.
//!
//! Each recipient has a file `$RELAY_HOME/doorbell/<endpoint id>`. After a commit that
//! queues mail, the sender opens and closes the recipient's file for writing; a waiter
//! holds an inotify watch for `IN_CLOSE_WRITE` on that one file and sleeps in `poll(2)` on
//! the inotify descriptor — no helper thread, so a ring wakes the waiting thread directly.
//! Every waiter on the file wakes (inotify fans out), and the watch is made *before* the
//! waiter's first look at the database, so a commit between look and sleep still rings.
//! If no watch can be made (inotify limits), the waiter falls back to a short poll and
//! says so once in the log.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inotify::{Inotify, WatchMask};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::Error;

/// Poll interval when no inotify watch could be made.
const FALLBACK_POLL: Duration = Duration::from_millis(50);

/// The doorbell directory of one store.
#[derive(Debug, Clone)]
pub(crate) struct Doorbells {
    dir: PathBuf,
}

impl Doorbells {
    pub(crate) fn new(dir: PathBuf) -> Result<Doorbells, Error> {
        super::sqlite::create_private_dir(&dir)?;
        Ok(Doorbells { dir })
    }

    /// Doorbells in `dir`, without creating it (read-only stores never ring).
    pub(crate) fn at(dir: PathBuf) -> Doorbells {
        Doorbells { dir }
    }

    fn path(&self, endpoint_id: &str) -> PathBuf {
        // Endpoint ids are checked by `names::check_id` to be plain file names.
        self.dir.join(endpoint_id)
    }

    fn touch(path: &Path) -> std::io::Result<()> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map(drop)
    }

    /// Rings the recipient's doorbell. A failure is logged, not returned: the message is
    /// already committed, and waiters still find it at their backstop poll.
    pub(crate) fn ring(&self, endpoint_id: &str) {
        if let Err(e) = Self::touch(&self.path(endpoint_id)) {
            tracing::warn!(endpoint = endpoint_id, error = %e, "could not ring doorbell");
        }
    }

    /// Starts listening for rings of one recipient's doorbell.
    pub(crate) fn listen(&self, endpoint_id: &str) -> Listener {
        let path = self.path(endpoint_id);
        let watch = Self::touch(&path).and_then(|()| {
            let inotify = Inotify::init()?;
            inotify.watches().add(&path, WatchMask::CLOSE_WRITE)?;
            Ok(inotify)
        });
        match watch {
            Ok(inotify) => Listener {
                inotify: Some(inotify),
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "doorbell watch failed; falling back to polling every 50 ms");
                Listener { inotify: None }
            }
        }
    }
}

/// A live watch on one doorbell. Dropping it closes the inotify descriptor.
#[derive(Debug)]
pub(crate) struct Listener {
    inotify: Option<Inotify>,
}

impl Listener {
    /// Sleeps until the bell rings or `timeout` passes. Rings that queued up meanwhile are
    /// drained, so one wake-up covers them all.
    pub(crate) fn wait(&mut self, timeout: Duration) {
        let Some(inotify) = self.inotify.as_mut() else {
            std::thread::sleep(timeout.min(FALLBACK_POLL));
            return;
        };
        let ts = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&*inotify, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "doorbell poll failed; sleeping instead");
                std::thread::sleep(timeout.min(FALLBACK_POLL));
            }
        }
        // The descriptor is non-blocking: this empties the queue and returns.
        let mut buf = [0u8; 1024];
        while let Ok(mut events) = inotify.read_events(&mut buf) {
            if events.next().is_none() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The bell, not a timeout, ends the wait: a 60 s wait must return long before 60 s.
    /// (The margin is huge on purpose; how fast it wakes is measured by `relay bench`.)
    #[test]
    fn a_ring_from_another_thread_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let bells = Doorbells::new(dir.path().join("bells")).unwrap();
        let mut listener = bells.listen("ep1");
        assert!(listener.inotify.is_some(), "inotify watch was made");
        let other = bells.clone();
        let ringer = std::thread::spawn(move || other.ring("ep1"));
        let start = Instant::now();
        listener.wait(Duration::from_secs(60));
        assert!(start.elapsed() < Duration::from_secs(30));
        ringer.join().unwrap();
    }

    #[test]
    fn a_ring_for_someone_else_does_not_wake() {
        let dir = tempfile::tempdir().unwrap();
        let bells = Doorbells::new(dir.path().join("bells")).unwrap();
        let mut listener = bells.listen("ep1");
        bells.ring("ep2");
        let start = Instant::now();
        listener.wait(Duration::from_millis(300));
        assert!(start.elapsed() >= Duration::from_millis(300));
    }
}
