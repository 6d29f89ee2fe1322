//! Issue 10 review: install and uninstall must leave the user's own entries working.

use super::common::{Home, run};

/// Codex keys the trust of a hook by its position (`<hooks.json>:stop:<group>:<handler>`).
/// Uninstall removed relay's Stop group, so the user's Stop group after it moved from 1 to
/// 0 and lost its trust — and Codex skips an untrusted hook without a word.
#[test]
fn uninstall_keeps_the_trust_of_user_hooks_that_moved() {
    let h = Home::new();
    let user_home = h.path().with_file_name("user");
    let codex = user_home.join(".codex");
    std::fs::create_dir_all(&codex).unwrap();
    let relay = |args: &[&str]| {
        let mut c = h.cmd(args);
        c.env("HOME", &user_home).env("CODEX_HOME", &codex);
        let r = run(c, None, super::common::DEADLINE);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    };
    relay(&["install", "codex"]);
    let hooks_path = codex.join("hooks.json");
    let mut hooks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&hooks_path).unwrap()).unwrap();
    let stop = hooks["hooks"]["Stop"].as_array_mut().unwrap();
    assert_eq!(stop.len(), 1, "relay's Stop group first");
    stop.push(serde_json::json!({"hooks": [{"type": "command", "command": "/usr/bin/notify-me"}]}));
    std::fs::write(&hooks_path, serde_json::to_string_pretty(&hooks).unwrap()).unwrap();
    let p = hooks_path.display();
    let config = codex.join("config.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[hooks.state.\"{p}:stop:0:0\"]\ntrusted_hash = \"sha256:relay\"\n\
         \n[hooks.state.\"{p}:stop:1:0\"]\ntrusted_hash = \"sha256:user\"\n"
    ));
    std::fs::write(&config, toml).unwrap();
    relay(&["uninstall", "codex"]);
    let after = std::fs::read_to_string(&config).unwrap();
    let doc: toml_edit::DocumentMut = after.parse().unwrap();
    let state = &doc["hooks"]["state"];
    assert_eq!(
        state[&format!("{p}:stop:0:0")]["trusted_hash"].as_str(),
        Some("sha256:user"),
        "the user's hook, now first, keeps its trust:\n{after}"
    );
    assert!(
        state.get(format!("{p}:stop:1:0")).is_none(),
        "no stale key:\n{after}"
    );
}

/// Installing over an existing `mcpServers.relay` replaced the entry whole, dropping the
/// user's own keys (a `timeout`).
#[test]
fn install_keeps_the_users_keys_in_the_relay_mcp_entry() {
    let h = Home::new();
    let user_home = h.path().with_file_name("user");
    std::fs::create_dir_all(&user_home).unwrap();
    let file = user_home.join(".claude.json");
    std::fs::write(
        &file,
        r#"{"mcpServers":{"relay":{"type":"stdio","command":"/usr/local/bin/relay","args":["mcp"],"env":{"FOO":"bar"},"timeout":99}}}"#,
    )
    .unwrap();
    let mut c = h.cmd(&["install", "claude"]);
    c.env("HOME", &user_home).env_remove("CLAUDE_CONFIG_DIR");
    let r = run(c, None, super::common::DEADLINE);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let entry = &v["mcpServers"]["relay"];
    assert_eq!(entry["timeout"], 99, "{entry}");
    assert_eq!(entry["env"]["FOO"], "bar", "{entry}");
    assert_eq!(entry["args"], serde_json::json!(["mcp"]));
}

/// A config.toml written with CRLF came back with LF everywhere, even from an uninstall
/// with nothing to remove, and install → uninstall was no longer byte-identical.
#[test]
fn a_crlf_codex_config_keeps_its_line_endings() {
    let h = Home::new();
    let user_home = h.path().with_file_name("user");
    let codex = user_home.join(".codex");
    std::fs::create_dir_all(&codex).unwrap();
    let config = codex.join("config.toml");
    let original = "model = \"m\"\r\n\r\n[mcp_servers.other]\r\ncommand = \"x\"\r\n";
    std::fs::write(&config, original).unwrap();
    let relay = |args: &[&str]| {
        let mut c = h.cmd(args);
        c.env("HOME", &user_home).env("CODEX_HOME", &codex);
        let r = run(c, None, super::common::DEADLINE);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    };
    relay(&["uninstall", "codex"]);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        original,
        "a no-op"
    );
    relay(&["install", "codex"]);
    let installed = std::fs::read_to_string(&config).unwrap();
    assert!(
        !installed.replace("\r\n", "").contains('\n'),
        "LF crept in:\n{installed:?}"
    );
    relay(&["uninstall", "codex"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
}

/// After an upgrade added hooks, doctor said the install was "incomplete or running
/// /path/relay rather than this relay (/path/relay)" — the same path twice. It now says
/// what is missing.
#[test]
fn doctor_says_an_install_of_this_relay_lacks_newer_entries() {
    let h = Home::new();
    let user_home = h.path().with_file_name("user");
    std::fs::create_dir_all(&user_home).unwrap();
    let relay = |args: &[&str]| {
        let mut c = h.cmd(args);
        c.env("HOME", &user_home).env_remove("CLAUDE_CONFIG_DIR");
        run(c, None, super::common::DEADLINE)
    };
    assert_eq!(relay(&["install", "claude"]).code, 0);
    let settings = user_home.join(".claude/settings.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    v["hooks"].as_object_mut().unwrap().remove("PostToolUse");
    std::fs::write(&settings, v.to_string()).unwrap();
    let r = relay(&["doctor"]);
    assert!(
        r.stdout
            .contains("installed by this relay, but not every entry it installs now"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("rather than this relay"), "{}", r.stdout);
}
