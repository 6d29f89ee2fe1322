//! pi specifics (`@mariozechner/pi-coding-agent`): where its extensions and sessions live,
//! relay's extension file, and how to resume a session headlessly.
//!
//! Sources, checked against pi 0.73.1: `dist/config.js` (`PI_CODING_AGENT_DIR` replaces
//! `~/.pi/agent`), `dist/core/package-manager.js` (extensions auto-discovered from
//! `<agent dir>/extensions/*.ts` and `<cwd>/.pi/extensions/*.ts`),
//! `dist/core/session-manager.js` (sessions in `<agent dir>/sessions/--<cwd>--/<time>_<id>.jsonl`,
//! whose first line is `{"type":"session","id":…,"cwd":…}`), `dist/main.js`
//! (`pi --session <id> -p <text>` resumes a session of the current directory).
//!
//! relay's extension (`agents/pi/relay.ts` in the repository, embedded here) holds no
//! logic: it runs `relay hook pi <event>` and `relay mcp`. The only thing install fills in
//! is the relay binary's path, on the line [`RELAY_LINE`] marks.

use std::path::{Path, PathBuf};

use super::install::Scope;

/// The extension's source, with the placeholder `"@RELAY@"` for the binary's path.
pub const EXTENSION: &str = include_str!("../../agents/pi/relay.ts");

/// The start of the one line of the extension (and OpenCode's plugin) install fills in: `const RELAY: string =
/// "<path as a JSON string>";`.
const RELAY_LINE: &str = "const RELAY: string = ";

/// The placeholder in [`EXTENSION`].
const PLACEHOLDER: &str = "\"@RELAY@\"";

/// `$PI_CODING_AGENT_DIR` (a leading `~` is the home directory, as pi reads it), else
/// `~/.pi/agent`.
pub fn agent_dir(home: &Path) -> PathBuf {
    match std::env::var("PI_CODING_AGENT_DIR")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(d) if d == "~" => home.to_path_buf(),
        Some(d) => match d.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => PathBuf::from(d),
        },
        None => home.join(".pi").join("agent"),
    }
}

/// The extension file for `scope`: `<agent dir>/extensions/relay.ts` for the user,
/// `<project>/.pi/extensions/relay.ts` for a project.
pub fn extension_path(scope: Scope, home: &Path, project: &Path) -> PathBuf {
    match scope {
        Scope::User => agent_dir(home).join("extensions").join("relay.ts"),
        Scope::Project => project.join(".pi").join("extensions").join("relay.ts"),
    }
}

/// Where pi keeps sessions: `<agent dir>/sessions`.
pub fn sessions_dir(home: &Path) -> PathBuf {
    agent_dir(home).join("sessions")
}

/// The extension as install writes it, running `exe`.
pub fn render(exe: &Path) -> String {
    fill(EXTENSION, exe)
}

/// The relay binary an installed extension runs, when `text` is an extension some relay
/// wrote: it starts with the template's first line and fills in an absolute path
/// ([`filled_with`]). `None` for any other file.
pub fn relay_of(text: &str) -> Option<PathBuf> {
    filled_with(EXTENSION, text)
}

/// `template` (pi's extension, OpenCode's plugin) with the binary's path filled in, as a
/// JSON string, on the line [`RELAY_LINE`] starts.
pub(crate) fn fill(template: &str, exe: &Path) -> String {
    let path = serde_json::to_string(&exe.to_string_lossy()).unwrap_or_else(|_| "\"\"".into());
    template.replacen(PLACEHOLDER, &path, 1)
}

/// The binary `text` runs when it is a file relay wrote from `template`: it starts with the
/// template's first line (which names the file as relay's, in every relay version) and
/// has the [`RELAY_LINE`] with an absolute path. Such a file is relay's to replace or
/// remove even when another relay version wrote it or it was edited (install and
/// uninstall back it up first); a file without that first line is never touched.
pub(crate) fn filled_with(template: &str, text: &str) -> Option<PathBuf> {
    let header = template.lines().next()?;
    if text.lines().next() != Some(header) {
        return None;
    }
    let start = text.find(RELAY_LINE)? + RELAY_LINE.len();
    let end = start + text[start..].find(";\n")?;
    let path: String = serde_json::from_str(&text[start..end]).ok()?;
    // Install writes only absolute paths (and the template's placeholder is not one).
    Path::new(&path).is_absolute().then(|| PathBuf::from(path))
}

/// The argv that resumes session `id` headlessly with `nudge`, run in the session's cwd
/// (pi finds a session by id among those of the current directory; from another one it
/// asks whether to fork it, and without an answer sends nothing).
pub fn resume_argv(id: &str, nudge: &str) -> Vec<String> {
    ["pi", "--session", id, "-p", nudge]
        .map(String::from)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_extension_is_recognised_by_its_header_for_any_path_and_version() {
        for exe in [
            "/usr/bin/relay",
            "/tmp/a \"quoted\" \\ path/relay",
            "/ü/relay",
        ] {
            let text = render(Path::new(exe));
            assert!(!text.contains(PLACEHOLDER), "{exe}");
            assert_eq!(relay_of(&text), Some(PathBuf::from(exe)), "{exe}");
            // Another relay version's file (or relay's, edited) is still relay's.
            let other = text.replacen("HOOK_TIMEOUT_MS = 10_000", "HOOK_TIMEOUT_MS = 1", 1);
            assert_ne!(other, text);
            assert_eq!(relay_of(&other), Some(PathBuf::from(exe)));
        }
        assert_eq!(relay_of("export default function () {}\n"), None);
        let headless = render(Path::new("/usr/bin/relay")).replacen("// relay's", "// my", 1);
        assert_eq!(
            relay_of(&headless),
            None,
            "without relay's first line: not relay's"
        );
        assert_eq!(
            relay_of(EXTENSION),
            None,
            "the unfilled template is not an install"
        );
    }
}
