//! The running view: the terminal (raw mode, alternate screen — restored on every way
//! out: return, error, panic, SIGTERM/SIGHUP/SIGINT), the threads that feed it, and the
//! event loop.
//!
//! Three threads send into one channel, and the UI thread blocks on it: the follower
//! ([`feed::Follower`], woken by the store), the key reader (blocked in the terminal's
//! read) and a signal waiter. The UI thread wakes only when one of them has something,
//! or when an age or expiry on screen is due to read differently; it draws only when something
//! changed. Nothing polls.

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::time::Instant;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};

use super::feed::{self, Follower};
use super::model::{Batch, Command, Key, Model};
use super::view::{self, Look};
use super::{Error, Options};
use crate::store::{Cancel, History, Store};

/// What wakes the UI thread.
enum Input {
    /// A key, a resize, … from the terminal.
    Term(TermEvent),
    /// The terminal cannot be read any more.
    TermGone(io::Error),
    /// What the follower read.
    Bus(Batch),
    /// A signal asked the view to end.
    Quit,
}

/// Whether relay holds the terminal now (raw mode, alternate screen), so restoring it
/// happens once, from whichever way out comes first.
static HELD: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back: cooked mode, the main screen, a visible cursor. Idempotent.
fn restore() {
    if HELD.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
        let _ = io::stdout().flush();
    }
}

/// The terminal while relay holds it; dropping it (any return, any unwinding) restores it.
struct Held;

impl Held {
    fn take() -> io::Result<Held> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            // Restore before the panic message is printed, or it goes to the alternate
            // screen and vanishes with it.
            let before = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                before(info);
            }));
        });
        terminal::enable_raw_mode()?;
        HELD.store(true, Ordering::SeqCst);
        let held = Held;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(held)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        restore();
    }
}

/// Maps a terminal key to the model's (`None`: a key the view has no use for).
fn key_of(ev: &event::KeyEvent) -> Option<Key> {
    if ev.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
    Some(match ev.code {
        KeyCode::Char('c') if ctrl => Key::Interrupt,
        KeyCode::Char(_) if ctrl => return None,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

/// Reads the terminal on its own thread, so the UI thread blocks on one channel only.
fn spawn_keys(tx: mpsc::Sender<Input>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("watch-keys".into())
        .spawn(move || {
            loop {
                let input = match event::read() {
                    Ok(ev) => Input::Term(ev),
                    Err(e) => {
                        let _ = tx.send(Input::TermGone(e));
                        return;
                    }
                };
                if tx.send(input).is_err() {
                    return;
                }
            }
        })
        .map(drop)
}

/// Waits for SIGTERM, SIGHUP or SIGINT on its own thread and asks the view to end, so a
/// `kill` or a dropped ssh connection still gives the terminal back. Best effort: without
/// it the view still runs.
fn spawn_signals(tx: mpsc::Sender<Input>) {
    use tokio::signal::unix::{SignalKind, signal};
    let spawned = std::thread::Builder::new()
        .name("watch-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let (Ok(mut term), Ok(mut hup), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                    _ = int.recv() => {}
                }
                let _ = tx.send(Input::Quit);
            });
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "relay watch: no signal waiter");
    }
}

/// Follows the store on its own thread ([`Follower::run`]).
fn spawn_follower(f: Follower, tx: mpsc::Sender<Input>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("watch-follower".into())
        .spawn(move || f.run(|b| tx.send(Input::Bus(b)).is_ok()))
        .map(drop)
}

/// Cancels the follower's wait on every way out of [`run`].
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs the view until the operator quits.
pub(super) fn run(store: Arc<dyn Store>, opts: &Options) -> Result<(), Error> {
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() {
        return Err(Error::NotATerminal);
    }
    let started = Instant::now();
    let snapshot = feed::snapshot(&*store)?;
    let snapshot_ms = started.elapsed().as_secs_f64() * 1e3;
    let cursor = snapshot.cursor;
    let model = Model::new(snapshot);

    let (tx, rx) = mpsc::channel();
    let visible = Arc::new(AtomicBool::new(true));
    let cancel = Cancel::new();
    let follower = Follower::new(
        store.clone(),
        opts.runtime_dir.clone(),
        cursor,
        visible.clone(),
        cancel.clone(),
    );
    spawn_follower(follower, tx.clone())?;
    let _stop = CancelOnDrop(cancel);

    let held = Held::take()?;
    spawn_keys(tx.clone())?;
    spawn_signals(tx);
    let mut ui = Ui {
        term: Terminal::new(CrosstermBackend::new(io::stdout()))?,
        rx,
        model,
        look: Look {
            title: opts.title.clone(),
            color: opts.color,
        },
        store: &*store,
        visible: &visible,
    };
    let result = ui.run(started, snapshot_ms);
    drop(ui);
    drop(held);
    result
}

/// The UI thread's state.
struct Ui<'a> {
    term: Terminal<CrosstermBackend<Stdout>>,
    rx: mpsc::Receiver<Input>,
    model: Model,
    look: Look,
    /// For opening a message.
    store: &'a dyn Store,
    /// Whether the endpoint pane is on screen, for the follower's probes.
    visible: &'a AtomicBool,
}

/// What one input asks of the loop.
enum Flow {
    /// Nothing to draw.
    Same,
    /// Draw again.
    Changed,
    /// Leave.
    Quit,
}

impl Ui<'_> {
    /// Draws when something changed, then blocks until the next input or until something
    /// on screen is due to read differently; returns when the operator quits.
    fn run(&mut self, started: Instant, snapshot_ms: f64) -> Result<(), Error> {
        let mut dirty = true;
        let mut first = true;
        loop {
            if std::mem::take(&mut dirty) {
                let t = Instant::now();
                let (model, look) = (&self.model, &self.look);
                self.term
                    .draw(|f| view::draw(f, model, look, crate::clock::now_ms()))?;
                let draw_ms = t.elapsed().as_secs_f64() * 1e3;
                tracing::trace!(draw_ms, "relay watch: drawn");
                if std::mem::take(&mut first) {
                    tracing::debug!(
                        snapshot_ms,
                        draw_ms,
                        first_frame_ms = started.elapsed().as_secs_f64() * 1e3,
                        rows = self.model.rows.len(),
                        "relay watch: first frame drawn"
                    );
                }
            }
            let got = match view::next_change(&self.model, crate::clock::now_ms()) {
                Some(due) => match self.rx.recv_timeout(due) {
                    Ok(i) => Some(i),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Err(Error::Stopped),
                },
                None => Some(self.rx.recv().map_err(|_| Error::Stopped)?),
            };
            let Some(input) = got else {
                // Only the clock moved: an age or an expiry on screen.
                dirty = true;
                continue;
            };
            // Everything already waiting is handled before one draw.
            let waiting: Vec<Input> = self.rx.try_iter().collect();
            for input in std::iter::once(input).chain(waiting) {
                match self.handle(input)? {
                    Flow::Same => {}
                    Flow::Changed => dirty = true,
                    Flow::Quit => return Ok(()),
                }
            }
        }
    }

    fn handle(&mut self, input: Input) -> Result<Flow, Error> {
        Ok(match input {
            Input::Term(TermEvent::Key(k))
                if k.code == KeyCode::Char('l') && k.modifiers.contains(KeyModifiers::CONTROL) =>
            {
                // Ctrl-L paints the whole screen again (over anything another program
                // wrote to the terminal, say a log line on stderr).
                let size = self.term.size()?;
                self.term
                    .resize(ratatui::layout::Rect::new(0, 0, size.width, size.height))?;
                Flow::Changed
            }
            Input::Term(TermEvent::Key(k)) => {
                let Some(k) = key_of(&k) else {
                    return Ok(Flow::Same);
                };
                let flow = match self.model.key(k) {
                    Command::Nothing => Flow::Same,
                    Command::Redraw => Flow::Changed,
                    Command::Quit => Flow::Quit,
                    Command::Open(id) => {
                        let found = self.store.history(&History {
                            ids: Some(vec![id.clone()]),
                            limit: 1,
                            ..History::default()
                        })?;
                        self.model.show_message(&id, found.first());
                        Flow::Changed
                    }
                };
                self.visible
                    .store(self.model.endpoints_visible(), Ordering::Relaxed);
                flow
            }
            // The draw sizes the screen again (and clears it when the size changed). Not
            // `Terminal::clear`: it asks the terminal for the cursor position, and the
            // answer would go to the key reader.
            Input::Term(TermEvent::Resize(..)) => Flow::Changed,
            Input::Term(_) => Flow::Same,
            Input::TermGone(e) => return Err(Error::Terminal(e)),
            Input::Bus(b) => {
                self.model.apply_batch(b);
                Flow::Changed
            }
            Input::Quit => Flow::Quit,
        })
    }
}
