//! The `relay` command line: one file per subcommand, each with its `Args` and `run`.
//!
//! Every command takes `--json` and then prints exactly one JSON document on stdout
//! (`"ok": true` plus the command's fields, or `"ok": false` with an `error` object).
//! Human-readable errors always go to stderr. Exit codes (docs/cli.md, DESIGN.md §10):
//! 0 ok, 1 runtime failure, 2 usage, 3 rejected (unknown/ambiguous target or message,
//! not deliverable, too large), 4 timed out (`wait`).

mod ack;
mod bench;
mod demo;
mod discover;
mod doctor;
mod events;
mod gc;
mod guard;
mod hook;
mod inbox;
mod install;
mod listen;
mod mcp;
pub(crate) mod output;
mod register;
mod reserve;
mod roster;
mod search;
mod send;
mod shm_peer;
mod status;
mod store_cmd;
mod stream;
mod thread;
mod wait;
mod wake;
mod watch;
mod whoami;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::agents::identity::{self, Identity, Me};
use crate::config::{Config, Durability};
use crate::store::{self, Endpoint, Store};

pub use output::{error_document, exit_code, line, terminal_safe, usage_document, wrote_stdout};

pub use crate::errors::{EXIT_FAILURE, EXIT_OK, EXIT_REJECTED, EXIT_TIMEOUT, EXIT_USAGE};

const ABOUT: &str = "A local message bus for AI agent sessions and ordinary processes.";
const LONG_ABOUT: &str = "\
A local message bus for AI agent sessions (Claude Code, Codex, any MCP client) and \
ordinary processes. Every participant is an endpoint with a name and a durable mailbox; \
receipts tell the truth (queued → delivered → acked).

Quick start:
  relay register alice && relay register bob
  relay send bob --as alice 'build is green'
  relay inbox --as bob
  relay status <message-id>

Data lives in $RELAY_HOME (default ~/.local/state/relay). Use --json on any command for \
one machine-readable JSON document on stdout. Exit codes: 0 ok, 1 failure, 2 usage, \
3 rejected, 4 timed out.";

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(name = "relay", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Print exactly one JSON document on stdout (fields in docs/cli.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// Act as this endpoint (name, id or id prefix). Default: $RELAY_AS.
    #[arg(long = "as", global = true, value_name = "ME")]
    pub as_: Option<String>,
    /// Commit durability: 'normal' (default; survives a killed process) or 'full' (fsync
    /// every commit; also survives an OS crash or power loss). Default: $RELAY_DURABILITY.
    #[arg(long, global = true, value_name = "normal|full")]
    pub durability: Option<String>,
    /// Where endpoints and mail live: a NATS cluster `nats://h1:4222,nats://h2:4222` (one
    /// bus across machines; docs/nats.md), `sqlite:DIR` for another home's SQLite store, or
    /// nothing for SQLite in $RELAY_HOME. Default: $RELAY_STORE.
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update an endpoint (a name with a mailbox).
    Register(register::Args),
    /// Show which endpoint you act as, and why.
    Whoami(whoami::Args),
    /// List every endpoint with its pending mail.
    Roster(roster::Args),
    /// Send a message to an endpoint.
    Send(send::Args),
    /// Run a live endpoint: messages arrive over its socket as they are sent.
    Listen(listen::Args),
    /// Pipe a file to a live endpoint over shared memory (or the socket), sha256 on both ends.
    Stream(stream::Args),
    /// Read your mail (acked after it is printed, unless --peek or --no-ack).
    Inbox(inbox::Args),
    /// Acknowledge messages by id (or unique id prefix).
    Ack(ack::Args),
    /// Block until mail arrives, then print it.
    Wait(wait::Args),
    /// Show a message's receipt: queued, delivered or acked.
    Status(status::Args),
    /// Full-text search over your mail (sent and received), newest first.
    Search(search::Args),
    /// Show a conversation (a thread or a reply chain) in order, with receipt states.
    Thread(thread::Args),
    /// Print what happens on the bus, one line per event, with a resumable cursor.
    Events(events::Args),
    /// A live full-screen view of the bus: endpoints, messages, reservations.
    Watch(watch::Args),
    /// Reserve paths in this project (advisory): others see it before they collide.
    Reserve(reserve::ReserveArgs),
    /// Release reservations you hold in this project.
    Release(reserve::ReleaseArgs),
    /// Extend reservations you hold in this project.
    Renew(reserve::RenewArgs),
    /// List live reservations, or those matching paths (--conflicts).
    Reservations(reserve::ReservationsArgs),
    /// Delete old acked and expired messages.
    Gc(gc::Args),
    /// Which store is in use; copy endpoints and pending mail between stores.
    Store(store_cmd::Args),
    /// Add relay's MCP server and hooks to Claude Code or Codex.
    Install(install::Args),
    /// Remove exactly what `relay install` added.
    Uninstall(install::Args),
    /// The git pre-commit guard: `relay guard check` is what `relay install guard`'s hook runs.
    Guard(guard::Args),
    /// Check the setup: binary, store, permissions, agent integrations; one fix per problem.
    Doctor(doctor::Args),
    /// List recent Claude Code and Codex sessions on this machine (read-only).
    Discover(discover::Args),
    /// Resume a dormant agent session headlessly so it reads its mail.
    Wake(wake::Args),
    /// Run an agent hook (SessionStart, UserPromptSubmit, Stop); installed by `relay install`.
    Hook(hook::Args),
    /// Serve the relay tools over MCP on stdin/stdout (for Claude Code, Codex, ...).
    Mcp(mcp::Args),
    /// Run relay's main job on real processes and print what happened.
    Demo(demo::Args),
    /// Measure relay (results go to bench/results/).
    Bench(bench::Args),
    /// Internal: a demo child process.
    #[command(hide = true, name = "demo-child")]
    DemoChild(demo::ChildArgs),
    /// Internal: a supervised child endpoint (see transport::supervise).
    #[command(hide = true, name = "supervised-child")]
    SupervisedChild,
    /// Internal: a supervisor parent for tests (prints its child's pid, then waits).
    #[command(hide = true, name = "supervisor-parent")]
    SupervisorParent,
    /// Internal: the peer process of stream and frame tests, demo and bench.
    #[command(hide = true, name = "shm-peer")]
    ShmPeer(shm_peer::Args),
    /// Internal: a benchmark child process.
    #[command(hide = true, name = "bench-child")]
    BenchChild(bench::ChildArgs),
}

pub use crate::errors::UsageError;

/// Shared state of one invocation.
pub(crate) struct Ctx {
    pub json: bool,
    pub as_: Option<String>,
    pub config: Config,
}

impl Ctx {
    /// The store this invocation uses (`--store`, `RELAY_STORE`, else SQLite in the home).
    pub fn store(&self) -> anyhow::Result<Box<dyn Store>> {
        Ok(store::open(&self.config)?)
    }

    /// The explicit identity (`--as`, `RELAY_AS`), without resolving it.
    pub fn identity(&self) -> Option<Identity> {
        identity::explicit(self.as_.as_deref())
    }

    /// Resolves "me" with how it was decided.
    pub fn whoami(&self, store: &dyn Store) -> anyhow::Result<Me> {
        let explicit = self.identity();
        identity::resolve(store, explicit.as_ref()).map_err(|e| {
            // An explicit name that does not resolve, or no identity at all, is a usage
            // error (exit 2), not a rejected send.
            match (e.downcast_ref::<store::Error>(), &explicit) {
                (
                    Some(
                        store::Error::UnknownEndpoint { .. }
                        | store::Error::AmbiguousEndpoint { .. },
                    ),
                    Some(id),
                ) => UsageError(format!("{}: {e}", id.source.describe())).into(),
                _ if e.downcast_ref::<identity::NoIdentity>().is_some() => {
                    UsageError(identity::HOW_TO_SET.into()).into()
                }
                _ => e,
            }
        })
    }

    /// Resolves "me", or fails with a usage error saying how to set it.
    pub fn me(&self, store: &dyn Store) -> anyhow::Result<Endpoint> {
        Ok(self.whoami(store)?.endpoint)
    }
}

/// Parses a duration: bare seconds (`30`) or humantime (`30s`, `5m`, `1h 30m`, `250ms`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string());
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 30s, 5m or 1h"))
}

fn parse_bounded(s: &str, what: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "{what} must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// A lease: 1 s to 24 h.
pub(crate) fn parse_lease(s: &str) -> Result<Duration, String> {
    parse_bounded(
        s,
        "a lease",
        Duration::from_secs(1),
        Duration::from_secs(86_400),
    )
}

/// A time to live: 1 ms to 365 days.
pub(crate) fn parse_ttl(s: &str) -> Result<Duration, String> {
    parse_bounded(
        s,
        "a time to live",
        Duration::from_millis(1),
        Duration::from_secs(365 * 86_400),
    )
}

/// `relay hook AGENT EVENT` without the command-line parser: an agent runs a hook on
/// every prompt and after every tool call, so its start-up is the hook's whole cost
/// (parsing relay's full command tree took about a millisecond of it). `main` calls this
/// when the arguments are exactly those three words; anything else goes through clap.
pub fn run_hook(agent: &str, event: &str) -> u8 {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            // A hook never fails its agent, even over a bad RELAY_* setting.
            tracing::error!("relay hook: {e:#}");
            return EXIT_OK;
        }
    };
    let ctx = Ctx {
        json: false,
        as_: None,
        config,
    };
    let args = hook::Args {
        agent: agent.to_string(),
        event: event.to_string(),
    };
    hook::run(&ctx, args).unwrap_or(EXIT_OK)
}

/// Runs a parsed command line; returns the exit status for a command that finished.
///
/// # Errors
/// Any failure; [`exit_code`] maps it to a status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let config = (|| -> anyhow::Result<Config> {
        let mut config = Config::from_env()?;
        if let Some(s) = &cli.global.store {
            config.store = Some(s.clone());
        }
        if let Some(d) = &cli.global.durability {
            config.durability = d.parse::<Durability>()?;
        }
        Ok(config)
    })();
    let config = match (config, &cli.command) {
        (Ok(c), _) => c,
        // A hook never fails its agent, even over a bad RELAY_* setting.
        (Err(e), Command::Hook(_)) => {
            tracing::error!("relay hook: {e:#}");
            return Ok(EXIT_OK);
        }
        (Err(e), _) => return Err(e),
    };
    let ctx = Ctx {
        json: cli.global.json,
        as_: cli.global.as_,
        config,
    };
    match cli.command {
        Command::Register(a) => register::run(&ctx, a),
        Command::Whoami(a) => whoami::run(&ctx, a),
        Command::Roster(a) => roster::run(&ctx, a),
        Command::Send(a) => send::run(&ctx, a),
        Command::Inbox(a) => inbox::run(&ctx, a),
        Command::Listen(a) => listen::run(&ctx, a),
        Command::Stream(a) => stream::run(&ctx, a),
        Command::ShmPeer(a) => shm_peer::run(a),
        Command::Ack(a) => ack::run(&ctx, a),
        Command::Wait(a) => wait::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a),
        Command::Search(a) => search::run(&ctx, a),
        Command::Thread(a) => thread::run(&ctx, a),
        Command::Events(a) => events::run(&ctx, a),
        Command::Watch(a) => watch::run(&ctx, a),
        Command::Reserve(a) => reserve::run_reserve(&ctx, a),
        Command::Release(a) => reserve::run_release(&ctx, a),
        Command::Renew(a) => reserve::run_renew(&ctx, a),
        Command::Reservations(a) => reserve::run_reservations(&ctx, a),
        Command::Gc(a) => gc::run(&ctx, a),
        Command::Store(a) => store_cmd::run(&ctx, a),
        Command::Hook(a) => hook::run(&ctx, a),
        Command::Discover(a) => discover::run(&ctx, a),
        Command::Doctor(a) => doctor::run(&ctx, a),
        Command::Wake(a) => wake::run(&ctx, a),
        Command::Install(a) => install::run(&ctx, a, crate::agents::install::Action::Install),
        Command::Uninstall(a) => install::run(&ctx, a, crate::agents::install::Action::Uninstall),
        Command::Guard(a) => guard::run(&ctx, a),
        Command::Mcp(a) => mcp::run(&ctx, a),
        Command::Demo(a) => demo::run(&ctx, a),
        Command::Bench(a) => bench::run(&ctx, a),
        Command::DemoChild(a) => demo::child(&ctx, a),
        Command::BenchChild(a) => bench::child(&ctx, a),
        Command::SupervisedChild => {
            crate::transport::supervise::run_child(&crate::transport::Local::new("child"))?;
            Ok(EXIT_OK)
        }
        Command::SupervisorParent => {
            let exe = std::env::current_exe()?;
            let mut s = crate::transport::supervise::Supervised::spawn(
                &exe,
                &["supervised-child"],
                &crate::transport::Local::new("parent"),
            )?;
            s.echo()?;
            output::line(&s.pid().to_string());
            // Wait to be killed; the child notices through its end of the pair.
            let _ = s.wait_for_death(std::time::Instant::now());
            Ok(EXIT_OK)
        }
    }
}

pub(crate) use crate::errors::classify;

/// A message id or id prefix argument: not empty, at least 4 characters unless it is
/// a whole id (a usage error, exit 2, instead of a search that cannot match).
pub(crate) fn parse_message_id(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(
            "an empty id: give a message id or a unique prefix of at least 4 characters".into(),
        );
    }
    if t.len() < crate::store::MIN_PREFIX {
        return Err(format!(
            "'{t}' is too short: give a message id or a unique prefix of at least {} characters",
            crate::store::MIN_PREFIX
        ));
    }
    Ok(t.to_string())
}
