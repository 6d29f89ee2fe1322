//! The live path with real processes: `relay listen` receives over its socket, a killed
//! listener leaves a stale socket and senders fall back to the mailbox, and a restarted
//! listener reclaims the socket and gets the queued mail first.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Home;
use serde_json::Value;

struct Listening {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

fn runtime(h: &Home) -> PathBuf {
    h.path().join("run")
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn listen(h: &Home, me: &str, id: &str) -> Listening {
    let mut c = h.cmd(&["listen", "--as", me, "--json"]);
    c.env_remove("RELAY_RUNTIME_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let sock = runtime(h).join(format!("{id}.sock"));
    wait_for("the listener's socket", || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    Listening { child, lines: rx }
}

fn next(l: &Listening) -> Value {
    l.lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a message within 30 s")
}

fn send(h: &Home, body: &str) -> Value {
    let mut c = h.cmd(&["send", "b", "--as", "a", "--json", "--", body]);
    c.env_remove("RELAY_RUNTIME_DIR");
    let r = common::run(c, None, common::DEADLINE);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.doc()
}

fn socket_exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn live_delivery_then_crash_fallback_then_reclaim() {
    let h = Home::new();
    h.register("a");
    let b = h.register("b");
    send(&h, "queued before listening");
    let mut l = listen(&h, "b", &b);
    let first = next(&l);
    assert_eq!(
        (first["body"].as_str(), first["route"].as_str()),
        (Some("queued before listening"), Some("mailbox"))
    );

    let sent = send(&h, "over the socket");
    assert_eq!(sent["route"], "live");
    assert_eq!(
        sent["state"], "acked",
        "the receipt tells the truth: the peer acked it"
    );
    let got = next(&l);
    assert_eq!(got["body"], "over the socket");
    assert_eq!(got["id"], sent["id"]);
    assert_eq!(
        h.json(&["status", sent["id"].as_str().unwrap()])["state"],
        "acked"
    );

    // SIGKILL: the socket file stays behind, nothing listens.
    l.child.kill().unwrap();
    l.child.wait().unwrap();
    let sock = runtime(&h).join(format!("{b}.sock"));
    assert!(
        socket_exists(&sock),
        "a killed listener leaves its socket file"
    );
    let fallback = send(&h, "while b is down");
    assert_eq!(fallback["route"], "mailbox");
    assert_eq!(fallback["state"], "queued");

    // A new listener reclaims the stale socket and gets the queued mail first.
    let mut l2 = listen(&h, "b", &b);
    let got = next(&l2);
    assert_eq!(got["body"], "while b is down");
    wait_for("the fallback message to be acked", || {
        h.json(&["status", fallback["id"].as_str().unwrap()])["state"] == "acked"
    });
    l2.child.kill().unwrap();
    l2.child.wait().unwrap();
}

#[test]
fn a_live_only_endpoint_gets_live_mail_and_nothing_when_down() {
    let h = Home::new();
    h.register("a");
    let b = h.json(&["register", "b", "--no-mailbox"])["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = h.run(&["send", "b", "--as", "a", "x"]);
    assert_eq!(r.code, 3, "down and no mailbox: not deliverable");
    let mut l = listen(&h, "b", &b);
    let sent = send(&h, "live only");
    assert_eq!(sent["route"], "live");
    assert_eq!(next(&l)["body"], "live only");
    l.child.kill().unwrap();
    l.child.wait().unwrap();
}
