//! `relay register <name>`: create or update an endpoint.

use serde_json::Value;

use super::{Ctx, EXIT_OK, UsageError, output};
use crate::store::{Kind, Registration, Store};

/// Arguments of `relay register`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Names: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit, \
not UUID-shaped. Registering a name another endpoint holds moves it (and says so)."
)]
pub struct Args {
    /// The name to hold.
    pub name: String,
    /// What it is: claude-code, codex, pi, process (default for new endpoints), human.
    #[arg(long)]
    pub kind: Option<Kind>,
    /// Endpoint id to create or update (default: the endpoint holding NAME, else a new UUIDv7).
    #[arg(long)]
    pub id: Option<String>,
    /// Working directory to record (default for new endpoints: the current directory).
    #[arg(long)]
    pub cwd: Option<String>,
    /// A live-only endpoint that never reads its mailbox; mail to it is rejected as
    /// not-deliverable instead of piling up.
    #[arg(long)]
    pub no_mailbox: bool,
    /// It never answers requests (a sink, a logger): requests to it are rejected as
    /// bad-target instead of leaving the sender waiting. Sets meta replies=false.
    #[arg(long)]
    pub no_replies: bool,
    /// Loop guard: most agent-to-agent messages this agent session may send on a thread
    /// without a human message on it (default 12; 0 = off). Sets meta loop_thread.
    #[arg(long, value_name = "N")]
    pub loop_thread: Option<u64>,
    /// Loop guard: most messages this agent session may send per minute (default 30;
    /// 0 = off). Sets meta loop_per_minute.
    #[arg(long, value_name = "N")]
    pub loop_rate: Option<u64>,
    /// Metadata to merge, KEY=VALUE (repeatable). VALUE is parsed as JSON when it can be.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let mut meta = serde_json::Map::new();
    for kv in &a.meta {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| UsageError(format!("--meta {kv:?}: write KEY=VALUE")))?;
        if k.starts_with("relay_") {
            return Err(UsageError(format!(
                "--meta {k}: keys starting with relay_ are relay's own bookkeeping (idle \
                 waiters, injected mail); use another key"
            ))
            .into());
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        meta.insert(k.to_string(), value);
    }
    if a.no_replies {
        meta.insert(
            crate::route::dispatch::REPLIES_META.into(),
            Value::Bool(false),
        );
    }
    if let Some(n) = a.loop_thread {
        meta.insert(crate::route::dispatch::LOOP_THREAD_META.into(), n.into());
    }
    if let Some(n) = a.loop_rate {
        meta.insert(crate::route::dispatch::LOOP_RATE_META.into(), n.into());
    }
    let store = ctx.store()?;
    let reg = store.register(&Registration {
        id: a.id,
        name: Some(a.name),
        kind: a.kind,
        cwd: a.cwd,
        // Field-preserving: the current directory only fills in a new endpoint.
        default_cwd: std::env::current_dir()
            .ok()
            .map(|d| d.to_string_lossy().into_owned()),
        pid: None,
        pid_start: None,
        host: None,
        mailbox: a.no_mailbox.then_some(false),
        meta,
    })?;
    output::emit(ctx.json, &reg, || {
        let e = &reg.endpoint;
        let mut s = format!(
            "{} {} (id {}, kind {})",
            if reg.created { "registered" } else { "updated" },
            e.display_name(),
            e.id,
            e.kind
        );
        if let Some(old) = &reg.name_taken_from {
            s.push_str(&format!(
                "\nnote: the name '{}' moved here from endpoint {old}",
                e.display_name()
            ));
        }
        s
    });
    Ok(EXIT_OK)
}
