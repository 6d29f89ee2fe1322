//! Support for driving the real agent CLIs: locating the clients, a private world per
//! test (HOME, RELAY_HOME, cwd, stand-in model), tmux sessions that are always killed, and
//! process checks through /proc.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use relay::standin::{Recorded, Reply, Script, StandIn};
use serde_json::{Value, json};

use crate::common::{self, Home, Run};

/// Deadline for one agent run (`claude -p`, `codex exec`).
pub const AGENT_DEADLINE: Duration = Duration::from_secs(90);

/// Lifetime of a test's stand-in model (longer than any test).
pub const MODEL_LIFETIME: Duration = Duration::from_secs(240);

pub use crate::clients::client;

/// What a script may use while it answers: the world's relay, so it can send mail at a
/// chosen point of a turn.
#[derive(Clone)]
pub struct Ctx {
    pub relay_home: PathBuf,
    pub home: PathBuf,
}

impl Ctx {
    /// Runs `relay args…` in this world within the default deadline.
    pub fn relay(&self, args: &[&str]) -> Run {
        let mut c = Command::new(common::relay_bin());
        c.args(args)
            .env("RELAY_HOME", &self.relay_home)
            .env("HOME", &self.home)
            .env_remove("RELAY_AS")
            .env("RELAY_LOG", "warn");
        common::run(c, None, common::DEADLINE)
    }

    /// `relay send TO --as FROM -- BODY`, asserting it was stored.
    pub fn send(&self, to: &str, from: &str, body: &str) {
        let r = self.relay(&["send", to, "--as", from, "--", body]);
        assert_eq!(r.code, 0, "relay send {to}: {}{}", r.stdout, r.stderr);
    }
}

/// One test's private world: a user HOME, a relay home, a project directory and a
/// stand-in model. Everything is deleted when dropped.
pub struct World {
    pub relay: Home,
    home: tempfile::TempDir,
    cwd_dir: tempfile::TempDir,
    pub model: StandIn,
}

impl World {
    /// A new world whose model answers with `script`.
    pub fn new(script: Script) -> World {
        World::with(|_| script)
    }

    /// A new world whose model answers with the script `make` builds from the world's
    /// [`Ctx`].
    pub fn with(make: impl FnOnce(Ctx) -> Script) -> World {
        let relay = Home::new();
        let home = tempfile::tempdir().expect("tempdir");
        let cwd_dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(relay.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(relay.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let ctx = Ctx {
            relay_home: relay.path(),
            home: home.path().to_path_buf(),
        };
        let model = StandIn::start(make(ctx), MODEL_LIFETIME).expect("stand-in model");
        World {
            relay,
            home,
            cwd_dir,
            model,
        }
    }

    /// `$HOME` of the agents.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The project directory (canonical, as the agents record it).
    pub fn cwd(&self) -> PathBuf {
        self.cwd_dir.path().canonicalize().unwrap()
    }

    /// A `relay` command in this world (HOME, RELAY_HOME, cwd set).
    pub fn relay_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.relay.cmd(args);
        c.env("HOME", self.home()).current_dir(self.cwd());
        c
    }

    /// Runs `relay args…` within the default deadline.
    pub fn relay(&self, args: &[&str]) -> Run {
        common::run(self.relay_cmd(args), None, common::DEADLINE)
    }

    /// `relay args… --json`, asserting exit 0.
    pub fn relay_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let r = self.relay(&a);
        assert_eq!(r.code, 0, "relay {a:?} failed: {}{}", r.stdout, r.stderr);
        r.doc()
    }

    /// The environment every agent process gets (and nothing else of ours).
    pub fn agent_env(&self, c: &mut Command) {
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("LANG", "C.UTF-8")
            .env("TERM", "xterm-256color")
            .env("RELAY_HOME", self.relay.path())
            .env("RELAY_LOG", "warn")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("ANTHROPIC_BASE_URL", self.model.base_url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("MOCK_API_KEY", "sk-mock")
            .current_dir(self.cwd());
    }

    /// Writes `~/.claude.json` so the TUI starts without dialogs in this cwd, with `extra`
    /// top-level keys merged in.
    pub fn claude_config(&self, extra: &str) {
        let cwd = self.cwd().to_string_lossy().into_owned();
        let mut doc = json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "customApiKeyResponses": {"approved": ["sk-test"], "rejected": []},
            "projects": {cwd: {"hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true}}
        })
        .to_string();
        if !extra.is_empty() {
            doc.pop();
            doc.push(',');
            doc.push_str(extra);
            doc.push('}');
        }
        std::fs::write(self.home().join(".claude.json"), doc).unwrap();
    }

    /// `claude args…` in this world.
    pub fn claude(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        self.agent_env(&mut c);
        c.args(args);
        c
    }

    /// Runs `claude -p PROMPT` (tools in `allow` pre-approved) to completion.
    pub fn claude_p(&self, bin: &Path, prompt: &str, allow: &str) -> Run {
        let mut args = vec!["-p"];
        if !allow.is_empty() {
            args.extend(["--allowedTools", allow]);
        }
        args.extend(["--", prompt]);
        let r = common::run(self.claude(bin, &args), None, AGENT_DEADLINE);
        assert_eq!(
            r.code, 0,
            "claude -p {prompt:?} failed:\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r
    }

    /// The Claude Code sessions relay knows (`kind: claude-code`), oldest first.
    pub fn sessions(&self, kind: &str) -> Vec<Value> {
        let d = self.relay_json(&["roster"]);
        let mut v: Vec<Value> = d["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect();
        v.sort_by_key(|e| e["created_at"].as_u64());
        v
    }

    /// Every message stored for `name`, read (and acked) as that endpoint.
    pub fn inbox(&self, name: &str) -> Vec<Value> {
        let d = self.relay_json(&["inbox", "--as", name]);
        d["messages"].as_array().unwrap().clone()
    }

    /// Dumps every recorded request body to `$RELAY_TEST_DUMP/<tag>.json` when that is set
    /// (for looking at what a client really sent).
    pub fn dump(&self, tag: &str) {
        if let Some(dir) = std::env::var_os("RELAY_TEST_DUMP") {
            let all: Vec<Value> = self
                .model
                .requests()
                .into_iter()
                .map(|r| json!({"path": r.path, "body": r.body}))
                .collect();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                Path::new(&dir).join(format!("{tag}.json")),
                serde_json::to_string_pretty(&all).unwrap(),
            );
        }
    }
}

/// Whether this request is a turn of the main conversation (it offers tools), not a side
/// request such as a title or a quota probe.
pub fn is_main(r: &Recorded) -> bool {
    r.body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}

/// Every string in a JSON document, depth first (system prompt blocks, message texts…).
pub fn strings(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

/// Whether a request offers tool `name`: in `tools`, or by name in Claude Code's list of
/// deferred tools (loaded through ToolSearch; MCP tools are deferred by default).
pub fn offers(body: &Value, name: &str) -> bool {
    relay::standin::tool_names(body).iter().any(|n| n == name)
        || strings(body).iter().any(|s| {
            s.contains("deferred tools are now available") && s.lines().any(|l| l.trim() == name)
        })
}

/// Claude Code's own session id of a request (`metadata.user_id` is a JSON string with
/// `session_id`).
pub fn claude_session(r: &Recorded) -> Option<String> {
    let uid = r.body.get("metadata")?.get("user_id")?.as_str()?;
    let v: Value = serde_json::from_str(uid).ok()?;
    Some(v.get("session_id")?.as_str()?.to_string())
}

/// `Reply::Text`.
pub fn text(s: &str) -> Reply {
    Reply::Text(s.to_string())
}

/// A relay send tool call.
pub fn send_call(to: &str, body: &str) -> Reply {
    Reply::ToolCall {
        name: "mcp__relay__send".into(),
        input: json!({"to": to, "body": body}),
    }
}

/// A tmux server of our own (its socket in a temp dir) with one session running a
/// command; killed, with everything in it, when dropped.
pub struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    pub name: String,
}

impl Tmux {
    /// Starts `cmd` (its program, args, env and cwd) in a detached 200×50 session. The tmux
    /// server gets exactly `cmd`'s environment, and so does the program.
    pub fn start(cmd: &Command) -> Tmux {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("tmux.sock");
        let name = format!(
            "relay-test-{}-{}",
            std::process::id(),
            relay::clock::now_us()
        );
        let mut t = Command::new("tmux");
        t.env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                t.env(k, v);
            }
        }
        let cwd = cmd.get_current_dir().expect("cwd").to_path_buf();
        t.arg("-S")
            .arg(&socket)
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "200",
                "-y",
                "50",
                "-c",
            ])
            .arg(&cwd)
            .arg("--")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        let r = common::run(t, None, Duration::from_secs(10));
        assert_eq!(r.code, 0, "tmux new-session failed: {}", r.stderr);
        Tmux {
            socket,
            _dir: dir,
            name,
        }
    }

    fn tmux(&self, args: &[&str]) -> Run {
        let mut t = Command::new("tmux");
        t.arg("-S").arg(&self.socket).args(args);
        common::run(t, None, Duration::from_secs(10))
    }

    /// Types `text` and presses Enter.
    pub fn type_line(&self, text: &str) {
        let r = self.tmux(&["send-keys", "-t", &self.name, "-l", text]);
        assert_eq!(r.code, 0, "tmux send-keys failed: {}", r.stderr);
        let r = self.tmux(&["send-keys", "-t", &self.name, "Enter"]);
        assert_eq!(r.code, 0, "tmux send-keys failed: {}", r.stderr);
    }

    /// Types `text` literally, without pressing Enter.
    pub fn send_text(&self, text: &str) {
        let r = self.tmux(&["send-keys", "-t", &self.name, "-l", text]);
        assert_eq!(r.code, 0, "tmux send-keys failed: {}", r.stderr);
    }

    /// Presses one key by its tmux name (`Enter`, `Escape`, `C-c`).
    pub fn press(&self, key: &str) {
        let r = self.tmux(&["send-keys", "-t", &self.name, key]);
        assert_eq!(r.code, 0, "tmux send-keys {key} failed: {}", r.stderr);
    }

    /// Waits (bounded) until the pane shows `needle`; panics with the screen otherwise.
    pub fn wait_screen(&self, what: &str, needle: &str, deadline: Duration) {
        let end = std::time::Instant::now() + deadline;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "{what} did not show within {deadline:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the pane shows now.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.name]).stdout
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// Pids of live processes whose argv contains `words` in order (adjacent) and whose
/// environment has `RELAY_HOME=relay_home` — `pgrep -f` restricted to one test.
pub fn processes(words: &[&str], relay_home: &Path) -> Vec<u32> {
    let want = format!("RELAY_HOME={}", relay_home.display());
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let hit = args
            .windows(words.len())
            .any(|w| w.iter().zip(words).all(|(a, b)| *a == b.as_bytes()));
        if !hit {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

// ---- pi and OpenCode: relay's text follows the prompt, and requests name the session only in the intro ----

/// The endpoint id the intro in `r` names (`endpoint id <id>`).
pub fn session_of(r: &Recorded) -> Option<String> {
    strings(&r.body).into_iter().find_map(|s| {
        let at = s.find("(endpoint id ")? + "(endpoint id ".len();
        Some(s[at..].split(')').next()?.to_string())
    })
}

/// Whether any string of `r` contains `needle`.
pub fn mentions(r: &Recorded, needle: &str) -> bool {
    strings(&r.body).iter().any(|s| s.contains(needle))
}

/// Whether some string of `r` is exactly `text` (a prompt: OpenCode's system prompt
/// holds many common words).
pub fn says(r: &Recorded, text: &str) -> bool {
    strings(&r.body).iter().any(|s| s == text)
}

/// Whether `r` answers a tool call: its last message holds a tool result.
pub fn after_tool(r: &Recorded) -> bool {
    r.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))
}

/// Unread mail of endpoint `id`, from the roster.
pub fn pending(w: &World, id: &str) -> u64 {
    w.relay_json(&["roster"])["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .and_then(|e| e["pending"].as_u64())
        .expect("the endpoint in the roster")
}
