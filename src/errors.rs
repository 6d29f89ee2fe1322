//! How failures are named for scripts and models: a stable kebab-case kind and an exit
//! status (DESIGN.md §10). Shared by the CLI (`--json` error documents, exit codes) and the
//! MCP server (tool errors).

use crate::config::ConfigError;
use crate::{route, store};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: a runtime failure (I/O, database, internal).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: the command line or an argument was wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: relay refused (unknown or ambiguous target or message, not deliverable,
/// too large).
pub const EXIT_REJECTED: u8 = 3;
/// Exit status: `wait` timed out with no message.
pub const EXIT_TIMEOUT: u8 = 4;

/// An argument was wrong; the text says what would be right. Exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Input over a hard limit that is not the body cap (that one is
/// [`store::Error::TooLarge`]), e.g. more than 16 MiB on `send --stdin`; the text names the
/// limit. Nothing was sent. Kind `too-large`, exit 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TooLarge(pub String);

/// Maps an error to its kebab-case kind and exit status by the first typed cause found.
pub fn classify(err: &anyhow::Error) -> (&'static str, u8) {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<route::Error>() {
            return match e {
                route::Error::Rejected { reason, .. } => (reason.as_str(), EXIT_REJECTED),
                // `Store` is transparent, so its inner error is not a separate cause.
                route::Error::Store(inner) => classify_store(inner),
            };
        }
        if let Some(e) = cause.downcast_ref::<store::Error>() {
            return classify_store(e);
        }
        if let Some(e) = cause.downcast_ref::<crate::agents::wake::Error>() {
            use crate::agents::wake::Error::*;
            return match e {
                NotAgent { .. }
                | NotUuid { .. }
                | OtherHost { .. }
                | NoCwd { .. }
                | Running { .. } => ("not-wakeable", EXIT_REJECTED),
                InProgress { .. } => ("wake-in-progress", EXIT_REJECTED),
                Spawn { .. } | NotOnPath { .. } | Lock { .. } => ("wake-failed", EXIT_FAILURE),
                Dir(inner) => classify_store(inner),
            };
        }
        if let Some(e) = cause.downcast_ref::<crate::shm::Error>() {
            use crate::shm::Error::*;
            return match e {
                Timeout(_) => ("timed-out", EXIT_TIMEOUT),
                Rejected(_) => ("stream-rejected", EXIT_REJECTED),
                Closed(_) | WriterGone => ("stream-closed", EXIT_FAILURE),
                Corrupt(_) | Protocol(_) | InvalidHandle(_) | Layout(_) => {
                    ("stream-corrupt", EXIT_FAILURE)
                }
                Io(_) => ("failure", EXIT_FAILURE),
            };
        }
        if cause
            .downcast_ref::<crate::agents::install::Error>()
            .is_some()
        {
            return ("config", EXIT_FAILURE);
        }
        if let Some(e) = cause.downcast_ref::<crate::coord::reserve::Error>() {
            use crate::coord::reserve::Error::*;
            return match e {
                Refused(_) => ("reserved", EXIT_REJECTED),
                Glob(_) => ("bad-glob", EXIT_USAGE),
                Invalid(_) => ("usage", EXIT_USAGE),
                Store(inner) => classify_store(inner),
            };
        }
        if cause
            .downcast_ref::<crate::store::query::QueryError>()
            .is_some()
        {
            return ("bad-query", EXIT_USAGE);
        }
        if cause
            .downcast_ref::<crate::store::overlap::GlobError>()
            .is_some()
        {
            return ("bad-glob", EXIT_USAGE);
        }
        if cause.downcast_ref::<TooLarge>().is_some() {
            return ("too-large", EXIT_REJECTED);
        }
        if cause.downcast_ref::<UsageError>().is_some()
            || cause.downcast_ref::<ConfigError>().is_some()
        {
            return ("usage", EXIT_USAGE);
        }
    }
    ("failure", EXIT_FAILURE)
}

fn classify_store(e: &store::Error) -> (&'static str, u8) {
    use store::Error::*;
    match e {
        UnknownEndpoint { .. } => ("unknown-target", EXIT_REJECTED),
        AmbiguousEndpoint { .. } => ("ambiguous-target", EXIT_REJECTED),
        UnknownMessage { .. } => ("unknown-message", EXIT_REJECTED),
        AmbiguousMessage { .. } => ("ambiguous-message", EXIT_REJECTED),
        TooLarge { .. } => ("too-large", EXIT_REJECTED),
        InvalidName { .. } => ("invalid-name", EXIT_USAGE),
        InvalidId { .. } => ("invalid-id", EXIT_USAGE),
        InvalidThread { .. } => ("invalid-thread", EXIT_USAGE),
        NotADatabase { .. } => ("not-a-database", EXIT_FAILURE),
        ForeignDatabase { .. } => ("foreign-database", EXIT_FAILURE),
        Home(store::home::Error::ReadOnly { .. }) => ("io", EXIT_FAILURE),
        Home(_) => ("unsafe-home", EXIT_FAILURE),
        SchemaTooNew { .. } => ("schema-too-new", EXIT_FAILURE),
        Io { .. } => ("io", EXIT_FAILURE),
        Sqlite(_) => ("database", EXIT_FAILURE),
        BadLocation { .. } => ("usage", EXIT_USAGE),
        Nats { .. } => ("store-unavailable", EXIT_FAILURE),
    }
}
