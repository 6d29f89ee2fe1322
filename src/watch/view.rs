//! Drawing: a pure function of the [`Model`] and the time. Everything that came from
//! another endpoint goes through [`text`] first, so no control character reaches the
//! terminal raw; with colour off (`NO_COLOR`, `--no-color`) no colour is used at all —
//! only bold and reverse video.

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, HighlightSpacing, Paragraph, Row as TableRow, Table, TableState, Wrap,
};

use super::model::{Detail, Model, Row, RowState, Screen};
use super::text;
use crate::agents::presence::Presence;

/// How the screen looks beyond the model.
#[derive(Debug, Clone)]
pub struct Look {
    /// Where the store is, for the title line (already safe to show).
    pub title: String,
    /// Whether colours may be used.
    pub color: bool,
}

impl Look {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn bold(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    fn state(&self, s: RowState) -> Style {
        self.fg(match s {
            RowState::Queued => Color::Yellow,
            RowState::Delivered => Color::Cyan,
            RowState::Acked => Color::Green,
            RowState::Expired => Color::DarkGray,
            RowState::Rejected => Color::Red,
        })
    }

    fn presence(&self, p: Option<Presence>) -> Style {
        self.fg(match p {
            Some(Presence::Live | Presence::Active) => Color::Green,
            Some(Presence::Idle) => Color::Yellow,
            Some(Presence::Dormant) => Color::Blue,
            Some(Presence::Gone) | None => Color::DarkGray,
        })
    }
}

/// When the screen must be drawn again with nothing happening, because an age or an
/// expiry on it will read differently (or a reservation lapses): the soonest such change
/// after `now` (ms since the epoch); `None` when nothing on screen ticks. Ages of minutes
/// change once a minute, so an idle view wakes that rarely.
pub fn next_change(m: &Model, now: i64) -> Option<Duration> {
    if matches!(m.screen, Screen::Detail(_)) {
        return None;
    }
    let ages = m
        .endpoints
        .iter()
        .filter_map(|e| e.oldest)
        .map(|t| text::age_changes_in(t, now));
    let expiries = m
        .reservations
        .iter()
        .filter(|r| r.expires_at > now)
        .map(|r| text::countdown_changes_in(now, r.expires_at));
    // A few ms late rather than early: the draw then shows the new text.
    ages.chain(expiries)
        .min()
        .map(|ms| Duration::from_millis(ms.max(0) as u64 + 5))
}

/// Draws the whole screen for `now` (ms since the epoch).
pub fn draw(f: &mut Frame, m: &Model, look: &Look, now: i64) {
    let area = f.area();
    match &m.screen {
        Screen::Detail(d) => draw_detail(f, area, d, look),
        Screen::Main | Screen::Help => {
            draw_main(f, area, m, look, now);
            if m.screen == Screen::Help {
                draw_help(f, area);
            }
        }
    }
}

/// A pane height computed in u32, as the u16 ratatui takes (saturating).
fn pane_height(h: u32) -> u16 {
    u16::try_from(h).unwrap_or(u16::MAX)
}

fn draw_main(f: &mut Frame, area: Rect, m: &Model, look: &Look, now: i64) {
    let live: Vec<_> = m
        .reservations
        .iter()
        .filter(|r| r.expires_at > now)
        .collect();
    // Borders (2) and a header line (1) around each pane's rows.
    // In u32 and saturated: a very tall terminal or a huge roster must not overflow u16.
    let rows = |n: usize| {
        u32::try_from(n.max(1))
            .unwrap_or(u32::MAX)
            .saturating_add(3)
    };
    let usable = u32::from(area.height.saturating_sub(2));
    let ep_h = pane_height(rows(m.endpoints.len()).min(usable * 35 / 100).max(4));
    let res_h = pane_height(rows(live.len()).min(usable / 4).max(4));
    let [head, eps, msgs, res, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(ep_h),
        Constraint::Min(5),
        Constraint::Length(res_h),
        Constraint::Length(1),
    ])
    .areas(area);

    let title = Line::from(vec![
        Span::styled("relay watch", look.bold()),
        Span::raw(format!(
            "  {}  ·  {} endpoints  ·  {} reservations",
            look.title,
            m.endpoints.len(),
            live.len()
        )),
    ]);
    f.render_widget(Paragraph::new(title), head);

    draw_endpoints(f, eps, m, look, now);
    draw_messages(f, msgs, m, look);
    draw_reservations(f, res, &live, look, now);
    draw_footer(f, foot, m, look);
}

fn header(cells: &[&'static str], look: &Look) -> TableRow<'static> {
    TableRow::new(cells.iter().map(|c| Cell::from(*c))).style(look.bold())
}

fn draw_endpoints(f: &mut Frame, area: Rect, m: &Model, look: &Look, now: i64) {
    let rows = m.endpoints.iter().map(|e| {
        let ep = &e.endpoint;
        TableRow::new(vec![
            Cell::from(ep.name.as_deref().unwrap_or("-").to_string()),
            Cell::from(ep.kind.as_str()),
            Cell::from(text::one_line(ep.host.as_deref().unwrap_or("-"))),
            Cell::from(Span::styled(
                e.presence.map_or("?", Presence::as_str),
                look.presence(e.presence),
            )),
            Cell::from(e.pending.to_string()),
            Cell::from(e.oldest.map_or_else(|| "-".into(), |t| text::span(t, now))),
            Cell::from(ep.id.clone()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(11),
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Min(8),
        ],
    )
    .header(header(
        &[
            "NAME", "KIND", "HOST", "PRESENCE", "PENDING", "OLDEST", "ID",
        ],
        look,
    ))
    .block(Block::bordered().title(if m.endpoints_read {
        format!(" Endpoints ({}) ", m.endpoints.len())
    } else {
        " Endpoints (reading the roster…) ".to_string()
    }));
    f.render_widget(table, area);
}

fn message_row<'a>(m: &Model, r: &Row, look: &Look) -> TableRow<'a> {
    let who = format!(
        "{} → {}",
        m.label(r.from.as_deref(), r.from_name.as_deref()),
        m.label(r.to.as_deref(), None)
    );
    let note = match (&r.reason, r.request) {
        (Some(why), _) => text::one_line(why),
        (None, true) => "request".into(),
        (None, false) => String::new(),
    };
    let row = TableRow::new(vec![
        Cell::from(text::clock(r.at)),
        Cell::from(who),
        Cell::from(
            r.thread
                .as_deref()
                .map_or_else(|| "-".into(), text::one_line),
        ),
        Cell::from(r.route.unwrap_or("-")),
        Cell::from(Span::styled(r.state.as_str(), look.state(r.state))),
        Cell::from(note),
    ]);
    if r.state == RowState::Rejected {
        row.style(look.fg(Color::Red))
    } else {
        row
    }
}

fn draw_messages(f: &mut Frame, area: Rect, m: &Model, look: &Look) {
    let visible = m.visible();
    let mut title = format!(" Messages ({}", visible.len());
    if !m.filter.is_empty() {
        title.push_str(&format!(
            " of {} · filter \"{}\"",
            m.rows.len(),
            text::one_line(&m.filter)
        ));
    }
    title.push_str(") ");
    let mut state =
        TableState::new().with_selected((!visible.is_empty()).then(|| m.selected_index(&visible)));
    let rows: Vec<_> = visible.iter().map(|r| message_row(m, r, look)).collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(36),
            Constraint::Length(20),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Min(10),
        ],
    )
    .header(header(
        &["TIME UTC", "FROM → TO", "THREAD", "ROUTE", "STATE", "NOTE"],
        look,
    ))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    // A mark as well as reverse video: the selection shows in any terminal, and in text
    // captures of the screen.
    .highlight_symbol("▶")
    .highlight_spacing(HighlightSpacing::Always)
    .block(Block::bordered().title(title));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_reservations(
    f: &mut Frame,
    area: Rect,
    live: &[&crate::store::Reservation],
    look: &Look,
    now: i64,
) {
    let rows = live.iter().map(|r| {
        TableRow::new(vec![
            Cell::from(text::one_line(
                r.holder_name.as_deref().unwrap_or(&r.holder),
            )),
            Cell::from(r.mode.as_str()),
            Cell::from(text::one_line(&r.glob)),
            Cell::from(format!("in {}", text::span(now, r.expires_at))),
            Cell::from(text::one_line(&r.project)),
            Cell::from(text::one_line(r.reason.as_deref().unwrap_or(""))),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(9),
            Constraint::Length(28),
            Constraint::Length(7),
            Constraint::Length(36),
            Constraint::Min(8),
        ],
    )
    .header(header(
        &["HOLDER", "MODE", "GLOB", "EXPIRES", "PROJECT", "REASON"],
        look,
    ))
    .block(Block::bordered().title(format!(" Reservations ({}) ", live.len())));
    f.render_widget(table, area);
}

fn draw_footer(f: &mut Frame, area: Rect, m: &Model, look: &Look) {
    let line = if m.editing {
        Line::from(vec![
            Span::styled("filter: ", look.bold()),
            Span::raw(text::one_line(&m.filter)),
            Span::styled("▏", look.bold()),
            Span::raw("   Enter keep · Esc clear"),
        ])
    } else if let Some(e) = &m.error {
        Line::from(Span::styled(
            text::one_line(e),
            look.fg(Color::Red).add_modifier(Modifier::BOLD),
        ))
    } else {
        Line::from("↑↓/jk move · Enter open · / filter · Esc clear filter · ? help · q quit")
    };
    f.render_widget(Paragraph::new(line), area);
}

const HELP: &[(&str, &str)] = &[
    ("↑ ↓  j k", "move in the message log"),
    ("PgUp PgDn", "move a page"),
    (
        "Home End g G",
        "newest / oldest (at the top, new rows are followed)",
    ),
    (
        "Enter",
        "open the selected message (control characters shown escaped)",
    ),
    (
        "/",
        "filter by endpoint (name or id) or thread; Enter keeps it",
    ),
    ("Esc", "close a message or this help; clear the filter"),
    ("?", "this help"),
    ("Ctrl-L", "paint the whole screen again"),
    ("q  Ctrl-C", "quit"),
];

/// What the help says below the keys.
const HELP_NOTES: &[&str] = &[
    "Receipt states change in place: queued → delivered → acked.",
    "Driven by the store's events; presence is probed again every 5 s.",
];

fn draw_help(f: &mut Frame, area: Rect) {
    let w = area.width.min(84);
    let h = pane_height((HELP.len() + HELP_NOTES.len() + 3) as u32).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| Line::from(format!(" {k:<14} {what}")))
        .collect();
    lines.push(Line::from(""));
    lines.extend(HELP_NOTES.iter().map(|n| Line::from(format!(" {n}"))));
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" relay watch: keys ")),
        popup,
    );
}

fn draw_detail(f: &mut Frame, area: Rect, d: &Detail, look: &Look) {
    let fields_h = pane_height(d.fields.len().saturating_add(2).min(u16::MAX as usize) as u32)
        .min(area.height / 2);
    let [top, body, foot] = Layout::vertical([
        Constraint::Length(fields_h),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    let fields: Vec<Line> = d
        .fields
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:>10}: "), look.bold()),
                Span::raw(v.clone()),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(fields)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" Message {} ", d.id))),
        top,
    );
    let lines: Vec<Line> = d
        .body
        .iter()
        .skip(d.scroll)
        .map(|l| Line::from(l.as_str()))
        .collect();
    let title = match d.body.len() {
        0 => " Body (none) ".to_string(),
        n => format!(" Body (line {} of {n}) ", (d.scroll + 1).min(n)),
    };
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(title)),
        body,
    );
    f.render_widget(
        Paragraph::new("Esc/Enter back · ↑↓/jk PgUp/PgDn scroll · q quit"),
        foot,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    use super::*;
    use crate::store::{Endpoint, Event, EventKind, Intent, Kind, Message, State};
    use crate::watch::model::{EndpointRow, Key, Snapshot};

    fn ep(id: &str, name: &str) -> EndpointRow {
        EndpointRow {
            endpoint: Endpoint {
                id: id.into(),
                name: Some(name.into()),
                kind: Kind::Process,
                cwd: None,
                pid: None,
                pid_start: None,
                host: Some("box\x1b[2J".into()),
                mailbox: true,
                meta: Default::default(),
                created_at: 0,
                updated_at: 0,
            },
            pending: 1,
            presence: Some(Presence::Idle),
            oldest: Some(1_000),
        }
    }

    const HOSTILE: &str =
        "hi\x1b[31mRED\x1b]0;pwned\x07 \u{202e}evil\u{202c} a\u{200b}b\r\nline2\u{2028}x";

    fn model() -> Model {
        let m = Message {
            id: "0190-m1".into(),
            from: "a1".into(),
            from_name: Some("alice".into()),
            to: "b1".into(),
            thread: Some("th\u{200b}read".into()),
            reply_to: None,
            intent: Intent::Request,
            content_type: "text/plain".into(),
            body: HOSTILE.as_bytes().to_vec(),
            created_at: 2_000,
            expires_at: None,
            state: State::Queued,
            deliveries: 0,
        };
        let reject = Event {
            cursor: 2,
            at: 3_000,
            kind: EventKind::Rejected,
            message: None,
            from: Some("a1".into()),
            to: Some("ev\x1b[1mil".into()),
            thread: None,
            endpoint: None,
            detail: Some("unknown-target".into()),
        };
        Model::new(Snapshot {
            cursor: 2,
            endpoints: Some(vec![ep("a1", "alice"), ep("b1", "bob")]),
            names: Vec::new(),
            messages: vec![m],
            recent: vec![reject],
            reservations: Vec::new(),
        })
    }

    fn render(m: &Model, color: bool, w: u16, h: u16) -> Buffer {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        let look = Look {
            title: "sqlite /tmp/x".into(),
            color,
        };
        t.draw(|f| draw(f, m, &look, 5_000)).unwrap();
        t.backend().buffer().clone()
    }

    fn screen(b: &Buffer) -> String {
        let mut s = String::new();
        for y in 0..b.area.height {
            for x in 0..b.area.width {
                s.push_str(b[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    /// No cell holds a control or invisible character: what the terminal gets is what is
    /// seen.
    fn assert_clean(b: &Buffer) {
        for c in b.content() {
            for ch in c.symbol().chars() {
                assert!(
                    !crate::store::names::is_control(ch) && text::is_plain(&ch.to_string()),
                    "raw {ch:?} in a cell"
                );
            }
        }
    }

    #[test]
    fn the_main_screen_shows_panes_with_hostile_text_escaped() {
        let m = model();
        let b = render(&m, true, 160, 30);
        let s = screen(&b);
        assert_clean(&b);
        assert!(s.contains("Endpoints (2)"), "{s}");
        assert!(s.contains("alice → bob"), "{s}");
        assert!(s.contains("th\\u{200b}read"), "{s}");
        assert!(s.contains("box\\x1b[2J"), "{s}");
        assert!(s.contains("alice → ev\\x1b[1mil"), "{s}");
        assert!(s.contains("unknown-target"), "{s}");
        assert!(s.contains("rejected") && s.contains("queued") && s.contains("request"));
        assert!(s.contains("Reservations (0)"));
    }

    #[test]
    fn an_opened_hostile_body_shows_escaped_never_raw() {
        let mut m = model();
        m.key(Key::Down);
        let stored = match m.key(Key::Enter) {
            crate::watch::model::Command::Open(id) => id,
            c => panic!("{c:?}"),
        };
        let msg = Message {
            id: stored.clone(),
            from: "a1".into(),
            from_name: None,
            to: "b1".into(),
            thread: None,
            reply_to: None,
            intent: Intent::Notify,
            content_type: "text/plain".into(),
            body: HOSTILE.as_bytes().to_vec(),
            created_at: 0,
            expires_at: None,
            state: State::Delivered,
            deliveries: 1,
        };
        m.show_message(&stored, Some(&msg));
        let b = render(&m, true, 100, 30);
        let s = screen(&b);
        assert_clean(&b);
        for shown in [
            "hi\\x1b[31mRED\\x1b]0;pwned\\x07 \\u{202e}evil\\u{202c} a\\u{200b}b",
            "line2\\u{2028}x",
        ] {
            assert!(s.contains(shown), "{shown} not on screen:\n{s}");
        }
        assert!(!s.contains("\\x0d"), "CR LF is a line break:\n{s}");
    }

    #[test]
    fn without_colour_no_cell_has_a_colour() {
        let mut m = model();
        m.key(Key::Char('?'));
        let b = render(&m, false, 120, 30);
        for c in b.content() {
            assert_eq!((c.fg, c.bg), (Color::Reset, Color::Reset), "{c:?}");
        }
        assert!(screen(&b).contains("relay watch: keys"));
        let b = render(&m, true, 120, 30);
        assert!(
            b.content().iter().any(|c| c.fg == Color::Red),
            "rejects are red"
        );
    }

    #[test]
    fn tiny_and_huge_screens_draw() {
        let m = model();
        for (w, h) in [(1, 1), (10, 3), (40, 8), (300, 100)] {
            render(&m, true, w, h);
        }
        let mut m = model();
        m.key(Key::Char('?'));
        render(&m, true, 5, 2);
    }
}
