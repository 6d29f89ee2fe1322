//! `relay stream send|recv`: pipe a file between two live endpoints over a shared-memory
//! stream (socket fallback when shared memory is off or unavailable), with sha256 printed on
//! both sides.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Ctx, EXIT_OK, UsageError, output};
use crate::shm::{self, Options, Session};
use crate::store::Store;
use crate::transport::{self, Connection, Listener, Local, handshake};
use crate::wire::catalogue::{FD_PASSING, SHM_STREAMS};

/// Arguments of `relay stream`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example (two terminals):
  relay stream recv --as bob copy.iso        # waits for one stream
  relay stream send bob big.iso --as alice   # sha256 is printed on both sides

The receiver must be running first: it binds bob's live socket (so `relay listen --as bob`
cannot run at the same time). Bytes go through a shared-memory ring when both sides can,
else over the socket; --no-shm forces the socket path.")]
pub struct Args {
    /// Send or receive.
    #[command(subcommand)]
    pub what: What,
}

/// `relay stream` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Send FILE (or stdin with `-`, the default) to a receiving endpoint.
    Send(SendArgs),
    /// Receive one stream as "me" into FILE (or stdout with `-`, the default).
    Recv(RecvArgs),
}

/// Arguments of `relay stream send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The receiving endpoint (name, id or id prefix); it must be running `stream recv`.
    pub to: String,
    /// File to send; `-` for stdin.
    #[arg(default_value = "-")]
    pub file: PathBuf,
    /// Use the socket path even when shared memory is available.
    #[arg(long)]
    pub no_shm: bool,
}

/// Arguments of `relay stream recv`.
#[derive(Debug, clap::Args)]
pub struct RecvArgs {
    /// Where to write; `-` for stdout.
    #[arg(default_value = "-")]
    pub file: PathBuf,
    /// Give up when no sender connects within this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Refuse shared memory (the sender falls back to the socket).
    #[arg(long)]
    pub no_shm: bool,
}

/// What either side prints.
#[derive(Debug, Serialize)]
struct Transfer {
    /// Bytes moved.
    bytes: u64,
    /// Hex sha256 of them.
    sha256: String,
    /// `shm` or `socket`.
    path: &'static str,
    /// Wall time, seconds.
    seconds: f64,
    /// Throughput, MB/s (10⁶ bytes).
    mb_per_s: f64,
}

impl Transfer {
    fn new(bytes: u64, hash: Sha256, shm: bool, started: Instant) -> Transfer {
        let seconds = started.elapsed().as_secs_f64();
        Transfer {
            bytes,
            sha256: hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            path: if shm { "shm" } else { "socket" },
            seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
        }
    }

    fn human(&self, verb: &str) -> String {
        format!(
            "{verb} {} bytes over {} in {:.3} s ({:.0} MB/s)\nsha256 {}",
            self.bytes, self.path, self.seconds, self.mb_per_s, self.sha256
        )
    }
}

const CHUNK: usize = 256 * 1024;

fn capabilities(no_shm: bool) -> u32 {
    if no_shm {
        FD_PASSING
    } else {
        FD_PASSING | SHM_STREAMS
    }
}

fn bar(total: Option<u64>, json: bool) -> ProgressBar {
    // Only large transfers on a terminal get a bar; scripts (--json) never do.
    if json || total.is_some_and(|t| t < 64 << 20) {
        return ProgressBar::hidden();
    }
    let b = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    b.set_style(
        ProgressStyle::with_template("{bytes}/{total_bytes} {bar:30} {bytes_per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    match a.what {
        What::Send(s) => send(ctx, s),
        What::Recv(r) => recv(ctx, r),
    }
}

fn send(ctx: &Ctx, a: SendArgs) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    let target = store.resolve(&a.to)?;
    let (mut input, total): (Box<dyn Read>, Option<u64>) = if a.file.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = File::open(&a.file)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", a.file.display())))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let path = transport::socket_path(&transport::runtime_dir(&ctx.config.home), &target.id);
    // Another user's socket is refused (SO_PEERCRED) before a byte is sent.
    // Not live, or served by another user: nothing can be handed over (exit 3, like a
    // rejected send), not a mistake in the arguments.
    let stream = transport::client::connect(&path).map_err(|e| {
        let detail = match e {
            transport::Error::Io(e) => format!(
                "{} is not live ({e}); start `relay stream recv --as {}` first",
                target.display_name(),
                target.display_name()
            ),
            other => other.to_string(),
        };
        crate::route::Error::Rejected {
            reason: crate::route::Reason::NotDeliverable,
            detail,
        }
    })?;
    let mut conn = Connection::new(stream);
    let mut local = Local::new(me.id.clone());
    local.name = me.name.clone();
    local.capabilities = capabilities(a.no_shm);
    let agreed = handshake::dial(&mut conn, &local)?;
    let session = Session::new(conn, agreed.capabilities, true, Options::default())?;
    let started = Instant::now();
    let mut w = session.open()?;
    let progress = bar(total, ctx.json);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hash.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        progress.inc(n as u64);
    }
    let (bytes, shm) = (w.written(), w.is_shm());
    w.finish_and_wait(Duration::from_secs(300))?;
    progress.finish_and_clear();
    let t = Transfer::new(bytes, hash, shm, started);
    output::emit(ctx.json, &t, || t.human("sent"));
    Ok(EXIT_OK)
}

fn recv(ctx: &Ctx, a: RecvArgs) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let me = ctx.me(&store)?;
    let path = transport::socket_path(&transport::runtime_dir(&ctx.config.home), &me.id);
    let listener = Listener::bind_locked(
        &path,
        Some(&transport::endpoint_lock(&ctx.config.home, &me.id)),
    )?;
    let mut out: Box<dyn Write> = if a.file.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(&a.file)
                .map_err(|e| UsageError(format!("cannot write {}: {e}", a.file.display())))?,
        )
    };
    if !ctx.json {
        eprintln!(
            "relay: {} waits for a stream on {}",
            me.display_name(),
            path.display()
        );
    }
    let mut local = Local::new(me.id.clone());
    local.name = me.name.clone();
    local.capabilities = capabilities(a.no_shm);
    let (_session, mut r) = first_stream(listener, local, a.timeout)?;
    let started = Instant::now();
    let progress = bar(None, ctx.json || a.file.as_os_str() == "-");
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        progress.inc(n as u64);
    }
    out.flush()?;
    progress.finish_and_clear();
    let t = Transfer::new(r.position(), hash, r.is_shm(), started);
    drop(r);
    if a.file.as_os_str() == "-" {
        // stdout carries the bytes; the report goes to stderr.
        eprintln!("{}", t.human("received"));
    } else {
        output::emit(ctx.json, &t, || t.human("received"));
    }
    Ok(EXIT_OK)
}

/// Accepts connections until one of them opens a stream, giving up after `timeout`.
/// Other connections (a `relay send` that found this endpoint live) are served by their
/// own session, which refuses `Deliver` so the mail stays in the mailbox.
fn first_stream(
    listener: Listener,
    local: Local,
    timeout: Duration,
) -> anyhow::Result<(Session, shm::StreamReader)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = listener.path().to_path_buf();
    std::thread::spawn(move || {
        loop {
            let mut conn = match listener.accept() {
                Ok(c) => c,
                Err(e @ transport::Error::PeerUid { .. }) => {
                    tracing::warn!("{e}");
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            let (tx, local) = (tx.clone(), local.clone());
            std::thread::spawn(move || {
                let opened = (|| -> anyhow::Result<(Session, shm::StreamReader)> {
                    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let agreed = handshake::accept(&mut conn, &local)?;
                    conn.set_read_timeout(None)?;
                    let s = Session::new(conn, agreed.capabilities, false, Options::default())?;
                    let r = s.accept(timeout)?;
                    Ok((s, r))
                })();
                match opened {
                    Ok(v) => drop(tx.send(Ok(v))),
                    Err(e) => tracing::debug!("a connection brought no stream: {e}"),
                }
            });
        }
    });
    let got = rx.recv_timeout(timeout);
    // The accept thread keeps the listener; the socket file goes now, so the endpoint is
    // no longer reachable live once its one stream arrived (or the wait ended).
    let _ = std::fs::remove_file(&path);
    match got {
        Ok(v) => v,
        Err(_) => Err(shm::Error::Timeout(format!(
            "no stream arrived within {}",
            humantime::format_duration(timeout)
        ))
        .into()),
    }
}
