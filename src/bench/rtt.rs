//! `relay bench rtt`: request/reply between two processes over relay's framed protocol,
//! next to a raw Unix-socket ping-pong with the same payload and process placement.
//!
//! relay: after the handshake, the parent sends a `StreamData` frame carrying `size` bytes,
//! the child decodes it and sends the same frame back. raw: `size` bytes written, the same
//! bytes echoed. Each placement runs both: the two processes pinned to the same CPU, and to
//! different CPUs (when there are two).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::{Latency, Machine, Recorder, pin_to_cpu};
use crate::transport::{Connection, Local, handshake};
use crate::wire::Msg;
use crate::wire::catalogue::StreamData;

/// One placement's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Placement {
    /// `same-cpu` or `different-cpus`.
    pub placement: String,
    /// relay framed request/reply.
    pub relay: Latency,
    /// Raw Unix-socket ping-pong.
    pub raw: Latency,
    /// relay p50 / raw p50.
    pub ratio_p50: f64,
}

/// Everything `relay bench rtt` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Round trips per row.
    pub n: usize,
    /// Payload bytes.
    pub size: usize,
    /// Per placement.
    pub placements: Vec<Placement>,
}

const DEADLINE: Duration = Duration::from_secs(30);

fn relay_rtt(
    dir: &Path,
    n: usize,
    size: usize,
    cpus: (usize, usize),
    tick: &dyn Fn(),
) -> anyhow::Result<Latency> {
    let (mut c, mut conn) = super::framed_child(
        dir,
        "rtt.sock",
        "frame-echo",
        &[
            "--count".into(),
            n.to_string(),
            "--cpu".into(),
            cpus.1.to_string(),
        ],
    )?;
    pin_to_cpu(cpus.0);
    let data = vec![0xA5u8; size];
    let mut rec = Recorder::default();
    for i in 0..n {
        let t = Instant::now();
        conn.write_frame(Msg::StreamData(StreamData {
            stream_id: 1,
            offset: i as u64,
            data: data.clone(),
        }))?;
        match conn.read_frame()? {
            Some(f) if matches!(f.msg, Msg::StreamData(_)) => {}
            other => bail!("echo child answered {other:?}"),
        }
        rec.record(t.elapsed());
        if i % 1000 == 0 {
            tick();
        }
    }
    c.wait()?;
    Ok(rec.latency())
}

fn raw_rtt(
    dir: &Path,
    n: usize,
    size: usize,
    cpus: (usize, usize),
    tick: &dyn Fn(),
) -> anyhow::Result<Latency> {
    let (mut c, mut s) = super::raw_child(
        dir,
        "raw.sock",
        "echo",
        &[
            "--count".into(),
            n.to_string(),
            "--size".into(),
            size.to_string(),
            "--cpu".into(),
            cpus.1.to_string(),
        ],
    )?;
    pin_to_cpu(cpus.0);
    let out = vec![0xA5u8; size];
    let mut back = vec![0u8; size];
    let mut rec = Recorder::default();
    for i in 0..n {
        let t = Instant::now();
        s.write_all(&out)?;
        s.read_exact(&mut back)?;
        rec.record(t.elapsed());
        if i % 1000 == 0 {
            tick();
        }
    }
    c.wait()?;
    Ok(rec.latency())
}

/// The framed echo child: dial, handshake, echo `count` frames.
///
/// # Errors
/// Socket or protocol errors.
pub fn child_frame_echo(socket: &Path, count: usize, cpu: Option<usize>) -> anyhow::Result<()> {
    if let Some(c) = cpu {
        pin_to_cpu(c);
    }
    let mut conn = Connection::new(UnixStream::connect(socket)?);
    conn.set_read_timeout(Some(DEADLINE))?;
    handshake::dial(&mut conn, &Local::new("bench-child"))?;
    for _ in 0..count {
        match conn.read_frame()? {
            Some(f) => conn.write_frame(f.msg)?,
            None => bail!("parent closed early"),
        }
    }
    Ok(())
}

/// The raw echo child: connect and echo `count` messages of `size` bytes.
///
/// # Errors
/// Socket errors.
pub fn child_raw_echo(
    socket: &Path,
    count: usize,
    size: usize,
    cpu: Option<usize>,
) -> anyhow::Result<()> {
    if let Some(c) = cpu {
        pin_to_cpu(c);
    }
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(DEADLINE))?;
    let mut buf = vec![0u8; size.max(1)];
    for _ in 0..count {
        s.read_exact(&mut buf)?;
        s.write_all(&buf)?;
    }
    Ok(())
}

/// Runs both placements (different CPUs only when there are two or more).
///
/// # Errors
/// Spawn, socket or protocol failures.
pub fn run(n: usize, size: usize, tick: &dyn Fn()) -> anyhow::Result<Report> {
    let tmp = tempfile::Builder::new()
        .prefix("relay-bench-rtt-")
        .tempdir()?;
    let machine = Machine::detect();
    let mut placements = Vec::new();
    let mut layouts = vec![("same-cpu", (0, 0))];
    if machine.cores >= 2 {
        layouts.push(("different-cpus", (0, 1)));
    }
    for (name, cpus) in layouts {
        let relay = relay_rtt(tmp.path(), n, size, cpus, tick)?;
        let raw = raw_rtt(tmp.path(), n, size, cpus, tick)?;
        placements.push(Placement {
            placement: name.into(),
            ratio_p50: relay.p50_us / raw.p50_us.max(0.001),
            relay,
            raw,
        });
    }
    Ok(Report {
        machine,
        n,
        size,
        placements,
    })
}

/// The report as Markdown, for bench/results/rtt.md.
pub fn markdown(r: &Report, when: &str) -> String {
    let mut s = super::report_header(
        "relay bench rtt",
        &format!("relay bench rtt --n {} --size {}", r.n, r.size),
        &r.machine,
        when,
    );
    s += "Round trip between two processes, µs (relay: framed StreamData echo after the handshake; \
          raw: the same bytes over a plain Unix socket).\n\n\
          | placement | path | p50 | p99 | p99.9 | max | relay/raw p50 |\n|---|---|---|---|---|---|---|\n";
    for p in &r.placements {
        for (path, l) in [("relay", &p.relay), ("raw", &p.raw)] {
            s += &format!(
                "| {} | {path} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
                p.placement,
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                if path == "relay" {
                    format!("{:.2}", p.ratio_p50)
                } else {
                    String::new()
                }
            );
        }
    }
    s += "\nGoal: relay/raw p50 ≤ 1.25. Both processes block in read(2); no spinning.\n";
    s
}
