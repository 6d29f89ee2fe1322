//! Codex TUI checks (j, k of the real-agent set): the real interactive `codex` under tmux,
//! with relay installed and its hooks trusted, against the stand-in Responses API.
//!
//! Each test has its own HOME, `CODEX_HOME` (`$HOME/.codex`), RELAY_HOME, cwd, model and
//! tmux server (a socket in a private directory). The TUI starts Codex's shared app-server
//! daemon itself (the `daemon_auto_start` feature); a [`Daemon`] guard stops it with `codex
//! app-server daemon stop` and kills what is left by exact pid (and start time), also when
//! the test fails.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use relay::agents::codex_app::{self, Presence};
use relay::standin::{Recorded, has_tool_result, last_user_text};
use serde_json::{Value, json};

use crate::harness::*;
use crate::{clients, common};

/// How long a TUI may take to show its composer.
const READY: Duration = Duration::from_secs(30);

/// How long one submitted prompt may take to reach the model.
const TO_MODEL: Duration = Duration::from_secs(20);

/// The thread id of a Codex model request: `client_metadata.thread_id` (Codex 0.171 also
/// sends it as the `thread-id` header and as `prompt_cache_key`).
fn thread_of(r: &Recorded) -> Option<String> {
    r.body
        .get("client_metadata")
        .and_then(|m| m.get("thread_id"))
        .or_else(|| r.body.get("prompt_cache_key"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Milliseconds since the Unix epoch (what relay's receipts carry).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `cmd` with no input or output within `deadline`, killing it after; whether it
/// exited 0. Never panics (it runs in `Drop`).
fn run_quiet(mut cmd: Command, deadline: Duration) -> bool {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let end = Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) if Instant::now() < end => {
                // A child's exit has no descriptor to block on here.
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The Codex app-server daemon of one test's `CODEX_HOME`, however it was started; stopped
/// when dropped: `codex app-server daemon stop`, then the daemon and its pid-update-loop
/// (which 0.171 leaves running) by their recorded pid and start time, then any process
/// still running `app-server` or `relay mcp` with this test's RELAY_HOME in its
/// environment, by exact pid; the socket 0.171 links into `/tmp/codex-daemon-<uid>/` is
/// removed.
struct Daemon {
    bin: PathBuf,
    codex_home: PathBuf,
    home: PathBuf,
    relay_home: PathBuf,
}

impl Daemon {
    /// The daemon's pid as its pid file records it.
    fn pid(&self) -> Option<u32> {
        let p = self.codex_home.join("app-server-daemon").join("daemon.pid");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
        u32::try_from(v["pid"].as_u64()?).ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let leftovers = clients::DaemonLeftovers::of(&self.codex_home);
        let mut stop = Command::new(&self.bin);
        stop.args(["app-server", "daemon", "stop"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("CODEX_HOME", &self.codex_home);
        if !run_quiet(stop, Duration::from_secs(20)) {
            eprintln!("codex app-server daemon stop failed or timed out");
        }
        leftovers.clean();
        for words in [&["app-server"][..], &["mcp"][..]] {
            for pid in processes(words, &self.relay_home) {
                if let Some(s) = relay::agents::procfs::stat(pid) {
                    clients::kill_exact(pid, s.process.start);
                }
            }
        }
    }
}

/// `$CODEX_HOME` of a world.
fn codex_home(w: &World) -> PathBuf {
    w.home().join(".codex")
}

/// A `codex` command in this world (the agent environment plus `CODEX_HOME`).
fn codex(w: &World, bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    w.agent_env(&mut c);
    c.env("CODEX_HOME", codex_home(w)).args(args);
    c
}

/// Points Codex at the stand-in, runs `relay install codex`, and trusts the hooks it
/// installed the way Codex's `/hooks` screen does: a `[hooks.state."<key>"]` table with
/// `trusted_hash` per hook in `config.toml`, key and hash as Codex's own `hooks/list`
/// reports them (asked of a short-lived `codex app-server --listen stdio://`). Returns the
/// daemon guard (nothing runs yet).
fn install(w: &World, bin: &Path) -> Daemon {
    let home = codex_home(w);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"gpt-5.1\"\nmodel_provider = \"standin\"\n\n[model_providers.standin]\nname = \"standin\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\nenv_key = \"MOCK_API_KEY\"\n",
            w.model.base_url()
        ),
    )
    .unwrap();
    let mut c = w.relay_cmd(&["install", "codex"]);
    c.env("CODEX_HOME", &home);
    let r = common::run(c, None, common::DEADLINE);
    assert_eq!(r.code, 0, "relay install codex: {}{}", r.stdout, r.stderr);

    let hooks = hooks_list(w, bin);
    let source = home.join("hooks.json");
    let mut trust = String::new();
    let mut events = Vec::new();
    for h in hooks
        .iter()
        .filter(|h| h["sourcePath"] == source.to_string_lossy().as_ref())
    {
        let (Some(key), Some(hash)) = (h["key"].as_str(), h["currentHash"].as_str()) else {
            panic!("hooks/list entry without key or hash: {h}");
        };
        events.push(h["eventName"].as_str().unwrap_or_default().to_string());
        trust.push_str(&format!(
            "\n[hooks.state.{}]\ntrusted_hash = {}\n",
            serde_json::to_string(key).unwrap(),
            serde_json::to_string(hash).unwrap()
        ));
    }
    events.sort();
    assert_eq!(
        events,
        ["postToolUse", "sessionStart", "stop", "userPromptSubmit"],
        "relay's hooks as Codex lists them: {hooks:?}"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(home.join("config.toml"))
        .unwrap();
    f.write_all(trust.as_bytes()).unwrap();
    Daemon {
        bin: bin.to_path_buf(),
        codex_home: home,
        home: w.home().to_path_buf(),
        relay_home: w.relay.path(),
    }
}

/// Codex's `hooks/list` for the world's cwd, from `codex app-server --listen stdio://`
/// (JSON-RPC lines; killed after the answer, or after 30 s).
fn hooks_list(w: &World, bin: &Path) -> Vec<Value> {
    let mut c = codex(w, bin, &["app-server", "--listen", "stdio://"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn codex app-server");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let cwd = w.cwd();
    for m in [
        json!({"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "relay-test", "title": null, "version": "0"}}}),
        json!({"method": "initialized"}),
        json!({"id": 2, "method": "hooks/list", "params": {"cwds": [cwd]}}),
    ] {
        writeln!(stdin, "{m}").unwrap();
    }
    stdin.flush().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let answer = loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["id"] == 2 {
                    break Some(v);
                }
                seen.push(line);
            }
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let answer = answer.unwrap_or_else(|| panic!("no hooks/list answer within 30 s: {seen:?}"));
    assert!(answer.get("error").is_none(), "hooks/list: {answer}");
    answer["result"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["hooks"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Starts the interactive `codex` (no arguments) in its own tmux server in the world's cwd.
fn tui(w: &World, bin: &Path) -> Tmux {
    Tmux::start(&codex(w, bin, &[]))
}

/// Waits until the TUI shows its composer with the configured model in the status line
/// (it takes input from then on); panics with the screen otherwise. Codex 0.171 shows no
/// first-run screen for an API-key provider in an untracked directory; should one appear
/// (a trust or onboarding dialog), this names it in the failure.
fn ready(t: &Tmux) {
    let end = Instant::now() + READY;
    loop {
        let s = t.screen();
        if s.contains("for shortcuts") && s.contains("gpt-5.1") {
            return;
        }
        assert!(
            Instant::now() < end,
            "the Codex TUI showed no composer within {READY:?}; screen:\n{s}"
        );
        // tmux has no screen-change notification; capture-pane is the event source.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Types `prompt` into the TUI and submits it; returns the first main-conversation model
/// request whose last user message contains it. Enter is pressed once the text shows and
/// again (at most 4 times) while no request came: Codex's paste-burst detection takes an
/// Enter that follows fast typed text as a newline.
fn submit(w: &World, t: &Tmux, prompt: &str) -> Recorded {
    t.send_text(prompt);
    t.wait_screen("the typed prompt", prompt, Duration::from_secs(10));
    let asked = |r: &Recorded| {
        is_main(r) && !has_tool_result(&r.body) && last_user_text(&r.body).contains(prompt)
    };
    let end = Instant::now() + TO_MODEL;
    for n in 1..=4 {
        t.press("Enter");
        if let Some(r) = w.model.wait_for(asked, Duration::from_millis(1500)) {
            if n > 1 {
                eprintln!("codex tui: {prompt:?} was submitted by Enter press {n}");
            }
            return r;
        }
    }
    w.model
        .wait_for(asked, end.saturating_duration_since(Instant::now()))
        .unwrap_or_else(|| {
            panic!(
                "{prompt:?} did not reach the model within {TO_MODEL:?}; screen:\n{}",
                t.screen()
            )
        })
}

/// The endpoint with this id in the roster, if any.
fn endpoint(w: &World, id: &str) -> Option<Value> {
    let d = w.relay_json(&["roster"]);
    d["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

#[test]
fn j_two_codex_tui_sessions_in_one_directory_are_distinct() {
    let Some(bin) = client("codex") else { return };
    let started = Instant::now();
    let w = World::new(Box::new(|r: &Recorded| {
        if !is_main(r) {
            return text("title");
        }
        if has_tool_result(&r.body) {
            return text("sent");
        }
        match last_user_text(&r.body)
            .split_whitespace()
            .find(|t| t.starts_with("body-"))
        {
            Some(body) => send_call("sink", body),
            None => text("ok"),
        }
    }));
    let daemon = install(&w, &bin);
    w.relay_json(&["register", "sink"]);
    let one = tui(&w, &bin);
    let two = tui(&w, &bin);
    ready(&one);
    ready(&two);
    let ready_ms = started.elapsed().as_millis();
    let bodies = ["body-tui-j1", "body-tui-j2"];
    let mut threads = Vec::new();
    for (t, body) in [(&one, bodies[0]), (&two, bodies[1])] {
        let asked = submit(&w, t, &format!("send {body}"));
        threads.push(thread_of(&asked).expect("thread id in the request's client_metadata"));
    }
    // Each call's result went back to the model: the send is done.
    for body in bodies {
        let done = w.model.wait_for(
            |r| has_tool_result(&r.body) && last_user_text(&r.body).contains(body),
            TO_MODEL,
        );
        assert!(
            done.is_some(),
            "no tool result came back for {body}; screens:\n{}\n---\n{}",
            one.screen(),
            two.screen()
        );
    }
    w.dump("j_codex_tui");
    assert_ne!(threads[0], threads[1], "two TUIs, two threads");
    let mail = w.inbox("sink");
    let tool_output = |body: &str| -> String {
        w.model
            .requests()
            .into_iter()
            .filter(|r| has_tool_result(&r.body) && last_user_text(&r.body).contains(body))
            .flat_map(|r| r.body["input"].as_array().cloned().unwrap_or_default())
            .filter(|i| i["type"] == "function_call_output")
            .map(|i| i["output"].to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut senders = Vec::new();
    for (body, thread) in bodies.iter().zip(&threads) {
        let m = mail.iter().find(|m| m["body"] == *body).unwrap_or_else(|| {
            panic!(
                "{body} not stored: {mail:?}; tool output: {}",
                tool_output(body)
            )
        });
        assert_eq!(
            m["from"],
            thread.as_str(),
            "{body} was sent as the TUI session that sent it (its thread id); tool output: {}",
            tool_output(body)
        );
        senders.push(m["from"].clone());
        let e = endpoint(&w, thread).unwrap_or_else(|| {
            panic!("no relay endpoint for thread {thread} (SessionStart hook did not register it)")
        });
        assert_eq!(e["kind"], "codex", "{e}");
    }
    assert_ne!(senders[0], senders[1], "two different sender ids");
    // Only the two sessions registered (not the TUIs' title threads).
    let mut codex: Vec<String> = w
        .sessions("codex")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    codex.sort();
    let mut want = threads.clone();
    want.sort();
    assert_eq!(
        codex, want,
        "the codex endpoints are exactly the two sessions"
    );
    // Both sessions live in the one daemon the first TUI started, and their hooks (run by
    // the daemon) bound both to it.
    let pid = daemon.pid().expect("the TUI started the app-server daemon");
    for thread in &threads {
        let e = endpoint(&w, thread).unwrap();
        assert_eq!(e["pid"], pid, "session bound to the shared daemon: {e}");
    }
    eprintln!(
        "codex tui j: both composers ready after {ready_ms} ms, test {} ms",
        started.elapsed().as_millis()
    );
}

#[test]
fn k_an_idle_codex_tui_session_gets_mail_in_place() {
    let Some(bin) = client("codex") else { return };
    let started = Instant::now();
    // Wall time (ms) at which the model first saw the mail.
    let seen_at: Arc<Mutex<Option<u64>>> = Arc::default();
    let seen = seen_at.clone();
    let w = World::new(Box::new(move |r: &Recorded| {
        if !is_main(r) {
            return text("title");
        }
        if last_user_text(&r.body).contains("<relay-mail>") {
            seen.lock().unwrap().get_or_insert_with(now_ms);
            return text("reply-k-mail-read");
        }
        text("reply-k-hello")
    }));
    let daemon = install(&w, &bin);
    w.relay_json(&["register", "boss"]);
    let t = tui(&w, &bin);
    ready(&t);
    let first = submit(&w, &t, "hello from k");
    let thread = thread_of(&first).expect("thread id in the request's client_metadata");
    t.wait_screen("the first answer", "reply-k-hello", Duration::from_secs(15));
    // Idle: the daemon holds the thread with no turn running (the Stop hook has run).
    let home = codex_home(&w);
    common::wait_until(
        "the TUI thread to be idle in the daemon",
        Duration::from_secs(15),
        || codex_app::codex_presence(&home, &thread) == Presence::Held { running: false },
    );
    let e = endpoint(&w, &thread).expect("SessionStart registered the session");
    assert_eq!(e["kind"], "codex", "{e}");

    let body = format!("mail-k-{} please look", std::process::id());
    let sent_at = Instant::now();
    let r = w.relay(&["send", &thread, "--as", "boss", "--json", "--", &body]);
    assert_eq!(r.code, 0, "relay send: {}{}", r.stdout, r.stderr);
    let receipt = r.doc();
    assert_eq!(receipt["route"], "inject", "{receipt}");
    assert!(receipt["injected_at"].is_u64(), "{receipt}");
    let id = receipt["id"].as_str().unwrap().to_string();
    let mail = w
        .model
        .wait_for(
            |r| {
                thread_of(r).as_deref() == Some(thread.as_str())
                    && strings(&r.body).iter().any(|s| {
                        s.find("<relay-mail>").is_some_and(|open| {
                            s[open..]
                                .find(&body)
                                .is_some_and(|at| s[open + at..].contains("</relay-mail>"))
                        })
                    })
            },
            Duration::from_secs(15),
        )
        .unwrap_or_else(|| {
            panic!(
                "no model request for thread {thread} carried {body:?} inside <relay-mail> within 15 s; screen:\n{}",
                t.screen()
            )
        });
    let to_model_ms = sent_at.elapsed().as_millis();
    assert!(is_main(&mail), "the mail came as a turn of the session");
    let copies = strings(&mail.body)
        .iter()
        .map(|s| s.matches(&body).count())
        .sum::<usize>();
    assert_eq!(copies, 1, "the mail is shown once (no hook repeats it)");
    t.wait_screen("the injected mail", &body, Duration::from_secs(10));
    t.wait_screen(
        "the answer to the mail",
        "reply-k-mail-read",
        Duration::from_secs(15),
    );
    w.dump("k_codex_tui");
    let mut status = Value::Null;
    let acked = Instant::now() + Duration::from_secs(15);
    while Instant::now() < acked {
        status = w.relay_json(&["status", &id]);
        if status["state"] == "acked" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status["state"], "acked",
        "the injected mail is acked by the session's next hook: {status}"
    );
    let acked_at = status["acked_at"].as_u64().unwrap_or(0);
    let model_at = seen_at.lock().unwrap().unwrap_or(0);
    eprintln!(
        "codex tui k: mail reached the model {to_model_ms} ms after relay send; acked_at - model request = {} ms; daemon pid {:?}; test {} ms",
        acked_at as i64 - model_at as i64,
        daemon.pid(),
        started.elapsed().as_millis()
    );
}
