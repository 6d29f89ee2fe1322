//! Rules for endpoint names and ids.
//!
//! - **Name**: 1–64 characters from `A–Z a–z 0–9 . _ -`, starting with a letter or digit
//!   (so never `.`/`..` or something that reads as a flag), and not shaped like a UUID (a
//!   UUID-shaped name could be mistaken for another endpoint's id).
//! - **Id**: 1–128 characters from `A–Z a–z 0–9 . _ -`, starting with a letter or digit.
//!   Ids become file names (doorbells, sockets), so nothing else is allowed.

use super::Error;

/// Longest name: 64 characters.
pub const MAX_NAME: usize = 64;
/// Longest id: 128 characters.
pub const MAX_ID: usize = 128;

const NAME_RULE: &str = "names are 1-64 characters from A-Z a-z 0-9 . _ -, start with a letter or digit, and are not shaped like a UUID";
const ID_RULE: &str =
    "ids are 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit";

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
    fn ids_must_be_path_safe() {
        check_id("0190f5a2-7b3c-7def-8abc-0123456789ab").unwrap();
        for id in ["", "../x", "a/b", ".hidden", "a\0", &"y".repeat(129)] {
            assert!(check_id(id).is_err(), "{id:?}");
        }
    }
}
