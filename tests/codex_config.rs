//! Install into real-shaped agent configs: what Codex's MCP entry carries (env_vars and a
//! pinned RELAY_HOME), Codex's hook trust taken out on uninstall, and JSON files whose
//! bytes outside relay's entries never change (numbers as JavaScript writes them).

mod common;

use std::path::{Path, PathBuf};

use common::{Home, Run};
use serde_json::{Value, json};

/// A fake `$HOME` (and project directory) for one test.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn home(&self) -> &Path {
        self.dir.path()
    }
    /// `relay args…` with this HOME and `RELAY_HOME` from `h` (or, with `relay_home`,
    /// that value or none), no XDG_STATE_HOME, in the fake home.
    fn run(&self, h: &Home, args: &[&str], relay_home: Option<Option<&str>>) -> Run {
        let mut c = h.cmd(args);
        c.env("HOME", self.home())
            .env_remove("CLAUDE_CONFIG_DIR")
            .env_remove("CODEX_HOME")
            .env_remove("XDG_STATE_HOME")
            .current_dir(self.home());
        match relay_home {
            None => {}
            Some(None) => {
                c.env_remove("RELAY_HOME");
            }
            Some(Some(v)) => {
                c.env("RELAY_HOME", v);
            }
        }
        let r = common::run(c, None, common::DEADLINE);
        assert_eq!(r.code, 0, "relay {args:?}: {}", r.stderr);
        r
    }
    fn codex_toml(&self) -> PathBuf {
        self.home().join(".codex/config.toml")
    }
    fn codex_hooks(&self) -> PathBuf {
        self.home().join(".codex/hooks.json")
    }
    fn backups(&self, of: &Path) -> Vec<PathBuf> {
        let name = format!(
            "{}.relay-backup-",
            of.file_name().unwrap().to_string_lossy()
        );
        std::fs::read_dir(of.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
            .map(|e| e.path())
            .collect()
    }
}

fn toml(path: &Path) -> toml_edit::DocumentMut {
    std::fs::read_to_string(path).unwrap().parse().unwrap()
}

fn strings(item: &toml_edit::Item) -> Vec<String> {
    item.as_array()
        .unwrap_or_else(|| panic!("not an array: {item}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

const RELAY_ENV_VARS: [&str; 7] = [
    "RELAY_HOME",
    "XDG_STATE_HOME",
    "RELAY_RUNTIME_DIR",
    "XDG_RUNTIME_DIR",
    "RELAY_DURABILITY",
    "RELAY_MAX_BODY",
    "RELAY_LOG",
];

#[test]
fn codex_mcp_entry_passes_relays_variables_and_pins_the_install_time_home() {
    let h = Home::new();
    let f = Fake::new();
    std::fs::create_dir_all(f.codex_toml().parent().unwrap()).unwrap();
    // An entry from an older relay, with a setting of the user's.
    std::fs::write(
        f.codex_toml(),
        "[mcp_servers.relay]\ncommand = \"/old/bin/relay\"\nargs = [\"mcp\"]\n\
         tool_timeout_sec = 300 # mine\n",
    )
    .unwrap();
    f.run(&h, &["install", "codex"], None);
    let doc = toml(&f.codex_toml());
    let relay = &doc["mcp_servers"]["relay"];
    assert_eq!(relay["command"].as_str(), Some(env!("CARGO_BIN_EXE_relay")));
    assert_eq!(strings(&relay["env_vars"]), RELAY_ENV_VARS);
    assert!(
        !strings(&relay["env_vars"]).contains(&"RELAY_AS".to_string()),
        "one daemon serves every session: RELAY_AS would make them one endpoint"
    );
    let home = h.path().display().to_string();
    assert_eq!(relay["env"]["RELAY_HOME"].as_str(), Some(home.as_str()));
    assert_eq!(
        relay["tool_timeout_sec"].as_integer(),
        Some(300),
        "the user's key stays"
    );
    let installed = std::fs::read(f.codex_toml()).unwrap();
    assert!(String::from_utf8_lossy(&installed).contains("# mine"));

    // Again from the same shell: not a byte changes.
    let again = f.run(&h, &["install", "codex", "--json"], None);
    assert!(
        again.doc()["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["action"] == "unchanged"),
        "{}",
        again.stdout
    );
    assert_eq!(std::fs::read(f.codex_toml()).unwrap(), installed);

    // From a shell with relay's default home: nothing pinned.
    f.run(&h, &["install", "codex"], Some(None));
    let doc = toml(&f.codex_toml());
    assert!(doc["mcp_servers"]["relay"].get("env").is_none(), "{doc}");
    assert_eq!(
        strings(&doc["mcp_servers"]["relay"]["env_vars"]),
        RELAY_ENV_VARS
    );
    // A relative RELAY_HOME is pinned as the absolute directory it means.
    f.run(&h, &["install", "codex"], Some(Some("rel/home")));
    let doc = toml(&f.codex_toml());
    assert_eq!(
        doc["mcp_servers"]["relay"]["env"]["RELAY_HOME"].as_str(),
        Some(f.home().join("rel/home").to_str().unwrap())
    );
}

#[test]
fn claude_mcp_entry_pins_the_install_time_home() {
    let h = Home::new();
    let f = Fake::new();
    f.run(&h, &["install", "claude"], None);
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(f.home().join(".claude.json")).unwrap())
            .unwrap();
    assert_eq!(
        m["mcpServers"]["relay"]["env"],
        json!({"RELAY_HOME": h.path().display().to_string()})
    );
    f.run(&h, &["install", "claude"], Some(None));
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(f.home().join(".claude.json")).unwrap())
            .unwrap();
    assert_eq!(m["mcpServers"]["relay"]["env"], json!({}));
}

#[test]
fn project_scope_claude_install_says_claude_asks_to_approve_the_server() {
    let h = Home::new();
    let f = Fake::new();
    let r = f.run(&h, &["install", "claude", "--scope", "project"], None);
    assert!(
        r.stdout.contains(".mcp.json") && r.stdout.contains("Pending approval"),
        "{}",
        r.stdout
    );
    let user = f.run(&h, &["install", "claude"], None);
    assert!(!user.stdout.contains("Pending approval"), "{}", user.stdout);
}

const USER_HOOKS: &str = r#"{
  "hooks": {
    "Stop": [
      {
        "hooks": [
          {
            "type": "command",
            "command": "notify-send done"
          }
        ]
      }
    ]
  }
}
"#;

/// The trust tables Codex 0.171 writes when relay's hooks are trusted in /hooks: key
/// `<hooks.json>:<event>:<group>:<handler>`; relay's Stop group comes after the user's.
fn relay_trust(hooks: &Path) -> String {
    let p = hooks.display();
    [
        ("session_start", 0),
        ("user_prompt_submit", 0),
        ("post_tool_use", 0),
        ("stop", 1),
    ]
    .iter()
    .map(|(e, g)| format!("\n[hooks.state.\"{p}:{e}:{g}:0\"]\ntrusted_hash = \"sha256:{e}\"\n"))
    .collect()
}

#[test]
fn codex_uninstall_takes_out_relays_hook_trust_and_keeps_everyone_elses() {
    let h = Home::new();
    let f = Fake::new();
    let hooks = f.codex_hooks();
    std::fs::create_dir_all(hooks.parent().unwrap()).unwrap();
    std::fs::write(&hooks, USER_HOOKS).unwrap();
    let original =
        "# mine\nmodel = \"gpt-5\"\n\n[hooks.state.\"/etc/codex/hooks.json:stop:1:0\"]\n\
                    trusted_hash = \"sha256:other-file\"\n"
            .to_string();
    std::fs::write(f.codex_toml(), &original).unwrap();
    f.run(&h, &["install", "codex"], None);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&hooks).unwrap()).unwrap();
    assert!(
        v["hooks"]["Stop"][1]["hooks"][0]["command"]
            .as_str()
            .unwrap()
            .ends_with("hook codex stop"),
        "relay's Stop group is the second: {v}"
    );

    // The user trusts relay's hooks (Codex appends the tables), and their own.
    let user_trust = format!(
        "\n[hooks.state.\"{}:stop:0:0\"]\ntrusted_hash = \"sha256:mine\"\nenabled = true\n",
        hooks.display()
    );
    let mut text = std::fs::read_to_string(f.codex_toml()).unwrap();
    text.push_str(&relay_trust(&hooks));
    text.push_str(&user_trust);
    std::fs::write(f.codex_toml(), &text).unwrap();
    // Install stays byte-stable with trust present.
    f.run(&h, &["install", "codex"], None);
    assert_eq!(std::fs::read_to_string(f.codex_toml()).unwrap(), text);

    f.run(&h, &["uninstall", "codex"], None);
    let doc = toml(&f.codex_toml());
    let state: Vec<String> = doc["hooks"]["state"]
        .as_table_like()
        .unwrap()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(
        state,
        [
            "/etc/codex/hooks.json:stop:1:0".to_string(),
            format!("{}:stop:0:0", hooks.display())
        ],
        "only relay's trust went"
    );
    assert!(doc.get("mcp_servers").is_none());
    assert_eq!(std::fs::read_to_string(&hooks).unwrap(), USER_HOOKS);

    // Trust of relay's hooks only: uninstall gives back the original bytes, even with no
    // backup to restore from.
    let f = Fake::new();
    let hooks = f.codex_hooks();
    std::fs::create_dir_all(hooks.parent().unwrap()).unwrap();
    std::fs::write(&hooks, USER_HOOKS).unwrap();
    std::fs::write(f.codex_toml(), &original).unwrap();
    f.run(&h, &["install", "codex"], None);
    let mut text = std::fs::read_to_string(f.codex_toml()).unwrap();
    text.push_str(&relay_trust(&hooks));
    std::fs::write(f.codex_toml(), &text).unwrap();
    for b in f.backups(&f.codex_toml()) {
        std::fs::remove_file(b).unwrap();
    }
    f.run(&h, &["uninstall", "codex"], None);
    let after = std::fs::read_to_string(f.codex_toml()).unwrap();
    assert!(
        !after.contains("sha256:stop") && !after.contains("post_tool_use"),
        "{after}"
    );
    assert_eq!(after.trim_end(), original.trim_end());
}

/// ~/.claude.json is Claude Code's own file, written by JavaScript: numbers in the forms
/// `JSON.stringify` gives, which serde_json would print differently (`0.000001` as
/// `1e-6`, `1.7976931348623157e+308` fine but `123456789012345680000` as
/// `1.2345678901234568e+20`), plus ones it rounds wrongly without float_roundtrip.
const CLAUDE_JSON: &str = r#"{
  "numStartups": 113,
  "costUSD": 113.30000000000001,
  "tiny": 0.000001,
  "tinier": 1.5e-7,
  "huge": 1.7976931348623157e+308,
  "wide": 123456789012345680000,
  "exact": 12345678901234567890,
  "zero": -0.0,
  "tenth": 0.1,
  "escaped": "caf\u00e9 \/ ok",
  "mcpServers": {
    "docs": {
      "command": "docs-mcp",
      "args": [],
      "env": {
        "RATIO": 0.30000000000000004
      }
    }
  },
  "projects": {
    "/work": {
      "lastCost": 4.35,
      "lastDuration": 1E5
    }
  }
}
"#;

#[test]
fn claude_json_keeps_every_byte_outside_relays_entry() {
    let h = Home::new();
    let f = Fake::new();
    let path = f.home().join(".claude.json");
    std::fs::write(&path, CLAUDE_JSON).unwrap();
    f.run(&h, &["install", "claude"], None);
    let installed = std::fs::read_to_string(&path).unwrap();

    // The only change is relay's entry: the line before it gains a comma, and the
    // lines added are exactly `"relay": {...}` inside mcpServers.
    let before: Vec<&str> = CLAUDE_JSON.lines().collect();
    let after: Vec<&str> = installed.lines().collect();
    let start = after
        .iter()
        .position(|l| *l == "    \"relay\": {")
        .unwrap_or_else(|| panic!("relay's entry in mcpServers:\n{installed}"));
    let end = start
        + after[start..]
            .iter()
            .position(|l| *l == "    }" || *l == "    },")
            .unwrap();
    let mut expect: Vec<String> = before.iter().map(|l| l.to_string()).collect();
    expect[start - 1].push(','); // "    }" of docs
    for (i, l) in after[start..=end].iter().enumerate() {
        expect.insert(start + i, l.to_string());
    }
    assert_eq!(after, expect, "install changed bytes outside relay's entry");
    let v: Value = serde_json::from_str(&installed).unwrap();
    assert_eq!(v["mcpServers"]["relay"]["args"], json!(["mcp"]));

    // Uninstall gives the file back byte for byte, with or without a backup.
    f.run(&h, &["uninstall", "claude"], None);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CLAUDE_JSON);
    f.run(&h, &["install", "claude"], None);
    for b in f.backups(&path) {
        std::fs::remove_file(b).unwrap();
    }
    f.run(&h, &["uninstall", "claude"], None);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CLAUDE_JSON);
}
