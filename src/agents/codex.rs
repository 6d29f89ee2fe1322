//! Codex specifics: where its config, hooks and session files live, and how to resume a
//! session headlessly.
//!
//! Sources: openai/codex `docs/config.md` (MCP servers under `[mcp_servers.<name>]` in
//! `$CODEX_HOME/config.toml`, `CODEX_HOME` default `~/.codex`), Codex hooks docs
//! (developers.openai.com/codex/hooks: `hooks.json` beside `config.toml`, the same
//! shape as Claude Code's; new hooks run only after the user trusts them in `/hooks`),
//! `codex-rs/protocol` (rollout files start with a `session_meta` line), `docs/exec.md`
//! (`codex exec resume <id> --json`).

use std::path::{Path, PathBuf};

use super::install::Scope;

/// `$CODEX_HOME`, else `~/.codex`.
pub fn home_dir(home: &Path) -> PathBuf {
    match std::env::var_os("CODEX_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => home.join(".codex"),
    }
}

fn base(scope: Scope, home: &Path, project: &Path) -> PathBuf {
    match scope {
        Scope::User => home_dir(home),
        Scope::Project => project.join(".codex"),
    }
}

/// `config.toml` for `scope` (holds `[mcp_servers.relay]`).
pub fn config_path(scope: Scope, home: &Path, project: &Path) -> PathBuf {
    base(scope, home, project).join("config.toml")
}

/// `hooks.json` for `scope`.
pub fn hooks_path(scope: Scope, home: &Path, project: &Path) -> PathBuf {
    base(scope, home, project).join("hooks.json")
}

/// Where session files live: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`.
pub fn sessions_dir(home: &Path) -> PathBuf {
    home_dir(home).join("sessions")
}

/// The argv that resumes session `id` headlessly with `nudge` (run in the session's cwd).
pub fn resume_argv(id: &str, nudge: &str) -> Vec<String> {
    ["codex", "exec", "resume", id, "--json", "--", nudge]
        .map(String::from)
        .to_vec()
}
