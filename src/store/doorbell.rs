//! Doorbells: how a waiter learns that mail arrived without polling the database.
//!
//! Each recipient has a file `$RELAY_HOME/doorbell/<endpoint id>`. After a commit that
//! queues mail, the sender opens and closes the recipient's file for writing. A process
//! holds **one** inotify instance for all its waiters (DESIGN.md §4): a hub thread reads
//! its events and counts rings per watched file; waiters sleep on a condition variable and
//! wake when their file's count moves. 200 concurrent waits therefore cost one inotify
//! instance, one watch per distinct recipient and no CPU while idle — not one instance
//! each (a user has 128 in all, shared with every other program).
//!
//! A waiter snapshots its file's ring count *before* its first look at the database, so a
//! commit between look and sleep still wakes it. If no watch can be made (inotify
//! unavailable or out of watches), the waiter falls back to a short poll and says so in the
//! log.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};

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
        let watch = Self::touch(&path).and_then(|()| match hub() {
            Some(h) => h.watch(&path),
            None => Err(std::io::Error::other("no inotify instance")),
        });
        match watch {
            Ok((wd, seen)) => Listener {
                watch: Some((wd, seen)),
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "doorbell watch failed; falling back to polling every 50 ms");
                Listener { watch: None }
            }
        }
    }
}

/// The process's one inotify instance and the ring counts of the files it watches.
struct Hub {
    state: Mutex<HubState>,
    rung: Condvar,
}

struct HubState {
    watches: Watches,
    by_path: HashMap<PathBuf, WatchDescriptor>,
    by_wd: HashMap<WatchDescriptor, Watched>,
}

struct Watched {
    path: PathBuf,
    /// Rings seen since the watch was made.
    rings: u64,
    /// Listeners using this watch; the watch is removed when the last one drops.
    listeners: usize,
}

/// The hub, started on first use; `None` when inotify cannot be initialised.
fn hub() -> Option<&'static Hub> {
    static HUB: OnceLock<Option<Hub>> = OnceLock::new();
    HUB.get_or_init(|| {
        let inotify = Inotify::init()
            .inspect_err(|e| tracing::warn!(error = %e, "cannot create an inotify instance; waits will poll"))
            .ok()?;
        let watches = inotify.watches();
        // The reader owns the descriptor and blocks in read(2) on it. It reaches the hub
        // through `hub()`, which returns once this initialiser has.
        std::thread::Builder::new()
            .name("relay-doorbell".into())
            .spawn(move || {
                if let Some(h) = hub() {
                    h.read_loop(inotify);
                }
            })
            .inspect_err(|e| tracing::warn!(error = %e, "cannot start the doorbell thread; waits will poll"))
            .ok()?;
        Some(Hub {
            state: Mutex::new(HubState {
                watches,
                by_path: HashMap::new(),
                by_wd: HashMap::new(),
            }),
            rung: Condvar::new(),
        })
    })
    .as_ref()
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // The state is counters and maps updated in single steps: still sound after a
        // panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each batch of events bumps the counts of the files it names and wakes every waiter.
    fn read_loop(&self, mut inotify: Inotify) {
        let mut buf = [0u8; 4096];
        loop {
            match inotify.read_events_blocking(&mut buf) {
                Ok(events) => {
                    let mut st = self.lock();
                    for ev in events {
                        if let Some(w) = st.by_wd.get_mut(&ev.wd) {
                            w.rings = w.rings.wrapping_add(1);
                        }
                    }
                    drop(st);
                    self.rung.notify_all();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "doorbell read failed; waits fall back to their backstop poll");
                    return;
                }
            }
        }
    }

    /// Watches `path` (or joins its existing watch); returns the watch and its ring count.
    fn watch(&self, path: &Path) -> std::io::Result<(WatchDescriptor, u64)> {
        let mut st = self.lock();
        if let Some(wd) = st.by_path.get(path).cloned()
            && let Some(w) = st.by_wd.get_mut(&wd)
        {
            w.listeners += 1;
            return Ok((wd, w.rings));
        }
        let wd = st.watches.add(path, WatchMask::CLOSE_WRITE)?;
        st.by_path.insert(path.to_path_buf(), wd.clone());
        st.by_wd.insert(
            wd.clone(),
            Watched {
                path: path.to_path_buf(),
                rings: 0,
                listeners: 1,
            },
        );
        Ok((wd, 0))
    }

    fn unwatch(&self, wd: &WatchDescriptor) {
        let mut st = self.lock();
        let Some(w) = st.by_wd.get_mut(wd) else {
            return;
        };
        w.listeners -= 1;
        if w.listeners == 0 {
            let path = w.path.clone();
            st.by_wd.remove(wd);
            st.by_path.remove(&path);
            // Already gone when the file was deleted; nothing to do then.
            let _ = st.watches.remove(wd.clone());
        }
    }
}

/// A live watch on one doorbell. Dropping it releases its share of the watch.
#[derive(Debug)]
pub(crate) struct Listener {
    watch: Option<(WatchDescriptor, u64)>,
}

impl Listener {
    /// Sleeps until the bell rings or `timeout` passes. Rings that came meanwhile are all
    /// covered by one wake-up.
    pub(crate) fn wait(&mut self, timeout: Duration) {
        let (Some((wd, seen)), Some(hub)) = (self.watch.as_mut(), hub()) else {
            std::thread::sleep(timeout.min(FALLBACK_POLL));
            return;
        };
        let deadline = Instant::now() + timeout;
        let mut st = hub.lock();
        loop {
            let Some(rings) = st.by_wd.get(wd).map(|w| w.rings) else {
                return;
            };
            if rings != *seen {
                *seen = rings;
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = hub
                .rung
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (Some((wd, _)), Some(hub)) = (&self.watch, hub()) {
            hub.unwatch(wd);
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
        assert!(listener.watch.is_some(), "inotify watch was made");
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

    /// Issue 9 item 14: every waiter of a process shares one inotify instance. 200
    /// listeners on 200 recipients must cost exactly one instance (they cost 200, and the
    /// user's limit is 128), and each still wakes for its own bell only.
    #[test]
    fn two_hundred_listeners_share_one_inotify_instance() {
        let dir = tempfile::tempdir().unwrap();
        let bells = Doorbells::new(dir.path().join("bells")).unwrap();
        let mut listeners: Vec<Listener> =
            (0..200).map(|i| bells.listen(&format!("ep{i}"))).collect();
        assert!(listeners.iter().all(|l| l.watch.is_some()));
        let instances = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().contains("inotify"))
            .count();
        assert_eq!(instances, 1, "inotify instances in this process");
        let other = bells.clone();
        let ringer = std::thread::spawn(move || other.ring("ep199"));
        let start = Instant::now();
        listeners[199].wait(Duration::from_secs(60));
        assert!(start.elapsed() < Duration::from_secs(30));
        ringer.join().unwrap();
        let start = Instant::now();
        listeners[0].wait(Duration::from_millis(200));
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "ep0 was not rung"
        );
    }
}
