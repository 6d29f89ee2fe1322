//! Regression tests: `relay events`, the event log and `relay watch` (issue 13's
//! adversarial review; see tests/regression.rs).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;

/// Lines of a child's pipe on a channel.
fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits until the wall clock moved past this millisecond: gc's cutoff is strict (older
/// than now), so what was written in this millisecond would survive `gc --days 0`.
fn next_millisecond() {
    let t = relay::clock::now_ms();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while relay::clock::now_ms() <= t {
        assert!(std::time::Instant::now() < end, "clock stuck");
        std::thread::yield_now();
    }
}

/// Waits (bounded) for a line containing `what`.
fn line_with(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let l = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {what:?}"));
        if l.contains(what) {
            return l;
        }
    }
}

/// Review item 1: a follower that fell behind while gc deleted what came next was told
/// only on its first page; later pages skipped the deleted events silently. Now every
/// page that starts past a gap says so on stderr.
#[test]
fn a_follower_behind_gc_is_told_what_it_lost() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let mut f = h
        .cmd(&["events", "--all", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(f.stdout.take().unwrap());
    let err = lines(f.stderr.take().unwrap());
    line_with(&out, "endpoint.registered");
    let pid = rustix::process::Pid::from_child(&f);
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    for i in 0..3 {
        assert_eq!(
            h.run(&["send", "bob", "--as", "alice", &format!("m{i}")])
                .code,
            0
        );
    }
    // Every event so far is older than "now": gc --days 0 deletes them.
    next_millisecond();
    assert_eq!(h.run(&["gc", "--days", "0"]).code, 0);
    assert_eq!(h.run(&["send", "bob", "--as", "alice", "after"]).code, 0);
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    line_with(&out, "message.queued");
    let warn = line_with(&err, "deleted by gc");
    assert!(warn.contains("events "), "{warn}");
    let _ = f.kill();
    let _ = f.wait();
}

/// Review item 2: with every event deleted by gc, a reader resuming from an old cursor
/// was told nothing (the check needed a kept event to compare with).
#[test]
fn an_emptied_log_still_reports_the_gap() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    next_millisecond();
    assert_eq!(h.run(&["gc", "--days", "0"]).code, 0);
    let r = h.run(&["events", "--all", "--since", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("events 2 to 2 were deleted by gc"),
        "{}",
        r.stderr
    );
}

/// Review item 3: a time past the year 9999 (on NATS, a sender's own header) made the
/// human output of `relay events` panic (exit 101).
#[test]
fn a_time_rfc3339_cannot_spell_is_printed_raw() {
    let h = Home::new();
    h.register("alice");
    let c = rusqlite::Connection::open(h.db()).unwrap();
    c.execute("UPDATE events SET at = 253402300800000", [])
        .unwrap();
    drop(c);
    let r = h.run(&["events", "--all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("@253402300800000ms"), "{}", r.stdout);
}

/// Review item 4: a send to an unknown target recorded the target as written in `to`, so
/// whoever later registered that text as an endpoint id was shown the reject (sender,
/// thread, reason) as its own.
#[test]
fn a_reject_is_not_shown_to_whoever_registers_the_mistyped_name() {
    let h = Home::new();
    h.register("alice");
    let r = h.run(&[
        "send",
        "zed-typo",
        "--as",
        "alice",
        "--thread",
        "secret-plan",
        "x",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(h.run(&["register", "mal", "--id", "zed-typo"]).code, 0);
    let mal = h.run(&["events", "--as", "mal"]);
    assert_eq!(mal.code, 0, "{}", mal.stderr);
    assert!(!mal.stdout.contains("rejected"), "{}", mal.stdout);
    assert!(!mal.stdout.contains("secret-plan"), "{}", mal.stdout);
    // The sender still sees it, with the target named in the reason.
    let alice = h.run(&["events", "--as", "alice"]);
    let line = alice
        .stdout
        .lines()
        .find(|l| l.contains("message.rejected"))
        .unwrap_or_else(|| panic!("{}", alice.stdout));
    assert!(line.contains("zed-typo"), "{line}");
}

/// Review item 5: `relay watch` re-wrapped a whole body on every redraw; a 16 MiB body
/// (allowed with RELAY_MAX_BODY) froze it for seconds per redraw. At most 64 KiB is shown.
#[test]
fn the_view_shows_a_bounded_part_of_a_huge_body() {
    let body = "\u{200b}".repeat(1 << 20);
    let lines = relay::watch::text::body_lines(&body);
    let shown: usize = lines.iter().map(String::len).sum();
    // Each invisible character is escaped as `\u{200b}` (8 bytes) from 3 bytes of body.
    assert!(shown <= relay::watch::text::MAX_SHOWN * 3 + 200, "{shown}");
    assert!(
        lines.last().unwrap().contains("more bytes not shown"),
        "{:?}",
        lines.last()
    );
}

/// Review item 6: a terminal 1873 rows tall overflowed a u16 in the pane layout (a panic
/// in debug builds, a wrong layout in release ones).
#[test]
fn a_very_tall_terminal_lays_out() {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    let m = relay::watch::model::Model::new(relay::watch::model::Snapshot::default());
    let look = relay::watch::view::Look {
        title: "t".into(),
        color: false,
    };
    let mut t = Terminal::new(TestBackend::new(40, 2000)).unwrap();
    t.draw(|f| relay::watch::view::draw(f, &m, &look, 0))
        .unwrap();
}

/// Review item 7: zero-width characters in a thread reached the terminal raw in `relay
/// events`, so `deploy` and `deploy\u{200b}` looked the same.
#[test]
fn invisible_characters_in_events_are_escaped() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let r = h.run(&[
        "send",
        "bob",
        "--as",
        "alice",
        "--thread",
        "deploy\u{200b}",
        "x",
    ]);
    if r.code != 0 {
        // A thread with an invisible character may be refused outright: then nothing
        // can show it raw. (The thread is quoted, so the escape's backslash is doubled.)
        return;
    }
    let out = h.run(&["events", "--as", "alice"]);
    assert!(!out.stdout.contains('\u{200b}'), "{:?}", out.stdout);
    assert!(out.stdout.contains("deploy\\\\u{200b}"), "{}", out.stdout);
}

/// Found at the end of issue 13: the event triggers read the clock with
/// `unixepoch('subsec')` (SQLite 3.42 and later), so an older sqlite3 writing to relay.db
/// (a user's CLI; Python's 3.40) failed every insert with `NOT NULL constraint failed:
/// events.at`. They use `julianday('now')`, which every version has, and still record
/// milliseconds.
#[test]
fn the_event_triggers_need_no_new_sqlite_function() {
    let h = Home::new();
    let before = relay::clock::now_ms();
    h.register("alice");
    let after = relay::clock::now_ms();
    let c = rusqlite::Connection::open(h.db()).unwrap();
    let sql: Vec<String> = c
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'events_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sql.len(), 13);
    for s in &sql {
        assert!(!s.contains("unixepoch"), "{s}");
    }
    let at: i64 = c
        .query_row(
            "SELECT at FROM events ORDER BY cursor DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        before - 1 <= at && at <= after + 1,
        "{before} <= {at} <= {after}"
    );
}
