//! Codex checks (h, i of the real-agent set): `codex exec` with relay installed against the
//! stand-in Responses API.

use std::path::Path;
use std::time::Duration;

use relay::standin::{Recorded, has_tool_result, last_user_text};
use serde_json::Value;

use crate::common::{self, Run};
use crate::harness::*;

/// A world with Codex pointed at the stand-in and relay installed for Codex.
fn installed() -> World {
    let w = World::new(Box::new(|r: &Recorded| {
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
    let codex_home = w.home().join(".codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"gpt-5.1\"\nmodel_provider = \"standin\"\n\n[model_providers.standin]\nname = \"standin\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\nenv_key = \"MOCK_API_KEY\"\n",
            w.model.base_url()
        ),
    )
    .unwrap();
    let r = common::run(
        {
            let mut c = w.relay_cmd(&["install", "codex"]);
            c.env("CODEX_HOME", &codex_home);
            c
        },
        None,
        common::DEADLINE,
    );
    assert_eq!(r.code, 0, "relay install codex: {}{}", r.stdout, r.stderr);
    w
}

/// `codex exec --json PROMPT` (hooks run without the trust step); returns the run and
/// the thread id from its `thread.started` event.
fn exec(w: &World, bin: &Path, prompt: &str) -> (Run, String) {
    let mut c = std::process::Command::new(bin);
    w.agent_env(&mut c);
    c.env("CODEX_HOME", w.home().join(".codex")).args([
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-hook-trust",
        "--json",
        "--",
        prompt,
    ]);
    let r = common::run(c, None, AGENT_DEADLINE);
    assert_eq!(
        r.code, 0,
        "codex exec failed:\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    let thread = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "thread.started")
        .and_then(|v| v["thread_id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no thread.started event: {}", r.stdout));
    (r, thread)
}

/// The tool output Codex sent back for the relay call (the request after the call).
fn tool_output(w: &World, body: &str) -> String {
    let r = w
        .model
        .requests()
        .into_iter()
        .find(|r| has_tool_result(&r.body) && last_user_text(&r.body).contains(body))
        .unwrap_or_else(|| panic!("no tool result came back for {body}"));
    r.body["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .map(|i| i["output"].to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn h_codex_exec_calls_a_relay_tool_without_approval() {
    let Some(bin) = client("codex") else { return };
    let w = installed();
    w.relay_json(&["register", "sink"]);
    let (_, thread) = exec(&w, &bin, "send body-h");
    w.dump("h_codex");
    let main = w
        .model
        .wait_for(is_main, Duration::ZERO)
        .expect("a model request");
    assert!(
        offers(&main.body, "mcp__relay__send"),
        "relay's send tool is offered"
    );
    let out = tool_output(&w, "body-h");
    assert!(
        !out.contains("requires approval"),
        "the relay tool ran without approval: {out}"
    );
    let mail = w.inbox("sink");
    let m = mail
        .iter()
        .find(|m| m["body"] == "body-h")
        .unwrap_or_else(|| panic!("body-h not stored: {mail:?}; tool output: {out}"));
    assert_eq!(
        m["from"],
        thread.as_str(),
        "sent as the Codex session (its thread id)"
    );
}

#[test]
fn i_two_codex_sessions_in_one_directory_are_distinct() {
    let Some(bin) = client("codex") else { return };
    let w = installed();
    w.relay_json(&["register", "sink"]);
    let (t1, t2) = std::thread::scope(|s| {
        let one = s.spawn(|| exec(&w, &bin, "send body-i1").1);
        let two = s.spawn(|| exec(&w, &bin, "send body-i2").1);
        (one.join().unwrap(), two.join().unwrap())
    });
    w.dump("i_codex");
    assert_ne!(t1, t2);
    let mail = w.inbox("sink");
    for (body, thread) in [("body-i1", &t1), ("body-i2", &t2)] {
        let m = mail.iter().find(|m| m["body"] == body).unwrap_or_else(|| {
            panic!(
                "{body} not stored: {mail:?}; tool output: {}",
                tool_output(&w, body)
            )
        });
        assert_eq!(m["from"], thread.as_str(), "{body} sent as its own session");
    }
}
