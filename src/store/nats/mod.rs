//! The NATS JetStream [`Store`] (feature `nats`; DESIGN.md §4, docs/nats.md): the same
//! semantics as [`super::SqliteStore`], across machines.
//!
//! - **Mail**: one stream `RELAY_MAIL`, one message per send, the envelope in headers,
//!   `Nats-Msg-Id` = message id, so a publish retried after a lost ack is stored once. A
//!   message with no receipt yet is `queued`; publishing it is the send's commit.
//! - **Receipts**: bucket `relay_rcpt`, created at a message's first state change and
//!   changed only by compare-and-set on its revision — a fetch *claims* a message by CAS,
//!   so a lease has exactly one holder, across every process on every machine.
//! - **Endpoints**: bucket `relay_ep`; a name is `name.<name>` → id, moved by one CAS.
//! - **Doorbell**: core NATS `relay.bell.<to>`; a waiter subscribes, then looks.
//! - **Reservations**: one `relay_ep` key per project holding its whole list, changed by
//!   one CAS each time, so two holders racing never both win.
//! - **History** (`search`, `thread`): no index; a bounded scan, newest first, narrowed by
//!   subject (`RELAY_NATS_SEARCH_SCAN`).
//! - **Events**: stream `RELAY_EVENTS` sources the mail stream and the buckets, so every
//!   acknowledged change is copied into it by the server (ops/events.rs).
//!
//! The [`Store`] trait is synchronous and the MCP server calls it from tokio workers, so
//! this store owns its own runtime with one worker thread and never calls `block_on`: each
//! call is spawned there and its result comes back over a channel.

mod keys;
mod ops;
mod scan;

pub use keys::{EP_BUCKET, MAIL_STREAM, RCPT_BUCKET};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;
use keys::percent_decode;

/// How long one JetStream request may take before it is retried (publish, CAS, get).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a write keeps retrying through a leader election or a lost node: 20 s.
const WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// How long connecting to the first reachable server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// NATS JetStream-backed [`Store`]. Cheap to share between threads.
pub struct NatsStore {
    rt: Option<tokio::runtime::Runtime>,
    inner: Arc<ops::Inner>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("urls", &self.inner.urls)
            .finish()
    }
}

impl Drop for NatsStore {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's worker panics; this never blocks.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// How to authenticate and encrypt, from the environment (docs/nats.md):
/// `RELAY_NATS_CREDS` (a `.creds` file), `RELAY_NATS_NKEY` (a seed file), `RELAY_NATS_TOKEN`,
/// `RELAY_NATS_USER` + `RELAY_NATS_PASSWORD`, `RELAY_NATS_CA` (PEM roots; implies TLS),
/// `RELAY_NATS_CERT` + `RELAY_NATS_KEY` (client certificate), `RELAY_NATS_TLS=1`.
/// Credentials in the URL (`nats://user:pass@host`, `nats://token@host`) work too.
/// `RELAY_NATS_REPLICAS` (1–5) sets the replica count of streams relay creates (default:
/// 3 on a cluster, 1 on a single server).
async fn connect(urls: &[String]) -> Result<async_nats::Client, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut opts = async_nats::ConnectOptions::new()
        .name("relay")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT));
    if let Some(creds) = env("RELAY_NATS_CREDS") {
        opts = opts
            .credentials_file(&creds)
            .await
            .map_err(|e| format!("cannot read RELAY_NATS_CREDS {creds}: {e}"))?;
    }
    if let Some(path) = env("RELAY_NATS_NKEY") {
        let seed = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read RELAY_NATS_NKEY {path}: {e}"))?;
        opts = opts.nkey(seed.trim().to_string());
    }
    if let Some(t) = env("RELAY_NATS_TOKEN") {
        opts = opts.token(t);
    }
    if let Some(u) = env("RELAY_NATS_USER") {
        opts = opts.user_and_password(u, env("RELAY_NATS_PASSWORD").unwrap_or_default());
    }
    if let Some(ca) = env("RELAY_NATS_CA") {
        opts = opts.add_root_certificates(ca.into()).require_tls(true);
    }
    if let (Some(c), Some(k)) = (env("RELAY_NATS_CERT"), env("RELAY_NATS_KEY")) {
        opts = opts.add_client_certificate(c.into(), k.into());
    }
    if env("RELAY_NATS_TLS").is_some_and(|v| v == "1")
        || urls.iter().any(|u| u.starts_with("tls://"))
    {
        opts = opts.require_tls(true);
    }
    // Credentials in a URL go to the connect options, and the addresses the client keeps
    // (and logs at debug level) carry none.
    let mut from_url: Option<(String, Option<String>)> = None;
    let mut bare = Vec::with_capacity(urls.len());
    for u in urls {
        let (plain, cred) = split_credentials(u);
        if from_url.is_none() {
            from_url = cred;
        }
        bare.push(plain);
    }
    match from_url {
        Some((user, Some(pass))) if env("RELAY_NATS_USER").is_none() => {
            opts = opts.user_and_password(user, pass);
        }
        Some((token, None)) if env("RELAY_NATS_TOKEN").is_none() => opts = opts.token(token),
        _ => {}
    }
    let addrs: Vec<async_nats::ServerAddr> = bare
        .iter()
        .map(|u| u.parse().map_err(|e| format!("'{}': {e}", redact(u))))
        .collect::<Result<_, _>>()?;
    // One bounded attempt over the list: a cluster that is down is an error at once, not
    // a process that hangs retrying.
    tokio::time::timeout(CONNECT_TIMEOUT * 2, opts.connect(addrs))
        .await
        .map_err(|_| "no server answered within 6 s".to_string())?
        .map_err(|e| format!("cannot connect: {e}"))
}

/// `nats://user:pass@host:4222` → (`nats://host:4222`, (user, Some(pass))); a token
/// (`nats://tok@host`) comes back as (tok, None). Percent-escapes in them are decoded.
fn split_credentials(url: &str) -> (String, Option<(String, Option<String>)>) {
    let Some(s) = url.find("://") else {
        return (url.to_string(), None);
    };
    let rest = &url[s + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let info = &rest[..at];
    let plain = format!("{}{}", &url[..s + 3], &rest[at + 1..]);
    let cred = match info.split_once(':') {
        Some((u, p)) => (percent_decode(u), Some(percent_decode(p))),
        None => (percent_decode(info), None),
    };
    (plain, Some(cred))
}

impl NatsStore {
    /// Connects to the cluster at `urls` (tried in turn) and makes sure the stream and the
    /// two buckets exist (creating them, R3 on a cluster, when missing).
    ///
    /// # Errors
    /// [`Error::Home`] when `config.home` (kept for this machine's sockets, waiters and
    /// wake locks) is unsafe; [`Error::Nats`] naming the URLs (credentials redacted) when
    /// no server answers, the server has no JetStream, or the stream cannot be created;
    /// nothing is written to the cluster then.
    pub fn open(urls: &[String], config: &Config) -> Result<NatsStore> {
        // The home still holds this machine's own things (sockets, waiters, wake locks).
        super::home::private_dir(&config.home)?;
        let shown = urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",");
        let err = |reason: String| Error::Nats {
            urls: shown.clone(),
            reason,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("relay-nats")
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start the NATS client runtime: {e}")))?;
        let urls = urls.to_vec();
        let max_body = config.max_body;
        let shown2 = shown.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let r = async {
                let client = connect(&urls).await?;
                ops::Inner::setup(client, shown2, max_body, local_host()).await
            }
            .await;
            let _ = tx.send(r);
        });
        let inner = rx
            .recv()
            .map_err(|_| err("the NATS client runtime stopped".into()))?
            .map_err(err)?;
        Ok(NatsStore {
            rt: Some(rt),
            inner: Arc::new(inner),
        })
    }

    /// The server version of the connection (`2.15.1`).
    pub fn server_version(&self) -> String {
        self.inner.client.server_info().version
    }

    /// Runs `f` on this store's runtime and waits for it on this thread (never inside the
    /// runtime, so callers on another runtime's workers are fine).
    fn run<T, F>(&self, f: impl FnOnce(Arc<ops::Inner>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let Some(rt) = self.rt.as_ref() else {
            return Err(self.inner.err("the store is closed"));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.inner.clone());
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| self.inner.err("the NATS client runtime stopped"))?
    }
}

fn own(ids: &[String]) -> Vec<String> {
    ids.to_vec()
}

impl Store for NatsStore {
    fn max_body(&self) -> usize {
        self.inner.max_body
    }

    fn register(&self, reg: &Registration) -> Result<Registered> {
        let reg = reg.clone();
        self.run(|i| async move { i.register(&reg).await })
    }

    fn lookup(&self, query: &str) -> Result<Lookup> {
        let q = query.to_string();
        self.run(|i| async move { i.lookup(&q).await })
    }

    fn roster(&self) -> Result<Vec<RosterEntry>> {
        self.run(|i| async move { i.roster().await })
    }

    fn enqueue_batch(&self, msgs: &[NewMessage]) -> Result<Vec<Receipt>> {
        let msgs = msgs.to_vec();
        self.run(|i| async move { i.enqueue_batch(&msgs).await })
    }

    fn import(&self, msg: &Message) -> Result<bool> {
        let m = msg.clone();
        self.run(|i| async move { i.import(&m).await })
    }

    fn fetch(&self, recipient: &str, req: &Fetch) -> Result<Vec<Message>> {
        let (r, req) = (recipient.to_string(), req.clone());
        self.run(|i| async move { Ok(i.fetch(&r, &req).await?.0) })
    }

    fn pending(&self, recipient: &str) -> Result<(u64, u64)> {
        let r = recipient.to_string();
        self.run(|i| async move { i.pending(&r).await })
    }

    fn claim(&self, recipient: &str, id: &str, lease: Duration) -> Result<Option<Message>> {
        let (r, id) = (recipient.to_string(), id.to_string());
        self.run(|i| async move { i.claim(&r, &id, lease).await })
    }

    fn settle_hold(&self, recipient: &str, id: &str, shown: bool) -> Result<State> {
        let (r, id) = (recipient.to_string(), id.to_string());
        self.run(|i| async move { i.settle_hold(&r, &id, shown).await })
    }

    fn release(&self, recipient: &str, ids: &[String]) -> Result<u64> {
        let (r, ids) = (recipient.to_string(), own(ids));
        self.run(|i| async move { i.release(&r, &ids).await })
    }

    fn ack(&self, recipient: Option<&str>, ids: &[String]) -> Result<Vec<AckResult>> {
        let (r, ids) = (recipient.map(String::from), own(ids));
        self.run(|i| async move { i.ack(r.as_deref(), &ids).await })
    }

    fn mark_injected(&self, recipient: &str, ids: &[String]) -> Result<u64> {
        let (r, ids) = (recipient.to_string(), own(ids));
        self.run(|i| async move { i.mark_injected(&r, &ids).await })
    }

    fn settle_injected(&self, recipient: &str) -> Result<Vec<String>> {
        let r = recipient.to_string();
        self.run(|i| async move { i.settle_injected(&r).await })
    }

    fn loop_counts(
        &self,
        sender: &str,
        recipient: &str,
        thread: Option<&str>,
        since_ms: i64,
    ) -> Result<LoopCounts> {
        let (s, r, t) = (
            sender.to_string(),
            recipient.to_string(),
            thread.map(String::from),
        );
        self.run(|i| async move { i.loop_counts(&s, &r, t.as_deref(), since_ms).await })
    }

    fn receipt(&self, id: &str) -> Result<Receipt> {
        let id = id.to_string();
        self.run(|i| async move { i.receipt(&id).await })
    }

    fn wait(&self, recipient: &str, req: &Fetch, timeout: Duration) -> Result<Vec<Message>> {
        self.wait_or_cancel(recipient, req, timeout, &Cancel::new())
    }

    fn wait_or_cancel(
        &self,
        recipient: &str,
        req: &Fetch,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Vec<Message>> {
        let (r, req, cancel) = (recipient.to_string(), req.clone(), cancel.clone());
        self.run(|i| async move { i.wait(&r, &req, timeout.min(MAX_WAIT), &cancel).await })
    }

    fn bind(&self, process: ProcessRef, endpoint_id: &str) -> Result<()> {
        let id = endpoint_id.to_string();
        self.run(|i| async move { i.bind(process, &id).await })
    }

    fn bound(&self, processes: &[ProcessRef]) -> Result<Option<(ProcessRef, Endpoint)>> {
        let p = processes.to_vec();
        self.run(|i| async move { i.bound(&p).await })
    }

    fn bindings(&self) -> Result<Vec<Binding>> {
        self.run(|i| async move { i.bindings().await })
    }

    fn unbind(&self, processes: &[ProcessRef]) -> Result<u64> {
        let p = processes.to_vec();
        self.run(|i| async move { i.unbind(&p).await })
    }

    fn gc(&self, acked_before: Duration) -> Result<GcReport> {
        self.run(|i| async move { i.gc(acked_before).await })
    }

    fn history(&self, q: &History) -> Result<Vec<Message>> {
        let q = q.clone();
        self.run(|i| async move { i.history(&q).await })
    }

    fn reserve(&self, req: &ReserveRequest) -> Result<Reserved> {
        let req = req.clone();
        self.run(|i| async move { i.reserve(&req).await })
    }

    fn renew_reservations(
        &self,
        sel: &ReservationSelect,
        ttl: Duration,
    ) -> Result<Vec<Reservation>> {
        let sel = sel.clone();
        self.run(|i| async move { i.renew_reservations(&sel, ttl).await })
    }

    fn release_reservations(&self, sel: &ReservationSelect) -> Result<Vec<Reservation>> {
        let sel = sel.clone();
        self.run(|i| async move { i.release_reservations(&sel).await })
    }

    fn reservations(&self, project: Option<&str>) -> Result<Vec<Reservation>> {
        let p = project.map(String::from);
        self.run(|i| async move { i.reservations(p.as_deref()).await })
    }

    fn events(&self, q: &EventQuery) -> Result<EventPage> {
        let q = q.clone();
        self.run(|i| async move { i.events(&q).await })
    }

    fn wait_events(&self, after: u64, timeout: Duration, cancel: &Cancel) -> Result<bool> {
        let cancel = cancel.clone();
        self.run(|i| async move { i.wait_events(after, timeout.min(MAX_WAIT), &cancel).await })
    }

    fn record_event(&self, ev: &NewEvent) -> Result<u64> {
        let ev = ev.clone();
        self.run(|i| async move { i.record_event(&ev).await })
    }
}

#[cfg(test)]
mod tests {
    use super::split_credentials;

    #[test]
    fn credentials_leave_the_url() {
        assert_eq!(
            split_credentials("nats://bob:s3cr%40t@h:4222"),
            (
                "nats://h:4222".to_string(),
                Some(("bob".to_string(), Some("s3cr@t".to_string())))
            )
        );
        assert_eq!(
            split_credentials("tls://tok@h"),
            ("tls://h".to_string(), Some(("tok".to_string(), None)))
        );
        assert_eq!(
            split_credentials("nats://h:1"),
            ("nats://h:1".to_string(), None)
        );
    }
}
