//! Carries a decision out: gather facts → [`decide`] → store (or, later, transport).

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::decide::{Ask, Decision, Facts, Guard, LiveState, Reason, Resolution, decide};
use crate::agents::presence::{self, Presence, Seen};
use crate::clock::now_ms;
use crate::store::{self, Endpoint, Intent, Lookup, NewMessage, Receipt, Store, names};
use crate::transport::client;

/// Why a send did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The decider refused it; nothing was written anywhere.
    #[error("{detail}")]
    Rejected {
        /// The stable reason.
        reason: Reason,
        /// What was wrong and what would be right.
        detail: String,
    },
    /// The store failed, or an argument (such as `reply_to`) named nothing.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// The sender (already resolved).
    pub from: Endpoint,
    /// Target: name, id, or unique id prefix (≥ 4 characters).
    pub to: String,
    /// The body; its cap is the store's [`Store::max_body`].
    pub body: Vec<u8>,
    /// MIME type of the body.
    pub content_type: String,
    /// Notify or request.
    pub intent: Intent,
    /// Thread; when `None` and `reply_to` is set, the replied-to message's thread (or its
    /// id, starting a thread) is used.
    pub thread: Option<String>,
    /// Id or unique prefix of the message this answers.
    pub reply_to: Option<String>,
    /// Time to live; the message is not delivered after it and `gc` removes it.
    pub ttl: Option<Duration>,
    /// Resume the target session after queuing (it must be a resumable agent session).
    pub wake: bool,
    /// Where live endpoints' sockets are (`transport::runtime_dir`); `None` skips the live
    /// path and uses the mailbox only.
    pub runtime_dir: Option<std::path::PathBuf>,
}

impl SendRequest {
    /// A plain-text notification from `from` to `to`: no thread, no reply, no TTL, no
    /// wake, mailbox only. Set the other fields with struct update syntax.
    pub fn text(from: Endpoint, to: impl Into<String>, body: impl Into<Vec<u8>>) -> SendRequest {
        SendRequest {
            from,
            to: to.into(),
            body: body.into(),
            content_type: store::TEXT_PLAIN.into(),
            intent: Intent::Notify,
            thread: None,
            reply_to: None,
            ttl: None,
            wake: false,
            runtime_dir: None,
        }
    }
}

/// What a send did: the route it took and the receipt as stored.
#[derive(Debug, Serialize)]
pub struct Sent {
    /// The route taken.
    #[serde(flatten)]
    pub route: Decision,
    /// The receipt; its `state` is the truth at the moment of return.
    #[serde(flatten)]
    pub receipt: Receipt,
    /// A request delivered live keeps its connection open here, so the target can answer
    /// on it with a `Reply` frame ([`crate::transport::client::await_reply`]). Dropping it
    /// closes the connection; the target then replies through the mailbox.
    #[serde(skip)]
    pub live: Option<crate::transport::Connection>,
}

/// Sends one message: resolve the target, decide, and carry it out.
///
/// # Errors
/// [`Error::Rejected`] with `unknown-target`, `ambiguous-target`, `too-large`,
/// `not-deliverable`, `not-wakeable` or `bad-target` — nothing is stored; [`Error::Store`] with
/// [`store::Error::UnknownMessage`] when `reply_to` names no message, or backend errors.
pub fn send(store: &dyn Store, req: SendRequest) -> Result<Sent, Error> {
    Ok(send_all(store, vec![req])?.remove(0))
}

/// Sends several messages all or nothing: every one is decided first, and only when none
/// is rejected are they stored, in one transaction. Each target's socket is probed once,
/// and every live message to one target travels on one connection.
///
/// # Errors
/// As [`send`], for the first message that fails; then nothing is stored.
pub fn send_all(store: &dyn Store, reqs: Vec<SendRequest>) -> Result<Vec<Sent>, Error> {
    let mut probes = Probes::default();
    let mut batch = Batch::default();
    let mut plans = Vec::with_capacity(reqs.len());
    let mut msgs = Vec::with_capacity(reqs.len());
    for req in reqs {
        let p = plan(store, req, &mut probes, &mut batch)?;
        msgs.push(p.msg.clone());
        plans.push(p);
    }
    // Stored first, always: the store is the record, and the mailbox is where a message
    // waits if the live hand-over fails. Live messages are stored held for the hand-over,
    // so no mailbox reader of the target sees them while it runs (DESIGN.md §7).
    let receipts = store.enqueue_batch(&msgs)?;
    let mut conns: HashMap<PathBuf, LiveConn> = HashMap::new();
    let mut out = Vec::with_capacity(plans.len());
    for (p, receipt) in plans.into_iter().zip(receipts) {
        out.push(match p.decision {
            Decision::Live => carry_live(store, &p, receipt, out.len(), &mut probes, &mut conns),
            Decision::Inject => Carried {
                sent: carry_inject(store, &p.msg.to, receipt),
                receipt_is_request: false,
            },
            route => Carried {
                sent: Sent {
                    route,
                    receipt,
                    live: None,
                },
                receipt_is_request: false,
            },
        });
    }
    // A connection that carried exactly one request stays open for its reply; the rest
    // are closed politely.
    for (_, c) in conns {
        if let LiveConn::Open { conn, carried, .. } = c {
            match carried.as_slice() {
                [i] if out[*i].receipt_is_request => out[*i].sent.live = Some(conn),
                _ => client::close(conn, "delivered"),
            }
        }
    }
    Ok(out.into_iter().map(|c| c.sent).collect())
}

/// How long a live hand-over may take before the message is left in the mailbox.
const LIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a live message is held for its hand-over (two dial attempts of
/// [`LIVE_TIMEOUT`] and margin). A sender killed mid-hand-over leaves the message to the
/// mailbox when this lapses.
const HOLD: Duration = Duration::from_secs(30);

/// One probe per socket path: the state, and the probed stream until a hand-over uses it.
#[derive(Default)]
struct Probes(HashMap<PathBuf, (LiveState, Option<UnixStream>)>);

impl Probes {
    fn state(&mut self, path: &Path) -> LiveState {
        self.0
            .entry(path.to_path_buf())
            .or_insert_with(|| client::probe(path))
            .0
    }

    /// The probed stream if it is still unused, else a fresh connection.
    fn stream(&mut self, path: &Path) -> Option<UnixStream> {
        self.0
            .get_mut(path)
            .and_then(|p| p.1.take())
            .or_else(|| client::probe(path).1)
    }
}

/// The connection to one target during a batch.
enum LiveConn {
    Open {
        conn: crate::transport::Connection,
        /// Indexes (in the batch's output) of the messages it carried.
        carried: Vec<usize>,
    },
    /// A hand-over on it failed: the rest of the batch's messages to this target go to
    /// the mailbox instead of waiting out another timeout each.
    Failed,
}

/// One message's outcome, with what the end of the batch needs to know.
struct Carried {
    sent: Sent,
    receipt_is_request: bool,
}

/// Hands a stored, held message to the target's socket over the batch's connection to it.
/// Accepted: the hold ends as acked (or stays the receiver's when it claimed the message to
/// answer it: then `delivered`). Refused or failed: the hold is dropped and the message
/// waits in the mailbox, and the route says so.
fn carry_live(
    store: &dyn Store,
    p: &Plan,
    receipt: Receipt,
    index: usize,
    probes: &mut Probes,
    conns: &mut HashMap<PathBuf, LiveConn>,
) -> Carried {
    use crate::transport::Local;
    use crate::wire::catalogue::Deliver;
    let is_request = p.msg.intent == Intent::Request;
    let deliver = Deliver {
        message_id: receipt.id.clone(),
        from: p.msg.from.clone(),
        from_name: p.from_name.clone(),
        thread: p.msg.thread.clone(),
        reply_to: p.msg.reply_to.clone(),
        intent: u8::from(is_request),
        content_type: p.msg.content_type.clone(),
        body: p.msg.body.clone(),
        created_at: receipt.created_at,
    };
    let Some(path) = p.socket.clone() else {
        return settled(store, p, receipt, false, is_request);
    };
    let ack = match conns.remove(&path) {
        Some(LiveConn::Failed) => None,
        Some(LiveConn::Open { mut conn, carried }) => {
            let ack = client::deliver_on(&mut conn, deliver)
                .inspect_err(|e| tracing::debug!(error = %e, "live hand-over failed"))
                .ok();
            if ack.is_some() {
                let mut carried = carried;
                carried.push(index);
                conns.insert(path.clone(), LiveConn::Open { conn, carried });
            }
            ack
        }
        None => {
            let mut me = Local::new(p.msg.from.clone());
            me.name = p.from_name.clone();
            // If the socket vanished since the probe, dial once more — only the handshake
            // is retried: once the `Deliver` is written the receiver may have shown it, and
            // a second one would be refused as no longer held.
            let mut conn = None;
            for _ in 0..2 {
                let Some(s) = probes.stream(&path) else { break };
                match client::open(s, &me, LIVE_TIMEOUT) {
                    Ok(c) => {
                        conn = Some(c);
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "live handshake failed"),
                }
            }
            conn.and_then(|mut conn| {
                let ack = client::deliver_on(&mut conn, deliver)
                    .inspect_err(|e| tracing::debug!(error = %e, "live hand-over failed"))
                    .ok()?;
                conns.insert(
                    path.clone(),
                    LiveConn::Open {
                        conn,
                        carried: vec![index],
                    },
                );
                Some(ack)
            })
        }
    };
    match ack {
        Some(ack) if ack.accepted => settled(store, p, receipt, true, is_request),
        Some(ack) => {
            tracing::warn!(reason = ?ack.reason, "live endpoint refused the message; it stays in the mailbox");
            settled(store, p, receipt, false, is_request)
        }
        None => {
            conns.insert(path, LiveConn::Failed);
            settled(store, p, receipt, false, is_request)
        }
    }
}

/// Ends the hand-over's hold and reports the route the message really took. Accepted:
/// acked, or the receiver's to ack (claimed). Not accepted: back to the mailbox — unless
/// the receiver claimed it before the hand-over failed (a slow `DeliverAck`): then it is
/// in the receiver's hands, and the route says `live`. The whole batch is stored already,
/// so a store error here is logged and the receipt reported as it was, never an error
/// for messages that were sent.
fn settled(
    store: &dyn Store,
    p: &Plan,
    receipt: Receipt,
    shown: bool,
    is_request: bool,
) -> Carried {
    if let Err(e) = store.settle_hold(&p.msg.to, &receipt.id, shown) {
        tracing::warn!("ending the hand-over hold of {}: {e}", receipt.id);
    }
    let now = store.receipt(&receipt.id).unwrap_or(receipt);
    let route = if shown || now.state != crate::store::State::Queued {
        Decision::Live
    } else {
        Decision::Mailbox
    };
    Carried {
        sent: Sent {
            route,
            receipt: now,
            live: None,
        },
        receipt_is_request: is_request,
    }
}

/// A decided message, not yet stored.
struct Plan {
    decision: Decision,
    msg: NewMessage,
    from_name: Option<String>,
    /// With `Live`: the target's socket path.
    socket: Option<PathBuf>,
}

/// Gathers facts, decides, and builds the message to store. Writes nothing.
/// What the loop guard must add to the store's counts for the messages planned earlier in
/// the same batch (none of them is stored until all are decided).
#[derive(Default)]
struct Batch {
    /// Messages planned per sender id.
    sent: HashMap<String, u64>,
    /// Agent→agent messages planned per (thread, the pair's two ids in order).
    thread: HashMap<(String, String, String), u64>,
}

impl Batch {
    fn pair(thread: &str, a: &str, b: &str) -> (String, String, String) {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        (thread.to_string(), x.to_string(), y.to_string())
    }

    fn count(&mut self, from: &Endpoint, to: &Endpoint, thread: Option<&str>) {
        *self.sent.entry(from.id.clone()).or_default() += 1;
        if let Some(t) = thread {
            if from.kind == store::Kind::Human {
                // A human message resets the thread for every pair.
                self.thread.retain(|k, _| k.0 != t);
            } else if from.kind.is_agent() && to.kind.is_agent() {
                *self
                    .thread
                    .entry(Batch::pair(t, &from.id, &to.id))
                    .or_default() += 1;
            }
        }
    }
}

fn plan(
    store: &dyn Store,
    req: SendRequest,
    probes: &mut Probes,
    batch: &mut Batch,
) -> Result<Plan, Error> {
    let lookup = store.lookup(&req.to)?;
    let (resolution, target) = match &lookup {
        Lookup::Found(e) => (Resolution::Found, Some(e)),
        Lookup::Unknown => (Resolution::Unknown, None),
        Lookup::Ambiguous(_) => (Resolution::Ambiguous, None),
    };
    let socket = match (&req.runtime_dir, target) {
        (Some(dir), Some(t)) => Some(crate::transport::socket_path(dir, &t.id)),
        _ => None,
    };
    let live = match &socket {
        Some(path) => probes.state(path),
        None => LiveState::NoSocket,
    };
    // The thread is known before deciding: the loop guard counts per thread.
    let given_thread = names::optional_thread(req.thread.clone())?;
    let (reply_to, thread) = match (&names::optional(req.reply_to.clone()), target) {
        (None, _) | (_, None) => (None, given_thread),
        (Some(r), Some(_)) => {
            let parent = store.receipt(r)?;
            let thread = given_thread
                .or(parent.thread)
                .unwrap_or_else(|| parent.id.clone());
            (Some(parent.id), Some(thread))
        }
    };
    let guard = match target {
        Some(t) if req.from.kind.is_agent() => {
            let mut g = guard(store, &req.from, t, thread.as_deref())?;
            g.sent_last_minute += batch.sent.get(&req.from.id).copied().unwrap_or(0);
            if let Some(th) = thread.as_deref() {
                g.thread_run += batch
                    .thread
                    .get(&Batch::pair(th, &req.from.id, &t.id))
                    .copied()
                    .unwrap_or(0);
            }
            g
        }
        _ => Guard::default(),
    };
    // Presence decides inject and wake, by the rule `roster` shows (agents::presence);
    // the socket was probed above. Asked only where it can matter (a Codex endpoint means
    // a round trip to its daemon): a live target, or one that reads no mailbox, is decided
    // before inject and wake.
    let seen = match target {
        Some(t) if live != LiveState::Live && t.mailbox => Some(presence::without_socket(t)),
        _ => None,
    };
    let facts = Facts {
        resolution,
        live,
        consumes_mailbox: target.is_some_and(|t| t.mailbox),
        wakeable: seen
            .as_ref()
            .is_some_and(|s| s.presence == Presence::Dormant),
        injectable: match (target, &seen) {
            (Some(t), Some(s)) => presence::injectable(t, s),
            _ => false,
        },
        replies: target.is_none_or(replies),
        guard,
        body_len: req.body.len(),
        body_cap: store.max_body(),
    };
    let decision = decide(
        &facts,
        Ask {
            intent: req.intent,
            wake: req.wake,
        },
    );
    let target = match (decision, target) {
        (Decision::Reject(reason), _) => {
            let detail = reject_detail(reason, &req, &lookup, &facts, seen.as_ref());
            record_reject(store, &req, target, thread.as_deref(), reason, &detail);
            return Err(Error::Rejected { reason, detail });
        }
        (_, Some(t)) => t,
        // decide() only routes targets that were found.
        (_, None) => {
            let reason = Reason::UnknownTarget;
            let detail = reject_detail(reason, &req, &lookup, &facts, None);
            record_reject(store, &req, None, thread.as_deref(), reason, &detail);
            return Err(Error::Rejected { reason, detail });
        }
    };
    batch.count(&req.from, target, thread.as_deref());
    let msg = NewMessage {
        from: req.from.id.clone(),
        to: target.id.clone(),
        thread,
        reply_to,
        intent: req.intent,
        content_type: req.content_type,
        body: req.body,
        expires_at: req
            .ttl
            .map(|t| now_ms().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))),
        hold: (decision == Decision::Live).then_some(HOLD),
    };
    Ok(Plan {
        decision,
        from_name: req.from.name.clone(),
        msg,
        socket,
    })
}

/// Endpoint metadata: the loop guard's cap of agent↔agent messages on a thread without a
/// human message (0 turns it off; default [`Guard::THREAD_CAP`]). Read from the sender.
pub const LOOP_THREAD_META: &str = "loop_thread";

/// Endpoint metadata: the loop guard's cap of sends per minute for an agent session (0
/// turns it off; default [`Guard::RATE_CAP`]). Read from the sender.
pub const LOOP_RATE_META: &str = "loop_per_minute";

/// The loop guard's facts for a send from agent session `from` to `to` on `thread`.
fn guard(
    store: &dyn Store,
    from: &Endpoint,
    to: &Endpoint,
    thread: Option<&str>,
) -> Result<Guard, Error> {
    let cap = |key: &str, default: u64| {
        from.meta
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(default)
    };
    let agent_to_agent = to.kind.is_agent();
    let counts = store.loop_counts(
        &from.id,
        &to.id,
        thread.filter(|_| agent_to_agent),
        now_ms().saturating_sub(60_000),
    )?;
    Ok(Guard {
        agent_to_agent,
        from_agent: true,
        thread_run: counts.thread_run,
        thread_cap: cap(LOOP_THREAD_META, Guard::THREAD_CAP),
        sent_last_minute: counts.sent_since,
        rate_cap: cap(LOOP_RATE_META, Guard::RATE_CAP),
    })
}

/// How long a sender waits for a Codex app-server to take an injected turn.
const CODEX_INJECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries out `inject` for a Codex session: its pending mail, this message included, goes
/// in as a turn through its app-server. A Claude Code session needs nothing here: the
/// enqueue rang its doorbell and its idle waiter injects. If the app-server refuses, the
/// mail stays in the mailbox and the route says so.
fn carry_inject(store: &dyn Store, target: &str, receipt: Receipt) -> Sent {
    let route = match (store.lookup(target), crate::agents::wake::codex_home()) {
        (Ok(Lookup::Found(e)), Some(home)) if e.kind == store::Kind::Codex => {
            match crate::agents::codex_app::deliver_pending(store, &e, &home, CODEX_INJECT_TIMEOUT)
            {
                Ok(_) => Decision::Inject,
                Err(err) => {
                    tracing::warn!(
                        "injecting into Codex session {target}: {err:#}; left in the mailbox"
                    );
                    Decision::Mailbox
                }
            }
        }
        _ => Decision::Inject,
    };
    Sent {
        route,
        receipt: store.receipt(&receipt.id).unwrap_or(receipt),
        live: None,
    }
}

/// Why `e` is not dormant, in words: not a resumable session at all
/// ([`presence::why_not_resumable`]), or one that is there now (its presence says why).
fn why_not_wakeable(e: &Endpoint, seen: Option<&Seen>) -> String {
    match seen {
        Some(s) if presence::resumable(e) => format!(
            "it is {} ({}), not dormant: mail reaches it through its hooks",
            s.presence, s.why
        ),
        _ => presence::why_not_resumable(e),
    }
}

/// False when the endpoint declared it never answers (`meta.replies == false`).
pub fn replies(e: &Endpoint) -> bool {
    e.meta.get(REPLIES_META) != Some(&serde_json::Value::Bool(false))
}

/// The metadata key `register --no-replies` sets to `false`.
pub const REPLIES_META: &str = "replies";

/// Records a refused send in the event log (`message.rejected`, store::events): the
/// reject changes no state, so nothing else would show it to `relay events` and `relay
/// watch`. `to` is the target's id only when it was found: a target as written goes in
/// the detail (the reason names it), never in `to`, or whoever later registered that text
/// as an id would be shown the reject as theirs. A failure to record is logged and does
/// not hide the reject.
fn record_reject(
    store: &dyn Store,
    req: &SendRequest,
    target: Option<&Endpoint>,
    thread: Option<&str>,
    reason: Reason,
    detail: &str,
) {
    let ev = store::NewEvent {
        kind: Some(store::EventKind::Rejected),
        from: Some(req.from.id.clone()),
        to: target.map(|t| t.id.clone()),
        thread: thread.map(str::to_string),
        detail: Some(format!("{reason}: {detail}")),
        ..Default::default()
    };
    if let Err(e) = store.record_event(&ev) {
        tracing::warn!(error = %e, "could not record a rejected send in the event log");
    }
}

fn reject_detail(
    reason: Reason,
    req: &SendRequest,
    lookup: &Lookup,
    facts: &Facts,
    seen: Option<&Seen>,
) -> String {
    match (reason, lookup) {
        (Reason::AmbiguousTarget, Lookup::Ambiguous(c)) => store::Error::AmbiguousEndpoint {
            query: req.to.clone(),
            candidates: c.iter().map(Endpoint::label).collect(),
        }
        .to_string(),
        (Reason::UnknownTarget, _) | (Reason::AmbiguousTarget, _) => {
            store::Error::UnknownEndpoint {
                query: req.to.clone(),
            }
            .to_string()
        }
        (Reason::TooLarge, _) => store::Error::TooLarge {
            size: facts.body_len,
            cap: facts.body_cap,
        }
        .to_string(),
        (Reason::NotDeliverable, Lookup::Found(t)) => format!(
            "{} does not read a mailbox (registered with --no-mailbox) and is not live; \
             nothing was sent",
            t.display_name()
        ),
        (Reason::NotDeliverable, _) => format!("{} cannot receive mail", req.to),
        (Reason::NotWakeable, Lookup::Found(t)) => format!(
            "{} cannot be woken: {}; send without --wake to leave it in the mailbox. \
             Nothing was sent",
            t.display_name(),
            why_not_wakeable(t, seen)
        ),
        (Reason::NotWakeable, _) => format!("{} cannot be woken", req.to),
        (Reason::BadTarget, _) => format!(
            "{} never replies (registered with --no-replies), so a request to it would \
             wait forever; send it with --intent notify instead. Nothing was sent",
            req.to
        ),
        (Reason::LoopGuard, _) => {
            let g = &facts.guard;
            let who = req.from.display_name();
            if g.agent_to_agent && g.thread_cap > 0 && g.thread_run >= g.thread_cap {
                format!(
                    "loop guard: the thread already holds {} agent-to-agent messages since a \
                     human last wrote on it (cap {}). A human message on the thread resets \
                     it; or lift the cap with `relay register {who} --loop-thread N` (0 = \
                     off). Nothing was sent",
                    g.thread_run, g.thread_cap
                )
            } else {
                format!(
                    "loop guard: {who} sent {} messages in the last minute (cap {} per \
                     minute for an agent session). Wait a minute, or lift the cap with \
                     `relay register {who} --loop-rate N` (0 = off). Nothing was sent",
                    g.sent_last_minute, g.rate_cap
                )
            }
        }
    }
}
