//! relay::natsd: a local nats-server cluster (start, readiness, kill, restart, catch-up,
//! bounded lifetime, no leftover processes). Skips without a nats-server binary, fails
//! instead under RELAY_REQUIRE_NATS=1 (CI).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::with_deadline;
use relay::natsd::{self, Cluster};
use serde_json::Value;

/// Polls `cond` every 20 ms until true or `limit`; returns whether it became true.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal NATS text-protocol client (no headers), enough for JetStream API requests
/// and acknowledged publishes in these tests.
struct Nats {
    r: BufReader<TcpStream>,
    w: TcpStream,
    inbox: String,
}

impl Nats {
    fn connect(url: &str) -> Nats {
        let addr = url.strip_prefix("nats://").expect("nats:// url");
        let w = TcpStream::connect(addr).expect("connect");
        w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut n = Nats {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
            inbox: format!("_INBOX.natsd{}", std::process::id()),
        };
        let mut info = String::new();
        n.r.read_line(&mut info).unwrap();
        assert!(info.starts_with("INFO "), "server greeting: {info}");
        let sub = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":false}}\r\nSUB {} 1\r\nPING\r\n",
            n.inbox
        );
        n.w.write_all(sub.as_bytes()).unwrap();
        n.expect_pong();
        n
    }

    fn expect_pong(&mut self) {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), "PONG", "expected PONG");
    }

    /// Publishes `payload` to `subject` with a reply inbox and returns the reply payload.
    fn request(&mut self, subject: &str, payload: &str) -> String {
        let msg = format!(
            "PUB {subject} {} {}\r\n{payload}\r\n",
            self.inbox,
            payload.len()
        );
        self.w.write_all(msg.as_bytes()).unwrap();
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).expect("read reply");
            let line = line.trim_end();
            if line == "PING" {
                self.w.write_all(b"PONG\r\n").unwrap();
                continue;
            }
            if let Some(rest) = line.strip_prefix("MSG ") {
                let len: usize = rest.rsplit(' ').next().unwrap().parse().unwrap();
                let mut body = vec![0; len + 2];
                self.r.read_exact(&mut body).unwrap();
                body.truncate(len);
                return String::from_utf8(body).unwrap();
            }
            assert!(!line.starts_with("-ERR"), "server error: {line}");
        }
    }
}

/// Creates an R3 file stream `name` on subjects `name.>` and publishes `n` acknowledged
/// messages to it.
fn stream_with_messages(url: &str, name: &str, replicas: usize, n: usize) {
    let mut c = Nats::connect(url);
    let cfg = format!(
        r#"{{"name":"{name}","subjects":["{name}.>"],"num_replicas":{replicas},"storage":"file"}}"#
    );
    let reply = c.request(&format!("$JS.API.STREAM.CREATE.{name}"), &cfg);
    let v: Value = serde_json::from_str(&reply).unwrap();
    assert!(v.get("error").is_none(), "stream create: {reply}");
    publish(url, name, n);
}

fn publish(url: &str, name: &str, n: usize) {
    let mut c = Nats::connect(url);
    for k in 0..n {
        let ack = c.request(&format!("{name}.x"), &format!("m{k}"));
        assert!(ack.contains("\"seq\""), "publish ack: {ack}");
    }
}

/// `state.last_seq` of `stream` as node `i` reports it.
fn last_seq(c: &Cluster, i: usize, stream: &str) -> Option<u64> {
    let (code, body) = c.get(i, "/jsz?streams=true&acc=%24G").ok()?;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).ok()?;
    v["account_details"]
        .as_array()?
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == stream)?
        .pointer("/state/last_seq")?
        .as_u64()
}

fn alive(pid: u32) -> bool {
    // A reaped pid has no /proc entry; a reused pid would not be a nats-server.
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "nats-server")
}

#[test]
fn single_node_is_healthy_and_accepts_clients() {
    if natsd::skip_or_fail("single_node_is_healthy_and_accepts_clients") {
        return;
    }
    with_deadline(Duration::from_secs(60), || {
        let bin = natsd::server_binary().unwrap();
        let v = natsd::server_version(&bin).expect("version");
        eprintln!("nats-server {v} at {}", bin.display());
        let t = Instant::now();
        let c = Cluster::start(1, Duration::from_secs(60)).unwrap();
        eprintln!("1 node ready in {:?}", t.elapsed());
        assert_eq!(c.len(), 1);
        assert!(c.is_running(0));
        assert_eq!(c.get(0, "/healthz?js-enabled-only=true").unwrap().0, 200);
        assert!(c.healthy(0));
        assert_eq!(c.meta_leader(), Some(0));
        let url = c.url(0);
        assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
        assert_eq!(c.url_list(), url);
        let conf = std::fs::read_to_string(c.config_path(0)).unwrap();
        assert!(conf.contains("sync_interval: always"), "{conf}");
        assert!(
            !conf.contains("cluster {"),
            "standalone has no cluster block: {conf}"
        );
        // A real client connection: the server greets with INFO and answers PING.
        let mut n = Nats::connect(&url);
        n.w.write_all(b"PING\r\n").unwrap();
        n.expect_pong();
        stream_with_messages(&url, "ONE", 1, 3);
        assert_eq!(c.stream_leader("ONE"), Some(0));
        c.wait_current(0, "ONE", Duration::from_secs(10)).unwrap();
        assert_eq!(last_seq(&c, 0, "ONE"), Some(3));
    });
}

#[test]
fn three_nodes_survive_a_killed_follower_and_it_catches_up() {
    if natsd::skip_or_fail("three_nodes_survive_a_killed_follower_and_it_catches_up") {
        return;
    }
    with_deadline(Duration::from_secs(120), || {
        let t = Instant::now();
        let mut c = Cluster::start(3, Duration::from_secs(120)).unwrap();
        eprintln!("3 nodes ready in {:?}: {}", t.elapsed(), c.url_list());
        assert_eq!(c.urls().len(), 3);
        assert_eq!(c.url_list().split(',').count(), 3);
        eprintln!(
            "--- {}\n{}",
            c.config_path(0).display(),
            std::fs::read_to_string(c.config_path(0)).unwrap()
        );
        let leader = c.meta_leader().expect("meta leader after start");
        stream_with_messages(&c.url(leader), "EV", 3, 50);
        let sl = c.stream_leader("EV").expect("stream leader");
        // A node that leads neither the meta layer nor the stream.
        let victim = (0..3).find(|&i| i != leader && i != sl).unwrap();
        c.kill(victim);
        assert!(!c.is_running(victim));
        assert_eq!(c.urls().len(), 3, "urls keep stopped nodes");
        for i in (0..3).filter(|&i| i != victim) {
            assert!(c.is_running(i));
            assert!(
                eventually(Duration::from_secs(10), || c.healthy(i)),
                "node {i} unhealthy after node {victim} was killed"
            );
        }
        // Writes while the follower is down, then it must catch up after a restart.
        publish(&c.url(sl), "EV", 50);
        let t = Instant::now();
        c.restart(victim).unwrap();
        eprintln!("restart to healthy in {:?}", t.elapsed());
        assert!(c.is_running(victim));
        assert!(c.healthy(victim));
        c.wait_current(victim, "EV", Duration::from_secs(20))
            .unwrap();
        assert_eq!(last_seq(&c, victim, "EV"), Some(100));
        assert!(c.meta_leader().is_some());
    });
}

#[test]
fn drop_leaves_no_server_running() {
    if natsd::skip_or_fail("drop_leaves_no_server_running") {
        return;
    }
    with_deadline(Duration::from_secs(60), || {
        let c = Cluster::start(2, Duration::from_secs(60)).unwrap();
        let pids: Vec<u32> = c.pids().into_iter().map(|p| p.unwrap()).collect();
        let dir = c.config_path(0).parent().unwrap().to_path_buf();
        assert!(pids.iter().all(|&p| alive(p)));
        drop(c);
        for p in pids {
            assert!(
                !Path::new(&format!("/proc/{p}")).exists() || !alive(p),
                "pid {p} alive"
            );
        }
        assert!(!dir.exists(), "temp dir {} left behind", dir.display());
    });
}

#[test]
fn lifetime_watchdog_kills_every_node() {
    if natsd::skip_or_fail("lifetime_watchdog_kills_every_node") {
        return;
    }
    with_deadline(Duration::from_secs(60), || {
        let mut c = Cluster::start(1, Duration::from_secs(3)).unwrap();
        let pid = c.pids()[0].unwrap();
        assert!(
            eventually(Duration::from_secs(30), || !c.is_running(0)),
            "node outlived the cluster's lifetime"
        );
        assert!(!alive(pid));
        let e = c.restart(0).unwrap_err();
        assert!(e.to_string().contains("lifetime"), "{e}");
    });
}

#[test]
fn a_node_that_exits_is_reported_with_its_log_tail() {
    // Needs no nats-server: a stand-in binary that complains and exits.
    with_deadline(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("nats-server");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"config rejected: $2\" >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = Instant::now();
        let e = Cluster::start_with(&fake, 1, Duration::from_secs(60)).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "exit noticed late: {:?}",
            t.elapsed()
        );
        match &e {
            natsd::Error::NotReady { node, log_tail, .. } => {
                assert_eq!(*node, 0);
                assert!(log_tail.contains("config rejected: "), "{log_tail}");
                assert!(log_tail.contains("n1.conf"), "{log_tail}");
            }
            other => panic!("expected NotReady, got {other}"),
        }
        assert!(e.to_string().contains("process exited"), "{e}");
        eprintln!("{e}");
    });
}
