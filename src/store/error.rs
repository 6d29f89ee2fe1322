use std::path::PathBuf;

/// What went wrong in the store. Variants that describe bad input say what would be right.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file exists but is not a SQLite database. It was not modified.
    #[error(
        "{path} is not a relay database (not a SQLite file); it was left untouched. Move it away or point RELAY_HOME elsewhere"
    )]
    NotADatabase {
        /// The file that was refused.
        path: PathBuf,
    },
    /// The database was written by a newer relay. It was not modified.
    #[error(
        "{path} has schema version {found}, but this relay understands up to version {supported}; upgrade relay (the database was left untouched)"
    )]
    SchemaTooNew {
        /// The file that was refused.
        path: PathBuf,
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// Highest version this binary migrates to ([`super::SCHEMA_VERSION`]).
        supported: i64,
    },
    /// A SQLite database that is not relay's: schema version 0, yet it has tables (or
    /// other objects) of its own. It was not modified.
    #[error(
        "{path} is a SQLite database but not relay's (not marked as relay's, and it already has {objects}); it was left untouched. Move it away or point RELAY_HOME elsewhere"
    )]
    ForeignDatabase {
        /// The file that was refused.
        path: PathBuf,
        /// What it holds, e.g. `table notes, index notes_by_time` (names escaped: they are
        /// someone else's text and end up on a terminal).
        objects: String,
    },
    /// The data directory or a file in it is another user's, writable by others, or not
    /// writable by relay. Nothing was changed.
    #[error(transparent)]
    Home(#[from] super::home::Error),
    /// A file or directory operation failed.
    #[error("{what} {path}: {err}")]
    Io {
        /// What relay was doing.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// SQLite reported an error.
    // Not `#[from]`: that would make it the error's source too, and `{:#}` chains would
    // print the SQLite message twice.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// An endpoint name breaks the naming rule.
    #[error("invalid name {name:?}: {rule}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// The rule it broke, stated so the user can fix it.
        rule: String,
    },
    /// An endpoint id breaks the id rule.
    #[error("invalid endpoint id {id:?}: {rule}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// The rule it broke.
        rule: String,
    },
    /// A thread breaks the thread rule ([`super::names::check_thread`]). Nothing was
    /// written. The thread itself is not repeated: it may be megabytes.
    #[error("{problem}; {rule}")]
    InvalidThread {
        /// What is wrong: its size, or the control character and its byte offset.
        problem: String,
        /// The rule.
        rule: &'static str,
    },
    /// No endpoint has this name, id or id prefix.
    #[error(
        "no endpoint is named or has an id starting with '{query}'; see `relay roster`, or `relay register {query}`"
    )]
    UnknownEndpoint {
        /// What was looked up.
        query: String,
    },
    /// An id prefix matches several endpoints.
    #[error("'{query}' matches {} endpoints: {}; give more of the id, or the name", candidates.len(), candidates.join(", "))]
    AmbiguousEndpoint {
        /// What was looked up.
        query: String,
        /// `id (name)` of every match.
        candidates: Vec<String>,
    },
    /// No message has this id or id prefix.
    #[error("no message has an id starting with '{query}'")]
    UnknownMessage {
        /// What was looked up.
        query: String,
    },
    /// A message id prefix matches several messages.
    #[error("'{query}' matches {count} or more messages; give more of the id")]
    AmbiguousMessage {
        /// What was looked up.
        query: String,
        /// How many matched.
        count: usize,
    },
    /// A body is larger than the cap. Nothing was written.
    #[error(
        "body is {size} bytes, over the {cap}-byte cap (RELAY_MAX_BODY; a NATS store caps it further at the server's max_payload less 16 KiB); send less, or stream it"
    )]
    TooLarge {
        /// Body size in bytes.
        size: usize,
        /// The cap in bytes.
        cap: usize,
    },
    /// `RELAY_STORE` / `--store` names no store relay can open. Nothing was opened.
    #[error(
        "store '{given}' is not valid: {why}; use nothing (SQLite in RELAY_HOME), sqlite:DIR, or nats://host:4222[,nats://host2:4222,...]"
    )]
    BadLocation {
        /// What was given.
        given: String,
        /// What is wrong with it.
        why: String,
    },
    /// The NATS JetStream store could not be reached, or refused or dropped a request
    /// (docs/nats.md). A write that failed this way was not confirmed; retrying it is safe
    /// (sends are deduplicated by message id).
    #[error("NATS store at {urls}: {reason}")]
    Nats {
        /// The server URLs relay was given, comma-joined (no credentials).
        urls: String,
        /// What failed, with the server's words.
        reason: String,
    },
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Sqlite(e)
    }
}
