//! Hidden `relay shm-peer`: the other process in stream and frame tests, the demo and the
//! stream benchmark. It dials the socket(s) it is given, handshakes with every capability,
//! and plays one role. Results are JSON lines on stdout.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::EXIT_OK;
use crate::shm::frames::{FrameWriter, Geometry};
use crate::shm::patterns::{fill_frame, pattern};
use crate::shm::{Options, Session};
use crate::transport::{Connection, Local, handshake};
use crate::wire::catalogue::{FD_PASSING, FRAMES, SHM_STREAMS};

/// What the peer does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    /// Accept streams and read each to its end; print `{id, bytes, sha256, shm}` per stream.
    Sink,
    /// Accept streams on the first socket and copy each into a new stream on `--next`.
    Forward,
    /// Open one stream, write `--bytes` of the test pattern, then hang (to be killed).
    WriteThenHang,
    /// Echo: accept one stream and open one back; copy every byte (stream round trips).
    Echo,
    /// Accept streams and read each to its end without looking at the bytes (benchmarks);
    /// print `{id, bytes, shm}` per stream.
    Drain,
    /// Publish `--count` frames of `--width`×`--height` RGBA8 after a line on stdin;
    /// first prints the buffer's `/proc/<pid>/fd/<n>` path.
    PublishFrames,
}

/// Arguments of the hidden `relay shm-peer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The role.
    #[arg(value_enum)]
    pub role: Role,
    /// Socket to dial.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Second socket to dial (forward's downstream).
    #[arg(long)]
    pub next: Option<PathBuf>,
    /// Bytes to write (write-then-hang).
    #[arg(long, default_value_t = 0)]
    pub bytes: u64,
    /// Frames to publish.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Frame width, pixels.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    /// Frame height, pixels.
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    /// Refuse shared memory (socket path only).
    #[arg(long)]
    pub no_shm: bool,
    /// Shared-memory slots for this side's sessions.
    #[arg(long, default_value_t = crate::shm::stream::DEFAULT_SLOTS)]
    pub slots: usize,
    /// Spin before parking, µs.
    #[arg(long, default_value_t = 50)]
    pub spin_us: u64,
    /// Pin to this CPU (benchmarks).
    #[arg(long)]
    pub cpu: Option<usize>,
}

const DEADLINE: Duration = Duration::from_secs(60);

fn dial(path: &Path, a: &Args) -> anyhow::Result<Session> {
    let mut conn = Connection::new(crate::transport::client::connect(path)?);
    let mut me = Local::new(format!("shm-peer-{}", std::process::id()));
    me.capabilities = if a.no_shm {
        FD_PASSING
    } else {
        FD_PASSING | SHM_STREAMS | FRAMES
    };
    let agreed = handshake::dial(&mut conn, &me)?;
    conn.set_read_timeout(None)?;
    let opts = Options {
        slots: a.slots,
        spin: Duration::from_micros(a.spin_us),
        ..Options::default()
    };
    Ok(Session::new(conn, agreed.capabilities, true, opts)?)
}

fn line(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub(crate) fn run(a: Args) -> anyhow::Result<u8> {
    if let Some(c) = a.cpu {
        crate::bench::pin_to_cpu(c);
    }
    let socket = || {
        a.socket
            .clone()
            .ok_or_else(|| super::UsageError("this role needs --socket".into()))
    };
    match a.role {
        Role::Sink => {
            let s = dial(&socket()?, &a)?;
            // Each stream is read on its own thread, so many can be open at once.
            let mut readers = Vec::new();
            while let Ok(mut r) = s.accept(DEADLINE) {
                readers.push(std::thread::spawn(move || {
                    let mut hash = Sha256::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    let outcome = loop {
                        match r.read(&mut buf) {
                            Ok(0) => break None,
                            Ok(n) => hash.update(&buf[..n]),
                            Err(e) => break Some(e.to_string()),
                        }
                    };
                    let sha: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
                    line(json!({"id": r.id(), "bytes": r.position(), "sha256": sha,
                                "shm": r.is_shm(), "error": outcome}));
                }));
            }
            for t in readers {
                let _ = t.join();
            }
        }
        Role::Drain => {
            let s = dial(&socket()?, &a)?;
            while let Ok(mut r) = s.accept(DEADLINE) {
                let mut buf = vec![0u8; 1 << 20];
                while r.read(&mut buf)? > 0 {}
                line(json!({"id": r.id(), "bytes": r.position(), "shm": r.is_shm()}));
            }
        }
        Role::Forward => {
            let up = dial(&socket()?, &a)?;
            let next = a
                .next
                .clone()
                .ok_or_else(|| super::UsageError("forward needs --next".into()))?;
            let down = dial(&next, &a)?;
            while let Ok(mut r) = up.accept(DEADLINE) {
                let mut w = down.open()?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n])?;
                }
                line(
                    json!({"forwarded": r.position(), "in_shm": r.is_shm(), "out_shm": w.is_shm()}),
                );
                w.finish_and_wait(DEADLINE)?;
            }
        }
        Role::WriteThenHang => {
            let s = dial(&socket()?, &a)?;
            let mut w = s.open()?;
            let data: Vec<u8> = (0..a.bytes).map(pattern).collect();
            w.write_all(&data)?;
            line(json!({"written": a.bytes, "shm": w.is_shm()}));
            // Hold the stream open until killed.
            std::thread::sleep(DEADLINE);
        }
        Role::Echo => {
            let s = dial(&socket()?, &a)?;
            let mut r = s.accept(DEADLINE)?;
            let mut w = s.open()?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n])?;
            }
            w.finish_and_wait(DEADLINE)?;
        }
        Role::PublishFrames => {
            let mut fw = FrameWriter::create(Geometry::rgba8(a.width, a.height))?;
            line(
                json!({"path": format!("/proc/{}/fd/{}", std::process::id(), fw.fd().as_raw_fd())}),
            );
            let mut go = String::new();
            std::io::stdin().lock().read_line(&mut go)?;
            let started = Instant::now();
            for _ in 0..a.count {
                fw.publish(fill_frame);
            }
            let secs = started.elapsed().as_secs_f64();
            line(json!({"published": a.count, "seconds": secs}));
            // Keep the buffer alive until the reader is done (stdin closes).
            let mut rest = String::new();
            let _ = std::io::stdin().lock().read_line(&mut rest);
        }
    }
    Ok(EXIT_OK)
}
