//! Where the real agent CLIs are, for every test that drives them (tests/real_agents.rs,
//! tests/codex_app.rs): one rule, so CI (which installs them and sets
//! `RELAY_REQUIRE_AGENTS=1`) never skips any of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Where `bin` (`claude` or `codex`) is: `RELAY_<BIN>_BIN`, else the CI cache
/// (`${RELAY_AGENT_CACHE:-$HOME/.cache/relay-agents}/node_modules/.bin/`), else `PATH`.
pub fn locate(bin: &str) -> Result<PathBuf, String> {
    let var = format!("RELAY_{}_BIN", bin.to_ascii_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{var}={} is not a file", p.display()))
        };
    }
    let cache = std::env::var_os("RELAY_AGENT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/relay-agents")));
    if let Some(c) = cache {
        let p = c.join("node_modules/.bin").join(bin);
        if p.is_file() {
            return Ok(p);
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(bin);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "no {bin} client ({var}, the agent cache and PATH have none; .ci/run installs it)"
    ))
}

/// The client, or `None` after a visible `skipped:` line. With `RELAY_REQUIRE_AGENTS=1`
/// (CI) a missing client fails the test instead.
pub fn client(bin: &str) -> Option<PathBuf> {
    match locate(bin) {
        Ok(p) => Some(p),
        Err(why) => {
            if std::env::var("RELAY_REQUIRE_AGENTS").as_deref() == Ok("1") {
                panic!("RELAY_REQUIRE_AGENTS=1 and {why}");
            }
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// What a Codex app-server daemon of one `CODEX_HOME` leaves to clean up, read before it is
/// stopped: its recorded processes and the socket links 0.171 makes in
/// `/tmp/codex-daemon-<uid>/` (and leaves behind). [`DaemonLeftovers::clean`] kills and
/// removes them after `codex app-server daemon stop` ran.
pub struct DaemonLeftovers {
    codex_home: PathBuf,
    recorded: Vec<(u32, u64)>,
    linked: Vec<PathBuf>,
}

impl DaemonLeftovers {
    /// Notes the daemon of `codex_home` as it is now.
    pub fn of(codex_home: &Path) -> DaemonLeftovers {
        let linked = [
            relay::agents::codex_app::control_socket(codex_home),
            codex_home
                .join("app-server-daemon")
                .join("daemon-updater.sock"),
        ]
        .iter()
        .filter_map(|p| std::fs::read_link(p).ok())
        .collect();
        DaemonLeftovers {
            codex_home: codex_home.to_path_buf(),
            recorded: recorded(codex_home),
            linked,
        }
    }

    /// Kills the daemon and its pid-update-loop (which 0.171 leaves running) by recorded
    /// pid and start time — as noted and as recorded now — and removes the socket links.
    pub fn clean(self) {
        for (pid, start) in self.recorded.into_iter().chain(recorded(&self.codex_home)) {
            kill_exact(pid, start);
        }
        let uid = rustix::process::geteuid().as_raw();
        for t in self.linked.into_iter().filter(|t| {
            t.parent() == Some(Path::new(&format!("/tmp/codex-daemon-{uid}")))
                && t.file_name().is_some_and(|n| {
                    n.len() == 64 && n.to_string_lossy().bytes().all(|b| b.is_ascii_hexdigit())
                })
        }) {
            let _ = std::fs::remove_file(&t);
            let _ = std::fs::remove_file(t.with_extension("lock"));
        }
    }
}

/// The (pid, start ticks) the daemon of `codex_home` recorded for itself and its updater.
pub fn recorded(codex_home: &Path) -> Vec<(u32, u64)> {
    ["daemon.pid", "daemon-updater.pid"]
        .iter()
        .filter_map(|f| {
            let p = codex_home.join("app-server-daemon").join(f);
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
            Some((
                u32::try_from(v["pid"].as_u64()?).ok()?,
                v["processIdentity"]["startTicks"].as_u64()?,
            ))
        })
        .collect()
}

/// Sends SIGKILL to `pid` if it still is the process that started at `start` (clock ticks
/// since boot), so a reused pid is never hit.
pub fn kill_exact(pid: u32, start: u64) {
    if relay::agents::procfs::stat(pid).is_some_and(|s| s.process.start == start)
        && let Some(p) = rustix::process::Pid::from_raw(pid as i32)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}
