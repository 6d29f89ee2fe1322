//! `relay inbox`: read your mail.
//!
//! Default: fetch under a lease, print, then ack — a message is acked only after it was
//! written out in full. `--no-ack` leaves it delivered (it comes back after the lease);
//! `--peek` changes nothing. Mail of several threads is printed grouped by thread.

use std::time::Duration;

use serde::Serialize;

use super::{Ctx, EXIT_OK, output};
use crate::store::{DEFAULT_LEASE, Fetch, FetchMode, Filter, Message, Store, names};

/// Arguments of `relay inbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which messages, and what reading does to them.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// What to read and what reading does; shared by `inbox` and `wait`.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Show pending mail without changing anything.
    #[arg(long, conflicts_with = "no_ack")]
    pub peek: bool,
    /// At most this many messages, oldest first [range: 1-10000]
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Mark the messages delivered but do not ack them; unacked messages are handed out
    /// again when the lease ends.
    #[arg(long)]
    pub no_ack: bool,
    /// Lease for --no-ack, e.g. 60s (1s to 24h).
    #[arg(long, value_parser = super::parse_lease, default_value = "60s")]
    pub lease: Duration,
    /// Only messages from this endpoint (name, id or prefix).
    #[arg(long)]
    pub from: Option<String>,
    /// Only messages in this thread.
    #[arg(long)]
    pub thread: Option<String>,
}

impl ReadArgs {
    /// Whether messages are acked after printing.
    pub(crate) fn acks(&self) -> bool {
        !self.peek && !self.no_ack
    }

    /// The fetch request these options describe (`--from` resolved to an endpoint id).
    pub(crate) fn fetch(&self, store: &dyn Store) -> anyhow::Result<Fetch> {
        let from = match names::optional(self.from.clone()) {
            Some(f) => Some(store.resolve(&f)?.id),
            None => None,
        };
        Ok(Fetch {
            limit: self.limit as usize,
            mode: if self.peek {
                FetchMode::Peek
            } else {
                FetchMode::Deliver {
                    lease: if self.lease.is_zero() {
                        DEFAULT_LEASE
                    } else {
                        self.lease
                    },
                }
            },
            filter: Filter {
                from,
                thread: names::optional(self.thread.clone()),
                ids: None,
                reply_to: None,
                exclude: None,
            },
        })
    }
}

#[derive(Serialize)]
pub(crate) struct Doc {
    pub messages: Vec<Message>,
    /// Whether the listed messages were acked after printing.
    pub acked: bool,
    /// `wait` only: false (a timed-out wait prints its own document).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
}

/// Prints fetched messages, then acks them (unless `ack` is false): ack follows output.
pub(crate) fn print_then_ack(
    ctx: &Ctx,
    store: &dyn Store,
    me: &str,
    messages: Vec<Message>,
    ack: bool,
    timed_out: Option<bool>,
) -> anyhow::Result<()> {
    let ack = ack && !messages.is_empty();
    let doc = Doc {
        messages,
        acked: ack,
        timed_out,
    };
    output::emit(ctx.json, &doc, || {
        if doc.messages.is_empty() {
            "no mail".into()
        } else {
            grouped(&doc.messages)
        }
    });
    // Acked once the consumer has read the output, not when it sits in a pipe buffer.
    if ack && output::drained_for_ack() {
        let ids: Vec<String> = doc.messages.iter().map(|m| m.id.clone()).collect();
        store.ack(Some(me), &ids)?;
    }
    Ok(())
}

/// Messages for a terminal (oldest first): as [`output::messages`] prints them when they
/// are all of one thread; grouped by thread otherwise, a heading per thread in the order
/// of its first message. A heading starts at column 0 without `──`, so it reads as
/// neither a message header nor a body line (bodies are indented).
pub(crate) fn grouped(msgs: &[Message]) -> String {
    let groups = crate::coord::thread::by_thread(msgs);
    if groups.len() < 2 {
        return output::messages(msgs);
    }
    let mut s = String::new();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let n = g.messages.len();
        let count = format!("{n} message{}", if n == 1 { "" } else { "s" });
        match g.thread {
            Some(t) => s.push_str(&format!(
                "thread {} · {count}\n",
                crate::agents::fence::quoted(&output::escape_line(t))
            )),
            None => s.push_str(&format!("no thread · {count}\n")),
        }
        for m in &g.messages {
            s.push_str(&output::messages(std::slice::from_ref(*m)));
        }
    }
    s
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    let req = a.read.fetch(&store)?;
    let messages = store.fetch(&me.id, &req)?;
    print_then_ack(ctx, &store, &me.id, messages, a.read.acks(), None)?;
    Ok(EXIT_OK)
}
