//! `relay send <to> [--] <text…> | --stdin`: send a message through the router.

use std::io::Read;
use std::time::Duration;

use serde::Serialize;

use super::{Ctx, EXIT_OK, UsageError, output};
use crate::config::MAX_BODY_LIMIT;
use crate::route::{self, SendRequest, Sent};
use crate::store::{Intent, Store, TEXT_PLAIN};

/// Arguments of `relay send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  relay send bob --as alice 'tests pass on main'
  git diff | relay send reviewer --as alice --stdin --intent request
  relay send alice --as bob --reply-to 0190f5a2 -- '-1 from me'
  tail -n 50 build.log | relay send ops --stdin --lines

The receipt says the route (live, mailbox, inject: into an idle agent session in place,
wake: a dormant session resumed) and the state reached (queued, delivered, acked); follow
it with `relay status <id>`. Agent sessions are loop-guarded: at most 12 agent-to-agent
messages on a thread without a human one and 30 sends a minute (reject loop-guard, exit 3;
`relay register NAME --loop-thread N --loop-rate N` lifts them). Nothing is stored when the target is unknown, ambiguous, or the
body is over the cap (exit 3).")]
pub struct Args {
    /// Target: name, id, or unique id prefix (at least 4 characters).
    pub to: String,
    /// The message text (words are joined with spaces). Put `--` before text that starts
    /// with '-'.
    pub text: Vec<String>,
    /// Read the body from stdin (UTF-8 text) instead of arguments.
    #[arg(long, conflicts_with = "text")]
    pub stdin: bool,
    /// With --stdin: send each line as its own message.
    #[arg(long, requires = "stdin")]
    pub lines: bool,
    /// notify (default) or request (the sender expects a reply).
    #[arg(long, default_value = "notify")]
    pub intent: Intent,
    /// Conversation thread to file the message under (at most 256 bytes, no control
    /// characters).
    #[arg(long)]
    pub thread: Option<String>,
    /// Id (or unique prefix) of the message this answers; its thread is kept.
    #[arg(long, value_name = "ID")]
    pub reply_to: Option<String>,
    /// With --intent request: wait this long (at most 300s) for the reply and print it;
    /// exit 4 when none came. The reply is the first message with reply_to = this one.
    #[arg(long, value_parser = super::parse_duration, conflicts_with = "lines")]
    pub wait: Option<Duration>,
    /// Also resume the (dormant) target agent session so it reads the mail now: Claude Code
    /// and Codex sessions only. The wake runs in the background; see `relay wake`.
    #[arg(long, conflicts_with = "lines")]
    pub wake: bool,
    /// Drop the message if nobody read it within this long, e.g. 10m (up to 365 days).
    #[arg(long, value_parser = super::parse_ttl)]
    pub ttl: Option<Duration>,
}

#[derive(Serialize)]
struct Single<'a> {
    #[serde(flatten)]
    sent: &'a Sent,
    #[serde(skip_serializing_if = "Option::is_none")]
    wake: Option<&'a crate::agents::wake::FollowUp>,
}

#[derive(Serialize)]
struct Batch {
    sent: Vec<Sent>,
    count: usize,
}

/// Reads stdin up to the hard cap (16 MiB) + 1 byte, so more than the cap is never held
/// and never sent in part (with `--lines`, the lines past it would be lost). A body over
/// `body_cap` but within the hard cap is refused by the router with its exact size.
fn read_stdin(body_cap: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_BODY_LIMIT as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > MAX_BODY_LIMIT {
        return Err(crate::errors::TooLarge(format!(
            "stdin is more than {} MiB, the most `send --stdin` reads (and each body is capped \
             at {body_cap} bytes, RELAY_MAX_BODY); nothing was sent: send less, or stream it \
             with `relay stream`",
            MAX_BODY_LIMIT >> 20
        ))
        .into());
    }
    Ok(buf)
}

fn utf8(bytes: Vec<u8>) -> anyhow::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        UsageError(format!(
            "stdin is not valid UTF-8 (bad byte at offset {}); relay carries text, so \
             encode binary data first (e.g. base64) — nothing was sent",
            e.utf8_error().valid_up_to()
        ))
        .into()
    })
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let bodies: Vec<String> = if a.stdin {
        let text = utf8(read_stdin(ctx.config.max_body)?)?;
        if a.lines {
            text.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        } else if text.is_empty() {
            return Err(UsageError("stdin was empty: nothing to send".into()).into());
        } else {
            vec![text]
        }
    } else if a.text.is_empty() {
        return Err(UsageError(
            "nothing to send: give the text after the target, or --stdin".into(),
        )
        .into());
    } else {
        vec![a.text.join(" ")]
    };
    if let Some(w) = a.wait {
        if a.intent != Intent::Request {
            return Err(UsageError(
                "--wait needs --intent request: only requests get replies".into(),
            )
            .into());
        }
        if w > crate::store::MAX_WAIT {
            return Err(UsageError("--wait is at most 300s".into()).into());
        }
    }
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    // All or nothing: with --lines, one bad line stores none of them.
    let reqs = bodies
        .into_iter()
        .map(|body| SendRequest {
            from: me.clone(),
            to: a.to.clone(),
            body: body.into_bytes(),
            content_type: TEXT_PLAIN.into(),
            intent: a.intent,
            thread: a.thread.clone(),
            reply_to: a.reply_to.clone(),
            ttl: a.ttl,
            wake: a.wake,
            runtime_dir: Some(crate::transport::runtime_dir(&ctx.config.home)),
        })
        .collect();
    let mut sent = route::send_all(&store as &dyn Store, reqs)?;
    let human = |s: &Sent| {
        format!(
            "{} {} for {} via {} (thread {})",
            s.receipt.state,
            s.receipt.id,
            s.receipt.to_name.as_deref().unwrap_or(&s.receipt.to),
            s.route.route_name(),
            output::escape_line(s.receipt.thread.as_deref().unwrap_or("-"))
        )
    };
    if a.lines {
        let doc = Batch {
            count: sent.len(),
            sent,
        };
        output::emit(ctx.json, &doc, || {
            doc.sent.iter().map(human).collect::<Vec<_>>().join("\n")
        });
    } else if let Some(timeout) = a.wait
        && !sent.is_empty()
    {
        return wait_for_reply(ctx, &store, &me.id, sent.remove(0), timeout);
    } else if let Some(s) = sent.first() {
        let wake = crate::agents::wake::follow_up(&ctx.config.home, s);
        let doc = Single {
            sent: s,
            wake: wake.as_ref(),
        };
        output::emit(ctx.json, &doc, || {
            let mut text = human(s);
            match &wake {
                Some(crate::agents::wake::FollowUp::Started(w)) => text.push_str(&format!(
                    "\nwaking {} in the background (pid {}, log {})",
                    s.receipt.to_name.as_deref().unwrap_or(&s.receipt.to),
                    w.pid,
                    w.log.display()
                )),
                Some(crate::agents::wake::FollowUp::Failed(e)) => {
                    text.push_str(&format!("\nqueued, but {e}"))
                }
                None if s.route == route::Decision::Inject => text.push_str(&format!(
                    "\n{} is idle: its session is woken in place with the mail now",
                    s.receipt.to_name.as_deref().unwrap_or(&s.receipt.to)
                )),
                None => {}
            }
            text
        });
    }
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct Replied<'a> {
    #[serde(flatten)]
    sent: &'a Sent,
    reply: Option<&'a crate::store::Message>,
    /// How the reply came: `live` (a Reply frame) or `mailbox`.
    reply_route: Option<&'static str>,
    timed_out: bool,
}

/// Waits for the reply to a request and prints it with the receipt; exit 4 on timeout.
///
/// Two paths race: a `Reply` frame on the connection a live delivery left open, and the
/// mailbox (woken by the doorbell). Repliers store the reply before sending the frame, so
/// the mailbox always has it too; the frame is just faster. The reply is acked in the
/// store after printing, whichever path brought it.
fn wait_for_reply(
    ctx: &Ctx,
    store: &dyn crate::store::Store,
    me: &str,
    mut sent: Sent,
    timeout: Duration,
) -> anyhow::Result<u8> {
    use crate::store::{Fetch, FetchMode, Filter};
    let request_id = sent.receipt.id.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Reply>();
    if let Some(mut conn) = sent.live.take() {
        let (tx, id) = (tx.clone(), request_id.clone());
        std::thread::spawn(move || {
            match crate::transport::client::await_reply(&mut conn, &id, timeout) {
                Ok(Some(r)) => drop(tx.send(Reply::Live(r))),
                Ok(None) => {
                    tracing::debug!("live reply path: the peer closed without a reply frame")
                }
                Err(e) => tracing::debug!("live reply path: {e}"),
            }
        });
    }
    {
        let (mailbox, me, id) = (ctx.store()?, me.to_string(), request_id.clone());
        std::thread::spawn(move || {
            let req = Fetch {
                limit: 1,
                mode: FetchMode::Deliver {
                    lease: crate::store::DEFAULT_LEASE,
                },
                filter: Filter {
                    reply_to: Some(id),
                    ..Default::default()
                },
            };
            match mailbox.wait(&me, &req, timeout) {
                Ok(mut got) if !got.is_empty() => drop(tx.send(Reply::Mailbox(got.remove(0)))),
                Ok(_) => {}
                Err(e) => tracing::warn!("mailbox reply path: {e}"),
            }
        });
    }
    let (reply, path) = match rx.recv_timeout(timeout) {
        Ok(Reply::Mailbox(m)) => (Some(m), Some("mailbox")),
        Ok(Reply::Live(r)) => (Some(reply_message(store, me, &sent, r)), Some("live")),
        Err(_) => (None, None),
    };
    let doc = Replied {
        sent: &sent,
        reply: reply.as_ref(),
        reply_route: path,
        timed_out: reply.is_none(),
    };
    output::emit_outcome(ctx.json, &doc, reply.is_some(), || match &reply {
        Some(m) => output::messages(std::slice::from_ref(m)),
        None => format!(
            "sent {} via {}; no reply within {}",
            sent.receipt.id,
            sent.route.route_name(),
            humantime::format_duration(timeout)
        ),
    });
    match reply {
        Some(m) if !output::drained_for_ack() => {
            tracing::debug!("reply {} shown but not read yet; left unacked", m.id);
            Ok(super::EXIT_OK)
        }
        Some(m) => {
            // The reply was shown: an ack that fails now (or finds no row, for a reply that
            // came only as a frame) is logged, not turned into a failed send.
            if let Err(e) = store.ack(Some(me), std::slice::from_ref(&m.id)) {
                tracing::warn!("ack of reply {}: {e}", m.id);
            }
            Ok(super::EXIT_OK)
        }
        None => Ok(super::EXIT_TIMEOUT),
    }
}

/// How a reply arrived.
enum Reply {
    Live(crate::wire::catalogue::Reply),
    Mailbox(crate::store::Message),
}

/// The reply as a message: the frame's body with the stored receipt's sender, thread and
/// time (found whatever its state — the mailbox path may hold a lease on it). A reply
/// that came only as a frame (its sender could not store it) takes the request's thread.
fn reply_message(
    store: &dyn crate::store::Store,
    me: &str,
    sent: &Sent,
    r: crate::wire::catalogue::Reply,
) -> crate::store::Message {
    let stored = store.receipt(&r.message_id).ok();
    crate::store::Message {
        from: stored
            .as_ref()
            .map_or_else(|| sent.receipt.to.clone(), |s| s.from.clone()),
        from_name: sent.receipt.to_name.clone(),
        to: me.to_string(),
        thread: stored
            .as_ref()
            .and_then(|s| s.thread.clone())
            .or_else(|| Some(sent.receipt.thread.clone().unwrap_or(r.reply_to.clone()))),
        created_at: stored
            .as_ref()
            .map_or_else(crate::clock::now_ms, |s| s.created_at),
        id: r.message_id,
        reply_to: Some(r.reply_to),
        intent: crate::store::Intent::Notify,
        content_type: r.content_type,
        body: r.body,
        expires_at: None,
        state: crate::store::State::Acked,
        deliveries: 1,
    }
}
