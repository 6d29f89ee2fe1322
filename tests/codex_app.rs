//! Codex's in-session channel (`agents::codex_app`): mail injected as a turn through the
//! app-server daemon.
//!
//! - Against the real Codex CLI (RELAY_CODEX_BIN, else `codex` on PATH, else
//!   /tmp/agentcli/node_modules/.bin/codex; skipped with a visible note when none exists): a
//!   private CODEX_HOME, a stand-in Responses API on 127.0.0.1 written here, the daemon
//!   started with `codex app-server daemon start` and stopped by a guard even when the test
//!   fails; a thread started over the socket; `inject` and `deliver_pending` reach the
//!   model in that thread; an unknown thread reaches no model.
//! - Against hostile fake daemons: silence, garbage, broken frames, endless notifications
//!   each end in an error within the timeout.

#[path = "real_agents/clients.rs"]
mod clients;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use relay::agents::codex_app::{self, Error, Presence};
use relay::store::{
    Fetch, FetchMode, Filter, Intent, Kind, NewMessage, Registration, SqliteStore, State, Store,
    TEXT_PLAIN,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// A stand-in for the OpenAI Responses API: 127.0.0.1 only, bounded lifetime.

#[derive(Debug, Clone)]
struct Request {
    thread_id: Option<String>,
    body: String,
}

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Request>>,
    changed: Condvar,
    /// Requests carrying MARKER-SLOW are answered only once this is set (or after 20 s),
    /// so a turn stays running while the test looks at it.
    released: Mutex<bool>,
}

impl Log {
    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

impl Log {
    /// Waits at most `within` for a request accepted by `pick`.
    fn wait_for(&self, within: Duration, pick: impl Fn(&Request) -> bool) -> Option<Request> {
        let end = Instant::now() + within;
        let mut g = self.requests.lock().unwrap();
        loop {
            if let Some(r) = g.iter().find(|r| pick(r)) {
                return Some(r.clone());
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = self.changed.wait_timeout(g, left).unwrap().0;
        }
    }

    fn all(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

struct StandIn {
    port: u16,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
}

impl StandIn {
    /// Serves until dropped, or for `lifetime` at most.
    fn start(lifetime: Duration) -> StandIn {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Log::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let log = log2.clone();
                std::thread::spawn(move || serve(conn, &log));
            }
        });
        // The lifetime bound: wake the acceptor so it sees the flag.
        let stop3 = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(lifetime);
            stop3.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", port));
        });
        StandIn { port, log, stop }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, log: &Log) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut len = 0usize;
    let mut chunked = false;
    let mut thread_id = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => len = v.parse().unwrap_or(0),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "thread-id" => thread_id = Some(v.to_string()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            if r.read_line(&mut size).unwrap_or(0) == 0 {
                return;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            if r.read_exact(&mut chunk).is_err() {
                return;
            }
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len.min(64 << 20), 0);
        if r.read_exact(&mut body).is_err() {
            return;
        }
    }
    log.requests.lock().unwrap().push(Request {
        thread_id,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    log.changed.notify_all();
    if String::from_utf8_lossy(&body).contains("MARKER-SLOW") {
        let end = Instant::now() + Duration::from_secs(20);
        let mut g = log.released.lock().unwrap();
        while !*g && Instant::now() < end {
            g = log
                .changed
                .wait_timeout(g, end.saturating_duration_since(Instant::now()))
                .unwrap()
                .0;
        }
    }
    let n = log.requests.lock().unwrap().len();
    let text = format!("STAND-IN REPLY {n}");
    let events = [
        json!({"type":"response.created","response":{"id":format!("resp_{n}")}}),
        json!({"type":"response.output_item.added","output_index":0,"item":{"type":"message","role":"assistant","id":format!("msg_{n}"),"content":[]}}),
        json!({"type":"response.output_item.done","output_index":0,"item":{"type":"message","role":"assistant","id":format!("msg_{n}"),"content":[{"type":"output_text","text":text,"annotations":[]}],"status":"completed"}}),
        json!({"type":"response.completed","response":{"id":format!("resp_{n}"),"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":15}}}),
    ];
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    );
    for e in events {
        out.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap()
        ));
    }
    let mut w = conn;
    let _ = w.write_all(out.as_bytes());
    let _ = w.flush();
}

// ---------------------------------------------------------------------------------------
// The real daemon.

/// The codex client, located as every real-agent test locates it ([`clients::client`]): a
/// visible `skipped:` line without it, a failure under `RELAY_REQUIRE_AGENTS=1` (CI).
fn codex_bin() -> Option<PathBuf> {
    clients::client("codex")
}

/// Runs `cmd` to completion within `deadline`, killing it after. Its output is read by two
/// threads (a full pipe never stalls it) and collected for at most 2 s after it exits (a
/// detached grandchild holding the pipe never stalls the test).
fn run_bounded(mut cmd: Command, deadline: Duration) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    let readers: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for (i, mut r) in readers.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            let _ = tx.send((i, String::from_utf8_lossy(&buf).into_owned()));
        });
    }
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait().unwrap() {
            Some(s) => break Some(s),
            None if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            // A child's exit has no descriptor to block on here.
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut out = [String::new(), String::new()];
    let collect_end = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        match rx.recv_timeout(collect_end.saturating_duration_since(Instant::now())) {
            Ok((i, text)) => out[i] = text,
            Err(_) => break,
        }
    }
    match status {
        Some(s) => (s.success(), format!("{}\n{}", out[0], out[1])),
        None => (
            false,
            format!("timed out after {deadline:?}: {}\n{}", out[0], out[1]),
        ),
    }
}

/// Stops the daemon of its CODEX_HOME when dropped, also when the test fails: `daemon
/// stop`, then the pid-update-loop process (which 0.171 leaves running) and the daemon by
/// their recorded pid and start time.
struct Daemon {
    bin: PathBuf,
    home: PathBuf,
}

impl Daemon {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("CODEX_HOME", &self.home)
            .env("MOCK_API_KEY", "sk-standin");
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let leftovers = clients::DaemonLeftovers::of(&self.home);
        let (ok, out) = run_bounded(
            self.cmd(&["app-server", "daemon", "stop"]),
            Duration::from_secs(20),
        );
        if !ok {
            eprintln!("codex app-server daemon stop: {out}");
        }
        leftovers.clean();
    }
}

/// A small JSON-RPC client over the control socket, for what the test does besides relay
/// (starting a thread).
struct TestClient {
    ws: tungstenite::WebSocket<UnixStream>,
    next: u64,
}

impl TestClient {
    fn connect(socket: &Path) -> TestClient {
        let s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client::client("ws://localhost/", s).unwrap();
        let mut c = TestClient { ws, next: 1 };
        c.call(
            "initialize",
            json!({"clientInfo":{"name":"relay-test","title":null,"version":"0"}}),
        );
        c.ws.send(tungstenite::Message::text(
            json!({"method":"initialized"}).to_string(),
        ))
        .unwrap();
        c
    }

    fn next_msg(&mut self) -> Value {
        loop {
            if let tungstenite::Message::Text(t) = self.ws.read().expect("daemon message") {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.ws
            .send(tungstenite::Message::text(
                json!({"id": id, "method": method, "params": params}).to_string(),
            ))
            .unwrap();
        loop {
            let m = self.next_msg();
            if m.get("method").is_none() && m["id"].as_u64() == Some(id) {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
        }
    }

    /// Waits (the socket's read timeout bounds it) for a notification `method` about
    /// `thread`.
    fn wait_note(&mut self, method: &str, thread: &str) -> Value {
        loop {
            let m = self.next_msg();
            if m["method"] == method && m["params"]["threadId"] == thread {
                return m;
            }
        }
    }
}

#[test]
fn real_codex_daemon_runs_injected_mail_as_a_turn_in_that_session() {
    let Some(bin) = codex_bin() else {
        return; // `clients::client` printed why
    };
    let started = Instant::now();
    let standin = StandIn::start(Duration::from_secs(90));
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("codex");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"gpt-5.1\"\nmodel_provider = \"standin\"\n\n[model_providers.standin]\n\
             name = \"standin\"\nbase_url = \"http://127.0.0.1:{}/v1\"\nwire_api = \"responses\"\n\
             env_key = \"MOCK_API_KEY\"\n",
            standin.port
        ),
    )
    .unwrap();
    let daemon = Daemon {
        bin: bin.clone(),
        home: home.clone(),
    };
    let (ok, out) = run_bounded(
        daemon.cmd(&["app-server", "daemon", "start"]),
        Duration::from_secs(40),
    );
    assert!(ok, "codex app-server daemon start failed: {out}");
    let socket = codex_app::control_socket(&home);

    // A session: a thread started over the socket, with one turn so it has a rollout. The
    // test client stays connected, as a TUI would.
    let mut tui = TestClient::connect(&socket);
    let thread = tui.call("thread/start", json!({"cwd": work}));
    let tid = thread["thread"]["id"].as_str().unwrap().to_string();
    tui.call(
        "turn/start",
        json!({"threadId": tid, "input": [{"type":"text","text":"seed turn","text_elements":[]}]}),
    );
    tui.wait_note("turn/completed", &tid);
    assert!(codex_app::holds(&home, &tid, Duration::from_secs(5)).unwrap());
    assert_eq!(
        codex_app::codex_presence(&home, &tid),
        Presence::Held { running: false }
    );

    // relay discover reads the session's rollout and asks the daemon about it.
    let mut c = Command::new(env!("CARGO_BIN_EXE_relay"));
    c.args(["discover", "--json", "--tool", "codex"])
        .env("RELAY_HOME", tmp.path().join("relay-discover"))
        .env("CODEX_HOME", &home)
        .env("RELAY_LOG", "warn");
    let (ok, out) = run_bounded(c, Duration::from_secs(30));
    assert!(ok, "relay discover: {out}");
    let doc: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let found = doc["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == tid.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("discover lists the session: {doc}"));
    assert_eq!(
        found["presence"],
        json!({"state": "held", "running": false}),
        "{found}"
    );

    // An unknown session: refused before any turn starts.
    let unknown = "01a2342f-0000-7000-8000-000000000000";
    assert!(!codex_app::holds(&home, unknown, Duration::from_secs(5)).unwrap());
    assert_eq!(codex_app::codex_presence(&home, unknown), Presence::NotHeld);
    let e =
        codex_app::inject(&home, unknown, "MARKER-UNKNOWN", Duration::from_secs(5)).unwrap_err();
    assert!(matches!(e, Error::NotHeld { .. }), "{e}");
    assert!(e.to_string().contains(unknown), "{e}");

    // inject: a turn in that thread, whose model request carries the text.
    let t0 = Instant::now();
    let got = codex_app::inject(&home, &tid, "MARKER-INJECTED-1", Duration::from_secs(10)).unwrap();
    let inject_ms = t0.elapsed().as_millis();
    assert!(!got.turn_id.is_empty());
    assert!(!got.joined_running);
    let req = standin
        .log
        .wait_for(Duration::from_secs(20), |r| {
            r.body.contains("MARKER-INJECTED-1")
        })
        .expect("the stand-in model received the injected text");
    assert_eq!(req.thread_id.as_deref(), Some(tid.as_str()));
    let note = tui.wait_note("turn/completed", &tid);
    assert_eq!(note["params"]["turn"]["id"], got.turn_id.as_str());
    let model_ms = t0.elapsed().as_millis();

    // deliver_pending: relay mail for the session's endpoint becomes a fenced turn.
    let relay_home = tmp.path().join("relay");
    let store = SqliteStore::open(&relay::config::Config::at(&relay_home)).unwrap();
    let reg = |id: &str, kind: Kind| {
        store
            .register(&Registration {
                id: Some(id.to_string()),
                kind: Some(kind),
                cwd: Some(work.display().to_string()),
                ..Registration::default()
            })
            .unwrap()
            .endpoint
    };
    let sender = reg("01a2342f-1111-7000-8000-000000000001", Kind::Human);
    let session = reg(&tid, Kind::Codex);
    let send = |to: &str, body: &str| {
        store
            .enqueue(&NewMessage {
                from: sender.id.clone(),
                to: to.to_string(),
                thread: None,
                reply_to: None,
                intent: Intent::Notify,
                content_type: TEXT_PLAIN.to_string(),
                body: body.as_bytes().to_vec(),
                expires_at: None,
                hold: None,
            })
            .unwrap()
            .id
    };
    let id = send(&tid, "MARKER-MAIL-2 please look at the build");
    let shown = codex_app::deliver_pending(&store, &session, &home, Duration::from_secs(10))
        .unwrap()
        .expect("mail was pending");
    assert_eq!(shown, vec![id.clone()]);
    let req = standin
        .log
        .wait_for(Duration::from_secs(20), |r| {
            r.body.contains("MARKER-MAIL-2")
        })
        .expect("the stand-in model received the mail");
    assert_eq!(req.thread_id.as_deref(), Some(tid.as_str()));
    assert!(req.body.contains("relay-mail"), "fenced: {}", req.body);
    assert!(req.body.contains("not from the user"), "{}", req.body);
    let r = store.receipt(&id).unwrap();
    assert_eq!(r.state, State::Delivered);
    assert!(r.injected_at.is_some());
    let now = store.resolve(&tid).unwrap();
    assert_eq!(now.meta[relay::agents::idle::INJECTED_META], json!(true));
    // Nothing pending any more: no second turn.
    assert_eq!(
        codex_app::deliver_pending(&store, &now, &home, Duration::from_secs(10)).unwrap(),
        None
    );
    // The session's next hook acks it.
    relay::agents::idle::settle_injected(&store, &now).unwrap();
    assert_eq!(store.receipt(&id).unwrap().state, State::Acked);
    tui.wait_note("turn/completed", &tid);

    // `relay wake` of the session, bound (as its hooks bind it) to the daemon process,
    // which outlives any TUI: not "running" for that, but idle in the daemon, so the wake
    // is a turn carrying the mail.
    let pidfile: Value = serde_json::from_str(
        &std::fs::read_to_string(home.join("app-server-daemon").join("daemon.pid")).unwrap(),
    )
    .unwrap();
    let daemon_pid = pidfile["pid"].as_u64().unwrap() as u32;
    assert!(codex_app::is_app_server(daemon_pid));
    store
        .register(&Registration {
            id: Some(tid.clone()),
            pid: Some(daemon_pid),
            pid_start: relay::agents::procfs::stat(daemon_pid).map(|s| s.process.start),
            ..Registration::default()
        })
        .unwrap();
    let id3 = send(&tid, "MARKER-WAKE-4");
    let relay_wake = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_relay"));
        c.arg("wake")
            .args(args)
            .env("RELAY_HOME", &relay_home)
            .env("CODEX_HOME", &home)
            .env("RELAY_LOG", "warn")
            .env_remove("RELAY_AS");
        run_bounded(c, Duration::from_secs(30))
    };
    let (ok, out) = relay_wake(&[&tid, "--json"]);
    assert!(ok, "relay wake: {out}");
    let doc: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(doc["via"], "inject", "{doc}");
    assert_eq!(doc["injected"], json!([id3.clone()]), "{doc}");
    let wake_turn = doc["turn"]["turn_id"].as_str().unwrap().to_string();
    let req = standin
        .log
        .wait_for(Duration::from_secs(20), |r| {
            r.body.contains("MARKER-WAKE-4")
        })
        .expect("the stand-in model received the woken mail");
    assert_eq!(req.thread_id.as_deref(), Some(tid.as_str()));
    let note = tui.wait_note("turn/completed", &tid);
    assert_eq!(note["params"]["turn"]["id"], wake_turn.as_str());

    // While a turn runs, the session is at work: wake refuses, and an injection joins the
    // running turn.
    let slow = codex_app::inject(&home, &tid, "MARKER-SLOW", Duration::from_secs(10)).unwrap();
    standin
        .log
        .wait_for(Duration::from_secs(20), |r| r.body.contains("MARKER-SLOW"))
        .expect("the slow turn reached the model");
    assert_eq!(
        codex_app::codex_presence(&home, &tid),
        Presence::Held { running: true }
    );
    let (ok, out) = relay_wake(&[&tid]);
    assert!(!ok && out.contains("is running"), "{out}");
    let joined = codex_app::inject(&home, &tid, "MARKER-JOIN", Duration::from_secs(10)).unwrap();
    assert!(joined.joined_running);
    assert_eq!(joined.turn_id, slow.turn_id);
    standin.log.release();
    standin
        .log
        .wait_for(Duration::from_secs(20), |r| r.body.contains("MARKER-JOIN"))
        .expect("the joined text reached the model in the running turn");
    let note = tui.wait_note("turn/completed", &tid);
    assert_eq!(note["params"]["turn"]["id"], slow.turn_id.as_str());

    // Mail for a session the daemon does not hold: an error, and the mail is pending again.
    let gone = reg(unknown, Kind::Codex);
    let id2 = send(unknown, "MARKER-MAIL-3");
    let e = codex_app::deliver_pending(&store, &gone, &home, Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().contains("does not hold"), "{e:#}");
    let pending = store
        .fetch(
            unknown,
            &Fetch {
                limit: 10,
                mode: FetchMode::Peek,
                filter: Filter::default(),
            },
        )
        .unwrap();
    assert_eq!(
        pending.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![id2]
    );

    // No model request ever named the unknown session or carried its text.
    for r in standin.log.all() {
        assert!(!r.body.contains("MARKER-UNKNOWN") && !r.body.contains("MARKER-MAIL-3"));
        assert_eq!(r.thread_id.as_deref(), Some(tid.as_str()));
    }
    eprintln!(
        "codex app-server: inject answered in {inject_ms} ms, its model request and turn/completed within {model_ms} ms; test {} ms",
        started.elapsed().as_millis()
    );
    drop(tui);
    drop(daemon);
    assert!(
        !socket.exists() || UnixStream::connect(&socket).is_err(),
        "the daemon still answers after stop"
    );
}

// ---------------------------------------------------------------------------------------
// Hostile fake daemons.

const ID: &str = "01a2342f-1bf1-7b30-b37f-ae8057dd1a79";

/// A fake daemon at the control socket of a fresh CODEX_HOME; `serve` runs per connection.
fn fake(
    serve: impl Fn(UnixStream) + Send + Sync + Clone + 'static,
) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("codex");
    let sock = codex_app::control_socket(&home);
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let l = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().take(8) {
            let Ok(c) = c else { return };
            let serve = serve.clone();
            std::thread::spawn(move || serve(c));
        }
    });
    (t, home)
}

/// Runs `inject` against a fake and checks it fails within the timeout plus slack.
fn inject_fails(serve: fn(UnixStream), timeout: Duration) -> Error {
    let (_t, home) = fake(serve);
    let t0 = Instant::now();
    let e = codex_app::inject(&home, ID, "x", timeout).unwrap_err();
    let took = t0.elapsed();
    assert!(
        took < timeout + Duration::from_millis(500),
        "took {took:?} for {timeout:?}: {e}"
    );
    assert_eq!(
        codex_app::presence_within(&home, ID, timeout),
        Presence::Unknown,
        "{e}"
    );
    e
}

fn hold(c: UnixStream) {
    // Never answers; keeps the connection open until the client gives up.
    let mut c = c;
    let mut buf = [0; 1024];
    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
}

#[test]
fn a_silent_daemon_times_out() {
    let e = inject_fails(hold, Duration::from_millis(400));
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("handshake"), "{e}");
}

#[test]
fn garbage_instead_of_a_handshake_is_a_protocol_error() {
    let e = inject_fails(
        |mut c| {
            let _ = c.write_all(b"SSH-2.0-OpenSSH\r\n\x00\x01garbage\r\n\r\n");
            hold(c);
        },
        Duration::from_secs(2),
    );
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
}

#[test]
fn an_endless_handshake_reply_is_cut() {
    let e = inject_fails(
        |mut c| {
            let _ = c.write_all(b"HTTP/1.1 101 Switching Protocols\r\n");
            let line = format!("x-pad: {}\r\n", "a".repeat(1000));
            while c.write_all(line.as_bytes()).is_ok() {}
        },
        Duration::from_secs(3),
    );
    assert!(
        matches!(e, Error::Protocol { .. } | Error::Timeout { .. }),
        "{e}"
    );
}

/// Accepts the WebSocket handshake, then runs `then` on the socket.
fn ws_fake(c: UnixStream, then: fn(&mut tungstenite::WebSocket<UnixStream>)) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut ws) = tungstenite::accept(c) else {
        return;
    };
    then(&mut ws);
}

#[test]
fn frames_that_are_not_json_are_a_protocol_error() {
    let e = inject_fails(
        |c| {
            ws_fake(c, |ws| {
                let _ = ws.read();
                let _ = ws.send(tungstenite::Message::text("not json {"));
                let _ = ws.read();
            })
        },
        Duration::from_secs(2),
    );
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    assert!(e.to_string().contains("not JSON"), "{e}");
}

#[test]
fn binary_frames_are_a_protocol_error() {
    let e = inject_fails(
        |c| {
            ws_fake(c, |ws| {
                let _ = ws.read();
                let _ = ws.send(tungstenite::Message::binary(vec![0u8, 1, 2]));
                let _ = ws.read();
            })
        },
        Duration::from_secs(2),
    );
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
}

#[test]
fn endless_notifications_do_not_outlast_the_timeout() {
    let e = inject_fails(
        |c| {
            ws_fake(c, |ws| {
                // Answers initialize, then only chatters.
                let Ok(tungstenite::Message::Text(t)) = ws.read() else {
                    return;
                };
                let id = serde_json::from_str::<Value>(t.as_str()).unwrap()["id"].clone();
                let _ = ws.send(tungstenite::Message::text(
                    json!({"id": id, "result": {}}).to_string(),
                ));
                loop {
                    let note = json!({"method": "warning", "params": {"message": "chatter"}});
                    if ws
                        .send(tungstenite::Message::text(note.to_string()))
                        .is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        },
        Duration::from_millis(700),
    );
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("thread/loaded/list"), "{e}");
}

#[test]
fn a_daemon_that_lists_nothing_gets_no_turn() {
    let (_t, home) = fake(|c| {
        ws_fake(c, |ws| {
            while let Ok(tungstenite::Message::Text(t)) = ws.read() {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                let Some(id) = v.get("id").cloned() else {
                    continue;
                };
                let result = match v["method"].as_str() {
                    Some("thread/loaded/list") => json!({"data": [], "nextCursor": null}),
                    // A turn/start would be a bug: answer so the test sees it succeed.
                    Some("turn/start") => json!({"turn": {"id": "BUG"}}),
                    _ => json!({}),
                };
                let _ = ws.send(tungstenite::Message::text(
                    json!({"id": id, "result": result}).to_string(),
                ));
            }
        })
    });
    let e = codex_app::inject(&home, ID, "x", Duration::from_secs(2)).unwrap_err();
    assert!(matches!(e, Error::NotHeld { .. }), "{e}");
    assert!(!codex_app::holds(&home, ID, Duration::from_secs(2)).unwrap());
}

/// A well-behaved fake daemon that holds [`ID`] with `thread` as its `thread/read` answer
/// and records the methods it was asked.
fn holding(thread: Value, asked: Arc<Mutex<Vec<String>>>) -> (tempfile::TempDir, PathBuf) {
    fake(move |c| {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(mut ws) = tungstenite::accept(c) else {
            return;
        };
        while let Ok(tungstenite::Message::Text(t)) = ws.read() {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            let method = v["method"].as_str().unwrap_or("").to_string();
            asked.lock().unwrap().push(method.clone());
            let Some(id) = v.get("id").cloned() else {
                continue;
            };
            let result = match method.as_str() {
                "thread/loaded/list" => json!({"data": [ID], "nextCursor": null}),
                "thread/read" => json!({"thread": thread.clone()}),
                "turn/start" => json!({"turn": {"id": "turn-1", "status": "inProgress"}}),
                _ => json!({}),
            };
            let _ = ws.send(tungstenite::Message::text(
                json!({"id": id, "result": result}).to_string(),
            ));
        }
    })
}

#[test]
fn thread_status_decides_presence_and_whether_a_turn_starts() {
    let rollout = "/h/sessions/rollout.jsonl";
    let cases = [
        (
            json!({"status": {"type": "idle"}, "ephemeral": false, "path": rollout}),
            Presence::Held { running: false },
            true,
        ),
        (
            json!({"status": {"type": "active", "activeFlags": []}, "ephemeral": false, "path": rollout}),
            Presence::Held { running: true },
            true,
        ),
        // A TUI's title thread: loaded, but ephemeral and without a rollout.
        (
            json!({"status": {"type": "idle"}, "ephemeral": true, "path": null}),
            Presence::NotHeld,
            false,
        ),
        (
            json!({"status": {"type": "notLoaded"}, "ephemeral": false, "path": rollout}),
            Presence::NotHeld,
            false,
        ),
        (
            json!({"status": {"type": "systemError"}, "ephemeral": false, "path": rollout}),
            Presence::Unknown,
            false,
        ),
    ];
    for (thread, presence, starts) in cases {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (_t, home) = holding(thread.clone(), asked.clone());
        assert_eq!(
            codex_app::presence_within(&home, ID, Duration::from_secs(2)),
            presence,
            "{thread}"
        );
        let got = codex_app::inject(&home, ID, "x", Duration::from_secs(2));
        assert_eq!(got.is_ok(), starts, "{thread}: {got:?}");
        if let Ok(t) = &got {
            assert_eq!(t.turn_id, "turn-1");
            assert_eq!(
                t.joined_running,
                presence == Presence::Held { running: true }
            );
        }
        let asked = asked.lock().unwrap().clone();
        assert_eq!(
            asked.iter().filter(|m| *m == "turn/start").count(),
            usize::from(starts),
            "{thread}: {asked:?}"
        );
        // initialize comes first on every connection; relay never resumes a thread.
        assert_eq!(asked[0], "initialize");
        assert!(!asked.iter().any(|m| m == "thread/resume"), "{asked:?}");
    }
}

/// Review of issue 10: a daemon that stopped accepting (its backlog full) held a blocking
/// `connect` without bound, so `relay send` to a Codex session hung. Connecting now counts
/// against the same deadline.
#[test]
fn a_daemon_that_accepts_nothing_times_out_on_connect() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("codex");
    let sock = codex_app::control_socket(&home);
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    let addr = SocketAddrUnix::new(&sock).unwrap();
    rustix::net::bind(&listener, &addr).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    // Fill the backlog with connections nobody accepts.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let c = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        if rustix::net::connect(&c, &addr).is_err() {
            break;
        }
        fillers.push(c);
    }
    let timeout = Duration::from_millis(500);
    let t0 = Instant::now();
    let e = codex_app::inject(&home, ID, "x", timeout).unwrap_err();
    assert!(
        t0.elapsed() < timeout + Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert_eq!(
        codex_app::presence_within(&home, ID, timeout),
        Presence::Unknown
    );
    drop(fillers);
}
