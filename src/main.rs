//! The `relay` binary: parse, run, map errors to exit codes (DESIGN.md §10).

use std::process::ExitCode;

use clap::Parser;
use relay::cli::{self, Cli};

fn main() -> ExitCode {
    // No backtraces for users: one line naming the bug, then exit 101 as Rust does.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("relay: internal error: {info}; please report it");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors.
            let code = e.exit_code().clamp(0, 255) as u8;
            if code != 0 && std::env::args().any(|a| a == "--json") {
                cli::line(&cli::usage_document(&e.kind().to_string()).to_string());
            }
            return ExitCode::from(code);
        }
    };
    init_logging();
    let json = cli.global.json;
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("relay: {err:#}");
            // One document per run: a command that already printed its own keeps it.
            if json && !cli::wrote_stdout() {
                cli::line(&cli::error_document(&err).to_string());
            }
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

/// Logs go to stderr, filtered by `RELAY_LOG` (default: warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
