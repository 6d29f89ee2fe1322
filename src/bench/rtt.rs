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

use super::{Latency, Machine, pin_to_cpu};
use crate::transport::{Connection, Local, handshake};
use crate::wire::Msg;
use crate::wire::catalogue::StreamData;

/// One placement's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Placement {
    /// `same-cpu` or `different-cpus`.
    pub placement: String,
    /// Spin window before parking in each read, µs (0: block at once).
    pub spin_us: u64,
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

/// How one row is run: CPUs of parent and child, and the spin window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) cpus: (usize, usize),
    pub(crate) spin: Duration,
}

impl Layout {
    fn child_args(&self, n: usize) -> Vec<String> {
        vec![
            "--count".into(),
            n.to_string(),
            "--cpu".into(),
            self.cpus.1.to_string(),
            "--spin-us".into(),
            self.spin.as_micros().to_string(),
        ]
    }
}

fn relay_rtt(
    dir: &Path,
    n: usize,
    size: usize,
    layout: Layout,
    tick: &dyn Fn(),
) -> anyhow::Result<Latency> {
    let (mut c, mut conn) =
        super::framed_child(dir, "rtt.sock", "frame-echo", &layout.child_args(n))?;
    conn.set_spin(layout.spin);
    pin_to_cpu(layout.cpus.0);
    let data = vec![0xA5u8; size];
    let latency = super::time_each(n, tick, |i| {
        conn.write_frame(Msg::StreamData(StreamData {
            stream_id: 1,
            offset: i as u64,
            data: data.clone(),
        }))?;
        match conn.read_frame()? {
            Some(f) if matches!(f.msg, Msg::StreamData(_)) => Ok(()),
            other => bail!("echo child answered {other:?}"),
        }
    })?;
    c.wait()?;
    Ok(latency)
}

pub(crate) fn raw_rtt(
    dir: &Path,
    n: usize,
    size: usize,
    layout: Layout,
    tick: &dyn Fn(),
) -> anyhow::Result<Latency> {
    let mut args = layout.child_args(n);
    args.extend(["--size".into(), size.to_string()]);
    let (mut c, mut s) = super::raw_child(dir, "raw.sock", "echo", &args)?;
    pin_to_cpu(layout.cpus.0);
    let out = vec![0xA5u8; size];
    let mut back = vec![0u8; size];
    let latency = super::time_each(n, tick, |_| {
        s.write_all(&out)?;
        read_exact_spinning(&mut s, &mut back, layout.spin)?;
        Ok(())
    })?;
    c.wait()?;
    Ok(latency)
}

/// `read_exact` that polls without blocking for up to `spin` before each blocking read:
/// the raw baseline for spin-then-park, done the same way as [`Connection::set_spin`].
fn read_exact_spinning(s: &mut UnixStream, buf: &mut [u8], spin: Duration) -> std::io::Result<()> {
    use rustix::net::{RecvFlags, recv};
    let mut got = 0;
    while got < buf.len() {
        let until = Instant::now() + spin;
        let n = loop {
            if Instant::now() >= until {
                break s.read(&mut buf[got..])?;
            }
            match recv(&*s, &mut buf[got..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => break n,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => std::hint::spin_loop(),
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(())
}

/// The framed echo child: dial, handshake, echo `count` frames, spinning up to `spin`
/// before each blocking read.
///
/// # Errors
/// Socket or protocol errors.
pub fn child_frame_echo(
    socket: &Path,
    count: usize,
    cpu: Option<usize>,
    spin: Duration,
) -> anyhow::Result<()> {
    if let Some(c) = cpu {
        pin_to_cpu(c);
    }
    let mut conn = Connection::new(UnixStream::connect(socket)?);
    conn.set_spin(spin);
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

/// The raw echo child: connect and echo `count` messages of `size` bytes, spinning up to
/// `spin` before each blocking read.
///
/// # Errors
/// Socket errors.
pub fn child_raw_echo(
    socket: &Path,
    count: usize,
    size: usize,
    cpu: Option<usize>,
    spin: Duration,
) -> anyhow::Result<()> {
    if let Some(c) = cpu {
        pin_to_cpu(c);
    }
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(DEADLINE))?;
    let mut buf = vec![0u8; size.max(1)];
    for _ in 0..count {
        read_exact_spinning(&mut s, &mut buf, spin)?;
        s.write_all(&buf)?;
    }
    Ok(())
}

/// Runs both placements (different CPUs only when there are two or more), each blocking at
/// once; with `spin` non-zero, the different-CPU placement once more spinning that long
/// before parking (on one CPU a spinner only delays the peer it waits for).
///
/// # Errors
/// Spawn, socket or protocol failures.
pub fn run(n: usize, size: usize, spin: Duration, tick: &dyn Fn()) -> anyhow::Result<Report> {
    let tmp = tempfile::Builder::new()
        .prefix("relay-bench-rtt-")
        .tempdir()?;
    let machine = Machine::detect();
    let mut placements = Vec::new();
    let park = Duration::ZERO;
    let mut layouts = vec![("same-cpu", (0, 0), park)];
    if machine.cores >= 2 {
        layouts.push(("different-cpus", (0, 1), park));
        if !spin.is_zero() {
            layouts.push(("different-cpus", (0, 1), spin));
        }
    }
    for (name, cpus, spin) in layouts {
        let layout = Layout { cpus, spin };
        let relay = relay_rtt(tmp.path(), n, size, layout, tick)?;
        let raw = raw_rtt(tmp.path(), n, size, layout, tick)?;
        placements.push(Placement {
            placement: name.into(),
            spin_us: spin.as_micros() as u64,
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
          | placement | wait | path | p50 | p99 | p99.9 | max | relay/raw p50 |\n|---|---|---|---|---|---|---|---|\n";
    for p in &r.placements {
        let wait = match p.spin_us {
            0 => "park".to_string(),
            us => format!("spin {us} µs, park"),
        };
        for (path, l) in [("relay", &p.relay), ("raw", &p.raw)] {
            s += &format!(
                "| {} | {wait} | {path} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
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
    s += "\nGoal: relay/raw p50 ≤ 1.25. `park`: both processes block in recvmsg(2) at once. \
          `spin N µs, park`: each read first polls without blocking for up to N µs (relay: \
          `Connection::set_spin`; raw: the same loop), then blocks.\n";
    s
}
