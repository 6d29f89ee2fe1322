//! Measurements behind `relay bench`. Each benchmark runs its baseline in the same run
//! (raw SQLite, a raw Unix socket) so figures can be compared on the same machine, and
//! writes a Markdown report with the machine it ran on to `bench/results/`.

pub mod hook;
pub mod inject;
pub mod mailbox;
#[cfg(feature = "nats")]
pub mod nats;
pub mod rtt;
pub mod search;
pub mod stream;
pub mod throughput;

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The machine a benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory in GiB, from /proc/meminfo.
    pub memory_gib: f64,
}

impl Machine {
    /// Reads the machine description from /proc (fields are "unknown" when unreadable).
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            memory_gib,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Samples taken.
    pub samples: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
}

/// A histogram of durations recorded in nanoseconds (1 ns .. 60 s, 3 significant digits).
pub struct Recorder(Histogram<u64>);

impl Default for Recorder {
    fn default() -> Self {
        Recorder(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"))
    }
}

impl Recorder {
    /// Records one sample (clamped into range).
    pub fn record(&mut self, d: Duration) {
        let ns = (d.as_nanos() as u64).clamp(1, 60_000_000_000);
        self.0.record(ns).expect("clamped into bounds");
    }

    /// Records a sample given in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.record(Duration::from_micros(us));
    }

    /// The percentiles.
    pub fn latency(&self) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            samples: self.0.len(),
            p50_us: us(self.0.value_at_quantile(0.5)),
            p99_us: us(self.0.value_at_quantile(0.99)),
            p999_us: us(self.0.value_at_quantile(0.999)),
            max_us: us(self.0.max()),
        }
    }
}

/// Times each of `n` round trips (`once` gets the index), calling `tick` every 1000 for
/// the progress bar.
///
/// # Errors
/// The first error `once` returns.
pub fn time_each(
    n: usize,
    tick: &dyn Fn(),
    mut once: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Latency> {
    let mut rec = Recorder::default();
    for i in 0..n {
        let t = std::time::Instant::now();
        once(i)?;
        rec.record(t.elapsed());
        if i % 1000 == 0 {
            tick();
        }
    }
    Ok(rec.latency())
}

/// Writes `text` to `path`, creating parent directories.
///
/// # Errors
/// I/O errors.
pub fn write_report(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// Pins the calling thread to one CPU (best effort; returns whether it worked).
pub fn pin_to_cpu(cpu: usize) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).is_ok()
}

/// Starts `relay bench-child <args…>` with stdin and stdout closed (stderr inherited).
///
/// # Errors
/// When the binary cannot be found or started.
pub fn quiet_child(args: &[String]) -> anyhow::Result<std::process::Child> {
    use anyhow::Context;
    std::process::Command::new(std::env::current_exe()?)
        .arg("bench-child")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("cannot start the benchmark child")
}

/// One Markdown table row `| name | samples | p50 | p99 | max |`, in milliseconds.
pub fn ms_row(name: &str, l: &Latency) -> String {
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} |\n",
        l.samples,
        l.p50_us / 1000.0,
        l.p99_us / 1000.0,
        l.max_us / 1000.0
    )
}

/// The top of every report: title, when and how it was measured, and the machine.
pub fn report_header(title: &str, command: &str, m: &Machine, when: &str) -> String {
    format!(
        "# {title}\n\nMeasured {when} with `{command}` ({} build).\n\n\
         Machine: {} cores, {}, {} GiB RAM, Linux {}.\n\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        m.cores,
        m.cpu,
        m.memory_gib,
        m.kernel
    )
}

/// How long a benchmark waits on a child before failing: 60 s.
pub const CHILD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

fn child_args(role: &str, socket: &Path, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        role.to_string(),
        "--socket".into(),
        socket.to_string_lossy().into_owned(),
    ];
    args.extend_from_slice(extra);
    args
}

/// Binds `dir/<name>`, starts `relay bench-child <role> --socket <path> <extra…>`, accepts
/// its connection and answers its handshake.
///
/// # Errors
/// Bind, spawn, accept or handshake failures.
pub fn framed_child(
    dir: &Path,
    name: &str,
    role: &str,
    extra: &[String],
) -> anyhow::Result<(std::process::Child, crate::transport::Connection)> {
    let path = dir.join(name);
    let listener = crate::transport::Listener::bind(&path)?;
    let child = quiet_child(&child_args(role, &path, extra))?;
    let mut conn = listener.accept()?;
    conn.set_read_timeout(Some(CHILD_DEADLINE))?;
    crate::transport::handshake::accept(&mut conn, &crate::transport::Local::new("bench-parent"))?;
    Ok((child, conn))
}

/// The same over a plain Unix socket: the baseline's connection.
///
/// # Errors
/// Bind, spawn or accept failures.
pub fn raw_child(
    dir: &Path,
    name: &str,
    role: &str,
    extra: &[String],
) -> anyhow::Result<(std::process::Child, std::os::unix::net::UnixStream)> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let child = quiet_child(&child_args(role, &path, extra))?;
    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(CHILD_DEADLINE))?;
    Ok((child, stream))
}
