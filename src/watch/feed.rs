//! Where the view's data comes from: one snapshot at start, then the event stream.
//!
//! The event cursor is taken *before* the snapshot, so every change after it comes as an
//! event (changes the snapshot already shows come again and the model applies them
//! idempotently). The follower then blocks in [`Store::wait_events`] — woken by the
//! store, not polling — reads the new events and the messages they queued (an event does
//! not carry the intent), looks again at what they changed (the roster's pending counts,
//! the recipients' oldest unread, the reservations) and hands the lot to the UI thread as
//! one [`Batch`].
//!
//! Presence is derived, never stored (DESIGN.md §2): a process that dies without a word
//! makes no event, so the follower derives it again every [`PROBE_EVERY`] while the
//! endpoint pane is on screen (socket probes, process checks, no roster read) — the one
//! periodic wake-up. The roster's pending counts cost in proportion to the mail pending,
//! so while mail flows they are read again at most every [`COUNT_EVERY`].

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::model::{Batch, EndpointRow, SNAPSHOT_MESSAGES, Snapshot};
use crate::agents::presence::{self, Presence, PresentEntry};
use crate::store::{
    self, Cancel, Endpoint, EventKind, EventQuery, Fetch, FetchMode, Filter, History, Lookup,
    MAX_EVENTS, Store,
};

/// How often presence is derived again while the endpoint pane is on screen: 5 s.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Pending counts are read again at most this often while mail flows: 1 s.
pub const COUNT_EVERY: Duration = Duration::from_secs(1);

/// Queued messages whose details (intent, sender name) are read in one history call: 32,
/// so a burst of large bodies costs at most 32 bodies of memory at a time.
const DETAILS_AT_ONCE: usize = 32;

/// How long the follower waits after a store error before it tries again: 2 s.
const RETRY: Duration = Duration::from_secs(2);

/// What the store says now, with the cursor to follow from — all but the endpoints,
/// which the follower reads first thing ([`Snapshot::endpoints`]: the roster counts every
/// pending message, hundreds of ms at 100k pending, and the first frame does not wait for
/// it). Reads only.
///
/// # Errors
/// Store errors.
pub fn snapshot(store: &dyn Store) -> store::Result<Snapshot> {
    let t = Instant::now();
    let cursor = store
        .events(&EventQuery {
            tail: true,
            limit: 1,
            ..EventQuery::default()
        })?
        .head;
    let messages = store.history(&History {
        limit: SNAPSHOT_MESSAGES,
        ..History::default()
    })?;
    // The events up to the cursor tell the routes of those messages and the rejects among
    // them; later ones come through the follower.
    let mut recent = store
        .events(&EventQuery {
            tail: true,
            limit: MAX_EVENTS,
            ..EventQuery::default()
        })?
        .events;
    recent.retain(|e| e.cursor <= cursor);
    // Names for the rows until the roster is read: one lookup by id per endpoint shown.
    let ids: BTreeSet<&str> = messages
        .iter()
        .flat_map(|m| [m.from.as_str(), m.to.as_str()])
        .chain(
            recent
                .iter()
                .flat_map(|e| [e.from.as_deref(), e.to.as_deref()])
                .flatten(),
        )
        .collect();
    let mut names = Vec::with_capacity(ids.len());
    for id in ids {
        // `lookup` tries names first: only an endpoint whose id is exactly `id` counts.
        if let Lookup::Found(e) = store.lookup(id)?
            && e.id == id
        {
            names.push((e.id, e.name));
        }
    }
    let reservations = store.reservations(None)?;
    tracing::debug!(
        ms = t.elapsed().as_secs_f64() * 1e3,
        "relay watch: snapshot read"
    );
    Ok(Snapshot {
        cursor,
        endpoints: None,
        names,
        messages,
        recent,
        reservations,
    })
}

/// Endpoint rows of a presence roster, each with its oldest unread message.
fn endpoint_rows(store: &dyn Store, present: Vec<PresentEntry>) -> store::Result<Vec<EndpointRow>> {
    present
        .into_iter()
        .map(|p| {
            Ok(EndpointRow {
                oldest: oldest_unread(store, &p.entry.endpoint.id)?,
                presence: Some(p.seen.presence),
                pending: p.entry.pending,
                endpoint: p.entry.endpoint,
            })
        })
        .collect()
}

/// When `recipient`'s oldest message a reader would be handed now was sent (a peek:
/// nothing changes).
fn oldest_unread(store: &dyn Store, recipient: &str) -> store::Result<Option<i64>> {
    let m = store.fetch(
        recipient,
        &Fetch {
            limit: 1,
            mode: FetchMode::Peek,
            filter: Filter::default(),
        },
    )?;
    Ok(m.first().map(|m| m.created_at))
}

/// What the follower needs, moved into its thread.
pub struct Follower {
    store: Arc<dyn Store>,
    runtime_dir: PathBuf,
    cursor: u64,
    /// The endpoints whose presence the probe derives again (the follower's first act
    /// reads them).
    endpoints: Vec<Endpoint>,
    /// What the view was last told of each endpoint's presence and oldest unread, so a
    /// probe that finds nothing new sends nothing (and nothing is drawn).
    told: HashMap<String, (Option<Presence>, Option<i64>)>,
    visible: Arc<AtomicBool>,
    cancel: Cancel,
}

/// When the follower last did its periodic work, and what is owed.
struct Clock {
    /// Presence last derived.
    probed: Instant,
    /// The roster (pending counts) last read.
    counted: Instant,
    /// Mail changed since the roster was read: read it again once [`COUNT_EVERY`] has
    /// passed since the last read.
    counts_owed: bool,
    /// Everything about endpoints must be read again now (at start; after an endpoint or
    /// presence event).
    endpoints_owed: bool,
}

impl Follower {
    /// A follower of `store` from `cursor` (the snapshot's); `runtime_dir` holds the live
    /// sockets (for presence); `visible` says whether the endpoint pane is on screen (set
    /// by the UI thread); cancelling `cancel` ends the wait at once.
    pub fn new(
        store: Arc<dyn Store>,
        runtime_dir: PathBuf,
        cursor: u64,
        visible: Arc<AtomicBool>,
        cancel: Cancel,
    ) -> Follower {
        Follower {
            store,
            runtime_dir,
            cursor,
            endpoints: Vec::new(),
            told: HashMap::new(),
            visible,
            cancel,
        }
    }

    /// Follows the store until `cancel` is cancelled or `send` is refused (the view is
    /// gone), handing each batch to `send`. A store error does not end it: the batch says
    /// so (the view shows it), and the follower tries again after [`RETRY`].
    pub fn run(mut self, send: impl Fn(Batch) -> bool) {
        let mut clock = Clock {
            probed: Instant::now(),
            counted: Instant::now(),
            counts_owed: false,
            endpoints_owed: true,
        };
        let mut failing = false;
        while !self.cancel.is_cancelled() {
            let mut b = Batch::default();
            let result = self
                .read_events(&mut b, clock.wait(&self.visible))
                .and_then(|()| self.look_again(&mut b, &mut clock));
            if let Err(e) = &result {
                tracing::debug!(error = %e, "relay watch: following the store failed");
                b.error = Some(format!("following the store failed: {e}; retrying"));
            }
            // A clean batch after a failing one clears the status line.
            let recovered = std::mem::replace(&mut failing, result.is_err()) && !failing;
            if b.is_empty() && !recovered {
                continue;
            }
            if self.cancel.is_cancelled() || !send(b) {
                return;
            }
            if failing {
                std::thread::sleep(RETRY);
            }
        }
    }

    /// Waits at most `wait` for events — woken by the store's doorbell — and reads them
    /// all into `b`, with the stored messages they queued.
    fn read_events(&mut self, b: &mut Batch, wait: Duration) -> store::Result<()> {
        if !self.store.wait_events(self.cursor, wait, &self.cancel)? {
            return Ok(());
        }
        loop {
            let page = self.store.events(&EventQuery {
                after: Some(self.cursor),
                limit: MAX_EVENTS,
                ..EventQuery::default()
            })?;
            if let Some(gap) = crate::coord::events::lost(self.cursor, &page) {
                b.lost = Some(gap);
            }
            self.cursor = page.next;
            let full = page.events.len() == MAX_EVENTS;
            b.events.extend(page.events);
            if !full {
                break;
            }
        }
        // What the queue events do not say (intent, the sender's name then): the stored
        // messages, by id. History returns bodies too (up to the body cap each), so a few
        // at a time, and the bodies are dropped at once.
        let queued: Vec<String> = b
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Queued)
            .filter_map(|e| e.message.clone())
            .collect();
        for ids in queued.chunks(DETAILS_AT_ONCE) {
            let found = self.store.history(&History {
                ids: Some(ids.to_vec()),
                limit: ids.len(),
                ..History::default()
            })?;
            b.messages.extend(found.into_iter().map(|mut m| {
                m.body = Vec::new();
                m
            }));
        }
        Ok(())
    }

    /// Reads again what the events in `b` changed, and what the clock says is due. What
    /// fails stays owed, for the next round.
    fn look_again(&mut self, b: &mut Batch, clock: &mut Clock) -> store::Result<()> {
        let touches = |k: &[EventKind]| b.events.iter().any(|e| k.contains(&e.kind));
        let mail = b.events.iter().any(|e| e.kind.is_message());
        clock.counts_owed |= mail;
        clock.endpoints_owed |= touches(&[
            EventKind::Registered,
            EventKind::Renamed,
            EventKind::Presence,
        ]);
        if touches(&[
            EventKind::Reserved,
            EventKind::Renewed,
            EventKind::Unreserved,
        ]) {
            b.reservations = Some(self.store.reservations(None)?);
        }
        if clock.endpoints_owed {
            // Who is there changed (or nothing is known yet): everything about endpoints.
            let rows = endpoint_rows(
                &*self.store,
                presence::roster(&*self.store, &self.runtime_dir)?,
            )?;
            clock.probed = Instant::now();
            clock.counted = clock.probed;
            clock.counts_owed = false;
            clock.endpoints_owed = false;
            self.endpoints = rows.iter().map(|r| r.endpoint.clone()).collect();
            self.told = rows
                .iter()
                .map(|r| (r.endpoint.id.clone(), (r.presence, r.oldest)))
                .collect();
            b.presence = Some(presence_of(&rows));
            b.oldest = rows
                .iter()
                .map(|r| (r.endpoint.id.clone(), r.oldest))
                .collect();
            b.roster = Some(
                rows.into_iter()
                    .map(|r| store::RosterEntry {
                        endpoint: r.endpoint,
                        pending: r.pending,
                    })
                    .collect(),
            );
            return Ok(());
        }
        if clock.probed.elapsed() >= PROBE_EVERY && self.visible.load(Ordering::Relaxed) {
            // Presence of the endpoints known, and their oldest unread (a lapsed lease
            // changes it without an event). No roster read: its pending counts change only
            // with mail, which comes as events.
            clock.probed = Instant::now();
            self.probe(b)?;
        } else if mail {
            // The oldest unread of the recipients the mail touched.
            let recipients: BTreeSet<String> = b
                .events
                .iter()
                .filter(|e| e.kind.is_message())
                .filter_map(|e| e.to.clone())
                .collect();
            for r in recipients {
                let oldest = oldest_unread(&*self.store, &r)?;
                self.told.entry(r.clone()).or_default().1 = oldest;
                b.oldest.push((r, oldest));
            }
        }
        // Pending counts: the roster counts every recipient's unacked mail, which costs in
        // proportion to the mail pending, so under a stream of sends it is read at most
        // once per COUNT_EVERY, and once more after the stream stops.
        if clock.counts_owed && clock.counted.elapsed() >= COUNT_EVERY {
            b.roster = Some(self.store.roster()?);
            clock.counted = Instant::now();
            clock.counts_owed = false;
        }
        Ok(())
    }

    /// Derives the presence of the known endpoints again and reads their oldest unread;
    /// puts into `b` only what differs from what the view was last told.
    fn probe(&mut self, b: &mut Batch) -> store::Result<()> {
        let seen = presence::of_many(&self.endpoints, &self.runtime_dir);
        let mut presence = Vec::new();
        for (e, seen) in self.endpoints.iter().zip(seen) {
            let oldest = oldest_unread(&*self.store, &e.id)?;
            let told = self.told.entry(e.id.clone()).or_default();
            if told.0 != Some(seen.presence) {
                told.0 = Some(seen.presence);
                presence.push((e.id.clone(), seen.presence));
            }
            if told.1 != oldest {
                told.1 = oldest;
                b.oldest.push((e.id.clone(), oldest));
            }
        }
        if !presence.is_empty() {
            b.presence = Some(presence);
        }
        Ok(())
    }
}

impl Clock {
    /// How long the next wait for events may last: until the next probe (with the pane
    /// hidden, a look every [`PROBE_EVERY`] whether it is back) or the owed roster read.
    fn wait(&self, visible: &AtomicBool) -> Duration {
        if self.endpoints_owed {
            return Duration::ZERO;
        }
        let mut wait = if visible.load(Ordering::Relaxed) {
            PROBE_EVERY.saturating_sub(self.probed.elapsed())
        } else {
            PROBE_EVERY
        };
        if self.counts_owed {
            wait = wait.min(COUNT_EVERY.saturating_sub(self.counted.elapsed()));
        }
        wait
    }
}

/// The presence of each row, by endpoint id.
fn presence_of(rows: &[EndpointRow]) -> Vec<(String, Presence)> {
    rows.iter()
        .filter_map(|r| Some((r.endpoint.id.clone(), r.presence?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::config::Config;
    use crate::store::{Intent, NewMessage, Registration, SqliteStore, TEXT_PLAIN};

    fn register(store: &dyn Store, name: &str) -> String {
        store
            .register(&Registration {
                name: Some(name.into()),
                ..Registration::default()
            })
            .unwrap()
            .endpoint
            .id
    }

    fn send(store: &dyn Store, from: &str, to: &str, intent: Intent) -> String {
        store
            .enqueue(&NewMessage {
                from: from.into(),
                to: to.into(),
                thread: Some("t".into()),
                reply_to: None,
                intent,
                content_type: TEXT_PLAIN.into(),
                body: b"hi".to_vec(),
                expires_at: None,
                hold: None,
            })
            .unwrap()
            .id
    }

    /// The next batch that satisfies `ok`, within 10 s.
    fn next(rx: &mpsc::Receiver<Batch>, ok: impl Fn(&Batch) -> bool) -> Batch {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let b = rx.recv_timeout(left).expect("no such batch within 10 s");
            if ok(&b) {
                return b;
            }
        }
    }

    #[test]
    fn the_snapshot_then_the_follower_see_everything_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&Config::at(dir.path().join("home"))).unwrap());
        let a = register(&*store, "alice");
        let b = register(&*store, "bob");
        let old = send(&*store, &a, &b, Intent::Notify);
        let snap = snapshot(&*store).unwrap();
        assert_eq!(snap.messages.len(), 1);
        assert!(snap.endpoints.is_none(), "the roster is the follower's job");
        assert!(snap.names.contains(&(b.clone(), Some("bob".into()))));
        assert!(
            snap.recent
                .iter()
                .any(|e| e.message.as_deref() == Some(&old))
        );

        let (tx, rx) = mpsc::channel();
        let cancel = Cancel::new();
        let follower = Follower::new(
            store.clone(),
            dir.path().join("run"),
            snap.cursor,
            Arc::new(AtomicBool::new(true)),
            cancel.clone(),
        );
        let t = std::thread::spawn(move || follower.run(|b| tx.send(b).is_ok()));
        // First thing: the endpoints, with pending counts and oldest unread.
        let first = next(&rx, |b| b.roster.is_some());
        let roster = first.roster.unwrap();
        assert_eq!(
            roster.iter().find(|r| r.endpoint.id == b).unwrap().pending,
            1
        );
        assert!(
            first
                .oldest
                .contains(&(b.clone(), Some(snap.messages[0].created_at)))
        );
        assert!(
            first.events.is_empty(),
            "nothing happened after the snapshot"
        );

        let new = send(&*store, &b, &a, Intent::Request);
        let got = next(&rx, |b| !b.events.is_empty());
        assert_eq!(got.events.len(), 1, "{:?}", got.events);
        assert_eq!(got.events[0].message.as_deref(), Some(new.as_str()));
        assert_eq!(got.messages.len(), 1);
        assert_eq!(got.messages[0].intent, Intent::Request);
        assert!(got.messages[0].body.is_empty(), "bodies are not kept");
        // The counts follow within COUNT_EVERY.
        let counts = next(&rx, |b| b.roster.is_some()).roster.unwrap();
        assert_eq!(
            counts.iter().find(|r| r.endpoint.id == a).unwrap().pending,
            1
        );

        cancel.cancel();
        t.join().unwrap();
    }
}
