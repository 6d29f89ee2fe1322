//! The records of coordination (DESIGN.md §12): history queries behind `search` and
//! `thread`, and advisory file reservations. JSON field names are part of the CLI's
//! documented output (docs/cli.md, docs/coordination.md).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::query::TextQuery;

/// Most messages one [`super::Store::history`] call returns: 1000.
pub const MAX_HISTORY: usize = 1000;

/// Which stored messages [`super::Store::history`] returns: every condition given must
/// hold. Messages in every state are considered (queued, delivered, acked), expired ones
/// too until gc deletes them.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Only messages whose body matches this full-text query.
    pub text: Option<TextQuery>,
    /// Only messages sent or received by this endpoint id (a caller's own mail).
    pub participant: Option<String>,
    /// Only from this sender endpoint id.
    pub from: Option<String>,
    /// Only to this recipient endpoint id.
    pub to: Option<String>,
    /// Only in this thread (exact).
    pub thread: Option<String>,
    /// Only these message ids (exact).
    pub ids: Option<Vec<String>>,
    /// Only replies to one of these message ids (exact).
    pub reply_to: Option<Vec<String>>,
    /// Only messages created at or after this time, ms since the epoch.
    pub since_ms: Option<i64>,
    /// At most this many, newest first (1 to [`MAX_HISTORY`]; 0 is taken as 1).
    pub limit: usize,
}

/// How a reservation shares its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Nobody else may hold an overlapping reservation (the default).
    #[default]
    Exclusive,
    /// Others may hold overlapping shared reservations, not exclusive ones.
    Shared,
}

impl Mode {
    /// The stored and printed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "exclusive" => Ok(Mode::Exclusive),
            "shared" => Ok(Mode::Shared),
            _ => Err(format!("unknown mode '{s}'; use 'exclusive' or 'shared'")),
        }
    }
}

/// An advisory lease on the paths matching `glob` inside `project`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// UUIDv7, kept when the holder renews or re-reserves the same glob.
    pub id: String,
    /// The project: an absolute directory (the git top-level of the reserving session, or
    /// its working directory).
    pub project: String,
    /// The holder's endpoint id.
    pub holder: String,
    /// The holder's name when it reserved, if it had one.
    pub holder_name: Option<String>,
    /// The machine the holder reserved from ([`super::local_host`]).
    pub host: String,
    /// A glob relative to `project`, normalised by [`super::overlap::normalize_glob`].
    pub glob: String,
    /// Exclusive or shared.
    pub mode: Mode,
    /// Why, as the holder said (at most [`MAX_REASON`] bytes).
    pub reason: Option<String>,
    /// When it was first taken, ms since the epoch.
    pub created_at: i64,
    /// When it lapses unless renewed, ms since the epoch.
    pub expires_at: i64,
    /// It was recorded over a conflict (`--force`).
    pub forced: bool,
}

/// Longest reservation reason: 512 bytes.
pub const MAX_REASON: usize = 512;
/// Longest reservation TTL: 7 days.
pub const MAX_RESERVATION_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Most globs in one reservation request: 64.
pub const MAX_GLOBS: usize = 64;

/// A request to [`super::Store::reserve`].
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The project directory (absolute).
    pub project: String,
    /// The holder's endpoint id (must be registered).
    pub holder: String,
    /// Globs relative to the project, already normalised (1 to [`MAX_GLOBS`]).
    pub globs: Vec<String>,
    /// Exclusive or shared.
    pub mode: Mode,
    /// How long until it lapses (1 s to [`MAX_RESERVATION_TTL`]; the caller checks the
    /// floor, the store caps longer ones at [`MAX_RESERVATION_TTL`]).
    pub ttl: Duration,
    /// Why, shown to whoever it conflicts with.
    pub reason: Option<String>,
    /// Record it even over conflicts (each granted reservation whose glob had a conflict
    /// says `forced`; the others do not).
    pub force: bool,
}

impl ReserveRequest {
    /// The globs asked for, each once, in the order asked.
    pub(crate) fn globs_once(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for g in &self.globs {
            if !out.contains(&g.as_str()) {
                out.push(g);
            }
        }
        out
    }

    /// The reservation `holder` holds of `glob` once this request is granted at `now`
    /// (ms): `held`, its live reservation of that glob, updated in place (id and
    /// `created_at` kept), else a new one. Every backend grants through this.
    pub(crate) fn grant(
        &self,
        held: Option<&Reservation>,
        holder: &super::Endpoint,
        host: &str,
        glob: &str,
        now: i64,
        forced: bool,
    ) -> Reservation {
        let mut r = held.cloned().unwrap_or_else(|| Reservation {
            id: uuid::Uuid::now_v7().to_string(),
            project: self.project.clone(),
            holder: holder.id.clone(),
            holder_name: None,
            host: String::new(),
            glob: glob.to_string(),
            mode: self.mode,
            reason: None,
            created_at: now,
            expires_at: now,
            forced,
        });
        r.holder_name = holder.name.clone();
        r.host = host.to_string();
        r.mode = self.mode;
        r.reason = self.reason.clone();
        r.expires_at = lapse_at(now, self.ttl);
        r.forced = forced;
        r
    }
}

/// When a reservation taken or renewed at `now` (ms) for `ttl` lapses: `ttl` capped at
/// [`MAX_RESERVATION_TTL`].
pub(crate) fn lapse_at(now: i64, ttl: Duration) -> i64 {
    let ttl = ttl.min(MAX_RESERVATION_TTL);
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// What [`super::Store::reserve`] did. All or none: without `force`, any conflict means
/// nothing was granted.
#[derive(Debug, Clone, Serialize)]
pub struct Reserved {
    /// The reservations now held by the requester for the globs asked, in the order asked
    /// and each glob once (empty when refused).
    pub granted: Vec<Reservation>,
    /// Every live reservation of another holder that overlaps a glob asked, where either
    /// side is exclusive.
    pub conflicts: Vec<Conflict>,
}

/// One conflict: a glob asked for and another holder's reservation it overlaps.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// The glob asked for.
    pub glob: String,
    /// The reservation it overlaps.
    pub held: Reservation,
}

/// Which reservations [`super::Store::release_reservations`] and
/// [`super::Store::renew_reservations`] touch: every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct ReservationSelect {
    /// Only in this project.
    pub project: Option<String>,
    /// Only of this holder endpoint id.
    pub holder: Option<String>,
    /// Only these globs (exact, normalised).
    pub globs: Option<Vec<String>>,
}
