//! Claude Code checks (a–g of the real-agent set).

use std::time::Duration;

use relay::standin::{Recorded, Reply, has_tool_result, last_user_text};
use serde_json::Value;

use crate::harness::*;

/// Tools pre-approved for `claude -p` runs.
const ALLOW: &str = "mcp__relay__send,mcp__relay__inbox,mcp__relay__whoami,mcp__relay__roster,ToolSearch,Bash(true)";

/// A world with relay installed for Claude Code.
fn installed(script: relay::standin::Script) -> World {
    let w = World::new(script);
    w.claude_config("");
    let r = w.relay(&["install", "claude"]);
    assert_eq!(r.code, 0, "relay install claude: {}{}", r.stdout, r.stderr);
    w
}

#[test]
fn a_intro_and_relay_tools_reach_the_model() {
    let Some(bin) = client("claude") else { return };
    let w = installed(Box::new(|_: &Recorded| text("hello")));
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
    let w = installed(Box::new(|r: &Recorded| {
        if !is_main(r) {
            return text("title");
        }
        let prompt = last_user_text(&r.body);
        if has_tool_result(&r.body) {
            return text("sent");
        }
        match prompt.split_whitespace().find(|t| t.starts_with("body-")) {
            Some(body) => send_call("sink", body),
            None => text("?"),
        }
    }));
    w.relay_json(&["register", "sink"]);
    w.claude_p(&bin, "send body-one", ALLOW);
    let first = w.sessions("claude-code");
    w.claude_p(&bin, "send body-two", ALLOW);
    w.dump("b_two");
    let sessions = w.sessions("claude-code");
    assert_eq!(first.len(), 1, "one session after the first run: {first:?}");
    assert_eq!(sessions.len(), 2, "two sessions after two runs: {sessions:?}");
    let id1 = first[0]["id"].as_str().unwrap().to_string();
    let id2 = sessions
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .find(|i| *i != id1)
        .unwrap();
    let mail = w.inbox("sink");
    let from = |b: &str| -> String {
        mail.iter()
            .find(|m| m["body"] == b)
            .unwrap_or_else(|| panic!("{b} not stored for sink: {mail:?}"))["from"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(from("body-one"), id1, "run 1 sent as its own session");
    assert_eq!(from("body-two"), id2, "run 2 sent as its own session");
    assert_ne!(id1, id2);
    let _ = (Reply::Text(String::new()), Value::Null);
}
