//! Issue 10 review: what a request's `_meta` or a hook payload may act as. Both come from
//! any local client, so they may name only a session of their own agent — never another
//! endpoint, whose mail they would read and whose name or kind they would change.

use serde_json::json;

use super::common::{self, Home};

const UUID_PROCESS: &str = "019b0000-0000-7000-8000-0000000000f1";
const CODEX_T1: &str = "019b0000-0000-7000-8000-0000000000f2";
const CODEX_T2: &str = "019b0000-0000-7000-8000-0000000000f3";

/// `_meta.threadId` naming a process endpoint (or a name) acted as it, and `register`
/// through it renamed that endpoint.
#[test]
fn a_request_meta_may_name_only_a_codex_session() {
    let h = Home::new();
    h.json(&["register", "worker", "--id", UUID_PROCESS]);
    let mut m = common::mcp::Mcp::start_client(&h, None, "codex-mcp-client");
    let (e, who) = m.tool_meta("whoami", json!({}), common::mcp::codex_meta(UUID_PROCESS));
    assert!(e, "acted as a process endpoint: {who}");
    let (e, reg) = m.tool_meta(
        "register",
        json!({"name": "hijacked"}),
        common::mcp::codex_meta(UUID_PROCESS),
    );
    assert!(e, "renamed another endpoint: {reg}");
    let roster = h.json(&["roster"]);
    assert!(
        roster["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "worker" && e["id"] == UUID_PROCESS),
        "{roster}"
    );
    // A thread id wins over a session id that names another (registered) session.
    h.json(&["register", "c2", "--id", CODEX_T2, "--kind", "codex"]);
    let mut meta = common::mcp::codex_meta(CODEX_T1);
    meta["sessionId"] = json!(CODEX_T2);
    meta["x-codex-turn-metadata"]["session_id"] = json!(CODEX_T2);
    let (e, who) = m.tool_meta("whoami", json!({}), meta);
    assert!(
        e,
        "an unregistered thread fell through to another session: {who}"
    );
}

/// A hook payload whose session_id names a process endpoint showed and acked its mail,
/// and SessionStart turned it into a Codex session.
#[test]
fn a_hook_payload_may_name_only_a_session_of_its_agent() {
    let h = Home::new();
    h.json(&["register", "worker", "--id", UUID_PROCESS]);
    h.register("bob");
    let sent = h.json(&["send", "worker", "--as", "bob", "private"]);
    let id = sent["id"].as_str().unwrap().to_string();
    for event in [
        "session-start",
        "post-tool-use",
        "user-prompt-submit",
        "stop",
    ] {
        let r = h.run_stdin(
            &["hook", "codex", event],
            json!({"session_id": UUID_PROCESS, "cwd": "/tmp"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r.code, 0);
        assert!(
            !r.stdout.contains("private"),
            "{event} showed it: {}",
            r.stdout
        );
    }
    assert_eq!(h.json(&["status", &id])["state"], "queued");
    let roster = h.json(&["roster"]);
    let worker = roster["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == UUID_PROCESS)
        .unwrap()
        .clone();
    assert_eq!(worker["kind"], "process", "{worker}");
}
