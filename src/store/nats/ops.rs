//! The store's semantics on JetStream, one async fn per [`Store`] method (the sync facade
//! in `mod.rs` runs them). Every state change of a message is one compare-and-set on its
//! receipt's revision ([`Inner::transition`]); what cannot be one CAS on NATS is said where
//! it happens, with what a crash in the middle leaves.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

mod events;
mod resv;
mod search;

use events::{EpWrite, Rec};

use super::keys::*;
use super::scan::{Raw, scan};
use super::{REQUEST_TIMEOUT, WRITE_DEADLINE};
use crate::clock::now_ms;
use crate::store::check_messages;
use crate::store::{
    AckOutcome, AckResult, Binding, Cancel, Endpoint, Error, Fetch, FetchMode, Filter, GcReport,
    INJECTED_HINT, Intent, Kind, Lookup, LoopCounts, MIN_PREFIX, Message, NewMessage, ProcessRef,
    Receipt, Registered, Registration, Result, RosterEntry, State, names,
};

/// Longest a waiter sleeps between looks when no doorbell rings. Shorter than SQLite's
/// 30 s: a doorbell published on another node before this process's subscription reached
/// that node is lost (a subscription lives as long as the store, so only the first wait
/// per recipient can meet this).
const BACKSTOP_POLL: Duration = Duration::from_secs(2);
/// How far the acked floor must move before it is written back to the cluster, so the
/// next process starts its looks there too.
const FLOOR_PERSIST_STEP: u64 = 16;
/// An uncommitted batch older than this is a sender that died mid-batch: gc removes it.
const BATCH_ABANDONED_MS: i64 = 10 * 60 * 1000;
/// CAS attempts on one key before giving up (each attempt re-reads the key).
const CAS_ATTEMPTS: usize = 64;
/// How long a send trusts an endpoint record it read (for the sender's and recipient's
/// names, display fields; existence never changes, endpoints are not deleted).
const ENDPOINT_CACHE: Duration = Duration::from_secs(2);

/// The receipt of a message whose state changed at least once (bucket `relay_rcpt`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rcpt {
    seq: u64,
    state: State,
    #[serde(default)]
    delivered_at: Option<i64>,
    #[serde(default)]
    acked_at: Option<i64>,
    #[serde(default)]
    deliveries: u32,
    /// Lease (delivered) or hold (queued) expiry, ms.
    #[serde(default)]
    lease_until: Option<i64>,
    #[serde(default)]
    injected_at: Option<i64>,
    /// Random per write: tells "my write landed but its ack was lost" from a rival's.
    #[serde(default)]
    token: u64,
}

impl Rcpt {
    fn initial(seq: u64, hold_until: Option<i64>) -> Rcpt {
        Rcpt {
            seq,
            state: State::Queued,
            delivered_at: None,
            acked_at: None,
            deliveries: 0,
            lease_until: hold_until,
            injected_at: None,
            token: 0,
        }
    }

    fn pending(&self, now: i64) -> bool {
        matches!(self.state, State::Queued | State::Delivered)
            && self.lease_until.is_none_or(|l| l <= now)
    }
}

/// A message's envelope, from its headers.
#[derive(Debug, Clone)]
struct Env {
    id: String,
    from: String,
    from_name: Option<String>,
    to: String,
    thread: Option<String>,
    reply_to: Option<String>,
    intent: Intent,
    content_type: String,
    created_at: i64,
    expires_at: Option<i64>,
    hold_until: Option<i64>,
    batch: Option<String>,
}

/// Header values carry any text: `%`, controls and non-ASCII are percent-encoded.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hget(h: &HeaderMap, k: &str) -> Option<String> {
    h.get(k).map(|v| percent_decode(v.as_str()))
}

fn hnum(h: &HeaderMap, k: &str) -> Option<i64> {
    h.get(k).and_then(|v| v.as_str().parse().ok())
}

impl Env {
    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", self.id.as_str());
        h.insert("Relay-Id", enc(&self.id));
        h.insert("Relay-From", enc(&self.from));
        h.insert("Relay-To", enc(&self.to));
        if let Some(n) = &self.from_name {
            h.insert("Relay-From-Name", enc(n));
        }
        if let Some(t) = &self.thread {
            h.insert("Relay-Thread", enc(t));
        }
        if let Some(r) = &self.reply_to {
            h.insert("Relay-Reply-To", enc(r));
        }
        h.insert("Relay-Intent", self.intent.as_str());
        h.insert("Relay-Content-Type", enc(&self.content_type));
        h.insert("Relay-Created", self.created_at.to_string());
        if let Some(e) = self.expires_at {
            h.insert("Relay-Expires", e.to_string());
        }
        if let Some(e) = self.hold_until {
            h.insert("Relay-Hold-Until", e.to_string());
        }
        if let Some(b) = &self.batch {
            h.insert("Relay-Batch", b.as_str());
        }
        h
    }

    fn parse(h: &HeaderMap) -> Option<Env> {
        Some(Env {
            id: hget(h, "Relay-Id")?,
            from: hget(h, "Relay-From")?,
            from_name: hget(h, "Relay-From-Name"),
            to: hget(h, "Relay-To")?,
            thread: hget(h, "Relay-Thread"),
            reply_to: hget(h, "Relay-Reply-To"),
            intent: hget(h, "Relay-Intent")
                .and_then(|i| i.parse().ok())
                .unwrap_or_default(),
            content_type: hget(h, "Relay-Content-Type").unwrap_or_default(),
            created_at: hnum(h, "Relay-Created")?,
            expires_at: hnum(h, "Relay-Expires"),
            hold_until: hnum(h, "Relay-Hold-Until"),
            batch: hget(h, "Relay-Batch"),
        })
    }

    fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    fn matches(&self, f: &Filter) -> bool {
        f.from.as_ref().is_none_or(|x| *x == self.from)
            && f.thread
                .as_ref()
                .is_none_or(|t| self.thread.as_ref() == Some(t))
            && f.ids.as_ref().is_none_or(|ids| ids.contains(&self.id))
            && f.reply_to
                .as_ref()
                .is_none_or(|r| self.reply_to.as_ref() == Some(r))
            && f.exclude.as_ref().is_none_or(|ex| !ex.contains(&self.id))
    }
}

/// The envelope of a scanned message; `None` (with a warning) for one relay did not write:
/// no relay headers, or headers that disagree with its subject.
fn envelope(raw: &Raw) -> Option<Env> {
    let Some(env) = Env::parse(&raw.headers) else {
        tracing::warn!(
            seq = raw.seq,
            "RELAY_MAIL message without relay headers; skipped"
        );
        return None;
    };
    // Every token of the subject comes from the envelope; a message whose headers say
    // otherwise (published by hand) could be shown to one endpoint and acked as another's.
    if raw.subject != mail_subject(&env.to, &env.from, env.thread.as_deref(), &env.id) {
        tracing::warn!(
            seq = raw.seq,
            subject = raw.subject,
            "RELAY_MAIL message whose headers do not match its subject; skipped"
        );
        return None;
    }
    Some(env)
}

/// One message with its receipt as last read.
#[derive(Debug, Clone)]
struct Item {
    seq: u64,
    env: Env,
    body: Bytes,
    rcpt: Option<(Rcpt, u64)>,
}

impl Item {
    fn current(&self) -> Rcpt {
        match &self.rcpt {
            Some((r, _)) => r.clone(),
            None => Rcpt::initial(self.seq, self.env.hold_until),
        }
    }

    fn message(&self, r: &Rcpt) -> Message {
        Message {
            id: self.env.id.clone(),
            from: self.env.from.clone(),
            from_name: self.env.from_name.clone(),
            to: self.env.to.clone(),
            thread: self.env.thread.clone(),
            reply_to: self.env.reply_to.clone(),
            intent: self.env.intent,
            content_type: self.env.content_type.clone(),
            body: self.body.to_vec(),
            created_at: self.env.created_at,
            expires_at: self.env.expires_at,
            state: r.state,
            deliveries: r.deliveries,
        }
    }
}

fn token() -> u64 {
    let b = uuid::Uuid::now_v7().into_bytes();
    u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()) | 1
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 UTC for a time in ms since the epoch (the batch get's `start_time`).
fn rfc3339(ms_since_epoch: i64) -> String {
    let secs = ms_since_epoch.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Whether a bucket lookup failed because the bucket's stream does not exist (and not
/// for a timeout or a lost node).
fn bucket_missing(e: &async_nats::jetstream::context::KeyValueError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::context::GetStreamError>())
        .is_some_and(|g| {
            matches!(
                g.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            )
        })
}

/// A binding's value.
#[derive(Debug, Serialize, Deserialize)]
struct BindValue {
    endpoint_id: String,
    created_at: i64,
}

/// The connection, the stream and the buckets, and what this process wrote.
pub struct Inner {
    pub client: async_nats::Client,
    js: jetstream::Context,
    mail: stream::Stream,
    rcpt_stream: stream::Stream,
    eps: kv::Store,
    ep_stream: stream::Stream,
    /// The event log (ops/events.rs).
    events: stream::Stream,
    /// The event log's bell, once a wait made it (ops/events.rs).
    ev_bell: Mutex<Option<tokio::sync::watch::Receiver<u64>>>,
    /// How far the event log is known to have copied its sources (ops/events.rs).
    copied: events::Copied,
    /// The server URLs, credentials redacted (for errors).
    pub urls: String,
    /// The body cap: the configured one, lowered to fit the server's `max_payload`.
    pub max_body: usize,
    host: String,
    /// Batches known committed (a commit is never undone).
    committed: Mutex<HashSet<String>>,
    /// Per recipient: (floor, last written): every message at or below the floor is acked
    /// (acked is final), so a look starts above it instead of re-reading the recipient's
    /// whole history. Loaded from `floor.<to>` in `relay_ep` on first use.
    floors: Mutex<HashMap<String, (u64, u64)>>,
    /// Which `RELAY_MAIL` the floors belong to: its creation time (ns). A floor saved for a
    /// stream that was since deleted and created again (numbering from 1) is ignored.
    mail_epoch: String,
    /// Per recipient: a doorbell subscription kept for the store's life, counting rings.
    bells: Mutex<HashMap<String, tokio::sync::watch::Receiver<u64>>>,
    /// Endpoint records a send read recently (see [`ENDPOINT_CACHE`]).
    known: Mutex<HashMap<String, (Endpoint, Instant)>>,
    /// Most mail messages one `history` call reads (`RELAY_NATS_SEARCH_SCAN`).
    search_scan: u64,
}

/// One compare-and-set write to a bucket: create when `prev` is `None`, else update from
/// revision `prev`. A rival's write is [`Cas::Conflict`]; anything else is worth another try.
async fn cas_write(kv: &kv::Store, key: &str, val: &Bytes, prev: Option<u64>) -> Attempt<Cas> {
    let res = match prev {
        None => kv.create(key, val.clone()).await.map_err(|e| {
            let conflict = matches!(e.kind(), kv::CreateErrorKind::AlreadyExists);
            (conflict, e.to_string())
        }),
        Some(rev) => kv.update(key, val.clone(), rev).await.map_err(|e| {
            let conflict = matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision);
            (conflict, e.to_string())
        }),
    };
    match res {
        Ok(_) => Attempt::Done(Cas::Done),
        Err((true, _)) => Attempt::Done(Cas::Conflict),
        Err((false, e)) => Attempt::Again(e),
    }
}

/// One try of a request that [`Inner::retrying`] repeats.
enum Attempt<T> {
    /// An answer (including "there is none").
    Done(T),
    /// A failure worth trying again, in the server's or client's words.
    Again(String),
}

/// The outcome of one compare-and-set.
enum Cas {
    Done,
    Conflict,
}

impl Inner {
    /// A store error naming the URLs; when the client has lost its connection it says
    /// so (a timeout alone does not tell a cluster that is down from a slow one).
    pub fn err(&self, reason: impl Into<String>) -> Error {
        let mut reason = reason.into();
        if !matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        ) {
            reason.push_str(&format!(
                "; the connection to the cluster is lost (writes and reads retry for {} s)",
                WRITE_DEADLINE.as_secs()
            ));
        }
        Error::Nats {
            urls: self.urls.clone(),
            reason,
        }
    }

    /// Finds or creates the stream and buckets (`RELAY_NATS_REPLICAS`, else 3 on a cluster
    /// and 1 on a single server).
    pub async fn setup(
        client: async_nats::Client,
        urls: String,
        max_body: usize,
        host: String,
    ) -> std::result::Result<Inner, String> {
        let info = client.server_info();
        if !info.jetstream {
            return Err(format!(
                "server {} (nats-server {}) has JetStream off; start it with -js or a jetstream {{}} block",
                info.server_name, info.version
            ));
        }
        let mut v = info
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if (major, minor) < (2, 11) {
            return Err(format!(
                "nats-server {} is too old: relay needs 2.11 or newer (batch direct get)",
                info.version
            ));
        }
        // Used only when creating: 3 on any cluster (not the number of nodes that happen
        // to be up right now), 1 on a single server.
        let replicas = match std::env::var("RELAY_NATS_REPLICAS").ok() {
            Some(r) if !r.is_empty() => match r.parse::<usize>() {
                Ok(n @ 1..=5) => n,
                _ => return Err(format!("RELAY_NATS_REPLICAS '{r}' is not 1 to 5")),
            },
            _ if info.cluster.is_some() => 3,
            _ => 1,
        };
        let search_scan = search::scan_bound_from_env()?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let started = Instant::now();
        let mail = loop {
            let r = js
                .get_or_create_stream(stream::Config {
                    name: MAIL_STREAM.into(),
                    subjects: vec![format!("{MAIL_PREFIX}.>")],
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    allow_direct: true,
                    duplicate_window: Duration::from_secs(120),
                    description: Some("relay mail (docs/nats.md)".into()),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(s) => break s,
                Err(e) if started.elapsed() < WRITE_DEADLINE => {
                    tracing::debug!("creating {MAIL_STREAM}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("cannot create stream {MAIL_STREAM}: {e}")),
            }
        };
        let bucket = |name: &'static str, history: i64| {
            let js = js.clone();
            async move {
                loop {
                    // Create only what is certainly missing: a lookup that timed out (a
                    // node lost mid-request) is asked again, never taken for "not there".
                    let got = match js.get_key_value(name).await {
                        Ok(s) => Ok((s, false)),
                        Err(e) if bucket_missing(&e) => js
                            .create_key_value(kv::Config {
                                bucket: name.into(),
                                history,
                                num_replicas: replicas,
                                storage: stream::StorageType::File,
                                description: "relay (docs/nats.md)".into(),
                                ..Default::default()
                            })
                            .await
                            .map(|s| (s, true))
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match got {
                        Ok(s) => return Ok(s),
                        Err(e) if started.elapsed() < WRITE_DEADLINE => {
                            tracing::debug!("bucket {name}: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => {
                            return Err(format!(
                                "cannot open or create bucket {name} ({replicas} replicas; \
                                 RELAY_NATS_REPLICAS sets another count): {e}"
                            ));
                        }
                    }
                }
            }
        };
        // Receipts keep revisions for the event log's copy (ops/events.rs); their readers
        // take a key's last one.
        let (rcpt, rcpt_new) = bucket(RCPT_BUCKET, events::RCPT_HISTORY).await?;
        let (eps, eps_new) = bucket(EP_BUCKET, 1).await?;
        events::raise_rcpt_history(&js, &rcpt).await;
        let next_of = |s: &stream::Stream| s.cached_info().state.last_sequence + 1;
        let events = events::setup_stream(
            &js,
            replicas,
            [next_of(&mail), next_of(&rcpt.stream), next_of(&eps.stream)],
            started,
        )
        .await?;
        // A bucket made here beside a mail stream that already holds mail was deleted by
        // someone: say what that means instead of carrying on silently.
        let held = mail.cached_info().state.messages;
        if held > 0 && rcpt_new {
            tracing::warn!(
                "bucket {RCPT_BUCKET} was missing while {MAIL_STREAM} holds {held} messages; \
                 created it empty: every receipt is gone, so delivered and acked mail reads as \
                 queued again"
            );
        }
        if held > 0 && eps_new {
            tracing::warn!(
                "bucket {EP_BUCKET} was missing while {MAIL_STREAM} holds {held} messages; \
                 created it empty: every endpoint and name is gone (register them again)"
            );
        }
        // The buckets' own streams, for reads from their leaders.
        let rcpt_stream = rcpt.stream.clone();
        let ep_stream = eps.stream.clone();
        let mail_epoch = mail
            .cached_info()
            .created
            .unix_timestamp_nanos()
            .to_string();
        // Room for the envelope headers below the server's payload limit.
        let cap = info.max_payload.saturating_sub(16 * 1024).max(1024);
        if max_body > cap {
            tracing::warn!(
                "RELAY_MAX_BODY {max_body} is above what the server takes (max_payload {} less \
                 16 KiB of headers); bodies are capped at {cap} bytes",
                info.max_payload
            );
        }
        Ok(Inner {
            client,
            js,
            mail,
            rcpt_stream,
            eps,
            ep_stream,
            events,
            ev_bell: Mutex::new(None),
            copied: events::Copied::default(),
            urls,
            max_body: max_body.min(cap),
            host,
            committed: Mutex::new(HashSet::new()),
            floors: Mutex::new(HashMap::new()),
            mail_epoch,
            bells: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            search_scan,
        })
    }

    /// The last message on `subject` as the stream's leader has it (`None`: there is none).
    /// Transient failures — a node gone, a leader election, a timeout — are retried until
    /// [`WRITE_DEADLINE`].
    async fn read_last(
        &self,
        stream: &stream::Stream,
        subject: &str,
        what: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>> {
        self.retrying(&format!("reading {what}"), || async {
            match stream.get_last_raw_message_by_subject(subject).await {
                Ok(m) => Attempt::Done(Some(m)),
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                    ) =>
                {
                    Attempt::Done(None)
                }
                Err(e) => Attempt::Again(e.to_string()),
            }
        })
        .await
    }

    /// Runs `attempt` until it is done; an attempt that failed in a way worth trying again
    /// (a node gone, a leader election, a timeout) is retried every 100 ms until
    /// [`WRITE_DEADLINE`], then reported as `what: <the last failure>`.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let started = Instant::now();
        loop {
            match attempt().await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Again(e) if started.elapsed() < WRITE_DEADLINE => {
                    tracing::debug!("{what}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Attempt::Again(e) => return Err(self.err(format!("{what}: {e}"))),
            }
        }
    }

    /// A batch scan ([`scan`]), retried like [`Inner::read_last`].
    async fn scan_once(
        &self,
        stream: &str,
        filter: &str,
        limit: Option<usize>,
        start_time: Option<&str>,
    ) -> Result<Vec<Raw>> {
        self.scan_from(stream, filter, 1, limit, start_time).await
    }

    /// [`Inner::scan_once`] from sequence `from` on.
    async fn scan_from(
        &self,
        stream: &str,
        filter: &str,
        from: u64,
        limit: Option<usize>,
        start_time: Option<&str>,
    ) -> Result<Vec<Raw>> {
        self.retrying(&format!("scanning {stream}"), || async {
            match scan(
                &self.client,
                stream,
                filter,
                from,
                limit,
                start_time,
                REQUEST_TIMEOUT,
            )
            .await
            {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Again(e.0),
            }
        })
        .await
    }

    /// A whole scan (no fence: for listings where a replica a few milliseconds behind is
    /// harmless — roster counts, gc, prefix lookups, the loop guard).
    async fn scan(&self, stream: &str, filter: &str) -> Result<Vec<Raw>> {
        self.scan_once(stream, filter, None, None).await
    }

    /// The first message on `filter` at or after `seq`, from the stream's leader.
    async fn read_next(&self, filter: &str, seq: u64) -> Result<Option<Raw>> {
        self.next_on(&self.mail, "reading mail", filter, seq).await
    }

    /// The first message of `stream` on `filter` at or after `seq`, from its leader;
    /// `what` names the read in errors.
    pub(super) async fn next_on(
        &self,
        stream: &stream::Stream,
        what: &str,
        filter: &str,
        seq: u64,
    ) -> Result<Option<Raw>> {
        self.retrying(what, || async {
            let got = stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(filter)
                .send()
                .await;
            match got {
                Ok(m) => Attempt::Done(Some(Raw {
                    seq: m.sequence,
                    subject: m.subject.to_string(),
                    headers: m.headers,
                    payload: m.payload,
                    pending: None,
                })),
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound
                    ) =>
                {
                    Attempt::Done(None)
                }
                Err(e) => Attempt::Again(e.to_string()),
            }
        })
        .await
    }

    /// This recipient's acked floor (loaded from the cluster the first time).
    async fn floor(&self, to: &str) -> Result<u64> {
        if let Some((f, _)) = self
            .floors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(to)
        {
            return Ok(*f);
        }
        let subject = format!("$KV.{EP_BUCKET}.{}", floor_key(to));
        let saved = self
            .kv_now(&self.ep_stream, &subject, "a floor")
            .await?
            .map(|(v, _)| String::from_utf8_lossy(&v).into_owned());
        let stored = match saved.as_deref().map(|v| v.split_once(' ')) {
            None => 0,
            Some(Some((floor, epoch))) if epoch == self.mail_epoch => {
                match floor.parse::<u64>() {
                    // A floor past the stream's end was not computed from it: ignore it (a
                    // stray write would otherwise hide every message).
                    Ok(f) if f <= self.mail_last().await? => f,
                    _ => {
                        tracing::warn!(to, value = saved, "acked floor out of range; ignored");
                        0
                    }
                }
            }
            Some(_) => 0,
        };
        let mut f = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        let e = f.entry(to.to_string()).or_insert((stored, stored));
        Ok(e.0)
    }

    /// The mail stream's last sequence now (from its leader).
    async fn mail_last(&self) -> Result<u64> {
        self.retrying(&format!("reading {MAIL_STREAM}'s info"), || async {
            match self.mail.get_info().await {
                Ok(i) => Attempt::Done(i.state.last_sequence),
                Err(e) => Attempt::Again(e.to_string()),
            }
        })
        .await
    }

    /// The mail stream's first and last sequence now (from its leader).
    async fn mail_bounds(&self) -> Result<(u64, u64)> {
        self.retrying(&format!("reading {MAIL_STREAM}'s info"), || async {
            match self.mail.get_info().await {
                Ok(i) => Attempt::Done((i.state.first_sequence, i.state.last_sequence)),
                Err(e) => Attempt::Again(e.to_string()),
            }
        })
        .await
    }

    /// Raises the floor (never lowers it) and writes it back every [`FLOOR_PERSIST_STEP`].
    /// Any floor a reader computed is true — acked is final — so concurrent writers need no
    /// CAS: the key holds one true floor or another.
    async fn raise_floor(&self, to: &str, floor: u64) {
        let persist = {
            let mut f = self.floors.lock().unwrap_or_else(|e| e.into_inner());
            let e = f.entry(to.to_string()).or_default();
            e.0 = e.0.max(floor);
            if e.0 >= e.1 + FLOOR_PERSIST_STEP {
                e.1 = e.0;
                Some(e.0)
            } else {
                None
            }
        };
        if let Some(v) = persist
            && let Err(e) = self
                .eps
                .put(
                    floor_key(to),
                    Bytes::from(format!("{v} {}", self.mail_epoch)),
                )
                .await
        {
            tracing::debug!(to, "writing the acked floor: {e}");
        }
    }

    async fn is_committed(&self, batch: &str) -> Result<bool> {
        if self
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(batch)
        {
            return Ok(true);
        }
        let subject = format!("$KV.{EP_BUCKET}.{}", batch_key(batch));
        match self.read_last(&self.ep_stream, &subject, "a batch").await? {
            Some(m) if m.headers.get("KV-Operation").is_none() => {
                self.committed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(batch.to_string());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Items from scanned mail: envelopes parsed, uncommitted batches dropped.
    async fn items(
        &self,
        raws: Vec<Raw>,
        rcpts: &HashMap<String, (Rcpt, u64)>,
    ) -> Result<Vec<Item>> {
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let Some(env) = envelope(&raw) else {
                continue;
            };
            if let Some(b) = &env.batch
                && !self.is_committed(b).await?
            {
                continue;
            }
            let rcpt = rcpts.get(&rcpt_key(&env.to, &env.id)).cloned();
            out.push(Item {
                seq: raw.seq,
                env,
                body: raw.payload,
                rcpt,
            });
        }
        Ok(out)
    }

    /// Receipts from a scan of the receipts bucket, by key.
    fn rcpt_map(&self, raws: Vec<Raw>) -> HashMap<String, (Rcpt, u64)> {
        let mut m = HashMap::with_capacity(raws.len());
        for raw in raws {
            if raw.is_kv_delete() {
                continue;
            }
            let Some(key) = key_of(RCPT_BUCKET, &raw.subject) else {
                continue;
            };
            match serde_json::from_slice::<Rcpt>(&raw.payload) {
                Ok(r) => {
                    m.insert(key.to_string(), (r, raw.seq));
                }
                Err(e) => tracing::warn!(key, "unreadable receipt: {e}"),
            }
        }
        m
    }

    /// Every message to `to`, oldest first, with its receipt.
    async fn mailbox(&self, to: &str) -> Result<Vec<Item>> {
        let floor = self.floor(to).await?;
        let filter = mail_to(to);
        // One batch read from whichever replica answers, then the leader for anything that
        // replica had not got yet: the listing is as current as the leader, so a process
        // sees every send acknowledged before it looked, wherever it was made.
        let head = self
            .scan_from(MAIL_STREAM, &filter, floor.saturating_add(1), None, None)
            .await?;
        let after = head
            .last()
            .map_or(floor.saturating_add(1), |r| r.seq.saturating_add(1));
        let mut seqs: Vec<u64> = head.iter().map(|r| r.seq).collect();
        // The leader's tail and the receipts of what the batch read found, at once.
        let tail = async {
            let mut tail = Vec::new();
            let mut next = after;
            while let Some(r) = self.read_next(&filter, next).await? {
                next = r.seq + 1;
                tail.push(r);
            }
            Ok::<_, Error>(tail)
        };
        let (tail, items) = futures_util::future::join(tail, self.with_receipts(head)).await;
        let tail = tail?;
        seqs.extend(tail.iter().map(|r| r.seq));
        let mut items = items?;
        items.extend(self.with_receipts(tail).await?);
        // Raise the floor over the acked prefix. A message that is not an item here (an
        // uncommitted batch, which may still commit) stops it.
        let mut new_floor = floor;
        let mut it = items.iter().peekable();
        for seq in seqs {
            match it.peek() {
                Some(i) if i.seq == seq && i.current().state == State::Acked => {
                    new_floor = seq;
                    it.next();
                }
                _ => break,
            }
        }
        if new_floor > floor {
            self.raise_floor(to, new_floor).await;
        }
        Ok(items)
    }

    /// Items of `raws` with their receipts, read from the leader all at once.
    async fn with_receipts(&self, raws: Vec<Raw>) -> Result<Vec<Item>> {
        let mut items = self.items(raws, &HashMap::new()).await?;
        let rcpts = futures_util::future::join_all(
            items.iter().map(|it| self.rcpt_now(&it.env.to, &it.env.id)),
        )
        .await;
        for (it, r) in items.iter_mut().zip(rcpts) {
            it.rcpt = r?;
        }
        Ok(items)
    }

    /// The receipt of `to`/`id` as the stream leader has it now.
    async fn rcpt_now(&self, to: &str, id: &str) -> Result<Option<(Rcpt, u64)>> {
        let subject = format!("$KV.{RCPT_BUCKET}.{}", rcpt_key(to, id));
        match self
            .read_last(&self.rcpt_stream, &subject, "a receipt")
            .await?
        {
            Some(m) if m.headers.get("KV-Operation").is_some() => Ok(None),
            Some(m) => match serde_json::from_slice::<Rcpt>(&m.payload) {
                Ok(r) => Ok(Some((r, m.sequence))),
                // Not relay's writing (a corrupted entry, or another client of the account):
                // the message counts as queued, so the next claim overwrites the entry by
                // CAS. At worst it is shown again — never hidden for good.
                Err(e) => {
                    tracing::warn!(
                        id,
                        "unreadable receipt ({e}); treating the message as queued"
                    );
                    Ok(Some((Rcpt::initial(0, None), m.sequence)))
                }
            },
            None => Ok(None),
        }
    }

    /// Messages whose subject matches `filter`, read from the stream leader, at most `limit`.
    async fn mail_by(&self, filter: &str, limit: usize) -> Result<Vec<Item>> {
        let raws = if limit == 1 {
            match self.read_last(&self.mail, filter, "mail").await? {
                Some(m) => vec![Raw {
                    seq: m.sequence,
                    subject: m.subject.to_string(),
                    headers: m.headers,
                    payload: m.payload,
                    pending: None,
                }],
                None => Vec::new(),
            }
        } else {
            self.scan_once(MAIL_STREAM, filter, Some(limit), None)
                .await?
        };
        let mut items = self.items(raws, &HashMap::new()).await?;
        for it in &mut items {
            it.rcpt = self.rcpt_now(&it.env.to, &it.env.id).await?;
        }
        Ok(items)
    }

    /// The message `id` to `to`, if there is one.
    async fn item(&self, to: &str, id: &str) -> Result<Option<Item>> {
        let filter = format!("{MAIL_PREFIX}.{}.*.*.{}", tok(to), tok(id));
        Ok(self.mail_by(&filter, 1).await?.pop())
    }

    /// One compare-and-set write of a receipt; transient failures (a lost node, a leader
    /// election, a timeout) are retried until [`WRITE_DEADLINE`].
    async fn put_rcpt(
        &self,
        to: &str,
        id: &str,
        prev: Option<u64>,
        r: &Rcpt,
        recs: &[Rec],
    ) -> Result<Cas> {
        let key = rcpt_key(to, id);
        let val = Bytes::from(serde_json::to_vec(r).unwrap_or_default());
        let headers = events::ev_headers(recs).unwrap_or_default();
        let retried = std::sync::atomic::AtomicBool::new(false);
        let cas = self
            .retrying(&format!("writing receipt {id}"), || async {
                // The write carries the events it is (ops/events.rs).
                let a = match events::cas_publish(&self.js, RCPT_BUCKET, &key, &val, prev, &headers)
                    .await
                {
                    Attempt::Done((c, _)) => Attempt::Done(c),
                    Attempt::Again(e) => Attempt::Again(e),
                };
                if matches!(a, Attempt::Again(_)) {
                    retried.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                a
            })
            .await?;
        if let Cas::Conflict = cas
            && retried.load(std::sync::atomic::Ordering::Relaxed)
            && let Some((cur, _)) = self.rcpt_now(to, id).await?
            && cur.token == r.token
        {
            // Our earlier attempt landed; only its answer was lost.
            return Ok(Cas::Done);
        }
        Ok(cas)
    }

    /// Changes `item`'s receipt by `f` (given the current receipt and now; `None` = no
    /// change), by CAS, re-reading on conflict. Returns the new receipt when changed, and
    /// the receipt last seen either way.
    async fn transition(
        &self,
        item: &Item,
        f: impl Fn(&Rcpt, i64) -> Option<Rcpt>,
    ) -> Result<(Option<Rcpt>, Rcpt)> {
        let (to, id) = (item.env.to.as_str(), item.env.id.as_str());
        let mut cur = item.rcpt.clone();
        if cur.is_none() {
            // The message's first change: its `queued` record first (ops/events.rs).
            self.queued_first(item.seq).await;
        }
        for _ in 0..CAS_ATTEMPTS {
            let base = match &cur {
                Some((r, _)) => r.clone(),
                None => Rcpt::initial(item.seq, item.env.hold_until),
            };
            let now = now_ms();
            let Some(mut next) = f(&base, now) else {
                return Ok((None, base));
            };
            next.seq = item.seq;
            next.token = token();
            let recs = events::rcpt_recs(&item.env, &base, &next, now);
            match self
                .put_rcpt(to, id, cur.as_ref().map(|c| c.1), &next, &recs)
                .await?
            {
                Cas::Done => return Ok((Some(next.clone()), next)),
                Cas::Conflict => cur = self.rcpt_now(to, id).await?,
            }
        }
        Err(self.err(format!(
            "receipt {id}: {CAS_ATTEMPTS} compare-and-set attempts lost to other writers"
        )))
    }

    async fn ring(&self, to: &str, what: &str) {
        if let Err(e) = self
            .client
            .publish(bell(to), Bytes::from(what.to_string()))
            .await
        {
            tracing::debug!(to, "doorbell: {e}");
        }
    }

    // ---- endpoints ----

    fn parse_ep(&self, payload: &[u8]) -> Option<Endpoint> {
        serde_json::from_slice(payload).ok()
    }

    /// An endpoint record as the leader has it, with its revision.
    async fn ep_now(&self, id: &str) -> Result<Option<(Endpoint, u64)>> {
        let subject = format!("$KV.{EP_BUCKET}.{}", ep_key(id));
        self.kv_now(&self.ep_stream, &subject, "endpoint")
            .await
            .map(|o| o.and_then(|(p, rev)| self.parse_ep(&p).map(|e| (e, rev))))
    }

    async fn kv_now(
        &self,
        stream: &stream::Stream,
        subject: &str,
        what: &str,
    ) -> Result<Option<(Bytes, u64)>> {
        match self.read_last(stream, subject, what).await? {
            Some(m) if m.headers.get("KV-Operation").is_some() => Ok(None),
            Some(m) => Ok(Some((m.payload, m.sequence))),
            None => Ok(None),
        }
    }

    /// The id a name key points to, with its revision.
    async fn name_now(&self, name: &str) -> Result<Option<(String, u64)>> {
        let subject = format!("$KV.{EP_BUCKET}.{}", name_key(name));
        Ok(self
            .kv_now(&self.ep_stream, &subject, "name")
            .await?
            .map(|(p, rev)| (String::from_utf8_lossy(&p).into_owned(), rev)))
    }

    /// `ep` with its name kept only if the name key points back at it (the name key is the
    /// truth; an endpoint record's name is a copy that a move may have left behind).
    async fn reconciled(&self, mut ep: Endpoint) -> Result<Endpoint> {
        if let Some(n) = ep.name.clone()
            && self.name_now(&n).await?.map(|(id, _)| id) != Some(ep.id.clone())
        {
            ep.name = None;
        }
        Ok(ep)
    }

    /// CAS write to the endpoints bucket (`prev` None = create). Transient errors retried.
    async fn put_ep_key(&self, key: &str, val: Bytes, prev: Option<u64>) -> Result<Cas> {
        self.retrying(&format!("writing {key}"), || {
            cas_write(&self.eps, key, &val, prev)
        })
        .await
    }

    /// Changes an endpoint record by `f` (false = no change) by CAS. Returns whether it
    /// exists.
    async fn update_ep(&self, id: &str, f: impl Fn(&mut Endpoint) -> bool) -> Result<bool> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut ep, rev)) = self.ep_now(id).await? else {
                return Ok(false);
            };
            let name = ep.name.clone();
            if !f(&mut ep) {
                return Ok(true);
            }
            let recs: Vec<Rec> = (ep.name != name)
                .then(|| {
                    let new = ep.name.as_deref().unwrap_or_default();
                    Rec::endpoint(crate::store::EventKind::Renamed, now_ms(), id, Some(new))
                })
                .into_iter()
                .collect();
            let val = Bytes::from(serde_json::to_vec(&ep).unwrap_or_default());
            if let Cas::Done = self
                .ep_write_ev(&ep_key(id), val, EpWrite::Cas(Some(rev)), &recs)
                .await?
            {
                return Ok(true);
            }
        }
        Err(self.err(format!("endpoint {id}: too many concurrent writers")))
    }

    pub async fn register(&self, reg: &Registration) -> Result<Registered> {
        if let Some(name) = &reg.name {
            names::check_name(name)?;
        }
        if let Some(id) = &reg.id {
            names::check_id(id)?;
        }
        for _ in 0..CAS_ATTEMPTS {
            let existing = match (&reg.id, &reg.name) {
                (Some(id), _) => self.ep_now(id).await?,
                (None, Some(name)) => match self.name_now(name).await? {
                    Some((id, _)) => self
                        .ep_now(&id)
                        .await?
                        .filter(|(e, _)| e.name.as_deref() == Some(name.as_str())),
                    None => None,
                },
                (None, None) => None,
            };
            let now = now_ms();
            let created = existing.is_none();
            let prev_rev = existing.as_ref().map(|(_, r)| *r);
            let mut ep = match existing {
                Some((e, _)) => self.reconciled(e).await?,
                None => reg.new_endpoint(now),
            };
            let old_name = ep.name.clone();
            let mut name_taken_from = None;
            if let Some(name) = &reg.name {
                // The move: one CAS on the name key. A crash after it and before the
                // endpoint write below leaves the name pointing at a record that does not
                // carry it — read as nobody's name until `register` runs again.
                let cur = self.name_now(name).await?;
                if let Some((holder, _)) = &cur
                    && *holder != ep.id
                    && let Some((h, _)) = self.ep_now(holder).await?
                    && h.name.as_deref() == Some(name.as_str())
                {
                    name_taken_from = Some(holder.clone());
                }
                if cur.as_ref().map(|(h, _)| h.as_str()) != Some(ep.id.as_str()) {
                    let val = Bytes::from(ep.id.clone().into_bytes());
                    if let Cas::Conflict = self
                        .put_ep_key(&name_key(name), val, cur.map(|(_, r)| r))
                        .await?
                    {
                        continue;
                    }
                }
                ep.name = Some(name.clone());
            }
            reg.apply(&mut ep, now);
            // The event this write is: created (with its name), or its name changed.
            let recs: Vec<Rec> = if created {
                vec![Rec::endpoint(
                    crate::store::EventKind::Registered,
                    now,
                    &ep.id,
                    ep.name.as_deref(),
                )]
            } else if ep.name != old_name {
                let new = ep.name.as_deref().unwrap_or_default();
                vec![Rec::endpoint(
                    crate::store::EventKind::Renamed,
                    now,
                    &ep.id,
                    Some(new),
                )]
            } else {
                Vec::new()
            };
            let val = Bytes::from(serde_json::to_vec(&ep).unwrap_or_default());
            if let Cas::Conflict = self
                .ep_write_ev(&ep_key(&ep.id), val, EpWrite::Cas(prev_rev), &recs)
                .await?
            {
                continue;
            }
            if let Some(holder) = &name_taken_from {
                let name = reg.name.clone();
                self.update_ep(holder, |h| {
                    if h.name == name {
                        h.name = None;
                        h.updated_at = now_ms();
                        true
                    } else {
                        false
                    }
                })
                .await?;
            }
            if let Some(old) = old_name
                && reg.name.as_ref().is_some_and(|n| *n != old)
                && let Some((holder, rev)) = self.name_now(&old).await?
                && holder == ep.id
            {
                // Free the name this endpoint gave up (best effort: a stale key is ignored
                // by readers anyway, since the record no longer carries it).
                let _ = self
                    .eps
                    .delete_expect_revision(name_key(&old), Some(rev))
                    .await;
            }
            return Ok(Registered {
                endpoint: ep,
                created,
                name_taken_from,
            });
        }
        Err(self.err("register: too many concurrent writers"))
    }

    /// Every endpoint, names reconciled, ordered by name (unnamed last) then id.
    async fn endpoints(&self) -> Result<Vec<Endpoint>> {
        let (eps, names_) = futures_util::future::join(
            self.scan(&format!("KV_{EP_BUCKET}"), &format!("$KV.{EP_BUCKET}.ep.>")),
            self.scan(
                &format!("KV_{EP_BUCKET}"),
                &format!("$KV.{EP_BUCKET}.name.>"),
            ),
        )
        .await;
        let mut by_name: HashMap<String, String> = HashMap::new();
        for r in names_? {
            if r.is_kv_delete() {
                continue;
            }
            if let Some(k) = key_of(EP_BUCKET, &r.subject).and_then(|k| k.strip_prefix("name."))
                && let Some(n) = untok(k)
            {
                by_name.insert(n, String::from_utf8_lossy(&r.payload).into_owned());
            }
        }
        let mut out: Vec<Endpoint> = eps?
            .into_iter()
            .filter(|r| !r.is_kv_delete())
            .filter_map(|r| self.parse_ep(&r.payload))
            .map(|mut e| {
                if let Some(n) = &e.name
                    && by_name.get(n) != Some(&e.id)
                {
                    e.name = None;
                }
                e
            })
            .collect();
        out.sort_by(|a, b| {
            (a.name.is_none(), &a.name, &a.id).cmp(&(b.name.is_none(), &b.name, &b.id))
        });
        Ok(out)
    }

    pub async fn lookup(&self, q: &str) -> Result<Lookup> {
        if q.is_empty() {
            return Ok(Lookup::Unknown);
        }
        if let Some((id, _)) = self.name_now(q).await?
            && let Some((e, _)) = self.ep_now(&id).await?
            && e.name.as_deref() == Some(q)
        {
            return Ok(Lookup::Found(e));
        }
        if let Some((e, _)) = self.ep_now(q).await? {
            return Ok(Lookup::Found(self.reconciled(e).await?));
        }
        if q.len() < MIN_PREFIX {
            return Ok(Lookup::Unknown);
        }
        let mut m: Vec<Endpoint> = self
            .endpoints()
            .await?
            .into_iter()
            .filter(|e| e.id.starts_with(q))
            .collect();
        m.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(match m.len() {
            0 => Lookup::Unknown,
            1 => Lookup::Found(m.remove(0)),
            _ => Lookup::Ambiguous(m),
        })
    }

    pub async fn roster(&self) -> Result<Vec<RosterEntry>> {
        let eps = self.endpoints().await?;
        let (mail, rc) = futures_util::future::join(
            self.scan(MAIL_STREAM, &format!("{MAIL_PREFIX}.>")),
            self.scan(
                &format!("KV_{RCPT_BUCKET}"),
                &format!("$KV.{RCPT_BUCKET}.>"),
            ),
        )
        .await;
        let rcpts = self.rcpt_map(rc?);
        let items = self.items(mail?, &rcpts).await?;
        let now = now_ms();
        let mut counts: HashMap<String, u64> = HashMap::new();
        for it in items {
            if it.current().state != State::Acked && !it.env.expired(now) {
                *counts.entry(it.env.to.clone()).or_default() += 1;
            }
        }
        Ok(eps
            .into_iter()
            .map(|e| RosterEntry {
                pending: counts.get(&e.id).copied().unwrap_or(0),
                endpoint: e,
            })
            .collect())
    }

    // ---- mail ----

    /// Publishes messages as a pipeline: every publish goes out before any acknowledgement
    /// is awaited, all acknowledgements share one [`REQUEST_TIMEOUT`], and the ones that did
    /// not come are published again together (same `Nats-Msg-Id`: stored once) until
    /// [`WRITE_DEADLINE`]. So a lost leader costs one timeout per round, not one per
    /// message. Returns the stream sequences in order.
    async fn publish_all(&self, outgoing: Vec<(String, HeaderMap, Bytes)>) -> Result<Vec<u64>> {
        let started = Instant::now();
        let mut seqs: Vec<Option<u64>> = vec![None; outgoing.len()];
        loop {
            let missing: Vec<usize> = (0..outgoing.len()).filter(|&k| seqs[k].is_none()).collect();
            if missing.is_empty() {
                return Ok(seqs.into_iter().map(|s| s.unwrap_or(0)).collect());
            }
            let mut acks = Vec::with_capacity(missing.len());
            let mut last_err = None;
            for &k in &missing {
                let (subject, headers, body) = &outgoing[k];
                match self
                    .js
                    .publish_with_headers(subject.clone(), headers.clone(), body.clone())
                    .await
                {
                    Ok(f) => acks.push((k, f)),
                    Err(e) => last_err = Some(e.to_string()),
                }
            }
            let waited = tokio::time::timeout(
                REQUEST_TIMEOUT,
                futures_util::future::join_all(
                    acks.into_iter().map(|(k, f)| async move { (k, f.await) }),
                ),
            )
            .await;
            if let Ok(results) = waited {
                for (k, r) in results {
                    match r {
                        Ok(ack) => seqs[k] = Some(ack.sequence),
                        Err(e)
                            if matches!(
                                e.kind(),
                                jetstream::context::PublishErrorKind::MaxPayloadExceeded
                            ) =>
                        {
                            return Err(self.err(format!("publishing mail: {e}")));
                        }
                        Err(e) => last_err = Some(e.to_string()),
                    }
                }
            }
            if seqs.iter().any(Option::is_none) {
                if started.elapsed() >= WRITE_DEADLINE {
                    return Err(self.err(format!(
                        "publishing mail: {}",
                        last_err.unwrap_or_else(|| "no acknowledgement".into())
                    )));
                }
                tracing::debug!("publish round incomplete; retrying the rest");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Publishes one message; its stream sequence and whether the server saw its
    /// `Nats-Msg-Id` before (a duplicate: stored once, earlier).
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(u64, bool)> {
        let started = Instant::now();
        loop {
            let r = match self
                .js
                .publish_with_headers(subject.clone(), headers.clone(), body.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match r {
                Ok(ack) => return Ok((ack.sequence, ack.duplicate)),
                Err(e)
                    if started.elapsed() < WRITE_DEADLINE
                        && !matches!(
                            e.kind(),
                            jetstream::context::PublishErrorKind::MaxPayloadExceeded
                        ) =>
                {
                    // Same Nats-Msg-Id: a publish that landed but lost its ack is stored once.
                    tracing::debug!("publish failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(self.err(format!("publishing mail: {e}"))),
            }
        }
    }

    /// Stores `msgs`. All or none: a batch of several is published with a batch id in
    /// every message and becomes visible at once when its commit key `batch.<id>` is
    /// created (one CAS). A sender that dies before the commit leaves messages no reader
    /// ever sees (and that `gc` removes after 10 minutes); the caller got no receipts.
    pub async fn enqueue_batch(&self, msgs: &[NewMessage]) -> Result<Vec<Receipt>> {
        check_messages(
            msgs.iter()
                .map(|m| (m.body.as_slice(), m.thread.as_deref())),
            self.max_body,
        )?;
        let mut ids: Vec<&str> = Vec::new();
        for m in msgs {
            for id in [m.from.as_str(), m.to.as_str()] {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let mut eps: HashMap<&str, Endpoint> = HashMap::new();
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for id in &ids {
                if let Some((e, at)) = known.get(*id)
                    && at.elapsed() < ENDPOINT_CACHE
                {
                    eps.insert(id, e.clone());
                }
            }
        }
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !eps.contains_key(id))
            .collect();
        let found = futures_util::future::join_all(missing.iter().map(|id| self.ep_now(id))).await;
        for (id, e) in missing.iter().zip(found) {
            if let Some((e, _)) = e? {
                self.known
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_string(), (e.clone(), Instant::now()));
                eps.insert(id, e);
            }
        }
        for m in msgs {
            for id in [&m.from, &m.to] {
                if !eps.contains_key(id.as_str()) {
                    return Err(Error::UnknownEndpoint { query: id.clone() });
                }
            }
        }
        let batch = (msgs.len() > 1).then(|| uuid::Uuid::now_v7().to_string());
        let mut receipts = Vec::with_capacity(msgs.len());
        let mut outgoing = Vec::with_capacity(msgs.len());
        for m in msgs {
            let id = uuid::Uuid::now_v7().to_string();
            let now = now_ms();
            let env = Env {
                id: id.clone(),
                from: m.from.clone(),
                from_name: eps[m.from.as_str()].name.clone(),
                to: m.to.clone(),
                thread: m.thread.clone(),
                reply_to: m.reply_to.clone(),
                intent: m.intent,
                content_type: m.content_type.clone(),
                created_at: now,
                expires_at: m.expires_at,
                hold_until: m.hold.map(|h| now.saturating_add(ms(h))),
                batch: batch.clone(),
            };
            outgoing.push((
                mail_subject(&m.to, &m.from, m.thread.as_deref(), &id),
                env.headers(),
                Bytes::from(m.body.clone()),
            ));
            receipts.push(Receipt {
                id,
                from: m.from.clone(),
                to: m.to.clone(),
                to_name: eps[m.to.as_str()].name.clone(),
                thread: m.thread.clone(),
                state: State::Queued,
                created_at: now,
                delivered_at: None,
                acked_at: None,
                deliveries: 0,
                expires_at: m.expires_at,
                injected_at: None,
            });
        }
        let seqs = self.publish_all(outgoing).await?;
        if let Some(b) = &batch {
            let val = Bytes::from(msgs.len().to_string());
            // AlreadyExists after a retried create means our commit landed.
            self.put_ep_key(&batch_key(b), val, None).await?;
            self.committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(b.clone());
        }
        let mut rung: Vec<&str> = Vec::new();
        for m in msgs {
            if !rung.contains(&m.to.as_str()) {
                rung.push(&m.to);
            }
        }
        for to in rung {
            let top = msgs
                .iter()
                .zip(&seqs)
                .filter(|(m, _)| m.to == to)
                .map(|(_, s)| *s)
                .max()
                .unwrap_or(0);
            self.ring(to, &format!("mail:{top}")).await;
        }
        Ok(receipts)
    }

    /// A copied message under its own id: skipped when the id is stored already (read from
    /// the leader), and published with `Nats-Msg-Id` = id, so two copies racing within the
    /// stream's 2-minute duplicate window store it once.
    pub async fn import(&self, m: &Message) -> Result<bool> {
        names::check_id(&m.id)?;
        check_messages([(m.body.as_slice(), m.thread.as_deref())], self.max_body)?;
        for id in [&m.from, &m.to] {
            if self.ep_now(id).await?.is_none() {
                return Err(Error::UnknownEndpoint { query: id.clone() });
            }
        }
        if !self.mail_by(&mail_id(&m.id), 1).await?.is_empty() {
            return Ok(false);
        }
        let env = Env {
            id: m.id.clone(),
            from: m.from.clone(),
            from_name: m.from_name.clone(),
            to: m.to.clone(),
            thread: m.thread.clone(),
            reply_to: m.reply_to.clone(),
            intent: m.intent,
            content_type: m.content_type.clone(),
            created_at: m.created_at,
            expires_at: m.expires_at,
            hold_until: None,
            batch: None,
        };
        let (seq, duplicate) = self
            .publish(
                mail_subject(&m.to, &m.from, m.thread.as_deref(), &m.id),
                env.headers(),
                Bytes::from(m.body.clone()),
            )
            .await?;
        if duplicate {
            return Ok(false);
        }
        self.ring(&m.to, &format!("mail:{seq}")).await;
        Ok(true)
    }

    /// The fetch, plus the earliest running lease or hold among matching messages (when a
    /// waiter must look again).
    pub async fn fetch(&self, to: &str, req: &Fetch) -> Result<(Vec<Message>, Option<i64>)> {
        let now = now_ms();
        let items = self.mailbox(to).await?;
        let next = items
            .iter()
            .filter(|it| it.env.matches(&req.filter) && !it.env.expired(now))
            .filter_map(|it| {
                let r = it.current();
                (matches!(r.state, State::Queued | State::Delivered))
                    .then_some(r.lease_until)
                    .flatten()
                    .filter(|l| *l > now)
            })
            .min();
        let limit = req.limit.max(1);
        let cands = items
            .into_iter()
            .filter(|it| it.current().pending(now) && !it.env.expired(now))
            .filter(|it| it.env.matches(&req.filter));
        let mode = req.mode;
        if mode == FetchMode::Peek {
            let out = cands
                .take(limit)
                .map(|it| it.message(&it.current()))
                .collect();
            return Ok((out, next));
        }
        let claim = |b: &Rcpt, now: i64| {
            if !b.pending(now) {
                return None;
            }
            let mut n = b.clone();
            n.delivered_at = n.delivered_at.or(Some(now));
            n.deliveries += 1;
            match mode {
                FetchMode::Deliver { lease } => {
                    n.state = State::Delivered;
                    n.lease_until = Some(now.saturating_add(ms(lease)));
                }
                _ => {
                    n.state = State::Acked;
                    n.acked_at = Some(now);
                    n.lease_until = None;
                }
            }
            Some(n)
        };
        // Claims run concurrently, a wave at a time: as many as are still wanted, oldest
        // first; one lost to another reader is made up from the next wave.
        let mut cands = cands.peekable();
        let mut out = Vec::new();
        while out.len() < limit && cands.peek().is_some() {
            let wave: Vec<Item> = cands.by_ref().take(limit - out.len()).collect();
            // The wave's first changes after their `queued` records, with one look for
            // all (ops/events.rs); each claim then finds it done.
            if let Some(top) = wave
                .iter()
                .filter(|it| it.rcpt.is_none())
                .map(|it| it.seq)
                .max()
            {
                self.queued_first(top).await;
            }
            let results =
                futures_util::future::join_all(wave.iter().map(|it| self.transition(it, claim)))
                    .await;
            // Claims already made are handed out even when another failed: failing the
            // whole fetch would leave them delivered and never shown.
            let mut failed = None;
            for (it, r) in wave.iter().zip(results) {
                match r {
                    Ok((Some(n), _)) => out.push(it.message(&n)),
                    Ok((None, _)) => {}
                    Err(e) => {
                        tracing::warn!(id = it.env.id, "claim failed: {e}");
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                if out.is_empty() {
                    return Err(e);
                }
                break;
            }
        }
        Ok((out, next))
    }

    pub async fn pending(&self, to: &str) -> Result<(u64, u64)> {
        let now = now_ms();
        let items = self.mailbox(to).await?;
        let p = items
            .iter()
            .filter(|it| it.current().pending(now) && !it.env.expired(now));
        Ok(p.fold((0, 0), |(n, b), it| (n + 1, b + it.body.len() as u64)))
    }

    pub async fn claim(&self, to: &str, id: &str, lease: Duration) -> Result<Option<Message>> {
        let Some(it) = self.item(to, id).await? else {
            return Ok(None);
        };
        let (changed, _) = self
            .transition(&it, |b, now| {
                if b.state != State::Queued || b.lease_until.is_none_or(|l| l <= now) {
                    return None;
                }
                let mut n = b.clone();
                n.state = State::Delivered;
                n.lease_until = Some(now.saturating_add(ms(lease)));
                n.delivered_at = n.delivered_at.or(Some(now));
                n.deliveries += 1;
                Some(n)
            })
            .await?;
        Ok(changed.map(|r| it.message(&r)))
    }

    pub async fn settle_hold(&self, to: &str, id: &str, shown: bool) -> Result<State> {
        let Some(it) = self.item(to, id).await? else {
            return Err(Error::UnknownMessage {
                query: id.to_string(),
            });
        };
        let (changed, last) = self
            .transition(&it, |b, now| {
                if b.state != State::Queued || b.lease_until.is_none() {
                    return None;
                }
                let mut n = b.clone();
                if shown {
                    n.state = State::Acked;
                    n.acked_at = Some(now);
                    n.delivered_at = n.delivered_at.or(Some(now));
                    n.deliveries += 1;
                }
                n.lease_until = None;
                Some(n)
            })
            .await?;
        if changed.is_some() && !shown {
            self.ring(to, "rcpt").await;
        }
        Ok(last.state)
    }

    pub async fn release(&self, to: &str, ids: &[String]) -> Result<u64> {
        let mut n = 0;
        for id in ids {
            let Some(it) = self.item(to, id).await? else {
                continue;
            };
            let (changed, _) = self
                .transition(&it, |b, now| {
                    if b.state != State::Delivered || b.lease_until.is_none_or(|l| l <= now) {
                        return None;
                    }
                    let mut r = b.clone();
                    r.lease_until = Some(now);
                    Some(r)
                })
                .await?;
            n += u64::from(changed.is_some());
        }
        if n > 0 {
            self.ring(to, "rcpt").await;
        }
        Ok(n)
    }

    /// Messages with exactly this id, else (4+ characters) with this id prefix; at most 2
    /// for `ack`, 11 for `receipt` (the prefix case reads every stored message).
    async fn by_id(&self, given: &str, limit: usize) -> Result<Vec<Item>> {
        if names::check_id(given).is_ok() || !given.contains(['*', '>', ' ', '.']) {
            let exact = self.mail_by(&mail_id(given), 1).await?;
            if !exact.is_empty() {
                return Ok(exact);
            }
        }
        if given.len() < MIN_PREFIX {
            return Ok(Vec::new());
        }
        let all = self.scan(MAIL_STREAM, &format!("{MAIL_PREFIX}.>")).await?;
        let hits: Vec<Raw> = all
            .into_iter()
            .filter(|r| {
                r.subject
                    .rsplit('.')
                    .next()
                    .and_then(untok)
                    .is_some_and(|id| id.starts_with(given))
            })
            .collect();
        let mut items = self.items(hits, &HashMap::new()).await?;
        items.truncate(limit);
        for it in &mut items {
            it.rcpt = self.rcpt_now(&it.env.to, &it.env.id).await?;
        }
        Ok(items)
    }

    /// Acks run concurrently when the ids are distinct (a reader acking what it printed),
    /// else one after another, so a repeated id is `already-acked` the second time.
    pub async fn ack(&self, recipient: Option<&str>, ids: &[String]) -> Result<Vec<AckResult>> {
        let distinct = ids.iter().collect::<HashSet<_>>().len() == ids.len();
        if distinct {
            return futures_util::future::join_all(ids.iter().map(|g| self.ack_one(recipient, g)))
                .await
                .into_iter()
                .collect();
        }
        let mut out = Vec::with_capacity(ids.len());
        for given in ids {
            out.push(self.ack_one(recipient, given).await?);
        }
        Ok(out)
    }

    async fn ack_one(&self, recipient: Option<&str>, given: &str) -> Result<AckResult> {
        let found = self.by_id(given, 2).await?;
        let outcome = match found.as_slice() {
            [] => AckOutcome::Unknown,
            [_, _, ..] => AckOutcome::Ambiguous,
            [it] if recipient.is_some_and(|r| r != it.env.to) => AckOutcome::NotYours,
            [it] => {
                let (changed, _) = self
                    .transition(it, |b, now| {
                        if b.state == State::Acked {
                            return None;
                        }
                        let mut n = b.clone();
                        n.state = State::Acked;
                        n.acked_at = Some(now);
                        n.delivered_at = n.delivered_at.or(Some(now));
                        n.lease_until = None;
                        Some(n)
                    })
                    .await?;
                if changed.is_some() {
                    AckOutcome::Acked
                } else {
                    AckOutcome::AlreadyAcked
                }
            }
        };
        Ok(AckResult {
            id: found
                .first()
                .map(|f| f.env.id.clone())
                .unwrap_or_else(|| given.to_string()),
            outcome,
        })
    }

    /// Two writes, hint first: a crash between them leaves a hint with nothing to settle
    /// (the next hook clears it), never injected mail without a hint.
    pub async fn mark_injected(&self, to: &str, ids: &[String]) -> Result<u64> {
        let mut items = Vec::new();
        for id in ids {
            if let Some(it) = self.item(to, id).await?
                && it.current().state == State::Delivered
            {
                items.push(it);
            }
        }
        if items.is_empty() {
            return Ok(0);
        }
        self.update_ep(to, |e| {
            if e.meta.get(INJECTED_HINT) == Some(&serde_json::Value::Bool(true)) {
                return false;
            }
            e.meta
                .insert(INJECTED_HINT.into(), serde_json::Value::Bool(true));
            true
        })
        .await?;
        let mut n = 0;
        for it in &items {
            let (changed, _) = self
                .transition(it, |b, now| {
                    if b.state != State::Delivered {
                        return None;
                    }
                    let mut r = b.clone();
                    r.injected_at = Some(now);
                    Some(r)
                })
                .await?;
            n += u64::from(changed.is_some());
        }
        Ok(n)
    }

    /// Hint cleared first, then the acks: an injection racing this either lands before the
    /// scan (acked here) or sets the hint again (settled next time); one that slips between
    /// is redelivered when its lease lapses — never lost.
    pub async fn settle_injected(&self, to: &str) -> Result<Vec<String>> {
        self.update_ep(to, |e| e.meta.remove(INJECTED_HINT).is_some())
            .await?;
        let mut out = Vec::new();
        for it in self.mailbox(to).await? {
            let r = it.current();
            if r.state != State::Delivered || r.injected_at.is_none() {
                continue;
            }
            let (changed, _) = self
                .transition(&it, |b, now| {
                    if b.state != State::Delivered || b.injected_at.is_none() {
                        return None;
                    }
                    let mut n = b.clone();
                    n.state = State::Acked;
                    n.acked_at = Some(now);
                    n.lease_until = None;
                    Some(n)
                })
                .await?;
            if changed.is_some() {
                out.push(it.env.id.clone());
            }
        }
        Ok(out)
    }

    pub async fn loop_counts(
        &self,
        sender: &str,
        recipient: &str,
        thread: Option<&str>,
        since_ms: i64,
    ) -> Result<LoopCounts> {
        // The stream's own timestamps narrow the read (1 s of slack for clock skew); the
        // envelope's created_at decides.
        let since = rfc3339(since_ms.saturating_sub(1000));
        let sent = self
            .scan_once(MAIL_STREAM, &mail_from(sender), None, Some(&since))
            .await?;
        let sent_since = self
            .items(sent, &HashMap::new())
            .await?
            .iter()
            .filter(|it| it.env.created_at > since_ms)
            .count() as u64;
        let thread_run = match thread {
            None => 0,
            Some(t) => {
                let raws = self.scan(MAIL_STREAM, &mail_thread(t)).await?;
                let items: Vec<Item> = self
                    .items(raws, &HashMap::new())
                    .await?
                    .into_iter()
                    .filter(|it| it.env.thread.as_deref() == Some(t))
                    .collect();
                let mut kinds: HashMap<String, Option<Kind>> = HashMap::new();
                for it in &items {
                    for id in [&it.env.from, &it.env.to] {
                        if !kinds.contains_key(id) {
                            let k = self.ep_now(id).await?.map(|(e, _)| e.kind);
                            kinds.insert(id.clone(), k);
                        }
                    }
                }
                let kind = |id: &str| kinds.get(id).copied().flatten();
                let last_human = items
                    .iter()
                    .filter(|it| kind(&it.env.from) == Some(Kind::Human))
                    .map(|it| it.seq)
                    .max()
                    .unwrap_or(0);
                items
                    .iter()
                    .filter(|it| it.seq > last_human)
                    .filter(|it| {
                        kind(&it.env.from).is_some_and(Kind::is_agent)
                            && kind(&it.env.to).is_some_and(Kind::is_agent)
                    })
                    .filter(|it| {
                        (it.env.from == sender && it.env.to == recipient)
                            || (it.env.from == recipient && it.env.to == sender)
                    })
                    .count() as u64
            }
        };
        Ok(LoopCounts {
            thread_run,
            sent_since,
        })
    }

    pub async fn receipt(&self, id: &str) -> Result<Receipt> {
        let mut found = self.by_id(id, 11).await?;
        let it = match found.len() {
            0 => {
                return Err(Error::UnknownMessage {
                    query: id.to_string(),
                });
            }
            1 => found.remove(0),
            n => {
                return Err(Error::AmbiguousMessage {
                    query: id.to_string(),
                    count: n,
                });
            }
        };
        let r = it.current();
        let to_name = match self.ep_now(&it.env.to).await? {
            Some((e, _)) => self.reconciled(e).await?.name,
            None => None,
        };
        Ok(Receipt {
            id: it.env.id.clone(),
            from: it.env.from.clone(),
            to: it.env.to.clone(),
            to_name,
            thread: it.env.thread.clone(),
            state: r.state,
            created_at: it.env.created_at,
            delivered_at: r.delivered_at,
            acked_at: r.acked_at,
            deliveries: r.deliveries,
            expires_at: it.env.expires_at,
            injected_at: r.injected_at,
        })
    }

    /// The doorbell of `to`: a subscription made on first use and kept for the store's
    /// life (a background task counts rings into a watch channel), so waits that follow
    /// each other never miss a ring between them.
    async fn bell_rx(&self, to: &str) -> Result<tokio::sync::watch::Receiver<u64>> {
        if let Some(rx) = self.bells.lock().unwrap_or_else(|e| e.into_inner()).get(to) {
            return Ok(rx.clone());
        }
        let mut sub = self
            .client
            .subscribe(bell(to))
            .await
            .map_err(|e| self.err(format!("doorbell: {e}")))?;
        // The subscription must be at the server before the first look.
        let _ = self.client.flush().await;
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            let mut rings = 0u64;
            while sub.next().await.is_some() {
                rings += 1;
                if tx.send(rings).is_err() {
                    break;
                }
            }
        });
        let mut bells = self.bells.lock().unwrap_or_else(|e| e.into_inner());
        // Two first waits racing: keep one subscription (the other ends with its sender).
        Ok(bells.entry(to.to_string()).or_insert(rx).clone())
    }

    /// Looks; then sleeps until a ring, the next lease or hold expiry, the backstop, a
    /// cancel or the deadline, and looks again.
    pub async fn wait(
        &self,
        to: &str,
        req: &Fetch,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Vec<Message>> {
        let deadline = Instant::now() + timeout;
        let mut rings = self.bell_rx(to).await?;
        loop {
            if cancel.is_cancelled() {
                return Ok(Vec::new());
            }
            // Seen before the look: a ring during the look wakes the next sleep at once.
            rings.borrow_and_update();
            let (got, next) = self.fetch(to, req).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline || cancel.is_cancelled() {
                return Ok(Vec::new());
            }
            let mut nap = (deadline - now).min(BACKSTOP_POLL);
            if let Some(at) = next {
                let until = Duration::from_millis((at - now_ms()).max(0) as u64);
                nap = nap.min(until + Duration::from_millis(1));
            }
            let cancelled = async {
                while !cancel.is_cancelled() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = rings.changed() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = cancelled => {}
            }
        }
    }

    // ---- bindings: facts of one machine, keyed by host ----

    pub async fn bind(&self, process: ProcessRef, endpoint_id: &str) -> Result<()> {
        if self.ep_now(endpoint_id).await?.is_none() {
            return Err(Error::UnknownEndpoint {
                query: endpoint_id.to_string(),
            });
        }
        let val = serde_json::to_vec(&BindValue {
            endpoint_id: endpoint_id.to_string(),
            created_at: now_ms(),
        })
        .unwrap_or_default();
        let key = bind_key(&self.host, process.pid, process.start);
        // Presence events, from the binding this put replaces (a put is not a CAS: two
        // binds of one process racing may both record theirs).
        let now = now_ms();
        let presence =
            |id: &str, d: &str| Rec::endpoint(crate::store::EventKind::Presence, now, id, Some(d));
        let prev = self.binding_rev(process).await?;
        let rev = prev.as_ref().map(|(_, r)| *r);
        let recs = match prev {
            None => vec![presence(endpoint_id, "bound")],
            Some((old, _)) if old.endpoint_id != endpoint_id => vec![
                presence(&old.endpoint_id, "unbound"),
                presence(endpoint_id, "bound"),
            ],
            Some(_) => Vec::new(),
        };
        self.ep_write_ev(&key, Bytes::from(val), EpWrite::Put(rev), &recs)
            .await?;
        Ok(())
    }

    async fn binding(&self, p: ProcessRef) -> Result<Option<BindValue>> {
        Ok(self.binding_rev(p).await?.map(|(b, _)| b))
    }

    /// A binding with its revision.
    async fn binding_rev(&self, p: ProcessRef) -> Result<Option<(BindValue, u64)>> {
        let subject = format!("$KV.{EP_BUCKET}.{}", bind_key(&self.host, p.pid, p.start));
        Ok(self
            .kv_now(&self.ep_stream, &subject, "binding")
            .await?
            .and_then(|(v, rev)| Some((serde_json::from_slice(&v).ok()?, rev))))
    }

    pub async fn bound(&self, processes: &[ProcessRef]) -> Result<Option<(ProcessRef, Endpoint)>> {
        for p in processes {
            if let Some(b) = self.binding(*p).await?
                && let Some((e, _)) = self.ep_now(&b.endpoint_id).await?
            {
                return Ok(Some((*p, self.reconciled(e).await?)));
            }
        }
        Ok(None)
    }

    pub async fn bindings(&self) -> Result<Vec<Binding>> {
        let raws = self
            .scan(&format!("KV_{EP_BUCKET}"), &binds_on(&self.host))
            .await?;
        let mut out: Vec<Binding> = raws
            .into_iter()
            .filter(|r| !r.is_kv_delete())
            .filter_map(|r| {
                let mut parts = r.subject.rsplit('.');
                let start = parts.next()?.parse().ok()?;
                let pid = parts.next()?.parse().ok()?;
                let v: BindValue = serde_json::from_slice(&r.payload).ok()?;
                Some(Binding {
                    process: ProcessRef { pid, start },
                    endpoint_id: v.endpoint_id,
                    created_at: v.created_at,
                })
            })
            .collect();
        out.sort_by_key(|b| b.created_at);
        Ok(out)
    }

    pub async fn unbind(&self, processes: &[ProcessRef]) -> Result<u64> {
        let mut n = 0;
        for p in processes {
            if let Some((b, rev)) = self.binding_rev(*p).await? {
                let rec = Rec::endpoint(
                    crate::store::EventKind::Presence,
                    now_ms(),
                    &b.endpoint_id,
                    Some("unbound"),
                );
                self.ep_write_ev(
                    &bind_key(&self.host, p.pid, p.start),
                    Bytes::new(),
                    EpWrite::Purge(Some(rev)),
                    &[rec],
                )
                .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes old acked and expired messages, their receipts, batches abandoned before
    /// their commit, expired reservations, and event records stored before the cutoff. Each
    /// deletion is its own request: a crash midway leaves the rest for the next run.
    pub async fn gc(&self, acked_before: Duration) -> Result<GcReport> {
        let now = now_ms();
        let cutoff = now.saturating_sub(ms(acked_before));
        let (mail, rc) = futures_util::future::join(
            self.scan(MAIL_STREAM, &format!("{MAIL_PREFIX}.>")),
            self.scan(
                &format!("KV_{RCPT_BUCKET}"),
                &format!("$KV.{RCPT_BUCKET}.>"),
            ),
        )
        .await;
        let rc = rc?;
        let rcpts = self.rcpt_map(rc.clone());
        let mut report = GcReport::default();
        for raw in mail? {
            let Some(env) = Env::parse(&raw.headers) else {
                continue;
            };
            let key = rcpt_key(&env.to, &env.id);
            let r = rcpts.get(&key);
            let uncommitted = match &env.batch {
                Some(b) => !self.is_committed(b).await?,
                None => false,
            };
            let acked_old = r.is_some_and(|(r, _)| {
                r.state == State::Acked && r.acked_at.is_some_and(|a| a < cutoff)
            });
            let expired = env.expired(now);
            let abandoned = uncommitted && env.created_at < now - BATCH_ABANDONED_MS;
            if !(acked_old || expired || abandoned) {
                continue;
            }
            if expired && !uncommitted && r.is_none_or(|(r, _)| r.state != State::Acked) {
                // Before the delete: the event log's `message.expired` (ops/events.rs).
                self.record_expired(&env).await?;
            }
            self.mail
                .delete_message(raw.seq)
                .await
                .map_err(|e| self.err(format!("deleting message {}: {e}", env.id)))?;
            if r.is_some() {
                // A stream purge of the key's subject removes it without leaving the
                // delete marker a KV purge would (markers would pile up forever).
                self.rcpt_stream
                    .purge()
                    .filter(format!("$KV.{RCPT_BUCKET}.{key}"))
                    .await
                    .map_err(|e| self.err(format!("deleting receipt {}: {e}", env.id)))?;
            }
            if acked_old {
                report.acked_deleted += 1;
            } else if expired && !uncommitted {
                report.expired_deleted += 1;
            }
        }
        report.reservations_deleted = self.gc_reservations().await?;
        report.events_deleted = self.gc_events(cutoff).await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_round_trip() {
        for s in ["plain", "a%b", "line\r\nInjected: 1", "naïve ☃", ""] {
            let e = enc(s);
            assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
            assert_eq!(percent_decode(&e), s);
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
