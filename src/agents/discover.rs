//! `relay discover`: find recent Claude Code, Codex, pi and OpenCode sessions from their own files.
//! Read-only: transcripts are opened for reading, at most 64 KiB each, and only after an
//! mtime check.
//!
//! - Claude Code: `<config dir>/projects/*/<session uuid>.jsonl`; lines carry `sessionId`
//!   and `cwd` (the first line that has `cwd` gives it).
//! - Codex: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`; the first line is
//!   `{"type":"session_meta","payload":{"id":…,"cwd":…}}`. Whether the shared app-server
//!   daemon holds a session (and runs a turn in it) comes from the daemon itself
//!   ([`codex_presence`]).
//! - pi: `<agent dir>/sessions/--<cwd>--/<time>_<session uuid>.jsonl`; the first line is
//!   `{"type":"session","id":…,"cwd":…}`. pi writes the file only once the model first
//!   answered, so a session nobody prompted yet is not found.
//! - OpenCode: its SQLite database (`opencode::database`), table `session`: `id`,
//!   `directory`, `time_updated`; top-level sessions only (a subagent's has a
//!   `parent_id`). Opened read-only, and only if it exists.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::{Agent, claude, codex, opencode, pi};
use crate::store::names;

/// Most bytes read from one transcript: 64 KiB.
pub const READ_CAP: u64 = 64 * 1024;

/// A session found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// Which agent wrote it.
    pub tool: Agent,
    /// The session id (a UUID).
    pub id: String,
    /// Its working directory, from the file's content.
    pub cwd: Option<String>,
    /// The transcript file.
    pub path: PathBuf,
    /// Last modified, ms since the epoch.
    pub modified_ms: i64,
    /// True when `cwd` is the directory discover ran in.
    pub same_cwd: bool,
    /// The relay endpoint name, when the session is registered.
    pub registered_as: Option<String>,
    /// True when the session is registered with relay.
    pub registered: bool,
    /// Codex sessions: what the app-server daemon of their `CODEX_HOME` says (held with or
    /// without a running turn, not held), once [`codex_presence`] asked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<super::codex_app::Presence>,
}

/// Asks the Codex app-server daemon of `codex_home` about every Codex session in
/// `sessions`, over one connection bounded by `timeout` in all, and records the answer in
/// [`Session::presence`]. Read-only: `thread/loaded/list` and `thread/read` of loaded
/// threads. Without a socket no connection is tried and every Codex session is
/// [`super::codex_app::Presence::NotHeld`].
pub fn codex_presence(sessions: &mut [Session], codex_home: &Path, timeout: Duration) {
    let ids: Vec<&str> = sessions
        .iter()
        .filter(|s| s.tool == Agent::Codex)
        .map(|s| s.id.as_str())
        .collect();
    if ids.is_empty() {
        return;
    }
    let found = super::codex_app::presences(codex_home, &ids, timeout);
    let mut found = found.into_iter();
    for s in sessions.iter_mut().filter(|s| s.tool == Agent::Codex) {
        s.presence = found.next();
    }
}

fn head(path: &Path) -> Option<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(READ_CAP)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses a Claude Code transcript head: the id must be the file's UUID stem (and agree
/// with any `sessionId` in it); `cwd` from the first line that has one.
pub fn parse_claude(stem: &str, text: &str) -> Option<(String, Option<String>)> {
    if !names::is_uuid_shaped(stem) {
        return None;
    }
    let mut cwd = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(s) = v.get("sessionId").and_then(Value::as_str)
            && s != stem
        {
            return None;
        }
        if cwd.is_none() {
            cwd = v.get("cwd").and_then(Value::as_str).map(str::to_string);
        }
        if cwd.is_some() {
            break;
        }
    }
    Some((stem.to_string(), cwd))
}

/// Parses a Codex rollout head: the first line's `session_meta` payload. A first line
/// longer than the read cap (it can carry long instructions) is cut; then `id` and `cwd`
/// are taken from the part that was read.
pub fn parse_codex(text: &str) -> Option<(String, Option<String>)> {
    let first = text.lines().next()?;
    let Ok(v) = serde_json::from_str::<Value>(first) else {
        return parse_codex_prefix(first);
    };
    if v.get("type").and_then(Value::as_str) != Some("session_meta") {
        return None;
    }
    let p = v.get("payload")?;
    let id = p.get("id")?.as_str()?;
    if !names::is_uuid_shaped(id) {
        return None;
    }
    let cwd = p.get("cwd").and_then(Value::as_str).map(str::to_string);
    Some((id.to_string(), cwd))
}

/// Parses a pi session head: the first line, `{"type":"session","id":…,"cwd":…}`, whose
/// id must be a UUID (pi's are UUIDv7).
pub fn parse_pi(text: &str) -> Option<(String, Option<String>)> {
    let v: Value = serde_json::from_str(text.lines().next()?).ok()?;
    if v.get("type").and_then(Value::as_str) != Some("session") {
        return None;
    }
    let id = v.get("id")?.as_str()?;
    if !names::is_uuid_shaped(id) {
        return None;
    }
    let cwd = v.get("cwd").and_then(Value::as_str).map(str::to_string);
    Some((id.to_string(), cwd))
}

fn parse_codex_prefix(line: &str) -> Option<(String, Option<String>)> {
    static ID: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""payload"\s*:\s*\{\s*"id"\s*:\s*"([0-9a-fA-F-]{36})""#).expect("valid")
    });
    static CWD: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""cwd"\s*:\s*("(?:[^"\\]|\\.)*")"#).expect("valid")
    });
    if !line.contains("\"session_meta\"") {
        return None;
    }
    let id = ID.captures(line)?.get(1)?.as_str().to_string();
    if !names::is_uuid_shaped(&id) {
        return None;
    }
    let cwd = CWD
        .captures(line)
        .and_then(|c| serde_json::from_str::<String>(c.get(1)?.as_str()).ok());
    Some((id, cwd))
}

/// OpenCode's top-level sessions updated at or after `since_ms`: (id, directory,
/// updated ms). Empty when there is no database or it cannot be read (logged).
fn opencode_sessions(db: &Path, since_ms: i64) -> Vec<(String, Option<String>, i64)> {
    if !db.is_file() {
        return Vec::new();
    }
    let read = || -> rusqlite::Result<Vec<(String, Option<String>, i64)>> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(500))?;
        let mut st = conn.prepare(
            "SELECT id, directory, time_updated FROM session \
             WHERE parent_id IS NULL AND time_updated >= ?1 \
             ORDER BY time_updated DESC LIMIT 1000",
        )?;
        let rows = st.query_map([since_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        rows.collect()
    };
    match read() {
        Ok(rows) => rows
            .into_iter()
            .filter(|(id, _, _)| Agent::OpenCode.session_id_shaped(id))
            .collect(),
        Err(e) => {
            tracing::warn!("reading OpenCode sessions from {}: {e}", db.display());
            Vec::new()
        }
    }
}

/// Files under `dir` (to `depth` levels) accepted by `keep`.
fn files(dir: &Path, depth: usize, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let p = e.path();
        if ft.is_dir() && depth > 0 {
            files(&p, depth - 1, keep, out);
        } else if ft.is_file() && keep(&p) {
            out.push(p);
        }
    }
}

/// Scans for sessions modified within `within`, of `tool` (or both), ranked: same
/// working directory as `here` first, then most recent.
pub fn scan(home: &Path, here: &Path, within: Duration, tool: Option<Agent>) -> Vec<Session> {
    let since = SystemTime::now()
        .checked_sub(within)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let recent = |p: &Path| modified(p).is_some_and(|m| m >= since);
    let mut out = Vec::new();
    if tool.is_none_or(|t| t == Agent::Claude) {
        let mut found = Vec::new();
        let keep = |p: &Path| p.extension().is_some_and(|e| e == "jsonl") && recent(p);
        files(&claude::projects_dir(home), 1, &keep, &mut found);
        for p in found {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some((id, cwd)) = head(&p).and_then(|t| parse_claude(&stem, &t)) {
                out.push(session(Agent::Claude, id, cwd, p, here));
            }
        }
    }
    if tool.is_none_or(|t| t == Agent::Codex) {
        let mut found = Vec::new();
        let keep = |p: &Path| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("rollout-") && n.ends_with(".jsonl")
            }) && recent(p)
        };
        files(&codex::sessions_dir(home), 3, &keep, &mut found);
        for p in found {
            if let Some((id, cwd)) = head(&p).and_then(|t| parse_codex(&t)) {
                out.push(session(Agent::Codex, id, cwd, p, here));
            }
        }
    }
    if tool.is_none_or(|t| t == Agent::Pi) {
        let mut found = Vec::new();
        let keep = |p: &Path| p.extension().is_some_and(|e| e == "jsonl") && recent(p);
        files(&pi::sessions_dir(home), 1, &keep, &mut found);
        for p in found {
            if let Some((id, cwd)) = head(&p).and_then(|t| parse_pi(&t)) {
                out.push(session(Agent::Pi, id, cwd, p, here));
            }
        }
    }
    if tool.is_none_or(|t| t == Agent::OpenCode) {
        let since_ms = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let db = opencode::database(home);
        for (id, cwd, updated) in opencode_sessions(&db, since_ms) {
            let mut s = session(Agent::OpenCode, id, cwd, db.clone(), here);
            s.modified_ms = updated;
            out.push(s);
        }
    }
    out.sort_by(|a, b| {
        b.same_cwd
            .cmp(&a.same_cwd)
            .then(b.modified_ms.cmp(&a.modified_ms))
    });
    out
}

fn session(tool: Agent, id: String, cwd: Option<String>, path: PathBuf, here: &Path) -> Session {
    let same_cwd = cwd.as_deref().is_some_and(|c| Path::new(c) == here);
    Session {
        tool,
        id,
        cwd,
        modified_ms: modified(&path).map(ms).unwrap_or(0),
        path,
        same_cwd,
        registered_as: None,
        registered: false,
        presence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190f5a2-7b3c-7def-8abc-0123456789ab";

    #[test]
    fn claude_heads_need_a_uuid_stem_and_a_matching_session_id() {
        let text = format!(
            "{{\"type\":\"summary\"}}\n{{\"type\":\"user\",\"sessionId\":\"{ID}\",\"cwd\":\"/src/app\"}}\n"
        );
        assert_eq!(
            parse_claude(ID, &text),
            Some((ID.into(), Some("/src/app".into())))
        );
        assert_eq!(parse_claude("notes", &text), None);
        let other = text.replace("0190f5a2", "ffffffff");
        assert_eq!(parse_claude(ID, &other), None);
        assert_eq!(parse_claude(ID, "not json\n"), Some((ID.into(), None)));
    }

    #[test]
    fn pi_heads_need_a_session_line_with_a_uuid() {
        let ok = format!(
            "{{\"type\":\"session\",\"version\":3,\"id\":\"{ID}\",\"timestamp\":\"t\",\"cwd\":\"/w\"}}\n{{\"type\":\"message\"}}\n"
        );
        assert_eq!(parse_pi(&ok), Some((ID.into(), Some("/w".into()))));
        assert_eq!(parse_pi(&ok.replace(ID, "../../etc")), None);
        assert_eq!(parse_pi("{\"type\":\"message\",\"id\":\"x\"}"), None);
        assert_eq!(parse_pi("not json"), None);
    }

    #[test]
    fn codex_heads_need_session_meta_with_a_uuid() {
        let ok = format!(
            "{{\"timestamp\":\"t\",\"type\":\"session_meta\",\"payload\":{{\"id\":\"{ID}\",\"cwd\":\"/w\"}}}}\n"
        );
        assert_eq!(parse_codex(&ok), Some((ID.into(), Some("/w".into()))));
        assert_eq!(parse_codex(&ok.replace(ID, "../../etc")), None);
        assert_eq!(parse_codex("{\"type\":\"response_item\"}"), None);
        assert_eq!(parse_codex(""), None);
        // A first line cut by the read cap still names its session.
        let long = format!(
            "{{\"timestamp\":\"t\",\"type\":\"session_meta\",\"payload\":{{\"id\":\"{ID}\",\"timestamp\":\"t\",\"cwd\":\"/w \\\"q\\\"\",\"instructions\":\"{}",
            "x".repeat(70_000)
        );
        let cut = &long[..60_000];
        assert_eq!(parse_codex(cut), Some((ID.into(), Some("/w \"q\"".into()))));
    }
}
