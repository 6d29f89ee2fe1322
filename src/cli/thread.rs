//! `relay thread ID|THREAD`: one conversation, oldest first, with each message's receipt
//! state. Only the caller's own mail unless `--all`.

use super::{Ctx, EXIT_OK, UsageError, output};
use crate::coord::thread::{self, Conversation, Entry};

/// Arguments of `relay thread`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The argument is tried as the exact id of a message you can read \
(that message, its thread, the thread named after its id and its reply chain), then as a \
thread name that has messages, then as a unique message id prefix of at least 4 \
characters. Messages linked by reply_to into or out of it are shown too, at most 1000."
)]
pub struct Args {
    /// A thread, or a message id or unique id prefix.
    #[arg(value_name = "ID|THREAD")]
    pub target: String,
    /// Read every endpoint's mail, not only yours (for a human operator; needs no
    /// identity).
    #[arg(long)]
    pub all: bool,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let target = a.target.trim();
    if target.is_empty() {
        return Err(UsageError(
            "an empty argument: give a thread, or a message id or unique prefix".into(),
        )
        .into());
    }
    let store = ctx.store()?;
    let participant = if a.all {
        None
    } else {
        Some(ctx.me(&store)?.id)
    };
    let c = thread::conversation(&store, target, participant.as_deref())
        .map_err(|e| thread::not_found(target, a.all, e))?;
    output::emit(ctx.json, &c, || render(&c));
    Ok(EXIT_OK)
}

/// The conversation for a terminal: a title line, then each message as `inbox` prints
/// it with its recipient and receipt state in the header.
fn render(c: &Conversation) -> String {
    let n = c.messages.len();
    let mut s = match &c.thread {
        Some(t) => format!(
            "thread {} · {n} message{}",
            crate::agents::fence::quoted(&output::escape_line(t)),
            if n == 1 { "" } else { "s" }
        ),
        None => format!(
            "reply chain of {} · {n} message{}",
            c.message
                .as_deref()
                .map(output::escape_line)
                .unwrap_or_default(),
            if n == 1 { "" } else { "s" }
        ),
    };
    if c.truncated {
        s.push_str(&format!(
            " (cut at {}: older messages left out)",
            thread::MAX_CONVERSATION
        ));
    }
    s.push('\n');
    for e in &c.messages {
        s.push_str(&entry(
            e,
            c.message.as_deref() == Some(e.message.id.as_str()),
        ));
    }
    s
}

/// One message: `── from A → B · time · id X · state [· thread "t"] [· reply to Y]`, then
/// the body as `inbox` shows it (indented, escaped).
fn entry(e: &Entry, asked: bool) -> String {
    let m = &e.message;
    let mut head = format!(
        "── from {} → {} · {} · id {} · {}",
        super::search::who(m.from_name.as_deref(), &m.from),
        super::search::who(e.to_name.as_deref(), &m.to),
        output::time(m.created_at),
        output::escape_line(&m.id),
        m.state
    );
    if let Some(t) = &m.thread {
        head.push_str(&format!(
            " · thread {}",
            crate::agents::fence::quoted(&output::escape_line(t))
        ));
    }
    if let Some(r) = &m.reply_to {
        head.push_str(&format!(" · reply to {}", output::escape_line(r)));
    }
    if m.intent == crate::store::Intent::Request {
        head.push_str(" · request");
    }
    if asked {
        head.push_str(" · ◀");
    }
    // `output::messages` renders one message as a header line and its escaped, indented
    // body; its header is replaced by the richer one above. The header is one line: every
    // field in it is escaped, newlines included.
    let one = output::messages(std::slice::from_ref(m));
    let body = one.split_once('\n').map_or("", |(_, b)| b);
    format!("{head}\n{body}")
}
