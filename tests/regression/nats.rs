//! Regression tests: the NATS JetStream store (see tests/regression.rs). A hostile client in
//! the same account is played with async-nats directly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// A single nats-server of this test's own, or `None` (skipped) without a binary.
fn server() -> Option<relay::natsd::Cluster> {
    if relay::natsd::skip_or_fail("NATS regression test") {
        return None;
    }
    Some(relay::natsd::Cluster::start(1, Duration::from_secs(120)).unwrap())
}

fn relay_on(h: &Home, url: &str, args: &[&str]) -> Run {
    let mut c = h.cmd(args);
    c.env("RELAY_STORE", url);
    run(c, None, DEADLINE)
}

fn json_on(h: &Home, url: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let r = relay_on(h, url, &a);
    assert_eq!(r.code, 0, "relay {args:?}: {}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

/// Registers `name`; its endpoint id.
fn register(h: &Home, url: &str, name: &str) -> String {
    json_on(h, url, &["register", name])["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs `f` with a raw async-nats client on `url` (the hostile peer).
fn hostile<F, Fut>(url: &str, f: F)
where
    F: FnOnce(async_nats::Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(url))
            .await
            .expect("connect in time")
            .expect("connect");
        tokio::time::timeout(Duration::from_secs(30), f(client))
            .await
            .expect("hostile client in time");
    });
}

/// A receipt entry that is not relay's JSON (written by another client of the account, or
/// corrupted) failed every fetch of the mailbox with "unreadable receipt" (exit 1), and
/// left the other messages of that look delivered but never shown. Now the message counts
/// as queued and the next claim overwrites the entry.
#[test]
fn a_garbage_receipt_does_not_block_the_mailbox() {
    let Some(cluster) = server() else { return };
    let url = cluster.url_list();
    let h = Home::new();
    register(&h, &url, "alice");
    let bob = register(&h, &url, "bob");
    let m1 = json_on(&h, &url, &["send", "bob", "--as", "alice", "first"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    json_on(&h, &url, &["send", "bob", "--as", "alice", "second"]);
    let key = format!("{bob}.{m1}");
    hostile(&url, |c| async move {
        let kv = async_nats::jetstream::new(c)
            .get_key_value("relay_rcpt")
            .await
            .unwrap();
        kv.put(key, "garbage{".into()).await.unwrap();
    });
    let doc = json_on(&h, &url, &["inbox", "--as", "bob"]);
    let bodies: Vec<&str> = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["first", "second"], "{doc}");
    let st = json_on(&h, &url, &["status", &m1]);
    assert_eq!(st["state"], "acked", "{st}");
}

/// A message published by hand whose `Relay-To` header names someone other than its
/// subject's recipient was shown to the subject's recipient, whose ack then went to the
/// other endpoint's receipt ("acked": true, yet queued forever) and counted as pending for
/// both. Now a message whose headers disagree with its subject is skipped.
#[test]
fn forged_headers_that_disagree_with_the_subject_are_skipped() {
    let Some(cluster) = server() else { return };
    let url = cluster.url_list();
    let h = Home::new();
    let alice = register(&h, &url, "alice");
    let bob = register(&h, &url, "bob");
    // Make the stream exist, then forge.
    json_on(&h, &url, &["send", "bob", "--as", "alice", "real"]);
    let (a, b) = (alice.clone(), bob.clone());
    hostile(&url, |c| async move {
        let js = async_nats::jetstream::new(c);
        let mut hdr = async_nats::HeaderMap::new();
        hdr.insert("Relay-Id", "forged-1");
        hdr.insert("Relay-From", a.as_str());
        hdr.insert("Relay-To", a.as_str());
        hdr.insert("Relay-Intent", "notify");
        hdr.insert("Relay-Content-Type", "text/plain");
        hdr.insert("Relay-Created", "1700000000000");
        js.publish_with_headers(
            format!("relay.mail.{b}.{a}._.forged-1"),
            hdr,
            "forged".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });
    let doc = json_on(&h, &url, &["inbox", "--as", "bob"]);
    let bodies: Vec<&str> = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["real"], "{doc}");
    let doc = json_on(&h, &url, &["inbox", "--as", "alice"]);
    assert!(doc["messages"].as_array().unwrap().is_empty(), "{doc}");
    let roster = json_on(&h, &url, &["roster"]);
    for e in roster["endpoints"].as_array().unwrap() {
        assert_eq!(e["pending"], 0, "{roster}");
    }
}

/// Kills the nats-server it started.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With `RELAY_LOG=debug`, a password or token given in the store URL was printed on every
/// connection attempt (async-nats logs the server address it dials, userinfo included).
/// Now credentials are taken out of the URL and passed as connect options.
#[test]
fn credentials_in_the_url_never_reach_the_log() {
    if relay::natsd::skip_or_fail("credentials_in_the_url_never_reach_the_log") {
        return;
    }
    let bin = relay::natsd::server_binary().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", "bob", "--pass", "s3cretpw0rd"])
        .arg("-sd")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let h = Home::new();
    let url = format!("nats://bob:s3cretpw0rd@127.0.0.1:{port}");
    let mut c = h.cmd(&["register", "alice", "--json"]);
    c.env("RELAY_STORE", &url).env("RELAY_LOG", "debug");
    let r = run(c, None, DEADLINE);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        !r.stderr.contains("s3cretpw0rd") && !r.stdout.contains("s3cretpw0rd"),
        "{}",
        r.stderr
    );
    // A wrong password is refused, and the error does not echo it either.
    let mut c = h.cmd(&["roster", "--json"]);
    c.env(
        "RELAY_STORE",
        format!("nats://bob:wr0ngpass@127.0.0.1:{port}"),
    );
    let r = run(c, None, DEADLINE);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("wr0ngpass") && !r.stdout.contains("wr0ngpass"));
}

fn inbox_bodies(h: &Home, url: &str, who: &str) -> Vec<String> {
    let doc = json_on(h, url, &["inbox", "--as", who, "--limit", "10000"]);
    doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect()
}

/// The acked floor (`floor.<to>`, where a look starts) outlived a deleted and re-created
/// `RELAY_MAIL`, whose numbering starts at 1 again: every new message sat below the old
/// floor, so `inbox` said "no mail" while `roster` counted it. Now a floor belongs to one
/// stream (its creation time) and is ignored for another.
#[test]
fn a_floor_from_a_deleted_mail_stream_hides_nothing() {
    let Some(cluster) = server() else { return };
    let url = cluster.url_list();
    let h = Home::new();
    register(&h, &url, "alice");
    register(&h, &url, "bob");
    let lines: String = (0..40).map(|i| format!("m{i}\n")).collect();
    let r = run(
        {
            let mut c = h.cmd(&["send", "bob", "--as", "alice", "--stdin", "--lines"]);
            c.env("RELAY_STORE", &url);
            c
        },
        Some(lines.as_bytes()),
        DEADLINE,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(inbox_bodies(&h, &url, "bob").len(), 40);
    // The next look computes the floor over the 40 acked messages and saves it.
    assert!(inbox_bodies(&h, &url, "bob").is_empty());
    hostile(&url, |c| async move {
        async_nats::jetstream::new(c)
            .delete_stream("RELAY_MAIL")
            .await
            .unwrap();
    });
    json_on(
        &h,
        &url,
        &["send", "bob", "--as", "alice", "after the reset"],
    );
    assert_eq!(inbox_bodies(&h, &url, "bob"), ["after the reset"]);
}

/// A `floor.<to>` that relay did not write (here u64::MAX) overflowed `floor + 1` — a
/// panic in debug builds — or, at any value past the stream's end, hid every message
/// without a word. Now a floor past the stream's last sequence is ignored with a warning.
#[test]
fn a_floor_past_the_stream_end_is_ignored() {
    let Some(cluster) = server() else { return };
    let url = cluster.url_list();
    let h = Home::new();
    register(&h, &url, "alice");
    let bob = register(&h, &url, "bob");
    json_on(&h, &url, &["send", "bob", "--as", "alice", "one"]);
    // Plain numbers (as the first release wrote floors) and with this stream's epoch.
    for (value, with_epoch) in [
        (u64::MAX.to_string(), false),
        (u64::MAX.to_string(), true),
        ("1000000000".to_string(), true),
    ] {
        let key = format!("floor.{bob}");
        let v = value.clone();
        hostile(&url, |c| async move {
            let js = async_nats::jetstream::new(c);
            let created = js
                .get_stream("RELAY_MAIL")
                .await
                .unwrap()
                .cached_info()
                .created
                .unix_timestamp_nanos();
            let saved = if with_epoch {
                format!("{v} {created}")
            } else {
                v
            };
            js.get_key_value("relay_ep")
                .await
                .unwrap()
                .put(key, saved.into())
                .await
                .unwrap();
        });
        let doc = json_on(&h, &url, &["inbox", "--as", "bob", "--peek"]);
        let n = doc["messages"].as_array().unwrap().len();
        assert_eq!(n, 1, "floor {value}: {doc}");
    }
}

/// An event log holding no record of the mail stream was taken for "nothing to wait for",
/// so a message's first delivery went ahead of its `queued` record: on a fresh store whose
/// log the server had not started copying into yet (a loaded CI machine), `delivered` was
/// logged before `queued` (store_conformance `events_record_each_change` failed in CI).
/// Now a reader takes "no record" for "nothing left" only when the server says the
/// copying runs and has nothing left; otherwise it waits (at most 1 s) for the record.
/// Played here with the mail source taken off the log, so its record never comes.
#[test]
fn a_first_delivery_waits_for_its_queued_record() {
    use relay::store::{Fetch, FetchMode, Registration, Store};
    let Some(cluster) = server() else { return };
    let url = cluster.url_list();
    let h = Home::new();
    let s = relay::store::open_at(&url, &relay::config::Config::at(h.path())).unwrap();
    let reg = |name: &str| {
        s.register(&Registration {
            name: Some(name.into()),
            ..Default::default()
        })
        .unwrap()
        .endpoint
        .id
    };
    let (a, b) = (reg("a"), reg("b"));
    hostile(&url, |c| async move {
        let js = async_nats::jetstream::new(c);
        let mut config = js
            .get_stream("RELAY_EVENTS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .config
            .clone();
        config
            .sources
            .get_or_insert_with(Vec::new)
            .retain(|x| x.name != "RELAY_MAIL");
        js.update_stream(config).await.unwrap();
    });
    s.enqueue(&relay::store::NewMessage {
        from: a,
        to: b.clone(),
        thread: None,
        reply_to: None,
        intent: relay::store::Intent::Notify,
        content_type: relay::store::TEXT_PLAIN.into(),
        body: b"first".to_vec(),
        expires_at: None,
        hold: None,
    })
    .unwrap();
    let t = Instant::now();
    let got = s
        .fetch(
            &b,
            &Fetch {
                limit: 10,
                mode: FetchMode::Deliver {
                    lease: Duration::from_secs(60),
                },
                filter: Default::default(),
            },
        )
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "the first delivery went ahead after {:?} without its queued record",
        t.elapsed()
    );
}
