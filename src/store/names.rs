//! Rules for endpoint names and ids.
//!
//! - **Name**: 1–64 characters from `A–Z a–z 0–9 . _ -`, starting with a letter or digit
//!   (so never `.`/`..` or something that reads as a flag), and not shaped like a UUID (a
//!   UUID-shaped name could be mistaken for another endpoint's id).
//! - **Id**: 1–128 characters from `A–Z a–z 0–9 . _ -`, starting with a letter or digit.
//!   Ids become file names (doorbells, sockets), so nothing else is allowed.
//! - **Thread**: at most 256 bytes of UTF-8 with no control character (see
//!   [`is_control`]): threads are shown in message headers, on terminals and in agents'
//!   context, so they stay short and on one line.

use super::Error;

/// Longest name: 64 characters.
pub const MAX_NAME: usize = 64;
/// Longest id: 128 characters.
pub const MAX_ID: usize = 128;

/// Longest thread: 256 bytes.
pub const MAX_THREAD: usize = 256;

const NAME_RULE: &str = "names are 1-64 characters from A-Z a-z 0-9 . _ -, start with a letter or digit, and are not shaped like a UUID";
const ID_RULE: &str =
    "ids are 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit";

const THREAD_RULE: &str = "at most 256 bytes, no control characters (C0, DEL, C1, bidi controls, line or paragraph separators)";

fn allowed_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn starts_alnum(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// An optional argument given as an empty string means "not given" (models and scripts
/// often send `""` for optional fields).
pub fn optional(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.is_empty())
}

/// True for `8-4-4-4-12` hex with hyphens, or 32 bare hex digits.
pub fn is_uuid_shaped(s: &str) -> bool {
    let hex = |p: &str| p.bytes().all(|b| b.is_ascii_hexdigit());
    if s.len() == 32 {
        return hex(s);
    }
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| hex(p))
}

/// Checks a name against the rule.
///
/// # Errors
/// [`Error::InvalidName`] with the rule and the specific problem.
pub fn check_name(name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.chars().count() > MAX_NAME {
        Some("it is longer than 64 characters")
    } else if !allowed_chars(name) {
        Some("it contains a character outside A-Z a-z 0-9 . _ -")
    } else if !starts_alnum(name) {
        Some("it does not start with a letter or digit")
    } else if is_uuid_shaped(name) {
        Some("it is shaped like a UUID")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(Error::InvalidName {
            name: name.to_string(),
            rule: format!("{p}; {NAME_RULE}"),
        }),
    }
}

/// Checks an endpoint id against the rule.
///
/// # Errors
/// [`Error::InvalidId`] with the rule.
pub fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_ID || !allowed_chars(id) || !starts_alnum(id) {
        return Err(Error::InvalidId {
            id: id.to_string(),
            rule: ID_RULE.to_string(),
        });
    }
    Ok(())
}

/// True for a character that must not reach a terminal or a header raw: C0 controls
/// (U+0000–U+001F), DEL, C1 controls (U+0080–U+009F, NEL included), the bidi controls
/// (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) and the line and paragraph
/// separators U+2028, U+2029. Threads may not contain one; human output escapes them.
pub fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Checks a thread against the rule: at most [`MAX_THREAD`] bytes, no [`is_control`]
/// character. The error states the size or the offending character and its byte offset,
/// never the thread itself (it may be megabytes).
///
/// # Errors
/// [`Error::InvalidThread`] with the problem and the rule.
pub fn check_thread(thread: &str) -> Result<(), Error> {
    let problem = if thread.len() > MAX_THREAD {
        Some(format!("thread is {} bytes", thread.len()))
    } else {
        thread
            .char_indices()
            .find(|&(_, c)| is_control(c))
            .map(|(at, c)| {
                format!(
                    "thread has control character U+{:04X} at byte {at}",
                    c as u32
                )
            })
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::InvalidThread {
            problem,
            rule: THREAD_RULE,
        }),
    }
}

/// An optional thread as given (`""` means none, as with [`optional`]), checked with
/// [`check_thread`].
///
/// # Errors
/// [`Error::InvalidThread`] when the thread breaks the rule.
pub fn optional_thread(thread: Option<String>) -> Result<Option<String>, Error> {
    let thread = optional(thread);
    if let Some(t) = &thread {
        check_thread(t)?;
    }
    Ok(thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for n in ["alice", "a", "build-bot.2", "A_b-c.d", &"x".repeat(64)] {
            check_name(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }

    #[test]
    fn bad_names_are_refused_with_the_rule() {
        let long = "x".repeat(65);
        for n in [
            "",
            "a/b",
            "..",
            ".",
            "-x",
            "a\0b",
            "héllo",
            "a b",
            long.as_str(),
            "0190f5a2-7b3c-7def-8abc-0123456789ab",
            "0190f5a27b3c7def8abc0123456789ab",
        ] {
            let err = check_name(n).unwrap_err().to_string();
            assert!(err.contains("names are 1-64 characters"), "{n:?}: {err}");
        }
    }

    #[test]
    fn threads_are_short_and_free_of_controls() {
        for t in ["build", "x]·thread 7", "日本語", &"t".repeat(256)] {
            check_thread(t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        }
        let long = "t".repeat(8 << 20);
        let e = check_thread(&long).unwrap_err().to_string();
        assert_eq!(
            e,
            "thread is 8388608 bytes; at most 256 bytes, no control characters (C0, DEL, C1, \
             bidi controls, line or paragraph separators)"
        );
        for (t, c) in [
            ("a\x1b[2J", "U+001B at byte 1"),
            ("a\nb", "U+000A at byte 1"),
            ("ab\u{202E}", "U+202E at byte 2"),
            ("\u{2028}", "U+2028 at byte 0"),
            ("\u{85}", "U+0085 at byte 0"),
            ("\x7f", "U+007F at byte 0"),
        ] {
            let e = check_thread(t).unwrap_err().to_string();
            assert!(
                e.contains(c) && e.contains("no control characters"),
                "{t:?}: {e}"
            );
        }
    }

    #[test]
    fn ids_must_be_path_safe() {
        check_id("0190f5a2-7b3c-7def-8abc-0123456789ab").unwrap();
        for id in ["", "../x", "a/b", ".hidden", "a\0", &"y".repeat(129)] {
            assert!(check_id(id).is_err(), "{id:?}");
        }
    }
}
