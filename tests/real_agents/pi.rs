//! pi checks: what relay's extension (installed by `relay install pi`) puts into the
//! requests the real `pi` 0.73.1 makes to a stand-in model (an Anthropic Messages
//! provider in `~/.pi/agent/models.json`), print mode and the TUI under tmux.

use std::process::Command;
use std::time::{Duration, Instant};

use relay::standin::{Recorded, Reply, Script};
use serde_json::json;

use crate::common::{self, wait_until};
use crate::harness::*;

/// A world with the stand-in as pi's default model and relay installed for pi.
fn installed(make: impl FnOnce(Ctx) -> Script) -> World {
    let w = World::with(make);
    let agent = w.home().join(".pi").join("agent");
    std::fs::create_dir_all(&agent).unwrap();
    let models = json!({"providers": {"standin": {
        "baseUrl": w.model.base_url(),
        "api": "anthropic-messages",
        "apiKey": "sk-standin",
        "models": [{"id": "standin-1", "name": "Stand-in", "reasoning": false,
                    "input": ["text"], "contextWindow": 200000, "maxTokens": 4096}]
    }}});
    std::fs::write(agent.join("models.json"), models.to_string()).unwrap();
    let settings = json!({"defaultProvider": "standin", "defaultModel": "standin-1",
                          "enableInstallTelemetry": false});
    std::fs::write(agent.join("settings.json"), settings.to_string()).unwrap();
    let r = w.relay(&["install", "pi"]);
    assert_eq!(r.code, 0, "relay install pi: {}{}", r.stdout, r.stderr);
    w
}

/// `pi args…` in this world (offline: no version check, no tool downloads).
fn pi(w: &World, bin: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    w.agent_env(&mut c);
    c.env("PI_OFFLINE", "1").args(args);
    c
}

/// Runs `pi -p PROMPT` (with `extra` arguments first) to completion.
fn pi_p(w: &World, bin: &std::path::Path, extra: &[&str], prompt: &str) -> common::Run {
    let mut args = extra.to_vec();
    args.extend(["-p", prompt]);
    let r = common::run(pi(w, bin, &args), None, AGENT_DEADLINE);
    assert_eq!(
        r.code, 0,
        "pi -p {prompt:?} failed:\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    r
}

/// A relay `send` call as pi offers it (the MCP tool's own name).
fn send(to: &str, body: &str) -> Reply {
    Reply::ToolCall {
        name: "relay_send".into(),
        input: json!({"to": to, "body": body}),
    }
}

#[test]
fn a_intro_and_relay_tools_reach_the_model() {
    let Some(bin) = client("pi") else { return };
    let w = installed(|_| Box::new(|_: &Recorded| text("hello")));
    pi_p(&w, &bin, &[], "hi");
    w.dump("pi_a_intro");
    let first = w
        .model
        .wait_for(is_main, Duration::from_secs(1))
        .expect("a request");
    let all = strings(&first.body).join("\n");
    assert!(
        all.contains("relay: this pi session is"),
        "no intro in the request"
    );
    let sessions = w.sessions("pi");
    assert_eq!(sessions.len(), 1, "one pi session registered");
    let id = sessions[0]["id"].as_str().unwrap();
    assert_eq!(
        session_of(&first).as_deref(),
        Some(id),
        "the intro names it"
    );
    // The MCP server's tools, under the MCP names prefixed `relay_` (pi refuses to start
    // when two extensions register one name), with the MCP descriptions.
    let tools = relay::standin::tool_names(&first.body);
    for want in [
        "relay_send",
        "relay_inbox",
        "relay_whoami",
        "relay_roster",
        "relay_wait",
        "relay_ack",
        "relay_status",
        "relay_search",
        "relay_reserve",
    ] {
        assert!(
            tools.iter().any(|t| t == want),
            "{want} not offered: {tools:?}"
        );
    }
    let listed = first.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "relay_send")
        .unwrap()
        .clone();
    assert!(
        listed["description"]
            .as_str()
            .unwrap()
            .contains("Send a message"),
        "the MCP description: {listed}"
    );
    assert_eq!(sessions[0]["presence"], "dormant", "pi exited: resumable");
}

#[test]
fn b_two_sessions_in_one_directory_send_as_themselves() {
    let Some(bin) = client("pi") else { return };
    let w = installed(|_| {
        Box::new(|r: &Recorded| {
            if after_tool(r) {
                return text("sent");
            }
            let all = strings(&r.body).join("\n");
            match all.split_whitespace().find(|t| t.starts_with("body-")) {
                Some(body) => send("sink", body),
                None => text("?"),
            }
        })
    });
    w.relay_json(&["register", "sink"]);
    std::thread::scope(|s| {
        let one = s.spawn(|| pi_p(&w, &bin, &[], "send body-one"));
        let two = s.spawn(|| pi_p(&w, &bin, &[], "send body-two"));
        one.join().unwrap();
        two.join().unwrap();
    });
    w.dump("pi_b_two");
    let mail = w.inbox("sink");
    assert_eq!(mail.len(), 2, "two messages: {mail:?}");
    let mut senders = Vec::new();
    for body in ["body-one", "body-two"] {
        let asked = w
            .model
            .requests()
            .into_iter()
            .find(|r| !after_tool(r) && mentions(r, body))
            .and_then(|r| session_of(&r))
            .expect("the request that asked for it names its session");
        let m = mail.iter().find(|m| m["body"] == body).expect(body);
        assert_eq!(
            m["from"],
            asked.as_str(),
            "{body} sent as the session asked"
        );
        senders.push(asked);
    }
    assert_ne!(senders[0], senders[1], "two sessions, two identities");
}

#[test]
fn c_mail_queued_before_a_prompt_comes_with_the_prompt_and_post_tool_use_between_calls() {
    let Some(bin) = client("pi") else { return };
    let w = installed(|ctx| {
        Box::new(move |r: &Recorded| {
            if after_tool(r) {
                return text("ok");
            }
            // The prompt is not the last user message: relay's text follows it.
            if strings(&r.body).iter().any(|s| s == "run a tool") {
                // Mail that comes while the tool runs: the tool_result hook shows it.
                ctx.send(
                    &session_of(r).unwrap_or_default(),
                    "peer",
                    "c-during-the-tool",
                );
                return Reply::ToolCall {
                    name: "bash".into(),
                    input: json!({"command": "true"}),
                };
            }
            text("ok")
        })
    });
    w.relay_json(&["register", "peer"]);
    // A first run makes the session (pi writes its file once the model answered).
    pi_p(&w, &bin, &[], "first");
    let id = w.sessions("pi")[0]["id"].as_str().unwrap().to_string();
    w.relay_json(&["send", &id, "--as", "peer", "c-before-the-prompt"]);
    pi_p(&w, &bin, &["--session", &id], "second");
    let with_prompt = w
        .model
        .requests()
        .into_iter()
        .find(|r| strings(&r.body).iter().any(|s| s == "second"))
        .expect("the second prompt's request");
    let all = strings(&with_prompt.body).join("\n");
    assert!(all.contains("second"), "the prompt: {all}");
    assert!(
        all.contains("c-before-the-prompt") && all.contains("<relay-mail"),
        "the queued mail, fenced, with the prompt"
    );
    assert_eq!(session_of(&with_prompt).as_deref(), Some(id.as_str()));
    // Acked once shown: nothing left for the session.
    assert_eq!(pending(&w, &id), 0, "acked once shown");
    // Between tool calls.
    pi_p(&w, &bin, &["--session", &id], "run a tool");
    let after_tool = w
        .model
        .wait_for(
            |r| after_tool(r) && mentions(r, "c-during-the-tool"),
            Duration::from_secs(5),
        )
        .expect("the tool result carried the mail that came during the call");
    let s = strings(&after_tool.body)
        .into_iter()
        .find(|s| s.contains("c-during-the-tool"))
        .unwrap();
    assert!(s.contains("arrived while you work"), "{s}");
}

#[test]
fn d_an_idle_session_gets_mail_in_place_and_answers_it() {
    let Some(bin) = client("pi") else { return };
    let w = installed(|_| {
        Box::new(|r: &Recorded| {
            if after_tool(r) {
                return text("answered");
            }
            // The newest ping (the history holds the earlier ones).
            let all = strings(&r.body).join("\n");
            let ping = all
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .rfind(|t| t.starts_with("ping-"));
            match ping {
                Some(p) if all.contains("new mail arrived while this session was idle") => {
                    send("asker", &p.replacen("ping-", "pong-", 1))
                }
                _ => text("hello there"),
            }
        })
    });
    w.relay_json(&["register", "asker"]);
    let tmux = Tmux::start(&pi(&w, &bin, &[]));
    wait_until(
        "the session registered by the extension",
        Duration::from_secs(30),
        || !w.sessions("pi").is_empty(),
    );
    let session = w.sessions("pi")[0]["id"].as_str().unwrap().to_string();
    let waiters = || processes(&["hook", "pi", "idle"], &w.relay.path());
    // Idle from the start: the waiter runs before any prompt.
    wait_until("the idle waiter", Duration::from_secs(30), || {
        !waiters().is_empty()
    });
    let mut latencies = Vec::new();
    for round in 1..=4 {
        wait_until("the idle waiter", Duration::from_secs(30), || {
            !waiters().is_empty()
                && w.relay_json(&["roster"])["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["id"] == session.as_str() && e["presence"] == "idle")
        });
        let ping = format!("ping-{round}");
        let t0 = Instant::now();
        let sent = w.relay_json(&["send", &session, "--as", "asker", &ping]);
        assert_eq!(sent["route"], "inject", "{sent}");
        let woken = w
            .model
            .wait_for(
                |r| r.at >= t0 && mentions(r, &ping),
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| {
                panic!(
                    "{ping} did not reach the model within 10 s; screen:\n{}",
                    tmux.screen()
                )
            });
        let s = strings(&woken.body)
            .into_iter()
            .rfind(|s| s.contains(&ping))
            .unwrap();
        assert!(
            s.contains("<relay-mail") && s.contains("new mail arrived while this session was idle"),
            "fenced, by the idle waiter: {s}"
        );
        latencies.push(woken.at - t0);
        let pong = format!("pong-{round}");
        wait_until(
            "the answer in the asker's inbox",
            Duration::from_secs(30),
            || w.inbox("asker").iter().any(|m| m["body"] == pong.as_str()),
        );
        // The injected mail is acked by the woken turn's own hook.
        wait_until("the ping acked", Duration::from_secs(10), || {
            pending(&w, &session) == 0
        });
    }
    eprintln!("pi inject latency (send → model request): {latencies:?}");
    wait_until(
        "one idle waiter after the last turn",
        Duration::from_secs(30),
        || waiters().len() == 1,
    );
    w.dump("pi_d_idle");
    drop(tmux);
    wait_until(
        "no waiter left once pi is gone",
        Duration::from_secs(30),
        || waiters().is_empty(),
    );
}

#[test]
fn e_install_then_uninstall_is_byte_identical_and_a_foreign_file_is_refused() {
    // No client needed: only relay edits the files here.
    let w = World::new(Box::new(|_: &Recorded| text("unused")));
    let dir = w.home().join(".pi").join("agent").join("extensions");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mine.ts"), "export default function () {}\n").unwrap();
    let r = w.relay(&["install", "pi", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("+++ ") && !dir.join("relay.ts").exists());
    let r = w.relay(&["install", "pi"]);
    assert_eq!(r.code, 0, "install: {}{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(dir.join("relay.ts")).unwrap();
    assert!(text.contains(&format!(
        "const RELAY: string = {};",
        serde_json::to_string(common::relay_bin().to_str().unwrap()).unwrap()
    )));
    let again = w.relay_json(&["install", "pi"]);
    assert_eq!(again["files"][0]["action"], "unchanged", "idempotent");
    let r = w.relay(&["uninstall", "pi"]);
    assert_eq!(r.code, 0, "uninstall: {}{}", r.stdout, r.stderr);
    assert!(!dir.join("relay.ts").exists(), "relay's file removed");
    assert_eq!(
        std::fs::read_to_string(dir.join("mine.ts")).unwrap(),
        "export default function () {}\n"
    );
    // Another relay version's relay.ts (or relay's, edited) is relay's: replaced, with the
    // old one kept as a backup.
    let older = text.replacen("HOOK_TIMEOUT_MS = 10_000", "HOOK_TIMEOUT_MS = 5_000", 1);
    assert_ne!(older, text);
    std::fs::write(dir.join("relay.ts"), &older).unwrap();
    let r = w.relay_json(&["install", "pi"]);
    assert_eq!(r["files"][0]["action"], "updated", "{r}");
    let backup = r["files"][0]["backup"]
        .as_str()
        .expect("a backup")
        .to_string();
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), older);
    assert_eq!(std::fs::read_to_string(dir.join("relay.ts")).unwrap(), text);
    // A relay.ts that is not relay's: install refuses, uninstall keeps it.
    let foreign = "// my own relay helper\nexport default function () {}\n";
    std::fs::write(dir.join("relay.ts"), foreign).unwrap();
    let r = w.relay(&["install", "pi"]);
    assert_eq!(r.code, 1, "refused: {}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("is not the pi extension relay writes"),
        "{}",
        r.stderr
    );
    let r = w.relay(&["uninstall", "pi"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.join("relay.ts")).unwrap(),
        foreign
    );
    assert!(r.stdout.contains("left as it is"), "{}", r.stdout);
}

#[test]
fn f_stop_keeps_the_session_working_once_for_mail_that_came_during_the_turn() {
    let Some(bin) = client("pi") else { return };
    let w = installed(|ctx| {
        Box::new(move |r: &Recorded| {
            if mentions(r, "You have relay mail from other sessions") {
                return text("read it");
            }
            if mentions(r, "work-f") {
                ctx.send(
                    &session_of(r).unwrap_or_default(),
                    "peer",
                    "f-mail-during-the-turn",
                );
            }
            text("done")
        })
    });
    w.relay_json(&["register", "peer"]);
    pi_p(&w, &bin, &[], "work-f");
    w.dump("pi_f_stop");
    let blocked: Vec<Recorded> = w
        .model
        .requests()
        .into_iter()
        .filter(|r| mentions(r, "You have relay mail from other sessions"))
        .collect();
    assert_eq!(blocked.len(), 1, "kept working exactly once");
    let s = strings(&blocked[0].body)
        .into_iter()
        .rfind(|s| s.contains("f-mail-during-the-turn"))
        .expect("the mail in the turn");
    assert!(s.contains("<relay-mail"), "fenced: {s}");
    let id = w.sessions("pi")[0]["id"].as_str().unwrap().to_string();
    assert_eq!(pending(&w, &id), 0, "acked once shown");
}

#[test]
fn g_a_dormant_session_is_woken_headlessly_with_its_mail() {
    let Some(bin) = client("pi") else { return };
    let w = installed(|_| Box::new(|_: &Recorded| text("ok")));
    w.relay_json(&["register", "peer"]);
    pi_p(&w, &bin, &[], "first");
    let id = w.sessions("pi")[0]["id"].as_str().unwrap().to_string();
    assert_eq!(w.sessions("pi")[0]["presence"], "dormant");
    // wake runs `pi` from PATH, in the session's directory, as an argv.
    let path = std::env::join_paths(std::iter::once(bin.parent().unwrap().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    w.relay_json(&["send", &id, "--as", "peer", "g-wake-mail"]);
    let mut c = w.relay_cmd(&["wake", &id, "--json"]);
    c.env("PATH", path).env("PI_OFFLINE", "1");
    let r = common::run(c, None, AGENT_DEADLINE);
    assert_eq!(r.code, 0, "relay wake: {}{}", r.stdout, r.stderr);
    let woken = w
        .model
        .wait_for(|r| mentions(r, "g-wake-mail"), Duration::from_secs(5))
        .expect("the resumed session's request carried the mail");
    assert_eq!(
        session_of(&woken).as_deref(),
        Some(id.as_str()),
        "the same session"
    );
    assert!(mentions(&woken, "first"), "with its history");
    assert_eq!(pending(&w, &id), 0);
}

/// Issue 14's review: relay's tools under the bare MCP names (`search`, `status`, …) made
/// pi refuse to start beside any extension with a tool of that name (pi fails on a name
/// conflict), and so did relay installed at both scopes. Now the tools are `relay_*`, and
/// an install at the second scope is refused.
#[test]
fn h_another_extensions_search_tool_and_a_second_scope_do_not_break_pi() {
    let Some(bin) = client("pi") else { return };
    let w = installed(|_| Box::new(|_: &Recorded| text("fine")));
    let dir = w.home().join(".pi").join("agent").join("extensions");
    std::fs::write(
        dir.join("websearch.ts"),
        "export default function (pi: any) {\n  pi.registerTool({ name: \"search\", label: \"search\", description: \"web search\", parameters: { type: \"object\", properties: {} }, async execute() { return { content: [{ type: \"text\", text: \"none\" }], details: {} }; } });\n}\n",
    )
    .unwrap();
    pi_p(&w, &bin, &[], "still starts");
    let r = w.relay(&["install", "pi", "--scope", "project"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("already installed at"), "{}", r.stderr);
    assert!(!w.cwd().join(".pi").exists(), "nothing written");
}
