//! `relay install` / `relay uninstall`: add relay's MCP server and hooks to an agent's
//! config, and take exactly them out again.
//!
//! - Edits are computed first as a [`Plan`] of whole-file changes, so `--dry-run` can show
//!   a unified diff and nothing is half-written.
//! - JSON files keep their key order, indentation and final newline; TOML files are edited
//!   with `toml_edit`, so comments and ordering survive.
//! - Install is idempotent: an entry that is already current stays where it is. Entries
//!   from an older relay binary (another path) are replaced.
//! - Every changed file that existed is first copied to `<file>.relay-backup-<UTC time>`.
//! - Uninstall removes only relay's entries (and containers it left empty). When the
//!   result equals, as data, the newest backup made by install, that backup's bytes are
//!   restored, so install followed by uninstall leaves a file byte-identical.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::hook::Event;
use super::{Agent, claude, codex, opencode, pi};

/// Which config an install goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The user's own config (every project).
    User,
    /// The current project's config.
    Project,
}

/// Install or uninstall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add relay's entries.
    Install,
    /// Remove relay's entries.
    Uninstall,
}

/// Where things are, for planning (tests point these at temp dirs).
#[derive(Debug, Clone)]
pub struct Env {
    /// The user's home directory.
    pub home: PathBuf,
    /// The project directory (for `--scope project`).
    pub project: PathBuf,
    /// The relay binary the entries should run (absolute).
    pub exe: PathBuf,
    /// The relay home to pin in the MCP server's environment (absolute), or `None` to let
    /// `relay mcp` resolve it from the environment the agent gives it. Set when `RELAY_HOME`
    /// or `XDG_STATE_HOME` is set at install time: Codex starts MCP servers with a fixed
    /// environment allowlist from a long-lived app-server daemon, which keeps the
    /// environment it started with, so `relay mcp` would otherwise use another home than
    /// the shell that installed it.
    pub relay_home: Option<PathBuf>,
}

/// The environment variables relay reads that Codex must pass to `relay mcp`
/// (`env_vars` of `[mcp_servers.relay]`; Codex passes only HOME, LOGNAME, PATH, SHELL,
/// USER, LANG, LC_ALL, TERM, TMPDIR, TZ and these). `RELAY_HOME`/`XDG_STATE_HOME`: where
/// the store is; `RELAY_RUNTIME_DIR`/`XDG_RUNTIME_DIR`: where live endpoints' sockets are
/// (without them, sends to a live listener fall back to its mailbox); `RELAY_DURABILITY`,
/// `RELAY_MAX_BODY`, `RELAY_LOG`: settings. Not `RELAY_AS`: the server is a child of the
/// app-server daemon every Codex session shares, so a `RELAY_AS` from the shell that
/// started the daemon would make every session the same endpoint.
pub const CODEX_ENV_VARS: [&str; 7] = [
    "RELAY_HOME",
    "XDG_STATE_HOME",
    "RELAY_RUNTIME_DIR",
    "XDG_RUNTIME_DIR",
    "RELAY_DURABILITY",
    "RELAY_MAX_BODY",
    "RELAY_LOG",
];

/// The `RELAY_HOME` to pin at install time (see [`Env::relay_home`]): `Some(home)` when
/// `relay_home_var` (`$RELAY_HOME`) or `xdg_state_home` (`$XDG_STATE_HOME`) is set and
/// non-empty, made absolute against `cwd`; `None` when relay would use its default
/// (`$HOME/.local/state/relay`, which Codex's allowlist passes through as HOME).
pub fn pinned_home(
    relay_home_var: Option<&std::ffi::OsStr>,
    xdg_state_home: Option<&std::ffi::OsStr>,
    cwd: &Path,
) -> Option<PathBuf> {
    let home = match relay_home_var.filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(xdg_state_home.filter(|v| !v.is_empty())?).join("relay"),
    };
    Some(if home.is_absolute() {
        home
    } else {
        cwd.join(home)
    })
}

/// One file's change.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// What it is, e.g. "Claude Code hooks".
    pub what: &'static str,
    /// Contents now (`None`: the file does not exist).
    pub before: Option<String>,
    /// Contents after (`None`: delete the file).
    pub after: Option<String>,
}

impl FileChange {
    /// True when the plan leaves the file as it is.
    pub fn unchanged(&self) -> bool {
        self.before == self.after
    }
}

/// Every file change of one install or uninstall.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The changes, one per file.
    pub files: Vec<FileChange>,
    /// Things the user must know or do (printed after applying).
    pub notes: Vec<String>,
}

/// What happened to one file.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The file.
    pub path: PathBuf,
    /// What it is.
    pub what: &'static str,
    /// `created`, `updated`, `deleted` or `unchanged`.
    pub action: &'static str,
    /// The backup taken first, if any.
    pub backup: Option<PathBuf>,
}

/// An install or uninstall that cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file is not valid JSON/TOML. Nothing was changed.
    #[error(
        "{path} is not valid {format}: {reason}; fix or move it, then run again (nothing was changed)"
    )]
    Unparsable {
        /// The file.
        path: PathBuf,
        /// `JSON` or `TOML`.
        format: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A config's top level, or a part relay edits, has the wrong type (`what` says which
    /// part and what was expected).
    #[error("{path}: {what}; fix the file, then run again (nothing was changed)")]
    Shape {
        /// The file.
        path: PathBuf,
        /// Which part.
        what: String,
    },
    /// An MCP server named `relay` exists and is not relay.
    #[error(
        "{path} already has an MCP server named 'relay' that runs {command:?}, not relay; rename or remove it first"
    )]
    NameClash {
        /// The file.
        path: PathBuf,
        /// What it runs.
        command: String,
    },
    /// A file relay would write is there and is not relay's (another program's, or relay's
    /// own edited by hand). Nothing was changed.
    #[error(
        "{path} exists and is not the {what} relay writes (its first line is not relay's); move it away, then run again (nothing was changed)"
    )]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// What relay would have written there.
        what: &'static str,
    },
    /// relay's pi extension is installed at the other scope already: pi would load both,
    /// and refuses to start when two extensions register the same tools. Nothing was
    /// changed.
    #[error(
        "relay's pi extension is already installed at {path}; pi would load both and refuse to start (two extensions with the same tools): uninstall that one first (relay uninstall pi --scope {scope}), or keep it (nothing was changed)"
    )]
    OtherScope {
        /// The installed extension.
        path: PathBuf,
        /// Its scope, as `--scope` spells it.
        scope: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
}

fn read(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::Io {
            path: path.to_path_buf(),
            err,
        }),
    }
}

/// Quotes a path for the shell that runs a hook command, only when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The hook command relay installs for `agent` and `event`.
pub fn hook_command(exe: &Path, agent: Agent, event: Event) -> String {
    format!(
        "{} hook {} {}",
        shell_quote(&exe.to_string_lossy()),
        agent.name(),
        event.arg()
    )
}

/// Splits a hook command into its program (undoing [`shell_quote`]) and the rest.
fn split_program(command: &str) -> Option<(String, &str)> {
    let command = command.trim();
    if command.starts_with('\'') {
        let mut program = String::new();
        let mut rest = command;
        while let Some(q) = rest.strip_prefix('\'') {
            let end = q.find('\'')?;
            program.push_str(&q[..end]);
            rest = &q[end + 1..];
            match rest.strip_prefix("\\'") {
                Some(r) => {
                    program.push('\'');
                    rest = r;
                }
                None => break,
            }
        }
        Some((program, rest))
    } else {
        let (p, r) = command.split_once(' ').unwrap_or((command, ""));
        Some((p.to_string(), r))
    }
}

/// The relay programs `agent`'s config at `scope` points at (MCP server and hooks), as
/// written there; empty when nothing of relay's is installed.
pub fn installed_programs(agent: Agent, scope: Scope, env: &Env) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let json = |p: PathBuf| {
        read(&p)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    };
    let (mcp_cmd, hooks) = match agent {
        Agent::Claude => (
            json(claude::mcp_path(scope, &env.home, &env.project)).and_then(|v| {
                v["mcpServers"]["relay"]["command"]
                    .as_str()
                    .map(PathBuf::from)
            }),
            json(claude::settings_path(scope, &env.home, &env.project)),
        ),
        Agent::OpenCode => {
            out.extend(
                json(opencode::config_path(scope, &env.home, &env.project))
                    .and_then(|v| v["mcp"]["relay"]["command"][0].as_str().map(PathBuf::from)),
            );
            out.extend(
                read(&opencode::plugin_path(scope, &env.home, &env.project))
                    .ok()
                    .flatten()
                    .and_then(|t| opencode::relay_of(&t)),
            );
            out.sort();
            out.dedup();
            return out;
        }
        Agent::Pi => {
            return read(&pi::extension_path(scope, &env.home, &env.project))
                .ok()
                .flatten()
                .and_then(|t| pi::relay_of(&t))
                .into_iter()
                .collect();
        }
        Agent::Codex => (
            read(&codex::config_path(scope, &env.home, &env.project))
                .ok()
                .flatten()
                .and_then(|t| t.parse::<toml_edit::DocumentMut>().ok())
                .and_then(|d| {
                    d.get("mcp_servers")?
                        .get("relay")?
                        .get("command")?
                        .as_str()
                        .map(PathBuf::from)
                }),
            json(codex::hooks_path(scope, &env.home, &env.project)),
        ),
    };
    out.extend(mcp_cmd);
    if let Some(h) = hooks {
        for event in Event::ALL {
            for g in h["hooks"][event.hook_event_name()]
                .as_array()
                .into_iter()
                .flatten()
            {
                for hk in g["hooks"].as_array().into_iter().flatten() {
                    if let Some(c) = hk["command"].as_str()
                        && is_relay_hook(c, agent, event, &env.exe)
                        && let Some((p, _)) = split_program(c)
                    {
                        out.push(PathBuf::from(p));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `command` is a relay hook for `agent`/`event` from any relay binary: the
/// program's file name is `relay` (or it is `exe`, whatever its name), and the arguments are
/// exactly `hook <agent> <event>`.
pub fn is_relay_hook(command: &str, agent: Agent, event: Event, exe: &Path) -> bool {
    let Some((program, rest)) = split_program(command) else {
        return false;
    };
    let program = program.as_str();
    if Path::new(program) == exe {
        let args: Vec<&str> = rest.split_whitespace().collect();
        return args == ["hook", agent.name(), event.arg()];
    }
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<&str> = rest.split_whitespace().collect();
    name == "relay" && args == ["hook", agent.name(), event.arg()]
}

// ---- JSON editing, keeping the file's own layout ----

struct JsonLayout {
    indent: String,
    final_newline: bool,
}

fn layout(text: &str) -> JsonLayout {
    let indent = text
        .lines()
        .skip(1)
        .find(|l| !l.trim().is_empty())
        .map(|l| {
            l.chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect::<String>()
        })
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| "  ".into());
    JsonLayout {
        indent,
        final_newline: text.is_empty() || text.ends_with('\n'),
    }
}

fn to_text(v: &Value, l: &JsonLayout) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(l.indent.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser).expect("a Value always serializes");
    let mut s = String::from_utf8(buf).expect("serde_json writes UTF-8");
    if l.final_newline {
        s.push('\n');
    }
    s
}

// ---- Splicing: change only the bytes of what changed ----
//
// Re-serialising a whole file would rewrite every number the way serde_json prints it
// (`0.000001` becomes `1e-6`, `1.7976931348623157e308` gains a `+`), and ~/.claude.json
// is Claude Code's own file full of them. So an edit is applied to the original text:
// members added or removed, and values that changed replaced, each at its own place; the
// rest of the file keeps its bytes. The result is checked to parse to the edited value;
// if it does not, the whole file is serialised instead.

/// One member of a JSON object in a text: byte offsets of its key's opening quote and of
/// its value's start and end.
struct Member {
    key: String,
    key_start: usize,
    value_start: usize,
    value_end: usize,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the string starting at `b[i] == b'"'`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end of the value starting at `b[i]` (which is not whitespace).
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The members of the object whose `{` is at `text[start]`.
fn members(text: &str, start: usize) -> Option<Vec<Member>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_ws(b, start + 1);
    if b.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        let key_start = i;
        let key_end = string_end(b, i)?;
        let key: String = serde_json::from_str(&text[key_start..key_end]).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(b, i + 1);
        let end = value_end(b, value_start)?;
        out.push(Member {
            key,
            key_start,
            value_start,
            value_end: end,
        });
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some(out),
            _ => return None,
        }
    }
}

/// `v` pretty-printed with `l`'s indent, as it would sit at nesting `depth`.
fn pretty_at(v: &Value, l: &JsonLayout, depth: usize) -> String {
    let flat = JsonLayout {
        indent: l.indent.clone(),
        final_newline: false,
    };
    to_text(v, &flat).replace('\n', &format!("\n{}", l.indent.repeat(depth)))
}

/// Collects the edits (byte range → replacement) that turn the value `old` at
/// `text[start..end]` (nesting `depth`) into `new`.
fn splice_edits(
    text: &str,
    (start, end): (usize, usize),
    old: &Value,
    new: &Value,
    depth: usize,
    l: &JsonLayout,
    edits: &mut Vec<(usize, usize, String)>,
) -> Option<()> {
    if old == new {
        return Some(());
    }
    let whole = |edits: &mut Vec<(usize, usize, String)>| {
        edits.push((start, end, pretty_at(new, l, depth)));
        Some(())
    };
    let (Value::Object(o), Value::Object(n)) = (old, new) else {
        return whole(edits);
    };
    let ms = members(text, start)?;
    if ms.len() != o.len() || o.is_empty() || n.is_empty() {
        return whole(edits); // duplicate keys, or nothing to keep: write it whole
    }
    let kept: Vec<&Member> = ms.iter().filter(|m| n.contains_key(&m.key)).collect();
    let added: Vec<(&String, &Value)> = n.iter().filter(|(k, _)| !o.contains_key(*k)).collect();
    let same_order = kept
        .iter()
        .map(|m| &m.key)
        .eq(n.keys().filter(|k| o.contains_key(*k)));
    let removed = kept.len() < ms.len();
    if !same_order || kept.is_empty() || (removed && !added.is_empty()) {
        return whole(edits);
    }
    for m in &kept {
        splice_edits(
            text,
            (m.value_start, m.value_end),
            &o[&m.key],
            &n[&m.key],
            depth + 1,
            l,
            edits,
        )?;
    }
    if removed {
        let first_kept = ms.iter().position(|m| n.contains_key(&m.key))?;
        if first_kept > 0 {
            edits.push((ms[0].key_start, ms[first_kept].key_start, String::new()));
        }
        for i in first_kept + 1..ms.len() {
            if !n.contains_key(&ms[i].key) {
                edits.push((ms[i - 1].value_end, ms[i].value_end, String::new()));
            }
        }
    }
    if !added.is_empty() {
        let at = ms.last()?.value_end;
        let mut ins = String::new();
        for (k, v) in added {
            ins.push_str(&format!(
                ",\n{}{}: {}",
                l.indent.repeat(depth + 1),
                Value::String(k.clone()),
                pretty_at(v, l, depth + 1)
            ));
        }
        edits.push((at, at, ins));
    }
    Some(())
}

/// `text` (which parses to `old`) edited in place to hold `new`, changing only the bytes
/// of what differs; `None` when that cannot be done faithfully.
fn splice(text: &str, old: &Value, new: &Value, l: &JsonLayout) -> Option<String> {
    let start = skip_ws(text.as_bytes(), 0);
    let end = value_end(text.as_bytes(), start)?;
    let mut edits = Vec::new();
    splice_edits(text, (start, end), old, new, 0, l, &mut edits)?;
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_string();
    for (a, b, rep) in edits {
        out.replace_range(a..b, &rep);
    }
    (serde_json::from_str::<Value>(&out).ok()? == *new).then_some(out)
}

fn parse_json(path: &Path, text: Option<&str>) -> Result<Value, Error> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(Value::Object(Map::new())),
        Some(t) => {
            let v: Value = serde_json::from_str(t).map_err(|e| Error::Unparsable {
                path: path.to_path_buf(),
                format: "JSON",
                reason: e.to_string(),
            })?;
            if !v.is_object() {
                return Err(Error::Shape {
                    path: path.to_path_buf(),
                    what: "the top level is not a JSON object".into(),
                });
            }
            Ok(v)
        }
    }
}

/// `root[key]` as an object, created if missing.
fn object_at<'a>(
    root: &'a mut Value,
    key: &str,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, Error> {
    let obj = root.as_object_mut().expect("checked to be an object");
    let entry = obj.entry(key.to_string()).or_insert_with(|| json!({}));
    entry.as_object_mut().ok_or_else(|| Error::Shape {
        path: path.to_path_buf(),
        what: format!("\"{key}\" is not a JSON object"),
    })
}

fn drop_if_empty(root: &mut Value, key: &str) {
    if let Some(obj) = root.as_object_mut()
        && obj
            .get(key)
            .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    {
        obj.shift_remove(key);
    }
}

/// Adds or removes relay's three hooks in a hooks JSON document (Claude Code settings or
/// Codex hooks.json; same shape).
fn edit_hooks(
    root: &mut Value,
    path: &Path,
    env: &Env,
    agent: Agent,
    action: Action,
) -> Result<(), Error> {
    let hooks = object_at(root, "hooks", path)?;
    for event in Event::ALL {
        let name = event.hook_event_name();
        let install = action == Action::Install && Event::installed(agent).contains(&event);
        let mut entry = Map::new();
        entry.insert("type".into(), json!("command"));
        entry.insert(
            "command".into(),
            json!(hook_command(&env.exe, agent, event)),
        );
        entry.extend(event.entry_options());
        let wanted = json!({"hooks": [Value::Object(entry)]});
        let Some(groups) = hooks.get_mut(name) else {
            if install {
                hooks.insert(name.to_string(), json!([wanted]));
            }
            continue;
        };
        let Some(list) = groups.as_array_mut() else {
            return Err(Error::Shape {
                path: path.to_path_buf(),
                what: format!("hooks.{name} is not a JSON array"),
            });
        };
        let command_of = |g: &Value| -> Option<String> {
            let hs = g.get("hooks")?.as_array()?;
            match hs.as_slice() {
                [h] => h.get("command")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        // An entry that is already exactly what this binary installs stays where it is.
        let keep_at = if install {
            list.iter().position(|g| *g == wanted)
        } else {
            None
        };
        let mut i = 0;
        list.retain(|g| {
            let ours = command_of(g).is_some_and(|c| is_relay_hook(&c, agent, event, &env.exe));
            let keep = !ours || Some(i) == keep_at;
            i += 1;
            keep
        });
        if install && keep_at.is_none() {
            list.push(wanted);
        }
        if list.is_empty() {
            hooks.shift_remove(name);
        }
    }
    drop_if_empty(root, "hooks");
    Ok(())
}

/// Adds or removes `mcpServers.relay` in a Claude Code MCP JSON file.
fn edit_mcp_json(root: &mut Value, path: &Path, env: &Env, action: Action) -> Result<(), Error> {
    let servers = object_at(root, "mcpServers", path)?;
    if let Some(existing) = servers.get("relay") {
        let command = existing
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or("");
        if Path::new(command).file_name().is_none_or(|n| n != "relay") {
            return Err(Error::NameClash {
                path: path.to_path_buf(),
                command: command.to_string(),
            });
        }
    }
    // The entry's env keeps what the user added; RELAY_HOME is relay's, pinned or not.
    let mut mcp_env = servers
        .get("relay")
        .and_then(|r| r.get("env"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match &env.relay_home {
        Some(h) => {
            mcp_env.insert("RELAY_HOME".into(), json!(h.to_string_lossy()));
        }
        None => {
            mcp_env.shift_remove("RELAY_HOME");
        }
    }
    // relay's keys are set; any other key of an existing entry (a `timeout`, say) is the
    // user's and stays, in its place.
    let mut wanted = servers
        .get("relay")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in [
        ("type", json!("stdio")),
        ("command", json!(env.exe.to_string_lossy())),
        ("args", json!(["mcp"])),
        ("env", Value::Object(mcp_env)),
    ] {
        wanted.insert(k.into(), v);
    }
    let wanted = Value::Object(wanted);
    match action {
        Action::Install => {
            if servers.get("relay") != Some(&wanted) {
                servers.insert("relay".into(), wanted);
            }
        }
        Action::Uninstall => {
            servers.shift_remove("relay");
        }
    }
    drop_if_empty(root, "mcpServers");
    Ok(())
}

/// Adds or removes `mcp.relay` in an OpenCode `opencode.json`: `{"type": "local",
/// "command": [<relay>, "mcp"], "enabled": true, "timeout": <ms>}` plus
/// `environment.RELAY_HOME` when pinned ([`Env::relay_home`]). Other keys of the entry and
/// other `environment` keys are the user's and stay. An entry named `relay` that does not
/// run a relay binary's `mcp` is never touched ([`Error::NameClash`]).
fn edit_opencode_json(
    root: &mut Value,
    path: &Path,
    env: &Env,
    action: Action,
) -> Result<(), Error> {
    let servers = object_at(root, "mcp", path)?;
    if let Some(existing) = servers.get("relay") {
        let command: Vec<&str> = existing
            .get("command")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let relays = matches!(command.as_slice(), [program, "mcp", ..]
            if Path::new(program).file_name().is_some_and(|n| n == "relay")
                || Path::new(program) == env.exe);
        if !relays {
            return Err(Error::NameClash {
                path: path.to_path_buf(),
                command: command.join(" "),
            });
        }
    }
    let mut mcp_env = servers
        .get("relay")
        .and_then(|r| r.get("environment"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match &env.relay_home {
        Some(h) => {
            mcp_env.insert("RELAY_HOME".into(), json!(h.to_string_lossy()));
        }
        None => {
            mcp_env.shift_remove("RELAY_HOME");
        }
    }
    let mut wanted = servers
        .get("relay")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in [
        ("type", json!("local")),
        ("command", json!([env.exe.to_string_lossy(), "mcp"])),
        ("enabled", json!(true)),
        ("timeout", json!(opencode::MCP_TIMEOUT_MS)),
    ] {
        wanted.insert(k.into(), v);
    }
    if mcp_env.is_empty() {
        wanted.shift_remove("environment");
    } else {
        wanted.insert("environment".into(), Value::Object(mcp_env));
    }
    let wanted = Value::Object(wanted);
    match action {
        Action::Install => {
            if servers.get("relay") != Some(&wanted) {
                servers.insert("relay".into(), wanted);
            }
        }
        Action::Uninstall => {
            servers.shift_remove("relay");
        }
    }
    drop_if_empty(root, "mcp");
    Ok(())
}

/// Adds or removes `[mcp_servers.relay]` in a Codex config.toml: `command`, `args`,
/// `env_vars` ([`CODEX_ENV_VARS`]) and `env.RELAY_HOME` ([`Env::relay_home`]) are relay's;
/// other keys of the table (e.g. `tool_timeout_sec`) and other `env` keys are the user's
/// and stay. Only keys whose value differs are written, so an install over a current
/// entry changes no byte. Uninstall removes the table and the `[hooks.state."<key>"]`
/// trust tables named in `trust_keys` (relay's hooks, see [`codex_trust_keys`]). Either
/// way, the trust of the user's own hooks follows them when relay's edit moved them to
/// another position (`trust_moves`, see [`codex_trust_moves`]).
fn edit_codex_toml(
    text: Option<&str>,
    path: &Path,
    env: &Env,
    action: Action,
    trust_keys: &[String],
    trust_moves: &[(String, String)],
) -> Result<Option<String>, Error> {
    use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value as TomlValue, value};
    let mut doc: DocumentMut = text
        .unwrap_or("")
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::Unparsable {
            path: path.to_path_buf(),
            format: "TOML",
            reason: e.to_string(),
        })?;
    let exe = env.exe.to_string_lossy().into_owned();
    if let Some(existing) = doc.get("mcp_servers").and_then(|s| s.get("relay")) {
        let command = existing.get("command").and_then(Item::as_str).unwrap_or("");
        if Path::new(command) != env.exe
            && Path::new(command).file_name().is_none_or(|n| n != "relay")
        {
            return Err(Error::NameClash {
                path: path.to_path_buf(),
                command: command.to_string(),
            });
        }
    }
    let shape = |what: &str| Error::Shape {
        path: path.to_path_buf(),
        what: what.into(),
    };
    match action {
        Action::Install => {
            let servers = doc
                .entry("mcp_servers")
                .or_insert_with(|| {
                    let mut t = Table::new();
                    t.set_implicit(true);
                    Item::Table(t)
                })
                .as_table_mut()
                .ok_or_else(|| {
                    shape(
                        "mcp_servers is not a TOML table (relay edits [mcp_servers.NAME] \
                         tables, not an inline `mcp_servers = { … }`)",
                    )
                })?;
            if !servers.get("relay").is_some_and(Item::is_table) {
                servers.insert("relay", Item::Table(Table::new()));
            }
            let t = servers
                .get_mut("relay")
                .and_then(Item::as_table_mut)
                .expect("just made a table");
            if t.get("command").and_then(Item::as_str) != Some(exe.as_str()) {
                t.insert("command", value(exe));
            }
            let strings = |a: &Array| a.iter().map(|v| v.as_str().map(str::to_string)).collect();
            let set_array = |t: &mut Table, key: &str, want: &[&str]| {
                let have: Option<Vec<Option<String>>> =
                    t.get(key).and_then(Item::as_array).map(strings);
                let want_v: Vec<Option<String>> =
                    want.iter().map(|s| Some((*s).to_string())).collect();
                if have.as_ref() != Some(&want_v) {
                    t.insert(key, value(want.iter().copied().collect::<Array>()));
                }
            };
            set_array(t, "args", &["mcp"]);
            set_array(t, "env_vars", &CODEX_ENV_VARS);
            let pinned = env
                .relay_home
                .as_ref()
                .map(|h| h.to_string_lossy().into_owned());
            let have = t
                .get("env")
                .and_then(|e| e.get("RELAY_HOME"))
                .and_then(Item::as_str)
                .map(str::to_string);
            if have != pinned {
                match pinned {
                    Some(h) => match t.get_mut("env") {
                        Some(Item::Table(e)) => {
                            e.insert("RELAY_HOME", value(h));
                        }
                        Some(Item::Value(TomlValue::InlineTable(e))) => {
                            e.insert("RELAY_HOME", h.into());
                        }
                        Some(_) => return Err(shape("mcp_servers.relay.env is not a TOML table")),
                        None => {
                            let mut e = InlineTable::new();
                            e.insert("RELAY_HOME", h.into());
                            t.insert("env", value(e));
                        }
                    },
                    None => {
                        let empty = match t.get_mut("env") {
                            Some(Item::Table(e)) => {
                                e.remove("RELAY_HOME");
                                e.is_empty()
                            }
                            Some(Item::Value(TomlValue::InlineTable(e))) => {
                                e.remove("RELAY_HOME");
                                e.is_empty()
                            }
                            _ => false,
                        };
                        if empty {
                            t.remove("env");
                        }
                    }
                }
            }
        }
        Action::Uninstall => {
            if let Some(servers) = doc.get_mut("mcp_servers").and_then(Item::as_table_mut) {
                servers.remove("relay");
                if servers.is_empty() {
                    doc.remove("mcp_servers");
                }
            }
            remove_trust(&mut doc, trust_keys);
        }
    }
    move_trust(&mut doc, trust_moves);
    let mut out = doc.to_string();
    if let Some(t) = text {
        // toml_edit writes LF: an edit that changed nothing keeps the file's own bytes,
        // and a file written with CRLF keeps CRLF.
        if t.parse::<DocumentMut>().is_ok_and(|d| d.to_string() == out) {
            return Ok(Some(t.to_string()));
        }
        if t.contains("\r\n") {
            out = out.replace("\r\n", "\n").replace('\n', "\r\n");
        }
    }
    Ok(if out.is_empty() && text.is_none() {
        None
    } else {
        Some(out)
    })
}

/// Removes `[hooks.state."<key>"]` for each of `keys`, then `hooks.state` and `hooks` if
/// that left them empty.
fn remove_trust(doc: &mut toml_edit::DocumentMut, keys: &[String]) {
    use toml_edit::Item;
    let Some(hooks) = doc.get_mut("hooks").and_then(Item::as_table_like_mut) else {
        return;
    };
    if let Some(state) = hooks.get_mut("state").and_then(Item::as_table_like_mut) {
        for k in keys {
            state.remove(k);
        }
        if state.is_empty() {
            hooks.remove("state");
        }
    }
    if hooks.is_empty() {
        doc.remove("hooks");
    }
}

/// Renames `[hooks.state."<old>"]` to `"<new>"` for each move. All moved tables are taken
/// out first and put back under their new keys, so moves that chain (1→0 while 2→1) never
/// overwrite each other.
fn move_trust(doc: &mut toml_edit::DocumentMut, moves: &[(String, String)]) {
    use toml_edit::Item;
    let Some(state) = doc
        .get_mut("hooks")
        .and_then(|h| h.get_mut("state"))
        .and_then(Item::as_table_like_mut)
    else {
        return;
    };
    let taken: Vec<(String, Item)> = moves
        .iter()
        .filter_map(|(old, new)| Some((new.clone(), state.remove(old)?)))
        .collect();
    for (new, item) in taken {
        state.insert(&new, item);
    }
}

/// How the trust keys of the user's own Codex hooks move when relay's edit of hooks.json
/// (`before` → `after`, parsed) shifts their groups: Codex keys trust by position
/// (`<path>:<event>:<group>:<handler>`), so removing relay's group before a user's group
/// would leave that user hook untrusted — and silently skipped — under its new position.
/// Each group that is not relay's is matched to its first equal, unused group in `after`.
pub fn codex_trust_moves(
    before: &Value,
    after: &Value,
    hooks_path: &Path,
    exe: &Path,
) -> Vec<(String, String)> {
    let mut paths = vec![hooks_path.to_string_lossy().into_owned()];
    if let Ok(c) = std::fs::canonicalize(hooks_path) {
        let c = c.to_string_lossy().into_owned();
        if !paths.contains(&c) {
            paths.push(c);
        }
    }
    let mut moves = Vec::new();
    let mut names: Vec<&str> = Event::ALL.iter().map(|e| e.hook_event_name()).collect();
    names.dedup();
    for name in names {
        let empty = Vec::new();
        let old = before["hooks"][name].as_array().unwrap_or(&empty);
        let new = after["hooks"][name].as_array().unwrap_or(&empty);
        let mut used = vec![false; new.len()];
        for (g, group) in old.iter().enumerate() {
            let ours = group["hooks"].as_array().into_iter().flatten().any(|h| {
                h["command"].as_str().is_some_and(|c| {
                    Event::ALL
                        .iter()
                        .any(|e| is_relay_hook(c, Agent::Codex, *e, exe))
                })
            });
            if ours {
                continue;
            }
            let Some(to) = (0..new.len()).find(|&i| !used[i] && new[i] == *group) else {
                continue;
            };
            used[to] = true;
            if to != g {
                let handlers = group["hooks"].as_array().map_or(0, Vec::len);
                for h in 0..handlers {
                    for p in &paths {
                        let ev = snake_case(name);
                        moves.push((format!("{p}:{ev}:{g}:{h}"), format!("{p}:{ev}:{to}:{h}")));
                    }
                }
            }
        }
    }
    moves
}

/// Codex's event names in trust keys: `SessionStart` → `session_start`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The keys under which Codex keeps its trust of relay's hooks in `hooks` (a parsed
/// hooks.json at `hooks_path`): `<hooks.json path>:<event in snake_case>:<group
/// index>:<handler index>` (Codex 0.171, e.g. `/home/me/.codex/hooks.json:stop:0:0`) for
/// every handler that [`is_relay_hook`], under the path as given and as canonicalised
/// (Codex names the file by the path it was configured with).
pub fn codex_trust_keys(hooks: &Value, hooks_path: &Path, exe: &Path) -> Vec<String> {
    let mut paths = vec![hooks_path.to_string_lossy().into_owned()];
    if let Ok(c) = std::fs::canonicalize(hooks_path) {
        let c = c.to_string_lossy().into_owned();
        if !paths.contains(&c) {
            paths.push(c);
        }
    }
    let mut keys = Vec::new();
    for event in Event::ALL {
        let name = event.hook_event_name();
        for (g, group) in hooks["hooks"][name]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (h, handler) in group["hooks"].as_array().into_iter().flatten().enumerate() {
                if handler["command"]
                    .as_str()
                    .is_some_and(|c| is_relay_hook(c, Agent::Codex, event, exe))
                {
                    for p in &paths {
                        keys.push(format!("{p}:{}:{g}:{h}", snake_case(name)));
                    }
                }
            }
        }
    }
    keys
}

fn json_change(
    path: PathBuf,
    what: &'static str,
    edit: impl FnOnce(&mut Value, &Path) -> Result<(), Error>,
) -> Result<FileChange, Error> {
    let before = read(&path)?;
    let mut v = parse_json(&path, before.as_deref())?;
    let original = v.clone();
    edit(&mut v, &path)?;
    let after = if v == original {
        before.clone()
    } else if v.as_object().is_some_and(Map::is_empty) {
        None // relay's entries were all the file held: remove it
    } else {
        let l = layout(before.as_deref().unwrap_or(""));
        Some(
            before
                .as_deref()
                .filter(|t| !t.trim().is_empty())
                .and_then(|t| splice(t, &original, &v, &l))
                .unwrap_or_else(|| to_text(&v, &l)),
        )
    };
    Ok(FileChange {
        path,
        what,
        before,
        after,
    })
}

/// The change of a file relay writes whole (pi's extension, OpenCode's plugin): `render`
/// is what install writes, `ours` recognises a file some relay wrote (any version, any
/// binary; an edit is kept in the backup [`apply`] makes). Install refuses to replace any
/// other file; uninstall removes only relay's, and leaves another file there as it is,
/// with a note.
fn whole_file(
    path: PathBuf,
    what: &'static str,
    render: String,
    ours: impl Fn(&str) -> bool,
    action: Action,
    notes: &mut Vec<String>,
) -> Result<FileChange, Error> {
    let before = read(&path)?;
    let relays = before.as_deref().is_some_and(&ours);
    let after = match action {
        Action::Install if before.is_some() && !relays => {
            return Err(Error::NotOurs { path, what });
        }
        Action::Install => Some(render),
        Action::Uninstall if relays => None,
        Action::Uninstall => {
            if before.is_some() {
                notes.push(format!(
                    "{} is not the {what} relay writes (its first line is not relay's); left \
                     as it is",
                    path.display()
                ));
            }
            before.clone()
        }
    };
    Ok(FileChange {
        path,
        what,
        before,
        after,
    })
}

/// Plans an install or uninstall for `agent` at `scope`.
///
/// # Errors
/// [`Error`] when a config file cannot be read or parsed, or has an unexpected shape.
pub fn plan(agent: Agent, scope: Scope, action: Action, env: &Env) -> Result<Plan, Error> {
    let mut notes = Vec::new();
    if agent == Agent::Pi && action == Action::Install {
        let (other, name) = match scope {
            Scope::User => (Scope::Project, "project"),
            Scope::Project => (Scope::User, "user"),
        };
        let path = pi::extension_path(other, &env.home, &env.project);
        // The same file at both scopes (a project that is the home directory) is one.
        if path != pi::extension_path(scope, &env.home, &env.project)
            && read(&path)?.is_some_and(|t| pi::relay_of(&t).is_some())
        {
            return Err(Error::OtherScope { path, scope: name });
        }
    }
    let files = match agent {
        Agent::OpenCode => vec![
            json_change(
                opencode::config_path(scope, &env.home, &env.project),
                "OpenCode MCP servers",
                |v, p| edit_opencode_json(v, p, env, action),
            )?,
            whole_file(
                opencode::plugin_path(scope, &env.home, &env.project),
                "OpenCode plugin",
                opencode::render(&env.exe),
                |t| opencode::relay_of(t).is_some(),
                action,
                &mut notes,
            )?,
        ],
        Agent::Pi => vec![whole_file(
            pi::extension_path(scope, &env.home, &env.project),
            "pi extension",
            pi::render(&env.exe),
            |t| pi::relay_of(t).is_some(),
            action,
            &mut notes,
        )?],
        Agent::Claude => vec![
            json_change(
                claude::mcp_path(scope, &env.home, &env.project),
                "Claude Code MCP servers",
                |v, p| edit_mcp_json(v, p, env, action),
            )?,
            json_change(
                claude::settings_path(scope, &env.home, &env.project),
                "Claude Code hooks",
                |v, p| edit_hooks(v, p, env, Agent::Claude, action),
            )?,
        ],
        Agent::Codex => {
            let hooks_path = codex::hooks_path(scope, &env.home, &env.project);
            let hooks = json_change(hooks_path.clone(), "Codex hooks", |v, p| {
                edit_hooks(v, p, env, Agent::Codex, action)
            })?;
            // Trust Codex recorded for relay's hooks as they are now (uninstall only).
            let trust_keys = match action {
                Action::Install => Vec::new(),
                Action::Uninstall => hooks
                    .before
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .map(|v| codex_trust_keys(&v, &hooks_path, &env.exe))
                    .unwrap_or_default(),
            };
            let parsed = |t: Option<&str>| {
                t.and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .unwrap_or(Value::Null)
            };
            let trust_moves = codex_trust_moves(
                &parsed(hooks.before.as_deref()),
                &parsed(hooks.after.as_deref()),
                &hooks_path,
                &env.exe,
            );
            let config = codex::config_path(scope, &env.home, &env.project);
            let before = read(&config)?;
            let after = edit_codex_toml(
                before.as_deref(),
                &config,
                env,
                action,
                &trust_keys,
                &trust_moves,
            )?;
            let toml = FileChange {
                path: config,
                what: "Codex MCP servers",
                before,
                after,
            };
            if action == Action::Install && !hooks.unchanged() {
                notes.push(
                    "Codex runs new or changed hooks only after you trust them: start codex, \
                     open /hooks and trust relay's SessionStart, UserPromptSubmit, PostToolUse \
                     and Stop hooks."
                        .into(),
                );
            }
            if action == Action::Install && !toml.unchanged() {
                notes.push(
                    "Codex runs MCP servers from its shared app-server daemon, which keeps the \
                     environment it started with: if it is running, restart it (`codex \
                     app-server daemon restart`) so relay mcp gets the new entry."
                        .into(),
                );
            }
            vec![toml, hooks]
        }
    };
    if action == Action::Install
        && agent == Agent::Claude
        && scope == Scope::Project
        && files.first().is_some_and(|f| !f.unchanged())
    {
        notes.push(
            "Claude Code asks before it starts an MCP server from a project's .mcp.json: \
             until you approve 'relay' (start `claude` in this directory and accept it), \
             `claude mcp list` shows it as \"Pending approval\" and sessions get no relay \
             tools."
                .into(),
        );
    }
    if action == Action::Install
        && agent != Agent::Pi
        && let Some(h) = &env.relay_home
        && files.iter().any(|f| !f.unchanged())
    {
        notes.push(format!(
            "relay mcp is pinned to the relay home {} (RELAY_HOME in its MCP entry); the \
             hooks use the RELAY_HOME of the agent's environment, so start {} where \
             RELAY_HOME is the same (or install again from a shell without it).",
            h.display(),
            agent.display()
        ));
    }
    if action == Action::Install && files.iter().any(|f| !f.unchanged()) {
        notes.push(format!(
            "Restart running {} sessions so they load the relay {}.",
            agent.display(),
            agent.integration()
        ));
    }
    Ok(Plan { files, notes })
}

/// A unified diff of every change in the plan.
pub fn diff(plan: &Plan) -> String {
    let mut out = String::new();
    for f in plan.files.iter().filter(|f| !f.unchanged()) {
        let before = f.before.as_deref().unwrap_or("");
        let after = f.after.as_deref().unwrap_or("");
        let name = f.path.to_string_lossy();
        let d = similar::TextDiff::from_lines(before, after);
        out.push_str(
            &d.unified_diff()
                .header(
                    &if f.before.is_some() {
                        name.to_string()
                    } else {
                        "/dev/null".into()
                    },
                    &if f.after.is_some() {
                        name.to_string()
                    } else {
                        "/dev/null".into()
                    },
                )
                .to_string(),
        );
    }
    out
}

fn backup_name(path: &Path) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_micros(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".relay-backup-{stamp}"));
    path.with_file_name(name)
}

/// Backups of `path`, newest last.
pub fn backups(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.relay-backup-", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .into_iter()
    .flatten()
    .flatten()
    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    .map(|e| e.path())
    .collect();
    found.sort();
    found
}

/// `v` with empty objects and arrays removed from objects, recursively: uninstall drops
/// the containers it empties, which the file may have held empty before install.
fn without_empties(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, without_empties(v)))
                .filter(|(_, v)| {
                    !(v.as_object().is_some_and(Map::is_empty)
                        || v.as_array().is_some_and(Vec::is_empty))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_empties).collect()),
        other => other,
    }
}

/// For an uninstall: when the planned result equals, as data, the newest backup, use the
/// backup's exact bytes instead (undoing an install byte for byte).
pub fn prefer_backups(plan: &mut Plan) {
    for f in &mut plan.files {
        let Some(newest) = backups(&f.path).pop() else {
            continue;
        };
        let Ok(saved) = std::fs::read_to_string(&newest) else {
            continue;
        };
        // An empty result would delete the file; keep it if it existed as an empty object.
        let after = f.after.clone().unwrap_or_else(|| "{}".into());
        let same = match (
            serde_json::from_str::<Value>(&after),
            serde_json::from_str::<Value>(&saved),
        ) {
            (Ok(a), Ok(b)) => without_empties(a) == without_empties(b),
            _ => {
                after
                    .parse::<toml_edit::DocumentMut>()
                    .ok()
                    .map(|d| d.to_string())
                    == saved
                        .parse::<toml_edit::DocumentMut>()
                        .ok()
                        .map(|d| d.to_string())
                    && after.trim() == saved.trim()
            }
        };
        if same {
            f.after = Some(saved);
        }
    }
}

/// Applies a plan: backups first, then each file written whole (via a temporary file
/// and rename, so a crash never leaves half a config).
///
/// # Errors
/// [`Error::Io`] for the first file that cannot be written; files before it are done.
pub fn apply(plan: &Plan) -> Result<Vec<Applied>, Error> {
    let mut out = Vec::new();
    for f in &plan.files {
        let io = |err| Error::Io {
            path: f.path.clone(),
            err,
        };
        let action = match (&f.before, &f.after) {
            _ if f.unchanged() => "unchanged",
            (None, Some(_)) => "created",
            (Some(_), Some(_)) => "updated",
            (_, None) => "deleted",
        };
        let mut backup = None;
        if action != "unchanged" && f.before.is_some() {
            let b = backup_name(&f.path);
            std::fs::copy(&f.path, &b).map_err(io)?;
            backup = Some(b);
        }
        match (&f.after, action) {
            (_, "unchanged") => {}
            (Some(text), _) => {
                if let Some(dir) = f.path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                // Write through a symlink (dotfile managers), never replace it.
                let target = std::fs::canonicalize(&f.path).unwrap_or_else(|_| f.path.clone());
                let mode = std::fs::metadata(&target).map_or(0o600, |m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o7777
                });
                let tmp = target.with_extension("relay-tmp");
                let _ = std::fs::remove_file(&tmp);
                {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    // Created with the file's own mode, so it is never readable by others.
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(mode)
                        .open(&tmp)
                        .map_err(io)?;
                    file.write_all(text.as_bytes()).map_err(io)?;
                    file.sync_all().map_err(io)?;
                }
                std::fs::rename(&tmp, &target).map_err(io)?;
            }
            (None, _) => {
                if f.before.is_some() {
                    std::fs::remove_file(&f.path).map_err(io)?;
                }
            }
        }
        out.push(Applied {
            path: f.path.clone(),
            what: f.what,
            action,
            backup,
        });
    }
    Ok(out)
}

/// Whether `agent`'s entries at `scope` are installed and point at `env.exe`: true when
/// an install would change nothing.
///
/// # Errors
/// As [`plan`].
pub fn is_current(agent: Agent, scope: Scope, env: &Env) -> Result<bool, Error> {
    Ok(plan(agent, scope, Action::Install, env)?
        .files
        .iter()
        .all(FileChange::unchanged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_hook_commands_are_recognised_from_any_path() {
        let e = Event::Stop;
        let exe = Path::new("/opt/bin/relay-nightly");
        let is = |c: &str| is_relay_hook(c, Agent::Claude, e, exe);
        assert!(is("/usr/local/bin/relay hook claude stop"));
        assert!(is("'/home/me/my tools/relay' hook claude stop"));
        assert!(is("relay hook claude stop"));
        assert!(
            is("/opt/bin/relay-nightly hook claude stop"),
            "this binary, whatever its name"
        );
        let odd = Path::new("/home/o'neil/relay");
        let cmd = hook_command(odd, Agent::Claude, e);
        assert!(is_relay_hook(&cmd, Agent::Claude, e, odd), "{cmd}");
        assert!(!is("relay hook codex stop"));
        assert!(!is("/bin/relayer hook claude stop"));
        assert!(!is("relay hook claude stop; rm -rf /"));
        assert_eq!(shell_quote("/a b/relay"), "'/a b/relay'");
        assert_eq!(shell_quote("/usr/bin/relay"), "/usr/bin/relay");
    }

    #[test]
    fn splice_changes_only_what_changed() {
        let text = "{\n  \"n\": 0.000001,\n  \"big\": 1.7976931348623157e308,\n  \
                    \"mcpServers\": {\n    \"a\": {\"x\": 1E5}\n  },\n  \"z\": [1.50, -0.0]\n}\n";
        let old: Value = serde_json::from_str(text).unwrap();
        let l = layout(text);
        // Add a member to a nested object.
        let mut new = old.clone();
        new["mcpServers"]["relay"] = json!({"command": "/r", "args": ["mcp"]});
        let out = splice(text, &old, &new, &l).unwrap();
        assert_eq!(
            out,
            "{\n  \"n\": 0.000001,\n  \"big\": 1.7976931348623157e308,\n  \
             \"mcpServers\": {\n    \"a\": {\"x\": 1E5},\n    \"relay\": {\n      \
             \"command\": \"/r\",\n      \"args\": [\n        \"mcp\"\n      ]\n    }\n  },\n  \
             \"z\": [1.50, -0.0]\n}\n"
        );
        // And take it out again: the original bytes.
        assert_eq!(splice(&out, &new, &old, &l).unwrap(), text);
        // Remove the first member, a middle one, the last one.
        for k in ["n", "mcpServers", "z"] {
            let mut less = old.clone();
            less.as_object_mut().unwrap().shift_remove(k);
            let out = splice(text, &old, &less, &l).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), less, "{out}");
            assert!(out.contains("1.50") || k == "z", "{out}");
        }
        // A changed scalar is replaced in place.
        let mut n2 = old.clone();
        n2["mcpServers"]["a"]["x"] = json!(2);
        let out = splice(text, &old, &n2, &l).unwrap();
        assert!(
            out.contains("{\"x\": 2}") && out.contains("0.000001"),
            "{out}"
        );
    }

    #[test]
    fn layout_is_detected() {
        let l = layout("{\n    \"a\": 1\n}");
        assert_eq!((l.indent.as_str(), l.final_newline), ("    ", false));
        let l = layout("{\n\t\"a\": 1\n}\n");
        assert_eq!((l.indent.as_str(), l.final_newline), ("\t", true));
    }
}
