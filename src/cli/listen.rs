//! `relay listen`: run a live endpoint. Mail already queued is shown first; then messages
//! arrive over the endpoint's socket as senders hand them over, and mail that reaches the
//! mailbox meanwhile (a sender without the live path) is picked up through the doorbell.
//! Each message is acked only after its line was written and flushed (DESIGN.md §11): a
//! listener killed, or whose output stalls, leaves the rest delivered under a lease that
//! lapses back to the mailbox. A live message is held for its hand-over, so the mailbox
//! path never sees it too; the listener claims it in the store before it handles it.
//!
//! With `--exec CMD` each request is answered with CMD's output: stored as a reply in the
//! sender's mailbox, and sent as a `Reply` frame too when the request came over a
//! connection still open. A request is `delivered` once received and `acked` once
//! answered; a listener killed mid-command leaves it to be answered by the next one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{Ctx, output};
use crate::agents::procfs;
use crate::route::{self, SendRequest};
use crate::store::Intent;
use crate::store::{Fetch, FetchMode, Filter, Message, Registration, Store};
use crate::transport::heartbeat::{Heartbeat, is_timeout};
use crate::transport::{self, Listener, Local, handshake};
use crate::wire::Msg;
use crate::wire::catalogue::{DeliverAck, Pong, Reply, ShutdownAck};

/// Arguments of `relay listen`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With --json, prints one JSON object per message (JSON Lines) as \
they arrive. Stop with Ctrl-C; the socket file left behind is reclaimed by the next listen.

Answering requests:
  relay listen --as calc --exec 'bc -l'
  relay send calc --intent request --wait 5s -- '2^10'    # prints the reply, 1024"
)]
pub struct Args {
    /// Answer each request (intent request) by running CMD with `sh -c`: the request body
    /// on stdin, CMD's stdout (capped at the store's body cap) is the reply. A failing CMD
    /// replies `error: ...` with its exit status and stderr. CMD sees RELAY_MESSAGE_ID,
    /// RELAY_FROM (the sender's endpoint id, checked against the connection's handshake on
    /// the live path) and RELAY_THREAD in its environment.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Kill CMD (its whole process group) when it runs longer than this; the reply then
    /// says it timed out. [range: 100ms-1h]
    #[arg(long, default_value = "60s", value_parser = parse_exec_timeout)]
    pub exec_timeout: Duration,
}

/// `--exec-timeout`: 100 ms to 1 h. Without a bound, a huge value overflowed the lease
/// arithmetic, or made a request wait a century for a listener killed mid-command.
fn parse_exec_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("{s} is not in 100ms..=1h"));
    }
    Ok(d)
}

/// Answers requests by running a command.
struct Answerer {
    cmd: String,
    timeout: Duration,
    store: Arc<dyn Store>,
    me: crate::store::Endpoint,
}

impl Answerer {
    /// How long a request being answered is leased: the command's timeout and a margin
    /// for storing the reply. A listener killed meanwhile leaves it to the next one.
    fn lease(&self) -> Duration {
        self.timeout.saturating_add(Duration::from_secs(30))
    }

    /// Runs the command for `m`, stores the reply in the sender's mailbox, and returns it
    /// as a `Reply` frame.
    fn answer(&self, m: &Message) -> Reply {
        let body = self.run(m);
        let req = SendRequest {
            reply_to: Some(m.id.clone()),
            ..SendRequest::text(self.me.clone(), m.from.clone(), body.clone())
        };
        // Stored first so the mailbox has it whatever happens to the connection.
        let message_id = match route::send(self.store.as_ref(), req) {
            Ok(sent) => sent.receipt.id,
            Err(e) => {
                tracing::warn!("reply to {} not stored: {e}", m.id);
                uuid::Uuid::now_v7().to_string()
            }
        };
        Reply {
            message_id,
            reply_to: m.id.clone(),
            content_type: crate::store::TEXT_PLAIN.into(),
            body,
        }
    }

    fn run(&self, m: &Message) -> Vec<u8> {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let child = Command::new("sh")
            .arg("-c")
            .arg(&self.cmd)
            .env("RELAY_MESSAGE_ID", &m.id)
            .env("RELAY_FROM", &m.from)
            .env("RELAY_THREAD", m.thread.as_deref().unwrap_or(""))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return format!("error: could not run {:?}: {e}", self.cmd).into_bytes(),
        };
        let pid = child.id();
        // Fed from its own thread: a command that writes while it reads would otherwise
        // fill its stdout pipe while we still block on its stdin.
        let stdin = child.stdin.take();
        let body = m.body.clone();
        std::thread::spawn(move || {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input is fine; a broken pipe is not an error.
                let _ = stdin.write_all(&body);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || drop(tx.send(child.wait_with_output())));
        let outcome = match rx.recv_timeout(self.timeout) {
            Ok(o) => o,
            Err(_) => {
                if let Some(pgid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ =
                        rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
                }
                return format!(
                    "error: {:?} timed out after {} and was killed",
                    self.cmd,
                    humantime::format_duration(self.timeout)
                )
                .into_bytes();
            }
        };
        let mut body = match outcome {
            Ok(o) if o.status.success() => o.stdout,
            Ok(o) => format!(
                "error: {:?} failed ({}): {}",
                self.cmd,
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )
            .into_bytes(),
            Err(e) => format!("error: {:?}: {e}", self.cmd).into_bytes(),
        };
        body.truncate(self.store.max_body());
        body
    }
}

/// Prints messages as they are handled: one JSON line each with `--json`, else the
/// human form. `output::line` flushes every line (and ends the process on a closed
/// stdout), and `show` returns only once a pipe's reader has read it, so a message acked
/// after `show` returned was shown.
struct Printer {
    json: bool,
    /// Ids being handled right now by one of this listener's paths. A live message whose
    /// output stalls past its lease is handed out again by the store; the mailbox path then
    /// skips it here instead of showing it a second time.
    handling: Mutex<HashSet<String>>,
}

/// A message this listener is handling; dropping it ends that.
struct Handling<'a>(&'a Printer, String);

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

impl Printer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.handling.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts handling `id`; `None` when another path of this listener already is.
    fn begin(&self, id: &str) -> Option<Handling<'_>> {
        self.lock()
            .insert(id.to_string())
            .then(|| Handling(self, id.to_string()))
    }

    fn show(&self, m: &Message, route: &str) {
        if self.json {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            v["route"] = json!(route);
            output::line(&v.to_string());
        } else {
            output::line(output::messages(std::slice::from_ref(m)).trim_end());
        }
        // Written is not yet read: wait for the consumer (a pipe's buffer is not a screen).
        output::wait_drained(None);
    }
}

/// Acks one handled message; a failure is logged (the message comes back after its lease,
/// at least once, which readers tolerate).
fn ack_one(store: &dyn Store, me: &str, id: &str) {
    if let Err(e) = store.ack(Some(me), &[id.to_string()]) {
        tracing::warn!("ack {id}: {e}");
    }
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store: Arc<dyn Store> = Arc::from(ctx.store()?);
    let me = ctx.me(store.as_ref())?;
    let answerer = a.exec.map(|cmd| {
        Arc::new(Answerer {
            cmd,
            timeout: a.exec_timeout,
            store: store.clone(),
            me: me.clone(),
        })
    });
    // Bound first: a second listener for this endpoint fails here, before it could
    // overwrite the running one's pid below.
    let path = transport::socket_path(&transport::runtime_dir(&ctx.config.home), &me.id);
    let listener = Listener::bind_locked(
        &path,
        Some(&transport::endpoint_lock(&ctx.config.home, &me.id)),
    )?;
    // Mark it live: the pid and start time tell a reused pid apart.
    if let Some(p) = procfs::current() {
        store.register(&Registration {
            id: Some(me.id.clone()),
            pid: Some(p.process.pid),
            pid_start: Some(p.process.start),
            ..Registration::default()
        })?;
    }
    let printer = Arc::new(Printer {
        json: ctx.json,
        handling: Mutex::new(HashSet::new()),
    });
    if !ctx.json {
        eprintln!("relay: {} is live on {}", me.display_name(), path.display());
    }
    // Mail queued before we listened, and any that lands in the mailbox later.
    {
        let (store, printer, id) = (store.clone(), printer.clone(), me.id.clone());
        let answerer = answerer.clone();
        std::thread::spawn(move || mailbox_loop(&*store, &printer, answerer.as_deref(), &id));
    }
    let mut local = Local::new(me.id.clone());
    local.name = me.name.clone();
    loop {
        match listener.accept() {
            Ok(conn) => {
                let (printer, local, id) = (printer.clone(), local.clone(), me.id.clone());
                let (answerer, store) = (answerer.clone(), store.clone());
                std::thread::spawn(move || {
                    let on = Handler {
                        store: &*store,
                        printer: &printer,
                        answerer: answerer.as_deref(),
                        me: &id,
                    };
                    if let Err(e) = serve(conn, &local, &on) {
                        tracing::warn!("connection closed: {e}");
                    }
                });
            }
            Err(e @ transport::Error::PeerUid { .. }) => tracing::warn!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
}

fn mailbox_loop(store: &dyn Store, printer: &Printer, answerer: Option<&Answerer>, me: &str) {
    // Leased, then each message acked once it is printed (and, with an answerer, its
    // request answered): a listener killed or stalled in between leaves the rest to be
    // handed out again, never acked unseen. With an answerer, one at a time: a request
    // waits under its lease only while its own command runs.
    let fetch = Fetch {
        limit: if answerer.is_some() { 1 } else { 100 },
        mode: FetchMode::Deliver {
            lease: answerer.map_or(crate::store::DEFAULT_LEASE, Answerer::lease),
        },
        filter: Filter::default(),
    };
    loop {
        match store.wait(me, &fetch, Duration::from_secs(300)) {
            Ok(msgs) => {
                for m in &msgs {
                    // The live path has it (its hand-over outlasted the lease): it acks it.
                    let Some(_handling) = printer.begin(&m.id) else {
                        continue;
                    };
                    printer.show(m, "mailbox");
                    if m.intent == Intent::Request
                        && let Some(a) = answerer
                    {
                        a.answer(m);
                    }
                    ack_one(store, me, &m.id);
                }
            }
            Err(e) => {
                tracing::error!("mailbox: {e}");
                return;
            }
        }
    }
}

/// What a connection's messages are handed to.
struct Handler<'a> {
    store: &'a dyn Store,
    printer: &'a Printer,
    answerer: Option<&'a Answerer>,
    me: &'a str,
}

impl Handler<'_> {
    /// Handles one live `Deliver`. The store decides who handles it: a message is taken
    /// from its hand-over hold (`claim`) or refused, so it is never handled here and
    /// through the mailbox both. Shown (and answered) before it is acked.
    fn deliver(
        &self,
        conn: &mut transport::Connection,
        d: crate::wire::catalogue::Deliver,
    ) -> Result<(), transport::Error> {
        let id = d.message_id.clone();
        let answerer = self.answerer.filter(|_| d.intent == 1);
        let lease = answerer.map_or(crate::store::DEFAULT_LEASE, Answerer::lease);
        let refuse = |conn: &mut transport::Connection, reason: String| {
            conn.write_frame(Msg::DeliverAck(DeliverAck {
                message_id: id.clone(),
                accepted: false,
                reason: Some(reason),
            }))
        };
        let Some(_handling) = self.printer.begin(&id) else {
            return refuse(conn, "this listener is handling it already".into());
        };
        // Shown and answered from the store's copy: the frame only names the message.
        let m = match self.store.claim(self.me, &id, lease) {
            Ok(Some(m)) => m,
            Ok(None) => {
                return refuse(
                    conn,
                    "the message is not held for this hand-over (its hold lapsed, or it was \
                     never stored in this endpoint's store); it is read from the mailbox"
                        .into(),
                );
            }
            Err(e) => return refuse(conn, format!("the store failed: {e}")),
        };
        self.printer.show(&m, "live");
        let ack = |conn: &mut transport::Connection| {
            conn.write_frame(Msg::DeliverAck(DeliverAck {
                message_id: id.clone(),
                accepted: true,
                reason: None,
            }))
        };
        let Some(a) = answerer else {
            ack_one(self.store, self.me, &id);
            return ack(conn);
        };
        // Received: the sender may stop waiting for the hand-over; the request stays
        // `delivered` until it is answered — also when the sender has hung up meanwhile
        // (its reply goes to its mailbox).
        let sender_gone = ack(conn).is_err();
        let reply = a.answer(&m);
        ack_one(self.store, self.me, &id);
        if !sender_gone {
            let _ = conn.write_frame(Msg::Reply(reply));
        }
        Ok(())
    }
}

/// How long a new connection has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write to a peer may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn serve(
    mut conn: transport::Connection,
    local: &Local,
    on: &Handler<'_>,
) -> Result<(), transport::Error> {
    // A peer that connects and says nothing must not hold this thread: the handshake and
    // every write get a deadline.
    conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    conn.stream().set_write_timeout(Some(WRITE_TIMEOUT))?;
    let agreed = handshake::accept(&mut conn, local)?;
    // Heartbeats (DESIGN.md §6): a Ping after each interval of silence; a peer that leaves
    // 3 in a row unanswered is declared dead and its connection closed.
    let interval = Duration::from_millis(u64::from(agreed.heartbeat_ms).max(100));
    conn.set_read_timeout(Some(interval))?;
    let mut beat = Heartbeat::default();
    loop {
        let frame = match conn.read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) if is_timeout(&e) => {
                if let Some(missed) = beat.silence(&mut conn)? {
                    return Err(transport::Error::Protocol(format!(
                        "the peer left {missed} heartbeats unanswered; closed"
                    )));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        beat.alive();
        match frame.msg {
            Msg::Deliver(d) if d.from != agreed.peer_id => {
                // The sender is who the handshake says, or the message is refused (it then
                // stays in the mailbox, where `from` is the store's word).
                conn.write_frame(Msg::DeliverAck(DeliverAck {
                    message_id: d.message_id,
                    accepted: false,
                    reason: Some(format!(
                        "from {} differs from the connection's endpoint {}",
                        d.from, agreed.peer_id
                    )),
                }))?;
            }
            Msg::Deliver(d) => on.deliver(&mut conn, d)?,
            Msg::Ping(p) => conn.write_frame(Msg::Pong(Pong { nonce: p.nonce }))?,
            Msg::Shutdown(_) => {
                let _ = conn.write_frame(Msg::ShutdownAck(ShutdownAck {}));
                return Ok(());
            }
            Msg::Pong(_) => {}
            other => {
                conn.write_frame(Msg::Error(crate::wire::catalogue::ErrorMsg {
                    code: 1,
                    message: format!("{} is not handled by relay listen", other.name()),
                }))?;
            }
        }
    }
}
