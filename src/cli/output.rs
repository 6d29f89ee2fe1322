//! Printing: one JSON document with `--json`, readable text otherwise. A closed stdout
//! (broken pipe) ends the process quietly with status 0, as a pipeline expects.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::{Value, json};

use super::classify;

/// Set once anything was written to stdout, so a later failure does not print a second
/// `--json` document.
static WROTE: AtomicBool = AtomicBool::new(false);

/// Whether this process already wrote to stdout.
pub fn wrote_stdout() -> bool {
    WROTE.load(Ordering::Relaxed)
}

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) {
    WROTE.store(true, Ordering::Relaxed);
    let mut out = std::io::stdout().lock();
    let res = writeln!(out, "{text}").and_then(|()| out.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        tracing::error!(error = %e, "cannot write to stdout");
        std::process::exit(1);
    }
}

/// Serializes `doc` (an object) with `"ok"` added.
pub(crate) fn document(doc: &impl Serialize, ok: bool) -> Value {
    let mut v =
        serde_json::to_value(doc).unwrap_or_else(|e| json!({"serialize_error": e.to_string()}));
    if let Value::Object(m) = &mut v {
        m.insert("ok".into(), Value::Bool(ok));
    }
    v
}

/// Prints the command's result: `doc` as JSON with `--json`, else `human()`. `"ok"` is
/// true: use [`emit_outcome`] for a command that exits non-zero after printing.
pub(crate) fn emit(json: bool, doc: &impl Serialize, human: impl FnOnce() -> String) {
    emit_outcome(json, doc, true, human);
}

/// As [`emit`], with `"ok"` set to `ok` — false when the exit status will be non-zero
/// (`ok` is true exactly when the exit status is 0).
pub(crate) fn emit_outcome(
    json: bool,
    doc: &impl Serialize,
    ok: bool,
    human: impl FnOnce() -> String,
) {
    if json {
        line(&document(doc, ok).to_string());
    } else {
        let text = human();
        if !text.is_empty() {
            line(text.trim_end_matches('\n'));
        }
    }
}

/// The JSON document printed for a failed command with `--json`.
pub fn error_document(err: &anyhow::Error) -> Value {
    let (kind, code) = classify(err);
    json!({"ok": false, "error": {"kind": kind, "message": format!("{err:#}"), "exit_code": code}})
}

/// The JSON document for a command line clap refused (exit 2). `message` is clap's whole
/// rendered error (what was wrong, any tip, the usage line); its leading `error: ` is
/// dropped, since the document already says it is one.
pub fn usage_document(message: &str) -> Value {
    let message = message.trim();
    let message = message.strip_prefix("error: ").unwrap_or(message);
    json!({"ok": false, "error": {"kind": "usage", "message": message, "exit_code": 2}})
}

/// The exit status for a failed command.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    classify(err).1
}

/// Formats ms since the epoch as UTC RFC 3339 with milliseconds.
pub(crate) fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Renders messages for a person: a header line per message, then the body.
pub(crate) fn messages(msgs: &[crate::store::Message]) -> String {
    let mut s = String::new();
    for m in msgs {
        let from = m.from_name.as_deref().unwrap_or(&m.from);
        s.push_str(&format!(
            "── from {from} · {} · id {}",
            time(m.created_at),
            m.id
        ));
        if let Some(t) = &m.thread {
            s.push_str(&format!(" · thread {t}"));
        }
        if m.intent == crate::store::Intent::Request {
            s.push_str(" · request");
        }
        s.push('\n');
        s.push_str(&m.text());
        s.push('\n');
    }
    s
}
