//! `relay mcp` driven as a raw JSON-RPC client, line by line, every answer with a
//! deadline: for tests that need exact bytes on the wire (cancels, reused ids, over-long
//! lines) rather than rmcp's client.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Home;

/// `relay mcp --as <as_>` spoken to line by line, as a raw JSON-RPC client.
pub struct Mcp {
    /// The `relay mcp` process.
    pub child: Child,
    /// Its stdin.
    pub stdin: ChildStdin,
    /// Its stdout, line by line.
    pub lines: mpsc::Receiver<String>,
    next: u64,
}

impl Mcp {
    /// Starts `relay mcp --as <as_>` (or with no identity for `None`) and initializes it.
    pub fn start(h: &Home, as_: Option<&str>) -> Mcp {
        let mut m = Mcp::spawn(h, as_);
        m.initialize();
        m
    }

    /// Starts `cmd` (a `relay mcp` command with its environment, e.g. another machine's
    /// `RELAY_STORE` and `RELAY_HOST`) and initializes it.
    pub fn start_cmd(cmd: Command) -> Mcp {
        let mut m = Mcp::spawn_cmd(cmd);
        m.initialize();
        m
    }

    /// Spawns `relay mcp [--as as_]` without initializing it.
    fn spawn(h: &Home, as_: Option<&str>) -> Mcp {
        let mut args = vec!["mcp"];
        if let Some(a) = as_ {
            args.extend(["--as", a]);
        }
        Mcp::spawn_cmd(h.cmd(&args))
    }

    fn spawn_cmd(mut cmd: Command) -> Mcp {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn relay mcp");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Mcp {
            child,
            stdin,
            lines,
            next: 1_000_000,
        }
    }

    pub fn initialize(&mut self) {
        self.send(
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":"regression","version":"0"}}}),
        );
        self.response(0);
        self.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    }

    pub fn send(&mut self, v: &Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .expect("write to relay mcp");
        self.stdin.flush().unwrap();
    }

    pub fn call(&mut self, id: u64, tool: &str, args: Value) {
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":tool,"arguments":args}}));
    }

    /// The response to request `id` (other lines are skipped), within 60 s.
    pub fn response(&self, id: u64) -> Value {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no response to request {id}"));
            let v: Value = serde_json::from_str(&line).expect("stdout carries JSON-RPC only");
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    /// A tool call's result text, parsed.
    pub fn result(&self, id: u64) -> Value {
        let r = self.response(id);
        let text = r["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no tool result in {r}"));
        serde_json::from_str(text).unwrap()
    }
}

impl Mcp {
    /// Calls a tool under a fresh id; returns (is_error, the result text parsed as JSON).
    pub fn tool(&mut self, name: &str, args: Value) -> (bool, Value) {
        let id = self.next;
        self.next += 1;
        self.call(id, name, args);
        let r = self.response(id);
        let res = &r["result"];
        let text = res["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"));
        (
            res["isError"] == json!(true),
            serde_json::from_str(text).expect("tool text is JSON"),
        )
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mcp {
    /// Like [`Mcp::start`], but `initialize` names the client `client` (e.g. Codex's
    /// `codex-mcp-client`), so the server can tell which agent it serves.
    pub fn start_client(h: &Home, as_: Option<&str>, client: &str) -> Mcp {
        let mut m = Mcp::spawn(h, as_);
        m.send(
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":client,"version":"0"}}}),
        );
        m.response(0);
        m.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        m
    }

    /// [`Mcp::tool`] with `params._meta` set to `meta` (what Codex sends: threadId,
    /// sessionId, x-codex-turn-metadata, ...).
    pub fn tool_meta(&mut self, name: &str, args: Value, meta: Value) -> (bool, Value) {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":name,"arguments":args,"_meta":meta}}));
        let r = self.response(id);
        let res = &r["result"];
        let text = res["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"));
        (
            res["isError"] == json!(true),
            serde_json::from_str(text).expect("tool text is JSON"),
        )
    }
}

/// The `_meta` Codex 0.171 sends with a `tools/call` of thread `thread` (REPORT §4).
pub fn codex_meta(thread: &str) -> Value {
    json!({
        "callId": "call_1", "threadId": thread, "sessionId": thread,
        "windowId": format!("{thread}:0"), "itemId": "fc_1", "progressToken": 0,
        "x-codex-turn-metadata": {"session_id": thread, "thread_id": thread,
            "model": "gpt-5.1", "turn_id": "t1", "turn_trigger": "exec",
            "codex_version": "0.171.0"}
    })
}
