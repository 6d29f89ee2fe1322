//! `relay bench mailbox`: what the durable mailbox costs.
//!
//! - **send latency** — one `route::send` (resolve, decide, one `BEGIN IMMEDIATE`
//!   transaction, doorbell ring), 256-byte body, `synchronous=NORMAL` and `FULL`;
//!   baseline: a raw SQLite `INSERT` of the same row in its own transaction, same pragmas.
//! - **batched send** — `enqueue_batch` of 100 messages per transaction, messages/s.
//! - **fetch + ack** — `fetch` 100 under a lease, then `ack` them, messages/s.
//! - **wake-up** — a sender process stamps the time and sends; a separate waiter process
//!   blocked in `wait` prints how long until it held the message. Baseline: one-way latency
//!   (round trip / 2) of an 8-byte ping-pong over a raw Unix socket between two processes.
//!
//! With `--store nats://…` ([`run_on`]) the store-level phases run against that NATS
//! store instead (send, batched send, fetch + ack, wake-up); `synchronous=FULL` and the raw
//! SQLite insert are SQLite-only and skipped. `relay bench nats` compares NATS with raw
//! JetStream.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;

use super::{Latency, Machine, Recorder};
use crate::clock::{now_ms, now_us};
use crate::config::{Config, Durability};
use crate::route::{self, SendRequest};
use crate::store::{
    Endpoint, Fetch, FetchMode, Filter, Intent, NewMessage, Registration, SqliteStore, Store,
    TEXT_PLAIN,
};

/// Body size used throughout, bytes.
pub const BODY_BYTES: usize = 256;
/// Messages per transaction in the batched-send phase.
pub const BATCH: usize = 100;

/// Everything `relay bench mailbox` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The store measured: `sqlite` (a temporary home) or the NATS URLs (redacted).
    pub store: String,
    /// Sends per latency phase.
    pub n: usize,
    /// `route::send`, synchronous=NORMAL.
    pub send_normal: Latency,
    /// `route::send`, synchronous=FULL (None: skipped, SQLite-only).
    pub send_full: Option<Latency>,
    /// Baseline: raw SQLite insert, one row per transaction, synchronous=NORMAL (None:
    /// skipped, SQLite-only).
    pub baseline_insert_normal: Option<Latency>,
    /// Batched send throughput, messages/s.
    pub batched_send_per_s: f64,
    /// Fetch + ack throughput, messages/s.
    pub fetch_ack_per_s: f64,
    /// Send in one process → `wait` returns in another.
    pub wake: Latency,
    /// Baseline: raw Unix-socket one-way latency between two processes (RTT / 2).
    pub baseline_socket_one_way: Latency,
}

fn endpoint(store: &dyn Store, name: &str) -> anyhow::Result<Endpoint> {
    Ok(store
        .register(&Registration {
            name: Some(name.into()),
            ..Default::default()
        })?
        .endpoint)
}

fn body(stamp: u64) -> Vec<u8> {
    let mut b = format!("{stamp} ").into_bytes();
    b.resize(BODY_BYTES, b'x');
    b
}

fn send_latency(
    home: &Path,
    durability: Durability,
    n: usize,
    tick: &dyn Fn(),
) -> anyhow::Result<Latency> {
    let mut cfg = Config::at(home);
    cfg.durability = durability;
    let store = SqliteStore::open(&cfg)?;
    send_latency_on(&store, "", n, tick)
}

/// `route::send` latency on `store`; endpoint names end in `tag` (unique on a shared store).
fn send_latency_on(
    store: &dyn Store,
    tag: &str,
    n: usize,
    tick: &dyn Fn(),
) -> anyhow::Result<Latency> {
    let from = endpoint(store, &format!("bench-from{tag}"))?;
    let to = format!("bench-to{tag}");
    endpoint(store, &to)?;
    let mut rec = Recorder::default();
    for i in 0..n {
        let req = SendRequest::text(from.clone(), to.as_str(), body(i as u64));
        let t = Instant::now();
        route::send(store, req)?;
        rec.record(t.elapsed());
        tick();
    }
    Ok(rec.latency())
}

fn baseline_insert(dir: &Path, n: usize, tick: &dyn Fn()) -> anyhow::Result<Latency> {
    let mut conn = Connection::open(dir.join("baseline.db"))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE m (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, \
         sender TEXT, recipient TEXT, body BLOB, created_at INTEGER)",
    )?;
    let mut rec = Recorder::default();
    for i in 0..n {
        let id = uuid::Uuid::now_v7().to_string();
        let b = body(i as u64);
        let t = Instant::now();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO m (id, sender, recipient, body, created_at) VALUES (?1, 'a', 'b', ?2, ?3)",
        )?
        .execute(params![id, b, now_ms()])?;
        tx.commit()?;
        rec.record(t.elapsed());
        tick();
    }
    Ok(rec.latency())
}

fn throughput(home: &Path, n: usize, tick: &dyn Fn(u64)) -> anyhow::Result<(f64, f64)> {
    let store = SqliteStore::open(&Config::at(home))?;
    throughput_on(&store, "", n, tick)
}

fn throughput_on(
    store: &dyn Store,
    tag: &str,
    n: usize,
    tick: &dyn Fn(u64),
) -> anyhow::Result<(f64, f64)> {
    let from = endpoint(store, &format!("tp-from{tag}"))?;
    let to = endpoint(store, &format!("tp-to{tag}"))?;
    let batches = n.div_ceil(BATCH);
    let t = Instant::now();
    for _ in 0..batches {
        let msgs: Vec<NewMessage> = (0..BATCH)
            .map(|i| NewMessage {
                from: from.id.clone(),
                to: to.id.clone(),
                thread: None,
                reply_to: None,
                intent: Intent::Notify,
                content_type: TEXT_PLAIN.into(),
                body: body(i as u64),
                expires_at: None,
                hold: None,
            })
            .collect();
        store.enqueue_batch(&msgs)?;
        tick(BATCH as u64);
    }
    let total = (batches * BATCH) as f64;
    let send_rate = total / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let done = drain(store, &to.id, &mut |n| tick(n))?;
    if done != batches * BATCH {
        bail!("fetch+ack saw {done} of {} messages", batches * BATCH);
    }
    Ok((send_rate, done as f64 / t.elapsed().as_secs_f64()))
}

/// Fetches `to`'s mail `BATCH` at a time under a 60 s lease and acks each batch, until the
/// mailbox is empty; `tick(n)` after each batch. Returns how many were acked.
///
/// # Errors
/// Store errors.
pub(super) fn drain(
    store: &dyn Store,
    to: &str,
    tick: &mut dyn FnMut(u64),
) -> anyhow::Result<usize> {
    let req = Fetch {
        limit: BATCH,
        mode: FetchMode::Deliver {
            lease: Duration::from_secs(60),
        },
        filter: Filter::default(),
    };
    let mut done = 0;
    loop {
        let got = store.fetch(to, &req)?;
        if got.is_empty() {
            return Ok(done);
        }
        let ids: Vec<String> = got.into_iter().map(|m| m.id).collect();
        store.ack(Some(to), &ids)?;
        done += ids.len();
        tick(ids.len() as u64);
    }
}

fn spawn_child(
    home: &Path,
    location: Option<&str>,
    args: &[&str],
) -> anyhow::Result<(std::process::Child, mpsc::Receiver<String>)> {
    let exe = std::env::current_exe().context("cannot find the relay binary")?;
    let mut cmd = Command::new(exe);
    match location {
        Some(l) => cmd.env("RELAY_STORE", l),
        None => cmd.env_remove("RELAY_STORE"),
    };
    let mut child = cmd
        .arg("bench-child")
        .args(args)
        .env("RELAY_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the benchmark child")?;
    let rx = crate::subprocess::stdout_lines(&mut child, crate::subprocess::text)?;
    Ok((child, rx))
}

const CHILD_DEADLINE: Duration = Duration::from_secs(30);

fn wake(home: &Path, k: usize, tick: &dyn Fn()) -> anyhow::Result<Latency> {
    let store = SqliteStore::open(&Config::at(home))?;
    wake_on(&store, home, None, "", k, tick)
}

fn wake_on(
    store: &dyn Store,
    home: &Path,
    location: Option<&str>,
    tag: &str,
    k: usize,
    tick: &dyn Fn(),
) -> anyhow::Result<Latency> {
    let from = endpoint(store, &format!("wake-from{tag}"))?;
    let to = format!("wake-to{tag}");
    endpoint(store, &to)?;
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(home)?;
    let (mut child, lines) = spawn_child(
        home,
        location,
        &["waiter", "--as", &to, "--count", &k.to_string()],
    )?;
    let mut rec = Recorder::default();
    // The first line says the waiter is up, so process start is not measured.
    lines
        .recv_timeout(CHILD_DEADLINE)
        .context("waiter did not start")?;
    for _ in 0..k {
        route::send(
            store,
            SendRequest::text(from.clone(), to.as_str(), body(now_us())),
        )?;
        let line = lines
            .recv_timeout(CHILD_DEADLINE)
            .context("waiter stopped answering")?;
        rec.record_us(line.trim().parse().context("waiter printed no latency")?);
        tick();
    }
    child.wait()?;
    Ok(rec.latency())
}

fn socket_baseline(dir: &Path, k: usize) -> anyhow::Result<Latency> {
    let (mut child, mut s) =
        super::raw_child(dir, "echo.sock", "echo", &["--count".into(), k.to_string()])?;
    let mut rec = Recorder::default();
    let mut buf = [0u8; 8];
    for i in 0..k as u64 {
        let t = Instant::now();
        s.write_all(&i.to_le_bytes())?;
        s.read_exact(&mut buf)?;
        rec.record(t.elapsed() / 2);
    }
    child.wait()?;
    Ok(rec.latency())
}

/// The waiter child: prints "ready", then for each of `count` messages the microseconds
/// from the sender's stamp (first word of the body) to holding it.
///
/// # Errors
/// Store errors, or no message within 30 s.
pub fn child_waiter(store: &dyn Store, me: &Endpoint, count: usize) -> anyhow::Result<()> {
    let req = Fetch {
        limit: 1,
        mode: FetchMode::Take,
        filter: Filter::default(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for _ in 0..count {
        let got = store.wait(&me.id, &req, CHILD_DEADLINE)?;
        let now = now_us();
        let Some(m) = got.first() else {
            bail!("waiter: no message within {CHILD_DEADLINE:?}");
        };
        let stamp: u64 = m
            .text()
            .split(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        writeln!(out, "{}", now.saturating_sub(stamp))?;
        out.flush()?;
    }
    Ok(())
}

/// Progress callbacks: (phase name, total steps) to start a phase, then steps done.
pub trait Progress {
    /// A phase of `total` steps begins.
    fn phase(&self, name: &str, total: u64);
    /// `n` steps of the current phase are done.
    fn step(&self, n: u64);
}

/// Runs every phase with `n` sends per latency phase (wake-up and socket use `n / 4`,
/// at least 100). Works in a temporary directory that is removed afterwards.
///
/// # Errors
/// Any store, process or socket failure.
pub fn run(n: usize, progress: &dyn Progress) -> anyhow::Result<Report> {
    let tmp = tempfile::Builder::new().prefix("relay-bench-").tempdir()?;
    let dir = tmp.path();
    let k = (n / 4).max(100);
    let tick = || progress.step(1);
    progress.phase("send (synchronous=NORMAL)", n as u64);
    let send_normal = send_latency(&dir.join("normal"), Durability::Normal, n, &tick)?;
    progress.phase("baseline: raw SQLite insert", n as u64);
    let baseline_insert_normal = baseline_insert(dir, n, &tick)?;
    progress.phase("send (synchronous=FULL)", k as u64);
    let send_full = send_latency(&dir.join("full"), Durability::Full, k, &tick)?;
    progress.phase(
        "batched send, then fetch + ack",
        2 * n.div_ceil(BATCH) as u64 * BATCH as u64,
    );
    let (batched_send_per_s, fetch_ack_per_s) =
        throughput(&dir.join("tp"), n, &|c| progress.step(c))?;
    progress.phase("wake-up across processes", k as u64);
    let wake = wake(&dir.join("wake"), k, &tick)?;
    progress.phase("baseline: raw Unix socket", 1);
    let baseline_socket_one_way = socket_baseline(dir, k.max(1000))?;
    progress.step(1);
    Ok(Report {
        machine: Machine::detect(),
        store: "sqlite".into(),
        n,
        send_normal,
        send_full: Some(send_full),
        baseline_insert_normal: Some(baseline_insert_normal),
        batched_send_per_s,
        fetch_ack_per_s,
        wake,
        baseline_socket_one_way,
    })
}

/// [`run`]'s store-level phases against the store at `location` (a `nats://` location):
/// send, batched send, fetch + ack and wake-up (the waiter child gets `RELAY_STORE`), and
/// the socket baseline. `synchronous=FULL` and the raw SQLite insert are SQLite-only:
/// skipped (None). Endpoint names get a per-run suffix, and the mail the send phase
/// leaves is taken afterwards, so a shared cluster keeps no pending bench mail.
///
/// # Errors
/// The store cannot be opened; any store, process or socket failure.
pub fn run_on(location: &str, n: usize, progress: &dyn Progress) -> anyhow::Result<Report> {
    let tmp = tempfile::Builder::new().prefix("relay-bench-").tempdir()?;
    let dir = tmp.path();
    let k = (n / 4).max(100);
    let tick = || progress.step(1);
    let tag = format!("-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let store = crate::store::open_at(location, &Config::at(dir.join("home")))?;
    progress.phase("send", n as u64);
    let send_normal = send_latency_on(&*store, &tag, n, &tick)?;
    if let crate::store::Lookup::Found(to) = store.lookup(&format!("bench-to{tag}"))? {
        let take = Fetch {
            limit: BATCH,
            mode: FetchMode::Take,
            filter: Filter::default(),
        };
        while !store.fetch(&to.id, &take)?.is_empty() {}
    }
    progress.phase(
        "batched send, then fetch + ack",
        2 * n.div_ceil(BATCH) as u64 * BATCH as u64,
    );
    let (batched_send_per_s, fetch_ack_per_s) =
        throughput_on(&*store, &tag, n, &|c| progress.step(c))?;
    progress.phase("wake-up across processes", k as u64);
    let wake = wake_on(&*store, &dir.join("wake"), Some(location), &tag, k, &tick)?;
    progress.phase("baseline: raw Unix socket", 1);
    let baseline_socket_one_way = socket_baseline(dir, k.max(1000))?;
    progress.step(1);
    let shown = location
        .split(',')
        .map(|u| crate::store::redact(u.trim()))
        .collect::<Vec<_>>()
        .join(",");
    Ok(Report {
        machine: Machine::detect(),
        store: shown,
        n,
        send_normal,
        send_full: None,
        baseline_insert_normal: None,
        batched_send_per_s,
        fetch_ack_per_s,
        wake,
        baseline_socket_one_way,
    })
}

/// The report as Markdown, for bench/results/mailbox.md.
pub fn markdown(r: &Report, when: &str) -> String {
    let row = |name: &str, l: &Latency| {
        format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |\n",
            l.samples, l.p50_us, l.p99_us, l.max_us
        )
    };
    let skipped = |name: &str| format!("| {name} | skipped: SQLite-only | | | |\n");
    let sqlite = r.store == "sqlite";
    let command = if sqlite {
        format!("relay bench mailbox --n {}", r.n)
    } else {
        format!("relay bench mailbox --n {} --store {}", r.n, r.store)
    };
    let mut s = super::report_header("relay bench mailbox", &command, &r.machine, when);
    if !sqlite {
        s += &format!("Store: NATS JetStream at {}.\n\n", r.store);
    }
    s += "## Latency (µs)\n\n| what | samples | p50 | p99 | max |\n|---|---|---|---|---|\n";
    s += &row(
        if sqlite {
            "relay send, synchronous=NORMAL"
        } else {
            "relay send (NATS)"
        },
        &r.send_normal,
    );
    s += &match &r.baseline_insert_normal {
        Some(l) => row("baseline: raw SQLite insert, NORMAL", l),
        None => skipped("baseline: raw SQLite insert, NORMAL"),
    };
    s += &match &r.send_full {
        Some(l) => row("relay send, synchronous=FULL", l),
        None => skipped("relay send, synchronous=FULL"),
    };
    s += &row("wake-up: send → wait returns (2 processes)", &r.wake);
    s += &row(
        "baseline: raw Unix socket one-way",
        &r.baseline_socket_one_way,
    );
    s += &format!(
        "\n## Throughput\n\n| what | messages/s |\n|---|---|\n\
         | batched send ({BATCH} per transaction) | {:.0} |\n| fetch + ack ({BATCH} per call) | {:.0} |\n",
        r.batched_send_per_s, r.fetch_ack_per_s
    );
    let Some(base) = r.baseline_insert_normal.filter(|_| sqlite) else {
        s += &format!(
            "\nBody {BODY_BYTES} bytes. The raw SQLite baseline does not apply to NATS: \
             `relay bench nats` compares a send with a raw JetStream publish.\n"
        );
        return s;
    };
    s += &format!(
        "\nBody {BODY_BYTES} bytes. Anchor: mcp_agent_mail_rust budgets 11.7 ms p50 to write one \
         message; relay's goal is ≤ 1 ms p50 with synchronous=NORMAL (measured: {:.1} µs, \
         {:.2}× the raw SQLite insert).\n",
        r.send_normal.p50_us,
        r.send_normal.p50_us / base.p50_us.max(0.001)
    );
    s
}
