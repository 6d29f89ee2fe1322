//! Claude Code checks (a–g of the real-agent set): what relay's install, hooks, MCP server
//! and idle waiter put into the requests the real `claude` makes.

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay::standin::{Recorded, Reply, Script, has_tool_result, last_user_text};
use serde_json::json;

use crate::common::{self, wait_until};
use crate::harness::*;

/// Tools pre-approved for the runs.
const ALLOW: &str =
    "mcp__relay__send,mcp__relay__inbox,mcp__relay__whoami,mcp__relay__roster,Bash(true)";

/// A world with relay installed for Claude Code.
fn installed(make: impl FnOnce(Ctx) -> Script) -> World {
    let w = World::with(make);
    w.claude_config("");
    let r = w.relay(&["install", "claude"]);
    assert_eq!(r.code, 0, "relay install claude: {}{}", r.stdout, r.stderr);
    w
}

/// Main-conversation requests whose strings contain `needle`.
fn carrying(w: &World, needle: &str) -> Vec<Recorded> {
    w.model
        .requests()
        .into_iter()
        .filter(|r| is_main(r) && strings(&r.body).iter().any(|s| s.contains(needle)))
        .collect()
}

/// The string of `r` that contains `needle` (for failure messages and shape checks).
fn string_with(r: &Recorded, needle: &str) -> String {
    strings(&r.body)
        .into_iter()
        .find(|s| s.contains(needle))
        .unwrap_or_default()
}

#[test]
fn a_intro_and_relay_tools_reach_the_model() {
    let Some(bin) = client("claude") else { return };
    let w = installed(|_| Box::new(|_: &Recorded| text("hello")));
    w.claude_p(&bin, "hi", "");
    w.dump("a_intro");
    let main = w
        .model
        .wait_for(is_main, Duration::from_secs(1))
        .expect("a main-conversation request");
    let all = strings(&main.body).join("\n");
    assert!(
        all.contains("relay: this Claude Code session is"),
        "no SessionStart intro in the request"
    );
    let session = claude_session(&main).expect("session id in metadata");
    assert!(
        all.contains(&format!("endpoint id {session}")),
        "the intro names this session's id"
    );
    for want in [
        "mcp__relay__send",
        "mcp__relay__inbox",
        "mcp__relay__whoami",
        "mcp__relay__roster",
        "mcp__relay__wait",
    ] {
        assert!(offers(&main.body, want), "{want} not offered");
    }
}

#[test]
fn b_two_sessions_in_one_directory_send_as_themselves() {
    let Some(bin) = client("claude") else { return };
    let w = installed(|_| {
        Box::new(|r: &Recorded| {
            if !is_main(r) {
                return text("title");
            }
            if has_tool_result(&r.body) {
                return text("sent");
            }
            let prompt = last_user_text(&r.body);
            match prompt.split_whitespace().find(|t| t.starts_with("body-")) {
                Some(body) => send_call("sink", body),
                None => text("?"),
            }
        })
    });
    w.relay_json(&["register", "sink"]);
    // Both sessions at once, in the same directory.
    std::thread::scope(|s| {
        let one = s.spawn(|| w.claude_p(&bin, "send body-one", ALLOW));
        let two = s.spawn(|| w.claude_p(&bin, "send body-two", ALLOW));
        one.join().unwrap();
        two.join().unwrap();
    });
    w.dump("b_two");
    let mail = w.inbox("sink");
    let sessions: Vec<String> = w
        .sessions("claude-code")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sessions.len(), 2, "two sessions registered: {sessions:?}");
    let mut senders = Vec::new();
    for body in ["body-one", "body-two"] {
        // The session that was asked to send this body, by its own id.
        let asked = w
            .model
            .requests()
            .into_iter()
            .find(|r| {
                is_main(r) && !has_tool_result(&r.body) && last_user_text(&r.body).contains(body)
            })
            .and_then(|r| claude_session(&r))
            .unwrap_or_else(|| panic!("no request asked for {body}"));
        let from = mail
            .iter()
            .find(|m| m["body"] == body)
            .unwrap_or_else(|| panic!("{body} not stored for sink: {mail:?}"))["from"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(from, asked, "{body} was sent as the session that sent it");
        assert!(
            sessions.contains(&from),
            "sender {from} is a registered claude-code session"
        );
        senders.push(from);
    }
    assert_ne!(senders[0], senders[1], "two sessions, two sender ids");
}

#[test]
fn c_mail_queued_before_a_prompt_comes_with_the_prompt() {
    let Some(bin) = client("claude") else { return };
    let w = installed(|_| Box::new(|_: &Recorded| text("ok")));
    w.relay_json(&["register", "alice"]);
    // Print mode fed over stdin: SessionStart runs at start, the prompt comes later, so the
    // mail queued in between can only reach the model through UserPromptSubmit.
    let mut cmd = w.claude(
        &bin,
        &[
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ],
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn claude");
    wait_until(
        "the session registered by SessionStart",
        Duration::from_secs(30),
        || !w.sessions("claude-code").is_empty(),
    );
    let session = w.sessions("claude-code")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w.relay(&[
        "send",
        &session,
        "--as",
        "alice",
        "--",
        "mail-before-prompt-c",
    ]);
    assert_eq!(r.code, 0, "send: {}", r.stderr);
    let mut stdin = child.stdin.take().unwrap();
    let line = json!({"type": "user", "message": {"role": "user", "content": "x"}});
    writeln!(stdin, "{line}").unwrap();
    drop(stdin);
    let out = common::wait_with_deadline(child, AGENT_DEADLINE, "claude -p stream-json");
    w.dump("c_prompt");
    assert!(
        out.status.success(),
        "claude failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = carrying(&w, "mail-before-prompt-c");
    assert_eq!(got.len(), 1, "exactly one request carries the mail");
    let s = string_with(&got[0], "mail-before-prompt-c");
    assert!(s.contains("<relay-mail"), "the mail is fenced: {s}");
    assert!(
        s.contains("New relay mail"),
        "it came from UserPromptSubmit: {s}"
    );
    let first = w.model.wait_for(is_main, Duration::ZERO).unwrap();
    assert!(
        strings(&first.body)
            .iter()
            .any(|s| s.contains("mail-before-prompt-c")),
        "the mail is in the first request, with the prompt"
    );
}

#[test]
fn d_stop_blocks_exactly_once_for_mail_that_came_during_the_turn() {
    let Some(bin) = client("claude") else { return };
    let sent = Arc::new(Mutex::new(false));
    let w = installed(|ctx| {
        Box::new(move |r: &Recorded| {
            if !is_main(r) {
                return text("title");
            }
            let mut sent = sent.lock().unwrap();
            if !*sent {
                // Mail arrives while the model is answering the first request.
                *sent = true;
                let session = claude_session(r).expect("session id");
                ctx.send(&session, "alice", "mail-during-turn-d");
            }
            text("answer")
        })
    });
    w.relay_json(&["register", "alice"]);
    let t0 = Instant::now();
    w.claude_p(&bin, "work", ALLOW);
    w.dump("d_stop");
    let main: Vec<Recorded> = w.model.requests().into_iter().filter(is_main).collect();
    let blocked = carrying(&w, "mail-during-turn-d");
    assert_eq!(
        blocked.len(),
        1,
        "exactly one request carries the Stop block"
    );
    let s = string_with(&blocked[0], "mail-during-turn-d");
    assert!(s.contains("<relay-mail"), "fenced: {s}");
    assert!(s.contains("Stop hook"), "it came from the Stop hook: {s}");
    assert_eq!(
        main.len(),
        2,
        "the turn, the one continuation after the block, then the run ended"
    );
    assert!(t0.elapsed() < AGENT_DEADLINE);
}

#[test]
fn e_post_tool_use_brings_mail_that_came_during_a_tool_call() {
    let Some(bin) = client("claude") else { return };
    let w = installed(|ctx| {
        Box::new(move |r: &Recorded| {
            if !is_main(r) {
                return text("title");
            }
            if has_tool_result(&r.body) {
                return text("done");
            }
            // Mail arrives before the tool runs; its result turn comes after.
            let session = claude_session(r).expect("session id");
            ctx.send(&session, "alice", "mail-during-tool-e");
            Reply::ToolCall {
                name: "Bash".into(),
                input: json!({"command": "true", "description": "do nothing"}),
            }
        })
    });
    w.relay_json(&["register", "alice"]);
    w.claude_p(&bin, "run true", ALLOW);
    w.dump("e_post_tool");
    let after = w
        .model
        .wait_for(|r| is_main(r) && has_tool_result(&r.body), Duration::ZERO)
        .expect("a request with the tool result");
    let s = string_with(&after, "mail-during-tool-e");
    assert!(
        !s.is_empty(),
        "the request after the tool result has the mail"
    );
    assert!(s.contains("<relay-mail"), "fenced: {s}");
    assert!(
        s.contains("New relay mail arrived while you work"),
        "from PostToolUse: {s}"
    );
    assert!(
        s.contains("PostToolUse:Bash hook additional context"),
        "as additional context: {s}"
    );
    assert_eq!(
        carrying(&w, "mail-during-tool-e").len(),
        1,
        "mail shown once"
    );
}

#[test]
fn g_install_then_uninstall_is_byte_identical() {
    // No client needed: only relay edits the files here.
    let w = World::new(Box::new(|_: &Recorded| text("unused")));
    w.claude_config(r#""numStartups": 3, "tipsHistory": {"x": 1}, "cost": 113.30000000000001, "ratio": 1e-7, "big": 12345678901234567890"#);
    let settings_dir = w.home().join(".claude");
    std::fs::create_dir_all(&settings_dir).unwrap();
    let settings = settings_dir.join("settings.json");
    std::fs::write(
        &settings,
        "{\n    \"model\": \"opus\",\n    \"hooks\": {\n        \"Stop\": [{\"hooks\": [{\"type\": \"command\", \"command\": \"echo mine\"}]}]\n    },\n    \"x\": 0.1\n}\n",
    )
    .unwrap();
    let claude_json = w.home().join(".claude.json");
    let (before_cj, before_s) = (common::bytes(&claude_json), common::bytes(&settings));
    let r = w.relay(&["install", "claude"]);
    assert_eq!(r.code, 0, "install: {}{}", r.stdout, r.stderr);
    assert_ne!(
        common::bytes(&settings),
        before_s,
        "install changed settings.json"
    );
    let r = w.relay(&["uninstall", "claude"]);
    assert_eq!(r.code, 0, "uninstall: {}{}", r.stdout, r.stderr);
    let after_cj = String::from_utf8(common::bytes(&claude_json)).unwrap();
    assert_eq!(
        after_cj,
        String::from_utf8(before_cj).unwrap(),
        "~/.claude.json is byte-identical after install + uninstall"
    );
    assert_eq!(
        String::from_utf8(common::bytes(&settings)).unwrap(),
        String::from_utf8(before_s).unwrap(),
        "settings.json is byte-identical after install + uninstall"
    );
}

/// The answer the scripted model gives to injected mail `ping-N`: send `pong-N` back.
/// Coordination reaches the real client: the SessionStart intro names a reservation
/// another endpoint holds in the project, the coordination tools are offered, and the
/// session's own `reserve` of an overlapping path is refused naming the holder and its
/// reason, with nothing granted to the session.
#[test]
fn h_reservations_reach_the_session_and_its_reserve_is_refused() {
    let Some(bin) = client("claude") else { return };
    let w = installed(|_| {
        Box::new(|r: &Recorded| {
            if !is_main(r) {
                return text("title");
            }
            if has_tool_result(&r.body) {
                return text("done");
            }
            Reply::ToolCall {
                name: "mcp__relay__reserve".into(),
                input: json!({"globs": ["src/store/lease.rs"], "reason": "h-mine"}),
            }
        })
    });
    w.relay_json(&["register", "holder"]);
    w.relay_json(&[
        "reserve",
        "src/store/**",
        "--as",
        "holder",
        "--reason",
        "h-reason-store-move",
    ]);
    w.claude_p(&bin, "reserve the lease file", "mcp__relay__reserve");
    w.dump("h_reserve");
    let first = w
        .model
        .wait_for(is_main, Duration::from_secs(1))
        .expect("a main-conversation request");
    let intro = string_with(&first, "relay: this Claude Code session is");
    assert!(
        intro.contains("src/store/**") && intro.contains("holder"),
        "the intro names the reservation and its holder: {intro}"
    );
    for want in [
        "mcp__relay__search",
        "mcp__relay__thread",
        "mcp__relay__reserve",
        "mcp__relay__release",
        "mcp__relay__renew",
        "mcp__relay__reservations",
    ] {
        assert!(offers(&first.body, want), "{want} not offered");
    }
    let answered = carrying(&w, "h-reason-store-move")
        .into_iter()
        .find(|r| has_tool_result(&r.body))
        .expect("the reserve tool's result reached the model");
    let result = string_with(&answered, "h-reason-store-move");
    assert!(
        result.contains("reserved") && result.contains("holder"),
        "the refusal names the holder: {result}"
    );
    let held = w.relay_json(&["reservations"]);
    let all = held["reservations"].as_array().unwrap();
    assert_eq!(all.len(), 1, "nothing was granted to the session: {held}");
    assert_eq!(all[0]["glob"], "src/store/**", "{held}");
}

fn pong_for(r: &Recorded) -> Option<String> {
    let t = last_user_text(&r.body);
    if !t.contains("new mail arrived while this session was idle") {
        return None;
    }
    let ping = t.split_whitespace().find(|w| w.starts_with("ping-"))?;
    Some(ping.replacen("ping-", "pong-", 1))
}

#[test]
fn f_an_idle_session_gets_mail_in_place_and_answers_it() {
    let Some(bin) = client("claude") else { return };
    let w = installed(|_| {
        Box::new(|r: &Recorded| {
            if !is_main(r) {
                return text("title");
            }
            let last = last_user_text(&r.body);
            if has_tool_result(&r.body) && !last.contains("ping-") {
                return text("answered");
            }
            match pong_for(r) {
                Some(pong) => send_call("asker", &pong),
                None => text("hello there"),
            }
        })
    });
    w.relay_json(&["register", "asker"]);
    let tmux = Tmux::start(&w.claude(&bin, &["--allowedTools", ALLOW]));
    wait_until(
        "the session registered by SessionStart",
        Duration::from_secs(30),
        || !w.sessions("claude-code").is_empty(),
    );
    let session = w.sessions("claude-code")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    tmux.wait_screen("the prompt box", "\u{276f}", Duration::from_secs(30));
    tmux.type_line("first prompt");
    w.model
        .wait_for(
            |r| is_main(r) && last_user_text(&r.body).contains("first prompt"),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| {
            panic!(
                "the first prompt reached the model; screen:\n{}",
                tmux.screen()
            )
        });
    let waiters = || processes(&["hook", "claude", "idle"], &w.relay.path());
    for round in 1..=4 {
        // Idle: its waiter is up, and the plain Stop hook that Claude Code runs beside it
        // has finished (mail it found would be its nudge, not an in-place wake-up).
        let stop_hooks = || processes(&["hook", "claude", "stop"], &w.relay.path());
        wait_until("the idle waiter", Duration::from_secs(30), || {
            !waiters().is_empty() && stop_hooks().is_empty()
        });
        let ping = format!("ping-{round}");
        let t0 = Instant::now();
        w.relay_json(&["send", &session, "--as", "asker", &ping]);
        let woken = w
            .model
            .wait_for(
                |r| is_main(r) && r.at >= t0 && last_user_text(&r.body).contains(&ping),
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| {
                panic!(
                    "{ping} did not reach the model within 10 s; screen:\n{}",
                    tmux.screen()
                )
            });
        let s = string_with(&woken, &ping);
        assert!(s.contains("<relay-mail"), "fenced: {s}");
        assert!(
            s.contains("new mail arrived while this session was idle"),
            "woken by the idle waiter: {s}"
        );
        eprintln!("round {round}: injected after {:?}", woken.at - t0);
        let pong = format!("pong-{round}");
        wait_until(
            "the answer in the asker's inbox",
            Duration::from_secs(30),
            || w.inbox("asker").iter().any(|m| m["body"] == pong.as_str()),
        );
    }
    wait_until(
        "the idle waiter after the last turn",
        Duration::from_secs(30),
        || !waiters().is_empty(),
    );
    assert_eq!(
        waiters().len(),
        1,
        "exactly one idle waiter remains: {:?}",
        waiters()
    );
    w.dump("f_idle");
    drop(tmux);
}
