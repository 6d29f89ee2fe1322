//! `relay bench mailbox`: measure the durable mailbox and write bench/results/mailbox.md.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{Ctx, EXIT_OK, output};
use crate::bench::{self, mailbox};

/// Arguments of `relay bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to measure.
    #[command(subcommand)]
    pub what: What,
}

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Durable send latency, batched send and fetch+ack throughput, cross-process wake-up,
    /// each with a baseline from the same run. With the global `--store nats://…` (or
    /// `RELAY_STORE`), the store-level phases run against that NATS store (the
    /// SQLite-only `synchronous=FULL` and raw-insert rows are skipped).
    Mailbox(MailboxArgs),
    /// Round trip over relay's framed protocol next to a raw Unix socket, same placement.
    Rtt(RttArgs),
    /// One-way messages per second over the framed protocol and a raw socket, 64 B and
    /// 4 KiB bodies, with and without batching.
    Throughput(ThroughputArgs),
    /// Shared-memory stream throughput (4 KiB, 64 KiB, 1 MiB writes) against memcpy and a
    /// Unix socket, and 64-byte round trips with spin-then-park and park only.
    Stream(StreamArgs),
    /// Cost of one agent hook process (cold start included), with /bin/true and
    /// `relay --version` as baselines.
    Hook(HookArgs),
    /// Mail to an idle interactive Claude Code session (real client under tmux, stand-in
    /// model): send → the woken request, next to the bare doorbell.
    Inject(InjectArgs),
    /// Full-text search (`relay search`) at 10k and 100k stored messages: p50/p95/p99 per
    /// query kind, own mail and `--all`, next to a raw FTS5 table with the same bodies.
    Search(SearchArgs),
    /// The NATS JetStream store on a local 3-node cluster (or the global `--store
    /// nats://…`): send latency next to a raw JetStream publish, fetch+ack throughput,
    /// wake-up across two "machines", and whether the goals are met.
    #[cfg(feature = "nats")]
    Nats(NatsArgs),
}

/// Arguments of `relay bench nats`. The cluster: the global `--store nats://…` (or
/// `RELAY_STORE`) when it names one, else a local 3-node cluster the bench starts.
#[cfg(feature = "nats")]
#[derive(Debug, clap::Args)]
pub struct NatsArgs {
    /// Samples per send-latency row (route::send, look and wake-up use N/4, at least 100)
    /// [range: 100-100000]
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub n: u32,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench/results/nats.md")]
    pub out: PathBuf,
}

/// Arguments of `relay bench search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// Searches per row [range: 10-100000]
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub n: u32,
    /// Store sizes to measure, messages, comma-separated (each 1000 to 1000000).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000", value_parser = parse_size)]
    pub sizes: Vec<usize>,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench/results/search.md")]
    pub out: PathBuf,
}

fn parse_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1000..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a store size: give 1000 to 1000000 messages"
        )),
    }
}

/// Arguments of `relay bench inject`.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Rounds [range: 1-1000]
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub n: u32,
    /// The Claude Code CLI (default: $RELAY_CLAUDE_BIN, the agent cache, PATH).
    #[arg(long)]
    pub claude: Option<PathBuf>,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench/results/inject.md")]
    pub out: PathBuf,
}

/// Arguments of `relay bench rtt`.
#[derive(Debug, clap::Args)]
pub struct RttArgs {
    /// Round trips per row [range: 100-10000000]
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(100..=10_000_000))]
    pub n: u32,
    /// Payload bytes per message [range: 1-1048576]
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub size: u32,
    /// Also run the different-CPU placement spinning this many µs before each blocking
    /// read (spin-then-park), next to blocking at once. 0 skips that row [range: 0-10000]
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub spin_us: u64,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench/results/rtt.md")]
    pub out: PathBuf,
}

/// Arguments of `relay bench throughput`.
#[derive(Debug, clap::Args)]
pub struct ThroughputArgs {
    /// Messages per row [range: 1000-100000000]
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1000..=100_000_000))]
    pub n: u32,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench/results/throughput.md")]
    pub out: PathBuf,
}

/// Arguments of `relay bench stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// MiB moved per throughput row [range: 1-65536]
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub mib: u64,
    /// Round trips per latency row [range: 100-10000000]
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(100..=10_000_000))]
    pub n: u32,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench/results/stream.md")]
    pub out: PathBuf,
}

/// Arguments of `relay bench hook`.
#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// Samples per row [range: 10-100000]
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub n: u32,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench/results/hook.md")]
    pub out: PathBuf,
}

/// Arguments of `relay bench mailbox`.
#[derive(Debug, clap::Args)]
pub struct MailboxArgs {
    /// Sends per latency phase (wake-up uses N/4, at least 100) [range: 100-1000000]
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub n: u32,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench/results/mailbox.md")]
    pub out: PathBuf,
}

/// Role of a benchmark child process.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    /// Blocks in `wait` and reports wake-up latency per message.
    Waiter,
    /// Per stdin line, enqueues one stamped message to `--to` and prints the µs it took.
    Sender,
    /// Echoes pings over a raw Unix socket.
    Echo,
    /// Echoes frames over relay's protocol.
    FrameEcho,
    /// Reads frames and answers once (throughput).
    FrameSink,
    /// Reads raw records and answers once (throughput baseline).
    RawSink,
}

/// Arguments of the hidden `relay bench-child`.
#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    /// What this process does.
    #[arg(value_enum)]
    pub role: Role,
    /// How many messages or pings.
    #[arg(long)]
    pub count: usize,
    /// Socket path (echo).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Bytes per raw echo (default 8).
    #[arg(long, default_value_t = 8)]
    pub size: usize,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Spin this many µs before each blocking read (echo roles).
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Recipient name (sender).
    #[arg(long)]
    pub to: Option<String>,
}

struct Bar(ProgressBar);

impl mailbox::Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(name.to_string());
    }
    fn step(&self, n: u64) {
        self.0.inc(n);
    }
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let m = match a.what {
        What::Mailbox(m) => m,
        What::Hook(h) => return run_hook(ctx, h),
        What::Inject(i) => return run_inject(ctx, i),
        What::Rtt(r) => return run_rtt(ctx, r),
        What::Throughput(t) => return run_throughput(ctx, t),
        What::Stream(t) => return run_stream(ctx, t),
        #[cfg(feature = "nats")]
        What::Nats(t) => return run_nats(ctx, t),
        What::Search(s) => return run_search(ctx, s),
    };
    let bar = if ctx.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{msg:<34} {bar:30} {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let report = match nats_location(ctx) {
        Some(location) => mailbox::run_on(location, m.n as usize, &Bar(bar.clone()))?,
        None => mailbox::run(m.n as usize, &Bar(bar.clone()))?,
    };
    bar.finish_and_clear();
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let md = mailbox::markdown(&report, &when);
    bench::write_report(&m.out, &md)?;
    output::emit(ctx.json, &report, || {
        format!("{md}\nwritten to {}", m.out.display())
    });
    Ok(EXIT_OK)
}

/// Runs one benchmark behind a progress bar of `steps` ticks, writes its Markdown report
/// to `out`, and prints it (or the JSON report).
fn measure<R: serde::Serialize>(
    ctx: &Ctx,
    out: &std::path::Path,
    steps: u64,
    label: &str,
    run: impl FnOnce(&dyn Fn()) -> anyhow::Result<R>,
    markdown: impl FnOnce(&R, &str) -> String,
) -> anyhow::Result<u8> {
    let bar = if ctx.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps).with_style(
            ProgressStyle::with_template(&format!("{label} {{bar:30}} {{pos}}/{{len}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let report = run(&|| bar.inc(1))?;
    bar.finish_and_clear();
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let md = markdown(&report, &when);
    bench::write_report(out, &md)?;
    output::emit(ctx.json, &report, || {
        format!("{md}\nwritten to {}", out.display())
    });
    Ok(EXIT_OK)
}

fn run_stream(ctx: &Ctx, a: StreamArgs) -> anyhow::Result<u8> {
    use crate::bench::stream;
    let steps = 9 + 4 * u64::from(a.n).div_ceil(1000);
    measure(
        ctx,
        &a.out,
        steps,
        "stream rows",
        |tick| stream::run(a.mib << 20, a.n as usize, tick),
        stream::markdown,
    )
}

fn run_throughput(ctx: &Ctx, a: ThroughputArgs) -> anyhow::Result<u8> {
    use crate::bench::throughput;
    measure(
        ctx,
        &a.out,
        8,
        "throughput rows",
        |tick| throughput::run(a.n as usize, tick),
        throughput::markdown,
    )
}

fn run_rtt(ctx: &Ctx, a: RttArgs) -> anyhow::Result<u8> {
    use crate::bench::rtt;
    let rows = if a.spin_us > 0 { 6 } else { 4 };
    let steps = u64::from(a.n).div_ceil(1000) * rows;
    measure(
        ctx,
        &a.out,
        steps,
        "round trips (x1000)",
        |tick| {
            let spin = Duration::from_micros(a.spin_us);
            rtt::run(a.n as usize, a.size as usize, spin, tick)
        },
        rtt::markdown,
    )
}

fn run_hook(ctx: &Ctx, a: HookArgs) -> anyhow::Result<u8> {
    use crate::bench::hook;
    measure(
        ctx,
        &a.out,
        u64::from(a.n),
        "hook samples",
        |tick| hook::run(a.n as usize, tick),
        hook::markdown,
    )
}

fn run_inject(ctx: &Ctx, a: InjectArgs) -> anyhow::Result<u8> {
    use crate::bench::inject;
    let claude = inject::locate_claude(a.claude.as_deref())?;
    measure(
        ctx,
        &a.out,
        u64::from(a.n),
        "inject rounds",
        |tick| inject::run(a.n as usize, &claude, tick),
        inject::markdown,
    )
}

/// The `nats://` or `tls://` location of `--store` / `RELAY_STORE`, if it names one.
fn nats_location(ctx: &Ctx) -> Option<&str> {
    ctx.config
        .store
        .as_deref()
        .map(str::trim)
        .filter(|s| s.starts_with("nats://") || s.starts_with("tls://"))
}

fn run_search(ctx: &Ctx, a: SearchArgs) -> anyhow::Result<u8> {
    use crate::bench::search;
    measure(
        ctx,
        &a.out,
        search::steps(&a.sizes),
        "search",
        |tick| search::run(&a.sizes, a.n as usize, tick),
        search::markdown,
    )
}

#[cfg(feature = "nats")]
fn run_nats(ctx: &Ctx, a: NatsArgs) -> anyhow::Result<u8> {
    use crate::bench::nats;
    let given = nats_location(ctx);
    measure(
        ctx,
        &a.out,
        nats::steps(a.n as usize),
        "nats phases",
        |tick| nats::run(a.n as usize, given, tick),
        nats::markdown,
    )
}

pub(crate) fn child(ctx: &Ctx, a: ChildArgs) -> anyhow::Result<u8> {
    if let Some(c) = a.cpu {
        bench::pin_to_cpu(c);
    }
    match a.role {
        Role::Waiter => {
            let store = ctx.store()?;
            let me = ctx.me(&store)?;
            mailbox::child_waiter(&store, &me, a.count)?;
        }
        #[cfg(feature = "nats")]
        Role::Sender => {
            let to =
                a.to.ok_or_else(|| super::UsageError("sender needs --to".into()))?;
            let store = ctx.store()?;
            let me = ctx.me(&store)?;
            crate::bench::nats::child_sender(&store, &me, &to, a.count)?;
        }
        #[cfg(not(feature = "nats"))]
        Role::Sender => {
            return Err(super::UsageError("sender needs the nats feature".into()).into());
        }
        Role::Echo => {
            let socket = a
                .socket
                .ok_or_else(|| super::UsageError("echo needs --socket".into()))?;
            crate::bench::rtt::child_raw_echo(
                &socket,
                a.count,
                a.size,
                a.cpu,
                Duration::from_micros(a.spin_us),
            )?;
        }
        Role::FrameSink => {
            let socket = a
                .socket
                .ok_or_else(|| super::UsageError("frame-sink needs --socket".into()))?;
            crate::bench::throughput::child_frame_sink(&socket, a.count)?;
        }
        Role::RawSink => {
            let socket = a
                .socket
                .ok_or_else(|| super::UsageError("raw-sink needs --socket".into()))?;
            crate::bench::throughput::child_raw_sink(&socket, a.count, a.size)?;
        }
        Role::FrameEcho => {
            let socket = a
                .socket
                .ok_or_else(|| super::UsageError("frame-echo needs --socket".into()))?;
            crate::bench::rtt::child_frame_echo(
                &socket,
                a.count,
                a.cpu,
                Duration::from_micros(a.spin_us),
            )?;
        }
    }
    Ok(EXIT_OK)
}
