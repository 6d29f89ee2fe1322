//! The durable store: endpoints, messages, receipts, leases and waiting (DESIGN.md §4).
//!
//! [`Store`] is what a backend implements; [`SqliteStore`] is the default. Nothing above
//! this module may assume SQLite: interfaces and the router only call the trait.
//!
//! Delivery is at-least-once. [`Store::fetch`] in [`FetchMode::Deliver`] hands out the
//! oldest messages that are queued or whose lease expired and marks them `delivered` with a
//! lease; [`Store::ack`] confirms them; [`FetchMode::Take`] is fetch + ack in one
//! transaction; [`FetchMode::Peek`] changes nothing. Readers dedupe by message id.
//!
//! The rule every reader follows (DESIGN.md §11, docs/store.md): **ack only what was
//! shown**. A reader fetches under a lease, writes the messages where its consumer reads
//! them, and acks only then; a reader that is cancelled, killed or stalled before that
//! leaves them delivered under a lease that lapses back to the mailbox.
//!
//! A live hand-over holds its message ([`NewMessage::hold`]): stored `queued`, invisible
//! to every fetch while the socket hand-over runs, so a mailbox reader of the same endpoint
//! never sees it twice. The hand-over ends the hold with [`Store::settle_hold`]; a live
//! receiver that keeps working on the message (answering a request) takes it over with
//! [`Store::claim`] and acks it when done.

mod coordination;
mod doorbell;
mod error;
mod events;
pub(crate) mod home;
pub mod names;
#[cfg(feature = "nats")]
mod nats;
mod open;
pub mod overlap;
pub mod query;
mod schema;
mod sqlite;
mod types;

use std::time::Duration;

pub use coordination::*;
pub use error::Error;
pub use events::*;
#[cfg(feature = "nats")]
pub use nats::{EP_BUCKET, MAIL_STREAM, NatsStore, RCPT_BUCKET};
pub use open::{Location, local_host, open, open_at, redact};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use sqlite::SqliteStore;
pub use types::*;

/// Endpoint metadata set (to `true`) when mail was injected into the session and cleared
/// when it was settled ([`Store::mark_injected`], [`Store::settle_injected`]). Keys starting
/// with `relay_` are relay's own: `relay register --meta` refuses them.
pub const INJECTED_HINT: &str = "relay_injected";

/// What every backend checks before it writes messages, so nothing is half-written: each
/// body within `cap` bytes, each thread within [`names::check_thread`]'s rule.
///
/// # Errors
/// [`Error::TooLarge`] for the first body over the cap, [`Error::InvalidThread`].
pub(crate) fn check_messages<'a>(
    msgs: impl IntoIterator<Item = (&'a [u8], Option<&'a str>)> + Clone,
    cap: usize,
) -> Result<()> {
    if let Some((body, _)) = msgs.clone().into_iter().find(|(b, _)| b.len() > cap) {
        return Err(Error::TooLarge {
            size: body.len(),
            cap,
        });
    }
    for t in msgs.into_iter().filter_map(|(_, t)| t) {
        names::check_thread(t)?;
    }
    Ok(())
}

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Default lease on a fetched message: 60 s. After it, an unacked message is handed out again.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Longest a [`Store::wait`] may block: 300 s.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Shortest id prefix [`Store::lookup`] accepts: 4 characters.
pub const MIN_PREFIX: usize = 4;

/// A backend for endpoints and mail. Implementations must be safe to share between threads
/// and between processes that open the same data.
pub trait Store: Send + Sync {
    /// The body cap this store enforces, in bytes (`RELAY_MAX_BODY`, default 256 KiB).
    fn max_body(&self) -> usize;

    /// Creates or updates an endpoint (field-preserving upsert: fields left `None` keep their
    /// stored value; metadata keys merge). The endpoint is found by `reg.id`, else by
    /// `reg.name`; when neither matches, a new endpoint is created (id: `reg.id` or a new
    /// UUIDv7). A name held by another endpoint moves in the same transaction and the old
    /// holder is reported in [`Registered::name_taken_from`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] / [`Error::InvalidId`] when a name or id breaks the rules of
    /// [`names`]; backend errors.
    fn register(&self, reg: &Registration) -> Result<Registered>;

    /// Looks an endpoint up by exact name, exact id, or unique id prefix of at least
    /// [`MIN_PREFIX`] characters, in that order. Unknown and ambiguous are answers, not
    /// errors, so the router can decide on them.
    ///
    /// # Errors
    /// Backend errors only.
    fn lookup(&self, query: &str) -> Result<Lookup>;

    /// [`Store::lookup`] that turns unknown and ambiguous into errors.
    ///
    /// # Errors
    /// [`Error::UnknownEndpoint`], [`Error::AmbiguousEndpoint`] (listing candidates), backend errors.
    fn resolve(&self, query: &str) -> Result<Endpoint> {
        match self.lookup(query)? {
            Lookup::Found(e) => Ok(e),
            Lookup::Unknown => Err(Error::UnknownEndpoint {
                query: query.to_string(),
            }),
            Lookup::Ambiguous(c) => Err(Error::AmbiguousEndpoint {
                query: query.to_string(),
                candidates: c.iter().map(Endpoint::label).collect(),
            }),
        }
    }

    /// Every endpoint with its pending-mail count, ordered by name then id.
    ///
    /// # Errors
    /// Backend errors.
    fn roster(&self) -> Result<Vec<RosterEntry>>;

    /// Stores one message in one transaction and rings the recipient's doorbell.
    ///
    /// # Errors
    /// [`Error::TooLarge`] before any write when the body exceeds the cap;
    /// [`Error::InvalidThread`] before any write when a thread breaks
    /// [`names::check_thread`] (over 256 bytes, or control characters);
    /// [`Error::UnknownEndpoint`] when sender or recipient id is not registered (nothing is
    /// stored); backend errors.
    fn enqueue(&self, msg: &NewMessage) -> Result<Receipt> {
        Ok(self.enqueue_batch(std::slice::from_ref(msg))?.remove(0))
    }

    /// Stores several messages in one transaction (all or none).
    ///
    /// # Errors
    /// As [`Store::enqueue`], for any message of the batch.
    fn enqueue_batch(&self, msgs: &[NewMessage]) -> Result<Vec<Receipt>>;

    /// Stores a message copied from another store (`relay store copy`) with its own id,
    /// sender, thread, intent, body and times, as `queued` with no deliveries. Idempotent:
    /// `Ok(false)` when a message with this id is already stored (whatever its state), and
    /// nothing changes. Rings the recipient's doorbell when it stored one.
    ///
    /// # Errors
    /// [`Error::InvalidId`] for an id that breaks the id rule, [`Error::TooLarge`],
    /// [`Error::InvalidThread`], [`Error::UnknownEndpoint`] when sender or recipient is not
    /// registered here; backend errors.
    fn import(&self, msg: &Message) -> Result<bool>;

    /// Hands out up to `req.limit` of the recipient's oldest pending messages that match
    /// `req.filter`, per `req.mode`. Expired messages are never handed out.
    ///
    /// # Errors
    /// Backend errors.
    fn fetch(&self, recipient: &str, req: &Fetch) -> Result<Vec<Message>>;

    /// How many messages are pending for `recipient` (queued, or delivered with a lapsed
    /// lease, and not expired), and their body bytes in total.
    ///
    /// # Errors
    /// Backend errors.
    fn pending(&self, recipient: &str) -> Result<(u64, u64)>;

    /// A live receiver takes over a message held for its hand-over: `queued` and held →
    /// `delivered` under `lease`, so the receiver acks it when it has handled it (answered a
    /// request), and a receiver that dies first leaves it to the mailbox when the lease
    /// lapses. The stored message when this call took it (show that, not what the frame
    /// said); `None` when it is not held any more (the hold lapsed or was released, another
    /// reader has it, or it is acked) — then the receiver must not handle it, because the
    /// mailbox path will.
    ///
    /// # Errors
    /// Backend errors.
    fn claim(&self, recipient: &str, id: &str, lease: Duration) -> Result<Option<Message>>;

    /// Ends the hold of a live hand-over (sender side). `shown`: the receiver confirmed it
    /// (`DeliverAck` accepted) — the message is acked, unless the receiver claimed it (then
    /// the receiver acks it once handled). Not `shown`: the hold is dropped and the message
    /// waits in the mailbox (its doorbell rings). Either way, a message no longer held is
    /// left as it is. Returns the message's state afterwards.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`] when no such message is addressed to `recipient`; backend
    /// errors.
    fn settle_hold(&self, recipient: &str, id: &str, shown: bool) -> Result<State>;

    /// Gives delivered-but-unacked messages back at once, as if their lease lapsed now (a
    /// reader that fetched them and then could not show them: a cancelled MCP call). Acked
    /// messages and other recipients' are left alone. Rings the doorbell; returns how many
    /// were released.
    ///
    /// # Errors
    /// Backend errors.
    fn release(&self, recipient: &str, ids: &[String]) -> Result<u64>;

    /// Marks messages acked. With `recipient`, only that recipient's messages can be acked;
    /// others are reported [`AckOutcome::NotYours`]. Ids may be unique prefixes.
    ///
    /// # Errors
    /// Backend errors.
    fn ack(&self, recipient: Option<&str>, ids: &[String]) -> Result<Vec<AckResult>>;

    /// Records that `recipient`'s idle session was woken in place with `ids` (route
    /// `inject`): sets `injected_at` on those of them delivered to it and, in the same
    /// commit, the endpoint's [`INJECTED_HINT`] metadata, which tells the session's next hook
    /// to [`Store::settle_injected`]. Returns how many were marked.
    ///
    /// # Errors
    /// Backend errors.
    fn mark_injected(&self, recipient: &str, ids: &[String]) -> Result<u64>;

    /// Acks every message injected into `recipient`'s session and not yet acked, and clears
    /// its [`INJECTED_HINT`], in one commit (so an injection racing it is either acked here
    /// or hinted again). Returns the ids acked.
    ///
    /// # Errors
    /// Backend errors.
    fn settle_injected(&self, recipient: &str) -> Result<Vec<String>>;

    /// The loop guard's counts for a send from `sender` to `recipient` on `thread`: how many
    /// agent→agent messages between these two the thread holds since its last message from
    /// a human endpoint, and how many messages `sender` sent after `since_ms` (ms since the
    /// epoch).
    ///
    /// # Errors
    /// Backend errors.
    fn loop_counts(
        &self,
        sender: &str,
        recipient: &str,
        thread: Option<&str>,
        since_ms: i64,
    ) -> Result<LoopCounts>;

    /// The receipt of one message, by id or unique id prefix.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`], [`Error::AmbiguousMessage`], backend errors.
    fn receipt(&self, id: &str) -> Result<Receipt>;

    /// Blocks until at least one message matching `req.filter` is pending for `recipient`,
    /// then fetches per `req.mode`; returns an empty list when `timeout` (capped at
    /// [`MAX_WAIT`]) passes first. Woken by a doorbell, not by polling the database.
    ///
    /// # Errors
    /// Backend errors.
    fn wait(&self, recipient: &str, req: &Fetch, timeout: Duration) -> Result<Vec<Message>>;

    /// [`Store::wait`] that also returns an empty list as soon as `cancel` is cancelled, so
    /// a waiter nobody waits for any more gives its thread back at once. Nothing is fetched
    /// after the cancel is seen.
    ///
    /// # Errors
    /// Backend errors.
    fn wait_or_cancel(
        &self,
        recipient: &str,
        req: &Fetch,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Vec<Message>> {
        let _ = cancel;
        self.wait(recipient, req, timeout)
    }

    /// Records that `process` is the agent process of `endpoint_id`'s session (replacing
    /// any binding of that process).
    ///
    /// # Errors
    /// [`Error::UnknownEndpoint`] when the endpoint does not exist; backend errors.
    fn bind(&self, process: ProcessRef, endpoint_id: &str) -> Result<()>;

    /// The first of `processes` (in the order given: nearest ancestor first) that has a
    /// binding, with its endpoint.
    ///
    /// # Errors
    /// Backend errors.
    fn bound(&self, processes: &[ProcessRef]) -> Result<Option<(ProcessRef, Endpoint)>>;

    /// Every binding.
    ///
    /// # Errors
    /// Backend errors.
    fn bindings(&self) -> Result<Vec<Binding>>;

    /// Removes the bindings of these processes; returns how many were removed.
    ///
    /// # Errors
    /// Backend errors.
    fn unbind(&self, processes: &[ProcessRef]) -> Result<u64>;

    /// Stored messages matching every condition of `q`, newest first (store order), at
    /// most `q.limit` (capped at [`MAX_HISTORY`]); each with its current state. Reads
    /// only: nothing is delivered or acked. What `relay search` and `relay thread` read.
    ///
    /// # Errors
    /// Backend errors.
    fn history(&self, q: &History) -> Result<Vec<Message>>;

    /// Takes advisory reservations of `req.globs` in `req.project` for `req.holder`, all or
    /// none, in one transaction (SQLite) or one compare-and-set (NATS), so two holders
    /// racing for overlapping paths never both win. A glob conflicts with another
    /// holder's live (unexpired) reservation in the same project when the two overlap
    /// ([`overlap::overlap`]) and either is exclusive. Without conflicts, or with
    /// `req.force`, every glob is granted (a glob the holder already holds is updated in
    /// place: mode, reason, expiry; its id and `created_at` kept). Expired reservations
    /// are ignored (and may be deleted by this call). `req.ttl` is capped at
    /// [`MAX_RESERVATION_TTL`]; an empty `req.globs` grants nothing.
    ///
    /// # Errors
    /// [`Error::UnknownEndpoint`] when the holder is not registered; backend errors.
    fn reserve(&self, req: &ReserveRequest) -> Result<Reserved>;

    /// Extends the live reservations selected by `sel` to lapse `ttl` (capped at
    /// [`MAX_RESERVATION_TTL`]) from now; returns them as renewed, in the order of
    /// [`Store::reservations`]. Expired ones are not revived.
    ///
    /// # Errors
    /// Backend errors.
    fn renew_reservations(
        &self,
        sel: &ReservationSelect,
        ttl: Duration,
    ) -> Result<Vec<Reservation>>;

    /// Deletes the reservations selected by `sel` (live or expired); returns the live
    /// ones deleted.
    ///
    /// # Errors
    /// Backend errors.
    fn release_reservations(&self, sel: &ReservationSelect) -> Result<Vec<Reservation>>;

    /// Live (unexpired) reservations, of one project or all, ordered by project, then
    /// `created_at`, then id.
    ///
    /// # Errors
    /// Backend errors.
    fn reservations(&self, project: Option<&str>) -> Result<Vec<Reservation>>;

    /// Recorded events ([`events`](mod@events)) with a cursor after `q.after`, oldest
    /// first, at most `q.limit` (capped at [`MAX_EVENTS`]); with `q.tail`, the newest of
    /// them. The page's `next` is the cursor to resume from. Reads only.
    ///
    /// # Errors
    /// Backend errors.
    fn events(&self, q: &EventQuery) -> Result<EventPage>;

    /// Blocks until the store holds an event with a cursor greater than `after`; returns
    /// `true` then, `false` when `timeout` (capped at [`MAX_WAIT`]) passes or `cancel` is
    /// cancelled first. Woken by the store's event doorbell (SQLite) or subscription
    /// (NATS), not by polling.
    ///
    /// # Errors
    /// Backend errors.
    fn wait_events(&self, after: u64, timeout: Duration, cancel: &Cancel) -> Result<bool>;

    /// Records an event that changes no stored state — a rejected send — and returns its
    /// cursor. `ev.kind` `None` records [`EventKind::Rejected`]; `ev.detail` is cut to
    /// [`MAX_DETAIL`] bytes.
    ///
    /// # Errors
    /// Backend errors.
    fn record_event(&self, ev: &NewEvent) -> Result<u64>;

    /// Deletes acked messages acked more than `acked_before` ago, expired messages,
    /// expired reservations, and events recorded more than `acked_before` ago.
    ///
    /// # Errors
    /// Backend errors.
    fn gc(&self, acked_before: Duration) -> Result<GcReport>;
}

/// A boxed store is a store (what [`open`] returns).
impl<T: Store + ?Sized> Store for Box<T> {
    fn max_body(&self) -> usize {
        (**self).max_body()
    }
    fn register(&self, reg: &Registration) -> Result<Registered> {
        (**self).register(reg)
    }
    fn lookup(&self, query: &str) -> Result<Lookup> {
        (**self).lookup(query)
    }
    fn resolve(&self, query: &str) -> Result<Endpoint> {
        (**self).resolve(query)
    }
    fn roster(&self) -> Result<Vec<RosterEntry>> {
        (**self).roster()
    }
    fn enqueue(&self, msg: &NewMessage) -> Result<Receipt> {
        (**self).enqueue(msg)
    }
    fn enqueue_batch(&self, msgs: &[NewMessage]) -> Result<Vec<Receipt>> {
        (**self).enqueue_batch(msgs)
    }
    fn import(&self, msg: &Message) -> Result<bool> {
        (**self).import(msg)
    }
    fn fetch(&self, recipient: &str, req: &Fetch) -> Result<Vec<Message>> {
        (**self).fetch(recipient, req)
    }
    fn pending(&self, recipient: &str) -> Result<(u64, u64)> {
        (**self).pending(recipient)
    }
    fn claim(&self, recipient: &str, id: &str, lease: Duration) -> Result<Option<Message>> {
        (**self).claim(recipient, id, lease)
    }
    fn settle_hold(&self, recipient: &str, id: &str, shown: bool) -> Result<State> {
        (**self).settle_hold(recipient, id, shown)
    }
    fn release(&self, recipient: &str, ids: &[String]) -> Result<u64> {
        (**self).release(recipient, ids)
    }
    fn ack(&self, recipient: Option<&str>, ids: &[String]) -> Result<Vec<AckResult>> {
        (**self).ack(recipient, ids)
    }
    fn mark_injected(&self, recipient: &str, ids: &[String]) -> Result<u64> {
        (**self).mark_injected(recipient, ids)
    }
    fn settle_injected(&self, recipient: &str) -> Result<Vec<String>> {
        (**self).settle_injected(recipient)
    }
    fn loop_counts(
        &self,
        sender: &str,
        recipient: &str,
        thread: Option<&str>,
        since_ms: i64,
    ) -> Result<LoopCounts> {
        (**self).loop_counts(sender, recipient, thread, since_ms)
    }
    fn receipt(&self, id: &str) -> Result<Receipt> {
        (**self).receipt(id)
    }
    fn wait(&self, recipient: &str, req: &Fetch, timeout: Duration) -> Result<Vec<Message>> {
        (**self).wait(recipient, req, timeout)
    }
    fn wait_or_cancel(
        &self,
        recipient: &str,
        req: &Fetch,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Vec<Message>> {
        (**self).wait_or_cancel(recipient, req, timeout, cancel)
    }
    fn bind(&self, process: ProcessRef, endpoint_id: &str) -> Result<()> {
        (**self).bind(process, endpoint_id)
    }
    fn bound(&self, processes: &[ProcessRef]) -> Result<Option<(ProcessRef, Endpoint)>> {
        (**self).bound(processes)
    }
    fn bindings(&self) -> Result<Vec<Binding>> {
        (**self).bindings()
    }
    fn unbind(&self, processes: &[ProcessRef]) -> Result<u64> {
        (**self).unbind(processes)
    }
    fn history(&self, q: &History) -> Result<Vec<Message>> {
        (**self).history(q)
    }
    fn reserve(&self, req: &ReserveRequest) -> Result<Reserved> {
        (**self).reserve(req)
    }
    fn renew_reservations(
        &self,
        sel: &ReservationSelect,
        ttl: Duration,
    ) -> Result<Vec<Reservation>> {
        (**self).renew_reservations(sel, ttl)
    }
    fn release_reservations(&self, sel: &ReservationSelect) -> Result<Vec<Reservation>> {
        (**self).release_reservations(sel)
    }
    fn reservations(&self, project: Option<&str>) -> Result<Vec<Reservation>> {
        (**self).reservations(project)
    }
    fn events(&self, q: &EventQuery) -> Result<EventPage> {
        (**self).events(q)
    }
    fn wait_events(&self, after: u64, timeout: Duration, cancel: &Cancel) -> Result<bool> {
        (**self).wait_events(after, timeout, cancel)
    }
    fn record_event(&self, ev: &NewEvent) -> Result<u64> {
        (**self).record_event(ev)
    }
    fn gc(&self, acked_before: Duration) -> Result<GcReport> {
        (**self).gc(acked_before)
    }
}
