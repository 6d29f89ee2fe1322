//! OpenCode checks: what relay's MCP entry and plugin (installed by `relay install
//! opencode`) put into the requests the real `opencode` 1.18.33 makes to a stand-in model
//! (an `@ai-sdk/anthropic` provider with a `baseURL`), `opencode run` and the TUI under
//! tmux.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use relay::standin::{Recorded, Reply, Script};
use serde_json::json;

use crate::common::{self, wait_until};
use crate::harness::*;

/// A world with the stand-in as OpenCode's model and relay installed for OpenCode.
fn installed(make: impl FnOnce(Ctx) -> Script) -> World {
    let w = World::with(make);
    let dir = w.home().join(".config").join("opencode");
    std::fs::create_dir_all(dir.join("node_modules")).unwrap();
    let config = json!({
        "model": "standin/claude-standin",
        "small_model": "standin/claude-standin",
        "provider": {"standin": {
            "npm": "@ai-sdk/anthropic",
            "name": "Stand-in",
            "options": {"baseURL": format!("{}/v1", w.model.base_url()), "apiKey": "sk-standin"},
            "models": {"claude-standin": {"name": "Claude stand-in"}}
        }}
    });
    std::fs::write(dir.join("opencode.json"), config.to_string()).unwrap();
    // OpenCode installs its plugin types package into the config directory before it loads
    // any plugin, from the npm registry; relay's plugin imports types only, so a lock that
    // says it is there is enough (offline, the install would hold start-up for minutes).
    std::fs::write(
        dir.join("package.json"),
        r#"{"dependencies":{"@opencode-ai/plugin":"1.18.33"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("package-lock.json"),
        r#"{"name":"opencode","lockfileVersion":3,"requires":true,"packages":{"":{"dependencies":{"@opencode-ai/plugin":"1.18.33"}}}}"#,
    )
    .unwrap();
    let r = w.relay(&["install", "opencode"]);
    assert_eq!(
        r.code, 0,
        "relay install opencode: {}{}",
        r.stdout, r.stderr
    );
    w
}

/// `opencode args…` in this world (no update check, no models.dev fetch).
fn opencode(w: &World, bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    w.agent_env(&mut c);
    c.env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("npm_config_fetch_retries", "0")
        .args(args);
    c
}

/// Runs `opencode run [extra…] -- WORDS…` to completion.
fn run(w: &World, bin: &Path, extra: &[&str], words: &[&str]) -> common::Run {
    let mut args = vec!["run"];
    args.extend(extra);
    args.push("--");
    args.extend(words);
    let r = common::run(opencode(w, bin, &args), None, AGENT_DEADLINE);
    assert_eq!(
        r.code, 0,
        "opencode run {words:?} failed:\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    r
}

/// `relay_send` as OpenCode offers relay's MCP tool.
fn send(to: &str, body: &str) -> Reply {
    Reply::ToolCall {
        name: "relay_send".into(),
        input: json!({"to": to, "body": body}),
    }
}

#[test]
fn a_intro_and_relay_tools_reach_the_model() {
    let Some(bin) = client("opencode") else {
        return;
    };
    let w = installed(|_| Box::new(|_: &Recorded| text("hello")));
    run(&w, &bin, &[], &["hi"]);
    w.dump("oc_a_intro");
    let main = w
        .model
        .wait_for(is_main, Duration::from_secs(1))
        .expect("a main request");
    assert!(
        mentions(&main, "relay: this OpenCode session is"),
        "no intro in the request"
    );
    let sessions = w.sessions("opencode");
    assert_eq!(sessions.len(), 1, "one OpenCode session registered");
    let id = sessions[0]["id"].as_str().unwrap();
    assert!(id.starts_with("ses_"), "{id}");
    assert_eq!(session_of(&main).as_deref(), Some(id), "the intro names it");
    for want in [
        "relay_send",
        "relay_inbox",
        "relay_whoami",
        "relay_roster",
        "relay_wait",
    ] {
        assert!(offers(&main.body, want), "{want} not offered");
    }
    assert_eq!(
        sessions[0]["presence"], "dormant",
        "OpenCode exited: resumable"
    );
}

#[test]
fn b_two_sessions_in_one_directory_send_as_themselves() {
    let Some(bin) = client("opencode") else {
        return;
    };
    let w = installed(|_| {
        Box::new(|r: &Recorded| {
            if !is_main(r) {
                return text("title");
            }
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
    // A first run alone: two first runs at once race to create OpenCode's database
    // ("Unexpected error" from one of them).
    run(&w, &bin, &[], &["warm-up"]);
    std::thread::scope(|s| {
        let one = s.spawn(|| run(&w, &bin, &[], &["send", "body-one"]));
        let two = s.spawn(|| run(&w, &bin, &[], &["send", "body-two"]));
        one.join().unwrap();
        two.join().unwrap();
    });
    w.dump("oc_b_two");
    let mail = w.inbox("sink");
    assert_eq!(mail.len(), 2, "two messages: {mail:?}");
    let mut senders = Vec::new();
    for body in ["body-one", "body-two"] {
        let asked = w
            .model
            .requests()
            .into_iter()
            .find(|r| is_main(r) && !after_tool(r) && mentions(r, body))
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
fn c_mail_before_a_prompt_and_between_tool_calls() {
    let Some(bin) = client("opencode") else {
        return;
    };
    let w = installed(|ctx| {
        Box::new(move |r: &Recorded| {
            if !is_main(r) || after_tool(r) {
                return text("ok");
            }
            if says(r, "run-a-tool") {
                ctx.send(
                    &session_of(r).unwrap_or_default(),
                    "peer",
                    "c-during-the-tool",
                );
                return Reply::ToolCall {
                    name: "bash".into(),
                    input: json!({"command": "true", "description": "nothing"}),
                };
            }
            text("ok")
        })
    });
    w.relay_json(&["register", "peer"]);
    run(&w, &bin, &[], &["first"]);
    let id = w.sessions("opencode")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.relay_json(&["send", &id, "--as", "peer", "c-before-the-prompt"]);
    run(&w, &bin, &["--session", &id], &["second"]);
    let with_prompt = w
        .model
        .requests()
        .into_iter()
        .find(|r| is_main(r) && says(r, "second"))
        .expect("the second prompt's request");
    assert!(
        mentions(&with_prompt, "c-before-the-prompt") && mentions(&with_prompt, "<relay-mail"),
        "the queued mail, fenced, with the prompt"
    );
    assert_eq!(session_of(&with_prompt).as_deref(), Some(id.as_str()));
    assert_eq!(pending(&w, &id), 0, "acked once shown");
    run(&w, &bin, &["--session", &id], &["run-a-tool"]);
    let after = w
        .model
        .wait_for(
            |r| after_tool(r) && mentions(r, "c-during-the-tool"),
            Duration::from_secs(5),
        )
        .expect("the tool result carried the mail that came during the call");
    let s = strings(&after.body)
        .into_iter()
        .rfind(|s| s.contains("c-during-the-tool"))
        .unwrap();
    assert!(s.contains("arrived while you work"), "{s}");
}

#[test]
fn d_an_idle_tui_session_keeps_working_once_then_gets_mail_in_place() {
    let Some(bin) = client("opencode") else {
        return;
    };
    let w = installed(|ctx| {
        Box::new(move |r: &Recorded| {
            if !is_main(r) {
                return text("title");
            }
            if after_tool(r) {
                return text("answered");
            }
            let all = strings(&r.body).join("\n");
            if says(r, "work-d") && !all.contains("You have relay mail from other sessions") {
                // Mail during the turn: the session keeps working once when it goes idle.
                ctx.send(
                    &session_of(r).unwrap_or_default(),
                    "asker",
                    "d-mail-during-the-turn",
                );
                return text("working");
            }
            let ping = all
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .rfind(|t| t.starts_with("ping-"));
            match ping {
                Some(p) if all.contains("new mail arrived while this session was idle") => {
                    send("asker", &p.replacen("ping-", "pong-", 1))
                }
                _ => text("read it"),
            }
        })
    });
    w.relay_json(&["register", "asker"]);
    let tmux = Tmux::start(&opencode(&w, &bin, &[]));
    tmux.wait_screen("the prompt box", "Ask anything", Duration::from_secs(60));
    tmux.type_line("work-d");
    wait_until(
        "the session registered by the plugin",
        Duration::from_secs(30),
        || !w.sessions("opencode").is_empty(),
    );
    let session = w.sessions("opencode")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let blocked = w
        .model
        .wait_for(
            |r| is_main(r) && mentions(r, "You have relay mail from other sessions"),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no stop follow-up; screen:\n{}", tmux.screen()));
    assert!(mentions(&blocked, "d-mail-during-the-turn"));
    let waiters = || processes(&["hook", "opencode", "idle"], &w.relay.path());
    let mut latencies = Vec::new();
    for round in 1..=3 {
        wait_until(
            "the session idle with its waiter",
            Duration::from_secs(30),
            || {
                !waiters().is_empty()
                    && w.relay_json(&["roster"])["endpoints"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["id"] == session.as_str() && e["presence"] == "idle")
            },
        );
        let ping = format!("ping-{round}");
        let t0 = Instant::now();
        let sent = w.relay_json(&["send", &session, "--as", "asker", &ping]);
        assert_eq!(sent["route"], "inject", "{sent}");
        let woken = w
            .model
            .wait_for(
                |r| is_main(r) && r.at >= t0 && mentions(r, &ping),
                Duration::from_secs(15),
            )
            .unwrap_or_else(|| {
                panic!(
                    "{ping} did not reach the model within 15 s; screen:\n{}",
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
        wait_until("the ping acked", Duration::from_secs(15), || {
            pending(&w, &session) == 0
        });
    }
    eprintln!("OpenCode inject latency (send → model request): {latencies:?}");
    w.dump("oc_d_idle");
    drop(tmux);
    wait_until(
        "no waiter left once OpenCode is gone",
        Duration::from_secs(30),
        || waiters().is_empty(),
    );
}

#[test]
fn e_install_then_uninstall_is_byte_identical_and_a_foreign_server_is_refused() {
    // No client needed: only relay edits the files here.
    let w = World::new(Box::new(|_: &Recorded| text("unused")));
    let dir = w.home().join(".config").join("opencode");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("opencode.json");
    let before = "{\n  \"theme\": \"tokyonight\",\n  \"mcp\": {\n    \"mine\": {\"type\": \"local\", \"command\": [\"mine\"]}\n  }\n}\n";
    std::fs::write(&config, before).unwrap();
    let r = w.relay(&["install", "opencode"]);
    assert_eq!(r.code, 0, "install: {}{}", r.stdout, r.stderr);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(doc["mcp"]["relay"]["command"][1], "mcp");
    assert_eq!(doc["mcp"]["relay"]["timeout"], 330_000);
    assert_eq!(doc["mcp"]["mine"]["command"][0], "mine");
    assert!(dir.join("plugin").join("relay.ts").is_file());
    let again = w.relay_json(&["install", "opencode"]);
    assert!(
        again["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["action"] == "unchanged"),
        "idempotent: {again}"
    );
    let r = w.relay(&["uninstall", "opencode"]);
    assert_eq!(r.code, 0, "uninstall: {}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        before,
        "byte for byte"
    );
    assert!(!dir.join("plugin").join("relay.ts").exists());
    // A server named relay that is not relay's: refused, nothing written.
    let foreign =
        "{\"mcp\": {\"relay\": {\"type\": \"local\", \"command\": [\"npx\", \"other-relay\"]}}}\n";
    std::fs::write(&config, foreign).unwrap();
    let r = w.relay(&["install", "opencode"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("already has an MCP server named 'relay'"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), foreign);
    assert!(!dir.join("plugin").join("relay.ts").exists());
}

#[test]
fn f_a_dormant_session_is_woken_headlessly_with_its_mail() {
    let Some(bin) = client("opencode") else {
        return;
    };
    let w = installed(|_| Box::new(|_: &Recorded| text("ok")));
    w.relay_json(&["register", "peer"]);
    run(&w, &bin, &[], &["first"]);
    let id = w.sessions("opencode")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = std::env::join_paths(std::iter::once(bin.parent().unwrap().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    w.relay_json(&["send", &id, "--as", "peer", "f-wake-mail"]);
    // As a user's shell would run it: OpenCode's environment, and pi's dir in PATH.
    let mut c = opencode(
        &w,
        Path::new(&common::relay_bin()),
        &["wake", &id, "--json"],
    );
    c.env("PATH", path);
    let r = common::run(c, None, AGENT_DEADLINE);
    assert_eq!(r.code, 0, "relay wake: {}{}", r.stdout, r.stderr);
    let woken = w
        .model
        .wait_for(
            |r| is_main(r) && mentions(r, "f-wake-mail"),
            Duration::from_secs(5),
        )
        .expect("the resumed session's request carried the mail");
    assert_eq!(
        session_of(&woken).as_deref(),
        Some(id.as_str()),
        "the same session"
    );
    assert!(says(&woken, "first"), "with its history");
    assert_eq!(pending(&w, &id), 0);
}
