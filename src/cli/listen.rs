//! `relay listen`: run a live endpoint. Mail already queued is shown first; then messages
//! arrive over the endpoint's socket as senders hand them over, and mail that reaches the
//! mailbox meanwhile (a sender without the live path) is picked up through the doorbell.
//! Each message is printed once (deduplicated by id) and acked.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{Ctx, output};
use crate::agents::procfs;
use crate::store::{Fetch, FetchMode, Filter, Message, Registration, SqliteStore, Store};
use crate::transport::{self, Listener, Local, handshake};
use crate::wire::Msg;
use crate::wire::catalogue::{DeliverAck, Pong, ShutdownAck};

/// Arguments of `relay listen`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With --json, prints one JSON object per message (JSON Lines) as \
they arrive. Stop with Ctrl-C; the socket file left behind is reclaimed by the next listen."
)]
pub struct Args {}

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

pub(crate) fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<u8> {
    let store = Arc::new(ctx.store()?);
    let me = ctx.me(store.as_ref())?;
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
        std::thread::spawn(move || mailbox_loop(&store, &printer, &id));
    }
    let mut local = Local::new(me.id.clone());
    local.name = me.name.clone();
    loop {
        match listener.accept() {
            Ok(conn) => {
                let (printer, local, id) = (printer.clone(), local.clone(), me.id.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve(conn, &local, &printer, &id) {
                        tracing::warn!("connection closed: {e}");
                    }
                });
            }
            Err(e @ transport::Error::PeerUid { .. }) => tracing::warn!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
}

fn mailbox_loop(store: &SqliteStore, printer: &Printer, me: &str) {
    let take = Fetch {
        limit: 100,
        mode: FetchMode::Take,
        filter: Filter::default(),
    };
    loop {
        match store.wait(me, &take, Duration::from_secs(300)) {
            Ok(msgs) => {
                for m in &msgs {
                    printer.show(m, "mailbox");
                }
            }
            Err(e) => {
                tracing::error!("mailbox: {e}");
                return;
            }
        }
    }
}

fn serve(
    mut conn: transport::Connection,
    local: &Local,
    printer: &Printer,
    me: &str,
) -> Result<(), transport::Error> {
    handshake::accept(&mut conn, local)?;
    while let Some(frame) = conn.read_frame()? {
        match frame.msg {
            Msg::Deliver(d) => {
                let id = d.message_id.clone();
                printer.show(&from_deliver(d, me), "live");
                conn.write_frame(Msg::DeliverAck(DeliverAck {
                    message_id: id,
                    accepted: true,
                    reason: None,
                }))?;
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
    Ok(())
}
