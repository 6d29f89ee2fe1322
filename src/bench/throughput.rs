//! `relay bench throughput`: one-way messages per second from one process to another, over
//! relay's framed protocol (`StreamData` frames after the handshake) and, as the baseline in
//! the same run, fixed-size records over a raw Unix socket. 64 B and 4 KiB bodies, one write
//! per message and batches of 64 per write. The receiver answers once at the end, so the
//! clock covers every byte arriving.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::Machine;
use crate::transport::{Connection, Local, handshake};
use crate::wire::Msg;
use crate::wire::catalogue::{Pong, StreamData};

/// Messages per write when batching.
pub const BATCH: usize = 64;

/// One row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `relay` or `raw`.
    pub path: String,
    /// Body bytes per message.
    pub size: usize,
    /// Messages per write.
    pub batch: usize,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Body megabytes per second (10^6 bytes).
    pub mb_per_s: f64,
}

/// Everything `relay bench throughput` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Messages per row.
    pub n: usize,
    /// The rows.
    pub rows: Vec<Row>,
}

const DEADLINE: Duration = Duration::from_secs(60);

fn row(path: &str, size: usize, batch: usize, n: usize, took: Duration) -> Row {
    let secs = took.as_secs_f64().max(1e-9);
    Row {
        path: path.into(),
        size,
        batch,
        msgs_per_s: n as f64 / secs,
        mb_per_s: (n * size) as f64 / secs / 1e6,
    }
}

fn relay_row(dir: &Path, n: usize, size: usize, batch: usize) -> anyhow::Result<Row> {
    let (mut child, mut conn) = super::framed_child(
        dir,
        "tp.sock",
        "frame-sink",
        &["--count".into(), n.to_string()],
    )?;
    let data = vec![0x5Au8; size];
    let msg = |i: usize| {
        Msg::StreamData(StreamData {
            stream_id: 1,
            offset: i as u64,
            data: data.clone(),
        })
    };
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let k = batch.min(n - i);
        if k == 1 {
            conn.write_frame(msg(i))?;
        } else {
            conn.write_frames((i..i + k).map(msg))?;
        }
        i += k;
    }
    match conn.read_frame()? {
        Some(f) if matches!(f.msg, Msg::Pong(_)) => {}
        other => bail!("sink answered {other:?}"),
    }
    let took = t.elapsed();
    child.wait()?;
    Ok(row("relay", size, batch, n, took))
}

fn raw_row(dir: &Path, n: usize, size: usize, batch: usize) -> anyhow::Result<Row> {
    let (mut child, mut s) = super::raw_child(
        dir,
        "tp-raw.sock",
        "raw-sink",
        &[
            "--count".into(),
            n.to_string(),
            "--size".into(),
            size.to_string(),
        ],
    )?;
    let chunk = vec![0x5Au8; size * batch];
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let k = batch.min(n - i);
        s.write_all(&chunk[..k * size])?;
        i += k;
    }
    let mut done = [0u8; 1];
    s.read_exact(&mut done)?;
    let took = t.elapsed();
    child.wait()?;
    Ok(row("raw", size, batch, n, took))
}

/// The framed sink child: dial, handshake, read `count` frames, answer one Pong.
///
/// # Errors
/// Socket or protocol errors.
pub fn child_frame_sink(socket: &Path, count: usize) -> anyhow::Result<()> {
    let mut conn = Connection::new(UnixStream::connect(socket)?);
    conn.set_read_timeout(Some(DEADLINE))?;
    handshake::dial(&mut conn, &Local::new("tp-child"))?;
    for _ in 0..count {
        if conn.read_frame()?.is_none() {
            bail!("parent closed early");
        }
    }
    conn.write_frame(Msg::Pong(Pong {
        nonce: count as u64,
    }))?;
    Ok(())
}

/// The raw sink child: read `count` records of `size` bytes, answer one byte.
///
/// # Errors
/// Socket errors.
pub fn child_raw_sink(socket: &Path, count: usize, size: usize) -> anyhow::Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(DEADLINE))?;
    let mut left = count * size;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let k = s.read(&mut buf[..left.min(64 * 1024)])?;
        if k == 0 {
            bail!("parent closed early");
        }
        left -= k;
    }
    s.write_all(&[1])?;
    Ok(())
}

/// Runs every row: {relay, raw} × {64 B, 4 KiB} × {1, 64 per write}.
///
/// # Errors
/// Spawn, socket or protocol failures.
pub fn run(n: usize, tick: &dyn Fn()) -> anyhow::Result<Report> {
    let tmp = tempfile::Builder::new()
        .prefix("relay-bench-tp-")
        .tempdir()?;
    let mut rows = Vec::new();
    for size in [64, 4096] {
        for batch in [1, BATCH] {
            rows.push(relay_row(tmp.path(), n, size, batch)?);
            tick();
            rows.push(raw_row(tmp.path(), n, size, batch)?);
            tick();
        }
    }
    Ok(Report {
        machine: Machine::detect(),
        n,
        rows,
    })
}

/// The report as Markdown, for bench/results/throughput.md.
pub fn markdown(r: &Report, when: &str) -> String {
    let mut s = super::report_header(
        "relay bench throughput",
        &format!("relay bench throughput --n {}", r.n),
        &r.machine,
        when,
    );
    s += "One-way, one process to another; the receiver decodes every frame (relay) or reads \
          every byte (raw) and answers once at the end.\n\n\
          | path | body | per write | messages/s | MB/s |\n|---|---|---|---|---|\n";
    for row in &r.rows {
        s += &format!(
            "| {} | {} B | {} | {:.0} | {:.1} |\n",
            row.path, row.size, row.batch, row.msgs_per_s, row.mb_per_s
        );
    }
    s
}
