//! The records the store keeps (DESIGN.md §2). JSON field names here are part of the CLI's
//! documented output (docs/cli.md); change them only with a note there.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What sort of participant an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A Claude Code session.
    ClaudeCode,
    /// A Codex session.
    Codex,
    /// A pi session.
    Pi,
    /// An OpenCode session.
    #[serde(rename = "opencode")]
    OpenCode,
    /// An ordinary program (the default).
    #[default]
    Process,
    /// A person at a terminal.
    Human,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 6] = [
        Kind::ClaudeCode,
        Kind::Codex,
        Kind::Pi,
        Kind::OpenCode,
        Kind::Process,
        Kind::Human,
    ];

    /// True for agent sessions (Claude Code, Codex, pi, OpenCode): the loop guard counts
    /// their exchanges.
    pub fn is_agent(self) -> bool {
        matches!(
            self,
            Kind::ClaudeCode | Kind::Codex | Kind::Pi | Kind::OpenCode
        )
    }

    /// The stored and printed spelling, e.g. `claude-code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ClaudeCode => "claude-code",
            Kind::Codex => "codex",
            Kind::Pi => "pi",
            Kind::OpenCode => "opencode",
            Kind::Process => "process",
            Kind::Human => "human",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown kind '{s}'; use one of: {}",
                    Kind::ALL.map(Kind::as_str).join(", ")
                )
            })
    }
}

/// What the sender expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Intent {
    /// Fire and forget (the default).
    #[default]
    Notify,
    /// The sender expects a reply (a message with `reply_to` set to this one's id).
    Request,
}

impl Intent {
    /// Both intents.
    pub const ALL: [Intent; 2] = [Intent::Notify, Intent::Request];

    /// The stored and printed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Notify => "notify",
            Intent::Request => "request",
        }
    }
}

impl FromStr for Intent {
    type Err = String;
    fn from_str(s: &str) -> Result<Intent, String> {
        match s {
            "notify" => Ok(Intent::Notify),
            "request" => Ok(Intent::Request),
            _ => Err(format!("unknown intent '{s}'; use 'notify' or 'request'")),
        }
    }
}

/// Receipt state of a message. Only moves forward: queued → delivered → acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Stored; no reader has it yet.
    Queued,
    /// Handed to a reader (under a lease); not yet confirmed.
    Delivered,
    /// The reader confirmed it.
    Acked,
}

impl State {
    /// The stored and printed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Delivered => "delivered",
            State::Acked => "acked",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<State> {
        match s {
            "queued" => Some(State::Queued),
            "delivered" => Some(State::Delivered),
            "acked" => Some(State::Acked),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Stable id: the agent's session id for agent sessions, else a UUIDv7.
    pub id: String,
    /// Unique alias, if any (rules in [`super::names`]).
    pub name: Option<String>,
    /// What sort of participant.
    pub kind: Kind,
    /// Working directory it runs in, if known.
    pub cwd: Option<String>,
    /// Process id while it runs, if known.
    pub pid: Option<u32>,
    /// Start time of `pid` in clock ticks since boot (tells a reused pid apart), if known.
    pub pid_start: Option<u64>,
    /// The machine it last registered from ([`super::local_host`]: `RELAY_HOST`, else the
    /// host name); `None` for endpoints stored before relay recorded hosts. A pid, a
    /// socket and a binding mean something only on this host.
    #[serde(default)]
    pub host: Option<String>,
    /// Whether it reads its mailbox. `false` for live-only endpoints: mail to them is
    /// `not-deliverable` unless they are live.
    pub mailbox: bool,
    /// Free-form metadata (a JSON object).
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// When it was first registered, ms since the epoch.
    pub created_at: i64,
    /// When it was last registered, ms since the epoch.
    pub updated_at: i64,
}

impl Endpoint {
    /// `name (id)` when named, else the id: how endpoints are shown in messages and errors.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} ({n})", self.id),
            None => self.id.clone(),
        }
    }

    /// The name if it has one, else the id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// Whether it registered from this machine ([`super::local_host`]), or before hosts
    /// were recorded. Its pid, sockets and agent session mean something only then.
    pub fn is_local(&self) -> bool {
        self.host
            .as_deref()
            .is_none_or(|h| h == super::local_host())
    }
}

/// An upsert request for [`super::Store::register`]. `None` fields keep their stored value
/// (or take the default on creation).
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// Endpoint id to create or update.
    pub id: Option<String>,
    /// Name to hold.
    pub name: Option<String>,
    /// Kind (default on creation: `process`).
    pub kind: Option<Kind>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Working directory to record only if the endpoint is created by this call (a
    /// default that never overwrites a stored value).
    pub default_cwd: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// Process start time (clock ticks since boot).
    pub pid_start: Option<u64>,
    /// The host to record; `None` = this machine ([`super::local_host`]).
    pub host: Option<String>,
    /// Whether it reads its mailbox (default on creation: true).
    pub mailbox: Option<bool>,
    /// Metadata keys to set (merged into the stored object).
    pub meta: serde_json::Map<String, serde_json::Value>,
}

impl Registration {
    /// The endpoint a registration that matches none creates, before [`Self::apply`]: id
    /// `self.id` or a new UUIDv7, cwd `self.default_cwd`, with a mailbox.
    pub(crate) fn new_endpoint(&self, now: i64) -> Endpoint {
        Endpoint {
            id: self
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            name: None,
            kind: Kind::default(),
            cwd: self.default_cwd.clone(),
            pid: None,
            pid_start: None,
            host: None,
            mailbox: true,
            meta: Default::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Applies this registration to `ep`, field-preserving (a `None` keeps the stored value;
    /// metadata keys merge), stamps the host (`self.host`, else this machine) and
    /// `updated_at`. The name is the backend's business (a move touches two endpoints).
    pub(crate) fn apply(&self, ep: &mut Endpoint, now: i64) {
        if let Some(k) = self.kind {
            ep.kind = k;
        }
        if self.cwd.is_some() {
            ep.cwd.clone_from(&self.cwd);
        }
        if self.pid.is_some() {
            ep.pid = self.pid;
            ep.pid_start = self.pid_start;
        }
        if let Some(m) = self.mailbox {
            ep.mailbox = m;
        }
        ep.host = Some(self.host.clone().unwrap_or_else(super::local_host));
        ep.meta
            .extend(self.meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        ep.updated_at = now;
    }
}

/// What [`super::Store::register`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    /// The endpoint as stored after the upsert.
    pub endpoint: Endpoint,
    /// True when the endpoint did not exist before.
    pub created: bool,
    /// Id of the endpoint the name was taken from, when it moved.
    pub name_taken_from: Option<String>,
}

/// Answer of [`super::Store::lookup`].
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Exactly one endpoint matched.
    Found(Endpoint),
    /// Nothing matched.
    Unknown,
    /// An id prefix matched several endpoints (all listed).
    Ambiguous(Vec<Endpoint>),
}

/// One row of the roster.
#[derive(Debug, Clone, Serialize)]
pub struct RosterEntry {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Messages queued or delivered-but-unacked for it.
    pub pending: u64,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Sender endpoint id.
    pub from: String,
    /// Recipient endpoint id.
    pub to: String,
    /// Conversation thread, if any.
    pub thread: Option<String>,
    /// Id of the message this answers, if any.
    pub reply_to: Option<String>,
    /// Notify or request.
    pub intent: Intent,
    /// MIME type of the body, e.g. `text/plain; charset=utf-8`.
    pub content_type: String,
    /// The body, at most the configured cap.
    pub body: Vec<u8>,
    /// When it stops being deliverable, ms since the epoch.
    pub expires_at: Option<i64>,
    /// `Some(d)`: stored `queued` but held for a hand-over already under way (a live
    /// socket): no fetch hands it out for `d`, until the hand-over ends it with
    /// [`super::Store::settle_hold`] or a live receiver takes it with
    /// [`super::Store::claim`]. A hold that lapses (the sender died) leaves the message to
    /// the mailbox. `None`: an ordinary mailbox message.
    pub hold: Option<Duration>,
}

/// The content type of text sent from the CLI and MCP tools.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A stored message as handed to a reader.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// UUIDv7.
    pub id: String,
    /// Sender endpoint id.
    pub from: String,
    /// Sender's name when it was sent, if it had one.
    pub from_name: Option<String>,
    /// Recipient endpoint id.
    pub to: String,
    /// Thread, if any.
    pub thread: Option<String>,
    /// Id of the message this answers, if any.
    pub reply_to: Option<String>,
    /// Notify or request.
    pub intent: Intent,
    /// MIME type of the body.
    pub content_type: String,
    /// The body. Serialized as a UTF-8 string (invalid bytes replaced by U+FFFD).
    #[serde(serialize_with = "body_as_text")]
    pub body: Vec<u8>,
    /// ms since the epoch.
    pub created_at: i64,
    /// ms since the epoch, if it expires.
    pub expires_at: Option<i64>,
    /// State after this fetch.
    pub state: State,
    /// How many times it has been handed out (more than 1 after a lease expired).
    pub deliveries: u32,
}

impl Message {
    /// The body as text (invalid UTF-8 replaced by U+FFFD).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

fn body_as_text<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

/// The truth about one message: where it is in queued → delivered → acked.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    /// Message id.
    pub id: String,
    /// Sender endpoint id.
    pub from: String,
    /// Recipient endpoint id.
    pub to: String,
    /// Recipient's current name, if any.
    pub to_name: Option<String>,
    /// Thread, if any.
    pub thread: Option<String>,
    /// Current state.
    pub state: State,
    /// ms since the epoch.
    pub created_at: i64,
    /// When it was first handed to a reader, ms since the epoch.
    pub delivered_at: Option<i64>,
    /// When the reader acked it, ms since the epoch.
    pub acked_at: Option<i64>,
    /// How many times it was handed out.
    pub deliveries: u32,
    /// When it expires, ms since the epoch.
    pub expires_at: Option<i64>,
    /// When an idle agent session was woken in place with it (route `inject`), ms since
    /// the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injected_at: Option<i64>,
}

/// The loop guard's counts ([`super::Store::loop_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoopCounts {
    /// Agent→agent messages on the thread since its last message from a human endpoint.
    pub thread_run: u64,
    /// Messages the sender sent in the window asked for.
    pub sent_since: u64,
}

/// Which messages a fetch or wait considers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only from this sender endpoint id.
    pub from: Option<String>,
    /// Only in this thread.
    pub thread: Option<String>,
    /// Only these message ids (exact).
    pub ids: Option<Vec<String>>,
    /// Only replies to this message id.
    pub reply_to: Option<String>,
    /// Never these message ids (exact): a waiter that already presented them waits for
    /// newer mail.
    pub exclude: Option<Vec<String>>,
}

/// A process, told apart from a later process with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start: u64,
}

/// A binding from an agent process to the endpoint of its session (DESIGN.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The agent process.
    pub process: ProcessRef,
    /// The session's endpoint id.
    pub endpoint_id: String,
    /// When it was recorded, ms since the epoch.
    pub created_at: i64,
}

/// What a fetch does to the messages it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchMode {
    /// Mark `delivered` under a lease; [`super::Store::ack`] later, or they come back when
    /// the lease expires.
    Deliver {
        /// Lease length.
        lease: Duration,
    },
    /// Deliver and ack in one transaction.
    Take,
    /// Change nothing.
    Peek,
}

/// A fetch request.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// At most this many messages (oldest first); at least 1.
    pub limit: usize,
    /// What to do to them.
    pub mode: FetchMode,
    /// Which to consider.
    pub filter: Filter,
}

/// Outcome of acking one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckOutcome {
    /// Now acked.
    Acked,
    /// Was acked before; nothing changed.
    AlreadyAcked,
    /// No such message.
    Unknown,
    /// The prefix matches several messages; nothing changed.
    Ambiguous,
    /// Addressed to someone else; nothing changed.
    NotYours,
}

/// One id's ack result.
#[derive(Debug, Clone, Serialize)]
pub struct AckResult {
    /// The id as given.
    pub id: String,
    /// What happened.
    pub outcome: AckOutcome,
}

/// What [`super::Store::gc`] deleted.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct GcReport {
    /// Acked messages older than the cutoff.
    pub acked_deleted: u64,
    /// Messages past their `expires_at`.
    pub expired_deleted: u64,
    /// Reservations past their `expires_at`.
    pub reservations_deleted: u64,
    /// Events recorded before the cutoff (on NATS: event records, one of which may hold
    /// several events).
    pub events_deleted: u64,
}

/// A cancellation flag for [`super::Store::wait_or_cancel`]: cloned into the waiting
/// thread, cancelled from anywhere (an MCP request the client cancelled). Cancelling wakes
/// every waiter of the process, which then look at their own flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    /// A flag not yet cancelled.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels: waits using this flag return (empty) at once.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        super::doorbell::wake_all();
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
