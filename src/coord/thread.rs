//! Conversations (`relay thread`, the MCP `thread` tool) and grouping mail by thread
//! (`relay inbox`, the hooks' fenced block).
//!
//! A conversation is assembled from [`Store::history`] alone, so it reads the same on
//! every backend: the messages of a thread, or of the reply chain a message is part of,
//! closed under `reply_to` in both directions (the message a member answers, and every
//! answer to a member) until nothing new is found, at most [`MAX_CONVERSATION`] messages.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::labels::Labels;
use crate::store::{self, History, MAX_HISTORY, MIN_PREFIX, Message, Store, names};

/// Most messages one conversation holds: 1000. A longer one is cut (its newest messages
/// of the thread are kept) and says `truncated`.
pub const MAX_CONVERSATION: usize = 1000;

/// Ids asked for in one [`Store::history`] call while following `reply_to` links.
const CHUNK: usize = 200;

/// One message of a conversation, with its recipient's name.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The message (docs/cli.md's Message object: `state` is its receipt state now).
    #[serde(flatten)]
    pub message: Message,
    /// The recipient's current name, if it has one.
    pub to_name: Option<String>,
}

/// A conversation, oldest message first.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    /// The thread shown: the one the argument named, or the thread of the message it
    /// named; `None` for a reply chain outside any thread.
    pub thread: Option<String>,
    /// The message the argument named (its full id), when it named a message.
    pub message: Option<String>,
    /// The messages, oldest first (by `created_at`, then id).
    pub messages: Vec<Entry>,
    /// More messages belong to it than [`MAX_CONVERSATION`] (or than one history read
    /// returns): some were left out.
    pub truncated: bool,
}

/// The conversation `arg` names, tried in this order:
/// 1. the exact full id of a message the participant may read: that message, its thread,
///    the thread named after its id (replies to a message outside any thread are filed
///    under its id) and its reply chain;
/// 2. a thread that has messages;
/// 3. a unique message id prefix of at least [`MIN_PREFIX`] characters, as in 1.
///
/// An id comes first so that nobody can hide a message behind a thread they name after
/// it: such a thread's messages are shown, with their real senders, beside the message.
/// With `participant`, only messages that endpoint id sent or received are read (a
/// message of someone else's is unknown to it).
///
/// # Errors
/// [`store::Error::UnknownMessage`] when `arg` names neither (or a message the
/// participant may not read), [`store::Error::AmbiguousMessage`] for a prefix of several
/// messages, other store errors. [`not_found`] words the first two for a person.
pub fn conversation(
    store: &dyn Store,
    arg: &str,
    participant: Option<&str>,
) -> store::Result<Conversation> {
    let arg = arg.trim();
    let unknown = || store::Error::UnknownMessage {
        query: arg.to_string(),
    };
    let history = |h: History| {
        store.history(&History {
            participant: participant.map(str::to_string),
            ..h
        })
    };
    // The messages of thread `t`; `truncated` when there may be more.
    let thread_of = |t: &str| -> store::Result<(Vec<Message>, bool)> {
        if t.is_empty() || names::check_thread(t).is_err() {
            return Ok((Vec::new(), false));
        }
        // One more than is kept, to tell "exactly MAX_CONVERSATION" from "more". A read
        // capped below that (the store's MAX_HISTORY) that comes back full may have left
        // messages out, and says so.
        let asked = MAX_CONVERSATION + 1;
        let found = history(History {
            thread: Some(t.to_string()),
            limit: asked,
            ..History::default()
        })?;
        let more = found.len() > MAX_CONVERSATION || found.len() >= asked.min(MAX_HISTORY);
        Ok((found, more))
    };
    // The message with exactly this id, if the participant may read it.
    let message = |id: &str| -> store::Result<Option<Message>> {
        if id.is_empty() {
            return Ok(None);
        }
        Ok(history(History {
            ids: Some(vec![id.to_string()]),
            limit: 1,
            ..History::default()
        })?
        .pop())
    };
    let mut set: BTreeMap<String, Message> = BTreeMap::new();
    let mut truncated = false;
    let mut thread = None;
    let mut anchor = None;
    let mut found = message(arg)?;
    if found.is_none() {
        let (msgs, more) = thread_of(arg)?;
        if !msgs.is_empty() {
            truncated |= more;
            thread = Some(arg.to_string());
            set.extend(msgs.into_iter().map(|m| (m.id.clone(), m)));
        }
    }
    if found.is_none() && set.is_empty() {
        if arg.len() < MIN_PREFIX {
            return Err(unknown());
        }
        let id = store.receipt(arg)?.id;
        // Someone else's message: as unknown to this participant as a missing one.
        found = Some(message(&id)?.ok_or_else(unknown)?);
    }
    if let Some(m) = found {
        if let Some(t) = &m.thread {
            let (msgs, more) = thread_of(t)?;
            truncated |= more;
            set.extend(msgs.into_iter().map(|m| (m.id.clone(), m)));
            thread = Some(t.clone());
        }
        if m.thread.as_deref() != Some(m.id.as_str()) {
            let (msgs, more) = thread_of(&m.id)?;
            if !msgs.is_empty() {
                truncated |= more;
                thread.get_or_insert_with(|| m.id.clone());
                set.extend(msgs.into_iter().map(|m| (m.id.clone(), m)));
            }
        }
        anchor = Some(m.id.clone());
        set.insert(m.id.clone(), m);
    }
    // Follow reply_to links both ways to a fixpoint. `asked_up` and `expanded` make each
    // id cost one lookup at most, so cycles and missing (collected) messages end it.
    let mut asked_up: HashSet<String> = HashSet::new();
    let mut expanded: HashSet<String> = HashSet::new();
    loop {
        // Past the cap: cut below. At it exactly, keep following, so a reply outside
        // the thread still shows up as "more" rather than being missed unseen.
        if set.len() > MAX_CONVERSATION {
            break;
        }
        let up: Vec<String> = set
            .values()
            .filter_map(|m| m.reply_to.clone())
            .filter(|r| !set.contains_key(r) && !asked_up.contains(r))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let down: Vec<String> = set
            .keys()
            .filter(|id| !expanded.contains(*id))
            .cloned()
            .collect();
        if up.is_empty() && down.is_empty() {
            break;
        }
        for chunk in up.chunks(CHUNK) {
            asked_up.extend(chunk.iter().cloned());
            let found = history(History {
                ids: Some(chunk.to_vec()),
                limit: chunk.len(),
                ..History::default()
            })?;
            set.extend(found.into_iter().map(|m| (m.id.clone(), m)));
        }
        for chunk in down.chunks(CHUNK) {
            expanded.extend(chunk.iter().cloned());
            let found = history(History {
                reply_to: Some(chunk.to_vec()),
                limit: MAX_HISTORY,
                ..History::default()
            })?;
            truncated |= found.len() >= MAX_HISTORY;
            set.extend(found.into_iter().map(|m| (m.id.clone(), m)));
        }
    }
    let mut messages: Vec<Message> = set.into_values().collect();
    messages.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    if messages.len() > MAX_CONVERSATION {
        // Keep the newest: the end of a conversation is what a reader came for.
        messages.drain(..messages.len() - MAX_CONVERSATION);
        truncated = true;
    }
    let mut labels = Labels::new(store);
    let messages = messages
        .into_iter()
        .map(|m| Entry {
            to_name: labels.name(&m.to),
            message: m,
        })
        .collect();
    Ok(Conversation {
        thread,
        message: anchor,
        messages,
        truncated,
    })
}

/// `e` from [`conversation`] with what was looked for in front, when it says `arg` named
/// nothing: "no thread 'x' among the mail you can read, and no message either: …".
pub fn not_found(arg: &str, all: bool, e: store::Error) -> anyhow::Error {
    match e {
        store::Error::UnknownMessage { .. } | store::Error::AmbiguousMessage { .. } => {
            let scope = if all {
                "in the store"
            } else {
                "among the mail you can read"
            };
            anyhow::Error::new(e).context(format!(
                "no thread {arg:?} {scope}, and no single message by that id"
            ))
        }
        other => other.into(),
    }
}

/// Messages of one thread, in the order they were given.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// The thread; `None` for messages outside any thread.
    pub thread: Option<&'a str>,
    /// Its messages.
    pub messages: Vec<&'a Message>,
}

/// `msgs` (oldest first) grouped by thread, groups in the order of their first message
/// (first arrival), messages in each group in the order given. Messages without a thread
/// form one group of their own.
pub fn by_thread(msgs: &[Message]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for m in msgs {
        let t = m.thread.as_deref();
        match groups.iter_mut().find(|g| g.thread == t) {
            Some(g) => g.messages.push(m),
            None => groups.push(Group {
                thread: t,
                messages: vec![m],
            }),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Intent, State};

    fn msg(id: &str, thread: Option<&str>) -> Message {
        Message {
            id: id.into(),
            from: "f".into(),
            from_name: None,
            to: "t".into(),
            thread: thread.map(str::to_string),
            reply_to: None,
            intent: Intent::Notify,
            content_type: "text/plain".into(),
            body: Vec::new(),
            created_at: 0,
            expires_at: None,
            state: State::Queued,
            deliveries: 0,
        }
    }

    #[test]
    fn groups_follow_first_arrival() {
        let msgs = [
            msg("1", Some("b")),
            msg("2", None),
            msg("3", Some("a")),
            msg("4", Some("b")),
            msg("5", None),
        ];
        let g = by_thread(&msgs);
        let shape: Vec<(Option<&str>, Vec<&str>)> = g
            .iter()
            .map(|g| (g.thread, g.messages.iter().map(|m| m.id.as_str()).collect()))
            .collect();
        assert_eq!(
            shape,
            [
                (Some("b"), vec!["1", "4"]),
                (None, vec!["2", "5"]),
                (Some("a"), vec!["3"]),
            ]
        );
        assert_eq!(by_thread(&msgs[..1]).len(), 1);
        assert!(by_thread(&[]).is_empty());
    }
}
