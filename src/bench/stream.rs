//! `relay bench stream`: bulk bytes between two processes over a shared-memory stream at
//! 4 KiB, 64 KiB and 1 MiB writes, next to a memcpy of the same bytes and a Unix-socket byte
//! stream measured in the same run; then small-message round trips over two shm streams
//! with spin-then-park and with park only, next to a raw Unix-socket ping-pong.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Latency, Machine, pin_to_cpu};
use crate::shm::{Options, Session};
use crate::transport::{Listener, Local, handshake};
use crate::wire::catalogue::{FD_PASSING, FRAMES, SHM_STREAMS};

/// One throughput row.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// `shm`, `socket fallback`, `unix socket` or `memcpy`.
    pub path: String,
    /// Bytes per write.
    pub write: usize,
    /// GB/s (10⁹ bytes per second).
    pub gb_per_s: f64,
}

/// One round-trip row.
#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    /// `shm` or `unix socket`.
    pub path: String,
    /// Spin before parking, µs (0: park at once).
    pub spin_us: u64,
    /// Latency.
    pub latency: Latency,
}

/// Everything `relay bench stream` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Bytes per throughput row.
    pub total: u64,
    /// Round trips per latency row.
    pub n: usize,
    /// Throughput rows.
    pub throughput: Vec<Throughput>,
    /// Round-trip rows.
    pub round_trips: Vec<RoundTrip>,
}

const DEADLINE: Duration = Duration::from_secs(120);
const ALL: u32 = FD_PASSING | SHM_STREAMS | FRAMES;

/// Spawns `relay shm-peer <role> --socket <dir/name> <extra…>` and starts a session on its
/// connection (we are the listener).
fn peer(
    dir: &Path,
    name: &str,
    role: &str,
    extra: &[String],
    opts: Options,
) -> anyhow::Result<(Child, Session)> {
    let path = dir.join(name);
    let listener = Listener::bind(&path)?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("shm-peer")
        .arg(role)
        .arg("--socket")
        .arg(&path)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut conn = listener.accept()?;
    conn.set_read_timeout(Some(DEADLINE))?;
    let mut me = Local::new("bench-stream");
    me.capabilities = ALL;
    let agreed = handshake::accept(&mut conn, &me)?;
    conn.set_read_timeout(None)?;
    Ok((child, Session::new(conn, agreed.capabilities, false, opts)?))
}

fn gbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64().max(1e-9) / 1e9
}

/// Writes `total` bytes in `write`-sized calls over one stream to a draining child; the
/// clock stops when the reader has read the last byte.
fn stream_row(dir: &Path, total: u64, write: usize, shm: bool) -> anyhow::Result<Throughput> {
    let opts = Options {
        slots: if shm {
            crate::shm::stream::DEFAULT_SLOTS
        } else {
            0
        },
        ..Options::default()
    };
    let (mut child, s) = peer(dir, "tp.sock", "drain", &["--cpu".into(), "1".into()], opts)?;
    pin_to_cpu(0);
    let buf = vec![0xA5u8; write];
    let mut w = s.open()?;
    anyhow::ensure!(
        w.is_shm() == shm,
        "the stream did not take the path asked for"
    );
    let started = Instant::now();
    let mut left = total;
    while left > 0 {
        let k = (left as usize).min(write);
        w.write_all(&buf[..k])?;
        left -= k as u64;
    }
    w.finish_and_wait(DEADLINE)?;
    let took = started.elapsed();
    drop(s);
    child.wait()?;
    Ok(Throughput {
        path: if shm { "shm" } else { "socket fallback" }.into(),
        write,
        gb_per_s: gbps(total, took),
    })
}

/// The same bytes over a plain Unix socket to a child that reads them all.
fn socket_row(dir: &Path, total: u64, write: usize) -> anyhow::Result<Throughput> {
    let count = total / write as u64;
    let (mut child, mut s) = super::raw_child(
        dir,
        "raw.sock",
        "raw-sink",
        &[
            "--count".into(),
            count.to_string(),
            "--size".into(),
            write.to_string(),
            "--cpu".into(),
            "1".into(),
        ],
    )?;
    pin_to_cpu(0);
    let buf = vec![0xA5u8; write];
    let started = Instant::now();
    for _ in 0..count {
        s.write_all(&buf)?;
    }
    let mut done = [0u8; 1];
    s.read_exact(&mut done)?;
    let took = started.elapsed();
    child.wait()?;
    Ok(Throughput {
        path: "unix socket".into(),
        write,
        gb_per_s: gbps(count * write as u64, took),
    })
}

/// memcpy of the same bytes in `write`-sized pieces into a 1 MiB buffer (like the ring).
fn memcpy_row(total: u64, write: usize) -> Throughput {
    let src = vec![0xA5u8; write];
    let mut dst = vec![0u8; (1 << 20).max(write)];
    let started = Instant::now();
    let (mut left, mut at) = (total, 0usize);
    while left > 0 {
        let k = (left as usize).min(write);
        if at + k > dst.len() {
            at = 0;
        }
        dst[at..at + k].copy_from_slice(&src[..k]);
        std::hint::black_box(&mut dst);
        at += k;
        left -= k as u64;
    }
    Throughput {
        path: "memcpy".into(),
        write,
        gb_per_s: gbps(total, started.elapsed()),
    }
}

/// 64-byte round trips over two shm streams (out and back) to an echoing child.
fn shm_rtt(dir: &Path, n: usize, spin: Duration, tick: &dyn Fn()) -> anyhow::Result<RoundTrip> {
    let opts = Options {
        spin,
        ..Options::default()
    };
    let extra = [
        "--cpu".into(),
        "1".into(),
        "--spin-us".into(),
        spin.as_micros().to_string(),
    ];
    let (mut child, s) = peer(dir, "rtt.sock", "echo", &extra, opts)?;
    pin_to_cpu(0);
    let mut w = s.open()?;
    let mut r = s.accept(DEADLINE)?;
    anyhow::ensure!(
        w.is_shm() && r.is_shm(),
        "round trips must run over shared memory"
    );
    let ping = [0x5Au8; 64];
    let mut back = [0u8; 64];
    let latency = super::time_each(n, tick, |_| {
        w.write_all(&ping)?;
        let mut got = 0;
        while got < back.len() {
            let k = r.read(&mut back[got..])?;
            anyhow::ensure!(k > 0, "the echo ended early");
            got += k;
        }
        Ok(())
    })?;
    w.finish()?;
    drop(r);
    child.wait()?;
    Ok(RoundTrip {
        path: "shm".into(),
        spin_us: spin.as_micros() as u64,
        latency,
    })
}

/// Runs every row. `total` bytes per throughput row, `n` round trips per latency row.
///
/// # Errors
/// Spawn, socket, memfd or protocol failures.
pub fn run(total: u64, n: usize, tick: &dyn Fn()) -> anyhow::Result<Report> {
    let tmp = tempfile::Builder::new()
        .prefix("relay-bench-stream-")
        .tempdir()?;
    let machine = Machine::detect();
    let mut throughput = Vec::new();
    for write in [4 << 10, 64 << 10, 1 << 20] {
        throughput.push(memcpy_row(total, write));
        throughput.push(stream_row(tmp.path(), total, write, true)?);
        tick();
        throughput.push(stream_row(tmp.path(), total, write, false)?);
        tick();
        throughput.push(socket_row(tmp.path(), total, write)?);
        tick();
    }
    let mut round_trips = Vec::new();
    for spin in [Duration::from_micros(50), Duration::ZERO] {
        round_trips.push(shm_rtt(tmp.path(), n, spin, tick)?);
        let layout = super::rtt::Layout { cpus: (0, 1), spin };
        round_trips.push(RoundTrip {
            path: "unix socket".into(),
            spin_us: spin.as_micros() as u64,
            latency: super::rtt::raw_rtt(tmp.path(), n, 64, layout, tick)?,
        });
    }
    Ok(Report {
        machine,
        total,
        n,
        throughput,
        round_trips,
    })
}

/// The report as Markdown, for bench/results/stream.md.
pub fn markdown(r: &Report, when: &str) -> String {
    let mut s = super::report_header(
        "relay bench stream",
        &format!("relay bench stream --mib {} --n {}", r.total >> 20, r.n),
        &r.machine,
        when,
    );
    s += &format!(
        "Throughput: {} MiB one way per row, writer pinned to CPU 0, reader to CPU 1; the \
         clock stops when the reader has read the last byte. `shm`: a 1 MiB memfd ring; \
         `socket fallback`: the same stream API forced onto StreamData frames; `unix socket`: \
         raw write(2)/read(2); `memcpy`: one copy in one process.\n\n\
         | path | write size | GB/s |\n|---|---|---|\n",
        r.total >> 20
    );
    for t in &r.throughput {
        let size = match t.write {
            w if w >= 1 << 20 => format!("{} MiB", w >> 20),
            w => format!("{} KiB", w >> 10),
        };
        s += &format!("| {} | {size} | {:.2} |\n", t.path, t.gb_per_s);
    }
    s += "\nRound trip of 64 bytes, µs (shm: out on one stream, back on another; unix socket: \
          raw ping-pong), CPUs 0 and 1.\n\n\
          | path | wait | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n";
    for rt in &r.round_trips {
        let wait = match rt.spin_us {
            0 => "park".to_string(),
            us => format!("spin {us} µs, park"),
        };
        let l = &rt.latency;
        s += &format!(
            "| {} | {wait} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            rt.path, l.p50_us, l.p99_us, l.p999_us, l.max_us
        );
    }
    s += "\nGoal: ≥ 6 GB/s over shm at 64 KiB writes.\n";
    s
}
