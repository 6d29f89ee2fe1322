//! Crash durability (issue 9, "Done when"): concurrent senders and readers — live
//! `listen`, `inbox`, `wait` — killed with SIGKILL at random moments in a bounded loop, then
//! a drain, `PRAGMA integrity_check`, and exactly-once accounting:
//!
//! - sent = confirmed (the sender exited 0 with a receipt) + unconfirmed (killed or failed);
//! - 0 lost: every confirmed message is stored and, after the drain, acked;
//! - 0 acked-but-never-shown: every acked message appears in some reader's output (readers
//!   ack only what they wrote, DESIGN.md §11; a killed reader's output is read to its end).
//!
//! Duplicates (a message shown twice after a reader died between writing and acking) are
//! allowed by at-least-once delivery; they are counted and printed.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Home;
use serde_json::Value;

/// How long senders and readers are killed at random.
const CHAOS: Duration = Duration::from_secs(15);
/// Bound on the drain: holds lapse after 30 s and leases after 60 s.
const DRAIN: Duration = Duration::from_secs(120);

/// A small xorshift generator: the schedule of kills, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed(k: u64) -> Rng {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Rng((t ^ (k.wrapping_mul(0x9E37_79B9_7F4A_7C15))) | 1)
}

/// What readers wrote: message id → times shown.
type Shown = Arc<Mutex<HashMap<String, u32>>>;

fn record(shown: &Shown, doc_or_line: &Value) {
    let mut s = shown.lock().unwrap();
    let mut add = |m: &Value| {
        if let Some(id) = m["id"].as_str() {
            *s.entry(id.to_string()).or_default() += 1;
        }
    };
    match doc_or_line["messages"].as_array() {
        Some(ms) => ms.iter().for_each(&mut add),
        None => add(doc_or_line),
    }
}

/// Runs `cmd`, SIGKILLs it after `kill_after` (if it is still running), and returns its
/// exit code (None when killed) and stdout.
fn run_killing(mut cmd: Command, kill_after: Option<Duration>) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn relay");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + kill_after.unwrap_or(common::DEADLINE);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let out = reader.join().unwrap();
    (status.and_then(|s| s.code()), out)
}

#[test]
fn kill_nine_senders_and_readers_loses_nothing_and_acks_nothing_unseen() {
    let h = Home::new();
    let rt = tempfile::tempdir().unwrap();
    h.register("r");
    const SENDERS: u64 = 3;
    for i in 0..SENDERS {
        h.register(&format!("s{i}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let shown: Shown = Arc::default();
    let confirmed: Arc<Mutex<Vec<String>>> = Arc::default();
    let attempts = Arc::new(Mutex::new(0u64));
    let relay = |args: &[&str]| {
        let mut c = h.cmd(args);
        c.env("RELAY_RUNTIME_DIR", rt.path())
            .env("RELAY_LOG", "off");
        c
    };
    std::thread::scope(|scope| {
        // Senders: every fifth is killed within 30 ms.
        for i in 0..SENDERS {
            let (stop, confirmed, attempts) = (&stop, &confirmed, &attempts);
            let relay = &relay;
            scope.spawn(move || {
                let mut rng = seed(i);
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let body = format!("s{i}-{k}");
                    let kill = (rng.below(5) == 0).then(|| Duration::from_millis(rng.below(30)));
                    let me = format!("s{i}");
                    let (code, out) =
                        run_killing(relay(&["send", "r", "--as", &me, "--json", &body]), kill);
                    *attempts.lock().unwrap() += 1;
                    if code == Some(0) {
                        let doc: Value = serde_json::from_str(out.trim()).unwrap();
                        confirmed
                            .lock()
                            .unwrap()
                            .push(doc["id"].as_str().unwrap().to_string());
                    }
                }
            });
        }
        // A live listener, killed every 0.2–1 s and restarted.
        {
            let (stop, shown, relay) = (&stop, &shown, &relay);
            scope.spawn(move || {
                let mut rng = seed(100);
                while !stop.load(Ordering::Relaxed) {
                    let mut child: Child = relay(&["listen", "--as", "r", "--json"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap();
                    let out = child.stdout.take().unwrap();
                    let lines = {
                        let shown = shown.clone();
                        std::thread::spawn(move || {
                            for l in BufReader::new(out).lines().map_while(Result::ok) {
                                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                                    record(&shown, &v);
                                }
                            }
                        })
                    };
                    std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
                    let _ = child.kill();
                    let _ = child.wait();
                    lines.join().unwrap();
                }
            });
        }
        // Mailbox readers: inbox and wait, some killed mid-read.
        for (n, verb) in [(200, "inbox"), (300, "wait")] {
            let (stop, shown, relay) = (&stop, &shown, &relay);
            scope.spawn(move || {
                let mut rng = seed(n);
                while !stop.load(Ordering::Relaxed) {
                    let kill = (rng.below(3) == 0).then(|| Duration::from_millis(rng.below(20)));
                    let mut args = vec![verb, "--as", "r", "--json", "--lease", "2s"];
                    if verb == "wait" {
                        args.extend(["--timeout", "1s"]);
                    }
                    let (_, out) = run_killing(relay(&args), kill);
                    // A reader killed mid-write printed part of a document; it acked
                    // nothing (acks follow the whole, flushed output).
                    if let Ok(v) = serde_json::from_str::<Value>(out.trim()) {
                        record(shown, &v);
                    }
                }
            });
        }
        std::thread::sleep(CHAOS);
        stop.store(true, Ordering::Relaxed);
    });

    // Drain: a clean reader until nothing is pending (leases and holds lapse meanwhile).
    let start = Instant::now();
    let unacked = |h: &Home| -> i64 {
        let conn = rusqlite::Connection::open_with_flags(
            h.db(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row(
            "SELECT count(*) FROM messages WHERE state != 'acked'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    while unacked(&h) > 0 {
        assert!(
            start.elapsed() < DRAIN,
            "{} messages still unread after the drain",
            unacked(&h)
        );
        let (code, out) = run_killing(
            relay(&[
                "wait",
                "--as",
                "r",
                "--json",
                "--limit",
                "10000",
                "--timeout",
                "2s",
            ]),
            None,
        );
        if code == Some(0) {
            record(&shown, &serde_json::from_str(out.trim()).unwrap());
        }
    }

    let conn = rusqlite::Connection::open(h.db()).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let stored: HashMap<String, String> = conn
        .prepare("SELECT id, state FROM messages")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let confirmed = confirmed.lock().unwrap().clone();
    let attempts = *attempts.lock().unwrap();
    let shown = shown.lock().unwrap().clone();
    let lost: Vec<&String> = confirmed
        .iter()
        .filter(|id| stored.get(*id).map(String::as_str) != Some("acked"))
        .collect();
    let unseen: Vec<&String> = stored
        .iter()
        .filter(|(id, st)| *st == "acked" && !shown.contains_key(*id))
        .map(|(id, _)| id)
        .collect();
    let confirmed_set: HashSet<&String> = confirmed.iter().collect();
    let stored_unconfirmed = stored
        .keys()
        .filter(|id| !confirmed_set.contains(id))
        .count();
    let twice = shown.values().filter(|&&n| n > 1).count();
    eprintln!(
        "crash: {attempts} sends = {} confirmed + {} unconfirmed ({stored_unconfirmed} of \
         those stored); {} stored, all acked; lost {}; acked-but-never-shown {}; shown twice {twice}",
        confirmed.len(),
        attempts - confirmed.len() as u64,
        stored.len(),
        lost.len(),
        unseen.len()
    );
    assert!(confirmed.len() > 50, "too few sends to mean anything");
    assert!(lost.is_empty(), "confirmed but lost: {lost:?}");
    assert!(unseen.is_empty(), "acked but never shown: {unseen:?}");
}
