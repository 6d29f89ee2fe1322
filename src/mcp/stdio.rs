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

use rmcp::model::{ErrorData, JsonRpcMessage, RequestId};
use rmcp::service::{RoleServer, RxJsonRpcMessage, TxJsonRpcMessage};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest request line accepted: 16 MiB, excluding the newline. Bodies are capped far
/// below this (256 KiB by default), so only a broken or hostile client reaches it.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// How long after-write work waits for its response before it is dropped (a request that
/// was cancelled never gets one): 10 minutes, longer than any tool call runs.
const AFTER_WRITE_TTL: Duration = Duration::from_secs(600);

type Work = Box<dyn FnOnce() + Send + 'static>;

/// Work to run once the response to a request has been written and flushed, keyed by the
/// request's JSON-RPC id. Cloning shares it.
#[derive(Clone, Default)]
pub struct AfterWrite {
    pending: Arc<Mutex<HashMap<RequestId, (Instant, Work)>>>,
}

impl AfterWrite {
    /// Runs `work` (blocking is fine: it runs on tokio's blocking pool) after the response
    /// to request `id` is written. Replaces earlier work for the same id.
    pub fn on_written(&self, id: RequestId, work: impl FnOnce() + Send + 'static) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Work whose response never came (a cancelled request) is dropped after a while,
        // so a long session does not accumulate it.
        p.retain(|_, (at, _)| at.elapsed() < AFTER_WRITE_TTL);
        p.insert(id, (Instant::now(), Box::new(work)));
    }

    fn take(&self, id: &RequestId) -> Option<Work> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(id).map(|(_, w)| w)
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
    /// The start of the oversized line being skipped, to find its request id.
    oversized_head: Vec<u8>,
    write: Arc<tokio::sync::Mutex<W>>,
    after: AfterWrite,
}

/// How much of an oversized line is kept to look for its `id`.
const HEAD: usize = 4096;

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send + 'static> Stdio<R, W> {
    /// A transport over `read`/`write` that runs `after`'s work once responses are written.
    pub fn new(read: R, write: W, after: AfterWrite) -> Self {
        Stdio {
            read: BufReader::new(read),
            line: Vec::new(),
            discarding: false,
            oversized_head: Vec::new(),
            write: Arc::new(tokio::sync::Mutex::new(write)),
            after,
        }
    }

    /// Reads one line into `self.line`, never holding more than [`MAX_LINE`] bytes of it.
    async fn read_line(&mut self) -> std::io::Result<LineRead> {
        loop {
            let buf = self.read.fill_buf().await?;
            if buf.is_empty() {
                return Ok(LineRead::Eof);
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
            } else if self.line.len() + n > MAX_LINE + 1 {
                // Over the limit: keep the head for the id, drop the rest as it streams by.
                self.discarding = true;
                self.oversized_head = std::mem::take(&mut self.line);
                self.oversized_head.truncate(HEAD);
            } else {
                self.line.extend_from_slice(chunk);
            }
            self.read.consume(n);
            if done {
                if self.discarding {
                    self.discarding = false;
                    return Ok(LineRead::Oversized(std::mem::take(
                        &mut self.oversized_head,
                    )));
                }
                return Ok(LineRead::Line);
            }
        }
    }
}

async fn write_json<W: AsyncWrite + Unpin>(
    write: &tokio::sync::Mutex<W>,
    msg: &impl serde::Serialize,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let mut w = write.lock().await;
    w.write_all(&bytes).await?;
    w.flush().await
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

enum LineRead {
    Line,
    /// An over-long line was skipped; its first bytes.
    Oversized(Vec<u8>),
    Eof,
}

/// The request id of an over-long line, if its head shows one before any `params`
/// (clients write `jsonrpc`, `id`, `method`, `params` in that order; an `"id"` inside the
/// params is not the request's).
fn id_of_head(head: &[u8]) -> Option<RequestId> {
    let text = String::from_utf8_lossy(head);
    let params = text.find("\"params\"").unwrap_or(text.len());
    let re = regex::Regex::new(r#""id"\s*:\s*(-?[0-9]{1,18}|"(?:[^"\\]|\\.){0,200}")"#).ok()?;
    let c = re.captures(&text[..params])?;
    let raw = c.get(1)?.as_str();
    serde_json::from_str::<RequestId>(raw).ok()
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
            let answered = match &item {
                JsonRpcMessage::Response(r) => Some(r.id.clone()),
                JsonRpcMessage::Error(e) => e.id.clone(),
                _ => None,
            };
            let written = write_json(&write, &item).await;
            if let Some(id) = answered
                && let Some(work) = after.take(&id)
                && written.is_ok()
                && matches!(item, JsonRpcMessage::Response(_))
            {
                // Written and flushed: now the work (an ack) may run.
                if let Err(e) = tokio::task::spawn_blocking(work).await {
                    tracing::warn!("after-write work failed: {e}");
                }
            }
            written
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            match self.read_line().await {
                Ok(LineRead::Line) => {}
                Ok(LineRead::Oversized(head)) => {
                    let id = id_of_head(&head);
                    tracing::warn!(
                        limit = MAX_LINE,
                        "an MCP request line over the limit was discarded"
                    );
                    let err: TxJsonRpcMessage<RoleServer> = JsonRpcMessage::error(
                        ErrorData::invalid_request(
                            format!(
                                "request line too long: over {MAX_LINE} bytes (16 MiB), the \
                                 longest relay mcp reads; it was discarded. Message bodies are \
                                 capped far lower (see RELAY_MAX_BODY)"
                            ),
                            None,
                        ),
                        id,
                    );
                    if write_json(&self.write.clone(), &err).await.is_err() {
                        return None;
                    }
                    continue;
                }
                Ok(LineRead::Eof) => return None,
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
            match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
                Ok(msg) => return Some(msg),
                Err(e) if e.is_syntax() || e.is_eof() => {
                    tracing::debug!("ignoring a line that is not JSON: {e}");
                }
                Err(e) => {
                    let value: Option<serde_json::Value> = serde_json::from_slice(line).ok();
                    let id = value
                        .as_ref()
                        .and_then(|v| v.get("id"))
                        .and_then(|v| serde_json::from_value::<RequestId>(v.clone()).ok());
                    // A notification (no id) that does not parse is ignored, as rmcp does
                    // for non-standard notifications; a request gets an answer.
                    let Some(id) = id else {
                        tracing::debug!("ignoring a message relay cannot read: {e}");
                        continue;
                    };
                    let err: TxJsonRpcMessage<RoleServer> = JsonRpcMessage::error(
                        ErrorData::invalid_request(format!("invalid request: {e}"), None),
                        Some(id),
                    );
                    if write_json(&self.write.clone(), &err).await.is_err() {
                        return None;
                    }
                }
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
    }
}
