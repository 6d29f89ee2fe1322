//! Many real processes on one store at once: nothing lost, nothing acked twice, no field
//! lost in concurrent upserts.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Home, wait_with_deadline};
use serde_json::Value;

const SENDERS: usize = 16;
const PER_SENDER: usize = 200;
const READERS: usize = 4;

#[test]
fn sixteen_senders_four_readers_every_message_acked_exactly_once() {
    let h = Arc::new(Home::new());
    h.register("sink");
    for s in 0..SENDERS {
        h.register(&format!("s{s}"));
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let total = SENDERS * PER_SENDER;
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let senders_done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (h, received, count, done) = (
                h.clone(),
                received.clone(),
                count.clone(),
                senders_done.clone(),
            );
            std::thread::spawn(move || {
                while count.load(Ordering::SeqCst) < total {
                    assert!(Instant::now() < deadline, "readers ran past the deadline");
                    let r = h.run(&[
                        "wait",
                        "--as",
                        "sink",
                        "--timeout",
                        "2s",
                        "--limit",
                        "100",
                        "--json",
                    ]);
                    match r.code {
                        0 => {
                            let ids: Vec<String> = r.doc()["messages"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|m| m["id"].as_str().unwrap().to_string())
                                .collect();
                            count.fetch_add(ids.len(), Ordering::SeqCst);
                            received.lock().unwrap().extend(ids);
                        }
                        4 if done.load(Ordering::SeqCst) => break,
                        4 => {}
                        c => panic!("reader exit {c}: {}", r.stderr),
                    }
                }
            })
        })
        .collect();

    let children: Vec<_> = (0..SENDERS)
        .map(|s| {
            let mut c = h.cmd(&[
                "send",
                "sink",
                "--as",
                &format!("s{s}"),
                "--stdin",
                "--lines",
                "--json",
            ]);
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            let lines: String = (0..PER_SENDER)
                .map(|i| format!("s{s} message {i}\n"))
                .collect();
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                use std::io::Write;
                stdin.write_all(lines.as_bytes()).unwrap();
            });
            child
        })
        .collect();
    let mut sent = HashSet::new();
    for child in children {
        let out = wait_with_deadline(child, Duration::from_secs(180), "sender");
        assert!(
            out.status.success(),
            "sender failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["count"], PER_SENDER);
        for r in doc["sent"].as_array().unwrap() {
            assert_eq!(r["state"], "queued");
            assert!(
                sent.insert(r["id"].as_str().unwrap().to_string()),
                "duplicate id issued"
            );
        }
    }
    senders_done.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("reader panicked");
    }

    assert_eq!(sent.len(), total);
    let got = received.lock().unwrap();
    let unique: HashSet<&String> = got.iter().collect();
    let lost: Vec<_> = sent.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} messages lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert_eq!(unique.len(), total, "received ids that were never sent");
    // With leases far longer than a read, no message may be handed out twice.
    assert_eq!(
        got.len(),
        total,
        "{} duplicate deliveries",
        got.len() - total
    );

    let conn = rusqlite::Connection::open(h.db()).unwrap();
    let acked: i64 = conn
        .query_row(
            "SELECT count(*) FROM messages WHERE state = 'acked' AND deliveries = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(acked as usize, total, "every message acked exactly once");
}

#[test]
fn concurrent_upserts_from_sixteen_processes_lose_no_field() {
    let h = Home::new();
    // Sixteen processes update one endpoint, each setting a different field or key; they
    // also race on creating the store itself.
    let children: Vec<_> = (0..16)
        .map(|i| {
            let meta = format!("k{i}=v{i}");
            let mut args = vec!["register", "shared", "--id", "shared-ep", "--meta", &meta];
            if i == 3 {
                args.extend(["--kind", "human"]);
            }
            if i == 7 {
                args.extend(["--cwd", "/srv/seven"]);
            }
            let mut c = h.cmd(&args);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    // And sixteen more create distinct endpoints at the same time.
    let others: Vec<_> = (0..16)
        .map(|i| {
            let name = format!("solo{i}");
            let cwd = format!("/work/{i}");
            let mut c = h.cmd(&["register", &name, "--kind", "codex", "--cwd", &cwd]);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for c in children.into_iter().chain(others) {
        let out = wait_with_deadline(c, Duration::from_secs(60), "register");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let roster = h.json(&["roster"]);
    let eps = roster["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 17);
    let shared = eps.iter().find(|e| e["id"] == "shared-ep").unwrap();
    assert_eq!(shared["name"], "shared");
    assert_eq!(shared["kind"], "human");
    assert_eq!(shared["cwd"], "/srv/seven");
    let meta: HashMap<String, Value> = serde_json::from_value(shared["meta"].clone()).unwrap();
    for i in 0..16 {
        assert_eq!(
            meta.get(&format!("k{i}")),
            Some(&Value::from(format!("v{i}"))),
            "k{i} lost: {meta:?}"
        );
    }
    for i in 0..16 {
        let e = eps
            .iter()
            .find(|e| e["name"] == format!("solo{i}"))
            .unwrap();
        assert_eq!(e["kind"], "codex");
        assert_eq!(e["cwd"], format!("/work/{i}"));
    }
}
