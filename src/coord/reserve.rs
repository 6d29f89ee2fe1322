//! Advisory file reservations (`relay reserve`, `release`, `renew`, `reservations` and
//! their MCP tools): checking what was asked, releasing what gone sessions still hold,
//! and saying who holds what.
//!
//! Globs are relative to the project ([`super::project::root`]) and normalised by
//! [`overlap::normalize_glob`]; the store decides conflicts atomically
//! ([`Store::reserve`]). A conflict held by a session whose presence is
//! [`Presence::Gone`] is not a reason to refuse: its holder's reservations in the project
//! are released and the request is tried once more.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::agents::presence::{self, Presence};
use crate::clock::now_ms;
use crate::store::overlap::{self, GlobError};
use crate::store::{
    self, Conflict, Endpoint, MAX_GLOBS, MAX_REASON, MAX_RESERVATION_TTL, Mode, Reservation,
    ReservationSelect, ReserveRequest, Store,
};

/// TTL when none is given: 30 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// Shortest TTL: 1 second.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// Why a reservation call did nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another holder's live reservation overlaps what was asked (kind `reserved`, exit 3).
    #[error("{0}")]
    Refused(Refused),
    /// A glob that is not valid (kind `bad-glob`, exit 2).
    #[error(transparent)]
    Glob(#[from] GlobError),
    /// Another argument out of range: no globs or too many, a TTL, a reason, a project
    /// directory (kind `usage`, exit 2). The text says what would be right.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A refused request: nothing was reserved.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// The project asked in.
    pub project: String,
    /// Every conflict: a glob asked for and the live reservation it overlaps.
    pub conflicts: Vec<Conflict>,
    /// When it was refused, ms since the epoch (for "lapses in …").
    #[serde(skip)]
    pub at_ms: i64,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nothing was reserved in {:?}:", self.project)?;
        for c in &self.conflicts {
            write!(
                f,
                "\n  {:?} overlaps {}",
                c.glob,
                describe(&c.held, self.at_ms)
            )?;
        }
        write!(
            f,
            "\nWait until it lapses, ask the holder to release it, or reserve with force \
             (`relay reserve --force`) to record yours anyway."
        )
    }
}

/// One reservation in words: `alice (0190…)'s exclusive reservation of "src/**"
/// ("reason"), lapsing in 24m`. Globs and reasons are quoted and escaped (`{:?}`): they
/// are other sessions' text.
pub fn describe(r: &Reservation, now_ms: i64) -> String {
    let mut s = format!("{}'s {} reservation of {:?}", holder(r), r.mode, r.glob);
    if let Some(why) = &r.reason {
        s.push_str(&format!(" ({why:?})"));
    }
    s.push_str(&format!(", lapsing {}", lapses_in(r.expires_at, now_ms)));
    if r.forced {
        s.push_str(", taken with --force");
    }
    s
}

/// The holder as `name (id)`, or the id alone.
pub fn holder(r: &Reservation) -> String {
    match &r.holder_name {
        Some(n) => format!("{n} ({})", r.holder),
        None => r.holder.clone(),
    }
}

/// How long until `expires_at` (ms since the epoch), in words: `in 24m`, `in 1h 5m`,
/// `in 40s`, `in 6d 23h`; `now` once it has passed.
pub fn lapses_in(expires_at: i64, now_ms: i64) -> String {
    let ms = expires_at.saturating_sub(now_ms);
    if ms <= 0 {
        return "now".into();
    }
    let s = (ms + 999) / 1000;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let text = match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, m) if sec == 0 => format!("{m}m"),
        (0, 0, m) if m < 10 => format!("{m}m {sec}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    };
    format!("in {text}")
}

/// The project of `dir`, as the store records it: [`super::project::root`], as UTF-8.
///
/// # Errors
/// [`Error::Invalid`] naming the directory when it cannot be read or its path is not
/// UTF-8.
pub fn project_of(dir: &Path) -> Result<String, Error> {
    let root = super::project::root(dir).map_err(|e| {
        Error::Invalid(format!(
            "project directory {:?}: {e}; give an existing directory",
            dir.display()
        ))
    })?;
    root.to_str().map(str::to_string).ok_or_else(|| {
        Error::Invalid(format!(
            "project directory {:?} is not valid UTF-8; reservations need a UTF-8 path",
            root.display()
        ))
    })
}

/// The project of `dir` for acting on reservations already recorded (`release`, `renew`,
/// `reservations`): [`project_of`], except that a directory that does not exist any more
/// (a deleted checkout) is named by its absolute lexical path ([`super::project::lexical`],
/// relative to `cwd`), so what was reserved there can still be released instead of only
/// lapsing. The second value is a note saying so, for the caller to show.
///
/// # Errors
/// As [`project_of`], for a directory that exists but cannot be read.
pub fn recorded_project_of(dir: &Path, cwd: &Path) -> Result<(String, Option<String>), Error> {
    match project_of(dir) {
        Ok(p) => Ok((p, None)),
        Err(e) if dir.symlink_metadata().is_err() => {
            let path = super::project::lexical(cwd, dir);
            let Some(p) = path.to_str().map(str::to_string) else {
                return Err(e);
            };
            let note = format!(
                "the project directory {p:?} does not exist any more: using its path as \
                 given for the reservations recorded there"
            );
            Ok((p, Some(note)))
        }
        Err(e) => Err(e),
    }
}

/// Glob metacharacters: a glob without any of them is a plain path.
const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// Normalises globs as [`normalize_globs`] does, then turns each plain path (no glob
/// metacharacter) that names an existing directory under `project` into `dir/**`, so
/// reserving `src` covers what is in it. Returns the globs and the directories so
/// expanded (as given, normalised), for the caller to say so.
///
/// # Errors
/// As [`normalize_globs`].
pub fn normalize_globs_in(
    project: &str,
    globs: &[String],
) -> Result<(Vec<String>, Vec<String>), Error> {
    let mut dirs = Vec::new();
    let mut out: Vec<String> = Vec::new();
    for g in normalize_globs(globs)? {
        let g = if !g.contains(GLOB_META) && Path::new(project).join(&g).is_dir() {
            let wide = format!("{g}/**");
            dirs.push(g);
            wide
        } else {
            g
        };
        if !out.contains(&g) {
            out.push(g);
        }
    }
    Ok((out, dirs))
}

/// Normalises 1 to [`MAX_GLOBS`] globs ([`overlap::normalize_glob`]), dropping repeats.
///
/// # Errors
/// [`Error::Invalid`] for none or too many; [`Error::Glob`] for the first bad one.
pub fn normalize_globs(globs: &[String]) -> Result<Vec<String>, Error> {
    if globs.is_empty() {
        return Err(Error::Invalid(
            "no globs: give at least one path or glob relative to the project root, e.g. \
             'src/store/**'"
                .into(),
        ));
    }
    if globs.len() > MAX_GLOBS {
        return Err(Error::Invalid(format!(
            "{} globs is over the limit of {MAX_GLOBS} in one request; use fewer, wider globs",
            globs.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(globs.len());
    for g in globs {
        let n = overlap::normalize_glob(g)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Checks a TTL: [`MIN_TTL`] to [`MAX_RESERVATION_TTL`].
///
/// # Errors
/// [`Error::Invalid`] naming the range.
pub fn check_ttl(ttl: Duration) -> Result<Duration, Error> {
    if ttl < MIN_TTL || ttl > MAX_RESERVATION_TTL {
        return Err(Error::Invalid(format!(
            "a reservation TTL of {} is out of range: give {} to {} (e.g. 30m)",
            humantime::format_duration(ttl),
            humantime::format_duration(MIN_TTL),
            humantime::format_duration(MAX_RESERVATION_TTL)
        )));
    }
    Ok(ttl)
}

/// Parses a TTL as bare seconds (`1800`) or humantime (`30m`, `2h`) and checks it
/// ([`check_ttl`]).
///
/// # Errors
/// [`Error::Invalid`] for text that is not a duration, or one out of range.
pub fn parse_ttl(s: &str) -> Result<Duration, Error> {
    let t = s.trim();
    let d = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string())
    } else {
        humantime::parse_duration(t).map_err(|e| e.to_string())
    }
    .map_err(|e| {
        Error::Invalid(format!(
            "TTL '{s}' is not a duration ({e}); write e.g. 90s, 30m or 2h"
        ))
    })?;
    check_ttl(d)
}

/// Checks a reason: at most [`MAX_REASON`] bytes; empty means none.
///
/// # Errors
/// [`Error::Invalid`] for a longer one.
pub fn check_reason(reason: Option<&str>) -> Result<Option<String>, Error> {
    match reason.map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) if r.len() > MAX_REASON => Err(Error::Invalid(format!(
            "the reason is {} bytes, over the {MAX_REASON}-byte limit; say it shorter",
            r.len()
        ))),
        Some(r) => Ok(Some(r.to_string())),
    }
}

/// A reservation request as an interface received it: globs not yet normalised.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The project ([`project_of`]).
    pub project: String,
    /// Globs relative to the project, as given.
    pub globs: Vec<String>,
    /// Exclusive or shared.
    pub mode: Mode,
    /// How long until it lapses (checked by [`check_ttl`]).
    pub ttl: Duration,
    /// Why, shown to whoever it conflicts with (checked by [`check_reason`]).
    pub reason: Option<String>,
    /// Record it over conflicts.
    pub force: bool,
}

/// A granted request. JSON: docs/cli.md (`relay reserve`).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The project.
    pub project: String,
    /// The reservations now held for the globs asked.
    pub granted: Vec<Reservation>,
    /// Live conflicts recorded over (only with `force`).
    pub conflicts: Vec<Conflict>,
    /// It was recorded over conflicts.
    pub forced: bool,
    /// Reservations of gone sessions that stood in the way and were released first.
    pub released_gone: Vec<Reservation>,
    /// Paths asked for that name existing directories of the project, reserved as
    /// `dir/**` (each as given, normalised: `src`).
    pub directories: Vec<String>,
}

/// Reserves `ask.globs` for `holder`. Conflicts with holders that are gone ([`presence`])
/// are released and the request tried once more.
///
/// # Errors
/// [`Error::Refused`] when a live conflict remains (without `force`); [`Error::Glob`],
/// [`Error::Invalid`] before anything is stored; [`Error::Store`].
pub fn reserve(
    store: &dyn Store,
    runtime_dir: &Path,
    holder: &Endpoint,
    ask: &Ask,
) -> Result<Outcome, Error> {
    let (globs, directories) = normalize_globs_in(&ask.project, &ask.globs)?;
    let req = ReserveRequest {
        project: ask.project.clone(),
        holder: holder.id.clone(),
        globs,
        mode: ask.mode,
        ttl: check_ttl(ask.ttl)?,
        reason: check_reason(ask.reason.as_deref())?,
        force: ask.force,
    };
    let mut got = store.reserve(&req)?;
    let mut released_gone = Vec::new();
    if !got.conflicts.is_empty() {
        released_gone = release_gone(store, runtime_dir, &ask.project, &got.conflicts)?;
        if !released_gone.is_empty() {
            got = store.reserve(&req)?;
        }
    }
    if got.granted.is_empty() {
        return Err(Error::Refused(Refused {
            project: ask.project.clone(),
            conflicts: got.conflicts,
            at_ms: now_ms(),
        }));
    }
    Ok(Outcome {
        project: ask.project.clone(),
        directories,
        forced: !got.conflicts.is_empty(),
        granted: got.granted,
        conflicts: got.conflicts,
        released_gone,
    })
}

/// Whether the endpoint `id` is gone: its presence says so, or no endpoint has that id.
/// Looked up by exact id ([`super::endpoint_by_id`]): an endpoint *named* like the holder's
/// id must not make the holder seem gone.
fn is_gone(store: &dyn Store, runtime_dir: &Path, id: &str) -> store::Result<bool> {
    Ok(match super::endpoint_by_id(store, id)? {
        Some(e) => presence::of(&e, runtime_dir).presence == Presence::Gone,
        None => true,
    })
}

/// Releases, in `project`, every reservation of each conflicting holder that is gone;
/// returns the live ones released.
fn release_gone(
    store: &dyn Store,
    runtime_dir: &Path,
    project: &str,
    conflicts: &[Conflict],
) -> store::Result<Vec<Reservation>> {
    let mut holders: Vec<&str> = conflicts.iter().map(|c| c.held.holder.as_str()).collect();
    holders.sort_unstable();
    holders.dedup();
    let mut released = Vec::new();
    for h in holders {
        if is_gone(store, runtime_dir, h)? {
            tracing::info!(
                holder = h,
                project,
                "releasing the reservations of a gone session"
            );
            released.extend(store.release_reservations(&ReservationSelect {
                project: Some(project.to_string()),
                holder: Some(h.to_string()),
                globs: None,
            })?);
        }
    }
    Ok(released)
}

/// What [`renew`] or [`release`] did. JSON: docs/cli.md.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// The project.
    pub project: String,
    /// The reservations renewed (as renewed) or released.
    pub reservations: Vec<Reservation>,
    /// Globs asked for that the holder does not hold live here (expired, released, never
    /// reserved): nothing was done for them.
    pub not_held: Vec<String>,
}

fn select(
    project: &str,
    holder: &Endpoint,
    globs: Option<&[String]>,
) -> Result<(ReservationSelect, Vec<String>), Error> {
    // Expanded as `reserve` did, so `release src` releases what `reserve src` took.
    let globs = globs
        .map(|g| normalize_globs_in(project, g).map(|(g, _)| g))
        .transpose()?;
    Ok((
        ReservationSelect {
            project: Some(project.to_string()),
            holder: Some(holder.id.clone()),
            globs: globs.clone(),
        },
        globs.unwrap_or_default(),
    ))
}

fn not_held(asked: Vec<String>, done: &[Reservation]) -> Vec<String> {
    asked
        .into_iter()
        .filter(|g| !done.iter().any(|r| &r.glob == g))
        .collect()
}

/// Extends `holder`'s live reservations in `project` (those of `globs`, or all) to lapse
/// `ttl` from now. Expired ones are not revived.
///
/// # Errors
/// [`Error::Glob`], [`Error::Invalid`] (globs, TTL), [`Error::Store`].
pub fn renew(
    store: &dyn Store,
    project: &str,
    holder: &Endpoint,
    globs: Option<&[String]>,
    ttl: Duration,
) -> Result<Changed, Error> {
    let ttl = check_ttl(ttl)?;
    let (sel, asked) = select(project, holder, globs)?;
    let reservations = store.renew_reservations(&sel, ttl)?;
    Ok(Changed {
        project: project.to_string(),
        not_held: not_held(asked, &reservations),
        reservations,
    })
}

/// Releases `holder`'s reservations in `project`: those of `globs`, or all of them.
///
/// # Errors
/// [`Error::Glob`], [`Error::Invalid`], [`Error::Store`].
pub fn release(
    store: &dyn Store,
    project: &str,
    holder: &Endpoint,
    globs: Option<&[String]>,
) -> Result<Changed, Error> {
    let (sel, asked) = select(project, holder, globs)?;
    let reservations = store.release_reservations(&sel)?;
    Ok(Changed {
        project: project.to_string(),
        not_held: not_held(asked, &reservations),
        reservations,
    })
}

/// A live reservation as listed, with whose it is and where its holder is.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The reservation.
    #[serde(flatten)]
    pub reservation: Reservation,
    /// Held by the caller.
    pub mine: bool,
    /// The holder's presence now (`live`, `active`, `idle`, `dormant`, `gone`).
    pub presence: Presence,
}

/// Live reservations of `project` (or every project), with `mine` against `me` and each
/// holder's presence.
///
/// # Errors
/// Store errors.
pub fn list(
    store: &dyn Store,
    runtime_dir: &Path,
    project: Option<&str>,
    me: Option<&str>,
) -> store::Result<Vec<Listed>> {
    let reservations = store.reservations(project)?;
    // Each holder once, by exact id (a name equal to the holder's id must not hide it),
    // probed all at once: one stalled socket must not cost every holder its deadline.
    let mut seen: HashMap<String, Presence> = HashMap::new();
    let mut found = Vec::new();
    for r in &reservations {
        // Gone until its presence says otherwise (no endpoint has the id: gone for good).
        if seen.insert(r.holder.clone(), Presence::Gone).is_none()
            && let Some(e) = super::endpoint_by_id(store, &r.holder)?
        {
            found.push(e);
        }
    }
    for (e, s) in found.iter().zip(presence::of_many(&found, runtime_dir)) {
        seen.insert(e.id.clone(), s.presence);
    }
    Ok(reservations
        .into_iter()
        .map(|r| Listed {
            mine: me == Some(r.holder.as_str()),
            presence: seen.get(&r.holder).copied().unwrap_or(Presence::Gone),
            reservation: r,
        })
        .collect())
}

/// One path and a live reservation whose glob matches it.
#[derive(Debug, Clone, Serialize)]
pub struct PathMatch {
    /// The path, relative to the project.
    pub path: String,
    /// The reservation.
    pub reservation: Reservation,
    /// Held by the caller.
    pub mine: bool,
}

/// Which live reservations of `project` match each of `paths` (relative to the project;
/// as [`overlap::matches`] decides), path by path in the order given.
///
/// # Errors
/// Store errors.
pub fn matching(
    store: &dyn Store,
    project: &str,
    paths: &[String],
    me: Option<&str>,
) -> store::Result<Vec<PathMatch>> {
    // Each glob compiled once, not once per path (the guard asks with every staged path).
    let live: Vec<(Reservation, Option<globset::GlobMatcher>)> = store
        .reservations(Some(project))?
        .into_iter()
        .map(|r| {
            let m = overlap::matcher(&r.glob);
            (r, m)
        })
        .collect();
    let mut out = Vec::new();
    for p in paths {
        let path = p.trim_start_matches("./");
        for (r, _) in live
            .iter()
            .filter(|(_, m)| m.as_ref().is_some_and(|m| m.is_match(path)))
        {
            out.push(PathMatch {
                path: p.clone(),
                reservation: r.clone(),
                mine: me == Some(r.holder.as_str()),
            });
        }
    }
    Ok(out)
}

/// Live reservations in `project` held by others than `me`, soonest to lapse last
/// (store order): what a session starting there should know.
///
/// # Errors
/// Store errors.
pub fn held_by_others(
    store: &dyn Store,
    project: &str,
    me: &str,
) -> store::Result<Vec<Reservation>> {
    Ok(store
        .reservations(Some(project))?
        .into_iter()
        .filter(|r| r.holder != me)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapses_in_words() {
        let s = 1000;
        assert_eq!(lapses_in(0, 5), "now");
        assert_eq!(lapses_in(40 * s, 0), "in 40s");
        assert_eq!(lapses_in(24 * 60 * s, 0), "in 24m");
        assert_eq!(lapses_in((5 * 60 + 7) * s, 0), "in 5m 7s");
        assert_eq!(lapses_in((24 * 60 + 7) * s, 0), "in 24m");
        assert_eq!(lapses_in(3600 * s, 0), "in 1h");
        assert_eq!(lapses_in((3600 + 300) * s, 0), "in 1h 5m");
        assert_eq!(lapses_in(7 * 86_400 * s, 0), "in 7d");
        assert_eq!(lapses_in((6 * 86_400 + 23 * 3600) * s, 0), "in 6d 23h");
        assert_eq!(lapses_in(1, 0), "in 1s");
    }

    #[test]
    fn ttls_and_reasons_are_bounded() {
        assert!(check_ttl(Duration::from_millis(999)).is_err());
        assert!(check_ttl(MAX_RESERVATION_TTL + Duration::from_secs(1)).is_err());
        assert_eq!(parse_ttl("30m").unwrap(), DEFAULT_TTL);
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        for bad in ["", "soon", "8d", "0", "100000000000000000000"] {
            assert!(matches!(parse_ttl(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
        assert_eq!(check_reason(Some("  ")).unwrap(), None);
        assert!(check_reason(Some(&"x".repeat(MAX_REASON + 1))).is_err());
        assert!(matches!(normalize_globs(&[]), Err(Error::Invalid(_))));
        let many: Vec<String> = (0..=MAX_GLOBS).map(|i| format!("f{i}")).collect();
        assert!(matches!(normalize_globs(&many), Err(Error::Invalid(_))));
    }
}
