//! relay's stdio transport for the MCP server: newline-delimited JSON-RPC on stdin and
//! stdout, as rmcp's own stdio transport does, with two things relay's rules need that
//! rmcp's does not offer:
//!
//! - **After-write work.** A tool that read mail registers its ack with [`AfterWrite`]
//!   under the JSON-RPC request id; the ack runs only once that request's response was
//!   written to stdout and flushed (DESIGN.md §11). A cancelled request gets no response,
//!   so its ack never runs and its mail comes back; a client that stops reading blocks the
//!   write, so nothing is acked either.
//! - **Oversized lines are answered.** A request line longer than [`MAX_LINE`] is
//!   discarded without buffering it and answered with a JSON-RPC error that states the
//!   limit (rmcp drops it silently, and the client waits forever).
//!
//! Lines that are not JSON are ignored (as the other MCP SDKs do: answering garbage can
//! start an error storm); well-formed JSON that is not a JSON-RPC message gets an
//! "invalid request" error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{JsonRpcMessage, RequestId};
use rmcp::service::{RoleServer, RxJsonRpcMessage, TxJsonRpcMessage};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest request line accepted: 16 MiB, excluding the newline. Bodies are capped far
/// below this (256 KiB by default), so only a broken or hostile client reaches it.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// How long work waits for its response before its mail is released (a request whose
/// response rmcp dropped, e.g. because the request was cancelled): 10 minutes, longer than
/// any tool call runs.
const PENDING_TTL: Duration = Duration::from_secs(600);

/// How long after its response was written the mail of a request is still given back if
/// the client cancels the request: MCP clients ignore a response that arrives after they
/// sent `notifications/cancelled` (Claude Code drops it on Esc), so a cancel crossing the
/// response means the mail was never shown. 250 ms covers a cancel in flight on a local
/// pipe and a busy client's event loop. It is kept short on purpose: agents end their MCP
/// servers abruptly (real `claude -p` 2.1.197 kills relay mcp right after its last turn,
/// with no end of stdin first), and mail whose grace had not run out then stays unacked and
/// is shown again in the next session. End of stdin and SIGTERM settle at once.
pub const CANCEL_GRACE: Duration = Duration::from_millis(250);

/// How long a cancelled request id is remembered, for work that registers after its
/// cancel arrived.
const CANCELLED_TTL: Duration = Duration::from_secs(60);

/// What to do with a request's mail once its fate is known: `true` when its response was
/// written and not cancelled (ack), `false` otherwise (release).
type Settle = Box<dyn FnOnce(bool) + Send + 'static>;

struct Pending {
    at: Instant,
    /// Message ids the response must carry: work is done only by the response that shows
    /// them, never by another response that happens to reuse the request id.
    ids: Vec<String>,
    settle: Settle,
}

#[derive(Default)]
struct Ledger {
    /// Waiting for their response.
    waiting: HashMap<RequestId, Pending>,
    /// Response written; acked at the end of [`CANCEL_GRACE`] unless cancelled first.
    written: HashMap<RequestId, Pending>,
    /// Recently cancelled request ids.
    cancelled: HashMap<RequestId, Instant>,
}

/// Mail shown by a request's response, settled when the response's fate is known: acked
/// [`CANCEL_GRACE`] after the response carrying it was written and flushed; released (given
/// back at once) when the request is cancelled, answered with an error, or its response
/// never comes. Keyed by JSON-RPC request id. Cloning shares it.
#[derive(Clone, Default)]
pub struct AfterWrite {
    ledger: Arc<Mutex<Ledger>>,
}

/// Runs settle work on the blocking pool (it touches the store).
fn run(settle: Settle, shown: bool) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || settle(shown))),
        Err(_) => settle(shown),
    }
}

impl AfterWrite {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the mail `ids` a response to request `id` will carry, and what settles
    /// it. A request already cancelled settles at once as not shown; earlier work under the
    /// same id (a client reusing ids) is released.
    pub fn on_written(
        &self,
        id: RequestId,
        ids: Vec<String>,
        settle: impl FnOnce(bool) + Send + 'static,
    ) {
        let mut stale = Vec::new();
        let mut l = self.lock();
        l.cancelled.retain(|_, at| at.elapsed() < CANCELLED_TTL);
        let expired: Vec<RequestId> = l
            .waiting
            .iter()
            .filter(|(_, p)| p.at.elapsed() >= PENDING_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            stale.extend(l.waiting.remove(&k));
        }
        let settle: Settle = Box::new(settle);
        if l.cancelled.contains_key(&id) {
            drop(l);
            stale.into_iter().for_each(|p| run(p.settle, false));
            return run(settle, false);
        }
        let old = l.waiting.insert(
            id,
            Pending {
                at: Instant::now(),
                ids,
                settle,
            },
        );
        drop(l);
        stale.extend(old);
        stale.into_iter().for_each(|p| run(p.settle, false));
    }

    /// The response to `id` was written and flushed: if it carries the registered mail,
    /// ack it after [`CANCEL_GRACE`] unless a cancel comes first.
    fn written(&self, id: &RequestId, bytes: &[u8]) {
        let mut l = self.lock();
        let Some(p) = l.waiting.remove(id) else {
            return;
        };
        let text = String::from_utf8_lossy(bytes);
        if !p.ids.iter().all(|m| text.contains(m.as_str())) {
            // Another response under a reused id: not this mail's.
            l.waiting.insert(id.clone(), p);
            return;
        }
        l.written.insert(id.clone(), p);
        drop(l);
        let (this, id) = (self.clone(), id.clone());
        let ack = async move {
            tokio::time::sleep(CANCEL_GRACE).await;
            let p = this.lock().written.remove(&id);
            if let Some(p) = p {
                run(p.settle, true);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(ack)),
            Err(_) => tracing::warn!("no runtime to ack after the grace period"),
        }
    }

    /// The client closed its end: it can send no cancel any more, so mail whose response
    /// was written is acked now rather than at the end of its grace period (`claude -p`
    /// ends the server right after its last tool call, and a grace timer would die with
    /// it, leaving mail shown but unacked); mail whose response never went out is
    /// released. Runs the store work here, synchronously: the runtime is shutting down.
    pub fn finish(&self) {
        let mut l = self.lock();
        let written: Vec<Pending> = l.written.drain().map(|(_, p)| p).collect();
        let waiting: Vec<Pending> = l.waiting.drain().map(|(_, p)| p).collect();
        drop(l);
        written.into_iter().for_each(|p| (p.settle)(true));
        waiting.into_iter().for_each(|p| (p.settle)(false));
    }

    /// The request failed (an error response) or was cancelled: its mail is released.
    fn give_back(&self, id: &RequestId, cancelled: bool) {
        let mut l = self.lock();
        if cancelled {
            l.cancelled.insert(id.clone(), Instant::now());
        }
        let p = l.waiting.remove(id).or_else(|| l.written.remove(id));
        drop(l);
        if let Some(p) = p {
            run(p.settle, false);
        }
    }
}

/// The transport: requests from `read`, responses to `write` (stdin and stdout in `relay
/// mcp`; any pair in tests).
pub struct Stdio<R, W> {
    read: BufReader<R>,
    line: Vec<u8>,
    /// Set while the rest of an oversized line is being skipped (`receive` can be
    /// cancelled mid-line and resumed).
    discarding: bool,
    /// The start and the latest end of the oversized line being skipped, to find its id.
    oversized_head: Vec<u8>,
    oversized_tail: Vec<u8>,
    write: Arc<tokio::sync::Mutex<W>>,
    after: AfterWrite,
}

/// How much of each end of an oversized line is kept to look for its `id`.
const HEAD: usize = 4096;

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send + 'static> Stdio<R, W> {
    /// A transport over `read`/`write` that settles `after`'s work as responses are written.
    pub fn new(read: R, write: W, after: AfterWrite) -> Self {
        Stdio {
            read: BufReader::new(read),
            line: Vec::new(),
            discarding: false,
            oversized_head: Vec::new(),
            oversized_tail: Vec::new(),
            write: Arc::new(tokio::sync::Mutex::new(write)),
            after,
        }
    }

    /// Reads one line into `self.line`, never holding more than [`MAX_LINE`] bytes of it.
    /// A last line without a newline still counts at end of input.
    async fn read_line(&mut self) -> std::io::Result<LineRead> {
        loop {
            let buf = self.read.fill_buf().await?;
            if buf.is_empty() {
                if self.discarding {
                    self.discarding = false;
                    return Ok(self.oversized());
                }
                if self.line.is_empty() {
                    return Ok(LineRead::Eof);
                }
                return Ok(LineRead::Line);
            }
            let (chunk, done) = match memchr(buf) {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let n = chunk.len();
            if self.discarding {
                if self.oversized_head.len() < HEAD {
                    let room = HEAD - self.oversized_head.len();
                    self.oversized_head
                        .extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                self.oversized_tail.extend_from_slice(chunk);
                let excess = self.oversized_tail.len().saturating_sub(HEAD);
                self.oversized_tail.drain(..excess);
            } else if self.line.len() + n > MAX_LINE + 1 {
                // Over the limit: keep both ends for the id, drop the rest as it streams by.
                self.discarding = true;
                self.oversized_head = std::mem::take(&mut self.line);
                self.oversized_head.truncate(HEAD);
                self.oversized_tail = chunk[chunk.len().saturating_sub(HEAD)..].to_vec();
            } else {
                self.line.extend_from_slice(chunk);
            }
            self.read.consume(n);
            if done {
                if self.discarding {
                    self.discarding = false;
                    return Ok(self.oversized());
                }
                return Ok(LineRead::Line);
            }
        }
    }

    fn oversized(&mut self) -> LineRead {
        let head = std::mem::take(&mut self.oversized_head);
        let tail = std::mem::take(&mut self.oversized_tail);
        LineRead::Oversized(id_of_head(&head).or_else(|| id_of_tail(&tail)))
    }

    /// Writes an error response from a task of its own: `receive` is polled inside rmcp's
    /// `select!` and dropped whenever another branch is ready, which would drop a write
    /// still waiting for stdout.
    fn answer_error(&self, id: Option<RequestId>, code: i32, message: String) {
        let doc = serde_json::json!({
            "jsonrpc": "2.0",
            // JSON-RPC 2.0 §5: the id is null when it could not be read.
            "id": id,
            "error": {"code": code, "message": message},
        });
        let write = self.write.clone();
        tokio::spawn(async move {
            if let Err(e) = write_json(&write, &doc, |_| {}).await {
                tracing::warn!("cannot write an error response: {e}");
            }
        });
    }

    /// A line that is not a JSON-RPC message relay can read: answered when it is a
    /// request (or looks like one), ignored when it is garbage or a notification.
    fn refuse(&self, line: &[u8], e: &serde_json::Error) {
        let value: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        let Some(value) = value else {
            // Not JSON. Answering garbage can start an error storm with a peer that echoes
            // it, so only a line whose request id can still be read gets an answer.
            match id_of_head(line) {
                Some(id) => self.answer_error(Some(id), PARSE_ERROR, format!("parse error: {e}")),
                None => tracing::debug!("ignoring a line that is not JSON: {e}"),
            }
            return;
        };
        let id = value
            .get("id")
            .and_then(|v| serde_json::from_value::<RequestId>(v.clone()).ok());
        let message = if value.is_array() {
            "invalid request: JSON-RPC batches are not supported; send one message per line"
                .to_string()
        } else {
            format!("invalid request: {e}")
        };
        match (&id, value.get("method")) {
            // A notification relay cannot read is ignored, as rmcp does for non-standard
            // ones; anything else gets an answer.
            (None, Some(_)) => tracing::debug!("ignoring a notification relay cannot read: {e}"),
            _ => self.answer_error(id, INVALID_REQUEST, message),
        }
    }
}

/// JSON-RPC error codes.
const PARSE_ERROR: i32 = -32700;
const INVALID_REQUEST: i32 = -32600;

/// Writes `msg` as one line and flushes it, then calls `written` with the bytes while still
/// holding the write lock: end of input takes that lock before it settles mail (see
/// `receive`), so a response the client may already have read is always recorded as
/// written by then.
async fn write_json<W: AsyncWrite + Unpin>(
    write: &tokio::sync::Mutex<W>,
    msg: &impl serde::Serialize,
    written: impl FnOnce(&[u8]),
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let mut w = write.lock().await;
    w.write_all(&bytes).await?;
    w.flush().await?;
    written(&bytes);
    Ok(())
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

enum LineRead {
    Line,
    /// An over-long line was skipped; its request id, when one could be read.
    Oversized(Option<RequestId>),
    Eof,
}

const ID: &str = r#""id"\s*:\s*(-?[0-9]{1,18}|"(?:[^"\\]|\\.){0,200}")"#;

/// The request id at the start of a line, if it shows one before any `params` (clients
/// write `jsonrpc`, `id`, `method`, `params` in that order; an `"id"` inside the params is
/// not the request's).
fn id_of_head(head: &[u8]) -> Option<RequestId> {
    let text = String::from_utf8_lossy(head);
    let params = text.find("\"params\"").unwrap_or(text.len());
    let re = regex::Regex::new(ID).ok()?;
    let c = re.captures(&text[..params])?;
    serde_json::from_str::<RequestId>(c.get(1)?.as_str()).ok()
}

/// The request id at the end of a line: an `"id"` member that closes the top-level object
/// (`…}, "id": 7}`), for clients that write the id last.
fn id_of_tail(tail: &[u8]) -> Option<RequestId> {
    let text = String::from_utf8_lossy(tail);
    let re = regex::Regex::new(&format!(r#"\}}\s*,\s*{ID}\s*\}}\s*$"#)).ok()?;
    let c = re.captures(&text)?;
    serde_json::from_str::<RequestId>(c.get(1)?.as_str()).ok()
}

/// The request a `notifications/cancelled` line cancels.
fn cancelled_request(line: &[u8]) -> Option<RequestId> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    if v.get("method")?.as_str()? != "notifications/cancelled" {
        return None;
    }
    serde_json::from_value(v.get("params")?.get("requestId")?.clone()).ok()
}

impl<R, W> rmcp::transport::Transport<RoleServer> for Stdio<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let write = self.write.clone();
        let after = self.after.clone();
        async move {
            write_json(&write, &item, |bytes| match &item {
                JsonRpcMessage::Response(r) => after.written(&r.id, bytes),
                JsonRpcMessage::Error(e) => {
                    if let Some(id) = &e.id {
                        after.give_back(id, false);
                    }
                }
                _ => {}
            })
            .await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            match self.read_line().await {
                Ok(LineRead::Line) => {}
                Ok(LineRead::Oversized(id)) => {
                    tracing::warn!(
                        limit = MAX_LINE,
                        "an MCP request line over the limit was discarded"
                    );
                    self.answer_error(
                        id,
                        INVALID_REQUEST,
                        format!(
                            "request line too long: over {MAX_LINE} bytes (16 MiB), the \
                             longest relay mcp reads; it was discarded. Message bodies are \
                             capped far lower (see RELAY_MAX_BODY)"
                        ),
                    );
                    continue;
                }
                Ok(LineRead::Eof) => {
                    // A response being written may already be in the client's hands (it
                    // can read the line and hang up before the write returns): wait for
                    // the write in progress, so its mail counts as shown. Bounded, for a
                    // client that stopped reading: that write is not shown, and released.
                    let _writing = tokio::time::timeout(CANCEL_GRACE, self.write.lock()).await;
                    self.after.finish();
                    return None;
                }
                Err(e) => {
                    tracing::error!("reading MCP requests: {e}");
                    return None;
                }
            }
            let raw = std::mem::take(&mut self.line);
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Mail a cancelled request read is given back here, whether its response was
            // dropped by rmcp or already written (the client ignores it now).
            if let Some(id) = cancelled_request(line) {
                self.after.give_back(&id, true);
            }
            match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
                Ok(msg) => return Some(msg),
                Err(e) => self.refuse(line, &e),
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.write.lock().await.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_of_an_oversized_line_is_found_before_its_params_only() {
        assert_eq!(
            id_of_head(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"#),
            Some(RequestId::Number(7))
        );
        assert_eq!(
            id_of_head(br#"{"jsonrpc":"2.0","id":"a-1","method":"x"#),
            Some(RequestId::String("a-1".into()))
        );
        assert_eq!(
            id_of_head(br#"{"jsonrpc":"2.0","method":"x","params":{"id":9"#),
            None
        );
        assert_eq!(
            id_of_tail(br#"zzz"}}, "id": 12}"#),
            Some(RequestId::Number(12))
        );
        assert_eq!(id_of_tail(br#"{"id": 12, "x": "zzz"}"#), None);
    }
}
