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

/// Issue 14's OpenCode review: `relay mcp` took `_relay_session` (the argument relay's
/// OpenCode plugin adds) from any client, so any MCP client could read and ack an OpenCode
/// session's mail by naming it. Now it is taken only from OpenCode, and always removed.
#[test]
fn only_opencode_may_name_its_session_in_the_arguments() {
    let h = Home::new();
    let session = "ses_dc7f9921effexAF634KL4HCM2B";
    // Registered by a hook under a process of its own (python3, gone afterwards), so the
    // binding names no ancestor of the MCP servers below.
    let payload = json!({"session_id": session, "hook_event_name": "SessionStart"}).to_string();
    let mut hook = std::process::Command::new("python3");
    hook.args([
        "-c",
        "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:], input=sys.stdin.buffer.read()).returncode)",
    ])
    .arg(common::relay_bin())
    .args(["hook", "opencode", "session-start"])
    .env("RELAY_HOME", h.path())
    .env_remove("RELAY_AS");
    let start = common::run(hook, Some(payload.as_bytes()), common::DEADLINE);
    assert_eq!(start.code, 0, "{}", start.stderr);
    h.register("peer");
    let sent = h.json(&["send", session, "--as", "peer", "for the OpenCode session"]);
    let id = sent["id"].as_str().unwrap().to_string();
    let args = json!({"_relay_session": session});
    let mut other = common::mcp::Mcp::start_client(&h, None, "claude-code");
    let (err, doc) = other.tool("whoami", args.clone());
    assert!(
        err || doc["endpoint"]["id"] != session,
        "another client became the OpenCode session: {doc}"
    );
    let (_, inbox) = other.tool("inbox", args.clone());
    assert!(!inbox.to_string().contains(&id), "{inbox}");
    assert_eq!(h.json(&["status", &id])["state"], "queued");
    let mut opencode = common::mcp::Mcp::start_client(&h, None, "opencode");
    let (err, doc) = opencode.tool("whoami", args);
    assert!(!err, "{doc}");
    assert_eq!(doc["endpoint"]["id"], session);
}

/// Issue 14's OpenCode review: a new session in the same OpenCode process (`/new`) took
/// the name of the one before, as Claude Code's `/clear` does; but OpenCode keeps the old
/// session (and its waiter), so mail to its name went to the new one. Now each OpenCode
/// session keeps its own name.
#[test]
fn a_second_opencode_session_in_one_process_keeps_the_first_ones_name() {
    let h = Home::new();
    let start = |session: &str| {
        let r = h.run_stdin(
            &["hook", "opencode", "session-start"],
            json!({"session_id": session, "hook_event_name": "SessionStart"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    // Both hooks run under this test process: one agent process, as in OpenCode.
    start("ses_aaaaaaaaaaaaaaaaaaaaaaaaaa");
    let first = h.json(&["whoami", "--as", "ses_aaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    let name = first["endpoint"]["name"].as_str().unwrap().to_string();
    start("ses_bbbbbbbbbbbbbbbbbbbbbbbbbb");
    let again = h.json(&["whoami", "--as", "ses_aaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    assert_eq!(
        again["endpoint"]["name"],
        name.as_str(),
        "the first keeps its name"
    );
    let second = h.json(&["whoami", "--as", "ses_bbbbbbbbbbbbbbbbbbbbbbbbbb"]);
    assert_ne!(second["endpoint"]["name"], name.as_str());
}
