//! Claude Code specifics: where its settings, MCP config and transcripts live, and how to
//! resume a session headlessly.
//!
//! Sources: Claude Code docs — settings (`~/.claude/settings.json`, project
//! `.claude/settings.json`; `CLAUDE_CONFIG_DIR` replaces `~/.claude`), MCP scopes (user
//! servers in `~/.claude.json` under `mcpServers`, project servers in `.mcp.json`),
//! headless mode (`claude -p --resume <id> --output-format json`).

use std::path::{Path, PathBuf};

use super::install::Scope;

/// `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
pub fn config_dir(home: &Path) -> PathBuf {
    match std::env::var_os("CLAUDE_CONFIG_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => home.join(".claude"),
    }
}

/// The settings file that holds hooks for `scope`.
pub fn settings_path(scope: Scope, home: &Path, project: &Path) -> PathBuf {
    match scope {
        Scope::User => config_dir(home).join("settings.json"),
        Scope::Project => project.join(".claude").join("settings.json"),
    }
}

/// The file that holds MCP servers for `scope`: `~/.claude.json` (or
/// `$CLAUDE_CONFIG_DIR/.claude.json`) for the user, `.mcp.json` for a project.
pub fn mcp_path(scope: Scope, home: &Path, project: &Path) -> PathBuf {
    match scope {
        Scope::User => match std::env::var_os("CLAUDE_CONFIG_DIR").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d).join(".claude.json"),
            None => home.join(".claude.json"),
        },
        Scope::Project => project.join(".mcp.json"),
    }
}

/// Where transcripts live: `<config dir>/projects/<encoded cwd>/<session uuid>.jsonl`.
pub fn projects_dir(home: &Path) -> PathBuf {
    config_dir(home).join("projects")
}

/// The argv that resumes session `id` headlessly with `nudge` (run in the session's cwd).
pub fn resume_argv(id: &str, nudge: &str) -> Vec<String> {
    [
        "claude",
        "-p",
        "--resume",
        id,
        "--output-format",
        "json",
        "--",
        nudge,
    ]
    .map(String::from)
    .to_vec()
}
