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
