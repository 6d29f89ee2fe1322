//! A stand-in model server for tests and benches: real agent CLIs (Claude Code, Codex)
//! pointed at it make real requests, a [`Script`] decides each answer, and every model
//! request is recorded for assertions.
//!
//! - Binds `127.0.0.1:0` only (never another interface); one thread per connection,
//!   HTTP/1.1 keep-alive (`Content-Length` or chunked request bodies, `Content-Length`
//!   responses).
//! - Bounded lifetime: it stops after the `lifetime` given to [`StandIn::start`], or when
//!   the [`StandIn`] is dropped, whichever comes first; open connections are shut down.
//! - `POST /v1/messages` — Anthropic Messages: SSE when the body has `"stream": true`,
//!   one JSON message otherwise. [`Reply::ToolCall`] becomes a `tool_use` block with a
//!   fresh id (`toolu_standin_N`) and `stop_reason: "tool_use"`; [`Reply::Text`] a `text`
//!   block with `end_turn`.
//! - `POST /v1/responses` — OpenAI Responses: SSE (`event: <type>` / `data: <json>`) with
//!   `response.created`, `response.output_item.added`, `response.output_text.delta` (text
//!   only), `response.output_item.done`, `response.completed` (with `usage`); JSON when
//!   `"stream"` is not true. A tool call is a `function_call` item with fresh `id`
//!   (`fc_standin_N`) and `call_id` (`call_standin_N`) and `arguments` as a JSON string.
//!   MCP tools are offered by Codex as namespaces (`{"type":"namespace","name":
//!   "mcp__relay","tools":[{"name":"send",..}]}`), so a tool call named
//!   `mcp__relay__send` is answered as `"namespace":"mcp__relay","name":"send"` (split by
//!   the namespaces the request offered, else at the last `__`).
//! - `POST …/count_tokens` is answered `{"input_tokens":10}` and not recorded; any other
//!   `GET` gets `200 {}`, any other `POST` a 404 JSON error. Only the two model paths
//!   are recorded ([`StandIn::requests`]); a query string (`?beta=true`) is ignored for
//!   matching and kept in [`Recorded::path`].
//!
//! Sources of the shapes: the Anthropic Messages streaming events as Claude Code 2.1.332
//! accepted them from a Python stand-in (`message_start`, `content_block_start/delta/stop`
//! with `text_delta` / `input_json_delta`, `message_delta`, `message_stop`), and the
//! minimal Responses SSE that Codex 0.171.0 accepted in the Codex research notes
//! (§5: "Model API and a local stand-in"), both measured on this machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One model request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When the whole request body had been read.
    pub at: Instant,
    /// The request target as sent, e.g. `/v1/messages?beta=true` or `/v1/responses`.
    pub path: String,
    /// The parsed JSON body (`Value::Null` when the body was not JSON).
    pub body: Value,
}

/// What the model answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A text answer that ends the turn.
    Text(String),
    /// One tool call: `name` as the client offered it (`mcp__relay__send`, `Bash`), and
    /// its JSON `input` (an object).
    ToolCall {
        /// Tool name, e.g. `mcp__relay__send`.
        name: String,
        /// The call's arguments.
        input: Value,
    },
}

/// Decides the answer to each recorded model request. Called on the connection's thread,
/// outside any lock; it may block (to delay an answer) but should return.
pub type Script = Box<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A running stand-in model server; dropping it stops it (see the module docs).
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    timer: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    script: Script,
    next_id: AtomicU64,
    addr: SocketAddr,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    stopped: bool,
    conns: Vec<TcpStream>,
}

/// Largest request head (request line + headers) accepted, in bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 64 * 1024 * 1024;

impl StandIn {
    /// Starts the server on `127.0.0.1:0`. It answers every model request with
    /// `script(&request)` until `lifetime` has passed or it is dropped.
    ///
    /// # Errors
    /// Binding the listener or spawning its threads.
    pub fn start(script: Script, lifetime: Duration) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            script,
            next_id: AtomicU64::new(1),
            addr,
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("standin-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        let s = shared.clone();
        let timer = std::thread::Builder::new()
            .name("standin-lifetime".into())
            .spawn(move || {
                let deadline = Instant::now() + lifetime;
                let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
                while !st.stopped {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    st = s
                        .changed
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                drop(st);
                s.stop();
            })?;
        Ok(StandIn {
            addr,
            shared,
            accept: Some(accept),
            timer: Some(timer),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash). Claude Code takes it as
    /// `ANTHROPIC_BASE_URL`; Codex wants `base_url = "<this>/v1"`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every model request so far (`/v1/messages`, `/v1/responses`), oldest first;
    /// `count_tokens` and other paths are not included.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Blocks until some recorded request (earlier ones included) satisfies `pred`, and
    /// returns the first that does; `None` after `timeout` or once the server stopped
    /// without one. Wakes on each new request (a condvar, no polling).
    pub fn wait_for(
        &self,
        pred: impl Fn(&Recorded) -> bool,
        timeout: Duration,
    ) -> Option<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        let mut seen = 0;
        loop {
            if let Some(r) = st.requests[seen..].iter().find(|r| pred(r)) {
                return Some(r.clone());
            }
            seen = st.requests.len();
            let now = Instant::now();
            if st.stopped || now >= deadline {
                return None;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.stop();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the server stopped, shuts every open connection and wakes the accept loop.
    fn stop(&self) {
        let conns = {
            let mut st = self.lock();
            if st.stopped {
                return;
            }
            st.stopped = true;
            std::mem::take(&mut st.conns)
        };
        self.changed.notify_all();
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wake the blocking accept(); it sees `stopped` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }

    fn fresh(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        {
            let mut st = shared.lock();
            if st.stopped {
                return;
            }
            if let Ok(c) = conn.try_clone() {
                st.conns.push(c);
            }
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("standin-conn".into())
            .spawn(move || serve(conn, &s));
        if spawned.is_err() {
            continue;
        }
    }
}

/// One parsed HTTP request.
struct Request {
    method: String,
    target: String,
    close: bool,
    body: Vec<u8>,
}

/// Serves requests on one connection until EOF, `Connection: close`, an error, or stop.
fn serve(conn: TcpStream, shared: &Shared) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(req)) = read_request(&mut reader) {
        if shared.lock().stopped {
            return;
        }
        let (status, ctype, body) = respond(&req, shared);
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncache-control: no-cache\r\ncontent-length: {}\r\nconnection: {}\r\n\r\n",
            body.len(),
            if req.close { "close" } else { "keep-alive" }
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
            return;
        }
        let _ = out.flush();
        if req.close {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads one request; `Ok(None)` at a clean EOF before a request began.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    // Skip stray empty lines between requests (RFC 9112 §2.2).
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let target = parts.next().ok_or_else(|| bad("no target"))?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let mut head_len = line.len();
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    let mut expect_continue = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("eof in headers"));
        }
        head_len += line.len();
        if head_len > MAX_HEAD {
            return Err(bad("head too large"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => length = Some(v.parse().map_err(|_| bad("content-length"))?),
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => close = v.contains("close"),
            "expect" => expect_continue = v.contains("100-continue"),
            _ => {}
        }
    }
    if expect_continue {
        r.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("chunk size"))?;
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(bad("body too large"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(Request {
        method,
        target,
        close,
        body,
    }))
}

/// The status line tail, content type and body for one request.
fn respond(req: &Request, shared: &Shared) -> (&'static str, &'static str, Vec<u8>) {
    let path = req.target.split('?').next().unwrap_or("");
    let json_ct = "application/json";
    if path.ends_with("/count_tokens") {
        return ("200 OK", json_ct, br#"{"input_tokens":10}"#.to_vec());
    }
    let api = match (req.method.as_str(), path) {
        ("POST", "/v1/messages" | "/messages") => Api::Anthropic,
        ("POST", "/v1/responses" | "/responses") => Api::Responses,
        ("GET", _) => return ("200 OK", json_ct, b"{}".to_vec()),
        _ => {
            let e = json!({"type": "error", "error": {"type": "not_found_error",
                "message": format!("stand-in: no route for {} {}", req.method, req.target)}});
            return ("404 Not Found", json_ct, e.to_string().into_bytes());
        }
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let rec = Recorded {
        at: Instant::now(),
        path: req.target.clone(),
        body,
    };
    {
        let mut st = shared.lock();
        st.requests.push(rec.clone());
    }
    shared.changed.notify_all();
    let reply = (shared.script)(&rec);
    let stream = rec.body.get("stream").and_then(Value::as_bool) == Some(true);
    let ct = if stream { "text/event-stream" } else { json_ct };
    let out = match api {
        Api::Anthropic => anthropic(&rec.body, &reply, stream, shared),
        Api::Responses => responses(&rec.body, &reply, stream, shared),
    };
    ("200 OK", ct, out)
}

enum Api {
    Anthropic,
    Responses,
}

fn sse(events: &[(&str, Value)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, data) in events {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    out.into_bytes()
}

/// An Anthropic Messages answer: SSE events or one JSON message.
fn anthropic(req: &Value, reply: &Reply, stream: bool, shared: &Shared) -> Vec<u8> {
    let n = shared.fresh();
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-sonnet-4-5")
        .to_string();
    let (block, stop) = match reply {
        Reply::Text(t) => (json!({"type": "text", "text": t}), "end_turn"),
        Reply::ToolCall { name, input } => (
            json!({"type": "tool_use", "id": format!("toolu_standin_{n}"), "name": name, "input": input}),
            "tool_use",
        ),
    };
    let id = format!("msg_standin_{n}");
    if !stream {
        let m = json!({"id": id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5}});
        return m.to_string().into_bytes();
    }
    let (start, delta) = match reply {
        Reply::Text(t) => (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": t}),
        ),
        Reply::ToolCall { name, input } => (
            json!({"type": "tool_use", "id": block["id"], "name": name, "input": {}}),
            json!({"type": "input_json_delta", "partial_json": input.to_string()}),
        ),
    };
    sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": start}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": 5}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ])
}

/// Splits an MCP tool name into (namespace, name) using the namespaces `req` offered,
/// else at the last `__` of an `mcp__` name; other names have no namespace.
fn split_namespace(req: &Value, name: &str) -> (Option<String>, String) {
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        for ns in tools {
            if ns.get("type").and_then(Value::as_str) != Some("namespace") {
                continue;
            }
            let Some(nsname) = ns.get("name").and_then(Value::as_str) else {
                continue;
            };
            let Some(rest) = name.strip_prefix(nsname) else {
                continue;
            };
            let inner = ns.get("tools").and_then(Value::as_array);
            for cand in [rest, rest.strip_prefix("__").unwrap_or(rest)] {
                let offered = inner.is_some_and(|ts| {
                    ts.iter()
                        .any(|t| t.get("name").and_then(Value::as_str) == Some(cand))
                });
                if offered {
                    return (Some(nsname.to_string()), cand.to_string());
                }
            }
        }
    }
    if name.starts_with("mcp__")
        && let Some(i) = name.rfind("__")
        && i > 3
    {
        return (Some(name[..i].to_string()), name[i + 2..].to_string());
    }
    (None, name.to_string())
}

/// An OpenAI Responses answer: SSE events or one JSON response.
fn responses(req: &Value, reply: &Reply, stream: bool, shared: &Shared) -> Vec<u8> {
    let n = shared.fresh();
    let rid = format!("resp_standin_{n}");
    let usage = json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15});
    let (item, added, text) = match reply {
        Reply::Text(t) => {
            let item = json!({"type": "message", "role": "assistant", "id": format!("msg_standin_{n}"),
                "content": [{"type": "output_text", "text": t, "annotations": []}], "status": "completed"});
            let mut added = item.clone();
            added["content"] = json!([]);
            added["status"] = json!("in_progress");
            (item, added, Some(t.clone()))
        }
        Reply::ToolCall { name, input } => {
            let (ns, name) = split_namespace(req, name);
            let mut item = json!({"type": "function_call", "id": format!("fc_standin_{n}"),
                "call_id": format!("call_standin_{n}"), "name": name,
                "arguments": input.to_string(), "status": "completed"});
            if let Some(ns) = ns {
                item["namespace"] = json!(ns);
            }
            let mut added = item.clone();
            added["arguments"] = json!("");
            added["status"] = json!("in_progress");
            (item, added, None)
        }
    };
    if !stream {
        let r = json!({"id": rid, "object": "response", "status": "completed",
            "output": [item], "usage": usage});
        return r.to_string().into_bytes();
    }
    let mut ev: Vec<(&str, Value)> = vec![
        (
            "response.created",
            json!({"type": "response.created", "response": {"id": rid, "status": "in_progress"}}),
        ),
        (
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
        ),
    ];
    if let Some(t) = text {
        ev.push((
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
                "item_id": item["id"], "delta": t}),
        ));
    }
    ev.push((
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    ev.push((
        "response.completed",
        json!({"type": "response.completed", "response": {"id": rid, "status": "completed",
            "usage": usage}}),
    ));
    sse(&ev)
}

/// Text of one message's `content`: a string, or the `text` of its blocks (Anthropic
/// `text`, Responses `input_text`/`output_text`), `tool_result` contents included, one
/// per line.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    parts.push(t.to_string());
                } else if let Some(c) = b.get("content") {
                    parts.push(content_text(c));
                } else if let Some(o) = b.get("output") {
                    parts.push(content_text(o));
                }
            }
            parts.join("\n")
        }
        _ => String::new(),
    }
}

/// The text of the last user message of a request body: Anthropic `messages[]` or
/// Responses `input[]` (the last item with `"role": "user"`), its text blocks joined with
/// newlines (text inside `tool_result` blocks included). Empty when there is none.
pub fn last_user_text(body: &Value) -> String {
    let list = body
        .get("messages")
        .or_else(|| body.get("input"))
        .and_then(Value::as_array);
    let Some(list) = list else {
        return body
            .get("input")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    };
    list.iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// Whether a request body carries a tool result anywhere in its history: an Anthropic
/// `tool_result` block, or a Responses `function_call_output` item.
pub fn has_tool_result(body: &Value) -> bool {
    let anthropic = body
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|ms| {
            ms.iter().any(|m| {
                m.get("content")
                    .and_then(Value::as_array)
                    .is_some_and(|bs| {
                        bs.iter()
                            .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                    })
            })
        });
    let responses = body
        .get("input")
        .and_then(Value::as_array)
        .is_some_and(|items| {
            items
                .iter()
                .any(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output"))
        });
    anthropic || responses
}

/// The names of the tools a request offers, MCP namespaces flattened to
/// `<namespace>__<tool>` for Responses (so `mcp__relay__send` in both APIs).
pub fn tool_names(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for t in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
        if t.get("type").and_then(Value::as_str) == Some("namespace") {
            for inner in t
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let i = inner
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let sep = if name.ends_with("__") { "" } else { "__" };
                out.push(format!("{name}{sep}{i}"));
            }
        } else {
            out.push(name.to_string());
        }
    }
    out
}

/// Parses an SSE body into `(event, data)` pairs (data parsed as JSON, `Null` if not).
/// For tests of clients of this server.
pub fn parse_sse(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for chunk in text.split("\n\n") {
        let mut event = String::new();
        let mut data = String::new();
        for l in chunk.lines() {
            if let Some(e) = l.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(d) = l.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if !event.is_empty() || !data.is_empty() {
            out.push((event, serde_json::from_str(&data).unwrap_or(Value::Null)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// Sends one request on `s` and reads one response: (status line, body).
    fn exchange(s: &mut TcpStream, method: &str, path: &str, body: &str) -> (String, String) {
        s.set_read_timeout(Some(T)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        let mut len = 0;
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l.trim().is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0; len];
        r.read_exact(&mut b).unwrap();
        (status.trim().to_string(), String::from_utf8(b).unwrap())
    }

    fn script() -> Script {
        Box::new(|r: &Recorded| {
            if last_user_text(&r.body).contains("tool please") && !has_tool_result(&r.body) {
                Reply::ToolCall {
                    name: "mcp__relay__send".into(),
                    input: json!({"to": "bob", "body": "hi"}),
                }
            } else {
                Reply::Text("done".into())
            }
        })
    }

    #[test]
    fn anthropic_sse_text_and_tool_call_on_one_connection() {
        let s = StandIn::start(script(), Duration::from_secs(30)).unwrap();
        let mut c = TcpStream::connect(s.addr).unwrap();
        let body = json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "tool please"}]}]});
        let (st, out) = exchange(&mut c, "POST", "/v1/messages?beta=true", &body.to_string());
        assert_eq!(st, "HTTP/1.1 200 OK");
        let ev = parse_sse(&out);
        let names: Vec<_> = ev.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let block = &ev[1].1["content_block"];
        assert_eq!(block["type"], "tool_use");
        assert_eq!(block["name"], "mcp__relay__send");
        assert!(block["id"].as_str().unwrap().starts_with("toolu_standin_"));
        let partial = ev[2].1["delta"]["partial_json"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(partial).unwrap()["to"], "bob");
        assert_eq!(ev[4].1["delta"]["stop_reason"], "tool_use");

        // Same connection (keep-alive): a tool result gets text; count_tokens is not recorded.
        let (_, ct) = exchange(&mut c, "POST", "/v1/messages/count_tokens", "{}");
        assert_eq!(ct, r#"{"input_tokens":10}"#);
        let body2 = json!({"model": "m", "stream": true, "messages": [
            {"role": "user", "content": "tool please"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]});
        let (_, out2) = exchange(&mut c, "POST", "/v1/messages", &body2.to_string());
        let ev2 = parse_sse(&out2);
        assert_eq!(ev2[2].1["delta"]["text"], "done");
        assert_eq!(ev2[4].1["delta"]["stop_reason"], "end_turn");
        let reqs = s.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].path, "/v1/messages?beta=true");
        assert!(has_tool_result(&reqs[1].body));
        assert_eq!(last_user_text(&reqs[1].body), "ok");
    }

    #[test]
    fn anthropic_json_when_not_streaming() {
        let s = StandIn::start(script(), Duration::from_secs(30)).unwrap();
        let mut c = TcpStream::connect(s.addr).unwrap();
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
        let (_, out) = exchange(&mut c, "POST", "/v1/messages", &body.to_string());
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["content"][0]["text"], "done");
        assert_eq!(v["stop_reason"], "end_turn");
    }

    #[test]
    fn responses_sse_splits_mcp_namespace() {
        let s = StandIn::start(script(), Duration::from_secs(30)).unwrap();
        let mut c = TcpStream::connect(s.addr).unwrap();
        let body = json!({"model": "gpt-5.1", "stream": true,
            "tools": [{"type": "function", "name": "shell"},
                      {"type": "namespace", "name": "mcp__relay", "tools": [{"type": "function", "name": "send"}]}],
            "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "base"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tool please"}]}]});
        let (st, out) = exchange(&mut c, "POST", "/v1/responses", &body.to_string());
        assert_eq!(st, "HTTP/1.1 200 OK");
        let ev = parse_sse(&out);
        let names: Vec<_> = ev.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.output_item.added",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let item = &ev[2].1["item"];
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["namespace"], "mcp__relay");
        assert_eq!(item["name"], "send");
        let args: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["body"], "hi");
        assert_eq!(
            tool_names(&s.requests()[0].body),
            ["shell", "mcp__relay__send"]
        );

        let body2 = json!({"model": "gpt-5.1", "stream": true, "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tool please"}]},
            {"type": "function_call", "call_id": item["call_id"], "name": "send", "arguments": "{}"},
            {"type": "function_call_output", "call_id": item["call_id"], "output": "queued"}]});
        let (_, out2) = exchange(&mut c, "POST", "/v1/responses", &body2.to_string());
        let ev2 = parse_sse(&out2);
        assert_eq!(ev2[2].0, "response.output_text.delta");
        assert_eq!(ev2[3].1["item"]["content"][0]["text"], "done");
        assert!(has_tool_result(&s.requests()[1].body));
        assert_eq!(last_user_text(&s.requests()[1].body), "tool please");
    }

    #[test]
    fn split_namespace_falls_back_to_last_separator() {
        assert_eq!(
            split_namespace(&json!({}), "mcp__relay__send"),
            (Some("mcp__relay".into()), "send".into())
        );
        assert_eq!(split_namespace(&json!({}), "Bash"), (None, "Bash".into()));
    }

    #[test]
    fn wait_for_wakes_on_a_request_and_times_out_without_one() {
        let s = StandIn::start(script(), Duration::from_secs(30)).unwrap();
        let t0 = Instant::now();
        assert!(s.wait_for(|_| true, Duration::from_millis(100)).is_none());
        assert!(t0.elapsed() >= Duration::from_millis(100));
        let addr = s.addr;
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let body = json!({"messages": [{"role": "user", "content": "needle"}]});
            exchange(&mut c, "POST", "/v1/messages", &body.to_string())
        });
        let got = s
            .wait_for(|r| last_user_text(&r.body) == "needle", T)
            .expect("request within the deadline");
        assert_eq!(got.path, "/v1/messages");
        client.join().unwrap();
    }

    #[test]
    fn stops_after_lifetime_and_on_drop() {
        let s = StandIn::start(script(), Duration::from_millis(200)).unwrap();
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        // The open connection is shut down when the lifetime ends: read sees EOF.
        let mut buf = [0u8; 1];
        let t0 = Instant::now();
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0);
        assert!(t0.elapsed() < T);
        assert!(
            s.wait_for(|_| true, T).is_none(),
            "stopped: returns at once"
        );

        let s2 = StandIn::start(script(), Duration::from_secs(60)).unwrap();
        let addr = s2.addr;
        drop(s2);
        // Nothing accepts any more: connect fails, or the connection is closed at once.
        if let Ok(mut c) = TcpStream::connect(addr) {
            c.set_read_timeout(Some(T)).unwrap();
            let _ = c.write_all(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(c.read(&mut buf).unwrap_or(0), 0);
        }
    }
}
