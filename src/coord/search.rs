//! Full-text search over stored mail (`relay search`, the MCP `search` tool): a
//! [`History`] query with the caller's own mail as the default scope, each hit with a
//! snippet of its body.

use serde::Serialize;

use super::labels::Labels;
use crate::store::query::TextQuery;
use crate::store::{History, Intent, MAX_HISTORY, State, Store};

/// Hits returned when no limit is given: 20.
pub const DEFAULT_LIMIT: usize = 20;
/// Width of a hit's snippet, in characters (before `**` marks and `…`): 160.
pub const SNIPPET_WIDTH: usize = 160;

/// What to search for.
#[derive(Debug, Clone)]
pub struct Search {
    /// The parsed query ([`TextQuery::parse`]).
    pub text: TextQuery,
    /// Only mail this endpoint id sent or received; `None` for every message (`--all`,
    /// a human operator's view).
    pub participant: Option<String>,
    /// Only from this endpoint id.
    pub from: Option<String>,
    /// Only to this endpoint id.
    pub to: Option<String>,
    /// Only in this thread (exact).
    pub thread: Option<String>,
    /// Only mail created at or after this time, ms since the epoch.
    pub since_ms: Option<i64>,
    /// At most this many hits (1 to [`MAX_HISTORY`]; other values are clamped).
    pub limit: usize,
}

/// One matching message. JSON field names are documented in docs/cli.md (`relay search`).
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Message id.
    pub id: String,
    /// Sender endpoint id.
    pub from: String,
    /// Sender's name when it sent the message.
    pub from_name: Option<String>,
    /// Recipient endpoint id.
    pub to: String,
    /// Recipient's current name.
    pub to_name: Option<String>,
    /// Thread, if any.
    pub thread: Option<String>,
    /// The message it answers, if any.
    pub reply_to: Option<String>,
    /// Notify or request.
    pub intent: Intent,
    /// ms since the epoch.
    pub created_at: i64,
    /// Receipt state: queued, delivered or acked.
    pub state: State,
    /// Up to about [`SNIPPET_WIDTH`] characters of the body around the first match,
    /// matched words marked `**like this**`, control characters and line breaks as
    /// spaces, `…` where it was cut.
    pub snippet: String,
}

/// Runs `s`: matching messages, newest first.
///
/// # Errors
/// Store errors.
pub fn search(store: &dyn Store, s: &Search) -> crate::store::Result<Vec<Hit>> {
    let found = store.history(&History {
        text: Some(s.text.clone()),
        participant: s.participant.clone(),
        from: s.from.clone(),
        to: s.to.clone(),
        thread: s.thread.clone(),
        ids: None,
        reply_to: None,
        since_ms: s.since_ms,
        limit: s.limit.clamp(1, MAX_HISTORY),
    })?;
    let mut labels = Labels::new(store);
    Ok(found
        .into_iter()
        .map(|m| Hit {
            snippet: s.text.snippet(&m.text(), SNIPPET_WIDTH),
            to_name: labels.name(&m.to),
            id: m.id,
            from: m.from,
            from_name: m.from_name,
            to: m.to,
            thread: m.thread,
            reply_to: m.reply_to,
            intent: m.intent,
            created_at: m.created_at,
            state: m.state,
        })
        .collect())
}

/// Parses a `--since` value as a time, ms since the epoch: a duration ago (`2d`, `3h`,
/// `90m`, bare seconds; humantime units) or an RFC 3339 time in UTC
/// (`2026-01-31T12:00:00Z`) or with an offset (`2026-01-31T12:00:00+05:00`, `-08:00`).
///
/// # Errors
/// A text naming the value, what was wrong with it (as a time when it looks like one,
/// else as a duration) and both accepted forms.
pub fn since(spec: &str, now_ms: i64) -> Result<i64, String> {
    let t = spec.trim();
    let as_time = rfc3339_ms(t);
    if let Ok(ms) = as_time {
        return Ok(ms);
    }
    let ago = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|e| e.to_string())
    } else {
        humantime::parse_duration(t).map_err(|e| e.to_string())
    };
    let ago = ago.map_err(|duration_error| {
        // Say what was wrong with the form it was meant in: a date is not a bad duration.
        let why = if looks_like_time(t) {
            as_time.err().unwrap_or_default()
        } else {
            duration_error
        };
        format!(
            "--since '{spec}' is neither a duration ago nor an RFC 3339 time ({why}); write \
             e.g. 2d, 3h, 30m or 2026-01-31T12:00:00Z (UTC) or 2026-01-31T12:00:00+05:00"
        )
    })?;
    let ago_ms = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
    Ok(now_ms.saturating_sub(ago_ms).max(0))
}

/// Whether `t` starts like a date (`2026-…`): then it was meant as a time.
fn looks_like_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// An RFC 3339 time as ms since the epoch (before 1970: 0). humantime reads only UTC
/// (`Z`, or no zone); an offset `+hh:mm` / `-hh:mm` is taken off here and applied.
fn rfc3339_ms(t: &str) -> Result<i64, String> {
    let (base, offset_s) = match t.len().checked_sub(6).and_then(|at| {
        let (base, zone) = (t.get(..at)?, t.get(at..)?);
        let z = zone.as_bytes();
        let sign = match z[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        // A date's own `-dd` never lands here: the zone follows a time (`…:ss`).
        if z[3] != b':' || !base.contains(['T', 't', ' ']) {
            return None;
        }
        let hh: i64 = zone.get(1..3)?.parse().ok()?;
        let mm: i64 = zone.get(4..6)?.parse().ok()?;
        Some((base, sign, hh, mm))
    }) {
        Some((base, sign, hh, mm)) => {
            if hh > 23 || mm > 59 {
                return Err(format!(
                    "the offset {} is out of range: hours 00-23, minutes 00-59",
                    &t[base.len()..]
                ));
            }
            (base, sign * (hh * 3600 + mm * 60))
        }
        None => (t, 0),
    };
    let at = humantime::parse_rfc3339_weak(base).map_err(|e| e.to_string())?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    // 12:00+05:00 is 07:00 UTC: the offset is subtracted.
    Ok(ms.saturating_sub(offset_s * 1000).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_ago_and_times() {
        let now = 10 * 86_400_000;
        assert_eq!(since("2d", now), Ok(8 * 86_400_000));
        assert_eq!(since("3h", now), Ok(now - 3 * 3_600_000));
        assert_eq!(since("60", now), Ok(now - 60_000));
        assert_eq!(since("1970-01-02T00:00:00Z", now), Ok(86_400_000));
        assert_eq!(since("1000y", now), Ok(0));
        let utc = since("2026-01-31T07:00:00Z", now).unwrap();
        assert_eq!(since("2026-01-31T12:00:00+05:00", now), Ok(utc));
        assert_eq!(since("2026-01-31T12:00:00.000+05:00", now), Ok(utc));
        assert_eq!(since("2026-01-30T23:00:00-08:00", now), Ok(utc));
        assert_eq!(since("2026-01-31T07:00:00+00:00", now), Ok(utc));
        for bad in [
            "2026-01-31T12:00:00+25:00",
            "2026-13-31T12:00:00Z",
            "2026-01-31",
        ] {
            let e = since(bad, now).unwrap_err();
            assert!(e.contains("+05:00") && e.contains("2d"), "{bad:?}: {e}");
            assert!(!e.contains("unknown time unit"), "{bad:?}: {e}");
        }
        for bad in ["", "yesterday", "-2d", "2 parsecs"] {
            let e = since(bad, now).unwrap_err();
            assert!(e.contains("write e.g. 2d"), "{bad:?}: {e}");
        }
    }
}
