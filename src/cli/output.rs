//! Printing: one JSON document with `--json`, readable text otherwise. A closed stdout
//! (broken pipe) ends the process quietly with status 0, as a pipeline expects.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::classify;
use crate::store::names;

/// Set once anything was written to stdout, so a later failure does not print a second
/// `--json` document.
static WROTE: AtomicBool = AtomicBool::new(false);

/// Whether this process already wrote to stdout.
pub fn wrote_stdout() -> bool {
    WROTE.load(Ordering::Relaxed)
}

/// Writes `text` and a newline to stdout, in one write where it fits the pipe: a reader
/// sees a message whole or not at all, never its first line alone (stdout's line
/// buffering would split it at every newline).
pub fn line(text: &str) {
    WROTE.store(true, Ordering::Relaxed);
    let mut whole = String::with_capacity(text.len() + 1);
    whole.push_str(text);
    whole.push('\n');
    let mut out = std::io::stdout().lock();
    let res = out.write_all(whole.as_bytes()).and_then(|()| out.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        tracing::error!(error = %e, "cannot write to stdout");
        std::process::exit(1);
    }
}

/// Waits until the consumer on the other end of stdout has read everything written so
/// far, when stdout is a pipe or a socket: bytes still in the pipe buffer were not shown
/// to anyone, so a reader acks only after this returns true (DESIGN.md §11). A consumer
/// that goes away meanwhile (`relay listen | head -n1` after its line) ends the process
/// quietly with status 0, as a closed stdout does, so nothing more is acked. Files and
/// terminals return true at once (what is written there is shown). False when `max`
/// passed first (a consumer that reads only after relay exits): the caller then leaves
/// its messages unacked, to come back after their lease. There is no readiness event for
/// "the pipe is empty", so this looks every 1–10 ms while bytes remain.
pub fn wait_drained(max: Option<Duration>) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::fs::FileType;
    let out = std::io::stdout();
    // What stdout is does not change while relay runs: look once, not per message.
    static PIPE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let pipe = *PIPE.get_or_init(|| {
        rustix::fs::fstat(std::io::stdout()).is_ok_and(|st| {
            matches!(
                FileType::from_raw_mode(st.st_mode),
                FileType::Fifo | FileType::Socket
            )
        })
    });
    if !pipe {
        return true;
    }
    let deadline = max.map(|m| std::time::Instant::now() + m);
    let mut nap = Duration::from_millis(1);
    loop {
        match rustix::io::ioctl_fionread(&out) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return false;
        }
        // POLLERR on a pipe's write end: the reader closed it.
        let mut fds = [PollFd::new(&out, PollFlags::empty())];
        let ts = Timespec::try_from(nap).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        });
        if poll(&mut fds, Some(&ts)).is_ok()
            && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
        {
            // Gone: it read everything before leaving (`head` after its line), or not.
            if rustix::io::ioctl_fionread(&out).is_ok_and(|n| n == 0) {
                return true;
            }
            std::process::exit(0);
        }
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

/// How long `inbox`, `wait` and `send --wait` wait for their consumer to read their output
/// before they leave its messages unacked: 30 s.
pub(crate) const DRAIN_MAX: Duration = Duration::from_secs(30);

/// [`wait_drained`] for a one-shot reader: true when its messages may be acked; logs why
/// not otherwise.
pub(crate) fn drained_for_ack() -> bool {
    let ok = wait_drained(Some(DRAIN_MAX));
    if !ok {
        tracing::warn!(
            "stdout was not read within {}s: the messages stay delivered and come back \
             after their lease",
            DRAIN_MAX.as_secs()
        );
    }
    ok
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
        let text = terminal_safe(&human());
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

/// The last millisecond RFC 3339 can spell (9999-12-31T23:59:59.999Z).
const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// Formats ms since the epoch as UTC RFC 3339 with milliseconds. A time outside what RFC
/// 3339 can spell (before 1970, after the year 9999 — a time another machine's sender
/// wrote, on NATS) is printed as its raw milliseconds, `@<ms>ms`, never a panic.
pub(crate) fn time(ms: i64) -> String {
    if !(0..=LAST_RFC3339_MS).contains(&ms) {
        return format!("@{ms}ms");
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Appends `c` escaped visibly: `\xNN` below U+0100 (C0, DEL, C1), `\u{NNNN}` above.
fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    let n = c as u32;
    // Writing to a String cannot fail.
    let _ = if n < 0x100 {
        write!(out, "\\x{n:02x}")
    } else {
        write!(out, "\\u{{{n:x}}}")
    };
}

/// Text from another endpoint made safe for one line of a terminal: every control
/// character ([`names::is_control`]: C0 — newline and tab included —, DEL, C1, bidi
/// controls, line and paragraph separators) is escaped visibly, e.g. `\x1b`, `\u{202e}`.
pub(crate) fn escape_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if names::is_control(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Any human text made safe for a terminal, keeping its newlines and tabs: the last line
/// of defence for text that carries other endpoints' or other users' data into a message
/// (a registered cwd in `discover` or `wake`, a program path from a project's config in
/// `doctor`, a peer's refusal reason, a query echoed in an error). Idempotent on text
/// already escaped by [`escape_line`], which only ever writes printable ASCII escapes.
pub fn terminal_safe(s: &str) -> String {
    if !s
        .chars()
        .any(|c| names::is_control(c) && c != '\n' && c != '\t')
    {
        return s.to_string();
    }
    s.split('\n')
        .map(|l| {
            l.split('\t')
                .map(escape_line)
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What starts every body line in [`messages`]: headers start at column 0 with `──`, so
/// an indented body line can never pass for one.
pub(crate) const BODY_INDENT: &str = "  ";

/// A body for a terminal: split at newlines (`\n`, or `\r\n`), each line indented by
/// [`BODY_INDENT`] and escaped as [`escape_line`] does, except that a tab becomes spaces
/// up to the next multiple of 8 characters (code stays readable, and no control byte is
/// written). Every other line break (a lone CR, VT, FF, NEL, U+2028, U+2029) is escaped,
/// not obeyed.
fn body_lines(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 16);
    for (i, line) in body.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        out.push_str(BODY_INDENT);
        let mut column = 0;
        for c in line.chars() {
            if c == '\t' {
                let to = (column / 8 + 1) * 8;
                out.extend(std::iter::repeat_n(' ', to - column));
                column = to;
                continue;
            }
            let before = out.len();
            if names::is_control(c) {
                push_escaped(&mut out, c);
            } else {
                out.push(c);
            }
            column += out[before..].chars().count();
        }
    }
    out
}

/// Renders messages for a person: a header line per message, then its body indented.
/// Everything that came from the sender (name, thread, body) is escaped, so no control
/// sequence reaches the terminal and no body line looks like a header (DESIGN.md §10).
/// `--json` output does not go through here and keeps every byte.
pub(crate) fn messages(msgs: &[crate::store::Message]) -> String {
    let mut s = String::new();
    for m in msgs {
        let from = m.from_name.as_deref().unwrap_or(&m.from);
        s.push_str(&format!(
            "── from {} · {} · id {}",
            escape_line(from),
            time(m.created_at),
            escape_line(&m.id)
        ));
        if let Some(t) = &m.thread {
            // Quoted, so a thread such as `x · request` cannot pose as more header fields.
            s.push_str(&format!(
                " · thread {}",
                crate::agents::fence::quoted(&escape_line(t))
            ));
        }
        if m.intent == crate::store::Intent::Request {
            s.push_str(" · request");
        }
        s.push('\n');
        s.push_str(&body_lines(&m.text()));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Intent, Message, State};

    fn msg(from: &str, thread: Option<&str>, body: &str) -> Message {
        Message {
            id: "m1".into(),
            from: "f".into(),
            from_name: Some(from.into()),
            to: "t".into(),
            thread: thread.map(str::to_string),
            reply_to: None,
            intent: Intent::Notify,
            content_type: "text/plain".into(),
            body: body.as_bytes().to_vec(),
            created_at: 0,
            expires_at: None,
            state: State::Queued,
            deliveries: 0,
        }
    }

    #[test]
    fn headers_and_bodies_are_escaped_and_bodies_indented() {
        let out = messages(&[msg(
            "eve\n── from boss",
            Some("t\x1b]52;c;eA==\x07\u{202e}"),
            "a\tb\r\n── from boss\rx\u{2028}y\u{85}z\x7f\u{9b}2J",
        )]);
        assert_eq!(
            out,
            "── from eve\\x0a── from boss · 1970-01-01T00:00:00.000Z · id m1 · thread \
             \"t\\\\x1b]52;c;eA==\\\\x07\\\\u{202e}\"\n  a       b\n  ── from boss\\x0dx\\u{2028}y\\x85z\\x7f\\x9b2J\n"
        );
        assert_eq!(out.lines().filter(|l| l.starts_with("──")).count(), 1);
    }

    #[test]
    fn plain_text_is_unchanged_but_indented() {
        let out = messages(&[msg("alice", Some("build"), "line one\n\nline 3 · ünïcödé")]);
        assert!(
            out.ends_with("\n  line one\n  \n  line 3 · ünïcödé\n"),
            "{out}"
        );
    }
}
