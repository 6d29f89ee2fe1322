//! `relay watch`: a live full-screen view of the bus (DESIGN.md §12) for a person at a
//! terminal — endpoints with presence, pending mail and the age of the oldest unread; the
//! message log, whose receipt states change in place (queued → delivered → acked) and
//! whose rejects show in red with their reason; and the reservations held.
//!
//! It starts from a snapshot and is then driven by the store's event stream
//! ([`crate::store::Store::wait_events`]): nothing polls the store, and an idle view
//! sleeps. The one periodic look is presence, which no event can tell (a process that
//! dies silently): it is derived again every [`feed::PROBE_EVERY`] while the endpoint
//! pane is on screen.
//!
//! - [`model`] — the state, plain data: snapshot, events applied, filter, selection.
//! - [`view`] — drawing the model (ratatui); text of other endpoints escaped by [`text`].
//! - `feed` — the snapshot and the follower thread.
//! - `app` — the terminal (restored on every way out), the threads, the event loop.
//!
//! Reading here never acks: the view only looks ([`crate::store::FetchMode::Peek`],
//! [`crate::store::Store::history`]), so watching changes no receipt (DESIGN.md §11).

mod app;
pub mod feed;
pub mod model;
pub mod text;
pub mod view;

use std::path::PathBuf;
use std::sync::Arc;

use crate::store::{self, Store};

/// How to run the view.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where live sockets are ([`crate::transport::runtime_dir`]), for presence.
    pub runtime_dir: PathBuf,
    /// The title line's store description (shown as given: make it safe first).
    pub title: String,
    /// Whether colour may be used (`false` for `NO_COLOR` or `--no-color`).
    pub color: bool,
}

/// Why the view could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// stdout is not a terminal (a pipe, a file): there is no screen to draw on.
    #[error(
        "relay watch needs a terminal (stdout is not one); for a pipe or a script use \
         `relay events --follow --all` (add --json for one JSON object per line)"
    )]
    NotATerminal,
    /// The terminal could not be set up, read or drawn on.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// The store failed while the snapshot was taken or a message was opened.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The threads that feed the view are gone (an internal error).
    #[error("the view's input threads stopped")]
    Stopped,
}

/// Runs the view on this process's terminal until the operator quits (`q`), then gives
/// the terminal back as it was.
///
/// # Errors
/// [`Error::NotATerminal`] before anything is drawn when stdout is not a terminal;
/// [`Error::Store`] when the snapshot cannot be read; [`Error::Terminal`] when the
/// terminal fails. The follower's store errors do not end the view: they show in its
/// status line while it retries.
pub fn run(store: Arc<dyn Store>, opts: &Options) -> Result<(), Error> {
    app::run(store, opts)
}
