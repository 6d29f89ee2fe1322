//! Part 5 of `relay demo`: shared memory. The same large transfer goes to another process
//! over a shared-memory stream and over the socket fallback (sha256 checked on the far
//! side), then a frame publisher and a reader share 1280×720 RGBA frames.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::shm::frames::{FrameReader, Geometry};
use crate::shm::patterns::{check_frame, pattern};
use crate::shm::{Options, Session};
use crate::transport::{Listener, Local, handshake};
use crate::wire::catalogue::{FD_PASSING, FRAMES, SHM_STREAMS};

/// What part 5 showed.
#[derive(Debug, Default, Serialize)]
pub(crate) struct StreamOutcome {
    /// Bytes per transfer.
    pub stream_bytes: u64,
    /// Shared-memory transfer rate, MB/s (the reader hashes every byte).
    pub shm_mb_per_s: f64,
    /// Socket-fallback transfer rate, MB/s (same reader).
    pub socket_mb_per_s: f64,
    /// Both transfers arrived with the sender's sha256.
    pub sha256_match: bool,
    /// Frames the publisher wrote.
    pub frames_published: u64,
    /// Frames the reader took and checked whole.
    pub frames_read: u64,
    /// Frames published per second.
    pub frames_per_s: f64,
    /// Torn frames seen (must be 0).
    pub frames_torn: u64,
}

const MIB: u64 = 1 << 20;
const DEADLINE: Duration = Duration::from_secs(120);

fn peer(args: &[&str], stdin: Stdio) -> anyhow::Result<(Child, Receiver<Value>)> {
    let mut c = Command::new(std::env::current_exe()?)
        .arg("shm-peer")
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start shm-peer")?;
    let lines = crate::subprocess::stdout_lines(&mut c, crate::subprocess::json)?;
    Ok((c, lines))
}

fn next(lines: &Receiver<Value>) -> anyhow::Result<Value> {
    lines
        .recv_timeout(DEADLINE)
        .context("shm-peer ended or went quiet")
}

/// Sends `total` bytes of the test pattern to a hashing sink; returns (MB/s, sha matched).
fn transfer(dir: &Path, total: u64, shm: bool) -> anyhow::Result<(f64, bool)> {
    let path = dir.join(if shm { "shm.sock" } else { "sock.sock" });
    let listener = Listener::bind(&path)?;
    let (mut child, lines) = peer(
        &["sink", "--socket", &path.to_string_lossy()],
        Stdio::null(),
    )?;
    let mut conn = listener.accept()?;
    conn.set_read_timeout(Some(DEADLINE))?;
    let mut me = Local::new("demo-stream");
    me.capabilities = FD_PASSING | SHM_STREAMS | FRAMES;
    let agreed = handshake::accept(&mut conn, &me)?;
    conn.set_read_timeout(None)?;
    let opts = Options {
        slots: if shm {
            crate::shm::stream::DEFAULT_SLOTS
        } else {
            0
        },
        ..Options::default()
    };
    let session = Session::new(conn, agreed.capabilities, false, opts)?;
    let chunk: Vec<u8> = (0..MIB).map(pattern).collect();
    let mut hash = Sha256::new();
    let started = Instant::now();
    let mut w = session.open()?;
    if w.is_shm() != shm {
        bail!("the stream took the wrong path");
    }
    // The sink hashes what it reads; we hash what we wrote.
    for _ in 0..total / MIB {
        hash.update(&chunk);
        w.write_all(&chunk)?;
    }
    w.finish_and_wait(DEADLINE)?;
    let secs = started.elapsed().as_secs_f64();
    let got = next(&lines)?;
    let sent: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    drop(session);
    child.wait()?;
    Ok((
        total as f64 / 1e6 / secs.max(1e-9),
        got["sha256"] == sent.as_str() && got["bytes"] == total,
    ))
}

pub(crate) fn run(dir: &Path, say: &dyn Fn(String)) -> anyhow::Result<StreamOutcome> {
    let mut o = StreamOutcome {
        stream_bytes: 256 * MIB,
        ..StreamOutcome::default()
    };
    let (shm_rate, shm_ok) = transfer(dir, o.stream_bytes, true)?;
    say(format!(
        "   {} MiB over a shared-memory stream: {:.0} MB/s, sha256 {} (both ends hash every \
         byte; `relay bench stream` has the raw figures)",
        o.stream_bytes / MIB,
        shm_rate,
        if shm_ok { "matches" } else { "DIFFERS" }
    ));
    let (sock_rate, sock_ok) = transfer(dir, o.stream_bytes, false)?;
    say(format!(
        "   the same over the socket fallback:   {:.0} MB/s, sha256 {}",
        sock_rate,
        if sock_ok { "matches" } else { "DIFFERS" }
    ));
    o.shm_mb_per_s = shm_rate;
    o.socket_mb_per_s = sock_rate;
    o.sha256_match = shm_ok && sock_ok;

    // Frames: the publisher runs flat out; the reader checks every frame it takes.
    let count = 600;
    let (mut child, lines) = peer(
        &["publish-frames", "--count", &count.to_string()],
        Stdio::piped(),
    )?;
    let path = next(&lines)?["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut reader = FrameReader::open_path(Path::new(&path), Geometry::rgba8(1280, 720))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    stdin.write_all(b"go\n")?;
    let deadline = Instant::now() + DEADLINE;
    let mut last = 0;
    while last < count {
        if Instant::now() > deadline {
            bail!("frames stopped at {last}");
        }
        let Some(f) = reader.latest() else { continue };
        if f.id > last {
            if check_frame(f.id, &f[..]).is_err() {
                o.frames_torn += 1;
            }
            o.frames_read += 1;
            last = f.id;
        }
    }
    let done = next(&lines)?;
    drop(stdin);
    child.wait()?;
    o.frames_published = done["published"].as_u64().unwrap_or(0);
    o.frames_per_s = o.frames_published as f64 / done["seconds"].as_f64().unwrap_or(1.0).max(1e-9);
    say(format!(
        "   frames: {} published at {:.0} frames/s (1280×720 RGBA), {} read and checked, {} torn",
        o.frames_published, o.frames_per_s, o.frames_read, o.frames_torn
    ));
    Ok(o)
}
