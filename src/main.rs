//! The `relay` binary: parse, run, map errors to exit codes (DESIGN.md §10).

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use relay::cli::{self, Cli};

fn main() -> ExitCode {
    // Started with stdin, stdout or stderr closed (a careless launcher), the next file
    // relay opens would take that number, and text meant for stderr — mail from an idle
    // waiter, say — would land in it. /dev/null takes the place first.
    for fd in 0..=2 {
        // SAFETY: only asks whether the descriptor is open; nothing is taken over.
        let open = rustix::io::fcntl_getfd(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
        if open.is_err() {
            let _ = std::fs::OpenOptions::new()
                .read(fd == 0)
                .write(fd != 0)
                .open("/dev/null")
                .map(std::os::fd::IntoRawFd::into_raw_fd);
        }
    }
    // No backtraces for users: one line naming the bug, then exit 101 as Rust does.
    std::panic::set_hook(Box::new(|info| {
        // Not eprintln!: a closed stderr would make the hook panic too, and abort.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "relay: internal error: {info}; please report it"
        );
    }));
    // The hot path of agent hooks skips the parser (see `cli::run_hook`).
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(5).collect();
    if let [_, hook, agent, event] = args.as_slice()
        && hook == "hook"
        && let (Some(agent), Some(event)) = (agent.to_str(), event.to_str())
        && !agent.starts_with('-')
        && !event.starts_with('-')
    {
        init_logging();
        return ExitCode::from(cli::run_hook(agent, event));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors.
            let code = e.exit_code().clamp(0, 255) as u8;
            // args_os: a non-UTF-8 argument must not panic here.
            if code != 0 && std::env::args_os().any(|a| a == "--json") {
                // The whole reason ("invalid value '100000' for '--limit <LIMIT>': …"), as
                // the plain error says it, not just its kind.
                cli::line(&cli::usage_document(&e.render().to_string()).to_string());
            }
            return ExitCode::from(code);
        }
    };
    init_logging();
    let json = cli.global.json;
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // Errors echo queries, paths and peers' reasons: never raw controls.
            eprintln!("relay: {}", cli::terminal_safe(&format!("{err:#}")));
            // One document per run: a command that already printed its own keeps it.
            if json && !cli::wrote_stdout() {
                cli::line(&cli::error_document(&err).to_string());
            }
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

/// Logs go to stderr, filtered by `RELAY_LOG` (default: warnings), coloured only for a
/// person: see [`colour`].
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| QuietStderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

/// stderr for log lines, where a failed write is dropped: tracing-subscriber reports a
/// failed write with `eprintln!`, which panics on a closed stderr (a hook whose agent
/// stopped reading), and a log line is not worth a crash.
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Whether log lines get ANSI colour: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (no-color.org). A pipe or file — often a model's tool
/// output — gets plain text.
fn colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
