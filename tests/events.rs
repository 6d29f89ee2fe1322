//! `relay events` with real processes, on both stores: a follower killed mid-stream and
//! restarted with `--since <last cursor>` sees every one of 10k events exactly once; and
//! the CLI's answers to bad cursors and missing identities.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use relay::store::*;
use serde_json::Value;

/// One store under test (tests/common/backend.rs).
struct Fx(common::backend::Backend);

impl std::ops::Deref for Fx {
    type Target = common::backend::Backend;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Fx {
    fn sqlite() -> Option<Fx> {
        common::backend::Backend::sqlite().map(Fx)
    }

    fn nats() -> Option<Fx> {
        common::backend::Backend::nats("relay events on NATS").map(Fx)
    }

    /// `relay events --follow --json …`, its JSON lines on a channel.
    fn follow(&self, start: &[&str]) -> (Child, mpsc::Receiver<Value>) {
        let mut args = vec!["events", "--follow", "--json", "--all"];
        args.extend_from_slice(start);
        let mut child = self
            .relay(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON: {e}: {line:?}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

both_stores!(
    a_follower_killed_mid_stream_resumes_exactly_once,
    bad_cursors_and_identities_are_clear_errors,
);

const EVENTS: usize = 10_000;

use common::backend::reg;

fn msg(from: &str, to: &str, i: usize) -> NewMessage {
    common::backend::msg(from, to, &format!("m{i}"))
}

/// Every cursor the store holds, read page by page.
fn all_cursors(s: &dyn Store) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .events(&EventQuery {
                after,
                limit: MAX_EVENTS,
                ..Default::default()
            })
            .unwrap();
        if page.events.is_empty() {
            return out;
        }
        out.extend(page.events.iter().map(|e| e.cursor));
        after = Some(page.next);
    }
}

/// Takes lines from `rx` until `n` were taken, `stop(cursor)` holds, or the deadline.
fn take(
    rx: &mpsc::Receiver<Value>,
    seen: &mut Vec<u64>,
    n: usize,
    deadline: Instant,
    stop: impl Fn(u64) -> bool,
) {
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = rx.recv_timeout(left).unwrap_or_else(|e| {
            panic!(
                "no event line within the deadline ({e}); seen {}",
                seen.len()
            )
        });
        let c = v["cursor"]
            .as_u64()
            .unwrap_or_else(|| panic!("no cursor: {v}"));
        assert!(v["kind"].is_string(), "{v}");
        seen.push(c);
        if stop(c) {
            return;
        }
    }
}

fn a_follower_killed_mid_stream_resumes_exactly_once(fx: &Fx) {
    let deadline = Instant::now() + Duration::from_secs(240);
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    // The follower starts before the traffic, from the first event.
    let (mut child, rx) = fx.follow(&["--from-start"]);
    // The producer: 5000 messages in batches (5000 queued events), then bob takes them
    // (5000 acked events), while the follower reads.
    let producer = {
        let s = fx.open();
        std::thread::spawn(move || {
            for chunk in 0..50 {
                let batch: Vec<NewMessage> =
                    (0..100).map(|i| msg(&a, &b, chunk * 100 + i)).collect();
                s.enqueue_batch(&batch).unwrap();
            }
            let mut taken = 0;
            while taken < EVENTS / 2 {
                let got = s
                    .fetch(
                        &b,
                        &Fetch {
                            limit: 100,
                            mode: FetchMode::Take,
                            filter: Filter::default(),
                        },
                    )
                    .unwrap();
                assert!(!got.is_empty(), "mail went missing after {taken}");
                taken += got.len();
            }
        })
    };
    let mut seen: Vec<u64> = Vec::new();
    let mut rx = rx;
    // Killed (-9) twice mid-stream; each restart resumes after the last cursor handled.
    for stop_at in [3_000, 7_000] {
        let n = stop_at - seen.len();
        take(&rx, &mut seen, n, deadline, |_| false);
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines the reader already took were printed whole before the kill: handled.
        // What it had not taken yet is not handled, and must come again.
        while let Ok(v) = rx.try_recv() {
            seen.push(v["cursor"].as_u64().unwrap());
        }
        let last = seen.last().unwrap().to_string();
        (child, rx) = fx.follow(&["--since", &last]);
    }
    producer.join().unwrap();
    // The whole log: 2 registrations, 5000 queued, 5000 taken (at least; NATS records
    // events a moment after the change, so wait for them).
    let want = 2 + EVENTS;
    let mut expected = all_cursors(&*s);
    while expected.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the store holds {} events", expected.len());
        s.wait_events(*expected.last().unwrap(), left, &Cancel::new())
            .unwrap();
        expected = all_cursors(&*s);
    }
    let end = *expected.last().unwrap();
    take(&rx, &mut seen, usize::MAX, deadline, |c| c == end);
    child.kill().unwrap();
    child.wait().unwrap();
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event was printed twice");
    assert_eq!(seen.len(), expected.len(), "events were missed");
    assert_eq!(seen, expected, "not the store's order");
}

fn bad_cursors_and_identities_are_clear_errors(fx: &Fx) {
    let s = fx.open();
    reg(&*s, "a");
    let out = fx
        .relay(&["events", "--all", "--since", "99999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("past the newest event"), "{err}");
    let out = fx
        .relay(&["events", "--all", "--since", "-3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = fx.relay(&["events"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no identity: {out:?}");
    let out = fx
        .relay(&["events", "--all", "--tail", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Not following: prints and exits 0, each line with a cursor.
    let out = fx
        .relay(&["events", "--all", "--json", "--from-start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|v| v["cursor"].as_u64().is_some()));
}

/// A refused send is an event with its reason, and text from other endpoints (a thread
/// name, a target as written) never reaches the terminal raw.
#[test]
fn rejects_show_their_reason_and_hostile_text_is_escaped() {
    let Some(fx) = Fx::sqlite() else { return };
    let s = fx.open();
    let (a, _b) = (reg(&*s, "a"), reg(&*s, "b"));
    let out = fx
        .relay(&["send", "nob\u{1b}[2Jody", "--as", "a", "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = fx
        .relay(&["send", "b", "--as", "a", "--thread", "t\u{202e}x", "hi"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a thread with a bidi control is refused: {out:?}"
    );
    let mut m = msg(&a, &_b, 0);
    m.thread = Some("plan \u{200b}B".into());
    s.enqueue(&m).unwrap();
    let out = fx.relay(&["events", "--as", "a"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let reject = text
        .lines()
        .find(|l| l.contains("message.rejected"))
        .unwrap_or_else(|| panic!("no reject in {text}"));
    assert!(reject.contains("unknown-target"), "{reject}");
    assert!(reject.contains("nob\\x1b[2Jody"), "escaped: {reject}");
    assert!(!text.contains('\u{1b}'), "raw ESC in {text:?}");
    assert!(text.contains("message.queued"), "{text}");
    // Another endpoint's events are not a's: b's registration is not shown to a.
    assert!(!text.contains("name b"), "{text}");
    // JSON keeps the text as it was (it is data), with the reason.
    let out = fx
        .relay(&["events", "--as", "a", "--json"])
        .output()
        .unwrap();
    let docs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = docs
        .iter()
        .find(|d| d["kind"] == "message.rejected")
        .unwrap();
    // The target as written is in the reason, not in `to` (no endpoint has it).
    assert!(r.get("to").is_none(), "{r}");
    let detail = r["detail"].as_str().unwrap();
    assert!(detail.starts_with("unknown-target: "), "{detail}");
    assert!(detail.contains("nob\u{1b}[2Jody"), "{detail}");
}

/// The MCP tool `events`: the caller's own events, a `next` to resume from that gives
/// nothing twice, and clear errors for bad arguments.
#[test]
fn the_mcp_tool_pages_with_next() {
    let h = common::Home::new();
    h.register("alice");
    h.register("bob");
    h.register("carol");
    for i in 0..3 {
        assert_eq!(
            h.run(&["send", "bob", "--as", "alice", &format!("a{i}")])
                .code,
            0
        );
    }
    assert_eq!(
        h.run(&["send", "carol", "--as", "bob", "not alice's"]).code,
        0
    );
    let mut m = common::mcp::Mcp::start(&h, Some("alice"));
    let (err, d) = m.tool("events", serde_json::json!({"limit": 2}));
    assert!(!err, "{d}");
    let newest = d["events"].as_array().unwrap();
    assert_eq!(newest.len(), 2, "{d}");
    // From the start: alice's registration and her three sends, never bob → carol.
    let (err, d) = m.tool("events", serde_json::json!({"since": 0, "limit": 3}));
    assert!(!err, "{d}");
    let first: Vec<Value> = d["events"].as_array().unwrap().clone();
    assert_eq!(first.len(), 3);
    assert_eq!(d["more"], true);
    let next = d["next"].as_u64().unwrap();
    let (err, d) = m.tool("events", serde_json::json!({"since": next}));
    assert!(!err, "{d}");
    let rest = d["events"].as_array().unwrap();
    let all: Vec<&Value> = first.iter().chain(rest.iter()).collect();
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(
        all.windows(2)
            .all(|w| w[0]["cursor"].as_u64() < w[1]["cursor"].as_u64())
    );
    assert_eq!(all[0]["kind"], "endpoint.registered");
    assert!(
        all[1..]
            .iter()
            .all(|e| e["kind"] == "message.queued" && e["from_name"] == "alice")
    );
    assert_eq!(d["next"], d["head"]);
    // Nothing new: an empty page, the same next.
    let again = d["next"].clone();
    let (err, d) = m.tool("events", serde_json::json!({"since": again}));
    assert!(!err && d["events"].as_array().unwrap().is_empty(), "{d}");
    for bad in [
        serde_json::json!({"limit": 0}),
        serde_json::json!({"limit": 5000}),
        serde_json::json!({"since": 1_000_000}),
        serde_json::json!({"since": "x"}),
        serde_json::json!({"cursor": 3}),
    ] {
        let (err, d) = m.tool("events", bad.clone());
        assert!(err, "{bad} was accepted: {d}");
    }
}
