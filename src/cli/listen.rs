//! `relay listen`: run a live endpoint. Mail already queued is shown first; then messages
//! arrive over the endpoint's socket as senders hand them over, and mail that reaches the
//! mailbox meanwhile (a sender without the live path) is picked up through the doorbell.
//! Each message is printed once (deduplicated by id) and acked. With `--exec CMD` each
//! request is answered with CMD's output: stored as a reply in the sender's mailbox, and
//! sent as a `Reply` frame too when the request came over a connection still open.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{Ctx, output};
use crate::agents::procfs;
use crate::route::{self, SendRequest};
use crate::store::Intent;
use crate::store::{Fetch, FetchMode, Filter, Message, Registration, SqliteStore, Store};
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
    /// says it timed out.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub exec_timeout: Duration,
}

/// Replies remembered per listener, for requests seen on both paths.
const MEMO: usize = 1024;

/// Answers requests by running a command.
struct Answerer {
    cmd: String,
    timeout: Duration,
    /// Replies by request id. A request sent live is also in the mailbox until the sender
    /// acks it, so both paths may see it: the command runs once (under this lock), and
    /// whichever path comes second gets the same reply.
    memo: Mutex<(HashMap<String, Reply>, VecDeque<String>)>,
    store: Arc<SqliteStore>,
    me: crate::store::Endpoint,
}

impl Answerer {
    /// The reply to `m`: made once per request id (see `memo`), at most [`MEMO`] kept.
    fn answer_once(&self, m: &Message) -> Reply {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = memo.0.get(&m.id) {
            return r.clone();
        }
        let r = self.answer(m);
        memo.0.insert(m.id.clone(), r.clone());
        memo.1.push_back(m.id.clone());
        if memo.1.len() > MEMO
            && let Some(old) = memo.1.pop_front()
        {
            memo.0.remove(&old);
        }
        r
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

struct Printer {
    json: bool,
    seen: Mutex<HashSet<String>>,
}

impl Printer {
    /// Prints a message unless it was printed before; true when it was new.
    fn show(&self, m: &Message, route: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.insert(m.id.clone()) {
            return false;
        }
        if self.json {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            v["route"] = json!(route);
            output::line(&v.to_string());
        } else {
            output::line(output::messages(std::slice::from_ref(m)).trim_end());
        }
        true
    }
}

fn from_deliver(d: crate::wire::catalogue::Deliver, me: &str) -> Message {
    Message {
        id: d.message_id,
        from: d.from,
        from_name: d.from_name,
        to: me.to_string(),
        thread: d.thread,
        reply_to: d.reply_to,
        intent: if d.intent == 1 {
            crate::store::Intent::Request
        } else {
            crate::store::Intent::Notify
        },
        content_type: d.content_type,
        body: d.body,
        created_at: d.created_at,
        expires_at: None,
        state: crate::store::State::Acked,
        deliveries: 1,
    }
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = Arc::new(ctx.store()?);
    let me = ctx.me(store.as_ref())?;
    let answerer = a.exec.map(|cmd| {
        Arc::new(Answerer {
            cmd,
            timeout: a.exec_timeout,
            memo: Mutex::new((HashMap::new(), VecDeque::new())),
            store: store.clone(),
            me: me.clone(),
        })
    });
    // Mark it live: the pid and start time tell a reused pid apart.
    if let Some(p) = procfs::current() {
        store.register(&Registration {
            id: Some(me.id.clone()),
            pid: Some(p.process.pid),
            pid_start: Some(p.process.start),
            ..Registration::default()
        })?;
    }
    let path = transport::socket_path(&transport::runtime_dir(&ctx.config.home), &me.id);
    let listener = Listener::bind(&path)?;
    let printer = Arc::new(Printer {
        json: ctx.json,
        seen: Mutex::new(HashSet::new()),
    });
    if !ctx.json {
        eprintln!("relay: {} is live on {}", me.display_name(), path.display());
    }
    // Mail queued before we listened, and any that lands in the mailbox later.
    {
        let (store, printer, id) = (store.clone(), printer.clone(), me.id.clone());
        let answerer = answerer.clone();
        std::thread::spawn(move || mailbox_loop(&store, &printer, answerer.as_deref(), &id));
    }
    let mut local = Local::new(me.id.clone());
    local.name = me.name.clone();
    loop {
        match listener.accept() {
            Ok(conn) => {
                let (printer, local, id) = (printer.clone(), local.clone(), me.id.clone());
                let answerer = answerer.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(conn, &local, &printer, answerer.as_deref(), &id) {
                        tracing::warn!("connection closed: {e}");
                    }
                });
            }
            Err(e @ transport::Error::PeerUid { .. }) => tracing::warn!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
}

fn mailbox_loop(store: &SqliteStore, printer: &Printer, answerer: Option<&Answerer>, me: &str) {
    // Without an answerer a message is done once printed: take it. With one, a request is
    // done once answered: lease it, answer, then ack — a listener killed in between leaves
    // it to be handed out again, not acked and unanswered.
    let fetch = Fetch {
        limit: if answerer.is_some() { 1 } else { 100 },
        mode: if answerer.is_some() {
            FetchMode::Deliver {
                lease: crate::store::DEFAULT_LEASE,
            }
        } else {
            FetchMode::Take
        },
        filter: Filter::default(),
    };
    loop {
        match store.wait(me, &fetch, Duration::from_secs(300)) {
            Ok(msgs) => {
                for m in &msgs {
                    let new = printer.show(m, "mailbox");
                    if new
                        && m.intent == Intent::Request
                        && let Some(a) = answerer
                    {
                        a.answer_once(m);
                    }
                    if answerer.is_some()
                        && let Err(e) = store.ack(Some(me), std::slice::from_ref(&m.id))
                    {
                        tracing::warn!("ack {}: {e}", m.id);
                    }
                }
            }
            Err(e) => {
                tracing::error!("mailbox: {e}");
                return;
            }
        }
    }
}

/// How long a new connection has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write to a peer may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn serve(
    mut conn: transport::Connection,
    local: &Local,
    printer: &Printer,
    answerer: Option<&Answerer>,
    me: &str,
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
            Msg::Deliver(d) => {
                let m = from_deliver(d, me);
                printer.show(&m, "live");
                conn.write_frame(Msg::DeliverAck(DeliverAck {
                    message_id: m.id.clone(),
                    accepted: true,
                    reason: None,
                }))?;
                // Also when the mailbox path showed it first: the asker waits on this
                // connection, and may have no mailbox to get the stored reply from.
                if m.intent == Intent::Request
                    && let Some(a) = answerer
                {
                    // The sender may have hung up already; the stored reply still reaches it.
                    let _ = conn.write_frame(Msg::Reply(a.answer_once(&m)));
                }
            }
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
