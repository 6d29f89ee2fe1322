//! The NATS JetStream store across "machines" and through node failures, with real
//! processes: a local nats-server cluster (`relay::natsd`), two relay homes standing for
//! two machines (`RELAY_HOST=machine-a` / `machine-b`, both on `RELAY_STORE=<url list>`),
//! and the built `relay` binary for every send and read.
//!
//! Every test skips without a nats-server binary (set `RELAY_NATS_SERVER`) and fails
//! instead under `RELAY_REQUIRE_NATS=1`.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Home, Run, wait_with_deadline};
use relay::natsd::Cluster;
use serde_json::{Value, json};

/// Deadline of one relay invocation here: a store write retries for at most 20 s.
const CMD_DEADLINE: Duration = Duration::from_secs(45);

/// The Claude Code fixture session (tests/fixtures/claude/*.json): cwd /work/app, so its
/// name is `app-e5f6`.
const SESSION: &str = "7c1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6";
const SESSION_NAME: &str = "app-e5f6";

/// One "machine": its own relay home and host name, on the shared cluster.
struct Machine {
    home: Home,
    host: &'static str,
    store: String,
}

impl Machine {
    fn new(host: &'static str, cluster: &Cluster) -> Machine {
        Machine {
            home: Home::new(),
            host,
            store: cluster.url_list(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.home.cmd(args);
        c.env("RELAY_STORE", &self.store)
            .env("RELAY_HOST", self.host);
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        common::run(self.cmd(args), None, CMD_DEADLINE)
    }

    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        common::run(self.cmd(args), Some(stdin), CMD_DEADLINE)
    }

    /// `relay args… --json`, asserting exit 0; the parsed document.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let r = self.run(&a);
        assert_eq!(
            r.code, 0,
            "[{}] relay {a:?} failed: {}\n{}",
            self.host, r.stderr, r.stdout
        );
        r.doc()
    }

    fn register(&self, name: &str) -> String {
        let d = self.json(&["register", name]);
        assert_eq!(d["endpoint"]["host"], self.host, "{d}");
        d["endpoint"]["id"].as_str().unwrap().to_string()
    }

    /// `relay roster --json` endpoints by name.
    fn roster(&self) -> HashMap<String, Value> {
        let d = self.json(&["roster"]);
        d["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_string(),
                    e.clone(),
                )
            })
            .collect()
    }
}

fn start_cluster(nodes: usize, lifetime: Duration) -> Cluster {
    Cluster::start(nodes, lifetime).unwrap_or_else(|e| panic!("nats cluster: {e}"))
}

/// Every JSON document on `stdout` (a failed ack after printing may add an error one).
fn docs(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel),
    )
    .unwrap()
}

/// Polls `relay status <id> --json` on `m` until the state is `want` (the observer).
fn wait_state(m: &Machine, id: &str, want: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    let mut last = Value::Null;
    while Instant::now() < end {
        let r = m.run(&["status", id, "--json"]);
        if r.code == 0 {
            last = r.doc();
            if last["state"] == want {
                return;
            }
        } else {
            last = json!({"exit": r.code, "stderr": r.stderr});
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "[{}] status {id} did not reach {want} within {deadline:?}; last: {last}",
        m.host
    );
}

#[test]
fn two_machines_share_one_bus() {
    if relay::natsd::skip_or_fail("two_machines_share_one_bus") {
        return;
    }
    let _one = serial();
    let cluster = start_cluster(3, Duration::from_secs(120));
    let a = Machine::new("machine-a", &cluster);
    let b = Machine::new("machine-b", &cluster);
    let alice = a.register("alice");
    let bob = b.register("bob");

    // B waits first; A sends; B's wait prints it.
    let mut waiter = b
        .cmd(&["wait", "--as", "bob", "--timeout", "30s", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "wait returned before any mail was sent"
    );
    let sent = a.json(&["send", "bob", "--as", "alice", "hi from A"]);
    let id = sent["id"].as_str().unwrap().to_string();
    assert_eq!(sent["to"], bob.as_str(), "{sent}");
    let out = wait_with_deadline(waiter, Duration::from_secs(40), "relay wait on B");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wait on B: {:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    let msgs = doc["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{doc}");
    assert_eq!(msgs[0]["id"], id.as_str());
    assert_eq!(msgs[0]["body"], "hi from A");
    assert_eq!(msgs[0]["from"], alice.as_str());
    assert_eq!(msgs[0]["from_name"], "alice");
    wait_state(&a, &id, "acked", Duration::from_secs(15));

    // One roster, seen from both machines, each endpoint with its own host.
    for m in [&a, &b] {
        let r = m.roster();
        assert_eq!(r["bob"]["host"], "machine-b", "[{}] {r:?}", m.host);
        assert_eq!(r["alice"]["host"], "machine-a", "[{}] {r:?}", m.host);
        assert_eq!(r["bob"]["id"], bob.as_str());
        assert_eq!(r["alice"]["id"], alice.as_str());
    }

    // B reads through MCP.
    let sent = a.json(&["send", "bob", "--as", "alice", "mcp mail from A"]);
    let id2 = sent["id"].as_str().unwrap().to_string();
    let mut mcp = common::mcp::Mcp::start_cmd(b.cmd(&["mcp", "--as", "bob"]));
    let (err, inbox) = mcp.tool("inbox", json!({}));
    assert!(!err, "mcp inbox failed: {inbox}");
    let msgs = inbox["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{inbox}");
    assert_eq!(msgs[0]["id"], id2.as_str());
    assert_eq!(msgs[0]["body"], "mcp mail from A");
    assert_eq!(inbox["acked"], true, "{inbox}");
    // The ack follows the sent response: keep the server running until it is committed.
    wait_state(&a, &id2, "acked", Duration::from_secs(15));
    drop(mcp);

    // B reads through the Claude Code hooks: SessionStart registers the session on B.
    let r = b.run_stdin(
        &["hook", "claude", "session-start"],
        &fixture("claude/session_start.json"),
    );
    assert_eq!(r.code, 0, "hooks exit 0: {}", r.stderr);
    assert!(
        r.stdout.contains(SESSION),
        "session-start: {} {}",
        r.stdout,
        r.stderr
    );
    let roster = a.roster();
    let session = roster
        .get(SESSION_NAME)
        .unwrap_or_else(|| panic!("the session is not in A's roster: {roster:?}"));
    assert_eq!(session["id"], SESSION);
    assert_eq!(session["host"], "machine-b", "{session}");
    let sent = a.json(&["send", SESSION_NAME, "--as", "alice", "hook mail from A"]);
    let id3 = sent["id"].as_str().unwrap().to_string();
    let r = b.run_stdin(
        &["hook", "claude", "user-prompt-submit"],
        &fixture("claude/user_prompt_submit.json"),
    );
    assert_eq!(r.code, 0, "hooks exit 0: {}", r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "user-prompt-submit output is not JSON ({e}): {:?} stderr {}",
            r.stdout, r.stderr
        )
    });
    let ctx = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap_or_else(|| panic!("no additionalContext: {v}"));
    assert!(ctx.contains("hook mail from A"), "{ctx}");
    assert!(ctx.contains(&id3) && ctx.contains("alice"), "{ctx}");
    let fences = regex::Regex::new(r"(?i)<\s*/?\s*relay[\s_\-]*mail")
        .unwrap()
        .find_iter(ctx)
        .count();
    assert_eq!(fences, 2, "exactly one fence around the mail: {ctx}");
    wait_state(&a, &id3, "acked", Duration::from_secs(15));
}

// ---- node failures under load ----

const SENDERS: usize = 16;
const BATCHES: usize = 10;
const PER_BATCH: usize = 20;
const SINKS: usize = 4;

/// One `relay wait` by a reader: when it ran, what it returned, whether it acked.
struct Read {
    start: Instant,
    end: Instant,
    /// (id, body) of every message printed.
    msgs: Vec<(String, String)>,
    /// Exit 0 with `acked: true`: the ack is committed.
    acked: bool,
    /// Which machine read, and the exit code.
    host: &'static str,
    code: i32,
}

#[derive(Default)]
struct Ledger {
    reads: Vec<Read>,
    /// Ids printed by any reader so far.
    seen: HashSet<String>,
    /// Reader invocations that failed (exit not 0 or 4), with the first stderr line.
    errors: Vec<String>,
}

fn sink_name(k: usize) -> String {
    format!("sink{k}")
}

#[test]
fn node_kill_during_concurrent_traffic_loses_nothing() {
    if relay::natsd::skip_or_fail("node_kill_during_concurrent_traffic_loses_nothing") {
        return;
    }
    let _one = serial();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(150);
    let mut cluster = start_cluster(3, Duration::from_secs(200));
    let a = Arc::new(Machine::new("machine-a", &cluster));
    let b = Arc::new(Machine::new("machine-b", &cluster));
    // Sinks 0, 1 live on A, 2, 3 on B; senders 0-7 on A, 8-15 on B; sender s writes to
    // sink s % 4, so both machines send to both machines.
    for k in 0..SINKS {
        let m = if k < SINKS / 2 { &a } else { &b };
        m.register(&sink_name(k));
    }
    for s in 0..SENDERS {
        let m = if s < SENDERS / 2 { &a } else { &b };
        m.register(&format!("s{s}"));
    }

    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // 0 start, 1 first node down, 2 it is back, 3 leader down, 4 leader back.
    let phase = Arc::new(AtomicUsize::new(0));
    let batches_done = Arc::new(AtomicUsize::new(0));

    // Readers: every sink is read from both machines at once.
    let readers: Vec<_> = (0..SINKS * 2)
        .map(|r| {
            let m = if r % 2 == 0 { a.clone() } else { b.clone() };
            let (ledger, stop) = (ledger.clone(), stop.clone());
            let sink = sink_name(r / 2);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline, "reader ran past the deadline");
                    let start = Instant::now();
                    let r = m.run(&[
                        "wait",
                        "--as",
                        &sink,
                        "--timeout",
                        "2s",
                        "--limit",
                        "100",
                        "--lease",
                        "10s",
                        "--json",
                    ]);
                    let end = Instant::now();
                    let ds = docs(&r.stdout);
                    let msgs: Vec<(String, String)> = ds
                        .iter()
                        .filter_map(|d| d["messages"].as_array())
                        .flatten()
                        .map(|m| {
                            (
                                m["id"].as_str().unwrap().to_string(),
                                m["body"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect();
                    let acked = r.code == 0 && ds.first().is_some_and(|d| d["acked"] == true);
                    let mut l = ledger.lock().unwrap();
                    if r.code != 0 && r.code != 4 {
                        l.errors.push(format!(
                            "[{}] {sink} exit {}: {}",
                            m.host,
                            r.code,
                            r.stderr.lines().last().unwrap_or_default()
                        ));
                    }
                    for (id, _) in &msgs {
                        l.seen.insert(id.clone());
                    }
                    if !msgs.is_empty() {
                        l.reads.push(Read {
                            start,
                            end,
                            msgs,
                            acked,
                            host: m.host,
                            code: r.code,
                        });
                    }
                }
            })
        })
        .collect();

    // Senders: BATCHES `relay send --stdin --lines` runs of PER_BATCH lines each; a batch
    // is gated on the failure phase so the kills fall in the middle of the traffic.
    let gate = |b: usize| match b {
        0..=2 => 0,
        3..=4 => 1,
        5..=6 => 2,
        7..=8 => 3,
        _ => 4,
    };
    type Outcome = (Vec<(String, String)>, Vec<(String, String)>);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let m = if s < SENDERS / 2 {
                a.clone()
            } else {
                b.clone()
            };
            let (phase, done) = (phase.clone(), batches_done.clone());
            std::thread::spawn(move || -> Outcome {
                // (id, body) confirmed; (body, error) failed.
                let (mut ok, mut failed) = (Vec::new(), Vec::new());
                let me = format!("s{s}");
                let to = sink_name(s % SINKS);
                for bi in 0..BATCHES {
                    while phase.load(Ordering::SeqCst) < gate(bi) {
                        assert!(
                            Instant::now() < deadline,
                            "sender {s} gated past the deadline"
                        );
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let bodies: Vec<String> =
                        (0..PER_BATCH).map(|i| format!("{me} b{bi} m{i}")).collect();
                    let input = bodies.join("\n") + "\n";
                    let mut cmd =
                        m.cmd(&["send", &to, "--as", &me, "--stdin", "--lines", "--json"]);
                    // The store's retries, kept (stderr) for a batch that fails.
                    cmd.env(
                        "RELAY_LOG",
                        std::env::var("NATS_CLUSTER_SEND_LOG")
                            .unwrap_or_else(|_| "warn,relay::store=debug".into()),
                    );
                    let started = Instant::now();
                    let r = common::run(cmd, Some(input.as_bytes()), CMD_DEADLINE);
                    let took = started.elapsed();
                    if r.code == 0 {
                        let d = r.doc();
                        let got = d["sent"].as_array().unwrap();
                        assert_eq!(got.len(), PER_BATCH, "{d}");
                        for (rc, body) in got.iter().zip(&bodies) {
                            ok.push((rc["id"].as_str().unwrap().to_string(), body.clone()));
                        }
                    } else {
                        let why = docs(&r.stdout)
                            .last()
                            .map(|d| d["error"]["message"].to_string())
                            .unwrap_or_else(|| r.stderr.clone());
                        let why = format!(
                            "{me} batch {bi}: exit {} after {took:?} during phase {}: {why}",
                            r.code,
                            phase.load(Ordering::SeqCst)
                        );
                        if std::env::var_os("NATS_CLUSTER_TRACE").is_some() {
                            eprintln!("--- {why}\n{}", r.stderr);
                        }
                        failed.extend(bodies.into_iter().map(|b| (b, why.clone())));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                (ok, failed)
            })
        })
        .collect();

    // The failures, each at a point in the traffic (an event: batches finished).
    let at = |n: usize| {
        while batches_done.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "traffic stalled below {n} batches"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let leader = |c: &Cluster| loop {
        if let Some(l) = c.stream_leader("RELAY_MAIL") {
            break l;
        }
        assert!(Instant::now() < deadline, "no RELAY_MAIL leader");
        std::thread::sleep(Duration::from_millis(20));
    };
    let catch_up = |c: &Cluster, i: usize| {
        for stream in ["RELAY_MAIL", "KV_relay_rcpt", "KV_relay_ep"] {
            c.wait_current(i, stream, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("n{} did not catch up on {stream}: {e}", i + 1));
        }
    };
    at(SENDERS * 2);
    let l1 = leader(&cluster);
    // Not the leader and not node 0, the one the clients list first.
    let victim = (1..cluster.len()).find(|&i| i != l1).unwrap();
    eprintln!(
        "{:?}: killing n{} (RELAY_MAIL leader n{})",
        t0.elapsed(),
        victim + 1,
        l1 + 1
    );
    cluster.kill(victim);
    phase.store(1, Ordering::SeqCst);
    at(SENDERS * 4);
    eprintln!("{:?}: restarting n{}", t0.elapsed(), victim + 1);
    cluster.restart(victim).expect("restart the first victim");
    catch_up(&cluster, victim);
    phase.store(2, Ordering::SeqCst);
    at(SENDERS * 6);
    let l2 = leader(&cluster);
    eprintln!(
        "{:?}: killing the RELAY_MAIL leader n{}",
        t0.elapsed(),
        l2 + 1
    );
    cluster.kill(l2);
    phase.store(3, Ordering::SeqCst);
    at(SENDERS * 8);
    eprintln!("{:?}: restarting n{}", t0.elapsed(), l2 + 1);
    cluster.restart(l2).expect("restart the old leader");
    catch_up(&cluster, l2);
    phase.store(4, Ordering::SeqCst);

    let mut confirmed: Vec<(String, String)> = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for s in senders {
        let (ok, bad) = s.join().expect("sender panicked");
        confirmed.extend(ok);
        failed.extend(bad);
    }
    let send_wall = t0.elapsed();
    let confirmed_ids: HashSet<String> = confirmed.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(
        confirmed_ids.len(),
        confirmed.len(),
        "a message id was issued twice"
    );

    // Read on until every confirmed message was read and nothing is pending anywhere.
    let mut last_pending = 0;
    loop {
        let all_read = {
            let l = ledger.lock().unwrap();
            confirmed_ids.iter().all(|id| l.seen.contains(id))
        };
        if all_read {
            let r = a.roster();
            last_pending = (0..SINKS)
                .map(|k| r[&sink_name(k)]["pending"].as_u64().unwrap())
                .sum::<u64>();
            if last_pending == 0 {
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("reader panicked");
    }
    let wall = t0.elapsed();

    let l = ledger.lock().unwrap();
    let deliveries: usize = l.reads.iter().map(|r| r.msgs.len()).sum();
    let lost: Vec<&(String, String)> = confirmed
        .iter()
        .filter(|(id, _)| !l.seen.contains(id))
        .collect();
    // An id delivered by a read that began after another read had committed its ack.
    let mut acked_at: HashMap<&str, Instant> = HashMap::new();
    for r in l.reads.iter().filter(|r| r.acked) {
        for (id, _) in &r.msgs {
            let e = acked_at.entry(id.as_str()).or_insert(r.end);
            *e = (*e).min(r.end);
        }
    }
    let resurrected: Vec<&str> = l
        .reads
        .iter()
        .flat_map(|r| r.msgs.iter().map(move |(id, _)| (r.start, id.as_str())))
        .filter(|(start, id)| acked_at.get(id).is_some_and(|t| start > t))
        .map(|(_, id)| id)
        .collect();
    // Every read message must be one that was sent: confirmed, or from a failed batch.
    let bodies_sent: HashSet<&str> = confirmed
        .iter()
        .map(|(_, b)| b.as_str())
        .chain(failed.iter().map(|(b, _)| b.as_str()))
        .collect();
    let mut id_of_body: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut phantom = Vec::new();
    for (id, body) in l.reads.iter().flat_map(|r| r.msgs.iter()) {
        id_of_body.entry(body).or_default().insert(id);
        if !bodies_sent.contains(body.as_str()) {
            phantom.push(body.clone());
        }
    }
    let stored_twice: Vec<_> = id_of_body.iter().filter(|(_, ids)| ids.len() > 1).collect();
    let unconfirmed_read = l
        .seen
        .iter()
        .filter(|id| !confirmed_ids.contains(*id))
        .count();

    eprintln!(
        "nats_cluster figures: {} senders x {BATCHES} batches x {PER_BATCH}; sent confirmed {}, \
         failed {} (in {} batches), read {} distinct ({} of them from failed batches), \
         deliveries {deliveries}, duplicates delivered {}, lost {}, acked-then-redelivered {}, \
         reader errors {}, pending at the end {last_pending}; sends done in {send_wall:?}, \
         wall time {wall:?}",
        SENDERS,
        confirmed.len(),
        failed.len(),
        failed.len() / PER_BATCH,
        l.seen.len(),
        unconfirmed_read,
        deliveries - l.seen.len(),
        lost.len(),
        resurrected.len(),
        l.errors.len(),
    );
    // One line per failed batch (its PER_BATCH messages share it).
    let why: std::collections::BTreeSet<&str> = failed.iter().map(|(_, w)| w.as_str()).collect();
    for w in why.iter().take(10) {
        eprintln!("  failed batch: {w}");
    }
    for e in l.errors.iter().take(10) {
        eprintln!("  reader error: {e}");
    }
    // Each duplicate with the reads that brought it (ms since the start).
    let mut by_id: HashMap<&str, Vec<&Read>> = HashMap::new();
    for r in &l.reads {
        for (id, _) in &r.msgs {
            by_id.entry(id.as_str()).or_default().push(r);
        }
    }
    let ms = |t: Instant| t.duration_since(t0).as_millis();
    for (id, rs) in by_id.iter().filter(|(_, rs)| rs.len() > 1).take(8) {
        let shown: Vec<String> = rs
            .iter()
            .map(|r| {
                format!(
                    "{} {}..{}ms exit {} acked {}",
                    r.host,
                    ms(r.start),
                    ms(r.end),
                    r.code,
                    r.acked
                )
            })
            .collect();
        eprintln!("  duplicate {id}: {}", shown.join(" | "));
    }

    assert!(
        lost.is_empty(),
        "{} confirmed messages never read (LOST), e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        resurrected.is_empty(),
        "{} messages delivered again after their ack was committed, e.g. {:?}",
        resurrected.len(),
        &resurrected[..resurrected.len().min(5)]
    );
    assert!(phantom.is_empty(), "read messages nobody sent: {phantom:?}");
    assert!(
        stored_twice.is_empty(),
        "one send stored under several ids: {stored_twice:?}"
    );
    assert_eq!(last_pending, 0, "mail still pending at the end");
    assert!(
        confirmed.len() >= SENDERS * BATCHES * PER_BATCH / 2,
        "most sends must succeed with one node down at a time: {} of {}",
        confirmed.len(),
        SENDERS * BATCHES * PER_BATCH
    );
    drop(l);

    // The replicas agree: every node holds the same RELAY_MAIL and receipts.
    for stream in ["RELAY_MAIL", "KV_relay_rcpt"] {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let views: Vec<Option<u64>> = (0..cluster.len())
                .map(|i| stream_messages(&cluster, i, stream))
                .collect();
            if views[0].is_some() && views.iter().all(|v| *v == views[0]) {
                break;
            }
            assert!(
                Instant::now() < end,
                "{stream}: the nodes disagree on the message count: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `state.messages` of `stream` on node `i`, from its `/jsz`.
fn stream_messages(c: &Cluster, i: usize, stream: &str) -> Option<u64> {
    let (code, body) = c.get(i, "/jsz?streams=true&acc=%24G").ok()?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["account_details"]
        .as_array()?
        .iter()
        .filter_map(|a| a["stream_detail"].as_array())
        .flatten()
        .find(|s| s["name"] == stream)?["state"]["messages"]
        .as_u64()
}

#[test]
fn cluster_down_is_a_clear_error() {
    if relay::natsd::skip_or_fail("cluster_down_is_a_clear_error") {
        return;
    }
    let _one = serial();
    let mut cluster = start_cluster(3, Duration::from_secs(120));
    let m = Machine::new("machine-a", &cluster);
    m.register("x");
    m.register("y");
    cluster.stop();

    let ports: Vec<String> = (0..cluster.len())
        .map(|i| format!("127.0.0.1:{}", cluster.client_port(i)))
        .collect();
    for args in [
        &["send", "x", "--as", "y", "m", "--json"][..],
        &["roster", "--json"][..],
    ] {
        let started = Instant::now();
        let r = common::run(m.cmd(args), None, Duration::from_secs(15));
        let took = started.elapsed();
        assert_eq!(r.code, 1, "relay {args:?} with the cluster down: {r:?}");
        let d = r.doc();
        assert_eq!(d["ok"], false, "{d}");
        let msg = d["error"]["message"].as_str().unwrap_or_default();
        for p in &ports {
            assert!(msg.contains(p.as_str()), "the error names {p}: {msg}");
        }
        eprintln!("relay {args:?} failed in {took:?}: {msg}");
    }

    for i in 0..cluster.len() {
        cluster
            .restart(i)
            .unwrap_or_else(|e| panic!("restart n{}: {e}", i + 1));
    }
    for i in 0..cluster.len() {
        for stream in ["RELAY_MAIL", "KV_relay_ep", "KV_relay_rcpt"] {
            cluster
                .wait_current(i, stream, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("n{} {stream}: {e}", i + 1));
        }
    }
    let r = m.roster();
    assert!(r.contains_key("x") && r.contains_key("y"), "{r:?}");
    assert_eq!(
        r["x"]["pending"], 0,
        "the failed send left a message: {r:?}"
    );
    let peek = m.json(&["inbox", "--as", "x", "--peek"]);
    assert_eq!(peek["messages"].as_array().unwrap().len(), 0, "{peek}");
}

/// Commands started just before a node leading the KV buckets dies must wait the election
/// out like every write does (up to 20 s), not fail on one 2 s request.
///
/// Seen in `node_kill_during_concurrent_traffic_loses_nothing`: sends that were opening
/// the store just as a node leading `KV_relay_rcpt` died failed after 2-4 s with `request
/// error: timed out` — NatsStore::open → ops::Inner::setup → `js.get_stream("KV_relay_…")`,
/// the one setup request that is not retried. Here 8 clients open the store in a loop
/// (`relay roster`) across the kill of the node leading `KV_relay_rcpt`. The window is
/// narrow (the failing opens were also connected to the killed node): it failed in 1 of
/// 4 runs here (`roster` exit 1 after 4.05 s, `store-unavailable`, `request error: timed
/// out`); it should pass every run once the setup requests are retried (not verified).
#[test]
fn store_open_rides_out_a_bucket_leader_kill() {
    if relay::natsd::skip_or_fail("store_open_rides_out_a_bucket_leader_kill") {
        return;
    }
    let _one = serial();
    let mut cluster = start_cluster(3, Duration::from_secs(120));
    let m = Arc::new(Machine::new("machine-a", &cluster));
    m.register("x");
    let deadline = Instant::now() + Duration::from_secs(40);
    let leader = |c: &Cluster, s: &str| loop {
        if let Some(l) = c.stream_leader(s) {
            break l;
        }
        assert!(Instant::now() < deadline, "no {s} leader");
        std::thread::sleep(Duration::from_millis(20));
    };
    let victim = leader(&cluster, "KV_relay_rcpt");
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (m, stop, rounds, failures) =
                (m.clone(), stop.clone(), rounds.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline, "roster loop past the deadline");
                    let started = Instant::now();
                    let r = m.run(&["roster", "--json"]);
                    if r.code != 0 {
                        failures.lock().unwrap().push(format!(
                            "exit {} after {:?}: {}",
                            r.code,
                            started.elapsed(),
                            r.stdout.trim()
                        ));
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let at = |n: usize| {
        while rounds.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "roster loops stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    at(16);
    let before = rounds.load(Ordering::SeqCst);
    cluster.kill(victim);
    // Until the bucket has a leader again and every loop has run once more after that.
    leader(&cluster, "KV_relay_rcpt");
    at(rounds.load(Ordering::SeqCst) + 16);
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.join().expect("roster loop panicked");
    }
    let f = failures.lock().unwrap();
    eprintln!(
        "n{} (KV_relay_rcpt leader) killed after {before} opens; {} opens in all, {} failed",
        victim + 1,
        rounds.load(Ordering::SeqCst),
        f.len()
    );
    assert!(
        f.is_empty(),
        "{} commands failed across the kill of the KV_relay_rcpt leader n{}: {:?}",
        f.len(),
        victim + 1,
        &f[..]
    );
}

/// One test of this file at a time: each runs a cluster and many processes on few cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A multi-message send is all or none on NATS too, where it cannot be one transaction:
/// its messages carry a batch id and become visible only when the batch's commit key is
/// written. A sender killed with SIGKILL after some of them were stored leaves nothing any
/// reader sees (`gc` removes the orphans later).
#[test]
fn a_sender_killed_mid_batch_leaves_nothing_visible() {
    if relay::natsd::skip_or_fail("a_sender_killed_mid_batch_leaves_nothing_visible") {
        return;
    }
    let _one = serial();
    let cluster = start_cluster(1, Duration::from_secs(120));
    let a = Machine::new("machine-a", &cluster);
    a.register("alice");
    a.register("bob");
    a.json(&["send", "bob", "--as", "alice", "before"]);
    let base = stream_messages(&cluster, 0, relay::store::MAIL_STREAM).unwrap();
    let lines: String = (0..5_000).map(|i| format!("line {i}\n")).collect();
    let mut sender = a
        .cmd(&["send", "bob", "--as", "alice", "--stdin", "--lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = sender.stdin.take().unwrap();
        stdin.write_all(lines.as_bytes()).unwrap();
    }
    // Kill it once some of the batch is stored, and before all of it is.
    let end = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let n = stream_messages(&cluster, 0, relay::store::MAIL_STREAM).unwrap_or(base);
        if n > base + 10 {
            break n;
        }
        assert!(
            sender.try_wait().unwrap().is_none(),
            "the sender finished before it could be killed"
        );
        assert!(Instant::now() < end, "the batch never reached the stream");
        std::thread::sleep(Duration::from_millis(5));
    };
    sender.kill().unwrap();
    sender.wait().unwrap();
    let after = stream_messages(&cluster, 0, relay::store::MAIL_STREAM).unwrap();
    assert!(
        after < base + 5_000,
        "the whole batch was stored before the kill ({after}); nothing was tested"
    );
    assert!(stored > base);
    let inbox = a.json(&["inbox", "--as", "bob", "--limit", "10000"]);
    let bodies: Vec<&str> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["before"],
        "{} of the killed batch's messages were stored; none may be visible",
        after - base
    );
    let roster = a.roster();
    assert_eq!(roster["bob"]["pending"], 0, "{roster:?}");
}
