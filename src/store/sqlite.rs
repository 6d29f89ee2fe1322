//! The default [`Store`]: one SQLite file at `$RELAY_HOME/relay.db` (DESIGN.md §4).
//!
//! WAL journal, `busy_timeout` 5 s, `synchronous=NORMAL` (or `FULL` for durability
//! `full`). Every write is one `BEGIN IMMEDIATE` transaction, so concurrent processes
//! serialize on the write lock instead of failing on a read→write upgrade.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::doorbell::{Doorbells, Listener};
use super::*;
use crate::clock::now_ms;
use crate::config::{Config, Durability};

/// How long a writer waits for another process's write lock: 5 s.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest sleep between retries of a busy write lock.
const BUSY_FIRST_NAP: Duration = Duration::from_micros(20);
const BUSY_LONGEST_NAP: Duration = Duration::from_millis(2);
/// Longest a waiter sleeps between looks at the database when no doorbell rings. The
/// doorbell is the wake-up; this only bounds the damage of a lost ring.
const BACKSTOP_POLL: Duration = Duration::from_secs(30);

const ENDPOINT_COLS: &str =
    "id, name, kind, cwd, pid, pid_start, mailbox, meta, created_at, updated_at, host";
const MESSAGE_COLS: &str = "seq, id, sender, sender_name, recipient, thread, reply_to, intent, \
     content_type, body, created_at, expires_at, state, deliveries";
const RESERVATION_COLS: &str = "id, project, holder, holder_name, host, glob, mode, reason, \
     created_at, expires_at, forced";
const RECEIPT_COLS: &str = "m.id, m.sender, m.recipient, e.name, m.thread, m.state, m.created_at, \
     m.delivered_at, m.acked_at, m.deliveries, m.expires_at, m.injected_at";

/// SQLite-backed [`Store`]. Safe to share between threads (one connection behind a mutex,
/// never held while waiting) and between processes (SQLite's locking).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    bells: Doorbells,
    max_body: usize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("bells", &self.bells)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// Makes sure `dir` is a private directory relay can write: created 0700 when missing,
/// else checked and never chmod-ed (the rules are in [`super::home`]).
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    super::home::private_dir(dir)
}

impl SqliteStore {
    /// Opens (creating if needed) the store under `config.home`: directory 0700, database
    /// 0600, schema migrated forward.
    ///
    /// # Errors
    /// [`Error::Home`] when the directory, the database or the doorbell directory belongs
    /// to another user, is writable by others or cannot be written by this process;
    /// [`Error::NotADatabase`] for a file that is not SQLite, [`Error::ForeignDatabase`] for
    /// someone else's SQLite file and [`Error::SchemaTooNew`] for a newer schema — all leave
    /// everything untouched; [`Error::Io`] when the directory or file cannot be created;
    /// [`Error::Sqlite`] otherwise.
    pub fn open(config: &Config) -> Result<SqliteStore> {
        create_private_dir(&config.home)?;
        super::home::safe_ancestors(&config.home)?;
        let path = config.db_path();
        Self::create_private_file(&path)?;
        super::home::private_file(&path, true)?;
        schema::check_header(&path)?;
        let mut conn = Connection::open(&path).map_err(|e| not_a_db(e, &path))?;
        conn.busy_handler(Some(busy_backoff()))?;
        // Version first: a newer database must be refused before anything could write.
        schema::check_version(&conn, &path).map_err(|e| not_a_db_err(e, &path))?;
        // WAL is kept in the file; switching again would cost a statement on every open,
        // and hooks open the store once per tool call.
        if !schema::header_says_wal(&path) {
            let mode = wal(&conn)?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(journal_mode = %mode, "could not switch the database to WAL");
            }
        }
        let sync = match config.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        schema::migrate(&mut conn, &path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            bells: Doorbells::new(config.doorbell_dir())?,
            max_body: config.max_body,
        })
    }

    /// Opens an existing store read-only (no migrations, nothing created): for commands that
    /// promise not to write, such as `relay discover`. `Ok(None)` when there is no store.
    ///
    /// # Errors
    /// As [`SqliteStore::open`], and [`Error::SchemaTooNew`] / `Sqlite` for a store this
    /// binary cannot read as it is.
    pub fn open_read_only(config: &Config) -> Result<Option<SqliteStore>> {
        let path = config.db_path();
        if !path.exists() {
            return Ok(None);
        }
        super::home::existing_dir(&config.home)?;
        super::home::safe_ancestors(&config.home)?;
        super::home::private_file(&path, false)?;
        schema::check_header(&path)?;
        let mut conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| not_a_db(e, &path))?;
        conn.busy_handler(Some(busy_backoff()))?;
        schema::check_version(&conn, &path).map_err(|e| not_a_db_err(e, &path))?;
        Ok(Some(SqliteStore {
            conn: Mutex::new(conn),
            bells: Doorbells::at(config.doorbell_dir()),
            max_body: config.max_body,
        }))
    }

    /// Creates `path` empty with mode 0600 unless it exists (then it is left as it is).
    fn create_private_file(path: &PathBuf) -> Result<()> {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(err)
                if err.kind() == std::io::ErrorKind::PermissionDenied
                    || err.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) =>
            {
                Err(super::home::Error::ReadOnly {
                    path: path.clone(),
                    err,
                }
                .into())
            }
            Err(err) => Err(Error::Io {
                what: "cannot create",
                path: path.clone(),
                err,
            }),
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn endpoint_by(conn: &Connection, col: &str, value: &str) -> Result<Option<Endpoint>> {
        let sql = format!("SELECT {ENDPOINT_COLS} FROM endpoints WHERE {col} = ?1");
        Ok(conn
            .prepare_cached(&sql)?
            .query_row([value], endpoint_row)
            .optional()?)
    }

    /// Earliest lease (or hold) expiry among the recipient's unacked messages matching the
    /// filter: the moment a waiter must look again even if no doorbell rings.
    fn next_lease_expiry(&self, recipient: &str, filter: &Filter) -> Result<Option<i64>> {
        let conn = self.conn();
        // Only leases still running and messages that can still be delivered: a lapsed
        // lease on an expired message would otherwise make every nap zero-length.
        let mut stmt = conn.prepare_cached(
            "SELECT min(lease_until) FROM messages WHERE recipient = ?1 \
             AND state IN ('queued', 'delivered') \
             AND lease_until > ?4 AND (expires_at IS NULL OR expires_at > ?4) \
             AND (?2 IS NULL OR sender = ?2) AND (?3 IS NULL OR thread = ?3) \
             AND (?5 IS NULL OR reply_to = ?5)",
        )?;
        Ok(stmt.query_row(
            params![
                recipient,
                filter.from,
                filter.thread,
                now_ms(),
                filter.reply_to
            ],
            |r| r.get(0),
        )?)
    }

    /// The plan SQLite chooses for [`Store::history`] with `q`: `EXPLAIN QUERY PLAN`'s
    /// detail lines, one per line (`NOTHING …` when a condition selects no message, so
    /// nothing is searched). For diagnostics and the tests that keep search from sorting
    /// every match.
    ///
    /// # Errors
    /// Backend errors.
    pub fn history_plan(&self, q: &History) -> Result<String> {
        let conn = self.conn();
        let drive = drive(&conn, q)?;
        if drive == Drive::Nothing {
            return Ok("NOTHING (a condition selects no message)".into());
        }
        let (sql, args) = history_sql(q, drive);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let lines = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(lines.join("\n"))
    }

    /// `PRAGMA synchronous` of this store's connection: 1 = NORMAL, 2 = FULL.
    ///
    /// # Errors
    /// Backend errors.
    pub fn synchronous(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    /// The wait loop: look, then sleep until the bell, a lease expiry, the backstop poll,
    /// a cancel or the deadline, whichever is first.
    fn wait_with(
        &self,
        recipient: &str,
        req: &Fetch,
        deadline: Instant,
        bell: &mut Listener,
        cancel: &Cancel,
    ) -> Result<Vec<Message>> {
        loop {
            if cancel.is_cancelled() {
                return Ok(Vec::new());
            }
            let got = self.fetch(recipient, req)?;
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(got);
            }
            let mut nap = (deadline - now).min(BACKSTOP_POLL);
            if let Some(at) = self.next_lease_expiry(recipient, &req.filter)? {
                let until = Duration::from_millis((at - now_ms()).max(0) as u64);
                nap = nap.min(until + Duration::from_millis(1));
            }
            bell.wait(nap, cancel);
        }
    }
}

/// Switches the database to WAL, retrying for up to [`BUSY_TIMEOUT`] when another process
/// is switching it at the same moment: two connections that both hold a read lock and both
/// want the exclusive lock the switch needs would deadlock, so SQLite fails one of them with
/// `SQLITE_BUSY` at once, without calling the busy handler (seen as "database is locked"
/// when 16 processes open a fresh home together). Returns the journal mode now in force.
/// Commits a write transaction, then rings the event doorbell: its triggers may have
/// recorded events (store::events), and `relay events --follow` waits on that bell. A lost
/// ring costs a follower only until its backstop look.
fn commit(tx: rusqlite::Transaction<'_>, bells: &Doorbells) -> Result<()> {
    tx.commit()?;
    bells.ring(EVENTS_BELL);
    Ok(())
}

/// The doorbell file rung after every write (ids start with a letter or digit, so no
/// endpoint's doorbell has this name).
const EVENTS_BELL: &str = "_events";

const EVENT_COLS: &str = "cursor, at, kind, message, sender, recipient, thread, endpoint, detail";

fn event_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = r.get(2)?;
    Ok(Event {
        cursor: r.get::<_, i64>(0)? as u64,
        at: r.get(1)?,
        kind: kind.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        message: r.get(3)?,
        from: r.get(4)?,
        to: r.get(5)?,
        thread: r.get(6)?,
        endpoint: r.get(7)?,
        detail: r.get(8)?,
    })
}

fn wal(conn: &Connection) -> Result<String> {
    let started = Instant::now();
    let mut nap = BUSY_FIRST_NAP;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(nap);
                nap = (nap * 2).min(BUSY_LONGEST_NAP);
            }
            other => return Ok(other?),
        }
    }
}

/// The busy handler: retry for up to [`BUSY_TIMEOUT`], sleeping 20 µs, 40 µs, … up to
/// 2 ms between tries. SQLite's own `busy_timeout` starts at 1 ms and climbs to 100 ms,
/// which dominates latency when a waiter and a sender touch the lock at the same moment;
/// write transactions here last tens of microseconds, so short naps win.
fn busy_backoff() -> impl FnMut(i32) -> bool + Send + 'static {
    let mut started = Instant::now();
    move |count| {
        if count == 0 {
            started = Instant::now();
        }
        if started.elapsed() >= BUSY_TIMEOUT {
            return false;
        }
        let nap = BUSY_FIRST_NAP.saturating_mul(1 << count.clamp(0, 16) as u32);
        std::thread::sleep(nap.min(BUSY_LONGEST_NAP));
        true
    }
}

fn not_a_db(e: rusqlite::Error, path: &Path) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
        Error::NotADatabase {
            path: path.to_path_buf(),
        }
    } else {
        Error::Sqlite(e)
    }
}

fn not_a_db_err(e: Error, path: &Path) -> Error {
    match e {
        Error::Sqlite(s) => not_a_db(s, path),
        other => other,
    }
}

fn endpoint_row(r: &Row<'_>) -> rusqlite::Result<Endpoint> {
    let kind: String = r.get(2)?;
    let meta: String = r.get(7)?;
    Ok(Endpoint {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: kind.parse().unwrap_or_default(),
        cwd: r.get(3)?,
        pid: r.get(4)?,
        pid_start: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        mailbox: r.get(6)?,
        meta: serde_json::from_str(&meta).unwrap_or_default(),
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        host: r.get(10)?,
    })
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<(i64, Message)> {
    let intent: String = r.get(7)?;
    let state: String = r.get(12)?;
    Ok((
        r.get(0)?,
        Message {
            id: r.get(1)?,
            from: r.get(2)?,
            from_name: r.get(3)?,
            to: r.get(4)?,
            thread: r.get(5)?,
            reply_to: r.get(6)?,
            intent: intent.parse().unwrap_or_default(),
            content_type: r.get(8)?,
            body: r.get(9)?,
            created_at: r.get(10)?,
            expires_at: r.get(11)?,
            state: State::parse(&state).unwrap_or(State::Queued),
            deliveries: r.get(13)?,
        },
    ))
}

/// How a search with text finds its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// Walk the index's matches newest first, join each to its message, filter it, stop
    /// at the limit: best when the other conditions keep much of the mail.
    Index,
    /// Walk the index's matches newest first as well, but only between the first and last
    /// `seq` of the few messages one condition selects, and join only those among them
    /// (their `seq`s listed first): for one endpoint's or one thread's mail in a large
    /// store, a match outside it costs a lookup in that list instead of a read of its
    /// message, and matches outside its span are never walked.
    Candidates {
        /// The condition listed.
        source: Source,
        /// The lowest and highest `seq` it selects.
        span: (i64, i64),
    },
    /// One condition selects no message at all: nothing to search.
    Nothing,
}

/// The condition whose messages a [`Drive::Candidates`] search lists first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Ids,
    Participant,
    From,
    To,
    Thread,
}

/// Up to this many messages selected by one condition (listed by its index), a search
/// lists them first ([`Drive::Candidates`]). Counting and listing cost about 0.2 µs each
/// (measured, release build), paid on every search with such a condition, so the bound
/// is kept low; more than this and the walk usually meets the limit early anyway.
const FEW_CANDIDATES: i64 = 1000;

/// How many messages a condition selects (counted up to a cap), and their lowest and
/// highest `seq` (`None` when none).
type Span = (i64, Option<i64>, Option<i64>);

/// Which [`Drive`] suits `q`: counts (up to [`FEW_CANDIDATES`]) the messages each of its
/// indexed conditions selects, on the indexes of sender, recipient, thread and id, and
/// lists the fewest when they are few. (Looking each candidate up in the index instead
/// would be worse: FTS5 answers a `rowid =` lookup by seeking every segment, about a
/// hundred times the cost of stepping past a match.)
fn drive(conn: &Connection, q: &History) -> Result<Drive> {
    if q.text.is_none() {
        return Ok(Drive::Index);
    }
    let cap = FEW_CANDIDATES + 1;
    // (how many, lowest seq, highest seq) of the messages `cond` selects, counting at most
    // `cap`.
    let span = |cond: &str, v: &str| -> Result<Span> {
        let sql = format!(
            "SELECT count(*), min(seq), max(seq) FROM \
               (SELECT seq FROM messages WHERE {cond} LIMIT ?2)"
        );
        Ok(conn
            .prepare_cached(&sql)?
            .query_row(params![v, cap], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?)
    };
    let ids_json = q
        .ids
        .as_ref()
        .map(|ids| serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()));
    let mut spans: Vec<(Source, Span)> = Vec::new();
    if let Some(ids) = &ids_json {
        spans.push((
            Source::Ids,
            span("id IN (SELECT value FROM json_each(?1))", ids)?,
        ));
    }
    if let Some(p) = &q.participant {
        let (n1, lo1, hi1) = span("sender = ?1", p)?;
        // Too many sent already: not worth counting what it received.
        if n1 <= FEW_CANDIDATES {
            let (n2, lo2, hi2) = span("recipient = ?1", p)?;
            let lo = [lo1, lo2].into_iter().flatten().min();
            let hi = [hi1, hi2].into_iter().flatten().max();
            spans.push((Source::Participant, (n1.saturating_add(n2), lo, hi)));
        }
    }
    if let Some(f) = &q.from {
        spans.push((Source::From, span("sender = ?1", f)?));
    }
    if let Some(t) = &q.to {
        spans.push((Source::To, span("recipient = ?1", t)?));
    }
    if let Some(t) = &q.thread {
        spans.push((Source::Thread, span("thread = ?1", t)?));
    }
    let fewest = spans
        .into_iter()
        .filter(|(_, (n, _, _))| *n <= FEW_CANDIDATES)
        .min_by_key(|(_, (n, _, _))| *n);
    Ok(match fewest {
        None => Drive::Index,
        Some((source, (_, Some(lo), Some(hi)))) => Drive::Candidates {
            source,
            span: (lo, hi),
        },
        Some(_) => Drive::Nothing,
    })
}

/// The statement [`Store::history`] runs for `q`, and its parameters.
fn history_sql(q: &History, drive: Drive) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |v: Value| {
        args.push(v);
        format!("?{}", args.len())
    };
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let mut conds: Vec<String> = Vec::new();
    // The `seq`s of the messages the listed condition selects (Drive::Candidates).
    let mut listed: Option<String> = None;
    let mut list = |src: Source, sql: String| {
        if matches!(drive, Drive::Candidates { source, .. } if source == src) {
            listed = Some(sql);
        }
    };
    if let Some(p) = &q.participant {
        let p = arg(Value::Text(p.clone()));
        conds.push(format!("(m.sender = {p} OR m.recipient = {p})"));
        list(
            Source::Participant,
            format!(
                "SELECT seq FROM messages WHERE sender = {p} \
                 UNION ALL SELECT seq FROM messages WHERE recipient = {p}"
            ),
        );
    }
    if let Some(f) = &q.from {
        let f = arg(Value::Text(f.clone()));
        conds.push(format!("m.sender = {f}"));
        list(
            Source::From,
            format!("SELECT seq FROM messages WHERE sender = {f}"),
        );
    }
    if let Some(t) = &q.to {
        let t = arg(Value::Text(t.clone()));
        conds.push(format!("m.recipient = {t}"));
        list(
            Source::To,
            format!("SELECT seq FROM messages WHERE recipient = {t}"),
        );
    }
    if let Some(t) = &q.thread {
        let t = arg(Value::Text(t.clone()));
        conds.push(format!("m.thread = {t}"));
        list(
            Source::Thread,
            format!("SELECT seq FROM messages WHERE thread = {t}"),
        );
    }
    if let Some(ids) = &q.ids {
        let ids = arg(Value::Text(json(ids)));
        conds.push(format!("m.id IN (SELECT value FROM json_each({ids}))"));
        list(
            Source::Ids,
            format!("SELECT seq FROM messages WHERE id IN (SELECT value FROM json_each({ids}))"),
        );
    }
    if let Some(r) = &q.reply_to {
        conds.push(format!(
            "m.reply_to IN (SELECT value FROM json_each({}))",
            arg(Value::Text(json(r)))
        ));
    }
    if let Some(since) = q.since_ms {
        conds.push(format!("m.created_at >= {}", arg(Value::Integer(since))));
    }
    let text = q.text.as_ref().map(|t| arg(Value::Text(t.to_fts5())));
    let limit = arg(Value::Integer(q.limit.clamp(1, MAX_HISTORY) as i64));
    let cols = MESSAGE_COLS
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = match text {
        // The index drives: FTS5 hands out matching rowids newest first (the rowid is
        // `seq`), each joined to its message and filtered, and the LIMIT stops the walk
        // early, so no sort of all matches. CROSS JOIN keeps that loop order.
        Some(text) => {
            let mut pre = vec![format!("messages_fts MATCH {text}")];
            if let (Some(listed), Drive::Candidates { span, .. }) = (listed, drive) {
                // The span is a rowid range FTS5 seeks to; `+` keeps the list itself away
                // from FTS5 (it would seek once per entry): it is checked against each
                // match instead, before the join.
                pre.push(format!(
                    "f.rowid BETWEEN {} AND {}",
                    arg(Value::Integer(span.0)),
                    arg(Value::Integer(span.1))
                ));
                pre.push(format!("+f.rowid IN ({listed})"));
            }
            pre.extend(conds);
            format!(
                "SELECT {cols} FROM messages_fts f CROSS JOIN messages m ON m.seq = f.rowid \
                 WHERE {} ORDER BY f.rowid DESC LIMIT {limit}",
                pre.join(" AND ")
            )
        }
        None => format!(
            "SELECT {cols} FROM messages m {} ORDER BY m.seq DESC LIMIT {limit}",
            if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            }
        ),
    };
    (sql, args)
}

fn reservation_row(r: &Row<'_>) -> rusqlite::Result<Reservation> {
    let mode: String = r.get(6)?;
    Ok(Reservation {
        id: r.get(0)?,
        project: r.get(1)?,
        holder: r.get(2)?,
        holder_name: r.get(3)?,
        host: r.get(4)?,
        glob: r.get(5)?,
        // An unknown mode can only come from a newer writer: exclusive is the safe reading.
        mode: mode.parse().unwrap_or_default(),
        reason: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
        forced: r.get(10)?,
    })
}

/// The `WHERE` condition for a [`ReservationSelect`], over parameters `?1` (project),
/// `?2` (holder) and `?3` (globs as a JSON array), and the JSON for `?3`.
fn reservation_select(sel: &ReservationSelect) -> (&'static str, Option<String>) {
    let globs = sel
        .globs
        .as_ref()
        .map(|g| serde_json::to_string(g).unwrap_or_else(|_| "[]".into()));
    (
        "(?1 IS NULL OR project = ?1) AND (?2 IS NULL OR holder = ?2) \
         AND (?3 IS NULL OR glob IN (SELECT value FROM json_each(?3)))",
        globs,
    )
}

/// How often a reservation request re-decides outside the write lock when the project's
/// reservations changed between its read and the lock.
const RESERVE_RETRIES: usize = 3;

/// The reservations in `live` a request by `holder` in `mode` must not overlap: another
/// holder's, where either side is exclusive.
fn contested<'a>(
    live: &'a [Reservation],
    holder: &'a str,
    mode: Mode,
) -> impl Iterator<Item = &'a Reservation> + 'a {
    live.iter()
        .filter(move |r| r.holder != holder)
        .filter(move |r| r.mode == Mode::Exclusive || mode == Mode::Exclusive)
}

/// The order [`Store::reservations`] promises: project, then `created_at`, then id.
fn sort_reservations(r: &mut [Reservation]) {
    r.sort_by(|a, b| (&a.project, a.created_at, &a.id).cmp(&(&b.project, b.created_at, &b.id)));
}

fn receipt_row(r: &Row<'_>) -> rusqlite::Result<Receipt> {
    let state: String = r.get(5)?;
    Ok(Receipt {
        id: r.get(0)?,
        from: r.get(1)?,
        to: r.get(2)?,
        to_name: r.get(3)?,
        thread: r.get(4)?,
        state: State::parse(&state).unwrap_or(State::Queued),
        created_at: r.get(6)?,
        delivered_at: r.get(7)?,
        acked_at: r.get(8)?,
        deliveries: r.get(9)?,
        expires_at: r.get(10)?,
        injected_at: r.get(11)?,
    })
}

/// A duration in ms for SQL, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Ids are ASCII below `~`, so every id starting with `p` sorts in `[p, p + "~")`; the
/// range lets SQLite use the index instead of scanning.
const PREFIX_RANGE: &str = "id >= ?1 AND id < ?1 || '~'";

impl SqliteStore {
    /// The locked part of [`Store::reserve`]: under the write lock, re-reads the project's
    /// live reservations and, when every pair they pose is already decided (or `may_retry`
    /// is false: then the rest is decided here, within `decider`'s budget), records the
    /// request or its refusal. `Ok(None)`, with nothing written, when pairs are new and
    /// `may_retry`: decide them outside the lock and come back.
    fn reserve_locked(
        &self,
        req: &ReserveRequest,
        globs: &[&str],
        host: &str,
        decider: &mut overlap::Decider,
        may_retry: bool,
    ) -> Result<Option<Reserved>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The clock is read under the write lock: what is live is judged at the moment
        // nobody else can change it.
        let now = now_ms();
        let holder =
            Self::endpoint_by(&tx, "id", &req.holder)?.ok_or_else(|| Error::UnknownEndpoint {
                query: req.holder.clone(),
            })?;
        tx.prepare_cached("DELETE FROM reservations WHERE project = ?1 AND expires_at <= ?2")?
            .execute(params![req.project, now])?;
        let live: Vec<Reservation> = tx
            .prepare_cached(&format!(
                "SELECT {RESERVATION_COLS} FROM reservations WHERE project = ?1 \
                 ORDER BY created_at, id"
            ))?
            .query_map([&req.project], reservation_row)?
            .collect::<rusqlite::Result<_>>()?;
        if may_retry
            && contested(&live, &holder.id, req.mode)
                .any(|r| (0..globs.len()).any(|i| decider.known(i, &r.glob).is_none()))
        {
            // Dropping the transaction rolls the expiry sweep back: nothing was written.
            return Ok(None);
        }
        let mut conflicts = Vec::new();
        for (i, want) in globs.iter().enumerate() {
            for held in contested(&live, &holder.id, req.mode) {
                let o = decider.decide(i, &held.glob);
                if o == overlap::Overlap::Undecided {
                    tracing::warn!(
                        glob = %want,
                        held = %held.glob,
                        "could not decide within the work budget whether these globs \
                         overlap, so they count as a conflict; simpler globs (fewer ? and * \
                         in one segment) are decided at once"
                    );
                }
                if o.conflicts() {
                    conflicts.push(Conflict {
                        glob: want.to_string(),
                        held: held.clone(),
                    });
                }
            }
        }
        if !conflicts.is_empty() && !req.force {
            // Nothing granted; the expired rows deleted above may as well go.
            commit(tx, &self.bells)?;
            return Ok(Some(Reserved {
                granted: Vec::new(),
                conflicts,
            }));
        }
        let mut granted = Vec::with_capacity(globs.len());
        {
            let mut update = tx.prepare_cached(
                "UPDATE reservations SET holder_name = ?2, host = ?3, mode = ?4, reason = ?5, \
                   expires_at = ?6, forced = ?7 WHERE id = ?1",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO reservations (id, project, holder, holder_name, host, glob, mode, \
                   reason, created_at, expires_at, forced) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for &glob in globs {
                let forced = req.force && conflicts.iter().any(|c| c.glob == glob);
                let held = live
                    .iter()
                    .find(|r| r.holder == holder.id && r.glob == glob);
                let is_new = held.is_none();
                let r = req.grant(held, &holder, host, glob, now, forced);
                if is_new {
                    insert.execute(params![
                        r.id,
                        r.project,
                        r.holder,
                        r.holder_name,
                        r.host,
                        r.glob,
                        r.mode.as_str(),
                        r.reason,
                        r.created_at,
                        r.expires_at,
                        r.forced
                    ])?;
                } else {
                    update.execute(params![
                        r.id,
                        r.holder_name,
                        r.host,
                        r.mode.as_str(),
                        r.reason,
                        r.expires_at,
                        r.forced
                    ])?;
                }
                granted.push(r);
            }
        }
        commit(tx, &self.bells)?;
        Ok(Some(Reserved { granted, conflicts }))
    }
}

impl Store for SqliteStore {
    fn max_body(&self) -> usize {
        self.max_body
    }

    fn register(&self, reg: &Registration) -> Result<Registered> {
        if let Some(name) = &reg.name {
            names::check_name(name)?;
        }
        if let Some(id) = &reg.id {
            names::check_id(id)?;
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing = match (&reg.id, &reg.name) {
            (Some(id), _) => Self::endpoint_by(&tx, "id", id)?,
            (None, Some(name)) => Self::endpoint_by(&tx, "name", name)?,
            (None, None) => None,
        };
        let now = now_ms();
        let created = existing.is_none();
        let mut ep = existing.unwrap_or_else(|| reg.new_endpoint(now));
        let mut name_taken_from = None;
        if let Some(name) = &reg.name {
            if let Some(holder) = Self::endpoint_by(&tx, "name", name)?
                && holder.id != ep.id
            {
                tx.execute(
                    "UPDATE endpoints SET name = NULL, updated_at = ?2 WHERE id = ?1",
                    params![holder.id, now],
                )?;
                name_taken_from = Some(holder.id);
            }
            ep.name = Some(name.clone());
        }
        reg.apply(&mut ep, now);
        let meta = serde_json::to_string(&ep.meta).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "INSERT INTO endpoints (id, name, kind, cwd, pid, pid_start, mailbox, meta, created_at, updated_at, host)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
               cwd = excluded.cwd, pid = excluded.pid, pid_start = excluded.pid_start,
               mailbox = excluded.mailbox, meta = excluded.meta, updated_at = excluded.updated_at,
               host = excluded.host",
            params![
                ep.id,
                ep.name,
                ep.kind.as_str(),
                ep.cwd,
                ep.pid,
                ep.pid_start.map(|v| v as i64),
                ep.mailbox,
                meta,
                ep.created_at,
                ep.updated_at,
                ep.host
            ],
        )?;
        commit(tx, &self.bells)?;
        Ok(Registered {
            endpoint: ep,
            created,
            name_taken_from,
        })
    }

    fn lookup(&self, query: &str) -> Result<Lookup> {
        if query.is_empty() {
            return Ok(Lookup::Unknown);
        }
        let conn = self.conn();
        if let Some(e) = Self::endpoint_by(&conn, "name", query)? {
            return Ok(Lookup::Found(e));
        }
        if let Some(e) = Self::endpoint_by(&conn, "id", query)? {
            return Ok(Lookup::Found(e));
        }
        if query.len() < MIN_PREFIX {
            return Ok(Lookup::Unknown);
        }
        let sql = format!("SELECT {ENDPOINT_COLS} FROM endpoints WHERE {PREFIX_RANGE} ORDER BY id");
        let mut matches: Vec<Endpoint> = conn
            .prepare_cached(&sql)?
            .query_map([query], endpoint_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(match matches.len() {
            0 => Lookup::Unknown,
            1 => Lookup::Found(matches.remove(0)),
            _ => Lookup::Ambiguous(matches),
        })
    }

    fn roster(&self) -> Result<Vec<RosterEntry>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {ENDPOINT_COLS}, (SELECT count(*) FROM messages m WHERE m.recipient = e.id \
               AND m.state != 'acked' AND (m.expires_at IS NULL OR m.expires_at > ?1)) \
             FROM endpoints e ORDER BY e.name IS NULL, e.name, e.id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([now_ms()], |r| {
            Ok(RosterEntry {
                endpoint: endpoint_row(r)?,
                pending: r.get::<_, i64>(11)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn enqueue_batch(&self, msgs: &[NewMessage]) -> Result<Vec<Receipt>> {
        // The cap is checked for the whole batch before the transaction opens.
        check_messages(
            msgs.iter()
                .map(|m| (m.body.as_slice(), m.thread.as_deref())),
            self.max_body,
        )?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut receipts = Vec::with_capacity(msgs.len());
        {
            let mut name_of = tx.prepare_cached("SELECT name FROM endpoints WHERE id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (id, sender, sender_name, recipient, thread, reply_to, intent, \
                   content_type, body, created_at, expires_at, lease_until) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for m in msgs {
                let sender_name: Option<String> = name_of
                    .query_row([&m.from], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| Error::UnknownEndpoint {
                        query: m.from.clone(),
                    })?;
                let to_name: Option<String> = name_of
                    .query_row([&m.to], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| Error::UnknownEndpoint {
                        query: m.to.clone(),
                    })?;
                let id = uuid::Uuid::now_v7().to_string();
                let now = now_ms();
                insert.execute(params![
                    id,
                    m.from,
                    sender_name,
                    m.to,
                    m.thread,
                    m.reply_to,
                    m.intent.as_str(),
                    m.content_type,
                    m.body,
                    now,
                    m.expires_at,
                    m.hold.map(|h| now.saturating_add(millis(h)))
                ])?;
                schema::index_message(&tx, tx.last_insert_rowid(), &m.body)?;
                receipts.push(Receipt {
                    id,
                    from: m.from.clone(),
                    to: m.to.clone(),
                    to_name,
                    thread: m.thread.clone(),
                    state: State::Queued,
                    created_at: now,
                    delivered_at: None,
                    acked_at: None,
                    deliveries: 0,
                    expires_at: m.expires_at,
                    injected_at: None,
                });
            }
        }
        commit(tx, &self.bells)?;
        drop(conn);
        // Held messages ring too: a waiter already asleep then learns when their hold
        // lapses (it naps until the earliest lease or hold), in case the sender dies.
        let mut rung: Vec<&str> = Vec::new();
        for m in msgs {
            if !rung.contains(&m.to.as_str()) {
                self.bells.ring(&m.to);
                rung.push(&m.to);
            }
        }
        Ok(receipts)
    }

    fn import(&self, m: &Message) -> Result<bool> {
        names::check_id(&m.id)?;
        check_messages([(m.body.as_slice(), m.thread.as_deref())], self.max_body)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for id in [&m.from, &m.to] {
            if Self::endpoint_by(&tx, "id", id)?.is_none() {
                return Err(Error::UnknownEndpoint { query: id.clone() });
            }
        }
        let n = tx.execute(
            "INSERT INTO messages (id, sender, sender_name, recipient, thread, reply_to, intent, \
               content_type, body, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT(id) DO NOTHING",
            params![
                m.id,
                m.from,
                m.from_name,
                m.to,
                m.thread,
                m.reply_to,
                m.intent.as_str(),
                m.content_type,
                m.body,
                m.created_at,
                m.expires_at
            ],
        )?;
        if n > 0 {
            schema::index_message(&tx, tx.last_insert_rowid(), &m.body)?;
        }
        commit(tx, &self.bells)?;
        drop(conn);
        if n > 0 {
            self.bells.ring(&m.to);
        }
        Ok(n > 0)
    }

    fn fetch(&self, recipient: &str, req: &Fetch) -> Result<Vec<Message>> {
        let now = now_ms();
        // Every statement below binds the same nine parameters; each uses what it needs.
        let pending = "recipient = ?1 AND state IN ('queued', 'delivered') \
             AND (lease_until IS NULL OR lease_until <= ?2) \
             AND (expires_at IS NULL OR expires_at > ?2) AND (?3 IS NULL OR sender = ?3) \
             AND (?4 IS NULL OR thread = ?4) \
             AND (?7 IS NULL OR id IN (SELECT value FROM json_each(?7))) \
             AND (?8 IS NULL OR reply_to = ?8) \
             AND (?9 IS NULL OR id NOT IN (SELECT value FROM json_each(?9)))";
        let lease_until = match req.mode {
            FetchMode::Deliver { lease } => {
                now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
            }
            _ => now,
        };
        let ids = req
            .filter
            .ids
            .as_ref()
            .map(|ids| serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()));
        let exclude = req
            .filter
            .exclude
            .as_ref()
            .map(|ids| serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()));
        let args = params![
            recipient,
            now,
            req.filter.from,
            req.filter.thread,
            req.limit.max(1) as i64,
            lease_until,
            ids,
            req.filter.reply_to,
            exclude
        ];
        let set = match req.mode {
            FetchMode::Peek => {
                let conn = self.conn();
                let sql = format!(
                    "SELECT {MESSAGE_COLS} FROM messages WHERE {pending} AND ?6 = ?6 \
                     ORDER BY seq LIMIT ?5"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(args, message_row)?;
                return Ok(rows
                    .map(|r| r.map(|(_, m)| m))
                    .collect::<rusqlite::Result<_>>()?);
            }
            FetchMode::Deliver { .. } => "state = 'delivered', lease_until = ?6",
            FetchMode::Take => "state = 'acked', acked_at = ?2, lease_until = NULL",
        };
        // Most looks by a waiter find nothing: answer those from a read snapshot, which in
        // WAL mode never contends for the write lock with senders.
        {
            let conn = self.conn();
            let probe = format!(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE {pending} AND ?5 = ?5 AND ?6 = ?6)"
            );
            let any: bool = conn.prepare_cached(&probe)?.query_row(args, |r| r.get(0))?;
            if !any {
                return Ok(Vec::new());
            }
        }
        let sql = format!(
            "UPDATE messages SET {set}, delivered_at = coalesce(delivered_at, ?2), \
               deliveries = deliveries + 1 \
             WHERE seq IN (SELECT seq FROM messages WHERE {pending} AND ?6 = ?6 \
               ORDER BY seq LIMIT ?5) \
             RETURNING {MESSAGE_COLS}"
        );
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out: Vec<(i64, Message)> = {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(args, message_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        commit(tx, &self.bells)?;
        // RETURNING gives no order guarantee; hand messages out oldest first.
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, m)| m).collect())
    }

    fn pending(&self, recipient: &str) -> Result<(u64, u64)> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM messages WHERE recipient = ?1 \
             AND state IN ('queued', 'delivered') AND (lease_until IS NULL OR lease_until <= ?2) \
             AND (expires_at IS NULL OR expires_at > ?2)",
        )?;
        Ok(stmt.query_row(params![recipient, now_ms()], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?)
    }

    fn claim(&self, recipient: &str, id: &str, lease: Duration) -> Result<Option<Message>> {
        let now = now_ms();
        let sql = format!(
            "UPDATE messages SET state = 'delivered', lease_until = ?4, \
               delivered_at = coalesce(delivered_at, ?3), deliveries = deliveries + 1 \
             WHERE id = ?1 AND recipient = ?2 AND state = 'queued' AND lease_until > ?3 \
             RETURNING {MESSAGE_COLS}"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let got = stmt
            .query_row(
                params![id, recipient, now, now.saturating_add(millis(lease))],
                message_row,
            )
            .optional()?;
        Ok(got.map(|(_, m)| m))
    }

    fn settle_hold(&self, recipient: &str, id: &str, shown: bool) -> Result<State> {
        let now = now_ms();
        let held = "id = ?1 AND recipient = ?2 AND state = 'queued' AND lease_until IS NOT NULL";
        let sql = if shown {
            format!(
                "UPDATE messages SET state = 'acked', acked_at = ?3, \
                   delivered_at = coalesce(delivered_at, ?3), deliveries = deliveries + 1, \
                   lease_until = NULL WHERE {held}"
            )
        } else {
            format!("UPDATE messages SET lease_until = NULL WHERE {held} AND ?3 = ?3")
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(&sql, params![id, recipient, now])?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM messages WHERE id = ?1 AND recipient = ?2",
                params![id, recipient],
                |r| r.get(0),
            )
            .optional()?;
        commit(tx, &self.bells)?;
        drop(conn);
        let state = state
            .and_then(|s| State::parse(&s))
            .ok_or_else(|| Error::UnknownMessage {
                query: id.to_string(),
            })?;
        if changed == 1 && !shown {
            self.bells.ring(recipient);
        }
        Ok(state)
    }

    fn release(&self, recipient: &str, ids: &[String]) -> Result<u64> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE messages SET lease_until = ?3 \
                 WHERE id = ?1 AND recipient = ?2 AND state = 'delivered' AND lease_until > ?3",
            )?;
            for id in ids {
                n += stmt.execute(params![id, recipient, now])? as u64;
            }
        }
        commit(tx, &self.bells)?;
        drop(conn);
        if n > 0 {
            self.bells.ring(recipient);
        }
        Ok(n)
    }

    fn mark_injected(&self, recipient: &str, ids: &[String]) -> Result<u64> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE messages SET injected_at = ?3 \
                 WHERE id = ?1 AND recipient = ?2 AND state = 'delivered'",
            )?;
            for id in ids {
                n += stmt.execute(params![id, recipient, now])? as u64;
            }
        }
        if n > 0 {
            // In the same commit: the hint that tells the session's next hook to settle.
            tx.execute(
                "UPDATE endpoints SET meta = json_set(meta, '$.' || ?2, json('true')) \
                 WHERE id = ?1",
                params![recipient, INJECTED_HINT],
            )?;
        }
        commit(tx, &self.bells)?;
        Ok(n)
    }

    fn settle_injected(&self, recipient: &str) -> Result<Vec<String>> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = tx
            .prepare_cached(
                "UPDATE messages SET state = 'acked', acked_at = ?2, lease_until = NULL \
                 WHERE recipient = ?1 AND state = 'delivered' AND injected_at IS NOT NULL \
                 RETURNING id",
            )?
            .query_map(params![recipient, now], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        tx.execute(
            "UPDATE endpoints SET meta = json_remove(meta, '$.' || ?2) WHERE id = ?1",
            params![recipient, INJECTED_HINT],
        )?;
        commit(tx, &self.bells)?;
        Ok(ids)
    }

    fn loop_counts(
        &self,
        sender: &str,
        recipient: &str,
        thread: Option<&str>,
        since_ms: i64,
    ) -> Result<LoopCounts> {
        let conn = self.conn();
        let agents = format!(
            "({})",
            Kind::ALL
                .iter()
                .filter(|k| k.is_agent())
                .map(|k| format!("'{}'", k.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let sent_since: i64 = conn
            .prepare_cached("SELECT count(*) FROM messages WHERE sender = ?1 AND created_at > ?2")?
            .query_row(params![sender, since_ms], |r| r.get(0))?;
        let thread_run: i64 = match thread {
            None => 0,
            Some(t) => conn
                .prepare_cached(&format!(
                    "SELECT count(*) FROM messages m \
                       JOIN endpoints s ON s.id = m.sender \
                       JOIN endpoints r ON r.id = m.recipient \
                     WHERE m.thread = ?1 AND s.kind IN {agents} AND r.kind IN {agents} \
                       AND ((m.sender = ?2 AND m.recipient = ?3) \
                         OR (m.sender = ?3 AND m.recipient = ?2)) \
                       AND m.seq > coalesce((SELECT max(h.seq) FROM messages h \
                             JOIN endpoints hs ON hs.id = h.sender \
                           WHERE h.thread = ?1 AND hs.kind = 'human'), 0)"
                ))?
                .query_row(params![t, sender, recipient], |r| r.get(0))?,
        };
        Ok(LoopCounts {
            thread_run: thread_run.max(0) as u64,
            sent_since: sent_since.max(0) as u64,
        })
    }

    fn ack(&self, recipient: Option<&str>, ids: &[String]) -> Result<Vec<AckResult>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut out = Vec::with_capacity(ids.len());
        {
            let sql =
                format!("SELECT id, recipient, state FROM messages WHERE {PREFIX_RANGE} LIMIT 2");
            let mut find = tx.prepare_cached(&sql)?;
            let mut exact =
                tx.prepare_cached("SELECT id, recipient, state FROM messages WHERE id = ?1")?;
            let mut update = tx.prepare_cached(
                "UPDATE messages SET state = 'acked', acked_at = ?2, \
                   delivered_at = coalesce(delivered_at, ?2), lease_until = NULL WHERE id = ?1",
            )?;
            let row = |r: &Row<'_>| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            };
            for given in ids {
                let mut found: Vec<(String, String, String)> = exact
                    .query_map([given], row)?
                    .collect::<rusqlite::Result<_>>()?;
                if found.is_empty() && given.len() >= MIN_PREFIX {
                    found = find
                        .query_map([given], row)?
                        .collect::<rusqlite::Result<_>>()?;
                }
                let outcome = match found.as_slice() {
                    [] => AckOutcome::Unknown,
                    [_, _, ..] => AckOutcome::Ambiguous,
                    [(_, to, _)] if recipient.is_some_and(|r| r != to) => AckOutcome::NotYours,
                    [(_, _, state)] if state == "acked" => AckOutcome::AlreadyAcked,
                    [(id, _, _)] => {
                        update.execute(params![id, now])?;
                        AckOutcome::Acked
                    }
                };
                out.push(AckResult {
                    id: found
                        .first()
                        .map(|f| f.0.clone())
                        .unwrap_or_else(|| given.clone()),
                    outcome,
                });
            }
        }
        commit(tx, &self.bells)?;
        Ok(out)
    }

    fn receipt(&self, id: &str) -> Result<Receipt> {
        let conn = self.conn();
        let base = format!(
            "SELECT {RECEIPT_COLS} FROM messages m LEFT JOIN endpoints e ON e.id = m.recipient"
        );
        let exact: Option<Receipt> = conn
            .prepare_cached(&format!("{base} WHERE m.id = ?1"))?
            .query_row([id], receipt_row)
            .optional()?;
        if let Some(r) = exact {
            return Ok(r);
        }
        let unknown = || Error::UnknownMessage {
            query: id.to_string(),
        };
        if id.len() < MIN_PREFIX {
            return Err(unknown());
        }
        let mut found: Vec<Receipt> = conn
            .prepare_cached(&format!(
                "{base} WHERE m.id >= ?1 AND m.id < ?1 || '~' LIMIT 11"
            ))?
            .query_map([id], receipt_row)?
            .collect::<rusqlite::Result<_>>()?;
        match found.len() {
            0 => Err(unknown()),
            1 => Ok(found.remove(0)),
            // LIMIT 11: "10 or more" is all a person needs to know.
            n => Err(Error::AmbiguousMessage {
                query: id.to_string(),
                count: n,
            }),
        }
    }

    fn wait(&self, recipient: &str, req: &Fetch, timeout: Duration) -> Result<Vec<Message>> {
        self.wait_or_cancel(recipient, req, timeout, &Cancel::new())
    }

    fn wait_or_cancel(
        &self,
        recipient: &str,
        req: &Fetch,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Vec<Message>> {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        // Listen before the first look, so a commit between look and sleep still wakes us.
        // A listener is a share of the process's one inotify instance: cheap to make.
        let mut bell = self.bells.listen(recipient);
        self.wait_with(recipient, req, deadline, &mut bell, cancel)
    }

    fn bind(&self, process: ProcessRef, endpoint_id: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if Self::endpoint_by(&tx, "id", endpoint_id)?.is_none() {
            return Err(Error::UnknownEndpoint {
                query: endpoint_id.to_string(),
            });
        }
        tx.execute(
            "INSERT INTO bindings (pid, pid_start, endpoint_id, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (pid, pid_start) DO UPDATE SET endpoint_id = excluded.endpoint_id, \
               created_at = excluded.created_at",
            params![process.pid, process.start as i64, endpoint_id, now_ms()],
        )?;
        commit(tx, &self.bells)?;
        Ok(())
    }

    fn bound(&self, processes: &[ProcessRef]) -> Result<Option<(ProcessRef, Endpoint)>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {} FROM bindings b JOIN endpoints e ON e.id = b.endpoint_id \
             WHERE b.pid = ?1 AND b.pid_start = ?2",
            ENDPOINT_COLS
                .split(", ")
                .map(|c| format!("e.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        for p in processes {
            if let Some(e) = stmt
                .query_row(params![p.pid, p.start as i64], endpoint_row)
                .optional()?
            {
                return Ok(Some((*p, e)));
            }
        }
        Ok(None)
    }

    fn bindings(&self) -> Result<Vec<Binding>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT pid, pid_start, endpoint_id, created_at FROM bindings ORDER BY created_at",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Binding {
                process: ProcessRef {
                    pid: r.get(0)?,
                    start: r.get::<_, i64>(1)? as u64,
                },
                endpoint_id: r.get(2)?,
                created_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn unbind(&self, processes: &[ProcessRef]) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        for p in processes {
            n += tx.execute(
                "DELETE FROM bindings WHERE pid = ?1 AND pid_start = ?2",
                params![p.pid, p.start as i64],
            )? as u64;
        }
        commit(tx, &self.bells)?;
        Ok(n)
    }

    fn gc(&self, acked_before: Duration) -> Result<GcReport> {
        let now = now_ms();
        let cutoff =
            now.saturating_sub(i64::try_from(acked_before.as_millis()).unwrap_or(i64::MAX));
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let acked_deleted = tx.execute(
            "DELETE FROM messages WHERE state = 'acked' AND acked_at < ?1",
            [cutoff],
        )? as u64;
        let expired_deleted = tx.execute(
            "DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            [now],
        )? as u64;
        let reservations_deleted =
            tx.execute("DELETE FROM reservations WHERE expires_at <= ?1", [now])? as u64;
        let events_deleted = tx.execute("DELETE FROM events WHERE at < ?1", [cutoff])? as u64;
        commit(tx, &self.bells)?;
        Ok(GcReport {
            acked_deleted,
            expired_deleted,
            reservations_deleted,
            events_deleted,
        })
    }

    fn events(&self, q: &EventQuery) -> Result<EventPage> {
        let limit = q.limit.clamp(1, MAX_EVENTS);
        let after = q.after.unwrap_or(0);
        let after_sql = i64::try_from(after).unwrap_or(i64::MAX);
        let mut conn = self.conn();
        // One read snapshot: the page, the head and the first cursor agree.
        let tx = conn.transaction()?;
        let head: i64 = tx
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let first: i64 = tx.query_row("SELECT coalesce(min(cursor), 0) FROM events", [], |r| {
            r.get(0)
        })?;
        let filter =
            "cursor > ?1 AND (?2 IS NULL OR sender = ?2 OR recipient = ?2 OR endpoint = ?2)";
        let sql = if q.tail {
            format!(
                "SELECT * FROM (SELECT {EVENT_COLS} FROM events WHERE {filter} \
                 ORDER BY cursor DESC LIMIT ?3) ORDER BY cursor"
            )
        } else {
            format!("SELECT {EVENT_COLS} FROM events WHERE {filter} ORDER BY cursor LIMIT ?3")
        };
        let events: Vec<Event> = {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows =
                stmt.query_map(params![after_sql, q.participant, limit as i64], event_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.commit()?;
        let head = head.max(0) as u64;
        // A full page (not a tail) stops at its last event; anything else looked at every
        // event up to the head.
        let next = match events.last() {
            Some(last) if !q.tail && events.len() == limit => last.cursor,
            _ => head.max(after),
        };
        Ok(EventPage {
            events,
            next,
            head,
            first: first.max(0) as u64,
        })
    }

    fn wait_events(&self, after: u64, timeout: Duration, cancel: &Cancel) -> Result<bool> {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        // Listen before the first look, so a commit between look and sleep still wakes.
        let mut bell = self.bells.listen(EVENTS_BELL);
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        loop {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            let head: i64 = self
                .conn()
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            if head > after {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            bell.wait((deadline - now).min(BACKSTOP_POLL), cancel);
        }
    }

    fn record_event(&self, ev: &NewEvent) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO events (at, kind, message, sender, recipient, thread, endpoint, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                now_ms(),
                ev.kind.unwrap_or(EventKind::Rejected).as_str(),
                ev.message,
                ev.from,
                ev.to,
                ev.thread,
                ev.endpoint,
                ev.detail.as_deref().map(events::cut_detail),
            ],
        )?;
        let cursor = tx.last_insert_rowid() as u64;
        commit(tx, &self.bells)?;
        Ok(cursor)
    }

    fn history(&self, q: &History) -> Result<Vec<Message>> {
        let mut conn = self.conn();
        // One read snapshot for the plan's counts and the search, so a span measured
        // first still holds when the search runs.
        let tx = conn.transaction()?;
        let drive = drive(&tx, q)?;
        if drive == Drive::Nothing {
            return Ok(Vec::new());
        }
        let (sql, args) = history_sql(q, drive);
        let out = {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), message_row)?;
            rows.map(|r| r.map(|(_, m)| m))
                .collect::<rusqlite::Result<_>>()?
        };
        tx.commit()?;
        Ok(out)
    }

    fn reserve(&self, req: &ReserveRequest) -> Result<Reserved> {
        let globs = req.globs_once();
        // Overlaps are decided before the write lock is taken (they can take milliseconds,
        // and every sender waits on that lock), from a read of the project's live
        // reservations; under the lock the reservations are read again and only pairs not
        // yet decided need deciding. When the set changed meanwhile, the lock is given up
        // and the new pairs decided outside it, up to RESERVE_RETRIES times; after that
        // they are decided under the lock, still bounded by the request's one budget.
        let mut decider = overlap::Decider::new(&globs);
        let host = local_host();
        let mut attempt = 0;
        loop {
            let may_retry = attempt < RESERVE_RETRIES;
            attempt += 1;
            if may_retry {
                let live: Vec<Reservation> = self
                    .conn()
                    .prepare_cached(&format!(
                        "SELECT {RESERVATION_COLS} FROM reservations \
                         WHERE project = ?1 AND expires_at > ?2"
                    ))?
                    .query_map(params![req.project, now_ms()], reservation_row)?
                    .collect::<rusqlite::Result<_>>()?;
                for r in contested(&live, &req.holder, req.mode) {
                    for i in 0..globs.len() {
                        decider.decide(i, &r.glob);
                    }
                }
            }
            if let Some(done) = self.reserve_locked(req, &globs, &host, &mut decider, may_retry)? {
                return Ok(done);
            }
        }
    }

    fn renew_reservations(
        &self,
        sel: &ReservationSelect,
        ttl: Duration,
    ) -> Result<Vec<Reservation>> {
        let now = now_ms();
        let expires_at = super::coordination::lapse_at(now, ttl);
        let (cond, globs) = reservation_select(sel);
        let sql = format!(
            "UPDATE reservations SET expires_at = ?5 WHERE expires_at > ?4 AND {cond} \
             RETURNING {RESERVATION_COLS}"
        );
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out: Vec<Reservation> = tx
            .prepare_cached(&sql)?
            .query_map(
                params![sel.project, sel.holder, globs, now, expires_at],
                reservation_row,
            )?
            .collect::<rusqlite::Result<_>>()?;
        commit(tx, &self.bells)?;
        sort_reservations(&mut out);
        Ok(out)
    }

    fn release_reservations(&self, sel: &ReservationSelect) -> Result<Vec<Reservation>> {
        let now = now_ms();
        let (cond, globs) = reservation_select(sel);
        let sql = format!(
            "DELETE FROM reservations WHERE {cond} AND ?4 = ?4 RETURNING {RESERVATION_COLS}"
        );
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out: Vec<Reservation> = tx
            .prepare_cached(&sql)?
            .query_map(
                params![sel.project, sel.holder, globs, now],
                reservation_row,
            )?
            .collect::<rusqlite::Result<_>>()?;
        commit(tx, &self.bells)?;
        out.retain(|r| r.expires_at > now);
        sort_reservations(&mut out);
        Ok(out)
    }

    fn reservations(&self, project: Option<&str>) -> Result<Vec<Reservation>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {RESERVATION_COLS} FROM reservations \
             WHERE (?1 IS NULL OR project = ?1) AND expires_at > ?2 \
             ORDER BY project, created_at, id"
        );
        let rows = conn
            .prepare_cached(&sql)?
            .query_map(params![project, now_ms()], reservation_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivered message whose lease lapsed and which expired can never be handed out
    /// again, so it must not count as a lease to wake for (it made waits spin).
    #[test]
    fn lapsed_leases_on_expired_mail_are_not_wake_times() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&Config::at(dir.path().join("home"))).unwrap();
        let reg = |n: &str| {
            s.register(&Registration {
                name: Some(n.into()),
                ..Default::default()
            })
            .unwrap()
            .endpoint
            .id
        };
        let (a, b) = (reg("a"), reg("b"));
        let id = s
            .enqueue(&NewMessage {
                from: a,
                to: b.clone(),
                thread: None,
                reply_to: None,
                intent: Intent::Notify,
                content_type: TEXT_PLAIN.into(),
                body: b"x".to_vec(),
                expires_at: None,
                hold: None,
            })
            .unwrap()
            .id;
        let now = now_ms();
        let set = |lease: i64, expires: Option<i64>| {
            s.conn()
                .execute(
                    "UPDATE messages SET state = 'delivered', lease_until = ?2, expires_at = ?3 WHERE id = ?1",
                    params![id, lease, expires],
                )
                .unwrap();
        };
        set(now + 60_000, None);
        assert_eq!(
            s.next_lease_expiry(&b, &Filter::default()).unwrap(),
            Some(now + 60_000)
        );
        set(now - 10, Some(now - 5));
        assert_eq!(s.next_lease_expiry(&b, &Filter::default()).unwrap(), None);
    }
}
