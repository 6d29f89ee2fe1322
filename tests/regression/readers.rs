//! Regression tests: readers ack only what they showed (issue 9 items 1–5), and readers'
//! resources (items 14, 17, 18). See tests/regression.rs.
#![allow(unused_imports)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::mcp::Mcp;
use crate::common::*;

/// `SELECT count(*) FROM messages WHERE <cond>`, read-only, straight from the file.
fn count(h: &Home, cond: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(h.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    conn.query_row(
        &format!("SELECT count(*) FROM messages WHERE {cond}"),
        [],
        |r| r.get(0),
    )
    .expect("count")
}

fn state(h: &Home, id: &str) -> String {
    h.json(&["status", id])["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// True when some thread of `pid` sleeps writing to a pipe: its output is stalled.
fn blocked_writing_a_pipe(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks.filter_map(Result::ok).any(|t| {
                std::fs::read_to_string(t.path().join("wchan"))
                    .is_ok_and(|w| w.contains("pipe_write"))
            })
        })
        .unwrap_or(false)
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 9 item 1: an MCP `wait` cancelled by `notifications/cancelled`, then a send. The
/// cancelled call gets no response, so nobody saw the message: it must not be acked, and
/// the next `inbox` must get it (it was acked and lost, 5 of 5 tries).
#[test]
fn a_cancelled_mcp_wait_acks_nothing_and_the_next_inbox_gets_the_mail() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let mut m = Mcp::start(&h, Some("bob"));
    m.call(2, "wait", json!({"timeout_s": 30}));
    m.send(&json!({"jsonrpc":"2.0","method":"notifications/cancelled",
        "params":{"requestId":2,"reason":"user pressed Esc"}}));
    let sent = h.json(&["send", "bob", "--as", "alice", "after the cancel"]);
    let id = sent["id"].as_str().unwrap().to_string();
    // The message must reach a later inbox well inside its 60 s lease: released, not acked.
    let end = Instant::now() + Duration::from_secs(20);
    let mut n = 3;
    loop {
        m.call(n, "inbox", json!({}));
        let doc = m.result(n);
        if let Some(got) = doc["messages"].as_array().and_then(|a| a.first()) {
            assert_eq!(got["id"], json!(id));
            assert_eq!(got["body"], "after the cancel");
            break;
        }
        assert_ne!(
            state(&h, &id),
            "acked",
            "the cancelled wait acked the message"
        );
        assert!(Instant::now() < end, "the message never came back to inbox");
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until("the inbox's ack", Duration::from_secs(20), || {
        state(&h, &id) == "acked"
    });
}

/// Three 100 KiB messages for bob, and a `relay mcp --as bob` whose stdout the test does
/// not read (initialized, then asked for its inbox): its ~300 KiB response stalls in the
/// 64 KiB pipe. Returns the child, its stdin and its unread stdout.
fn mcp_with_a_stalled_inbox(h: &Home) -> (Child, ChildStdin, ChildStdout) {
    h.register("alice");
    h.register("bob");
    let body = "x".repeat(100 * 1024);
    for _ in 0..3 {
        let r = h.run_stdin(
            &["send", "bob", "--as", "alice", "--stdin"],
            body.as_bytes(),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let mut child = h
        .cmd(&["mcp", "--as", "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"regression","version":"0"}}});
    writeln!(stdin, "{init}").unwrap();
    // Byte by byte, so nothing after the initialize response is read.
    let mut first = Vec::new();
    let mut b = [0u8; 1];
    while first.last() != Some(&b'\n') {
        stdout.read_exact(&mut b).unwrap();
        first.push(b[0]);
    }
    assert!(String::from_utf8_lossy(&first).contains("\"id\":0"));
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"inbox","arguments":{{}}}}}}"#
    )
    .unwrap();
    let pid = child.id();
    wait_until(
        "the inbox response to stall",
        Duration::from_secs(30),
        || blocked_writing_a_pipe(pid),
    );
    (child, stdin, stdout)
}

/// Issue 9 item 2: MCP `inbox` acked its batch before writing the response; a client that
/// stops reading then lost it. With the response stuck in a full pipe and the server
/// killed, nothing may be acked (3 of 3 were).
#[test]
fn an_mcp_inbox_whose_response_is_never_read_acks_nothing() {
    let h = Home::new();
    let (mut child, _stdin, _stdout) = mcp_with_a_stalled_inbox(&h);
    assert_eq!(count(&h, "state = 'delivered'"), 3, "fetched under a lease");
    kill9(&mut child);
    assert_eq!(
        count(&h, "state = 'acked'"),
        0,
        "messages acked although their response was never written"
    );
}

/// Issue 9 item 3: `relay listen` took (acked) a whole mailbox batch before printing it
/// (`relay listen | head -n1` with 50 queued: 50 acked, 1 shown). A line in a pipe nobody
/// has read is not shown either: nothing is acked until the consumer reads, and then
/// exactly what it read.
#[test]
fn a_stalled_listener_acks_only_the_lines_its_consumer_read() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let body = "y".repeat(4000);
    let lines: String = (0..50).map(|_| format!("{body}\n")).collect();
    assert_eq!(
        h.run_stdin(
            &["send", "bob", "--as", "alice", "--stdin", "--lines"],
            lines.as_bytes()
        )
        .code,
        0
    );
    let rt = tempfile::tempdir().unwrap();
    let mut child = h
        .cmd(&["listen", "--as", "bob", "--json"])
        .env("RELAY_RUNTIME_DIR", rt.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let unread = |out: &ChildStdout| rustix::io::ioctl_fionread(out).unwrap_or(0);
    let mut shown: Vec<String> = Vec::new();
    for round in 1..=3 {
        wait_until("a line in the pipe", Duration::from_secs(30), || {
            unread(&out) > 0
        });
        assert_eq!(
            count(&h, "state = 'acked'"),
            round - 1,
            "acked before its line was read"
        );
        let mut buf = vec![0u8; unread(&out) as usize];
        out.read_exact(&mut buf).unwrap();
        for l in String::from_utf8(buf).unwrap().lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            shown.push(v["id"].as_str().unwrap().to_string());
        }
        wait_until("the ack of what was read", Duration::from_secs(30), || {
            count(&h, "state = 'acked'") == round
        });
    }
    kill9(&mut child);
    let conn = rusqlite::Connection::open(h.db()).unwrap();
    let mut stmt = conn
        .prepare("SELECT id FROM messages WHERE state = 'acked'")
        .unwrap();
    let acked_ids: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(acked_ids.len(), 3);
    for id in &acked_ids {
        assert!(shown.contains(id), "{id} acked but never read");
    }
}

/// Issue 9 item 3, as the issue ran it: `relay listen | head -n1` with 50 queued showed 1
/// and acked 50. Now it acks the 1 that `head` read, and exits.
#[test]
fn listen_piped_into_head_acks_the_one_line_head_read() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let lines: String = (0..50).map(|i| format!("message {i}\n")).collect();
    assert_eq!(
        h.run_stdin(
            &["send", "bob", "--as", "alice", "--stdin", "--lines"],
            lines.as_bytes()
        )
        .code,
        0
    );
    let rt = tempfile::tempdir().unwrap();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "'{}' listen --as bob | head -n1",
            relay_bin().display()
        ))
        .env("RELAY_HOME", h.path())
        .env("RELAY_RUNTIME_DIR", rt.path())
        .env("RELAY_LOG", "warn");
    let r = run(c, None, DEADLINE);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("from alice"), "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    assert_eq!(
        count(&h, "state = 'acked'"),
        1,
        "acked by listen | head -n1"
    );
}

/// Issue 9 item 4: a live request to `listen --exec` was acked on `DeliverAck`, before it
/// was answered; kill the listener mid-command and it was acked and never answered. Now it
/// is `delivered` while the command runs, and a restarted listener answers it.
#[test]
fn a_request_whose_answerer_is_killed_mid_command_is_answered_by_the_next_one() {
    let h = Home::new();
    h.register("asker");
    let calc = h.register("calc");
    let rt = tempfile::tempdir().unwrap();
    let mark = rt.path().join("running");
    let sock = rt.path().join(format!("{calc}.sock"));
    let mut first = h
        .cmd(&[
            "listen",
            "--as",
            "calc",
            "--exec-timeout",
            "3s",
            "--exec",
            "echo $$ > \"$MARK\"; sleep 30",
        ])
        .env("RELAY_RUNTIME_DIR", rt.path())
        .env("MARK", &mark)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the first listener's socket",
        Duration::from_secs(30),
        || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
    );
    let r = h.cmd(&[
        "send", "calc", "--as", "asker", "--intent", "request", "--json", "--", "q",
    ]);
    let r = run(
        {
            let mut c = r;
            c.env("RELAY_RUNTIME_DIR", rt.path());
            c
        },
        None,
        DEADLINE,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sent = r.doc();
    let id = sent["id"].as_str().unwrap().to_string();
    assert_eq!(sent["route"], "live");
    assert_eq!(
        sent["state"], "delivered",
        "received is delivered, not acked"
    );
    wait_until("the command to start", Duration::from_secs(30), || {
        std::fs::read_to_string(&mark).is_ok_and(|s| s.ends_with('\n'))
    });
    let pgid: i32 = std::fs::read_to_string(&mark)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill9(&mut first);
    // Its process group (the command runs in its own): never `kill -9 -PGID` through
    // procps' kill, which reads "-15234" as "-1" and kills every process.
    assert!(pgid > 1, "a command's process group, not {pgid}");
    let _ = rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(pgid).unwrap(),
        rustix::process::Signal::KILL,
    );
    assert_eq!(state(&h, &id), "delivered", "killed mid-command: not acked");
    let mut second = h
        .cmd(&["listen", "--as", "calc", "--exec", "echo answered"])
        .env("RELAY_RUNTIME_DIR", rt.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the restarted listener's answer",
        Duration::from_secs(40),
        || state(&h, &id) == "acked",
    );
    kill9(&mut second);
    let inbox = h.json(&["inbox", "--as", "asker"]);
    let replies: Vec<&Value> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reply_to"] == json!(id))
        .collect();
    assert_eq!(replies.len(), 1, "exactly one answer: {inbox}");
    assert_eq!(replies[0]["body"], "answered\n");
}

/// Issue 9 item 5: a live listener and a mailbox reader on one endpoint printed the same
/// message twice (829 of 3,187): a live message sat `queued` in the mailbox during its
/// hand-over. Now it is held for the hand-over; every message is seen exactly once.
#[test]
fn a_live_listener_and_a_mailbox_reader_never_both_show_a_message() {
    let h = Home::new();
    h.register("alice");
    let bob = h.register("bob");
    let rt = tempfile::tempdir().unwrap();
    let mut listener = h
        .cmd(&["listen", "--as", "bob", "--json"])
        .env("RELAY_RUNTIME_DIR", rt.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = listener.stdout.take().unwrap();
    let (tx, live) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&l).unwrap();
            let _ = tx.send(v["id"].as_str().unwrap().to_string());
        }
    });
    let sock = rt.path().join(format!("{bob}.sock"));
    wait_until("bob's socket", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    // A mailbox reader racing the live path the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (home, stop) = (h.path(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = Command::new(relay_bin())
                    .args(["inbox", "--as", "bob", "--json"])
                    .env("RELAY_HOME", &home)
                    .env("RELAY_LOG", "error")
                    .output()
                    .unwrap();
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                for m in v["messages"].as_array().unwrap() {
                    seen.push(m["id"].as_str().unwrap().to_string());
                }
            }
            seen
        })
    };
    const N: usize = 120;
    let mut ids = Vec::new();
    for i in 0..N {
        let mut c = h.cmd(&["send", "bob", "--as", "alice", "--json", &format!("m{i}")]);
        c.env("RELAY_RUNTIME_DIR", rt.path());
        let r = run(c, None, DEADLINE);
        assert_eq!(r.code, 0, "{}", r.stderr);
        ids.push(r.doc()["id"].as_str().unwrap().to_string());
    }
    let mut shown: Vec<String> = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    // Everything acked means everything was shown by one reader or the other.
    while count(&h, "state != 'acked'") > 0 {
        assert!(Instant::now() < end, "not everything was read");
        while let Ok(id) = live.try_recv() {
            shown.push(id);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    shown.extend(reader.join().unwrap());
    kill9(&mut listener);
    while let Ok(id) = live.recv_timeout(Duration::from_millis(200)) {
        shown.push(id);
    }
    let mut sorted = shown.clone();
    sorted.sort();
    sorted.dedup();
    let twice = shown.len() - sorted.len();
    assert_eq!(twice, 0, "{twice} of {N} messages were shown twice");
    for id in &ids {
        assert!(sorted.contains(id), "{id} was never shown");
    }
}

/// Issue 9 item 14: 200 concurrent MCP `wait` calls used up the user's inotify instances
/// (128; other programs then fail). One instance per process, shared by every waiter, and
/// ≈0 CPU while they wait.
#[test]
fn two_hundred_mcp_waits_cost_one_inotify_instance_and_no_cpu() {
    let h = Home::new();
    h.register("bob");
    let mut m = Mcp::start(&h, Some("bob"));
    for id in 1..=200 {
        m.call(id, "wait", json!({"timeout_s": 60}));
    }
    let pid = m.child.id();
    let threads = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    wait_until("200 waits to be blocked", Duration::from_secs(60), || {
        threads() >= 200
    });
    let instances = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().contains("inotify"))
        .count();
    assert_eq!(instances, 1, "inotify instances held by relay mcp");
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    // The 200 calls are still starting (each resolves its caller and looks once) when
    // their threads exist: idle begins with the first half second without a CPU tick.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let t = cpu();
        std::thread::sleep(Duration::from_millis(500));
        if cpu() == t {
            break;
        }
        assert!(
            Instant::now() < end,
            "relay mcp never went idle with 200 waits"
        );
    }
    // The measurement window: CPU ticks (1/100 s) used over 3 s of idle waiting.
    let before = cpu();
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu() - before;
    eprintln!("200 idle waits used {used} ticks of CPU in 3 s");
    assert!(
        used <= 6,
        "200 idle waits used {used}/300 ticks of CPU in 3 s"
    );
}

/// Issue 9 item 18: an MCP request line of 16 MiB or more got no reply at all. It gets a
/// JSON-RPC error that says the limit, and the server keeps serving.
#[test]
fn an_oversized_mcp_request_line_is_answered_with_the_limit() {
    let h = Home::new();
    h.register("bob");
    let mut m = Mcp::start(&h, Some("bob"));
    let mut line = String::from(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"send","arguments":{"to":"bob","body":""#,
    );
    line.push_str(&"z".repeat(16 * 1024 * 1024 + 16));
    line.push_str("\"}}}\n");
    m.stdin.write_all(line.as_bytes()).unwrap();
    m.stdin.flush().unwrap();
    let r = m.response(7);
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("16 MiB"), "the error names the limit: {r}");
    m.send(&json!({"jsonrpc":"2.0","id":8,"method":"tools/list"}));
    assert!(m.response(8)["result"]["tools"].is_array(), "still serving");
    assert_eq!(message_rows(&h), 0);
}

/// A fake live endpoint on `sock` that accepts every `Deliver` and counts connections.
fn counting_listener(
    sock: &Path,
    id: &str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use relay::transport::{Connection, Local, handshake};
    use relay::wire::Msg;
    use relay::wire::catalogue::DeliverAck;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    let (conns, delivered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c2, d2, id) = (conns.clone(), delivered.clone(), id.to_string());
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { break };
            c2.fetch_add(1, Ordering::SeqCst);
            let (d, id) = (d2.clone(), id.clone());
            std::thread::spawn(move || {
                let mut conn = Connection::new(s);
                conn.set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                if handshake::accept(&mut conn, &Local::new(id)).is_err() {
                    return;
                }
                while let Ok(Some(f)) = conn.read_frame() {
                    if let Msg::Deliver(m) = f.msg {
                        d.fetch_add(1, Ordering::SeqCst);
                        let _ = conn.write_frame(Msg::DeliverAck(DeliverAck {
                            message_id: m.message_id,
                            accepted: true,
                            reason: None,
                        }));
                    }
                }
            });
        }
    });
    (conns, delivered)
}

/// Issue 9 item 17: `send --lines` to a live endpoint opened one connection per line
/// (3,000 lines: 1,830 listener threads). Now one connection per command.
#[test]
fn send_lines_to_a_live_endpoint_uses_one_connection() {
    use std::sync::atomic::Ordering;
    let h = Home::new();
    h.register("alice");
    let bob = h.register("bob");
    let rt = tempfile::tempdir().unwrap();
    let (conns, delivered) = counting_listener(&rt.path().join(format!("{bob}.sock")), &bob);
    let lines: String = (0..300).map(|i| format!("line {i}\n")).collect();
    let mut c = h.cmd(&[
        "send", "bob", "--as", "alice", "--stdin", "--lines", "--json",
    ]);
    c.env("RELAY_RUNTIME_DIR", rt.path());
    let r = run(c, Some(lines.as_bytes()), DEADLINE);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = r.doc();
    let sent = doc["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 300);
    assert!(
        sent.iter()
            .all(|s| s["route"] == "live" && s["state"] == "acked")
    );
    assert_eq!(delivered.load(Ordering::SeqCst), 300);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "connections opened for one command"
    );
}

/// Review of issue 9: MCP clients ignore a response that arrives after they cancelled
/// (Claude Code on Esc). A cancel crossing the `wait` response acked mail nobody was
/// shown (54 of 60 tries). Mail is acked only after a grace period without a cancel; a
/// cancel right after the response gives it back.
#[test]
fn a_cancel_right_after_an_mcp_response_gives_the_mail_back() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let mut m = Mcp::start(&h, Some("bob"));
    m.call(2, "wait", json!({"timeout_s": 30}));
    let sent = h.json(&["send", "bob", "--as", "alice", "crossing"]);
    let id = sent["id"].as_str().unwrap().to_string();
    let r = m.result(2);
    assert_eq!(r["messages"][0]["id"], json!(id));
    // The client pressed Esc as the response was on its way.
    m.send(&json!({"jsonrpc":"2.0","method":"notifications/cancelled",
        "params":{"requestId":2,"reason":"Esc"}}));
    let end = Instant::now() + Duration::from_secs(20);
    let mut n = 3;
    loop {
        m.call(n, "inbox", json!({}));
        let doc = m.result(n);
        if doc["messages"].as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(doc["messages"][0]["id"], json!(id));
            break;
        }
        assert_ne!(
            state(&h, &id),
            "acked",
            "acked although the client cancelled"
        );
        assert!(Instant::now() < end, "the mail never came back");
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Review of issue 9: a client that reuses a request id made another request's response
/// ack mail that was never written (wait id 1, inbox id 1, then tools/list id 1). Mail is
/// acked only by the response that carries it.
#[test]
fn a_reused_mcp_request_id_never_acks_mail_it_did_not_carry() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let mut m = Mcp::start(&h, Some("bob"));
    m.call(1, "wait", json!({"timeout_s": 30}));
    m.call(1, "inbox", json!({}));
    let _ = m.response(1);
    let sent = h.json(&["send", "bob", "--as", "alice", "for the wait"]);
    let id = sent["id"].as_str().unwrap().to_string();
    wait_until("the wait to take the mail", Duration::from_secs(20), || {
        state(&h, &id) == "delivered"
    });
    m.send(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    // Bounded watch over the grace period and more: the mail must not become acked by a
    // response that does not carry it.
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        let lines: Vec<String> = m.lines.try_iter().collect();
        let carried = lines.iter().any(|l| l.contains(&id));
        if !carried {
            assert_ne!(
                state(&h, &id),
                "acked",
                "acked by a response that did not carry it"
            );
        } else {
            // The wait's own response came through after all: then acking is right.
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Review of issue 9: a cancelled MCP `wait` kept its blocking thread for its whole
/// timeout; 600 wait+cancel pairs left 516 threads and the server stopped answering. A
/// cancel now ends the wait at once.
#[test]
fn cancelled_mcp_waits_give_their_threads_back() {
    let h = Home::new();
    h.register("bob");
    let mut m = Mcp::start(&h, Some("bob"));
    for id in 1..=300u64 {
        m.call(id, "wait", json!({"timeout_s": 120}));
        m.send(&json!({"jsonrpc":"2.0","method":"notifications/cancelled",
            "params":{"requestId":id}}));
    }
    m.call(1000, "whoami", json!({}));
    assert_eq!(m.result(1000)["endpoint"]["name"], "bob");
    let pid = m.child.id();
    let threads = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    wait_until(
        "the cancelled waits' threads to end",
        Duration::from_secs(30),
        || threads() < 64,
    );
}

/// Review of issue 9: the error answer to an over-long line was lost when another
/// response finished at the same moment (rmcp's select dropped the pending write; 6 of 6).
/// With stdout stalled behind a large `inbox` response, the error must still come.
#[test]
fn an_oversized_line_is_answered_even_while_stdout_is_stalled() {
    let h = Home::new();
    let (mut child, mut stdin, stdout) = mcp_with_a_stalled_inbox(&h);
    // A wait that times out while the error below waits for stdout (the 16 MiB line is
    // read well within its 3 s): its response makes rmcp's select drop the transport's
    // pending receive, and with it a write still waiting for the stalled stdout.
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"wait","arguments":{{"timeout_s":3}}}}}}"#
    )
    .unwrap();
    let mut line =
        String::from(r#"{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"x":""#);
    line.push_str(&"z".repeat(16 * 1024 * 1024 + 1));
    line.push_str("\"}}\n");
    stdin.write_all(line.as_bytes()).unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":78,"method":"tools/list"}}"#
    )
    .unwrap();
    stdin.flush().unwrap();
    // Now read everything: the stalled response, the error for 77 and the answer to 78.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&l).unwrap();
            let _ = tx.send(v["id"].clone());
        }
    });
    let mut ids = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while !(ids.contains(&json!(77)) && ids.contains(&json!(78)) && ids.contains(&json!(2))) {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(id) => ids.push(id),
            Err(_) => panic!("responses seen: {ids:?}; the error for 77 never came"),
        }
    }
    kill9(&mut child);
}

/// Review of issue 9: requests the transport could not read got no answer at all, or an
/// error without the `id` member JSON-RPC requires (null when unknown): an invalid UTF-8
/// byte in a request with an id, a batch, an object that is no message, an over-long line
/// with its id at the end, and a last request without a newline before EOF.
#[test]
fn every_unreadable_mcp_request_is_answered() {
    let h = Home::new();
    h.register("bob");
    let mut m = Mcp::start(&h, Some("bob"));
    m.stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/list\",\"params\":{\"x\":\"\xff\"}}\n")
        .unwrap();
    let r = m.response(5);
    assert!(r["error"].is_object(), "{r}");
    m.send(&json!([{"jsonrpc":"2.0","id":6,"method":"tools/list"}]));
    let null = |m: &Mcp| -> Value {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let l = m
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
                .expect("an answer with id null");
            let v: Value = serde_json::from_str(&l).unwrap();
            if v.get("id") == Some(&Value::Null) {
                return v;
            }
        }
    };
    let r = null(&m);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("batch"),
        "{r}"
    );
    m.send(&json!({"foo": 1}));
    assert!(null(&m)["error"].is_object());
    let mut line = String::from(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"x":""#);
    line.push_str(&"z".repeat(16 * 1024 * 1024 + 1));
    line.push_str("\"}, \"id\": 9}\n");
    m.stdin.write_all(line.as_bytes()).unwrap();
    assert!(
        m.response(9)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16 MiB")
    );
    m.stdin
        .write_all(br#"{"jsonrpc":"2.0","id":10,"method":"tools/list"}"#)
        .unwrap();
    m.stdin.flush().unwrap();
    // Close stdin: end of input right after the request, without a newline.
    let stdin = std::mem::replace(&mut m.stdin, {
        let mut c = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
        let s = c.stdin.take().unwrap();
        let _ = c.wait();
        s
    });
    drop(stdin);
    assert!(m.response(10)["result"]["tools"].is_array());
}

/// Review of issue 9: with `listen --exec`, a request whose sender gave up waiting for the
/// hand-over (the listener's stdout stalled past the sender's 5 s) was never answered:
/// the `DeliverAck` write failed and the answer was skipped; the sender said `mailbox`.
/// Now it is answered once and acked, and the sender reports the live route it took.
#[test]
fn a_request_is_answered_even_when_its_sender_gave_up_on_the_hand_over() {
    let h = Home::new();
    h.register("asker");
    let calc = h.register("calc");
    // Mail already queued fills the listener's stdout nobody reads yet: it stalls.
    let filler: String = (0..40).map(|_| format!("{}\n", "f".repeat(4000))).collect();
    assert_eq!(
        h.run_stdin(
            &["send", "calc", "--as", "asker", "--stdin", "--lines"],
            filler.as_bytes()
        )
        .code,
        0
    );
    let rt = tempfile::tempdir().unwrap();
    let mut listener = h
        .cmd(&[
            "listen",
            "--as",
            "calc",
            "--json",
            "--exec",
            "echo answered",
        ])
        .env("RELAY_RUNTIME_DIR", rt.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = rt.path().join(format!("{calc}.sock"));
    wait_until("calc's socket", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    // Nobody reads the listener's output yet: its first line stalls it.
    let mut c = h.cmd(&[
        "send", "calc", "--as", "asker", "--intent", "request", "--json", "--", "q",
    ]);
    c.env("RELAY_RUNTIME_DIR", rt.path());
    let r = run(c, None, DEADLINE);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = r.doc();
    let id = doc["id"].as_str().unwrap().to_string();
    assert_eq!(doc["route"], "live", "the listener took it: {doc}");
    let out = listener.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(out).lines().map_while(Result::ok) {});
    wait_until(
        "the request to be answered",
        Duration::from_secs(20),
        || state(&h, &id) == "acked",
    );
    kill9(&mut listener);
    let inbox = h.json(&["inbox", "--as", "asker"]);
    let replies = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reply_to"] == json!(id))
        .count();
    assert_eq!(replies, 1);
}

/// Review of issue 9: `--exec-timeout 18446744073709551615s` overflowed the lease sum
/// (a panic in every connection thread) and `100y` leased a request for a century.
#[test]
fn exec_timeout_is_bounded() {
    let h = Home::new();
    h.register("calc");
    for v in ["18446744073709551615s", "100y", "10ms"] {
        let r = h.run(&[
            "listen",
            "--as",
            "calc",
            "--exec",
            "cat",
            "--exec-timeout",
            v,
        ]);
        assert_eq!(r.code, 2, "{v}: {}", r.stderr);
        assert!(r.stderr.contains("100ms..=1h"), "{}", r.stderr);
    }
}

/// Review of issue 9: the live path printed and answered what the `Deliver` frame said,
/// not what was stored. A frame naming a held message with another body shows the stored
/// body.
#[test]
fn a_live_listener_shows_the_stored_message_not_the_frame() {
    use relay::store::{NewMessage, SqliteStore, Store};
    use relay::transport::{Local, client};
    use relay::wire::catalogue::Deliver;
    let h = Home::new();
    let a = h.register("a");
    let b = h.register("b");
    let rt = tempfile::tempdir().unwrap();
    let mut listener = h
        .cmd(&["listen", "--as", "b", "--json"])
        .env("RELAY_RUNTIME_DIR", rt.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = listener.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let sock = rt.path().join(format!("{b}.sock"));
    wait_until("b's socket", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let store = SqliteStore::open(&relay::config::Config::at(h.path())).unwrap();
    let id = store
        .enqueue(&NewMessage {
            from: a.clone(),
            to: b.clone(),
            thread: None,
            reply_to: None,
            intent: relay::store::Intent::Notify,
            content_type: "text/plain".into(),
            body: b"the stored body".to_vec(),
            expires_at: None,
            hold: Some(Duration::from_secs(30)),
        })
        .unwrap()
        .id;
    let d = Deliver {
        message_id: id.clone(),
        from: a.clone(),
        from_name: None,
        thread: None,
        reply_to: None,
        intent: 0,
        content_type: "text/plain".into(),
        body: b"a forged body".to_vec(),
        created_at: 0,
    };
    let (ack, conn) = client::deliver(
        client::connect(&sock).unwrap(),
        &Local::new(a.clone()),
        d,
        DEADLINE,
    )
    .unwrap();
    assert!(ack.accepted);
    client::close(conn, "done");
    let line = rx.recv_timeout(DEADLINE).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["body"], "the stored body");
    kill9(&mut listener);
}

/// Found with the real Claude Code CLI (2.1.197, `claude -p` against a stand-in model):
/// a client that ends the session right after a tool call left the mail it was shown
/// unacked (the grace timer died with the server), so the next session showed it again.
/// Once the client closes stdin it can cancel nothing: mail whose response was written is
/// acked before the server exits.
#[test]
fn mail_shown_just_before_the_client_hangs_up_is_acked() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let sent = h.json(&["send", "bob", "--as", "alice", "last words"]);
    let id = sent["id"].as_str().unwrap().to_string();
    let mut m = Mcp::start(&h, Some("bob"));
    m.call(2, "inbox", json!({}));
    assert_eq!(m.result(2)["messages"][0]["id"], json!(id));
    // Hang up at once, well inside the cancel grace.
    let stdin = std::mem::replace(&mut m.stdin, {
        let mut c = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
        let s = c.stdin.take().unwrap();
        let _ = c.wait();
        s
    });
    drop(stdin);
    let status = wait_with_deadline_status(&mut m.child);
    assert!(status.success(), "relay mcp ended with {status}");
    assert_eq!(state(&h, &id), "acked", "shown, then the client hung up");
}

/// Waits (bounded) for `child` to exit.
fn wait_with_deadline_status(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < end,
            "relay mcp did not exit at end of input"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
