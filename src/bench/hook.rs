//! `relay bench hook`: what an agent pays per prompt and per tool call for relay's hooks,
//! cold process start included. Each sample spawns a fresh `relay hook claude
//! user-prompt-submit` (or `post-tool-use`) with a recorded payload and waits for it to exit.
//!
//! Baselines from the same run: spawning `/bin/true` (the floor for any hook) and
//! `relay --version` (relay's own start-up, no store).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use super::{Latency, Machine, Recorder};
use crate::config::Config;
use crate::store::{Intent, NewMessage, Registration, SqliteStore, Store, TEXT_PLAIN};

/// Everything `relay bench hook` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Samples per row.
    pub n: usize,
    /// Baseline: spawn and wait for `/bin/true`.
    pub baseline_true: Latency,
    /// Baseline: `relay --version`.
    pub baseline_relay_version: Latency,
    /// UserPromptSubmit hook, empty inbox (prints nothing).
    pub hook_empty: Latency,
    /// UserPromptSubmit hook delivering one message.
    pub hook_one_message: Latency,
    /// PostToolUse hook, empty inbox: what every tool call pays (goal: ≤ 2 ms p50).
    pub post_tool_use_empty: Latency,
    /// PostToolUse hook delivering one message.
    pub post_tool_use_one_message: Latency,
}

const SESSION: &str = "0190f5a2-7b3c-7def-8abc-0123456789ab";

fn time_spawn(cmd: &mut Command, input: &[u8]) -> anyhow::Result<std::time::Duration> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot spawn")?;
    child.stdin.take().expect("piped").write_all(input)?;
    let out = child.wait_with_output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!("{cmd:?} exited with {}", out.status);
    }
    Ok(d)
}

/// Runs every row with `n` samples in a temporary RELAY_HOME.
///
/// # Errors
/// Spawn or store failures.
pub fn run(n: usize, tick: &dyn Fn()) -> anyhow::Result<Report> {
    let tmp = tempfile::Builder::new()
        .prefix("relay-bench-hook-")
        .tempdir()?;
    let home = tmp.path().join("home");
    let store = SqliteStore::open(&Config::at(&home))?;
    store.register(&Registration {
        id: Some(SESSION.into()),
        name: Some("bench-session".into()),
        kind: Some(crate::store::Kind::ClaudeCode),
        ..Default::default()
    })?;
    let sender = store
        .register(&Registration {
            name: Some("bench-sender".into()),
            ..Default::default()
        })?
        .endpoint;
    let exe = std::env::current_exe()?;
    let payload = format!(
        "{{\"session_id\":\"{SESSION}\",\"cwd\":\"/tmp\",\"hook_event_name\":\"UserPromptSubmit\",\"prompt\":\"go\"}}"
    );
    let tool_payload = format!(
        "{{\"session_id\":\"{SESSION}\",\"cwd\":\"/tmp\",\"hook_event_name\":\"PostToolUse\",\"tool_name\":\"Bash\",\"tool_input\":{{\"command\":\"ls\"}},\"tool_response\":{{\"stdout\":\"README.md\"}}}}"
    );
    let hook = |home: &Path, event: &str| {
        let mut c = Command::new(&exe);
        c.args(["hook", "claude", event]).env("RELAY_HOME", home);
        c
    };
    let mail = || {
        store.enqueue(&NewMessage {
            from: sender.id.clone(),
            to: SESSION.into(),
            thread: None,
            reply_to: None,
            intent: Intent::Notify,
            content_type: TEXT_PLAIN.into(),
            body: b"build finished: 312 tests passed".to_vec(),
            expires_at: None,
            hold: None,
        })
    };
    let mut rows: [Recorder; 6] = Default::default();
    for _ in 0..n {
        rows[0].record(time_spawn(&mut Command::new("true"), b"")?);
        rows[1].record(time_spawn(Command::new(&exe).arg("--version"), b"")?);
        let prompt = "user-prompt-submit";
        rows[2].record(time_spawn(&mut hook(&home, prompt), payload.as_bytes())?);
        mail()?;
        rows[3].record(time_spawn(&mut hook(&home, prompt), payload.as_bytes())?);
        let tool = "post-tool-use";
        rows[4].record(time_spawn(&mut hook(&home, tool), tool_payload.as_bytes())?);
        mail()?;
        rows[5].record(time_spawn(&mut hook(&home, tool), tool_payload.as_bytes())?);
        tick();
    }
    Ok(Report {
        machine: Machine::detect(),
        n,
        baseline_true: rows[0].latency(),
        baseline_relay_version: rows[1].latency(),
        hook_empty: rows[2].latency(),
        hook_one_message: rows[3].latency(),
        post_tool_use_empty: rows[4].latency(),
        post_tool_use_one_message: rows[5].latency(),
    })
}

/// The report as Markdown, for bench/results/hook.md.
pub fn markdown(r: &Report, when: &str) -> String {
    let row = super::ms_row;
    let mut s = super::report_header(
        "relay bench hook",
        &format!("relay bench hook --n {}", r.n),
        &r.machine,
        when,
    );
    s += "Wall time of one hook process, spawn to exit, stdin payload included (ms):\n\n\
          | what | samples | p50 | p99 | max |\n|---|---|---|---|---|\n";
    s += &row("baseline: /bin/true", &r.baseline_true);
    s += &row("baseline: relay --version", &r.baseline_relay_version);
    s += &row("hook user-prompt-submit, empty inbox", &r.hook_empty);
    s += &row("hook user-prompt-submit, 1 message", &r.hook_one_message);
    s += &row("hook post-tool-use, empty inbox", &r.post_tool_use_empty);
    s += &row(
        "hook post-tool-use, 1 message",
        &r.post_tool_use_one_message,
    );
    s
}
