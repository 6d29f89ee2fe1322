//! OpenCode specifics (`opencode-ai`): where its config, plugins and sessions live, relay's
//! plugin file, and how to resume a session headlessly.
//!
//! Sources, checked against OpenCode 1.18.33: its config loader (global config in
//! `$XDG_CONFIG_HOME/opencode/` — `opencode.json` among others, all merged — and a
//! project's `opencode.json`; plugins from `plugin/*.ts` of every config directory, the
//! global one and a project's `.opencode/`), MCP entries (`"mcp": {"<name>": {"type":
//! "local", "command": [...], "environment": {...}, "timeout": ms}}`, where `timeout` also
//! bounds each tool call, 60 s by default), sessions in the SQLite database
//! `$XDG_DATA_HOME/opencode/opencode.db` (table `session`: `id`, `directory`,
//! `time_updated` in ms; `OPENCODE_DB` moves it), and `opencode run --session <id> <text>`.
//!
//! relay's plugin (`agents/opencode/relay.ts` in the repository, embedded here) holds no
//! logic: it runs `relay hook opencode <event>` and names the calling session in each
//! relay tool call. Install fills in the relay binary's path, as for pi's extension.

use std::path::{Path, PathBuf};

use super::install::Scope;

/// The plugin's source, with the placeholder `"@RELAY@"` for the binary's path.
pub const PLUGIN: &str = include_str!("../../agents/opencode/relay.ts");

/// Per-call timeout of relay's MCP entry in ms: longer than the `wait` tool's longest
/// wait (300 s), which OpenCode would otherwise cut at its default 60 s.
pub const MCP_TIMEOUT_MS: u64 = 330_000;

/// `$XDG_CONFIG_HOME/opencode`, else `~/.config/opencode`.
pub fn config_dir(home: &Path) -> PathBuf {
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("opencode"),
        None => home.join(".config").join("opencode"),
    }
}

/// The config file relay edits for `scope`: `<config dir>/opencode.json` for the user,
/// `<project>/opencode.json` for a project. OpenCode merges it with any `opencode.jsonc`
/// beside it, so relay never needs to edit a file with comments.
pub fn config_path(scope: Scope, home: &Path, project: &Path) -> PathBuf {
    match scope {
        Scope::User => config_dir(home).join("opencode.json"),
        Scope::Project => project.join("opencode.json"),
    }
}

/// relay's plugin file for `scope`: `<config dir>/plugin/relay.ts`, or
/// `<project>/.opencode/plugin/relay.ts`.
pub fn plugin_path(scope: Scope, home: &Path, project: &Path) -> PathBuf {
    match scope {
        Scope::User => config_dir(home).join("plugin").join("relay.ts"),
        Scope::Project => project.join(".opencode").join("plugin").join("relay.ts"),
    }
}

/// The session database: `$OPENCODE_DB`, else `$XDG_DATA_HOME/opencode/opencode.db`
/// (`~/.local/share/opencode/opencode.db`).
pub fn database(home: &Path) -> PathBuf {
    if let Some(db) = std::env::var_os("OPENCODE_DB").filter(|v| !v.is_empty()) {
        return PathBuf::from(db);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map_or_else(|| home.join(".local").join("share"), PathBuf::from);
    data.join("opencode").join("opencode.db")
}

/// The plugin as install writes it, running `exe`.
pub fn render(exe: &Path) -> String {
    super::pi::fill(PLUGIN, exe)
}

/// The relay binary an installed plugin runs, when `text` is a plugin some relay wrote
/// (see [`super::pi::filled_with`]); `None` for any other file.
pub fn relay_of(text: &str) -> Option<PathBuf> {
    super::pi::filled_with(PLUGIN, text)
}

/// The argv that resumes session `id` headlessly with `nudge`, run in the session's cwd.
/// `opencode run` joins its message arguments, quoting one that holds a space, so the
/// nudge goes as one argument after `--`.
pub fn resume_argv(id: &str, nudge: &str) -> Vec<String> {
    ["opencode", "run", "--session", id, "--", nudge]
        .map(String::from)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_plugin_is_recognised_by_its_header() {
        let text = render(Path::new("/opt/relay/bin/relay"));
        assert_eq!(relay_of(&text), Some(PathBuf::from("/opt/relay/bin/relay")));
        assert_eq!(relay_of(&format!("// mine\n{text}")), None);
        assert_eq!(relay_of(PLUGIN), None);
        assert_eq!(
            super::super::pi::relay_of(&text),
            None,
            "pi's header is not OpenCode's"
        );
    }
}
