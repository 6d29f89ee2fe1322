//! Reading many stored messages in one request: JetStream's batch direct get
//! (`$JS.API.DIRECT.GET.<stream>` with `{"seq", "next_by_subj", "batch"}`, nats-server
//! 2.11+, streams with `allow_direct`). The server answers with one message per match,
//! then a status-204 "EOB" message whose `Nats-Num-Pending` says how many matches are
//! left; a status 404 means no (more) matches. Headers read, as nats-server 2.15.1 sends
//! them: `Nats-Subject`, `Nats-Sequence`, `Nats-Num-Pending`, plus the stored headers.
//!
//! This is how the store lists a mailbox (`relay.mail.<to>.>`, above the recipient's acked
//! floor; the leader is then asked for anything newer the answering replica lacked) and
//! whole streams for `roster`, `gc` and prefix lookups (a KV bucket keeps one revision per
//! key, so every match there is a current value or a delete marker): one round trip per
//! [`PAGE`] matches, no consumer to create or clean up.
//!
//! Every message of a batch answer also carries `Nats-Num-Pending`: how many matches of the
//! filter follow it in the stream. `history` uses that to size its reads ([`page`]): one
//! probe at a sequence tells how many matches lie from there to the end.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;

/// Matches asked for per request.
pub const PAGE: usize = 1000;

/// One stored message.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Its stream sequence (for a KV entry: the revision).
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its stored headers (plus the server's `Nats-*` ones).
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
    /// How many matches of the filter followed it in the stream when it was read (batch
    /// reads only; `None` otherwise).
    pub pending: Option<u64>,
}

impl Raw {
    /// A header's value, when present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }

    /// True for a KV delete or purge marker.
    pub fn is_kv_delete(&self) -> bool {
        matches!(self.header("KV-Operation"), Some("DEL" | "PURGE"))
    }
}

/// Why a scan failed.
#[derive(Debug)]
pub struct ScanError(pub String);

/// One answer to a batch direct get.
#[derive(Debug, Default)]
pub struct Page {
    /// The messages, in sequence order.
    pub msgs: Vec<Raw>,
    /// How many matches are left after the last one (`Some(0)`: none; `None`: the server
    /// did not say).
    pub pending_after: Option<u64>,
}

/// Where a [`page`] starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// At this stream sequence (or the first match after it).
    Seq(u64),
    /// At the first match stored at or after this time (RFC 3339).
    Time(&'a str),
}

/// One batch direct get: up to `batch` (1 to [`PAGE`]) messages of `stream` matching
/// `filter` from `from` on.
///
/// # Errors
/// [`ScanError`] when the server does not answer within `timeout` or answers with an
/// error status.
pub async fn page(
    client: &async_nats::Client,
    stream: &str,
    filter: &str,
    from: Start<'_>,
    batch: usize,
    timeout: Duration,
) -> Result<Page, ScanError> {
    let batch = batch.clamp(1, PAGE);
    let req = match from {
        Start::Seq(seq) => {
            serde_json::json!({"seq": seq.max(1), "next_by_subj": filter, "batch": batch})
        }
        Start::Time(t) => {
            serde_json::json!({"start_time": t, "next_by_subj": filter, "batch": batch})
        }
    };
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ScanError(format!("subscribe: {e}")))?;
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{stream}"),
            inbox,
            Bytes::from(req.to_string()),
        )
        .await
        .map_err(|e| ScanError(format!("publish: {e}")))?;
    let mut out = Page::default();
    loop {
        let msg = match tokio::time::timeout(timeout, sub.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(ScanError("subscription closed".into())),
            Err(_) => {
                return Err(ScanError(format!(
                    "no answer from {stream} within {} ms",
                    timeout.as_millis()
                )));
            }
        };
        if let Some(status) = msg.status {
            match status.as_u16() {
                204 => {
                    out.pending_after = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Num-Pending"))
                        .and_then(|v| v.as_str().parse().ok());
                    break;
                }
                404 => {
                    out.pending_after = Some(0);
                    break;
                }
                503 => return Err(ScanError(format!("{stream}: no responders"))),
                code => {
                    return Err(ScanError(format!(
                        "{stream}: status {code} {}",
                        msg.description.unwrap_or_default()
                    )));
                }
            }
        }
        let Some(headers) = msg.headers else {
            return Err(ScanError(format!("{stream}: answer without headers")));
        };
        let seq = headers
            .get("Nats-Sequence")
            .and_then(|v| v.as_str().parse().ok())
            .ok_or_else(|| ScanError(format!("{stream}: answer without Nats-Sequence")))?;
        let subject = headers
            .get("Nats-Subject")
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let pending = headers
            .get("Nats-Num-Pending")
            .and_then(|v| v.as_str().parse().ok());
        out.msgs.push(Raw {
            seq,
            subject,
            headers,
            payload: msg.payload,
            pending,
        });
    }
    let _ = sub.unsubscribe().await;
    Ok(out)
}

/// Every message of `stream` whose subject matches `filter`, from sequence `from` on, in
/// sequence order; at most `limit` (`None` = all). `start_time` (RFC 3339) skips older.
///
/// # Errors
/// [`ScanError`] when the server does not answer within `timeout` per page or answers
/// with an error status.
pub async fn scan(
    client: &async_nats::Client,
    stream: &str,
    filter: &str,
    from: u64,
    limit: Option<usize>,
    start_time: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Raw>, ScanError> {
    let mut out: Vec<Raw> = Vec::new();
    let mut at = match start_time {
        Some(t) => Start::Time(t),
        None => Start::Seq(from.max(1)),
    };
    loop {
        let want = limit.map_or(PAGE, |l| (l - out.len()).min(PAGE));
        if want == 0 {
            return Ok(out);
        }
        let p = page(client, stream, filter, at, want, timeout).await?;
        let got = p.msgs.len();
        if let Some(last) = p.msgs.last() {
            at = Start::Seq(last.seq + 1);
        }
        out.extend(p.msgs);
        if got == 0 || p.pending_after == Some(0) || limit.is_some_and(|l| out.len() >= l) {
            return Ok(out);
        }
    }
}
