//! Doorbells: how a waiter learns that mail arrived without polling the database.
//!
//! Each recipient has a file `$RELAY_HOME/doorbell/<endpoint id>`. After a commit that
//! queues mail, the sender opens and closes the recipient's file; a waiter watches that one
//! file with inotify (through the `notify` crate) and wakes on any event. The watch is set
//! up *before* the waiter's first look at the database, so a message committed between the
//! look and the sleep still rings. If a watch cannot be made (inotify limits), the waiter
//! falls back to a short poll and says so once in the log.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::Watcher;

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
        let (tx, rx) = mpsc::channel();
        let watcher = Self::touch(&path)
            .map_err(notify::Error::io)
            .and_then(|()| notify::recommended_watcher(tx))
            .and_then(|mut w| {
                w.watch(&path, notify::RecursiveMode::NonRecursive)?;
                Ok(w)
            });
        match watcher {
            Ok(w) => Listener {
                watcher: Some(w),
                rx,
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "doorbell watch failed; falling back to polling every 50 ms");
                Listener { watcher: None, rx }
            }
        }
    }
}

/// A live watch on one doorbell. Dropping it removes the watch.
pub(crate) struct Listener {
    watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
}

impl Listener {
    /// Sleeps until the bell rings or `timeout` passes. Rings that queued up meanwhile are
    /// drained, so one wake-up covers them all.
    pub(crate) fn wait(&self, timeout: Duration) {
        if self.watcher.is_none() {
            std::thread::sleep(timeout.min(FALLBACK_POLL));
            return;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(_) => while self.rx.try_recv().is_ok() {},
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The watcher's thread is gone: degrade to polling rather than spin.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout.min(FALLBACK_POLL))
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
        let listener = bells.listen("ep1");
        assert!(listener.watcher.is_some(), "inotify watch was made");
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
        let listener = bells.listen("ep1");
        bells.ring("ep2");
        let start = Instant::now();
        listener.wait(Duration::from_millis(300));
        assert!(start.elapsed() >= Duration::from_millis(300));
    }
}
