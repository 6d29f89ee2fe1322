//! Schema versions and forward migrations (DESIGN.md §4).
//!
//! The version lives in `PRAGMA user_version`. `MIGRATIONS[i]` takes a database from
//! version `i` to `i + 1`; each runs in its own `BEGIN IMMEDIATE` transaction together with
//! the version bump, so a crash leaves either the old or the new version, and two processes
//! opening a fresh database at once migrate it exactly once. A database newer than
//! [`SCHEMA_VERSION`], and one at version 0 that already has tables (not relay's), is
//! refused and never rewritten.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::Error;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 4;

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
];

/// `PRAGMA application_id` of relay's database: "RLAY" as a big-endian u32.
pub const APPLICATION_ID: i64 = 0x524C_4159;
const _: () = assert!(APPLICATION_ID == 1_380_729_177);

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

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

/// Reads the schema version and refuses one newer than this binary, and a database at
/// version 0 that already holds tables: relay's migrations bump the version in the same
/// transaction that creates its tables, so objects at version 0 are someone else's.
/// Reads only.
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
    // The version, the application id and what tables exist are read by one statement,
    // so from one snapshot: read apart, another process's first migration (tables and
    // version 1 in one commit) could fall between them and make a fresh relay database
    // look foreign.
    let (found, app, any, ours): (i64, i64, bool, i64) = conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version), \
                (SELECT application_id FROM pragma_application_id), \
                EXISTS (SELECT 1 FROM sqlite_master), \
                (SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                   AND name IN ('endpoints', 'messages'))",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    // Relay's: marked with its application id, or (written before version 3 set it) at a
    // version of relay's with relay's tables. Anything else with objects is someone
    // else's, at whatever user_version.
    if found < 0 {
        // relay never writes a negative version: this is someone else's database.
        return Err(Error::NotADatabase {
            path: path.to_path_buf(),
        });
    }
    let foreign = if app == APPLICATION_ID {
        false
    } else if found == 0 {
        any
    } else {
        app != 0 || ours < 2
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
    if found < 0 {
        // relay never writes a negative version: this is someone else's database.
        return Err(Error::NotADatabase {
            path: path.to_path_buf(),
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

/// Brings the database up to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    if check_version(conn, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let version = check_version(&tx, path)?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::debug!(from = version, to = version + 1, "migrated schema");
    }
}
