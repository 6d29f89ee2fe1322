//! The event log as interfaces show it (store::events): where a reader starts, events
//! with the names of the endpoints they mention, and the gap a consumer whose cursor fell
//! behind gc lost. Shared by `relay events`, the MCP tool `events` and `relay watch`.

use serde::Serialize;

use super::labels::Labels;
use crate::store::{self, Event, EventKind, EventPage, EventQuery, MAX_EVENTS, Store};

/// Where a reader of the event log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this cursor (the last one the reader handled): nothing missed, nothing twice.
    After(u64),
    /// From the oldest event still kept.
    FromStart,
    /// With the newest `n` events (1 to [`MAX_EVENTS`]), then what comes after.
    Tail(usize),
}

/// An event with the current names of the endpoints it mentions (names are decoration:
/// `None` for an endpoint with no name, or one that is gone).
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    /// The event as recorded.
    #[serde(flatten)]
    pub event: Event,
    /// The sender's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    /// The recipient's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_name: Option<String>,
    /// The name of the endpoint the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
}

/// The first page for a reader starting at `start`, only events involving `participant`
/// when given, at most `limit` (1 to [`MAX_EVENTS`]).
///
/// # Errors
/// Store errors.
pub fn first_page(
    store: &dyn Store,
    start: Start,
    participant: Option<&str>,
    limit: usize,
) -> store::Result<EventPage> {
    let (after, tail, limit) = match start {
        Start::After(c) => (Some(c), false, limit),
        Start::FromStart => (None, false, limit),
        Start::Tail(n) => (None, true, n),
    };
    store.events(&EventQuery {
        after,
        tail,
        participant: participant.map(str::to_string),
        limit: limit.clamp(1, MAX_EVENTS),
    })
}

/// The next page after cursor `after`.
///
/// # Errors
/// Store errors.
pub fn page_after(
    store: &dyn Store,
    after: u64,
    participant: Option<&str>,
    limit: usize,
) -> store::Result<EventPage> {
    first_page(store, Start::After(after), participant, limit)
}

/// Events gc deleted before a reader resuming after `after` could read them: the range
/// of cursors `(from, to)` lost, when any. With no event kept at all (`first` 0) but a
/// head past `after`, everything up to the head was lost.
pub fn lost(after: u64, page: &EventPage) -> Option<(u64, u64)> {
    if page.first == 0 {
        return (page.head > after).then(|| (after + 1, page.head));
    }
    (page.first > after.saturating_add(1)).then(|| (after + 1, page.first - 1))
}

/// Names each event's endpoints, learning renames as they pass (an `endpoint.renamed`
/// event changes the name shown for the events after it).
pub fn name_all(labels: &mut Labels<'_>, events: Vec<Event>) -> Vec<Named> {
    events
        .into_iter()
        .map(|event| {
            if matches!(event.kind, EventKind::Renamed | EventKind::Registered)
                && let Some(id) = &event.endpoint
            {
                let name = event.detail.clone().filter(|n| !n.is_empty());
                labels.set(id, name);
            }
            let mut name = |id: &Option<String>| id.as_deref().and_then(|i| labels.name(i));
            Named {
                from_name: name(&event.from),
                to_name: name(&event.to),
                endpoint_name: name(&event.endpoint),
                event,
            }
        })
        .collect()
}
