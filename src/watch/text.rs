//! Text from other endpoints made safe for a cell of the screen (DESIGN.md §10).
//!
//! The rule is the CLI's ([`crate::cli::terminal_safe`], what `relay inbox` prints
//! bodies through): every control character — C0, DEL, C1, bidi controls, line and
//! paragraph separators — is shown escaped (`\x1b`, `\u{202e}`), never obeyed. A screen of
//! cells needs one thing more: an invisible character (Default_Ignorable_Code_Point: zero
//! width spaces and joiners, variation selectors, U+FEFF …) has no cell of its own, so it
//! would either vanish — hiding text that is there — or join its neighbours and shift every
//! column after it. Those are escaped the same way.

use crate::store::names;

/// Default_Ignorable_Code_Point from Unicode's data, as the fence tests it
/// (`agents::fence`): UTS #39's skeleton drops exactly these characters and maps every
/// other character to at least one, so an empty skeleton is the test.
fn default_ignorable(c: char) -> bool {
    !c.is_ascii()
        && unicode_security::skeleton(c.encode_utf8(&mut [0; 4]))
            .next()
            .is_none()
}

/// Appends `c` escaped visibly, spelled as the CLI spells it: `\xNN` below U+0100,
/// `\u{NNNN}` above.
fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    let n = c as u32;
    // Writing to a String cannot fail.
    let _ = if n < 0x100 {
        write!(out, "\\x{n:02x}")
    } else {
        write!(out, "\\u{{{n:x}}}")
    };
}

/// `s` with its invisible characters (and, unless `keep_tabs`, newlines and tabs) escaped,
/// then through the CLI's [`crate::cli::terminal_safe`] for every control character. The
/// first pass writes only printable ASCII escapes, which `terminal_safe` leaves alone.
fn escaped(s: &str, keep_tabs: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let keep = keep_tabs && c == '\t';
        if !keep && (c == '\n' || c == '\t' || default_ignorable(c)) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    crate::cli::terminal_safe(&out)
}

/// Text from another endpoint (a thread, a reject reason, a target as its sender wrote
/// it, a host, a glob) for one line of the screen: every control and invisible character
/// escaped, newlines and tabs included.
pub fn one_line(s: &str) -> String {
    escaped(s, false)
}

/// A message body for the screen, as `relay inbox` shows it: split at newlines (`\n` or
/// `\r\n`), each line escaped as [`one_line`] does except that a tab becomes spaces up to
/// the next multiple of 8 characters. Every other line break (a lone CR, VT, FF, NEL,
/// U+2028, U+2029) is escaped, not obeyed.
pub fn body_lines(body: &str) -> Vec<String> {
    let mut end = body.len().min(MAX_SHOWN);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let mut lines: Vec<String> = body[..end]
        .split('\n')
        .map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            expand_tabs(&escaped(line, true))
        })
        .collect();
    if end < body.len() {
        lines.push(format!(
            "… {} more bytes not shown here (read it whole with relay inbox or relay thread)",
            body.len() - end
        ));
    }
    lines
}

/// Most of a body the view shows, in bytes: 64 KiB. The view wraps what it shows on every
/// redraw, and a body may be as large as the store's cap allows (up to 16 MiB): shown
/// whole it would freeze the view for seconds per redraw.
pub const MAX_SHOWN: usize = 64 * 1024;

/// Tabs as spaces up to the next multiple of 8 characters (escapes are ASCII, so counting
/// characters after escaping counts what is shown).
fn expand_tabs(line: &str) -> String {
    if !line.contains('\t') {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len() + 8);
    let mut column = 0;
    for c in line.chars() {
        if c == '\t' {
            let to = (column / 8 + 1) * 8;
            out.extend(std::iter::repeat_n(' ', to - column));
            column = to;
        } else {
            out.push(c);
            column += 1;
        }
    }
    out
}

/// ms since the epoch as UTC RFC 3339 with milliseconds, as the CLI prints times.
pub fn time(ms: i64) -> String {
    crate::cli::output::time(ms)
}

/// ms since the epoch as `HH:MM:SS` UTC, for a log column.
pub fn clock(ms: i64) -> String {
    time(ms).get(11..19).unwrap_or("--:--:--").to_string()
}

/// How long `from` is before `to` (ms), shortest: `<1m`, `3m`, `5h`, `2d` (`<1m` also for
/// a clock that ran ahead). Nothing finer than minutes: an age that reads differently
/// every second would wake an idle view every second.
pub fn span(from: i64, to: i64) -> String {
    let s = to.saturating_sub(from).max(0) / 1000;
    match s {
        0..=59 => "<1m".into(),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The unit [`span`] counts a span of `d` ms in.
fn unit_of(d: i64) -> i64 {
    match d {
        ..3_600_000 => 60_000,
        3_600_000..86_400_000 => 3_600_000,
        _ => 86_400_000,
    }
}

/// In how many ms the age `span(from, now)` reads differently, as time passes.
pub fn age_changes_in(from: i64, now: i64) -> i64 {
    let d = now.saturating_sub(from).max(0);
    let unit = unit_of(d);
    unit - d % unit
}

/// In how many ms the countdown `span(now, until)` reads differently (or reaches zero),
/// as time passes.
pub fn countdown_changes_in(now: i64, until: i64) -> i64 {
    let d = until.saturating_sub(now).max(0);
    d % unit_of(d) + 1
}

/// Whether `s` holds nothing [`one_line`] would escape (names and ids always do: their
/// rule allows only `A-Z a-z 0-9 . _ -`).
pub fn is_plain(s: &str) -> bool {
    !s.chars()
        .any(|c| names::is_control(c) || default_ignorable(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_invisible_characters_are_escaped() {
        let s = "a\x1b[31mred\x07\u{202e}evil\u{200b}z\u{200d}\u{feff}\u{fe0f}\u{85}\u{2028}\n\t";
        assert_eq!(
            one_line(s),
            "a\\x1b[31mred\\x07\\u{202e}evil\\u{200b}z\\u{200d}\\u{feff}\\u{fe0f}\\x85\\u{2028}\\x0a\\x09"
        );
        assert!(!is_plain(s));
        assert!(is_plain("alice-2.b_c ünïcödé 漢字"));
        assert_eq!(one_line("ünïcödé 漢字"), "ünïcödé 漢字");
    }

    #[test]
    fn spans_say_when_they_change() {
        assert_eq!(span(0, 59_999), "<1m");
        assert_eq!(span(0, 60_000), "1m");
        assert_eq!(span(0, 7_200_000), "2h");
        for (from, now) in [(0, 59_500), (0, 61_000), (0, 3_599_999), (5, 90_000_000)] {
            let next = now + age_changes_in(from, now);
            assert_ne!(span(from, next - 1), span(from, next), "{from} {now}");
            assert_eq!(span(from, now), span(from, next - 1));
        }
        // Under a minute left, the next change is the lapse itself.
        assert_eq!(countdown_changes_in(0, 500), 501);
        for (now, until) in [(0, 61_000), (0, 119_999), (0, 7_200_000), (9, 90_000_000)] {
            let next = now + countdown_changes_in(now, until);
            assert_ne!(span(next - 1, until), span(next, until), "{now} {until}");
            assert_eq!(span(now, until), span(next - 1, until));
        }
    }

    #[test]
    fn bodies_split_at_newlines_only_and_expand_tabs() {
        assert_eq!(
            body_lines("a\tb\r\n── x\ry\u{2028}z\n\n\x1b]52;c;eA==\x07"),
            vec![
                "a       b".to_string(),
                "── x\\x0dy\\u{2028}z".into(),
                String::new(),
                "\\x1b]52;c;eA==\\x07".into(),
            ]
        );
    }
}
