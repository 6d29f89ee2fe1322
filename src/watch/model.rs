//! What `relay watch` shows, as plain data: a snapshot of the bus, changed by the events
//! that follow it, with the operator's filter, selection and open message. No terminal
//! and no store here — the app feeds it ([`super::feed`]) and the view draws it
//! ([`super::view`]).

use std::collections::{HashMap, VecDeque};

use crate::agents::presence::Presence;
use crate::store::{Endpoint, Event, EventKind, Intent, Message, Reservation, RosterEntry, State};

use super::text;

/// Messages the snapshot starts the log with: the newest 200 stored.
pub const SNAPSHOT_MESSAGES: usize = 200;

/// Most rows the log keeps: 2000 (older rows are dropped as new ones come).
pub const LOG_CAP: usize = 2000;

/// Rows one PageUp / PageDown moves.
pub const PAGE: usize = 10;

/// Where a message is, as the log shows it: its receipt state, or what ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowState {
    /// Stored, no reader has it (or it came back to the mailbox).
    Queued,
    /// A reader has it under a lease.
    Delivered,
    /// The reader confirmed it.
    Acked,
    /// gc deleted it unread after its expiry.
    Expired,
    /// The send was refused; nothing was stored.
    Rejected,
}

impl RowState {
    /// The printed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Queued => "queued",
            RowState::Delivered => "delivered",
            RowState::Acked => "acked",
            RowState::Expired => "expired",
            RowState::Rejected => "rejected",
        }
    }
}

impl From<State> for RowState {
    fn from(s: State) -> RowState {
        match s {
            State::Queued => RowState::Queued,
            State::Delivered => RowState::Delivered,
            State::Acked => RowState::Acked,
        }
    }
}

/// What tells two log rows apart: a message by its id; a reject (nothing stored, so no
/// id) by its event's cursor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowKey {
    /// A stored message.
    Message(String),
    /// A refused send.
    Reject(u64),
}

/// One line of the message log.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Which message (or reject) this is.
    pub key: RowKey,
    /// When it was sent (or refused), ms since the epoch.
    pub at: i64,
    /// The sender's endpoint id.
    pub from: Option<String>,
    /// The sender's name when it sent, as stored with the message.
    pub from_name: Option<String>,
    /// The recipient's endpoint id (for a reject: maybe the target as the sender wrote it).
    pub to: Option<String>,
    /// The thread, if any.
    pub thread: Option<String>,
    /// The route it took: `live`, `mailbox` or `inject`; `None` when not known (a message
    /// older than the events the snapshot read).
    pub route: Option<&'static str>,
    /// Its state now.
    pub state: RowState,
    /// Why it was refused (a reject's error kind).
    pub reason: Option<String>,
    /// The sender expects a reply.
    pub request: bool,
}

impl Row {
    /// The message id, for a row of a stored message.
    pub fn message_id(&self) -> Option<&str> {
        match &self.key {
            RowKey::Message(id) => Some(id),
            RowKey::Reject(_) => None,
        }
    }

    fn of_message(m: &Message) -> Row {
        Row {
            key: RowKey::Message(m.id.clone()),
            at: m.created_at,
            from: Some(m.from.clone()),
            from_name: m.from_name.clone(),
            to: Some(m.to.clone()),
            thread: m.thread.clone(),
            route: None,
            state: m.state.into(),
            reason: None,
            request: m.intent == Intent::Request,
        }
    }

    fn of_event(e: &Event) -> Row {
        let rejected = e.kind == EventKind::Rejected;
        Row {
            key: match (&e.message, rejected) {
                (Some(id), false) => RowKey::Message(id.clone()),
                _ => RowKey::Reject(e.cursor),
            },
            at: e.at,
            from: e.from.clone(),
            from_name: None,
            to: e.to.clone(),
            thread: e.thread.clone(),
            route: route_of(e),
            state: if rejected {
                RowState::Rejected
            } else {
                RowState::Queued
            },
            reason: rejected.then(|| e.detail.clone().unwrap_or_default()),
            request: false,
        }
    }
}

/// The route an event tells of: a queued message's `detail` (`live` while held for a
/// hand-over, else `mailbox`), `inject` for one put into an idle session, `mailbox` for a
/// hand-over that fell back.
fn route_of(e: &Event) -> Option<&'static str> {
    match (e.kind, e.detail.as_deref()) {
        (EventKind::Queued, Some("live")) => Some("live"),
        (EventKind::Queued, _) => Some("mailbox"),
        (EventKind::Injected, _) => Some("inject"),
        (EventKind::Released, Some("mailbox")) => Some("mailbox"),
        _ => None,
    }
}

/// One endpoint as the endpoint pane shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRow {
    /// The endpoint as stored.
    pub endpoint: Endpoint,
    /// Messages queued or delivered-but-unacked for it.
    pub pending: u64,
    /// Its presence when last derived; `None` before the first probe.
    pub presence: Option<Presence>,
    /// When its oldest unread message was sent, ms since the epoch.
    pub oldest: Option<i64>,
}

/// What the store said when the view started (taken by [`super::feed::snapshot`]).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The event cursor taken *before* the rest was read: every change after it arrives
    /// as an event, so nothing between the snapshot and the follower is missed (changes
    /// the snapshot already shows arrive again and are applied idempotently).
    pub cursor: u64,
    /// The endpoints, in the roster's order; `None` when not read yet (the roster costs
    /// in proportion to the mail pending, so the first frame does not wait for it: the
    /// follower reads it first thing).
    pub endpoints: Option<Vec<EndpointRow>>,
    /// The names of the endpoints the messages mention, by id (`None`: no name).
    pub names: Vec<(String, Option<String>)>,
    /// The newest messages stored, newest first, each with its state.
    pub messages: Vec<Message>,
    /// The newest events up to `cursor`, oldest first: the routes of those messages and
    /// the rejects among them (a reject is stored nowhere else).
    pub recent: Vec<Event>,
    /// Live reservations.
    pub reservations: Vec<Reservation>,
}

/// What the follower read since the last batch ([`super::feed`]): events, then whatever
/// panes they made it look again at.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// New events, oldest first.
    pub events: Vec<Event>,
    /// The stored messages those events queued, as the store has them (an event does not
    /// say the intent or the sender's name then).
    pub messages: Vec<Message>,
    /// The roster (names, pending counts) when it was read again.
    pub roster: Option<Vec<RosterEntry>>,
    /// Presence of endpoints when it was derived again, by id.
    pub presence: Option<Vec<(String, Presence)>>,
    /// The oldest unread message's time of these endpoints, read again.
    pub oldest: Vec<(String, Option<i64>)>,
    /// The live reservations when they were read again.
    pub reservations: Option<Vec<Reservation>>,
    /// Something went wrong following the store (shown in the status line until the next
    /// batch that went right).
    pub error: Option<String>,
    /// Events were deleted by gc before the follower read them.
    pub lost: Option<(u64, u64)>,
}

impl Batch {
    /// Whether it carries nothing to show.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.messages.is_empty()
            && self.roster.is_none()
            && self.presence.is_none()
            && self.oldest.is_empty()
            && self.reservations.is_none()
            && self.error.is_none()
            && self.lost.is_none()
    }
}

/// A key the operator pressed (mapped from the terminal's by the app).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Arrow up (or `k`, outside the filter prompt).
    Up,
    /// Arrow down (or `j`).
    Down,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Home (or `g`).
    Home,
    /// End (or `G`).
    End,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Ctrl-C: quits from anywhere.
    Interrupt,
    /// A printable character.
    Char(char),
}

/// What a key asks the app to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Nothing changed.
    Nothing,
    /// The screen changed: draw it.
    Redraw,
    /// Read this message from the store and [`Model::show_message`] it.
    Open(String),
    /// Leave.
    Quit,
}

/// An opened message, escaped once when it was opened.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    /// The message id, or `reject` for a refused send.
    pub id: String,
    /// Header fields, label and value, values escaped.
    pub fields: Vec<(&'static str, String)>,
    /// The body's lines, escaped ([`text::body_lines`]); empty for a reject.
    pub body: Vec<String>,
    /// Lines scrolled past.
    pub scroll: usize,
}

/// Which screen is up.
#[derive(Debug, Clone, PartialEq)]
pub enum Screen {
    /// Endpoints, messages, reservations.
    Main,
    /// The key list over the main screen.
    Help,
    /// One message, full screen.
    Detail(Box<Detail>),
}

/// Everything `relay watch` shows.
#[derive(Debug, Clone)]
pub struct Model {
    /// The endpoint pane, in the roster's order.
    pub endpoints: Vec<EndpointRow>,
    /// The roster was read (until then the endpoint pane says it is reading).
    pub endpoints_read: bool,
    /// The log, newest first, at most [`LOG_CAP`].
    pub rows: VecDeque<Row>,
    /// Live reservations (ones past their expiry are hidden when drawn).
    pub reservations: Vec<Reservation>,
    /// The filter (`/`): rows whose sender, recipient (name or id) or thread contains it,
    /// ignoring case. Empty: every row.
    pub filter: String,
    /// The filter prompt is open (keys go into the filter).
    pub editing: bool,
    /// The selected row; `None`: the newest, following new rows as they come.
    pub selected: Option<RowKey>,
    /// The screen up.
    pub screen: Screen,
    /// The follower's last trouble, shown in the status line.
    pub error: Option<String>,
    names: HashMap<String, Option<String>>,
}

impl Model {
    /// The model of a snapshot.
    pub fn new(s: Snapshot) -> Model {
        let mut names: HashMap<String, Option<String>> = s.names.into_iter().collect();
        for e in s.endpoints.iter().flatten() {
            names.insert(e.endpoint.id.clone(), e.endpoint.name.clone());
        }
        let routes: HashMap<&str, &'static str> = s
            .recent
            .iter()
            .filter_map(|e| Some((e.message.as_deref()?, route_of(e)?)))
            .collect();
        let mut rows: Vec<Row> = s
            .messages
            .iter()
            .map(|m| {
                let mut r = Row::of_message(m);
                r.route = routes.get(m.id.as_str()).copied();
                r
            })
            .collect();
        // Rejects are stored nowhere but the event log; only those within the window of
        // the messages shown (or all, when fewer than a window's worth are stored).
        let since = match rows.len() {
            n if n >= SNAPSHOT_MESSAGES => rows.last().map_or(i64::MIN, |r| r.at),
            _ => i64::MIN,
        };
        rows.extend(
            s.recent
                .iter()
                .filter(|e| e.kind == EventKind::Rejected && e.at >= since)
                .map(Row::of_event),
        );
        // Newest first; stable, so messages of one millisecond keep the store's order.
        rows.sort_by_key(|r| std::cmp::Reverse(r.at));
        rows.truncate(LOG_CAP);
        Model {
            endpoints_read: s.endpoints.is_some(),
            endpoints: s.endpoints.unwrap_or_default(),
            rows: rows.into(),
            reservations: s.reservations,
            filter: String::new(),
            editing: false,
            selected: None,
            screen: Screen::Main,
            error: None,
            names,
        }
    }

    /// The current name of endpoint `id`, as far as the view knows.
    pub fn name_of(&self, id: &str) -> Option<&str> {
        self.names.get(id).and_then(|n| n.as_deref())
    }

    /// How an endpoint is shown: its current name, else the name it sent with, else its
    /// id (an id or a target as written is escaped: a reject's target is anyone's text).
    pub fn label(&self, id: Option<&str>, sent_as: Option<&str>) -> String {
        match id {
            None => "-".into(),
            Some(id) => match self.name_of(id).or(sent_as) {
                Some(n) => text::one_line(n),
                None => text::one_line(id),
            },
        }
    }

    /// Applies what the follower read.
    pub fn apply_batch(&mut self, b: Batch) {
        for e in &b.events {
            self.apply(e);
        }
        for m in &b.messages {
            if let Some(r) = self.row_mut(&RowKey::Message(m.id.clone())) {
                r.request = m.intent == Intent::Request;
                r.from_name.clone_from(&m.from_name);
            }
        }
        if let Some(roster) = b.roster {
            self.set_roster(roster);
        }
        if let Some(p) = b.presence {
            let p: HashMap<String, Presence> = p.into_iter().collect();
            for e in &mut self.endpoints {
                if let Some(&seen) = p.get(&e.endpoint.id) {
                    e.presence = Some(seen);
                }
            }
        }
        for (id, oldest) in b.oldest {
            if let Some(e) = self.endpoints.iter_mut().find(|e| e.endpoint.id == id) {
                e.oldest = oldest;
            }
        }
        if let Some(r) = b.reservations {
            self.reservations = r;
        }
        if let Some((from, to)) = b.lost {
            self.error = Some(format!(
                "events {from} to {to} were deleted by gc before they were read"
            ));
        } else {
            self.error = b.error;
        }
    }

    /// Applies one event: a new message or reject comes in at the top; a message's state
    /// or route changes in place; names follow renames. Idempotent for events the
    /// snapshot already showed: a state never moves back, except that a delivered message
    /// given back is queued again.
    pub fn apply(&mut self, e: &Event) {
        match e.kind {
            EventKind::Queued | EventKind::Rejected => {
                let row = Row::of_event(e);
                if let Some(r) = self.row_mut(&row.key) {
                    r.route = r.route.or(row.route);
                } else {
                    self.push(row);
                }
            }
            EventKind::Delivered => self.advance(e, RowState::Delivered),
            EventKind::Acked => self.advance(e, RowState::Acked),
            EventKind::Expired => self.advance(e, RowState::Expired),
            EventKind::Released => {
                if let Some(r) = self.message_row(e) {
                    if r.state == RowState::Delivered {
                        r.state = RowState::Queued;
                    }
                    if let Some(route) = route_of(e) {
                        r.route = Some(route);
                    }
                }
            }
            EventKind::Injected => {
                if let Some(r) = self.message_row(e) {
                    r.route = Some("inject");
                }
            }
            EventKind::Registered | EventKind::Renamed => {
                if let Some(id) = &e.endpoint {
                    let name = e.detail.clone().filter(|n| !n.is_empty());
                    self.names.insert(id.clone(), name.clone());
                    if let Some(ep) = self.endpoints.iter_mut().find(|x| &x.endpoint.id == id) {
                        ep.endpoint.name = name;
                    }
                }
            }
            EventKind::Presence
            | EventKind::Reserved
            | EventKind::Renewed
            | EventKind::Unreserved => {}
        }
    }

    /// Replaces the endpoints with a roster read again, keeping each one's presence and
    /// oldest unread until they are derived again.
    pub fn set_roster(&mut self, roster: Vec<RosterEntry>) {
        self.endpoints_read = true;
        let old: HashMap<String, (Option<Presence>, Option<i64>)> = self
            .endpoints
            .drain(..)
            .map(|e| (e.endpoint.id, (e.presence, e.oldest)))
            .collect();
        self.endpoints = roster
            .into_iter()
            .map(|r| {
                let (presence, oldest) = old.get(&r.endpoint.id).copied().unwrap_or_default();
                self.names
                    .insert(r.endpoint.id.clone(), r.endpoint.name.clone());
                EndpointRow {
                    endpoint: r.endpoint,
                    pending: r.pending,
                    presence,
                    oldest,
                }
            })
            .collect();
    }

    fn push(&mut self, row: Row) {
        // Newest first: a late event of an older message (clocks of two machines) still
        // goes in at the top, where the operator sees it arrive.
        self.rows.push_front(row);
        if self.rows.len() > LOG_CAP {
            self.rows.pop_back();
        }
    }

    fn row_mut(&mut self, key: &RowKey) -> Option<&mut Row> {
        self.rows.iter_mut().find(|r| &r.key == key)
    }

    fn message_row(&mut self, e: &Event) -> Option<&mut Row> {
        let key = RowKey::Message(e.message.clone()?);
        self.row_mut(&key)
    }

    fn advance(&mut self, e: &Event, to: RowState) {
        if let Some(r) = self.message_row(e)
            && r.state < to
        {
            r.state = to;
        }
    }

    /// Whether `r` passes the filter.
    pub fn matches(&self, r: &Row) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        let hit = |s: Option<&str>| s.is_some_and(|s| s.to_lowercase().contains(&needle));
        let ep = |id: &Option<String>| {
            hit(id.as_deref()) || id.as_deref().is_some_and(|i| hit(self.name_of(i)))
        };
        ep(&r.from) || hit(r.from_name.as_deref()) || ep(&r.to) || hit(r.thread.as_deref())
    }

    /// The rows the filter lets through, newest first.
    pub fn visible(&self) -> Vec<&Row> {
        self.rows.iter().filter(|r| self.matches(r)).collect()
    }

    /// The index of the selected row among [`Model::visible`] (0 when following, or when
    /// the selected row is filtered out or gone).
    pub fn selected_index(&self, visible: &[&Row]) -> usize {
        self.selected
            .as_ref()
            .and_then(|k| visible.iter().position(|r| &r.key == k))
            .unwrap_or(0)
    }

    /// Whether the endpoint pane is on screen (presence is probed only then).
    pub fn endpoints_visible(&self) -> bool {
        !matches!(self.screen, Screen::Detail(_))
    }

    /// Handles a key.
    pub fn key(&mut self, k: Key) -> Command {
        if k == Key::Interrupt {
            return Command::Quit;
        }
        if self.editing {
            return self.filter_key(k);
        }
        if k == Key::Char('q') {
            return Command::Quit;
        }
        match &mut self.screen {
            Screen::Help => {
                self.screen = Screen::Main;
                Command::Redraw
            }
            Screen::Detail(d) => detail_key(d, k).unwrap_or_else(|| {
                self.screen = Screen::Main;
                Command::Redraw
            }),
            Screen::Main => self.main_key(k),
        }
    }

    fn filter_key(&mut self, k: Key) -> Command {
        match k {
            Key::Enter => self.editing = false,
            Key::Esc => {
                self.editing = false;
                self.filter.clear();
            }
            Key::Backspace => {
                self.filter.pop();
            }
            // Names, ids and threads hold no control characters; the prompt takes none.
            Key::Char(c) if !crate::store::names::is_control(c) => self.filter.push(c),
            _ => return Command::Nothing,
        }
        self.selected = None;
        Command::Redraw
    }

    fn main_key(&mut self, k: Key) -> Command {
        let visible = self.visible();
        let at = self.selected_index(&visible);
        let last = visible.len().saturating_sub(1);
        let to = match k {
            Key::Up | Key::Char('k') => at.saturating_sub(1),
            Key::Down | Key::Char('j') => (at + 1).min(last),
            Key::PageUp => at.saturating_sub(PAGE),
            Key::PageDown => (at + PAGE).min(last),
            Key::Home | Key::Char('g') => 0,
            Key::End | Key::Char('G') => last,
            Key::Enter => {
                return match visible.get(at) {
                    Some(r) => match r.message_id() {
                        Some(id) => Command::Open(id.to_string()),
                        None => {
                            let d = self.reject_detail(r);
                            self.screen = Screen::Detail(Box::new(d));
                            Command::Redraw
                        }
                    },
                    None => Command::Nothing,
                };
            }
            Key::Char('/') => {
                self.editing = true;
                return Command::Redraw;
            }
            Key::Char('?') => {
                self.screen = Screen::Help;
                return Command::Redraw;
            }
            Key::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.selected = None;
                return Command::Redraw;
            }
            _ => return Command::Nothing,
        };
        // Back at the top, the selection follows new rows again.
        let selected = (to > 0).then(|| visible[to].key.clone());
        if selected == self.selected {
            return Command::Nothing;
        }
        self.selected = selected;
        Command::Redraw
    }

    /// Opens message `id` as the store gave it (`None`: it is not stored any more — gc or
    /// expiry took it since it was listed).
    pub fn show_message(&mut self, id: &str, m: Option<&Message>) {
        let row = self.row_mut(&RowKey::Message(id.to_string())).cloned();
        let mut fields = vec![("id", text::one_line(id))];
        let body = match m {
            Some(m) => {
                let from = self.label(Some(&m.from), m.from_name.as_deref());
                let to = self.label(Some(&m.to), None);
                fields.push(("from", format!("{from} ({})", text::one_line(&m.from))));
                fields.push(("to", format!("{to} ({})", text::one_line(&m.to))));
                if let Some(t) = &m.thread {
                    fields.push(("thread", text::one_line(t)));
                }
                if let Some(r) = &m.reply_to {
                    fields.push(("reply to", text::one_line(r)));
                }
                fields.push(("intent", m.intent.as_str().into()));
                fields.push(("sent", text::time(m.created_at)));
                fields.push(("state", RowState::from(m.state).as_str().into()));
                if let Some(route) = row.as_ref().and_then(|r| r.route) {
                    fields.push(("route", route.into()));
                }
                fields.push(("deliveries", m.deliveries.to_string()));
                fields.push(("type", text::one_line(&m.content_type)));
                fields.push(("size", format!("{} bytes", m.body.len())));
                text::body_lines(&m.text())
            }
            None => {
                fields.push((
                    "state",
                    "no longer stored (acked and collected, or expired)".into(),
                ));
                Vec::new()
            }
        };
        self.screen = Screen::Detail(Box::new(Detail {
            id: id.to_string(),
            fields,
            body,
            scroll: 0,
        }));
    }

    fn reject_detail(&self, r: &Row) -> Detail {
        Detail {
            id: "reject".into(),
            fields: vec![
                ("from", self.label(r.from.as_deref(), None)),
                ("to", self.label(r.to.as_deref(), None)),
                (
                    "thread",
                    r.thread.as_deref().map_or("-".into(), text::one_line),
                ),
                ("refused", text::time(r.at)),
                ("state", "rejected: nothing was stored".into()),
                ("reason", text::one_line(r.reason.as_deref().unwrap_or("-"))),
            ],
            body: Vec::new(),
            scroll: 0,
        }
    }
}

/// A key in an open message; `None` closes it.
fn detail_key(d: &mut Detail, k: Key) -> Option<Command> {
    let last = d.body.len().saturating_sub(1);
    let to = match k {
        Key::Up | Key::Char('k') => d.scroll.saturating_sub(1),
        Key::Down | Key::Char('j') => (d.scroll + 1).min(last),
        Key::PageUp => d.scroll.saturating_sub(PAGE),
        Key::PageDown | Key::Char(' ') => (d.scroll + PAGE).min(last),
        Key::Home | Key::Char('g') => 0,
        Key::End | Key::Char('G') => last,
        Key::Esc | Key::Enter | Key::Backspace => return None,
        _ => return Some(Command::Nothing),
    };
    if to == d.scroll {
        return Some(Command::Nothing);
    }
    d.scroll = to;
    Some(Command::Redraw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Kind;

    fn ep(id: &str, name: &str) -> EndpointRow {
        EndpointRow {
            endpoint: Endpoint {
                id: id.into(),
                name: Some(name.into()),
                kind: Kind::Process,
                cwd: None,
                pid: None,
                pid_start: None,
                host: Some("h".into()),
                mailbox: true,
                meta: Default::default(),
                created_at: 0,
                updated_at: 0,
            },
            pending: 0,
            presence: None,
            oldest: None,
        }
    }

    fn msg(id: &str, at: i64, state: State) -> Message {
        Message {
            id: id.into(),
            from: "a1".into(),
            from_name: Some("alice".into()),
            to: "b1".into(),
            thread: Some("build".into()),
            reply_to: None,
            intent: Intent::Notify,
            content_type: "text/plain".into(),
            body: b"hello".to_vec(),
            created_at: at,
            expires_at: None,
            state,
            deliveries: 0,
        }
    }

    fn ev(cursor: u64, kind: EventKind, message: Option<&str>, detail: Option<&str>) -> Event {
        Event {
            cursor,
            at: 1000 + cursor as i64,
            kind,
            message: message.map(str::to_string),
            from: Some("a1".into()),
            to: Some("b1".into()),
            thread: Some("t".into()),
            endpoint: None,
            detail: detail.map(str::to_string),
        }
    }

    fn model() -> Model {
        Model::new(Snapshot {
            cursor: 10,
            endpoints: Some(vec![ep("a1", "alice"), ep("b1", "bob")]),
            names: Vec::new(),
            messages: vec![msg("m2", 20, State::Acked), msg("m1", 10, State::Queued)],
            recent: vec![
                ev(3, EventKind::Queued, Some("m1"), Some("mailbox")),
                ev(4, EventKind::Rejected, None, Some("unknown-target")),
                ev(5, EventKind::Queued, Some("m2"), Some("live")),
            ],
            reservations: Vec::new(),
        })
    }

    fn keys(m: &Model) -> Vec<RowKey> {
        m.visible().iter().map(|r| r.key.clone()).collect()
    }

    #[test]
    fn the_snapshot_merges_messages_and_rejects_newest_first_with_routes() {
        let m = model();
        assert_eq!(
            keys(&m),
            [
                RowKey::Reject(4),
                RowKey::Message("m2".into()),
                RowKey::Message("m1".into())
            ]
        );
        assert_eq!(m.rows[1].route, Some("live"));
        assert_eq!(m.rows[2].route, Some("mailbox"));
        assert_eq!(m.rows[0].state, RowState::Rejected);
        assert_eq!(m.rows[0].reason.as_deref(), Some("unknown-target"));
        assert_eq!(m.label(Some("a1"), None), "alice");
    }

    #[test]
    fn states_change_in_place_and_never_move_back() {
        let mut m = model();
        m.apply(&ev(11, EventKind::Queued, Some("m3"), Some("mailbox")));
        assert_eq!(m.rows[0].key, RowKey::Message("m3".into()));
        assert_eq!(m.rows[0].state, RowState::Queued);
        m.apply(&ev(12, EventKind::Delivered, Some("m3"), None));
        assert_eq!(m.rows[0].state, RowState::Delivered);
        m.apply(&ev(13, EventKind::Released, Some("m3"), None));
        assert_eq!(m.rows[0].state, RowState::Queued);
        m.apply(&ev(14, EventKind::Acked, Some("m3"), None));
        // A replayed event the snapshot already showed changes nothing.
        m.apply(&ev(15, EventKind::Delivered, Some("m3"), None));
        m.apply(&ev(16, EventKind::Queued, Some("m3"), Some("mailbox")));
        assert_eq!(m.rows[0].state, RowState::Acked);
        assert_eq!(m.rows.len(), 4);
        m.apply(&ev(17, EventKind::Injected, Some("m1"), Some("inject")));
        let m1 = m
            .rows
            .iter()
            .find(|r| r.message_id() == Some("m1"))
            .unwrap();
        assert_eq!(m1.route, Some("inject"));
        // Events of messages older than the log change nothing.
        m.apply(&ev(18, EventKind::Acked, Some("gone"), None));
        assert_eq!(m.rows.len(), 4);
    }

    #[test]
    fn queued_rows_learn_their_intent_from_the_stored_message() {
        let mut m = model();
        let mut stored = msg("m3", 30, State::Queued);
        stored.intent = Intent::Request;
        m.apply_batch(Batch {
            events: vec![ev(11, EventKind::Queued, Some("m3"), Some("mailbox"))],
            messages: vec![stored],
            ..Batch::default()
        });
        assert!(m.rows[0].request);
        assert_eq!(m.rows[0].from_name.as_deref(), Some("alice"));
    }

    #[test]
    fn rejects_come_in_as_rows_with_their_reason() {
        let mut m = model();
        m.apply(&ev(11, EventKind::Rejected, None, Some("loop-guard")));
        assert_eq!(m.rows[0].key, RowKey::Reject(11));
        assert_eq!(m.rows[0].reason.as_deref(), Some("loop-guard"));
        m.apply(&ev(11, EventKind::Rejected, None, Some("loop-guard")));
        assert_eq!(m.rows.len(), 4, "the same reject twice is one row");
    }

    #[test]
    fn renames_and_rosters_update_names_but_keep_presence() {
        let mut m = model();
        m.endpoints[0].presence = Some(Presence::Live);
        let mut e = ev(11, EventKind::Renamed, None, Some("carol"));
        e.endpoint = Some("a1".into());
        m.apply(&e);
        assert_eq!(m.label(Some("a1"), Some("alice")), "carol");
        let roster = m
            .endpoints
            .iter()
            .map(|e| RosterEntry {
                endpoint: e.endpoint.clone(),
                pending: 7,
            })
            .collect();
        m.apply_batch(Batch {
            roster: Some(roster),
            oldest: vec![("b1".into(), Some(5))],
            ..Batch::default()
        });
        assert_eq!(m.endpoints[0].presence, Some(Presence::Live));
        assert_eq!(m.endpoints[0].pending, 7);
        assert_eq!(m.endpoints[1].oldest, Some(5));
    }

    #[test]
    fn the_filter_matches_names_ids_and_threads() {
        let mut m = model();
        m.key(Key::Char('/'));
        for c in "BOB".chars() {
            m.key(Key::Char(c));
        }
        assert_eq!(m.filter, "BOB");
        assert_eq!(m.visible().len(), 3, "every row is to bob");
        m.key(Key::Esc);
        assert!(m.filter.is_empty() && !m.editing);
        m.key(Key::Char('/'));
        for c in "build".chars() {
            m.key(Key::Char(c));
        }
        assert_eq!(m.key(Key::Enter), Command::Redraw);
        assert!(!m.editing);
        assert_eq!(keys(&m).len(), 2, "the reject has no thread 'build'");
        // q is typed into the prompt, not taken as quit.
        m.key(Key::Char('/'));
        assert_eq!(m.key(Key::Char('q')), Command::Redraw);
        m.key(Key::Backspace);
        m.key(Key::Enter);
        m.key(Key::Esc);
        assert_eq!(m.visible().len(), 3);
    }

    #[test]
    fn selection_moves_holds_its_row_and_follows_at_the_top() {
        let mut m = model();
        assert_eq!(m.key(Key::Up), Command::Nothing);
        m.key(Key::Char('j'));
        assert_eq!(m.selected, Some(RowKey::Message("m2".into())));
        m.apply(&ev(11, EventKind::Queued, Some("m3"), None));
        let v = m.visible();
        assert_eq!(v[m.selected_index(&v)].key, RowKey::Message("m2".into()));
        m.key(Key::End);
        assert_eq!(m.selected, Some(RowKey::Message("m1".into())));
        m.key(Key::Home);
        assert_eq!(m.selected, None);
        m.apply(&ev(12, EventKind::Queued, Some("m4"), None));
        let v = m.visible();
        assert_eq!(v[m.selected_index(&v)].key, RowKey::Message("m4".into()));
    }

    #[test]
    fn enter_opens_messages_and_rejects_and_q_quits() {
        let mut m = model();
        m.key(Key::Down);
        assert_eq!(m.key(Key::Enter), Command::Open("m2".into()));
        let stored = msg("m2", 20, State::Acked);
        m.show_message("m2", Some(&stored));
        assert!(!m.endpoints_visible());
        let Screen::Detail(d) = &m.screen else {
            panic!("not open")
        };
        assert_eq!(d.body, vec!["hello".to_string()]);
        assert!(d.fields.contains(&("route", "live".into())));
        assert_eq!(m.key(Key::Esc), Command::Redraw);
        assert_eq!(m.screen, Screen::Main);
        m.key(Key::Home);
        assert_eq!(m.key(Key::Enter), Command::Redraw);
        let Screen::Detail(d) = &m.screen else {
            panic!("reject not open")
        };
        assert!(d.fields.contains(&("reason", "unknown-target".into())));
        m.key(Key::Enter);
        m.key(Key::Char('?'));
        assert_eq!(m.screen, Screen::Help);
        assert_eq!(m.key(Key::Char('q')), Command::Quit);
        assert_eq!(m.key(Key::Interrupt), Command::Quit);
    }

    #[test]
    fn endpoints_read_later_fill_the_pane_and_names_come_first() {
        let mut m = Model::new(Snapshot {
            names: vec![("a1".into(), Some("alice".into())), ("b1".into(), None)],
            messages: vec![msg("m1", 10, State::Queued)],
            ..Snapshot::default()
        });
        assert!(!m.endpoints_read && m.endpoints.is_empty());
        assert_eq!(m.label(Some("a1"), None), "alice");
        assert_eq!(m.label(Some("b1"), None), "b1");
        let mut bob = ep("b1", "bob");
        bob.presence = Some(Presence::Active);
        m.apply_batch(Batch {
            roster: Some(vec![RosterEntry {
                endpoint: bob.endpoint,
                pending: 1,
            }]),
            presence: Some(vec![("b1".into(), Presence::Active)]),
            ..Batch::default()
        });
        assert!(m.endpoints_read);
        assert_eq!(m.endpoints[0].presence, Some(Presence::Active));
        assert_eq!(m.label(Some("b1"), None), "bob");
    }

    #[test]
    fn the_log_keeps_at_most_its_cap() {
        let mut m = model();
        for i in 0..LOG_CAP as u64 + 5 {
            m.apply(&ev(
                100 + i,
                EventKind::Queued,
                Some(&format!("x{i}")),
                None,
            ));
        }
        assert_eq!(m.rows.len(), LOG_CAP);
    }
}
