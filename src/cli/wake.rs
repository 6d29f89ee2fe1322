//! `relay wake <target>`: resume a dormant agent session so it reads its mail.

use std::time::Duration;

use super::{Ctx, EXIT_FAILURE, EXIT_OK, output, parse_duration};
use crate::agents::wake;
use crate::store::Store;

/// Arguments of `relay wake`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs, in the session's working directory and without a shell:
  Claude Code: claude -p --resume <id> --output-format json -- <message>
  Codex:       codex exec resume <id> --json -- <message>
A Codex session that its app-server daemon ($CODEX_HOME, else ~/.codex) still holds idle is
woken in place instead: a turn in that session carries its pending mail (or <message> when
none is pending). One that runs a turn is at work and refused. One wake per session at a
time (a second one is refused with 'wake in progress'). Exit 0 when the agent exited 0 or
the turn started; 1 when it failed or timed out."
)]
pub struct Args {
    /// The session: name, id or unique id prefix.
    pub target: String,
    /// What to tell the session (default: read your relay mail and answer).
    #[arg(long)]
    pub message: Option<String>,
    /// Print what would run, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// If another wake of this session runs, wait for it to end instead of refusing (used by
    /// `send --wake`, so mail sent during a wake still gets its own nudge).
    #[arg(long)]
    pub after_running: bool,
    /// Stop the agent after this long (e.g. 10m).
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> anyhow::Result<u8> {
    let store = ctx.store()?;
    let target = store.resolve(&a.target)?;
    let nudge = a.message.as_deref().unwrap_or(wake::DEFAULT_NUDGE);
    let report = wake::run(
        &ctx.config.home,
        &target,
        nudge,
        a.timeout,
        a.dry_run,
        a.after_running,
        Some(&store),
    )?;
    let ok = report.ok();
    output::emit_outcome(ctx.json, &report, ok, || {
        let argv = report.invocation.argv.join(" ");
        let cwd = report.invocation.cwd.display();
        if report.invocation.via == wake::Via::Inject {
            let name = target.display_name();
            return match (report.dry_run, &report.turn, &report.error) {
                (true, _, _) => {
                    format!("would start a turn in {name}, idle in its Codex app-server")
                }
                (false, Some(t), _) if report.injected.is_empty() => format!(
                    "woke {name} in place: turn {} in its Codex app-server (the nudge; no mail was pending)",
                    t.turn_id
                ),
                (false, Some(t), _) => format!(
                    "woke {name} in place: turn {} in its Codex app-server carries {} message(s)",
                    t.turn_id,
                    report.injected.len()
                ),
                (false, None, e) => format!(
                    "could not wake {name} in place: {}",
                    e.as_deref().unwrap_or("unknown error")
                ),
            };
        }
        if report.dry_run {
            return format!("would run in {cwd}:\n  {argv}");
        }
        let how = match (report.timed_out, report.exit_code) {
            (true, _) => format!("killed after {}", humantime::format_duration(a.timeout)),
            (false, Some(c)) => format!("exited {c}"),
            (false, None) => "was killed by a signal".into(),
        };
        format!(
            "woke {} in {cwd}: {} {how} after {} ms",
            target.display_name(),
            report.invocation.agent.display(),
            report.duration_ms
        )
    });
    Ok(if ok { EXIT_OK } else { EXIT_FAILURE })
}
