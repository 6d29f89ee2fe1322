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

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

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
        let watch = watch(&path);
        if let Err(e) = &watch {
            tracing::warn!(path = %path.display(), error = %e,
                "doorbell watch failed; falling back to polling every 50 ms");
        }
        Listener {
            watch: watch.ok(),
            path,
        }
    }
}

/// Touches `path` and joins (or makes) the hub's watch on it: the watch and its count.
fn watch(path: &Path) -> std::io::Result<(WatchDescriptor, u64)> {
    Doorbells::touch(path)?;
    match hub() {
        Some(h) => h.watch(path),
        None => Err(std::io::Error::other("no inotify instance")),
    }
}

/// Wakes every waiter of this process so it looks at its cancel flag.
pub(crate) fn wake_all() {
    if let Some(h) = hub() {
        // Under the lock, so a waiter between its flag check and its sleep cannot miss it.
        let _st = h.lock();
        h.rung.notify_all();
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
    /// The kernel dropped the watch (the file was deleted or replaced): listeners make a
    /// new one on their next wait.
    dead: bool,
}

/// How long after a failed attempt the hub is tried again.
const HUB_RETRY: Duration = Duration::from_secs(1);

/// The hub, started on first use. When inotify cannot be initialised (the user is out of
/// instances), waits poll, and the hub is tried again at most every [`HUB_RETRY`], so a
/// process recovers once instances are free again.
fn hub() -> Option<&'static Hub> {
    static HUB: OnceLock<&'static Hub> = OnceLock::new();
    static LAST_TRY: Mutex<Option<Instant>> = Mutex::new(None);
    if let Some(h) = HUB.get() {
        return Some(h);
    }
    let mut last = LAST_TRY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = HUB.get() {
        return Some(h);
    }
    if last.is_some_and(|t| t.elapsed() < HUB_RETRY) {
        return None;
    }
    *last = Some(Instant::now());
    let inotify = Inotify::init()
        .inspect_err(
            |e| tracing::warn!(error = %e, "cannot create an inotify instance; waits will poll"),
        )
        .ok()?;
    let hub: &'static Hub = Box::leak(Box::new(Hub {
        state: Mutex::new(HubState {
            watches: inotify.watches(),
            by_path: HashMap::new(),
            by_wd: HashMap::new(),
        }),
        rung: Condvar::new(),
    }));
    // The reader owns the descriptor and blocks in read(2) on it.
    let spawned = std::thread::Builder::new()
        .name("relay-doorbell".into())
        .spawn(move || hub.read_loop(inotify));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the doorbell thread; waits will poll");
        return None;
    }
    let _ = HUB.set(hub);
    Some(hub)
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // The state is counters and maps updated in single steps: still sound after a
        // panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each batch of events bumps the counts of the files it names and wakes every waiter.
    /// A dropped watch (IN_IGNORED: its file was deleted) wakes its listeners to make a new
    /// one; a queue overflow (events lost) wakes everybody.
    fn read_loop(&self, mut inotify: Inotify) {
        let mut buf = [0u8; 4096];
        loop {
            match inotify.read_events_blocking(&mut buf) {
                Ok(events) => {
                    let mut st = self.lock();
                    for ev in events {
                        if ev.mask.contains(EventMask::Q_OVERFLOW) {
                            st.by_wd
                                .values_mut()
                                .for_each(|w| w.rings = w.rings.wrapping_add(1));
                            continue;
                        }
                        let Some(w) = st.by_wd.get_mut(&ev.wd) else {
                            continue;
                        };
                        w.rings = w.rings.wrapping_add(1);
                        if ev.mask.contains(EventMask::IGNORED) {
                            w.dead = true;
                            let path = w.path.clone();
                            if st.by_path.get(&path) == Some(&ev.wd) {
                                st.by_path.remove(&path);
                            }
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

    /// Watches `path` (or joins its live watch); returns the watch and its ring count.
    fn watch(&self, path: &Path) -> std::io::Result<(WatchDescriptor, u64)> {
        let mut st = self.lock();
        if let Some(wd) = st.by_path.get(path).cloned()
            && let Some(w) = st.by_wd.get_mut(&wd)
            && !w.dead
        {
            w.listeners += 1;
            return Ok((wd, w.rings));
        }
        let wd = st.watches.add(path, WatchMask::CLOSE_WRITE)?;
        st.by_path.insert(path.to_path_buf(), wd.clone());
        let w = st.by_wd.entry(wd.clone()).or_insert(Watched {
            path: path.to_path_buf(),
            rings: 0,
            listeners: 0,
            dead: false,
        });
        // The kernel hands back the same descriptor for a file already watched.
        w.listeners += 1;
        w.dead = false;
        Ok((wd, w.rings))
    }

    fn unwatch(&self, wd: &WatchDescriptor) {
        let mut st = self.lock();
        let Some(w) = st.by_wd.get_mut(wd) else {
            return;
        };
        w.listeners = w.listeners.saturating_sub(1);
        if w.listeners == 0 {
            let (path, dead) = (w.path.clone(), w.dead);
            st.by_wd.remove(wd);
            if st.by_path.get(&path) == Some(wd) {
                st.by_path.remove(&path);
            }
            if !dead {
                let _ = st.watches.remove(wd.clone());
            }
        }
    }
}

/// A live watch on one doorbell. Dropping it releases its share of the watch.
#[derive(Debug)]
pub(crate) struct Listener {
    watch: Option<(WatchDescriptor, u64)>,
    path: PathBuf,
}

impl Listener {
    /// Sleeps until the bell rings, `cancel` is cancelled or `timeout` passes. Rings that
    /// came meanwhile are all covered by one wake-up.
    pub(crate) fn wait(&mut self, timeout: Duration, cancel: &super::Cancel) {
        let deadline = Instant::now() + timeout;
        let Some(hub) = hub() else {
            std::thread::sleep(timeout.min(FALLBACK_POLL));
            return;
        };
        if self.watch.is_none() {
            // No watch yet (inotify was short when this listener started): try again.
            self.watch = watch(&self.path).ok();
            if self.watch.is_none() {
                std::thread::sleep(timeout.min(FALLBACK_POLL));
                return;
            }
            // A ring may have come before the watch existed: look again first.
            return;
        }
        let mut st = hub.lock();
        loop {
            let Some((wd, seen)) = self.watch.as_mut() else {
                return;
            };
            let (rings, dead) = match st.by_wd.get(wd) {
                Some(w) => (w.rings, w.dead),
                None => (seen.wrapping_add(1), true),
            };
            if dead {
                // The file was deleted: make a new watch, then let the caller look again
                // (a ring may have fallen between the two).
                drop(st);
                if let Some((old, _)) = self.watch.take() {
                    hub.unwatch(&old);
                }
                self.watch = watch(&self.path).ok();
                return;
            }
            if rings != *seen {
                *seen = rings;
                return;
            }
            let now = Instant::now();
            if now >= deadline || cancel.is_cancelled() {
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
        listener.wait(Duration::from_secs(60), &crate::store::Cancel::new());
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
        listener.wait(Duration::from_millis(300), &crate::store::Cancel::new());
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
        listeners[199].wait(Duration::from_secs(60), &crate::store::Cancel::new());
        assert!(start.elapsed() < Duration::from_secs(30));
        ringer.join().unwrap();
        let start = Instant::now();
        listeners[0].wait(Duration::from_millis(200), &crate::store::Cancel::new());
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "ep0 was not rung"
        );
    }

    /// Review of issue 9: when a doorbell file was deleted (its watch dropped by the
    /// kernel), waits on it woke only at the backstop. A listener now re-watches the new
    /// file and wakes on its next ring.
    #[test]
    fn a_deleted_doorbell_file_is_watched_again() {
        let dir = tempfile::tempdir().unwrap();
        let bells = Doorbells::new(dir.path().join("bells")).unwrap();
        let cancel = crate::store::Cancel::new();
        let mut listener = bells.listen("ep1");
        std::fs::remove_file(bells.path("ep1")).unwrap();
        // The kernel's IN_IGNORED wakes the listener, which makes a new watch.
        let start = Instant::now();
        listener.wait(Duration::from_secs(20), &cancel);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "woken by the dropped watch"
        );
        let other = bells.clone();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.ring("ep1")
        });
        let start = Instant::now();
        listener.wait(Duration::from_secs(20), &cancel);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "woken by the ring on the new file"
        );
        ringer.join().unwrap();
    }

    /// A cancel ends a wait at once.
    #[test]
    fn a_cancel_ends_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let bells = Doorbells::new(dir.path().join("bells")).unwrap();
        let cancel = crate::store::Cancel::new();
        let mut listener = bells.listen("ep1");
        let c = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c.cancel()
        });
        let start = Instant::now();
        listener.wait(Duration::from_secs(30), &cancel);
        assert!(start.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }
}
