//! Child relay processes of the demo and the benchmarks: each line a child prints on its
//! piped stdout is forwarded to a channel by a reader thread, so the parent waits for the
//! next line with a deadline (`recv_timeout`) instead of blocking on the pipe.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;

/// Takes `child`'s stdout and forwards every line that `parse` accepts; the channel ends
/// when the child closes its stdout.
///
/// # Errors
/// When the child's stdout was not piped (or was taken already).
pub fn stdout_lines<T: Send + 'static>(
    child: &mut Child,
    parse: fn(&str) -> Option<T>,
) -> anyhow::Result<mpsc::Receiver<T>> {
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("the child's stdout is not piped"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(v) = parse(&line)
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    Ok(rx)
}

/// For [`stdout_lines`]: every line as it is.
pub fn text(line: &str) -> Option<String> {
    Some(line.to_string())
}

/// For [`stdout_lines`]: lines that are JSON documents, parsed (others are skipped).
pub fn json(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}
