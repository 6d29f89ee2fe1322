//! Schema versions and forward migrations (DESIGN.md §4).
//!
//! The version lives in `PRAGMA user_version`. `MIGRATIONS[i]` takes a database from
//! version `i` to `i + 1`; all the steps a database needs run in one `BEGIN IMMEDIATE`
//! transaction together with the version bump, so a crash or a failing step leaves the old
//! version untouched, and two processes opening a fresh database at once migrate it
//! exactly once. A database newer than [`SCHEMA_VERSION`] is refused, and so is one that is
//! not relay's at any user_version (see [`check_version`]); neither is ever rewritten.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::Error;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 7;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1: endpoints and messages.
    r#"
    CREATE TABLE endpoints (
        id          TEXT PRIMARY KEY,
        name        TEXT UNIQUE,
        kind        TEXT NOT NULL,
        cwd         TEXT,
        pid         INTEGER,
        pid_start   INTEGER,
        mailbox     INTEGER NOT NULL DEFAULT 1,
        meta        TEXT NOT NULL DEFAULT '{}',
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE messages (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        sender       TEXT NOT NULL,
        sender_name  TEXT,
        recipient    TEXT NOT NULL,
        thread       TEXT,
        reply_to     TEXT,
        intent       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body         BLOB NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        state        TEXT NOT NULL DEFAULT 'queued',
        delivered_at INTEGER,
        acked_at     INTEGER,
        lease_until  INTEGER,
        deliveries   INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX messages_pending ON messages (recipient, state, seq);
    CREATE INDEX messages_acked ON messages (state, acked_at);
    "#,
    // 1 -> 2: bindings from an agent process (pid + start time) to its session endpoint.
    r#"
    CREATE TABLE bindings (
        pid          INTEGER NOT NULL,
        pid_start    INTEGER NOT NULL,
        endpoint_id  TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (pid, pid_start)
    );
    CREATE INDEX bindings_endpoint ON bindings (endpoint_id);
    "#,
    // 2 -> 3: mark the file as relay's (`application_id`), so a foreign SQLite database at
    // any user_version is told apart before anything is written to it.
    "PRAGMA application_id = 1380729177;",
    // 3 -> 4: when an idle session was woken in place with the message (route `inject`),
    // and indexes for the loop guard's counts (per thread, per sender per minute).
    r#"
    ALTER TABLE messages ADD COLUMN injected_at INTEGER;
    CREATE INDEX messages_thread ON messages (thread, seq) WHERE thread IS NOT NULL;
    CREATE INDEX messages_sender ON messages (sender, created_at);
    "#,
    // 4 -> 5: the host an endpoint registered from (a pid means something only there).
    "ALTER TABLE endpoints ADD COLUMN host TEXT;",
    // 5 -> 6: coordination (DESIGN.md §12). Full-text search over bodies: a contentless
    // FTS5 index (bodies are stored once, in `messages`) of each body's tokens as
    // store::query::tokenize makes them, joined by single spaces ([`fts_text`]), so the one
    // tokenizer that the NATS store evaluates is also the one SQLite indexes; `ascii` then
    // splits exactly at those spaces and changes nothing else (every ASCII character in a
    // token is a lower-case letter or digit; other characters are kept as they are). The
    // store writes the index row in the transaction that stores the message (the text is
    // computed in Rust), and this trigger unindexes a message in the transaction that
    // deletes it; [`migrate`] indexes the mail stored before this version. Prefix indexes
    // of 2 and 3 characters make short `pre*` terms one doclist instead of a merge of every
    // word they start (measured: 40 ms -> 0.3 ms at 100k messages, for about twice the
    // indexing work per message); longer prefixes start few words. And advisory file
    // reservations.
    r#"
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        body,
        content = '',
        contentless_delete = 1,
        tokenize = 'ascii',
        prefix = '2 3'
    );
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        DELETE FROM messages_fts WHERE rowid = old.seq;
    END;
    CREATE TABLE reservations (
        id           TEXT PRIMARY KEY,
        project      TEXT NOT NULL,
        holder       TEXT NOT NULL,
        holder_name  TEXT,
        host         TEXT NOT NULL,
        glob         TEXT NOT NULL,
        mode         TEXT NOT NULL,
        reason       TEXT,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        forced       INTEGER NOT NULL DEFAULT 0,
        UNIQUE (project, holder, glob)
    );
    CREATE INDEX reservations_project ON reservations (project, expires_at);
    CREATE INDEX reservations_holder ON reservations (holder, expires_at);
    CREATE INDEX reservations_expiry ON reservations (expires_at);
    "#,
    // 6 -> 7: the event log (store::events). Triggers write it, so an event is recorded by
    // the very transaction that changes the row, whichever code path changed it; rejects
    // (no row changes) are inserted by `record_event`. AUTOINCREMENT: a cursor is never
    // reused, even after gc deletes the newest events. `at` is the transaction's clock in
    // ms, from `julianday('now')` rather than `unixepoch('subsec')`, which needs SQLite
    // 3.42: an older sqlite3 (a user's CLI) writing to relay.db must not fail on the
    // triggers. Kinds and fields as store::events::EventKind documents them.
    r#"
    CREATE TABLE events (
        cursor     INTEGER PRIMARY KEY AUTOINCREMENT,
        at         INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        message    TEXT,
        sender     TEXT,
        recipient  TEXT,
        thread     TEXT,
        endpoint   TEXT,
        detail     TEXT
    );
    CREATE INDEX events_at ON events (at);
    CREATE TRIGGER events_message_queued AFTER INSERT ON messages BEGIN
        INSERT INTO events (at, kind, message, sender, recipient, thread, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'message.queued', new.id,
                new.sender, new.recipient, new.thread,
                CASE WHEN new.lease_until IS NULL THEN 'mailbox' ELSE 'live' END);
    END;
    CREATE TRIGGER events_message_state AFTER UPDATE OF state, deliveries ON messages
    WHEN new.state IS NOT old.state OR new.deliveries IS NOT old.deliveries BEGIN
        INSERT INTO events (at, kind, message, sender, recipient, thread)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER),
                CASE new.state WHEN 'delivered' THEN 'message.delivered'
                               WHEN 'acked' THEN 'message.acked'
                               ELSE 'message.released' END,
                new.id, new.sender, new.recipient, new.thread);
    END;
    CREATE TRIGGER events_message_unheld AFTER UPDATE OF lease_until ON messages
    WHEN new.state = old.state AND new.state != 'acked' AND new.deliveries = old.deliveries
         AND old.lease_until IS NOT NULL
         AND (new.lease_until IS NULL OR new.lease_until < old.lease_until) BEGIN
        INSERT INTO events (at, kind, message, sender, recipient, thread, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'message.released', new.id,
                new.sender, new.recipient, new.thread, 'mailbox');
    END;
    CREATE TRIGGER events_message_injected AFTER UPDATE OF injected_at ON messages
    WHEN old.injected_at IS NULL AND new.injected_at IS NOT NULL BEGIN
        INSERT INTO events (at, kind, message, sender, recipient, thread, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'message.injected', new.id,
                new.sender, new.recipient, new.thread, 'inject');
    END;
    CREATE TRIGGER events_message_expired AFTER DELETE ON messages
    WHEN old.state != 'acked' AND old.expires_at IS NOT NULL
         AND old.expires_at <= CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER) BEGIN
        INSERT INTO events (at, kind, message, sender, recipient, thread)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'message.expired', old.id,
                old.sender, old.recipient, old.thread);
    END;
    CREATE TRIGGER events_endpoint_registered AFTER INSERT ON endpoints BEGIN
        INSERT INTO events (at, kind, endpoint, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'endpoint.registered', new.id,
                new.name);
    END;
    CREATE TRIGGER events_endpoint_renamed AFTER UPDATE OF name ON endpoints
    WHEN new.name IS NOT old.name BEGIN
        INSERT INTO events (at, kind, endpoint, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'endpoint.renamed', new.id,
                coalesce(new.name, ''));
    END;
    CREATE TRIGGER events_presence_bound AFTER INSERT ON bindings BEGIN
        INSERT INTO events (at, kind, endpoint, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'presence.changed',
                new.endpoint_id, 'bound');
    END;
    CREATE TRIGGER events_presence_rebound AFTER UPDATE OF endpoint_id ON bindings
    WHEN new.endpoint_id IS NOT old.endpoint_id BEGIN
        INSERT INTO events (at, kind, endpoint, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'presence.changed',
                old.endpoint_id, 'unbound'),
               (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'presence.changed',
                new.endpoint_id, 'bound');
    END;
    CREATE TRIGGER events_presence_unbound AFTER DELETE ON bindings BEGIN
        INSERT INTO events (at, kind, endpoint, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'presence.changed',
                old.endpoint_id, 'unbound');
    END;
    CREATE TRIGGER events_reservation_taken AFTER INSERT ON reservations BEGIN
        INSERT INTO events (at, kind, endpoint, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'reservation.taken',
                new.holder, new.mode || ' ' || new.glob);
    END;
    CREATE TRIGGER events_reservation_renewed AFTER UPDATE ON reservations BEGIN
        INSERT INTO events (at, kind, endpoint, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'reservation.renewed',
                new.holder, new.mode || ' ' || new.glob);
    END;
    CREATE TRIGGER events_reservation_released AFTER DELETE ON reservations BEGIN
        INSERT INTO events (at, kind, endpoint, detail)
        VALUES (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER), 'reservation.released',
                old.holder, old.mode || ' ' || old.glob);
    END;
    "#,
];

/// `PRAGMA application_id` of relay's database: "RLAY" as a big-endian u32.
pub const APPLICATION_ID: i64 = 0x524C_4159;
const _: () = assert!(APPLICATION_ID == 1_380_729_177);

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// Every object relay's schema creates (tables, indexes, triggers; SQLite's own
/// `sqlite_*` objects aside), with the version that created it. A database is migrated
/// from version `v` only when it holds no object of a later version, and one from before
/// the application id (versions 1 and 2) is taken for relay's only when it holds nothing
/// else: the migrations would fail half-way on such a file, or rewrite someone else's.
const OBJECTS: &[(i64, &str)] = &[
    (1, "endpoints"),
    (1, "messages"),
    (1, "messages_pending"),
    (1, "messages_acked"),
    (2, "bindings"),
    (2, "bindings_endpoint"),
    (4, "messages_thread"),
    (4, "messages_sender"),
    (6, "messages_fts"),
    (6, "messages_fts_data"),
    (6, "messages_fts_idx"),
    (6, "messages_fts_docsize"),
    (6, "messages_fts_config"),
    (6, "messages_fts_delete"),
    (6, "reservations"),
    (6, "reservations_project"),
    (6, "reservations_holder"),
    (6, "reservations_expiry"),
    (7, "events"),
    (7, "events_at"),
    (7, "events_message_queued"),
    (7, "events_message_state"),
    (7, "events_message_unheld"),
    (7, "events_message_injected"),
    (7, "events_message_expired"),
    (7, "events_endpoint_registered"),
    (7, "events_endpoint_renamed"),
    (7, "events_presence_bound"),
    (7, "events_presence_rebound"),
    (7, "events_presence_unbound"),
    (7, "events_reservation_taken"),
    (7, "events_reservation_renewed"),
    (7, "events_reservation_released"),
];

/// The version that created the object `name`, `None` for one relay never creates.
fn created_at(name: &str) -> Option<i64> {
    OBJECTS.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
}

/// What the search index holds for a message body: its tokens by
/// [`super::query::tokenize`] (of the body read as UTF-8, invalid bytes replaced by
/// U+FFFD, as the NATS store reads it), joined by single spaces. Indexed with FTS5's
/// `ascii` tokenizer this yields exactly those tokens, so both stores tokenize alike by
/// construction.
pub(crate) fn fts_text(body: &[u8]) -> String {
    super::query::tokenize(&String::from_utf8_lossy(body)).join(" ")
}

/// Indexes one stored message for search; called in the transaction that stores it.
pub(crate) fn index_message(conn: &Connection, seq: i64, body: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO messages_fts (rowid, body) VALUES (?1, ?2)")?
        .execute(rusqlite::params![seq, fts_text(body)])?;
    Ok(())
}

/// Indexes every stored message (the 5 -> 6 migration: mail written before the index).
fn index_all(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT seq, body FROM messages")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let body: Vec<u8> = match r.get_ref(1)? {
            rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b.to_vec(),
            _ => Vec::new(),
        };
        index_message(conn, r.get(0)?, &body)?;
    }
    Ok(())
}

/// Whether the database file's header says it is in WAL mode (bytes 18 and 19, the file
/// format write and read versions, are 2), which SQLite keeps across connections: then the
/// `journal_mode` switch can be skipped. False when unreadable.
pub(crate) fn header_says_wal(path: &Path) -> bool {
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head[..16] == *SQLITE_MAGIC && head[18] == 2 && head[19] == 2)
}

/// SQLite's 16-byte file header.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses an existing, non-empty file that does not start with SQLite's header. Reads
/// only; the file is never opened for writing here.
pub(crate) fn check_header(path: &Path) -> Result<(), Error> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(Error::Io {
                what: "cannot open",
                path: path.to_path_buf(),
                err,
            });
        }
    };
    let mut head = Vec::with_capacity(16);
    file.by_ref()
        .take(16)
        .read_to_end(&mut head)
        .map_err(|err| Error::Io {
            what: "cannot read",
            path: path.to_path_buf(),
            err,
        })?;
    if head.is_empty() || head.as_slice() == SQLITE_MAGIC {
        Ok(())
    } else {
        Err(Error::NotADatabase {
            path: path.to_path_buf(),
        })
    }
}

/// How many of a foreign database's objects an error lists by name.
const OBJECTS_NAMED: usize = 5;

/// Reads the schema version and refuses one newer than this binary, and a database that
/// is not relay's at whatever user_version: at version 0 with objects (relay's migrations
/// bump the version in the transaction that creates its tables), unmarked at version 3 or
/// later (version 3 set the application id), unmarked at version 1 or 2 with objects
/// relay's schema at that version never had, or holding objects of a later version than
/// its own (a migration would then fail half-way). Reads only.
pub(crate) fn check_version(conn: &Connection, path: &Path) -> Result<i64, Error> {
    // The common case, cheaply: relay's application id and this binary's version. Both
    // pragmas read the file header, not the schema; each value only ever moves toward the
    // final one, so two reads that both show it are the final state. Anything else takes
    // the full check below, from one snapshot.
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if app == APPLICATION_ID {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == SCHEMA_VERSION {
            return Ok(version);
        }
    }
    // The version, the application id and what objects exist are read by one statement,
    // so from one snapshot: read apart, another process's migration (objects and version
    // in one commit) could fall between them and make a relay database look foreign.
    let (found, app, names): (i64, i64, String) = conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version), \
                (SELECT application_id FROM pragma_application_id), \
                (SELECT json_group_array(name) FROM sqlite_master \
                   WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if found < 0 {
        // relay never writes a negative version: this is someone else's database.
        return Err(Error::NotADatabase {
            path: path.to_path_buf(),
        });
    }
    let names: Vec<String> = serde_json::from_str(&names).unwrap_or_default();
    let has = |n: &str| names.iter().any(|o| o == n);
    // An object of a later version than the file's own (or, unmarked, one relay never
    // creates): relay did not write this schema at this version.
    let misplaced = names.iter().any(|n| match created_at(n) {
        Some(v) => v > found,
        None => app != APPLICATION_ID,
    });
    let foreign = if found > SCHEMA_VERSION {
        // A newer relay's is marked (version 3 on); its objects are its own business.
        app != APPLICATION_ID
    } else if app == APPLICATION_ID {
        misplaced
    } else if found == 0 {
        !names.is_empty()
    } else if found <= 2 {
        // Written before version 3 set the application id: relay's tables and nothing
        // relay's schema at this version did not have.
        app != 0 || misplaced || !has("endpoints") || !has("messages")
    } else {
        true
    };
    if foreign {
        let objects: Vec<String> = conn
            .prepare("SELECT type || ' ' || name FROM sqlite_master ORDER BY rowid")?
            .query_map([], |r| r.get::<_, String>(0))?
            .map(|o| o.map(|o| o.escape_debug().to_string()))
            .collect::<Result<_, _>>()?;
        let mut named = objects[..objects.len().min(OBJECTS_NAMED)].join(", ");
        if objects.is_empty() {
            named = format!("user_version {found} but no tables");
        }
        if objects.len() > OBJECTS_NAMED {
            named.push_str(&format!(" and {} more", objects.len() - OBJECTS_NAMED));
        }
        return Err(Error::ForeignDatabase {
            path: path.to_path_buf(),
            objects: named,
        });
    }
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Brings the database up to [`SCHEMA_VERSION`], every step in one `BEGIN IMMEDIATE`
/// transaction: a step that fails leaves the file as it was.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    if check_version(conn, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let from = check_version(&tx, path)?;
    if from == SCHEMA_VERSION {
        return Ok(());
    }
    for version in from..SCHEMA_VERSION {
        tx.execute_batch(MIGRATIONS[version as usize])?;
        if version == 5 {
            index_all(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    tracing::debug!(from, to = SCHEMA_VERSION, "migrated schema");
    Ok(())
}
