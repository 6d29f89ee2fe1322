//! `relay bench nats`: what the NATS JetStream store costs, next to raw JetStream in the
//! same run (feature `nats`).
//!
//! Runs against its own local 3-node cluster ([`crate::natsd::Cluster`], R3,
//! `sync_interval: always`) or a given `nats://` location. Phases:
//!
//! - **send latency**, interleaved sample by sample so drift hits every row alike, 256-byte
//!   body: (a) baseline: raw JetStream publish-and-ack to a stream `BENCH_RAW` created
//!   with the mail stream's replicas, storage and duplicate window (deleted afterwards),
//!   its leader moved to the mail stream's leader when the server allows; (b) relay's
//!   `store.enqueue` (the store-level send) and `route::send` (what `relay bench mailbox`
//!   times: resolve, loop guard, enqueue). Beside them, the parts of a send timed as raw
//!   requests: a publish with relay's envelope headers, the endpoint read (KV get from the
//!   leader), the doorbell publish + flush, and a raw publish through a one-worker
//!   runtime and a channel (the store's sync facade).
//! - **look**: `fetch` (take, limit 1) of one ready message — what a woken waiter does.
//! - **fetch + ack**: enqueue 1000 (batches of 100), then `fetch` 100 under a lease and
//!   `ack` them until none are left, messages/s.
//! - **cross-machine wake-up**: machine B (a child process, its own `RELAY_HOME`,
//!   `RELAY_HOST`, and the URL of another node) blocks in `store.wait`; machine A (another
//!   child, connected to the first node) stamps `now_us()` into the body and
//!   `store.enqueue`s it; B reports receipt time − stamp. A also reports how long its
//!   enqueue took, so the report can split the wake-up into send and delivery.
//!
//! Goals (from the issue): send p50 ≤ 1.5× the raw publish p50; a waiter on machine B
//! wakes ≤ 5 ms p50 after the send on A (local cluster).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use serde::Serialize;

use super::{Latency, Machine, Recorder};
use crate::clock::now_us;
use crate::config::Config;
use crate::route::{self, SendRequest};
use crate::store::{
    EP_BUCKET, Endpoint, Fetch, FetchMode, Filter, Intent, MAIL_STREAM, NewMessage, Registration,
    Store, TEXT_PLAIN,
};

/// Body size, bytes.
pub const BODY_BYTES: usize = 256;
/// The baseline's stream (created and deleted by the bench).
pub const RAW_STREAM: &str = "BENCH_RAW";
/// Goal: relay's send p50 at most this many times the raw publish p50.
pub const SEND_GOAL_RATIO: f64 = 1.5;
/// Goal: cross-machine wake-up p50, µs.
pub const WAKE_GOAL_US: f64 = 5000.0;
/// Messages in the fetch + ack phase.
pub const FETCH_ACK_TOTAL: usize = 1000;
/// Messages per batch, fetch and ack.
pub const BATCH: usize = 100;
/// Longest the bench's own cluster may live.
const CLUSTER_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Unrecorded warm-up sends before the latency phase.
const WARMUP: usize = 50;
/// How long the bench waits on a child's next line.
const CHILD_DEADLINE: Duration = Duration::from_secs(30);

/// Everything `relay bench nats` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started: other work on the machine.
    pub load_at_start: String,
    /// nats-server version (from the server's INFO).
    pub server_version: String,
    /// True: the bench's own local 3-node cluster; false: the `--store` given.
    pub own_cluster: bool,
    /// Nodes the cluster reports (1 for a single server).
    pub nodes: usize,
    /// Replicas of the mail stream (and of `BENCH_RAW`).
    pub replicas: usize,
    /// Leader of the mail stream / of `BENCH_RAW` (server names).
    pub mail_leader: String,
    /// Leader of `BENCH_RAW`.
    pub raw_leader: String,
    /// Samples per send-latency row (route::send and the wake-up use `n / 4`, ≥ 100).
    pub n: usize,
    /// (a) Raw JetStream publish-and-ack, 256 B, no headers.
    pub raw_publish: Latency,
    /// The same with relay's envelope headers (`Nats-Msg-Id` and 9 more).
    pub raw_publish_headers: Latency,
    /// The same as `raw_publish` through a one-worker runtime and a channel.
    pub raw_publish_hop: Latency,
    /// One endpoint read: `$KV.relay_ep.ep.<id>` last message from the stream leader.
    pub endpoint_read: Latency,
    /// Doorbell: core NATS publish + flush (PING/PONG).
    pub bell_flush: Latency,
    /// (b) `store.enqueue` of one message.
    pub enqueue: Latency,
    /// (b) `route::send` of one message (`n / 4` samples).
    pub route_send: Latency,
    /// `fetch` (take, limit 1) with one message ready, on a mailbox with no history but
    /// the messages this phase took.
    pub look_fresh: Latency,
    /// The same on the send phase's mailbox, with `n + 50` taken messages behind it.
    pub look: Latency,
    /// (c) Batched enqueue of [`FETCH_ACK_TOTAL`] messages, messages/s.
    pub batched_send_per_s: f64,
    /// (c) Fetch 100 under a lease + ack them, messages/s.
    pub fetch_ack_per_s: f64,
    /// (d) Stamp on A → B's `wait` returned with the message.
    pub wake: Latency,
    /// (d) A's `store.enqueue` inside the wake-up phase.
    pub wake_send: Latency,
    /// NATS URL machine A used / machine B used (credentials redacted).
    pub url_a: String,
    /// Machine B's URL.
    pub url_b: String,
    /// `enqueue.p50 / raw_publish.p50`.
    pub send_ratio: f64,
    /// `send_ratio ≤ 1.5`.
    pub send_goal_met: bool,
    /// `wake.p50 ≤ 5 ms`.
    pub wake_goal_met: bool,
}

fn body(stamp: u64) -> Vec<u8> {
    let mut b = format!("{stamp} ").into_bytes();
    b.resize(BODY_BYTES, b'x');
    b
}

fn endpoint(store: &dyn Store, name: &str) -> anyhow::Result<Endpoint> {
    Ok(store
        .register(&Registration {
            name: Some(name.into()),
            ..Default::default()
        })?
        .endpoint)
}

fn message(from: &Endpoint, to: &Endpoint, stamp: u64) -> NewMessage {
    NewMessage {
        from: from.id.clone(),
        to: to.id.clone(),
        thread: None,
        reply_to: None,
        intent: Intent::Notify,
        content_type: TEXT_PLAIN.into(),
        body: body(stamp),
        expires_at: None,
        hold: None,
    }
}

/// The servers to use: the bench's own cluster (kept alive by the returned value) or the
/// URLs of `given`.
///
/// # Errors
/// No nats-server binary (the message says how to get one), or a cluster that does not
/// start.
pub fn servers(
    given: Option<&str>,
) -> anyhow::Result<(Option<crate::natsd::Cluster>, Vec<String>)> {
    if let Some(g) = given {
        let urls: Vec<String> = g
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            bail!("--store '{g}' names no server");
        }
        return Ok((None, urls));
    }
    let cluster = crate::natsd::Cluster::start(3, CLUSTER_LIFETIME).map_err(|e| match e {
        crate::natsd::Error::NoServer { .. } => anyhow::anyhow!(
            "relay bench nats starts a local 3-node nats-server cluster, but {e}; \
             or pass --store nats://HOST:4222[,…] to measure a running cluster"
        ),
        e => anyhow::anyhow!("cannot start the local nats-server cluster: {e}"),
    })?;
    let urls = cluster.urls();
    Ok((Some(cluster), urls))
}

/// Runs `f` on a one-worker runtime and waits for it over a channel, as the store does.
fn hop<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().context("the hop runtime stopped")
}

fn relay_like_headers(from: &str, to: &str) -> HeaderMap {
    let id = uuid::Uuid::now_v7().to_string();
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", id.as_str());
    h.insert("Relay-Id", id.as_str());
    h.insert("Relay-From", from);
    h.insert("Relay-To", to);
    h.insert("Relay-From-Name", "bench-from");
    h.insert("Relay-Intent", "notify");
    h.insert("Relay-Content-Type", TEXT_PLAIN);
    h.insert("Relay-Created", crate::clock::now_ms().to_string());
    h
}

/// Raw clients next to the store: one on a current-thread runtime (the baseline), one on
/// a one-worker runtime (the facade hop).
struct Raw {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    client: async_nats::Client,
    hop_rt: tokio::runtime::Runtime,
    hop_js: jetstream::Context,
    ep_stream: stream::Stream,
}

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("relay-bench")
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {}", crate::store::redact(url)))
}

impl Raw {
    fn open(url: &str) -> anyhow::Result<Raw> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let hop_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let client = rt.block_on(connect(url))?;
        let js = {
            // jetstream::new needs a runtime context.
            let _in = rt.enter();
            jetstream::new(client.clone())
        };
        let u = url.to_string();
        let hop_js = hop(
            &hop_rt,
            async move { connect(&u).await.map(jetstream::new) },
        )??;
        let ep_stream = rt
            .block_on(js.get_stream(format!("KV_{EP_BUCKET}")))
            .context("the endpoints bucket's stream")?;
        Ok(Raw {
            rt,
            js,
            client,
            hop_rt,
            hop_js,
            ep_stream,
        })
    }

    /// Creates `BENCH_RAW` like the mail stream and tries to give it the same leader.
    /// Returns (nodes, replicas, mail leader, raw leader).
    fn create_raw_stream(&self) -> anyhow::Result<(usize, usize, String, String)> {
        self.rt.block_on(async {
            let mut mail = self.js.get_stream(MAIL_STREAM).await?;
            let info = mail.info().await?.clone();
            let mail_leader = info
                .cluster
                .as_ref()
                .and_then(|c| c.leader.clone())
                .unwrap_or_default();
            let _ = self.js.delete_stream(RAW_STREAM).await;
            let mut raw = self
                .js
                .create_stream(stream::Config {
                    name: RAW_STREAM.into(),
                    subjects: vec!["bench.raw.>".into()],
                    storage: info.config.storage,
                    num_replicas: info.config.num_replicas,
                    allow_direct: info.config.allow_direct,
                    duplicate_window: info.config.duplicate_window,
                    description: Some("relay bench nats baseline (deleted after)".into()),
                    ..Default::default()
                })
                .await?;
            // A guess for a cluster the bench did not start: INFO's connect_urls (which may
            // or may not list the node itself, and fills in as routes form).
            let si = self.client.server_info();
            let nodes = if si.cluster.is_some() {
                si.connect_urls.len().max(1)
            } else {
                1
            };
            let mut raw_leader = String::new();
            for attempt in 0..6 {
                raw_leader = raw
                    .info()
                    .await?
                    .cluster
                    .as_ref()
                    .and_then(|c| c.leader.clone())
                    .unwrap_or_default();
                if raw_leader == mail_leader || mail_leader.is_empty() || attempt == 5 {
                    break;
                }
                // Ask for the mail stream's leader (nats-server 2.11+ honours `preferred`).
                let _: Result<serde_json::Value, _> = self
                    .js
                    .request(
                        format!("STREAM.LEADER.STEPDOWN.{RAW_STREAM}"),
                        &serde_json::json!({"placement": {"preferred": mail_leader}}),
                    )
                    .await;
                let until = Instant::now() + Duration::from_secs(5);
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let l = raw
                        .info()
                        .await
                        .ok()
                        .and_then(|i| i.cluster.as_ref().and_then(|c| c.leader.clone()));
                    if l.as_deref().is_some_and(|l| !l.is_empty()) || Instant::now() > until {
                        break;
                    }
                }
            }
            anyhow::Ok((nodes, info.config.num_replicas, mail_leader, raw_leader))
        })
    }

    fn publish(&self, i: usize) -> anyhow::Result<()> {
        self.rt.block_on(async {
            self.js
                .publish(format!("bench.raw.{}", i % 16), Bytes::from(body(0)))
                .await?
                .await?;
            anyhow::Ok(())
        })
    }

    fn publish_headers(&self, i: usize, from: &str, to: &str) -> anyhow::Result<()> {
        let h = relay_like_headers(from, to);
        self.rt.block_on(async {
            self.js
                .publish_with_headers(format!("bench.raw.{}", i % 16), h, Bytes::from(body(0)))
                .await?
                .await?;
            anyhow::Ok(())
        })
    }

    fn publish_hop(&self, i: usize) -> anyhow::Result<()> {
        let js = self.hop_js.clone();
        hop(&self.hop_rt, async move {
            js.publish(format!("bench.raw.{}", i % 16), Bytes::from(body(0)))
                .await?
                .await?;
            anyhow::Ok(())
        })?
    }

    fn endpoint_read(&self, id: &str) -> anyhow::Result<()> {
        self.rt.block_on(async {
            self.ep_stream
                .get_last_raw_message_by_subject(&format!("$KV.{EP_BUCKET}.ep.{id}"))
                .await?;
            anyhow::Ok(())
        })
    }

    fn bell(&self) -> anyhow::Result<()> {
        self.rt.block_on(async {
            self.client
                .publish("relay.bell.bench-nobody", Bytes::from_static(b"mail:0"))
                .await?;
            self.client.flush().await?;
            anyhow::Ok(())
        })
    }

    fn delete_raw_stream(&self) {
        let _ = self.rt.block_on(self.js.delete_stream(RAW_STREAM));
    }

    fn version(&self) -> String {
        self.client.server_info().version
    }
}

/// A `relay bench-child` with its own home, host and store, stdin and stdout piped.
fn machine_child(
    home: &Path,
    host: &str,
    url: &str,
    args: &[&str],
) -> anyhow::Result<(
    std::process::Child,
    std::process::ChildStdin,
    mpsc::Receiver<String>,
)> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(home)?;
    let exe = std::env::current_exe().context("cannot find the relay binary")?;
    let mut child = Command::new(exe)
        .arg("bench-child")
        .args(args)
        .env("RELAY_HOME", home)
        .env("RELAY_HOST", host)
        .env("RELAY_STORE", url)
        .env_remove("RELAY_AS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the benchmark child")?;
    let stdin = child.stdin.take().context("child stdin")?;
    let rx = crate::subprocess::stdout_lines(&mut child, crate::subprocess::text)?;
    Ok((child, stdin, rx))
}

fn wake(
    dir: &Path,
    store: &dyn Store,
    url_a: &str,
    url_b: &str,
    tag: &str,
    k: usize,
    tick: &dyn Fn(),
) -> anyhow::Result<(Latency, Latency)> {
    let from = format!("nb-wake-from-{tag}");
    let to = format!("nb-wake-to-{tag}");
    endpoint(store, &from)?;
    endpoint(store, &to)?;
    let count = k.to_string();
    let (mut b, _b_in, b_lines) = machine_child(
        &dir.join("machine-b"),
        "bench-machine-b",
        url_b,
        &["waiter", "--as", &to, "--count", &count],
    )?;
    b_lines
        .recv_timeout(CHILD_DEADLINE)
        .context("machine B's waiter did not start")?;
    let (mut a, mut a_in, a_lines) = machine_child(
        &dir.join("machine-a"),
        "bench-machine-a",
        url_a,
        &["sender", "--as", &from, "--to", &to, "--count", &count],
    )?;
    a_lines
        .recv_timeout(CHILD_DEADLINE)
        .context("machine A's sender did not start")?;
    let (mut rec, mut send) = (Recorder::default(), Recorder::default());
    for i in 0..k {
        writeln!(a_in, "send")?;
        a_in.flush()?;
        let sent = a_lines
            .recv_timeout(CHILD_DEADLINE)
            .context("machine A stopped answering")?;
        send.record_us(sent.trim().parse().context("machine A printed no time")?);
        let line = b_lines
            .recv_timeout(CHILD_DEADLINE)
            .context("machine B stopped answering")?;
        rec.record_us(
            line.trim()
                .parse()
                .context("machine B printed no latency")?,
        );
        if i % BATCH == 0 {
            tick();
        }
    }
    drop(a_in);
    a.wait()?;
    b.wait()?;
    Ok((rec.latency(), send.latency()))
}

/// Machine A of the wake-up phase: prints "ready", then for each stdin line (at most
/// `count`) enqueues one message to `to` (a name, resolved once) with `now_us()` as the
/// first word of the body, and prints how long the enqueue took, µs.
///
/// # Errors
/// Store errors, an unknown `to`.
pub fn child_sender(
    store: &dyn Store,
    me: &Endpoint,
    to: &str,
    count: usize,
) -> anyhow::Result<()> {
    let target = match store.lookup(to)? {
        crate::store::Lookup::Found(e) => e,
        other => bail!("sender: '{to}' does not resolve: {other:?}"),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines().take(count) {
        line?;
        let t = Instant::now();
        store.enqueue(&message(me, &target, now_us()))?;
        writeln!(out, "{}", t.elapsed().as_micros())?;
        out.flush()?;
    }
    Ok(())
}

/// Takes every pending message of `to` (so a shared cluster keeps no bench mail).
fn drain(store: &dyn Store, to: &Endpoint) -> anyhow::Result<()> {
    let req = Fetch {
        limit: BATCH,
        mode: FetchMode::Take,
        filter: Filter::default(),
    };
    while !store.fetch(&to.id, &req)?.is_empty() {}
    Ok(())
}

fn redact_all(urls: &[String]) -> String {
    urls.iter()
        .map(|u| crate::store::redact(u))
        .collect::<Vec<_>>()
        .join(",")
}

/// Progress ticks [`run`] makes for `n` (one per 100 samples, per batch, per phase).
pub fn steps(n: usize) -> u64 {
    let k = (n / 4).max(100);
    (n.div_ceil(BATCH) + 2 * k.div_ceil(BATCH) + 2 * FETCH_ACK_TOTAL / BATCH + 2) as u64
}

/// Runs every phase with `n` samples per send-latency row against `given` (a `nats://`
/// location) or a local 3-node cluster it starts and stops.
///
/// # Errors
/// No server (the message says how to get one), or any store, NATS or process failure.
pub fn run(n: usize, given: Option<&str>, tick: &dyn Fn()) -> anyhow::Result<Report> {
    let load_at_start = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let (cluster, urls) = servers(given)?;
    let tmp = tempfile::Builder::new()
        .prefix("relay-bench-nats-")
        .tempdir()?;
    let dir = tmp.path();
    let k = (n / 4).max(100);
    // Latency phases: the store and the raw clients on the same node.
    let url_a = urls[0].clone();
    let url_b = urls.get(1).unwrap_or(&urls[0]).clone();
    let store_loc = if cluster.is_some() {
        url_a.clone()
    } else {
        urls.join(",")
    };
    let store = crate::store::open_at(&store_loc, &Config::at(dir.join("machine-a")))?;
    let raw = Raw::open(&url_a)?;
    let (nodes, replicas, mail_leader, raw_leader) = raw.create_raw_stream()?;
    // Our own cluster's size is known; INFO's connect_urls fills in as routes form.
    let nodes = cluster.as_ref().map_or(nodes, |c| c.len());
    tick();
    let result = (|| {
        let tag = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
        let from = endpoint(&*store, &format!("nb-from-{tag}"))?;
        let to = endpoint(&*store, &format!("nb-to-{tag}"))?;
        let rfrom = endpoint(&*store, &format!("nb-route-from-{tag}"))?;
        let rto_name = format!("nb-route-to-{tag}");
        let rto = endpoint(&*store, &rto_name)?;
        for i in 0..WARMUP {
            raw.publish(i)?;
            raw.publish_headers(i, &from.id, &to.id)?;
            raw.publish_hop(i)?;
            store.enqueue(&message(&from, &to, i as u64))?;
        }
        let mut rec: [Recorder; 7] = Default::default();
        let mut time = |r: usize, f: &mut dyn FnMut() -> anyhow::Result<()>| {
            let t = Instant::now();
            f()?;
            rec[r].record(t.elapsed());
            anyhow::Ok(())
        };
        for i in 0..n {
            time(0, &mut || raw.publish(i))?;
            time(1, &mut || raw.publish_headers(i, &from.id, &to.id))?;
            time(2, &mut || raw.publish_hop(i))?;
            time(3, &mut || raw.endpoint_read(&to.id))?;
            time(4, &mut || raw.bell())?;
            time(5, &mut || {
                store.enqueue(&message(&from, &to, i as u64))?;
                Ok(())
            })?;
            if i < k {
                time(6, &mut || {
                    route::send(
                        &*store,
                        SendRequest::text(rfrom.clone(), rto_name.as_str(), body(i as u64)),
                    )?;
                    Ok(())
                })?;
            }
            if i % BATCH == 0 {
                tick();
            }
        }
        drain(&*store, &to)?;
        drain(&*store, &rto)?;
        // The look a woken waiter makes: one ready message, take it.
        let take = Fetch {
            limit: 1,
            mode: FetchMode::Take,
            filter: Filter::default(),
        };
        // On a fresh mailbox, then on one with n + 50 taken messages behind it.
        let fresh = endpoint(&*store, &format!("nb-look-to-{tag}"))?;
        let (mut look_fresh, mut look) = (Recorder::default(), Recorder::default());
        for i in 0..k {
            for (ep, rec) in [(&fresh, &mut look_fresh), (&to, &mut look)] {
                store.enqueue(&message(&from, ep, i as u64))?;
                let t = Instant::now();
                let got = store.fetch(&ep.id, &take)?;
                rec.record(t.elapsed());
                if got.len() != 1 {
                    bail!("look: fetched {} messages, expected 1", got.len());
                }
            }
            if i % BATCH == 0 {
                tick();
            }
        }
        // Fetch + ack throughput.
        let tp_to = endpoint(&*store, &format!("nb-tp-to-{tag}"))?;
        let t = Instant::now();
        for _ in 0..FETCH_ACK_TOTAL / BATCH {
            let msgs: Vec<NewMessage> = (0..BATCH)
                .map(|i| message(&from, &tp_to, i as u64))
                .collect();
            store.enqueue_batch(&msgs)?;
            tick();
        }
        let batched_send_per_s = FETCH_ACK_TOTAL as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let done = super::mailbox::drain(&*store, &tp_to.id, &mut |_| tick())?;
        let fetch_ack_per_s = done as f64 / t.elapsed().as_secs_f64();
        if done != FETCH_ACK_TOTAL {
            bail!("fetch+ack saw {done} of {FETCH_ACK_TOTAL} messages");
        }
        let (wake, wake_send) = wake(dir, &*store, &url_a, &url_b, &tag, k, tick)?;
        tick();
        let [
            raw_publish,
            raw_publish_headers,
            raw_publish_hop,
            endpoint_read,
            bell_flush,
            enqueue,
            route_send,
        ] = rec.map(|r| r.latency());
        let send_ratio = enqueue.p50_us / raw_publish.p50_us.max(0.001);
        Ok(Report {
            machine: Machine::detect(),
            load_at_start: load_at_start.clone(),
            server_version: raw.version(),
            own_cluster: cluster.is_some(),
            nodes,
            replicas,
            mail_leader: mail_leader.clone(),
            raw_leader: raw_leader.clone(),
            n,
            raw_publish,
            raw_publish_headers,
            raw_publish_hop,
            endpoint_read,
            bell_flush,
            enqueue,
            route_send,
            look_fresh: look_fresh.latency(),
            look: look.latency(),
            batched_send_per_s,
            fetch_ack_per_s,
            wake,
            wake_send,
            url_a: crate::store::redact(&url_a),
            url_b: crate::store::redact(&url_b),
            send_ratio,
            send_goal_met: send_ratio <= SEND_GOAL_RATIO,
            wake_goal_met: wake.p50_us <= WAKE_GOAL_US,
        })
    })();
    raw.delete_raw_stream();
    drop(store);
    drop(cluster);
    result.with_context(|| format!("relay bench nats against {}", redact_all(&urls)))
}

/// The report as Markdown, for bench/results/nats.md.
pub fn markdown(r: &Report, when: &str) -> String {
    let row = |name: &str, l: &Latency| {
        format!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} |\n",
            l.samples, l.p50_us, l.p99_us, l.max_us
        )
    };
    let mut s = super::report_header(
        "relay bench nats",
        &format!("relay bench nats --n {}", r.n),
        &r.machine,
        when,
    );
    s += &format!(
        "Server: nats-server {}, {}, {} node(s), mail stream R{} (`BENCH_RAW` the same), \
         leaders: `RELAY_MAIL` on {}, `BENCH_RAW` on {}. Latency phases connect to {}; \
         machine A to {}, machine B to {}. Load average at start: {} (other work shares \
         these cores with the 3 nodes and the bench).\n\n",
        r.server_version,
        if r.own_cluster {
            "the bench's own local cluster (127.0.0.1, file storage, `sync_interval: always`)"
        } else {
            "the cluster given with --store"
        },
        r.nodes,
        r.replicas,
        r.mail_leader,
        r.raw_leader,
        r.url_a,
        r.url_a,
        r.url_b,
        r.load_at_start,
    );
    s += "## Latency (µs)\n\n| what | samples | p50 | p99 | max |\n|---|---|---|---|---|\n";
    s += &row(
        "baseline: raw JetStream publish + ack, 256 B",
        &r.raw_publish,
    );
    s += &row("relay `store.enqueue` (store-level send)", &r.enqueue);
    s += &row(
        "relay `route::send` (what bench mailbox times)",
        &r.route_send,
    );
    s += &row(
        "part: raw publish + ack with relay's envelope headers",
        &r.raw_publish_headers,
    );
    s += &row(
        "part: raw publish + ack via 1-worker runtime + channel",
        &r.raw_publish_hop,
    );
    s += &row(
        "part: endpoint read (KV last-by-subject, leader)",
        &r.endpoint_read,
    );
    s += &row("part: doorbell publish + flush", &r.bell_flush);
    s += &row(
        "look: `fetch` take 1 of 1 ready message, fresh mailbox",
        &r.look_fresh,
    );
    s += &row(
        &format!(
            "look: the same with {} taken messages behind it",
            r.n + WARMUP
        ),
        &r.look,
    );
    s += &row(
        "wake-up: stamp on A → `wait` returns on B (2 processes, 2 nodes)",
        &r.wake,
    );
    s += &row("wake-up: A's `store.enqueue` in that phase", &r.wake_send);
    s += &format!(
        "\n## Throughput\n\n| what | messages/s |\n|---|---|\n\
         | batched send ({BATCH} per `enqueue_batch`, {FETCH_ACK_TOTAL} total) | {:.0} |\n\
         | fetch {BATCH} under a lease + ack | {:.0} |\n",
        r.batched_send_per_s, r.fetch_ack_per_s
    );
    let yes = |b: bool| if b { "**met**" } else { "**not met**" };
    s += &format!(
        "\n## Goals\n\n| goal | measured | |\n|---|---|---|\n\
         | send p50 ≤ {SEND_GOAL_RATIO}× the raw publish p50 | {:.0} µs / {:.0} µs = {:.2}× | {} |\n\
         | waiter on machine B wakes ≤ {:.0} ms p50 after the send on A | {:.2} ms | {} |\n",
        r.enqueue.p50_us,
        r.raw_publish.p50_us,
        r.send_ratio,
        yes(r.send_goal_met),
        WAKE_GOAL_US / 1000.0,
        r.wake.p50_us / 1000.0,
        yes(r.wake_goal_met),
    );
    s += &format!(
        "\nBody {BODY_BYTES} bytes. The send rows are interleaved sample by sample ({} \
         warm-up rounds unrecorded). A send is: endpoint reads (cached for 2 s, so a tight \
         loop pays them once per 2 s), one publish with headers and its ack, the doorbell \
         publish and a flush, all on the store's own runtime behind a channel. \
         `route::send` adds the target lookup and the loop guard (a scan of the sender's \
         sends in the last minute). The wake-up adds to A's enqueue the doorbell's trip \
         across the cluster and B's look (a scan of its mailbox and the receipt CAS of the \
         take).\n",
        WARMUP
    );
    s
}
