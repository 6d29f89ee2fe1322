//! `relay hook <agent> <event>`: run one agent hook (installed by `relay install`).

use std::io::Read;

use super::{Ctx, EXIT_OK};
use crate::agents::Agent;
use crate::agents::hook::{self, Event, MAX_INPUT};
use crate::store::Store;

/// Arguments of `relay hook`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Reads the hook JSON on stdin and prints the agent's hook output \
(or nothing). Exits 0: a failing hook logs to stderr and never stalls the agent. \
`idle` is the exception: it waits in the background (Claude Code asyncRewake) and exits 2 \
with the fenced mail on stderr when mail arrives for the idle session (RELAY_IDLE=never \
turns it off; it returns at once in non-interactive sessions such as `claude -p`).
Installed for you by `relay install claude` / `relay install codex`."
)]
pub struct Args {
    /// Which agent runs the hook: claude or codex.
    pub agent: String,
    /// Which event: session-start, user-prompt-submit, post-tool-use, stop or idle.
    pub event: String,
}

/// Parsed leniently: a hook must exit 0 even when its own command line is wrong (an
/// event a newer install added, say), because a non-zero exit can block the agent.
fn parse(a: &Args) -> Option<(Agent, Event)> {
    use clap::ValueEnum;
    Some((
        Agent::from_str(&a.agent, true).ok()?,
        Event::from_str(&a.event, true).ok()?,
    ))
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let Some((agent, event)) = parse(&a) else {
        tracing::error!(
            "relay hook: unknown agent or event {:?} {:?}; expected claude|codex and \
             session-start|user-prompt-submit|post-tool-use|stop|idle — run `relay install` \
             again",
            a.agent,
            a.event
        );
        return Ok(EXIT_OK);
    };
    let mut input = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut input);
    if let Err(e) = read {
        tracing::error!("relay hook: cannot read stdin: {e}");
        return Ok(EXIT_OK);
    }
    if input.len() > MAX_INPUT {
        // Read the rest too: an agent whose write to a closed pipe fails may report the
        // hook as broken.
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        tracing::error!("relay hook: payload over {MAX_INPUT} bytes; ignored");
        return Ok(EXIT_OK);
    }
    if event == Event::Idle {
        return Ok(idle(ctx, agent, &input));
    }
    let config = ctx.config.clone();
    let open = move || -> anyhow::Result<Box<dyn Store>> { Ok(crate::store::open(&config)?) };
    let mut out = std::io::stdout().lock();
    hook::run(open, agent, event, &input, &mut out);
    Ok(EXIT_OK)
}

/// The idle waiter: exit 2 with the fenced mail on stderr when mail was injected, else 0
/// (errors are logged and exit 0, like every hook).
fn idle(ctx: &Ctx, agent: Agent, input: &[u8]) -> u8 {
    use crate::agents::idle::{self, End};
    let work = || -> anyhow::Result<End> {
        let store = ctx.store()?;
        let mut err = std::io::stderr().lock();
        idle::wait(&store, &ctx.config.home, agent, input, &mut err)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(Ok(End::Injected(_))) => idle::EXIT_WAKE,
        Ok(Ok(end)) => {
            tracing::debug!("relay hook {} idle: {end:?}", agent.name());
            EXIT_OK
        }
        Ok(Err(e)) => {
            tracing::error!("relay hook {} idle: {e:#}", agent.name());
            EXIT_OK
        }
        Err(_) => {
            tracing::error!("relay hook {} idle: internal error", agent.name());
            EXIT_OK
        }
    }
}
