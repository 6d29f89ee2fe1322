//! Presence (DESIGN.md §2): whether an endpoint is there, derived from facts each time it
//! is asked, never stored as truth. One rule decides both what `roster` shows and how
//! [`crate::route::dispatch`] routes (an idle session with an in-session channel is
//! injected, a dormant one can be woken).
//!
//! The rule, first match wins, for an endpoint of this machine ([`Endpoint::is_local`]):
//!
//! 1. **live** — its socket (`<runtime dir>/<id>.sock`) completes relay's handshake within
//!    [`PROBE_TIMEOUT`] (a listener that refuses us as busy counts: it answered).
//! 2. Claude Code, pi and OpenCode sessions: **idle** while its idle waiter runs ([`idle::waiter`]: the
//!    session sits at its prompt and mail is injected in place); **active** while its
//!    agent process runs (pid *and* start time match) without a waiter — it works, or it
//!    waits for its user without relay's waiter installed.
//! 3. Codex sessions, as `relay wake` sees them: **active** while its own agent process
//!    runs (not the shared app-server) or the app-server runs a turn in it; **idle** when
//!    the app-server holds its thread with no turn running (mail goes in as a turn). The
//!    daemon is asked within [`codex_app::PRESENCE_TIMEOUT`] (one connection for a whole
//!    [`roster`]).
//! 4. A Claude Code, Codex, pi or OpenCode session that none of that finds running: **dormant** when it
//!    can be resumed ([`resumable`]: an agent's session id and a working directory that
//!    exists), else **gone**.
//! 5. Any other endpoint (`process`, `human`): **active** while its recorded process
//!    runs as ours ([`process_fact`]: pid *and* start time match, owned by our uid, not
//!    pid 1). Otherwise:
//!    - a `human` endpoint is **idle**, never gone: a person reads mail when they come
//!      back, whatever relay command they last ran (`relay listen` records its pid, and a
//!      finished one must not let `relay gc` or others' `relay reserve` drop a person's
//!      reservations);
//!    - an endpoint that reads no mailbox is **gone** (live-only: without an answering
//!      socket nothing can reach it);
//!    - a mailbox endpoint whose recorded process no longer runs is **gone** only when that
//!      pid is what its last registration recorded ([`recorded_by_last_registration`]:
//!      `updated_at` within [`RECORD_WINDOW`] of the process's start — a `relay listen`
//!      records its pid as it starts). Registered again later, the stale pid says
//!      nothing: **idle**, like a mailbox endpoint with no process recorded — a program
//!      that reads with `relay inbox`/`relay wait` now and then. Relay cannot watch it
//!      run, its mail waits for it, and calling it gone would let `relay gc` drop the
//!      reservations of someone who is merely not running a relay command now.
//!
//! An endpoint of another host (a shared NATS store) is judged from its last-seen time
//! only, since its pid, socket and agent session mean something only there: **active**
//! when seen within [`REMOTE_ACTIVE`], **idle** within [`REMOTE_IDLE`], else **gone**.
//! Never dormant: only its own machine can resume it.
//!
//! The socket probe is bounded as a whole: connecting (a listener whose backlog is full
//! never lets a blocking `connect` return) and the handshake together take at most
//! [`PROBE_TIMEOUT`], and many endpoints are probed in parallel under that one deadline
//! ([`roster`], [`of_many`]), so a hundred stalled sockets cost 500 ms, not a minute.
//!
//! `last_seen` is the latest of the endpoint's `updated_at` (every registration, and every
//! hook of an agent session re-registers it) and now when the fact itself is activity
//! now (its socket answered, or Codex runs a turn in it).

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Agent, codex_app, idle, wake};
use crate::clock::now_ms;
use crate::store::{self, Endpoint, Kind, RosterEntry, Store};

/// Where an endpoint is, from the most present to the least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// Its live socket answers.
    Live,
    /// Its agent process is alive and working.
    Active,
    /// Its agent process is alive, waiting for its user.
    Idle,
    /// Its process is gone; the session can be resumed.
    Dormant,
    /// Nothing of it runs and it cannot be resumed.
    Gone,
}

impl Presence {
    /// The printed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Live => "live",
            Presence::Active => "active",
            Presence::Idle => "idle",
            Presence::Dormant => "dormant",
            Presence::Gone => "gone",
        }
    }
}

impl std::fmt::Display for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An endpoint's presence with the fact it was derived from.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// The presence.
    pub presence: Presence,
    /// When it was last seen doing something, ms since the epoch.
    pub last_seen: Option<i64>,
    /// The fact behind `presence`, in words ("socket answers", "pid 41 alive", …).
    pub why: String,
}

/// How long the socket probe of one endpoint may take, connect and handshake together:
/// 500 ms (also the one deadline of a parallel probe of many). A local listener answers in
/// well under a millisecond; one that does not answer in this time is not counted live.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A mailbox endpoint's recorded pid counts (its exit makes the endpoint gone) only when
/// the endpoint was last registered within this long after that process started: 60 s.
/// `relay listen` records its pid while it starts, in well under a second; a later
/// registration (`relay register` again) leaves the old pid in place, and then it says
/// nothing about whether the endpoint is there.
pub const RECORD_WINDOW: Duration = Duration::from_secs(60);

/// An endpoint of another host seen this recently is counted active: 5 minutes (an agent
/// session's hooks re-register it at every prompt and tool call).
pub const REMOTE_ACTIVE: Duration = Duration::from_secs(5 * 60);

/// An endpoint of another host seen this recently, but not within [`REMOTE_ACTIVE`], is
/// counted idle; older, gone: 24 hours.
pub const REMOTE_IDLE: Duration = Duration::from_secs(24 * 3600);

/// The presence of `e` on this machine (an endpoint of another host: from its last-seen
/// time only); `runtime_dir` holds the live sockets ([`crate::transport::runtime_dir`]).
/// Takes at most [`PROBE_TIMEOUT`] for the socket plus, for a Codex session,
/// [`codex_app::PRESENCE_TIMEOUT`] for its app-server; never fails (what cannot be asked
/// counts as not there, and `why` says so).
pub fn of(e: &Endpoint, runtime_dir: &Path) -> Seen {
    if !e.is_local() {
        return remote(e, now_ms());
    }
    if let Some(seen) = live(e, runtime_dir) {
        return seen;
    }
    without_socket(e)
}

/// [`of`] for each of `es`, in order, their sockets probed in parallel: at most
/// [`PROBE_TIMEOUT`] for all the sockets together (plus, per Codex session,
/// [`codex_app::PRESENCE_TIMEOUT`]). For a caller that judges many holders at once (the
/// guard, `relay gc`).
pub fn of_many(es: &[Endpoint], runtime_dir: &Path) -> Vec<Seen> {
    let now = now_ms();
    let lives = lives(es.iter(), runtime_dir);
    es.iter()
        .zip(lives)
        .map(|(e, live)| match live {
            _ if !e.is_local() => remote(e, now),
            Some(seen) => seen,
            None => without_socket(e),
        })
        .collect()
}

/// The presence of `e` from every fact but its socket: what [`of`] says when the socket
/// does not answer. For a router that probed the socket itself
/// ([`crate::route::dispatch`]); the Codex app-server is asked within
/// [`codex_app::PRESENCE_TIMEOUT`].
pub fn without_socket(e: &Endpoint) -> Seen {
    let mut ask = |id: &str| match wake::codex_home() {
        Some(home) => codex_app::codex_presence(&home, id),
        None => codex_app::Presence::Unknown,
    };
    derive(e, now_ms(), &mut ask)
}

/// Whether mail can go into `e`'s running session in place (route `inject`): it is
/// [`Presence::Idle`] with an in-session channel — a Claude Code, pi or OpenCode session
/// whose idle waiter runs, or a Codex thread its app-server holds with no turn running. An idle `process`
/// or `human` endpoint, or one on another host, has no such channel.
pub fn injectable(e: &Endpoint, seen: &Seen) -> bool {
    seen.presence == Presence::Idle
        && e.is_local()
        && matches!(
            e.kind,
            Kind::ClaudeCode | Kind::Codex | Kind::Pi | Kind::OpenCode
        )
}

/// Whether `e` is a session relay could resume headlessly (`relay wake`): a Claude Code or
/// Codex session of this machine with a UUID session id and a working directory that
/// exists. Says nothing about whether it runs now; [`Presence::Dormant`] is this and not
/// running.
pub fn resumable(e: &Endpoint) -> bool {
    e.is_local()
        && matches!(
            e.kind,
            Kind::ClaudeCode | Kind::Codex | Kind::Pi | Kind::OpenCode
        )
        && Agent::of_kind(e.kind).is_some_and(|a| a.session_id_shaped(&e.id))
        && e.cwd.as_deref().is_some_and(|c| Path::new(c).is_dir())
}

/// Which of [`resumable`]'s conditions `e` fails, in words (for a refused wake).
pub fn why_not_resumable(e: &Endpoint) -> String {
    if !e.is_local() {
        format!(
            "it is a session on {}, not on this machine; it reads its mail when it next runs there",
            e.host.as_deref().unwrap_or("another host")
        )
    } else if !matches!(
        e.kind,
        Kind::ClaudeCode | Kind::Codex | Kind::Pi | Kind::OpenCode
    ) {
        format!(
            "it is a {} endpoint; only Claude Code, Codex, pi and OpenCode sessions can be resumed",
            e.kind
        )
    } else if !Agent::of_kind(e.kind).is_some_and(|a| a.session_id_shaped(&e.id)) {
        format!(
            "its id {} is not an agent session id (a UUID; OpenCode: ses_…)",
            e.id
        )
    } else {
        match e.cwd.as_deref() {
            None => "its working directory is not known".into(),
            Some(c) => format!("its working directory {c} does not exist"),
        }
    }
}

/// One roster row with its presence.
#[derive(Debug, Clone, Serialize)]
pub struct PresentEntry {
    /// The roster row.
    #[serde(flatten)]
    pub entry: RosterEntry,
    /// Its presence.
    #[serde(flatten)]
    pub seen: Seen,
}

/// The roster with each endpoint's presence, in the store's order (name, then id). Codex
/// sessions are asked about over one connection to their app-server, bounded by
/// [`codex_app::PRESENCE_TIMEOUT`] in all; each socket probe by [`PROBE_TIMEOUT`].
///
/// # Errors
/// Store errors.
pub fn roster(store: &dyn Store, runtime_dir: &Path) -> store::Result<Vec<PresentEntry>> {
    let entries = store.roster()?;
    let now = now_ms();
    // Every local Codex session's thread, asked of the daemon once.
    let codex_ids: Vec<&str> = entries
        .iter()
        .map(|r| &r.endpoint)
        .filter(|e| e.is_local() && e.kind == Kind::Codex)
        .map(|e| e.id.as_str())
        .collect();
    let known: HashMap<String, codex_app::Presence> = match wake::codex_home() {
        Some(home) if !codex_ids.is_empty() => codex_ids
            .iter()
            .map(|id| id.to_string())
            .zip(codex_app::presences(
                &home,
                &codex_ids,
                codex_app::PRESENCE_TIMEOUT,
            ))
            .collect(),
        _ => HashMap::new(),
    };
    let mut ask = |id: &str| {
        known
            .get(id)
            .copied()
            .unwrap_or(codex_app::Presence::Unknown)
    };
    // Every socket at once, under one deadline.
    let lives = lives(entries.iter().map(|r| &r.endpoint), runtime_dir);
    Ok(entries
        .into_iter()
        .zip(lives)
        .map(|(entry, live)| {
            let e = &entry.endpoint;
            let seen = if !e.is_local() {
                remote(e, now)
            } else {
                live.unwrap_or_else(|| derive(e, now, &mut ask))
            };
            PresentEntry { entry, seen }
        })
        .collect())
}

/// `Some(live)` when `e`'s socket completes a handshake within [`PROBE_TIMEOUT`]. The
/// probe says goodbye (`Shutdown`), so the listener logs nothing for it.
fn live(e: &Endpoint, runtime_dir: &Path) -> Option<Seen> {
    lives(std::iter::once(e), runtime_dir).pop().flatten()
}

/// [`live`] for each of `es` (`None` for one of another host), in order, every socket
/// probed at once within one [`PROBE_TIMEOUT`].
fn lives<'a>(es: impl Iterator<Item = &'a Endpoint>, runtime_dir: &Path) -> Vec<Option<Seen>> {
    use crate::transport::socket_path;
    // No socket file: nothing to dial (the common case, answered without a syscall more).
    let paths: Vec<Option<PathBuf>> = es
        .map(|e| {
            let path = socket_path(runtime_dir, &e.id);
            (e.is_local() && std::fs::symlink_metadata(&path).is_ok()).then_some(path)
        })
        .collect();
    let dial: Vec<&Path> = paths.iter().flatten().map(PathBuf::as_path).collect();
    let mut answers = probe_all(&dial, PROBE_TIMEOUT).into_iter();
    paths
        .iter()
        .map(|p| {
            let why = p.as_ref().and_then(|_| answers.next().flatten())?;
            Some(Seen {
                presence: Presence::Live,
                last_seen: Some(now_ms()),
                why,
            })
        })
        .collect()
}

/// A probe's connection, shared with the thread that keeps the deadline: once the deadline
/// has passed, the probe's socket is shut down (ending any read or write it blocks in) and
/// a probe that connects later gives up.
enum Slot {
    /// Not connected yet.
    Dialing,
    /// Connected: a clone of the stream, to shut down.
    Connected(UnixStream),
    /// The deadline passed.
    Expired,
}

/// Probes every socket of `paths` at once (a thread each), all within one `timeout` from
/// now: `Some(why)` for each that completed relay's handshake (or refused us as busy: it
/// answered), `None` for the rest, in order. Returns by the deadline however the peers
/// behave: one that never accepts, or trickles a byte now and then, is cut off.
fn probe_all(paths: &[&Path], timeout: Duration) -> Vec<Option<String>> {
    let deadline = Instant::now() + timeout;
    let mut out = vec![None; paths.len()];
    if paths.is_empty() {
        return out;
    }
    let slots: Vec<Mutex<Slot>> = paths.iter().map(|_| Mutex::new(Slot::Dialing)).collect();
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    std::thread::scope(|scope| {
        let mut running = 0usize;
        for (i, (path, slot)) in paths.iter().zip(&slots).enumerate() {
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("relay-probe".into())
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || {
                    let _ = tx.send((i, probe_one(path, deadline, slot)));
                });
            match spawned {
                Ok(_) => running += 1,
                // Out of threads: that socket counts as not answering (`why` elsewhere says
                // what else was found); the others are still probed.
                Err(e) => tracing::debug!("presence probe of {}: {e}", path.display()),
            }
        }
        drop(tx);
        while running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, why)) => {
                    out[i] = why;
                    running -= 1;
                }
                Err(_) => break,
            }
        }
        // Past the deadline (or all answered): cut off every probe still at it, so the
        // scope's joins return at once.
        for slot in &slots {
            let mut s = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let Slot::Connected(c) = &*s {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
            *s = Slot::Expired;
        }
    });
    out
}

/// One socket's probe for [`probe_all`]: connect and handshake by `deadline`.
fn probe_one(path: &Path, deadline: Instant, slot: &Mutex<Slot>) -> Option<String> {
    use crate::transport::{Error, Local, client};
    let left = || deadline.saturating_duration_since(Instant::now());
    let debug = |err: &dyn std::fmt::Display| {
        tracing::debug!("presence probe of {}: {err}", path.display());
    };
    let stream = client::connect_within(path, left())
        .inspect_err(|e| debug(e))
        .ok()?;
    {
        let mut s = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*s, Slot::Expired) {
            return None;
        }
        *s = Slot::Connected(stream.try_clone().ok()?);
    }
    let rest = left();
    if rest.is_zero() {
        return None;
    }
    stream.set_write_timeout(Some(rest)).ok()?;
    match client::open(stream, &Local::new("relay-presence-probe"), rest) {
        Ok(conn) => {
            client::close(conn, "presence probe");
            Some("its socket answers".to_string())
        }
        Err(Error::Refused(reason)) => {
            Some(format!("its socket answers (refused a probe: {reason})"))
        }
        Err(err) => {
            debug(&err);
            None
        }
    }
}

/// Presence from last-seen only: an endpoint of another host.
fn remote(e: &Endpoint, now: i64) -> Seen {
    let host = e.host.as_deref().unwrap_or("another host");
    let age = now.saturating_sub(e.updated_at).max(0);
    let age_d = Duration::from_millis(age as u64);
    let presence = if age_d <= REMOTE_ACTIVE {
        Presence::Active
    } else if age_d <= REMOTE_IDLE {
        Presence::Idle
    } else {
        Presence::Gone
    };
    Seen {
        presence,
        last_seen: Some(e.updated_at),
        why: format!(
            "on {host}, last seen {}; from last-seen only (its process and socket are on that machine)",
            ago(now, e.updated_at)
        ),
    }
}

/// The rule for a local endpoint whose socket does not answer (module docs, 2–5).
/// `ask` answers what the Codex app-server says of a thread.
fn derive(e: &Endpoint, now: i64, ask: &mut dyn FnMut(&str) -> codex_app::Presence) -> Seen {
    let seen = |presence, why: String| Seen {
        presence,
        last_seen: Some(e.updated_at),
        why,
    };
    let fact = process_fact(e);
    match e.kind {
        // pi: relay's extension runs the same idle waiter while the session sits at its
        // prompt.
        Kind::ClaudeCode | Kind::Pi | Kind::OpenCode => {
            if let Some(w) = idle::waiter(e) {
                return seen(
                    Presence::Idle,
                    format!("at its prompt: its idle waiter (pid {}) waits for mail", w.pid),
                );
            }
            if let ProcFact::Running(pid) = fact {
                return seen(Presence::Active, format!("agent pid {pid} alive"));
            }
            not_running(e, &fact)
        }
        Kind::Codex => match codex_state(e, &fact, ask) {
            wake::State::AtWork { pid: Some(pid) } if !codex_app::is_app_server(pid) => {
                seen(Presence::Active, format!("agent pid {pid} alive"))
            }
            wake::State::AtWork { .. } => Seen {
                presence: Presence::Active,
                last_seen: Some(now.max(e.updated_at)),
                why: "Codex's app-server runs a turn in it (or cannot be asked while its process lives)".into(),
            },
            wake::State::HeldIdle => seen(
                Presence::Idle,
                "held by Codex's app-server with no turn running".into(),
            ),
            wake::State::Dormant => not_running(e, &fact),
        },
        Kind::Process | Kind::Human => {
            if let ProcFact::Running(pid) = fact {
                return seen(Presence::Active, format!("pid {pid} alive"));
            }
            let about = fact.describe(false);
            if e.kind == Kind::Human {
                let why = match about {
                    Some(a) => format!("{a}; a person is never gone: their mail waits for them"),
                    None => "a person: their mail waits until they next read it".into(),
                };
                return seen(Presence::Idle, why);
            }
            if !e.mailbox {
                let why = match about {
                    Some(a) => format!("{a}, and it reads no mailbox"),
                    None => "reads no mailbox and its socket does not answer".into(),
                };
                return seen(Presence::Gone, why);
            }
            match (&fact, about) {
                (ProcFact::NoStart(pid), _) => seen(
                    Presence::Gone,
                    format!(
                        "pid {pid} was recorded without its start time, so it cannot be told \
                         from a reused pid"
                    ),
                ),
                (_, None) => seen(
                    Presence::Idle,
                    "no process recorded: its mailbox waits until it next reads".into(),
                ),
                (_, Some(a)) => match e.pid_start {
                    Some(start) if !recorded_by_last_registration(start, e.updated_at) => {
                        seen(
                            Presence::Idle,
                            format!(
                                "{a}, but it registered again since: its mailbox waits until \
                                 it next reads"
                            ),
                        )
                    }
                    _ => seen(Presence::Gone, a),
                },
            }
        }
    }
}

/// What became of an endpoint's recorded process, as this machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProcFact {
    /// No pid recorded (or the endpoint is of another host).
    Unrecorded,
    /// A pid recorded without its start time.
    NoStart(u32),
    /// It runs: same pid and start time, our uid.
    Running(u32),
    /// No process has the pid now (or only a zombie).
    Exited(u32),
    /// Another process has the pid now: its start time differs.
    Reused(u32),
    /// The process runs as another user: not ours to vouch for.
    Foreign {
        /// The pid.
        pid: u32,
        /// Its owner.
        uid: u32,
    },
    /// Pid 0 or 1 (the kernel, init): it never exits, so it says nothing of an endpoint.
    Init(u32),
}

impl ProcFact {
    /// Why the process does not count, in words (`agent` prefixes "agent"); `None` when it
    /// runs or none was recorded.
    fn describe(&self, agent: bool) -> Option<String> {
        let a = if agent { "agent " } else { "" };
        Some(match self {
            ProcFact::Unrecorded | ProcFact::Running(_) => return None,
            ProcFact::NoStart(pid) => format!("{a}pid {pid} was recorded without its start time"),
            ProcFact::Exited(pid) => format!("{a}pid {pid} exited"),
            ProcFact::Reused(pid) => {
                format!("{a}pid {pid} now names another process (its start time differs)")
            }
            ProcFact::Foreign { pid, uid } => format!(
                "{a}pid {pid} runs as uid {uid}, not as this user: it is not the recorded process"
            ),
            ProcFact::Init(pid) => {
                format!("{a}pid {pid} is the system's own (init), never an endpoint's process")
            }
        })
    }
}

/// What became of `e`'s recorded process: [`ProcFact::Running`] only for the same pid *and*
/// start time, not a zombie, owned by our effective uid (`/proc/<pid>`'s owner), and not
/// pid 0 or 1 — a pid of another user's process, or init's, would show the endpoint active
/// forever.
fn process_fact(e: &Endpoint) -> ProcFact {
    use std::os::unix::fs::MetadataExt;
    let Some(pid) = e.pid.filter(|_| e.is_local()) else {
        return ProcFact::Unrecorded;
    };
    let Some(start) = e.pid_start else {
        return ProcFact::NoStart(pid);
    };
    if pid <= 1 {
        return ProcFact::Init(pid);
    }
    let Some(stat) = super::procfs::stat(pid) else {
        return ProcFact::Exited(pid);
    };
    if stat.process.start != start {
        return ProcFact::Reused(pid);
    }
    if matches!(stat.state, 'Z' | 'X') {
        return ProcFact::Exited(pid);
    }
    match std::fs::metadata(format!("/proc/{pid}")) {
        Ok(m) if m.uid() == rustix::process::geteuid().as_raw() => ProcFact::Running(pid),
        Ok(m) => ProcFact::Foreign { pid, uid: m.uid() },
        // Gone between the two reads.
        Err(_) => ProcFact::Exited(pid),
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s start time: Linux's `USER_HZ`, 100 on
/// every architecture relay builds for.
const USER_HZ: u64 = 100;

/// Whether the endpoint's last registration (at `updated_at`, ms since the epoch) is the
/// one that recorded the process started at `start` (clock ticks since boot): within
/// [`RECORD_WINDOW`] after that process started. The start is placed on the wall clock
/// with `/proc/uptime` (the clock now minus the time since it started); if that cannot be
/// read, `true` (the pid counts, as it always did).
fn recorded_by_last_registration(start: u64, updated_at: i64) -> bool {
    let now = now_ms();
    let Some(uptime_ms) = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as i64)
    else {
        return true;
    };
    let started_ms = start.saturating_mul(1000) / USER_HZ;
    within_record_window(now - (uptime_ms - started_ms as i64), updated_at)
}

/// [`recorded_by_last_registration`] on the wall clock: a registration at `updated_at`
/// of a process that started at `started_at` (both ms since the epoch).
fn within_record_window(started_at: i64, updated_at: i64) -> bool {
    updated_at <= started_at.saturating_add(RECORD_WINDOW.as_millis() as i64)
}

/// A Claude Code or Codex session none of whose processes runs: dormant if resumable.
fn not_running(e: &Endpoint, fact: &ProcFact) -> Seen {
    let resumable = resumable(e);
    let gone_why = fact
        .describe(true)
        .unwrap_or_else(|| "no agent process recorded".into());
    Seen {
        presence: if resumable {
            Presence::Dormant
        } else {
            Presence::Gone
        },
        last_seen: Some(e.updated_at),
        why: if resumable {
            format!("{gone_why}; resumable in its working directory")
        } else {
            format!("{gone_why}; not resumable: {}", why_not_resumable(e))
        },
    }
}

/// [`wake::state`] with the app-server's answer from `ask` (so a roster asks the daemon
/// once for every session): a bound process that runs and is not the app-server is at
/// work; otherwise the daemon decides, and a daemon that cannot be asked counts as at
/// work while the bound process lives, else dormant.
fn codex_state(
    e: &Endpoint,
    fact: &ProcFact,
    ask: &mut dyn FnMut(&str) -> codex_app::Presence,
) -> wake::State {
    let pid = match fact {
        ProcFact::Running(p) => Some(*p),
        _ => None,
    };
    if pid.is_some_and(|p| !codex_app::is_app_server(p)) {
        return wake::State::AtWork { pid };
    }
    match ask(&e.id) {
        codex_app::Presence::Held { running: true } => wake::State::AtWork { pid },
        codex_app::Presence::Held { running: false } => wake::State::HeldIdle,
        codex_app::Presence::NotHeld => wake::State::Dormant,
        codex_app::Presence::Unknown if pid.is_some() => wake::State::AtWork { pid },
        codex_app::Presence::Unknown => wake::State::Dormant,
    }
}

/// `then` as seen from `now` (both ms since the epoch), for people: `just now`, `42s ago`,
/// `3m ago`, `5h ago`, `2d ago`; `in the future` for a clock that ran ahead.
pub fn ago(now: i64, then: i64) -> String {
    let d = now.saturating_sub(then);
    if d < 0 {
        return "in the future".into();
    }
    let s = d / 1000;
    match s {
        0 => "just now".into(),
        1..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(kind: Kind, id: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            name: None,
            kind,
            cwd: None,
            pid: None,
            pid_start: None,
            host: None,
            mailbox: true,
            meta: Default::default(),
            created_at: 0,
            updated_at: 1_000,
        }
    }

    const UUID: &str = "0199aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee";

    fn never(_: &str) -> codex_app::Presence {
        panic!("the daemon must not be asked")
    }

    #[test]
    fn a_mailbox_without_a_process_is_idle_and_a_dead_pid_is_gone() {
        let e = ep(Kind::Human, "alice");
        let s = derive(&e, 5_000, &mut never);
        assert_eq!(s.presence, Presence::Idle, "{}", s.why);
        assert_eq!(s.last_seen, Some(1_000));
        let mut live_only = ep(Kind::Process, "sink");
        live_only.mailbox = false;
        assert_eq!(
            derive(&live_only, 5_000, &mut never).presence,
            Presence::Gone
        );
        let me = crate::agents::procfs::current().unwrap().process;
        let mut p = ep(Kind::Process, "worker");
        p.pid = Some(me.pid);
        p.pid_start = Some(me.start);
        assert_eq!(derive(&p, 5_000, &mut never).presence, Presence::Active);
        p.pid_start = Some(me.start + 1);
        let s = derive(&p, 5_000, &mut never);
        assert_eq!(s.presence, Presence::Gone);
        assert!(s.why.contains("start time differs"), "{}", s.why);
        assert!(!s.why.contains("exited"), "{}", s.why);
    }

    #[test]
    fn a_human_is_never_gone_and_a_stale_pid_counts_only_when_last_recorded() {
        let me = crate::agents::procfs::current().unwrap().process;
        // A human whose `relay listen` exited: idle, never gone.
        let mut h = ep(Kind::Human, "hum");
        h.pid = Some(me.pid);
        h.pid_start = Some(me.start + 1);
        let s = derive(&h, 5_000, &mut never);
        assert_eq!(s.presence, Presence::Idle, "{}", s.why);
        h.mailbox = false;
        assert_eq!(derive(&h, 5_000, &mut never).presence, Presence::Idle);
        // A process registered again long after its recorded process started (at boot).
        let mut p = ep(Kind::Process, "worker");
        p.pid = Some(me.pid);
        p.pid_start = Some(0);
        p.updated_at = now_ms();
        let s = derive(&p, now_ms(), &mut never);
        assert_eq!(s.presence, Presence::Idle, "{}", s.why);
        assert!(s.why.contains("registered again"), "{}", s.why);
        p.mailbox = false;
        assert_eq!(derive(&p, now_ms(), &mut never).presence, Presence::Gone);
        // The window itself.
        assert!(within_record_window(1_000, 1_000 + 59_000));
        assert!(!within_record_window(1_000, 1_000 + 61_000));
        assert!(
            within_record_window(5_000, 1_000),
            "registered before it started"
        );
    }

    #[test]
    fn init_never_counts_as_an_endpoints_process() {
        let init = crate::agents::procfs::stat(1).unwrap().process;
        let mut p = ep(Kind::Process, "init");
        p.pid = Some(1);
        p.pid_start = Some(init.start);
        assert_eq!(process_fact(&p), ProcFact::Init(1));
        let s = derive(&p, 5_000, &mut never);
        assert_eq!(s.presence, Presence::Gone, "{}", s.why);
    }

    #[test]
    fn an_agent_session_not_running_is_dormant_only_when_resumable() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = ep(Kind::ClaudeCode, UUID);
        e.cwd = Some(dir.path().to_string_lossy().into_owned());
        assert_eq!(derive(&e, 0, &mut never).presence, Presence::Dormant);
        assert!(resumable(&e));
        e.cwd = Some("/no/such/dir".into());
        let s = derive(&e, 0, &mut never);
        assert_eq!(s.presence, Presence::Gone);
        assert!(s.why.contains("does not exist"), "{}", s.why);
        let mut named = ep(Kind::ClaudeCode, "not-a-uuid");
        named.cwd = Some(dir.path().to_string_lossy().into_owned());
        assert_eq!(derive(&named, 0, &mut never).presence, Presence::Gone);
        assert!(!resumable(&ep(Kind::Process, UUID)));
    }

    #[test]
    fn codex_sessions_follow_their_app_server() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = ep(Kind::Codex, UUID);
        e.cwd = Some(dir.path().to_string_lossy().into_owned());
        let say = |p: codex_app::Presence| derive(&e, 9_000, &mut move |_: &str| p);
        let idle = say(codex_app::Presence::Held { running: false });
        assert_eq!(idle.presence, Presence::Idle);
        assert!(injectable(&e, &idle));
        let busy = say(codex_app::Presence::Held { running: true });
        assert_eq!(busy.presence, Presence::Active);
        assert_eq!(
            busy.last_seen,
            Some(9_000),
            "a running turn is activity now"
        );
        assert_eq!(
            say(codex_app::Presence::NotHeld).presence,
            Presence::Dormant
        );
        assert_eq!(
            say(codex_app::Presence::Unknown).presence,
            Presence::Dormant
        );
    }

    #[test]
    fn another_hosts_endpoint_is_judged_by_last_seen_only() {
        let mut e = ep(Kind::ClaudeCode, UUID);
        e.host = Some("far-away-box-that-is-not-this-one".into());
        let now = 10 * 86_400_000;
        e.updated_at = now - 60_000;
        let s = remote(&e, now);
        assert_eq!(s.presence, Presence::Active);
        assert!(s.why.contains("last-seen only"), "{}", s.why);
        assert!(s.why.contains("1m ago"), "{}", s.why);
        e.updated_at = now - 3_600_000;
        assert_eq!(remote(&e, now).presence, Presence::Idle);
        e.updated_at = now - 2 * 86_400_000;
        assert_eq!(remote(&e, now).presence, Presence::Gone);
        assert!(!injectable(
            &e,
            &Seen {
                presence: Presence::Idle,
                last_seen: None,
                why: String::new()
            }
        ));
        // `of` never probes or resumes a remote session.
        assert_eq!(of(&e, Path::new("/nonexistent")).presence, Presence::Gone);
    }

    #[test]
    fn ages_read_like_people_write_them() {
        assert_eq!(ago(10_000, 10_000), "just now");
        assert_eq!(ago(52_000, 10_000), "42s ago");
        assert_eq!(ago(190_000, 10_000), "3m ago");
        assert_eq!(ago(5 * 3_600_000 + 1, 1), "5h ago");
        assert_eq!(ago(2 * 86_400_000, 0), "2d ago");
        assert_eq!(ago(0, 5_000), "in the future");
    }

    #[test]
    fn presence_orders_from_most_to_least_present() {
        assert!(Presence::Live < Presence::Active && Presence::Dormant < Presence::Gone);
        assert_eq!(
            serde_json::to_value(Presence::Dormant).unwrap(),
            serde_json::json!("dormant")
        );
    }
}
