//! `relay store copy` on the real binary: SQLite → NATS (a 1-node local nats-server) and
//! back, ids kept, acked mail left behind, idempotent; bad locations and an unreachable
//! server. The NATS tests skip without a nats-server binary (fail under
//! `RELAY_REQUIRE_NATS=1`, CI); the bad-input tests need none.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Home, Run, with_deadline};
use relay::natsd::{self, Cluster};
use serde_json::Value;

/// `relay args… --json` in `home` against `store` (a `RELAY_STORE` value; empty = the
/// home's SQLite) as machine `host`; asserts exit 0 and returns the document.
fn json_at(home: &Home, store: &str, host: &str, args: &[&str]) -> Value {
    let r = run_at(home, store, host, args, true);
    assert_eq!(
        r.code, 0,
        "relay {args:?} (store {store:?}) failed: {}",
        r.stderr
    );
    r.doc()
}

fn run_at(home: &Home, store: &str, host: &str, args: &[&str], json: bool) -> Run {
    // `--json` first: after a `--` it would be text.
    let mut a = if json { vec!["--json"] } else { vec![] };
    a.extend_from_slice(args);
    let mut c = home.cmd(&a);
    c.env("RELAY_HOST", host);
    if !store.is_empty() {
        c.env("RELAY_STORE", store);
    }
    common::run(c, None, common::DEADLINE)
}

/// Sends `text` from `from` to `to` in the home's SQLite store; returns the message id.
fn send(home: &Home, from: &str, to: &str, text: &str) -> String {
    let d = json_at(
        home,
        "",
        "machine-a",
        &["send", to, "--as", from, "--", text],
    );
    d["id"].as_str().expect("send id").to_string()
}

/// `(name, id, host)` of every endpoint in the roster document `d`.
fn endpoints(d: &Value) -> BTreeSet<(String, String, String)> {
    d["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or("-").to_string(),
                e["id"].as_str().unwrap().to_string(),
                e["host"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

/// Ids of the messages in an `inbox --json` document.
fn ids(d: &Value) -> BTreeSet<String> {
    d["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn counts(d: &Value) -> [u64; 4] {
    [
        "endpoints_copied",
        "endpoints_existing",
        "messages_copied",
        "messages_existing",
    ]
    .map(|k| {
        d[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {d}"))
    })
}

#[test]
fn sqlite_to_nats_and_back() {
    if natsd::skip_or_fail("store_copy::sqlite_to_nats_and_back") {
        return;
    }
    with_deadline(Duration::from_secs(120), || {
        let cluster = Cluster::start(1, Duration::from_secs(150)).expect("start nats-server");
        let nats = cluster.url_list();
        let a = Home::new();
        let a_loc = format!("sqlite:{}", a.path().display());

        // Three endpoints with hosts, six messages, one of them acked.
        for name in ["alice", "bob", "carol"] {
            json_at(
                &a,
                "",
                "machine-a",
                &["register", name, "--meta", "team=red"],
            );
        }
        let to_bob: BTreeSet<String> = [
            send(&a, "alice", "bob", "one"),
            send(&a, "carol", "bob", "two"),
        ]
        .into();
        let to_carol: BTreeSet<String> = [
            send(&a, "alice", "carol", "three"),
            send(&a, "bob", "carol", "four"),
        ]
        .into();
        let to_alice = send(&a, "bob", "alice", "five");
        let acked = send(&a, "carol", "alice", "six (acked, not copied)");
        let shown = json_at(&a, "", "machine-a", &["ack", &acked, "--as", "alice"]);
        assert_eq!(shown["ok"], true, "{shown}");
        let src_roster = json_at(&a, "", "machine-a", &["roster"]);
        let src_endpoints = endpoints(&src_roster);
        assert_eq!(src_endpoints.len(), 3);

        // SQLite → NATS: 3 endpoints, 5 messages.
        let d = json_at(&a, "", "machine-b", &["store", "copy", &a_loc, &nats]);
        assert_eq!(counts(&d), [3, 0, 5, 0], "{d}");
        assert_eq!(d["messages_leased"], 0, "{d}");
        assert_eq!(d["src"], a_loc.as_str());
        assert_eq!(d["dst"], nats.as_str());
        // SRC is unchanged.
        assert_eq!(json_at(&a, "", "machine-a", &["roster"]), src_roster);

        // The NATS store has the same endpoints (ids, names, hosts) and the same mail.
        let on_nats = json_at(&a, &nats, "machine-b", &["roster"]);
        assert_eq!(endpoints(&on_nats), src_endpoints, "{on_nats}");
        assert!(
            src_endpoints.iter().all(|(_, _, h)| h == "machine-a"),
            "{src_endpoints:?}"
        );
        for e in on_nats["endpoints"].as_array().unwrap() {
            assert_eq!(e["meta"]["team"], "red", "{e}");
        }
        let bob_mail = json_at(&a, &nats, "machine-b", &["inbox", "--as", "bob"]);
        assert_eq!(ids(&bob_mail), to_bob, "{bob_mail}");
        let texts: BTreeSet<&str> = bob_mail["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["one", "two"].into());
        let alice_mail = json_at(&a, &nats, "machine-b", &["inbox", "--as", "alice"]);
        assert_eq!(ids(&alice_mail), [to_alice.clone()].into(), "{alice_mail}");

        // Again: nothing new, even for the messages read on NATS meanwhile.
        let d = json_at(&a, "", "machine-b", &["store", "copy", &a_loc, &nats]);
        assert_eq!(counts(&d), [0, 3, 0, 5], "{d}");
        let human = run_at(
            &a,
            "",
            "machine-b",
            &["store", "copy", &a_loc, &nats],
            false,
        );
        assert_eq!(human.code, 0, "{}", human.stderr);
        assert!(human.stdout.contains("nothing new"), "{}", human.stdout);

        // NATS → a fresh SQLite home: the endpoints, and the mail still pending there
        // (carol's two; bob's and alice's were read).
        let c = Home::new();
        let c_loc = format!("sqlite:{}", c.path().display());
        let d = json_at(&a, "", "machine-b", &["store", "copy", &nats, &c_loc]);
        assert_eq!(counts(&d), [3, 0, 2, 0], "{d}");
        let back = json_at(&c, "", "machine-c", &["roster"]);
        assert_eq!(endpoints(&back), src_endpoints, "{back}");
        let carol_mail = json_at(&c, "", "machine-c", &["inbox", "--as", "carol"]);
        assert_eq!(ids(&carol_mail), to_carol, "{carol_mail}");
        let d = json_at(&a, "", "machine-b", &["store", "copy", &nats, &c_loc]);
        assert_eq!(counts(&d), [0, 3, 0, 2], "{d}");

        // The same cluster on both sides is refused before anything is written.
        let r = run_at(&a, "", "machine-b", &["store", "copy", &nats, &nats], false);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains("same store"), "{}", r.stderr);
        drop(cluster);
    });
}

#[test]
fn same_location_is_a_usage_error() {
    with_deadline(Duration::from_secs(60), || {
        let a = Home::new();
        a.register("alice");
        let loc = format!("sqlite:{}", a.path().display());
        let bare = format!("{}/./", a.path().display());
        let r = run_at(&a, "", "m", &["store", "copy", &loc, &bare], true);
        assert_eq!(r.code, 2, "{r:?}");
        let d = r.doc();
        assert_eq!(d["ok"], false);
        assert_eq!(d["error"]["kind"], "usage", "{d}");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(msg.contains("same store"), "{msg}");
    });
}

#[test]
fn unknown_scheme_is_a_usage_error() {
    with_deadline(Duration::from_secs(60), || {
        let a = Home::new();
        a.register("alice");
        let loc = format!("sqlite:{}", a.path().display());
        let r = run_at(
            &a,
            "",
            "m",
            &["store", "copy", &loc, "redis://u:secret@h:6379"],
            false,
        );
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            r.stderr.contains("DST 'redis://***@h:6379'"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("unknown scheme"), "{}", r.stderr);
        assert!(r.stderr.contains("nats://host:4222"), "{}", r.stderr);
        assert!(!r.stderr.contains("secret"), "{}", r.stderr);
        // A SQLite SRC that is no relay home is refused, and nothing is created there.
        let missing = a.path().join("no-such-home");
        let m = missing.display().to_string();
        let r = run_at(&a, "", "m", &["store", "copy", &m, &loc], false);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains("no relay.db"), "{}", r.stderr);
        assert!(!missing.exists());
    });
}

#[test]
fn unreachable_nats_fails_fast_and_names_the_url() {
    with_deadline(Duration::from_secs(60), || {
        let a = Home::new();
        a.register("alice");
        let loc = format!("sqlite:{}", a.path().display());
        // A port nobody listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("nats://127.0.0.1:{port}");
        let t = Instant::now();
        let r = run_at(&a, "", "m", &["store", "copy", &loc, &url], false);
        let took = t.elapsed();
        assert_eq!(r.code, 1, "{r:?}");
        assert!(took < Duration::from_secs(15), "took {took:?}");
        assert!(r.stderr.contains(&url), "{}", r.stderr);
        assert!(r.stderr.contains("cannot open DST"), "{}", r.stderr);
        let r = run_at(&a, "", "m", &["store", "copy", &loc, &url], true);
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(r.doc()["error"]["kind"], "store-unavailable");
    });
}

#[test]
fn roster_shows_the_host_column_escaped_and_aligned() {
    with_deadline(Duration::from_secs(60), || {
        let a = Home::new();
        json_at(&a, "", "build-box", &["register", "alice"]);
        json_at(&a, "", "evil\x1b[31mred", &["register", "bob"]);
        let r = run_at(&a, "", "m", &["roster"], false);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!r.stdout.contains('\x1b'), "{:?}", r.stdout);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{:?}", r.stdout);
        let col = |l: &str, word: &str| l.find(word).unwrap_or_else(|| panic!("{word} in {l:?}"));
        let host = col(lines[0], "HOST");
        assert_eq!(col(lines[1], "build-box"), host, "{:?}", r.stdout);
        assert_eq!(col(lines[2], "evil\\x1b[31mred"), host, "{:?}", r.stdout);
        // PENDING is right-aligned: every row's count ends where the header does.
        let end = col(lines[0], "PENDING") + "PENDING".len();
        for l in &lines[1..] {
            assert_eq!(&l[end - 1..end], "0", "{:?}", r.stdout);
        }
        let d = json_at(&a, "", "m", &["roster"]);
        let hosts: BTreeSet<&str> = d["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, ["build-box", "evil\x1b[31mred"].into());
    });
}
