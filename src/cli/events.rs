//! `relay events`: the event log (store::events), one line per event with its cursor;
//! `--follow` keeps printing as events happen, woken by the store (no polling).

use super::{Ctx, EXIT_OK, UsageError, output};
use crate::coord::events::{self, Named, Start};
use crate::coord::labels::Labels;
use crate::store::{Cancel, EventKind, MAX_EVENTS, MAX_WAIT, Store};

/// Events shown when neither `--since` nor `--from-start` is given.
const DEFAULT_TAIL: u32 = 20;

/// Arguments of `relay events`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each event has a CURSOR, a number that only grows. To stop and \
resume without missing or repeating anything, remember the cursor of the last event you \
handled and start again with --since CURSOR. Kinds: message.queued / delivered / acked / \
released / injected / expired / rejected (with the reason), endpoint.registered / renamed, \
presence.changed (bound / unbound), reservation.taken / renewed / released.
Without --since or --from-start, the newest 20 events (--tail) are shown first. Your own \
events only (mail you sent or received, your endpoint, your reservations) unless --all. \
--json prints one JSON object per line (cursor, at in ms, kind, message, from, to, thread, \
endpoint, detail and the names of the endpoints). Exit 0; 2 for a bad cursor."
)]
pub struct Args {
    /// Keep printing events as they happen (until interrupted).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start after this cursor (the last one you handled).
    #[arg(long, value_name = "CURSOR", conflicts_with_all = ["from_start", "tail"])]
    pub since: Option<u64>,
    /// Start from the oldest event still kept.
    #[arg(long, conflicts_with = "tail")]
    pub from_start: bool,
    /// Start with the newest N events (default 20) [range: 1-1000]
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_EVENTS as i64))]
    pub tail: Option<u32>,
    /// Every endpoint's events, not only yours (for a human operator; needs no identity).
    #[arg(long)]
    pub all: bool,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let me = if a.all {
        None
    } else {
        Some(ctx.me(&store)?.id)
    };
    let start = match (a.since, a.from_start) {
        (Some(c), _) => Start::After(c),
        (None, true) => Start::FromStart,
        (None, false) => Start::Tail(a.tail.unwrap_or(DEFAULT_TAIL) as usize),
    };
    let mut labels = Labels::new(&store);
    let mut page = events::first_page(&store, start, me.as_deref(), MAX_EVENTS)?;
    if let Start::After(c) = start {
        if c > page.head {
            return Err(UsageError(format!(
                "cursor {c} is past the newest event of this store ({}): a cursor is only \
                 valid for the store that gave it; start with --from-start or without --since",
                page.head
            ))
            .into());
        }
        warn_lost(c, &page);
    }
    let cancel = Cancel::new();
    loop {
        let got = page.events.len();
        for e in events::name_all(&mut labels, std::mem::take(&mut page.events)) {
            output::line(&if ctx.json {
                serde_json::to_string(&e)?
            } else {
                human(&e)
            });
        }
        let cursor = page.next;
        if got < MAX_EVENTS {
            if !a.follow {
                return Ok(EXIT_OK);
            }
            while !store.wait_events(cursor, MAX_WAIT, &cancel)? {}
        }
        // A follower that fell behind (stopped, or a slow reader of its pipe) may find
        // gc deleted what comes next: said on every page, not only the first.
        page = events::page_after(&store, cursor, me.as_deref(), MAX_EVENTS)?;
        warn_lost(cursor, &page);
    }
}

/// Says on stderr which events gc deleted before a reader after `after` could read them.
fn warn_lost(after: u64, page: &crate::store::EventPage) {
    if let Some((from, to)) = events::lost(after, page) {
        eprintln!(
            "relay: events {from} to {to} were deleted by gc before they were read; going on \
             from {}",
            to + 1
        );
    }
}

/// Other endpoints' text for one line: controls and invisible characters (zero-width,
/// joiners) escaped, as `relay watch` shows them, so `deploy` and `deploy\u{200b}` differ.
fn safe(s: &str) -> String {
    crate::watch::text::one_line(s)
}

/// `name` or the id, escaped for one line.
fn who(name: Option<&str>, id: Option<&str>) -> String {
    safe(name.or(id).unwrap_or("-"))
}

/// One event for a person: cursor, time, kind, who, and what else it says.
pub(crate) fn human(n: &Named) -> String {
    let e = &n.event;
    let mut s = format!(
        "{:>8}  {}  {:<20}",
        e.cursor,
        output::time(e.at),
        e.kind.as_str()
    );
    if e.kind.is_message() || e.kind == EventKind::Rejected {
        s.push_str(&format!(
            "  {} → {}",
            who(n.from_name.as_deref(), e.from.as_deref()),
            who(n.to_name.as_deref(), e.to.as_deref())
        ));
        if let Some(t) = &e.thread {
            s.push_str(&format!(
                " · thread {}",
                crate::agents::fence::quoted(&safe(t))
            ));
        }
        if let Some(m) = &e.message {
            s.push_str(&format!(" · {}", safe(m)));
        }
    } else if matches!(e.kind, EventKind::Registered | EventKind::Renamed) {
        // The detail is the name: show the id it belongs to.
        s.push_str(&format!("  {}", who(None, e.endpoint.as_deref())));
        let name = e.detail.as_deref().filter(|d| !d.is_empty());
        s.push_str(&format!(" · name {}", who(name, Some("(none)"))));
        return s;
    } else {
        s.push_str(&format!(
            "  {}",
            who(n.endpoint_name.as_deref(), e.endpoint.as_deref())
        ));
    }
    if let Some(d) = e.detail.as_deref().filter(|d| !d.is_empty()) {
        s.push_str(&format!(" · {}", safe(d)));
    }
    s
}
