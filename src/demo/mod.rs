//! `relay demo`: relay's main job on real processes, in a fresh temporary `RELAY_HOME`.
//!
//! 1. **Conversation** — two agent processes (`alice` asks, `bob` answers) do
//!    request/reply through `send` + `wait`, correlated by `reply_to`.
//! 2. **Burst** — N sender processes (default 8) send concurrently to one `sink` process
//!    that waits, prints and acks. A progress bar follows the sink.
//!
//! 3. **Agent sessions** — two simulated Claude Code sessions in one directory, driven by
//!    recorded hook payloads and MCP calls: mail reaches a session through its hook, and an
//!    idle session is nudged by its Stop hook (see `agents.rs`).
//!
//! 4. **Live path** — a `relay listen` endpoint gets mail over its socket while a dormant
//!    one gets it through its mailbox; a supervisor kills its child and measures detection
//!    and recovery (see `live.rs`).
//!
//! 5. **Shared memory** — the same large transfer over a shared-memory stream and over the
//!    socket fallback, sha256 checked; a frame publisher and reader (see `stream.rs`).
//!
//! 6. **Two machines over NATS** — a local 3-node nats-server cluster, two relay homes
//!    on it, a node killed mid-traffic (see `nats.rs`); skipped with a hint when no
//!    nats-server binary is found.
//!
//! 7. **Coordination** — two sessions in one git repository reserve overlapping paths
//!    (the second is refused, naming the first), search finds an earlier message, and the
//!    pre-commit guard refuses a commit of reserved files (see `coordination.rs`).
//!
//! The summary counts sent, delivered, acked, lost and duplicated messages and the
//! send→receive latency; exit status 0 only when nothing was lost. The command line
//! (`relay demo`, the hidden `relay demo-child`) is `cli/demo.rs`; this module runs it.

mod agents;
mod coordination;
mod live;
#[cfg(feature = "nats")]
mod nats;
mod stream;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::now_us;
use crate::config::Config;
use crate::route::{self, SendRequest};
use crate::store::{
    Endpoint, Fetch, FetchMode, Filter, Intent, Registration, SqliteStore, State, Store,
};

/// How big a demo to run (`relay demo`'s options).
#[derive(Debug, Clone)]
pub struct Options {
    /// Concurrent sender processes in the burst (1–64).
    pub senders: u32,
    /// Messages each sender sends.
    pub per_sender: u32,
    /// Request/reply rounds in the conversation.
    pub rounds: u32,
    /// Keep the temporary RELAY_HOME instead of deleting it ([`Summary::kept`] says where).
    pub keep: bool,
    /// Draw a progress bar during the burst (off for `--json`).
    pub progress: bool,
}

/// Role of a demo child process.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    /// Sends requests to --peer and waits for each reply.
    Ask,
    /// Waits for requests from --peer and answers each.
    Answer,
    /// Sends --count messages to --peer, stamped with the send time.
    Sender,
    /// Receives --count messages, printing each with its latency, acking after printing.
    Sink,
}

const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// Prints one JSON line and flushes, so the parent sees it at once.
fn emit_line(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// Runs one demo child process: `me` plays `role` against `peer` for `count` rounds or
/// messages, printing one JSON line per event on stdout for the parent.
///
/// # Errors
/// Store and routing errors; a peer that stays silent past the child's deadline (120 s for
/// a reply, 20 s between sink batches).
pub fn child(
    store: &dyn Store,
    me: &Endpoint,
    peer: &Endpoint,
    role: Role,
    count: u32,
) -> anyhow::Result<()> {
    let send = |body: String, intent, reply_to: Option<String>| {
        route::send(
            store,
            SendRequest {
                intent,
                reply_to,
                ..SendRequest::text(me.clone(), peer.id.clone(), body)
            },
        )
    };
    let from_peer = |limit, mode| Fetch {
        limit,
        mode,
        filter: Filter {
            from: Some(peer.id.clone()),
            thread: None,
            ids: None,
            reply_to: None,
            exclude: None,
        },
    };
    match role {
        Role::Ask => {
            for round in 0..count {
                let t0 = now_us();
                let q = format!("question {round}: is the build on main green?");
                let req = send(q.clone(), Intent::Request, None)?;
                let got = store.wait(&me.id, &from_peer(1, FetchMode::Take), CHILD_DEADLINE)?;
                let Some(reply) = got.first() else {
                    bail!("no reply to round {round} within {CHILD_DEADLINE:?}");
                };
                if reply.reply_to.as_deref() != Some(req.receipt.id.as_str()) {
                    bail!("reply {} does not answer {}", reply.id, req.receipt.id);
                }
                emit_line(
                    &json!({"round": round, "request": req.receipt.id, "reply": reply.id,
                    "question": q, "answer": reply.text(), "rtt_us": now_us() - t0}),
                )?;
            }
        }
        Role::Answer => {
            for round in 0..count {
                let got = store.wait(&me.id, &from_peer(1, FetchMode::Take), CHILD_DEADLINE)?;
                let Some(req) = got.first() else {
                    bail!("no request for round {round} within {CHILD_DEADLINE:?}");
                };
                let answer = format!("answer {round}: yes, {} tests passed", 100 + round);
                send(answer, Intent::Notify, Some(req.id.clone()))?;
            }
        }
        Role::Sender => {
            for seq in 0..count {
                let sent = send(format!("{seq} {}", now_us()), Intent::Notify, None)?;
                emit_line(&json!({"id": sent.receipt.id}))?;
            }
        }
        Role::Sink => {
            let mut seen = 0u32;
            let lease = FetchMode::Deliver {
                lease: Duration::from_secs(60),
            };
            let any = Fetch {
                limit: 200,
                mode: lease,
                filter: Filter::default(),
            };
            while seen < count {
                let got = store.wait(&me.id, &any, Duration::from_secs(20))?;
                if got.is_empty() {
                    bail!("sink: no mail for 20 s after {seen} of {} messages", count);
                }
                let now = now_us();
                for m in &got {
                    let sent_us: u64 = m
                        .text()
                        .split_whitespace()
                        .nth(1)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(now);
                    emit_line(&json!({"id": m.id, "latency_us": now.saturating_sub(sent_us)}))?;
                }
                // Ack only after every line was written.
                let ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
                store.ack(Some(&me.id), &ids)?;
                seen += got.len() as u32;
            }
        }
    }
    Ok(())
}

/// A spawned demo child whose stdout lines arrive on a channel. Killed when dropped, so
/// an early return never leaves demo processes behind.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(home: &Config, args: &[String]) -> anyhow::Result<Proc> {
    spawn_env(home, args, &[])
}

/// [`spawn`] with extra environment variables (another "machine": its host and store).
fn spawn_env(home: &Config, args: &[String], env: &[(&str, String)]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("cannot find the relay binary")?;
    let mut child = Command::new(exe)
        .args(args)
        .env("RELAY_HOME", &home.home)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RELAY_AS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start a relay child process")?;
    let lines = crate::subprocess::stdout_lines(&mut child, crate::subprocess::json)?;
    Ok(Proc { child, lines })
}

fn child_args(role: &str, me: &str, peer: &str, count: u32) -> Vec<String> {
    [
        "demo-child",
        role,
        "--as",
        me,
        "--peer",
        peer,
        "--count",
        &count.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Waits for a child with a deadline; kills it if it overruns.
fn finish(p: &mut Proc, what: &str, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if let Some(status) = p.child.try_wait()? {
            if !status.success() {
                bail!("{what} exited with {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = p.child.kill();
            bail!("{what} did not finish in time");
        }
        // Child exit has no fd to block on here; a short sleep bounds the check's cost.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a demo run measured: the JSON document of `relay demo --json`.
#[derive(Serialize, Default)]
pub struct Summary {
    conversation_rounds: u32,
    conversation_rtt_p50_us: u64,
    senders: u32,
    sent: u64,
    delivered: u64,
    acked: u64,
    lost: u64,
    duplicated: u64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    latency_max_us: u64,
    burst_seconds: f64,
    throughput_msgs_per_s: f64,
    #[serde(flatten)]
    agents: agents::AgentsOutcome,
    #[serde(flatten)]
    live: live::LiveOutcome,
    #[serde(flatten)]
    stream: stream::StreamOutcome,
    #[cfg(feature = "nats")]
    #[serde(flatten)]
    nats: nats::NatsOutcome,
    #[serde(flatten)]
    coordination: coordination::CoordinationOutcome,
    /// Where the temporary RELAY_HOME was kept (`keep`), else None (it was deleted).
    #[serde(skip)]
    pub kept: Option<std::path::PathBuf>,
}

/// Runs the demo in a fresh temporary `RELAY_HOME` (durability and body cap from `base`),
/// telling `say` what happens as it goes.
///
/// # Errors
/// When a part of the demo cannot run at all (a child that cannot start, exits non-zero or
/// overruns its deadline); lost mail and changed streams are results, in the [`Summary`].
pub fn run(base: &Config, a: &Options, say: &dyn Fn(String)) -> anyhow::Result<Summary> {
    let tmp = tempfile::Builder::new().prefix("relay-demo-").tempdir()?;
    let config = Config {
        home: tmp.path().join("home"),
        ..base.clone()
    };
    let store = SqliteStore::open(&config)?;
    say(format!(
        "relay demo — fresh RELAY_HOME at {}",
        config.home.display()
    ));
    let register = |name: &str| {
        store.register(&Registration {
            name: Some(name.into()),
            ..Default::default()
        })
    };

    // 1. Conversation.
    say("\n1. conversation: alice asks, bob answers (two processes, send + wait)".into());
    register("alice")?;
    register("bob")?;
    let deadline = Instant::now() + CHILD_DEADLINE;
    let bob = spawn(&config, &child_args("answer", "bob", "alice", a.rounds))?;
    let alice = spawn(&config, &child_args("ask", "alice", "bob", a.rounds))?;
    let mut rtt = Histogram::<u64>::new(3)?;
    for _ in 0..a.rounds {
        let line = alice
            .lines
            .recv_timeout(CHILD_DEADLINE)
            .context("alice stopped talking")?;
        rtt.record(line["rtt_us"].as_u64().unwrap_or(0).max(1))?;
        say(format!(
            "   alice → bob: {}\n   bob → alice: {}   ({} µs round trip)",
            line["question"].as_str().unwrap_or(""),
            line["answer"].as_str().unwrap_or(""),
            line["rtt_us"]
        ));
    }
    let (mut alice, mut bob) = (alice, bob);
    finish(&mut alice, "alice", deadline)?;
    finish(&mut bob, "bob", deadline)?;

    // 2. Burst.
    let total = u64::from(a.senders) * u64::from(a.per_sender);
    say(format!(
        "\n2. burst: {} sender processes × {} messages → one sink process",
        a.senders, a.per_sender
    ));
    register("sink")?;
    for s in 0..a.senders {
        register(&format!("sender-{s}"))?;
    }
    let bar = if !a.progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template("   {bar:40} {pos}/{len} received  {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let deadline = Instant::now() + CHILD_DEADLINE;
    let sink = spawn(
        &config,
        &child_args("sink", "sink", "sender-0", total as u32),
    )?;
    let start = Instant::now();
    let senders: Vec<Proc> = (0..a.senders)
        .map(|s| {
            spawn(
                &config,
                &child_args("sender", &format!("sender-{s}"), "sink", a.per_sender),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let mut received: Vec<String> = Vec::with_capacity(total as usize);
    let mut latency = Histogram::<u64>::new(3)?;
    while (received.len() as u64) < total {
        match sink.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(v) => {
                received.push(v["id"].as_str().unwrap_or_default().to_string());
                latency.record(v["latency_us"].as_u64().unwrap_or(0).max(1))?;
                bar.inc(1);
            }
            Err(_) => break,
        }
    }
    let burst = start.elapsed();
    bar.finish_and_clear();
    let mut sent_ids = HashSet::new();
    for (i, mut p) in senders.into_iter().enumerate() {
        finish(&mut p, &format!("sender-{i}"), deadline)?;
        // The child has exited, so its reader thread ends at EOF and this drains all lines.
        for v in p.lines.iter() {
            sent_ids.insert(v["id"].as_str().unwrap_or_default().to_string());
        }
    }
    let mut sink = sink;
    finish(&mut sink, "sink", deadline)?;

    // 3. Agent sessions.
    say("\n3. agent sessions: two Claude Code sessions in one directory (recorded hook payloads + MCP)".into());
    let project = tmp.path().join("project");
    std::fs::create_dir_all(&project)?;
    let agents = agents::run(&config.home, &project, say)?;

    // 4. Live path.
    say(
        "\n4. live path: a listening endpoint next to a dormant one, and a supervised child".into(),
    );
    let live = live::run(&store, &config.home, say)?;

    // 5. Shared memory.
    say(
        "\n5. shared memory: one transfer over an shm stream and over the socket fallback; frames"
            .into(),
    );
    let stream = stream::run(tmp.path(), say)?;

    // 6. Two machines over NATS.
    say(
        "\n6. two machines over NATS: a local 3-node cluster, two relay homes, a node killed"
            .into(),
    );
    #[cfg(feature = "nats")]
    let nats = nats::run(tmp.path(), base, say)?;
    #[cfg(not(feature = "nats"))]
    say("   skipped: this relay was built without the nats feature".into());

    // 7. Coordination.
    say(
        "\n7. coordination: two sessions in one git repo — reservations, search, the commit guard"
            .into(),
    );
    let coordination = coordination::run(&store, &config.home, tmp.path(), say)?;

    let unique: HashSet<&String> = received.iter().collect();
    let mut s = Summary {
        conversation_rounds: a.rounds,
        conversation_rtt_p50_us: rtt.value_at_quantile(0.5),
        senders: a.senders,
        sent: sent_ids.len() as u64,
        lost: sent_ids.iter().filter(|id| !unique.contains(id)).count() as u64,
        duplicated: (received.len() - unique.len()) as u64,
        latency_p50_us: latency.value_at_quantile(0.5),
        latency_p99_us: latency.value_at_quantile(0.99),
        latency_max_us: latency.max(),
        burst_seconds: burst.as_secs_f64(),
        throughput_msgs_per_s: received.len() as f64 / burst.as_secs_f64().max(1e-9),
        agents,
        live,
        stream,
        #[cfg(feature = "nats")]
        nats,
        coordination,
        ..Summary::default()
    };
    // Receipts, read back from the store: what a sender would be told.
    for id in &sent_ids {
        let r = store.receipt(id)?;
        s.delivered += u64::from(r.state >= State::Delivered);
        s.acked += u64::from(r.state == State::Acked);
    }
    if sent_ids.len() as u64 != total {
        s.lost += total - sent_ids.len() as u64;
    }
    if a.keep {
        s.kept = Some(tmp.keep());
    }
    Ok(s)
}

impl Summary {
    /// Why the demo failed: mail was lost, or a stream arrived changed or a frame torn.
    /// `None` when the run was clean (exit status 0).
    pub fn failure(&self) -> Option<String> {
        #[cfg(feature = "nats")]
        let nats_lost = self.nats.nats_lost;
        #[cfg(not(feature = "nats"))]
        let nats_lost = 0;
        if self.lost > 0 {
            Some(format!("{} message(s) lost", self.lost))
        } else if nats_lost > 0 {
            Some(format!("{nats_lost} message(s) lost over NATS"))
        } else if !self.stream.sha256_match || self.stream.frames_torn > 0 {
            Some("a stream arrived changed or a frame was torn".into())
        } else {
            self.coordination
                .failure()
                .map(|why| format!("coordination: {why}"))
        }
    }

    /// The summary table for a person.
    pub fn human(&self) -> String {
        let s = self;
        format!(
            "\nsummary\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12.0}\n   {:<28} {:>12}",
            "messages sent",
            s.sent,
            "delivered",
            s.delivered,
            "acked",
            s.acked,
            "lost",
            s.lost,
            "duplicated",
            s.duplicated,
            "send→receive p50",
            format!("{} µs", s.latency_p50_us),
            "send→receive p99",
            format!("{} µs", s.latency_p99_us),
            "send→receive max",
            format!("{} µs", s.latency_max_us),
            "throughput (msgs/s)",
            s.throughput_msgs_per_s,
            "conversation RTT p50",
            format!("{} µs", s.conversation_rtt_p50_us),
        ) + &format!(
            "\n   {:<28} {:>12}\n   {:<28} {:>12}",
            "mail delivered by hooks",
            s.agents.hook_deliveries,
            "idle sessions nudged (Stop)",
            s.agents.stop_nudges,
        ) + &format!(
            "\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}",
            "routes live / mailbox",
            format!("{} / {}", s.live.live_sent, s.live.mailbox_sent),
            "live send p50",
            format!("{} µs", s.live.live_send_p50_us),
            "child crash noticed in",
            format!("{} µs", s.live.supervise_detect_us),
            "child recovered in",
            format!("{} µs", s.live.supervise_recover_us),
        ) + &format!(
            "\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}",
            "stream MB/s shm / socket",
            format!(
                "{:.0} / {:.0}",
                s.stream.shm_mb_per_s, s.stream.socket_mb_per_s
            ),
            "stream sha256",
            if s.stream.sha256_match {
                "matches"
            } else {
                "DIFFERS"
            },
            "frames/s published",
            format!("{:.0}", s.stream.frames_per_s),
            "frames read / torn",
            format!("{} / {}", s.stream.frames_read, s.stream.frames_torn),
        ) + &self.nats_rows()
            + &self.coordination_rows()
    }

    fn coordination_rows(&self) -> String {
        let c = &self.coordination;
        if !c.coord_ran {
            return format!("\n   {:<28} {:>12}", "coordination", "skipped");
        }
        let yes = |b: bool| if b { "yes" } else { "NO" };
        format!(
            "\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}",
            "overlap refused, named",
            yes(c.overlap_refused),
            "search hits",
            c.search_hits,
            "guard refused the commit",
            yes(c.guard_refused),
        )
    }

    #[cfg(feature = "nats")]
    fn nats_rows(&self) -> String {
        let n = &self.nats;
        if !n.nats_ran {
            return format!("\n   {:<28} {:>12}", "NATS (two machines)", "skipped");
        }
        format!(
            "\n   {:<28} {:>12}\n   {:<28} {:>12}\n   {:<28} {:>12}",
            "NATS sent / delivered",
            format!("{} / {}", n.nats_sent, n.nats_delivered),
            "NATS acked / lost",
            format!("{} / {}", n.nats_acked, n.nats_lost),
            "NATS node killed, caught up",
            match n.nats_node_killed {
                Some(i) => format!("n{i}, {}", if n.nats_node_caught_up { "yes" } else { "no" }),
                None => "none".into(),
            },
        )
    }

    #[cfg(not(feature = "nats"))]
    fn nats_rows(&self) -> String {
        String::new()
    }
}
