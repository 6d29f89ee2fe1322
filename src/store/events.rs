//! The event log (DESIGN.md §12): one record per change of state — a message queued,
//! delivered, acked, given back, injected, expired or rejected; an endpoint registered or
//! renamed; a session's process bound or unbound (presence); a reservation taken, renewed
//! or released — each with a **cursor** the store assigns.
//!
//! Cursors are integers that only grow: every event the store records later has a larger
//! one, and a cursor is never reused (not even after gc deletes old events). A consumer
//! that remembers the last cursor it handled and asks again with
//! [`EventQuery::after`] = that cursor misses nothing and sees nothing twice. Cursors of
//! two stores (SQLite and NATS, or two homes) are unrelated.
//!
//! Events are recorded by the change itself: on SQLite by triggers inside the transaction
//! that changes the row; on NATS the event stream sources the mail stream and the KV
//! buckets, so a change that was acknowledged is an event, with nothing a crash could fall
//! between. Rejects change no state (nothing is stored, DESIGN.md §7), so they are
//! recorded on their own by [`super::Store::record_event`]. JSON field names are part of
//! the documented output of `relay events` (docs/cli.md).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most events one [`super::Store::events`] call returns: 1000.
pub const MAX_EVENTS: usize = 1000;

/// What happened. Spelled `<subject>.<verb>` in JSON and on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A message was stored (`queued`). `detail`: the route, `live` for a message held
    /// for a live hand-over, else `mailbox`.
    #[serde(rename = "message.queued")]
    Queued,
    /// A reader got the message under a lease (`delivered`).
    #[serde(rename = "message.delivered")]
    Delivered,
    /// The reader confirmed it (`acked`).
    #[serde(rename = "message.acked")]
    Acked,
    /// A delivered message was given back to the mailbox before its lease ran out (a
    /// reader that could not show it), or a live hand-over fell back to the mailbox.
    #[serde(rename = "message.released")]
    Released,
    /// The message was put into its recipient's idle session as a turn (route `inject`).
    #[serde(rename = "message.injected")]
    Injected,
    /// gc deleted the message unread after its `expires_at`.
    #[serde(rename = "message.expired")]
    Expired,
    /// A send was refused; nothing was stored. `detail`: the reason, `<kind>: <what was
    /// wrong>` (e.g. `unknown-target: no endpoint is named … 'bobb'`); `to`: the target's
    /// id when it was found, else absent (a target as written is in the detail only).
    #[serde(rename = "message.rejected")]
    Rejected,
    /// An endpoint was created. `detail`: its name, if it has one.
    #[serde(rename = "endpoint.registered")]
    Registered,
    /// An endpoint's name changed. `detail`: the new name (empty when the name moved away
    /// to another endpoint).
    #[serde(rename = "endpoint.renamed")]
    Renamed,
    /// A fact presence is derived from changed. `detail`: `bound` (an agent process of the
    /// session was recorded: the session is there) or `unbound` (that record was removed:
    /// the session ended). Presence itself is derived when it is shown (`relay roster`).
    #[serde(rename = "presence.changed")]
    Presence,
    /// A reservation was granted. `endpoint`: the holder; `detail`: `<mode> <glob>`.
    #[serde(rename = "reservation.taken")]
    Reserved,
    /// A reservation's expiry was moved. `endpoint`: the holder; `detail`: `<mode> <glob>`.
    #[serde(rename = "reservation.renewed")]
    Renewed,
    /// A reservation was released or expired and was deleted. `endpoint`: the holder;
    /// `detail`: `<mode> <glob>`.
    #[serde(rename = "reservation.released")]
    Unreserved,
}

impl EventKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [EventKind; 13] = [
        EventKind::Queued,
        EventKind::Delivered,
        EventKind::Acked,
        EventKind::Released,
        EventKind::Injected,
        EventKind::Expired,
        EventKind::Rejected,
        EventKind::Registered,
        EventKind::Renamed,
        EventKind::Presence,
        EventKind::Reserved,
        EventKind::Renewed,
        EventKind::Unreserved,
    ];

    /// The stored and printed spelling, e.g. `message.queued`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "message.queued",
            EventKind::Delivered => "message.delivered",
            EventKind::Acked => "message.acked",
            EventKind::Released => "message.released",
            EventKind::Injected => "message.injected",
            EventKind::Expired => "message.expired",
            EventKind::Rejected => "message.rejected",
            EventKind::Registered => "endpoint.registered",
            EventKind::Renamed => "endpoint.renamed",
            EventKind::Presence => "presence.changed",
            EventKind::Reserved => "reservation.taken",
            EventKind::Renewed => "reservation.renewed",
            EventKind::Unreserved => "reservation.released",
        }
    }

    /// Whether this kind is about one message (`message` is set).
    pub fn is_message(self) -> bool {
        matches!(
            self,
            EventKind::Queued
                | EventKind::Delivered
                | EventKind::Acked
                | EventKind::Released
                | EventKind::Injected
                | EventKind::Expired
        )
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<EventKind, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind '{s}'"))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded event. Ids, not names: `from`, `to` and `endpoint` are endpoint ids (the
/// CLI shows names beside them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The store's cursor for this event (see the module docs).
    pub cursor: u64,
    /// When it was recorded, ms since the epoch.
    pub at: i64,
    /// What happened.
    pub kind: EventKind,
    /// The message id, for message events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The sender endpoint id, for message events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The recipient endpoint id, for message events (for a reject, when the target was
    /// found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The message's thread, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The endpoint the event is about: the registered or renamed endpoint, the session
    /// whose presence fact changed, the holder of a reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// What else the kind says (see [`EventKind`]); at most [`MAX_DETAIL`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Longest `detail` recorded, in bytes: 1024 (longer text is cut at a character boundary).
pub const MAX_DETAIL: usize = 1024;

impl Event {
    /// Whether `endpoint_id` takes part in this event: sender, recipient or the endpoint
    /// it is about.
    pub fn involves(&self, endpoint_id: &str) -> bool {
        [&self.from, &self.to, &self.endpoint]
            .into_iter()
            .any(|f| f.as_deref() == Some(endpoint_id))
    }
}

/// An event to record that changes no stored state (a reject), for
/// [`super::Store::record_event`].
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// What happened (in practice [`EventKind::Rejected`]).
    pub kind: Option<EventKind>,
    /// As [`Event::message`].
    pub message: Option<String>,
    /// As [`Event::from`].
    pub from: Option<String>,
    /// As [`Event::to`].
    pub to: Option<String>,
    /// As [`Event::thread`].
    pub thread: Option<String>,
    /// As [`Event::endpoint`].
    pub endpoint: Option<String>,
    /// As [`Event::detail`]; cut to [`MAX_DETAIL`] bytes.
    pub detail: Option<String>,
}

/// Which events [`super::Store::events`] returns, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events with a cursor greater than this; `None`: from the oldest kept.
    pub after: Option<u64>,
    /// `true`: the *newest* `limit` events after `after` (still returned oldest first),
    /// for a view that starts at the present; `false`: the oldest `limit`.
    pub tail: bool,
    /// Only events that [`Event::involves`] this endpoint id.
    pub participant: Option<String>,
    /// At most this many (1 to [`MAX_EVENTS`]; 0 is taken as 1).
    pub limit: usize,
}

/// What one [`super::Store::events`] call found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventPage {
    /// The matching events, oldest first.
    pub events: Vec<Event>,
    /// The cursor to ask with next ([`EventQuery::after`]): past every event this call
    /// looked at, matching or not, so a filtered consumer does not read them again. Equal
    /// to the query's `after` (or 0) when nothing was looked at.
    pub next: u64,
    /// The cursor of the newest event in the store when this call ran (0 when there is
    /// none).
    pub head: u64,
    /// The cursor of the oldest event still kept (0 when there is none). A consumer whose
    /// cursor is below `first - 1` lost events to gc; `relay events` says so.
    pub first: u64,
}

/// Cuts `s` to at most [`MAX_DETAIL`] bytes at a character boundary.
pub(crate) fn cut_detail(s: &str) -> &str {
    if s.len() <= MAX_DETAIL {
        return s;
    }
    let mut end = MAX_DETAIL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_spelling_and_json() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("message.lost".parse::<EventKind>().is_err());
    }

    #[test]
    fn details_are_cut_at_a_character_boundary() {
        let s = "é".repeat(MAX_DETAIL);
        let cut = cut_detail(&s);
        assert!(cut.len() <= MAX_DETAIL && cut.len() >= MAX_DETAIL - 1);
        assert_eq!(cut_detail("short"), "short");
    }
}
