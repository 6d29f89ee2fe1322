//! The git guard end to end: real repositories in temporary directories, `relay install
//! guard`, and real `git commit`s whose pre-commit hook runs the relay binary under test.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::repo::Repo;
use common::{DEADLINE, Home};

#[test]
fn a_commit_touching_another_sessions_exclusive_reservation_is_refused_naming_who() {
    let r = Repo::new();
    r.install();
    r.h.register("bob");
    r.relay_ok(&[
        "reserve",
        "--as",
        "bob",
        "src/store/**",
        "--reason",
        "porting the sqlite backend",
    ]);
    let before = r.commits();
    let out = r.commit("src/store/sqlite.rs", "fn main() {}\n", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for needle in [
        "bob",
        "src/store/**",
        "porting the sqlite backend",
        "lapsing in",
        "src/store/sqlite.rs",
        "refused",
    ] {
        assert!(out.stderr.contains(needle), "{needle:?} in {}", out.stderr);
    }
    assert_eq!(r.commits(), before, "nothing was committed");
    // A path nobody holds goes through (the refused file is unstaged first).
    r.git_ok(&["reset", "-q"]);
    let ok = r.commit("docs/notes.md", "notes\n", &[]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(r.commits(), before + 1);
    // A shared reservation does not block.
    r.h.register("carol");
    r.relay_ok(&["reserve", "--as", "carol", "--shared", "docs/**"]);
    assert_eq!(r.commit("docs/more.md", "x\n", &[]).code, 0);
}

#[test]
fn moving_a_reserved_file_away_counts_its_old_path() {
    let r = Repo::new();
    r.commit("src/a.rs", "a\n", &[]);
    r.install();
    r.h.register("bob");
    r.relay_ok(&["reserve", "--as", "bob", "src/**"]);
    r.git_ok(&["mv", "src/a.rs", "a.rs"]);
    let out = common::run(r.git(&["commit", "-q", "-m", "move"]), None, DEADLINE);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("src/a.rs"), "{}", out.stderr);
}

#[test]
fn the_committers_own_reservations_never_block_it() {
    let r = Repo::new();
    r.install();
    r.h.register("bob");
    r.h.register("alice");
    r.relay_ok(&["reserve", "--as", "bob", "src/**"]);
    let before = r.commits();
    let out = r.commit("src/x.rs", "x\n", &[("RELAY_AS", "bob")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(r.commits(), before + 1);
    // Someone else is refused, and told who holds it.
    let out = r.commit("src/y.rs", "y\n", &[("RELAY_AS", "alice")]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("bob"), "{}", out.stderr);
    // An identity that does not resolve is an error, and an error refuses.
    let out = common::run(
        {
            let mut c = r.git(&["commit", "-q", "-m", "y"]);
            c.env("RELAY_AS", "nobody-here");
            c
        },
        None,
        DEADLINE,
    );
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("nobody-here"), "{}", out.stderr);
}

#[test]
fn released_and_expired_reservations_no_longer_block() {
    let r = Repo::new();
    r.install();
    r.h.register("bob");
    r.relay_ok(&["reserve", "--as", "bob", "src/**"]);
    assert_eq!(r.commit("src/x.rs", "x\n", &[]).code, 1);
    r.relay_ok(&["release", "--as", "bob", "--all"]);
    assert_eq!(r.commit("src/x.rs", "x\n", &[]).code, 0);
    // One that lapses: refused while it holds, allowed once it lapsed.
    r.relay_ok(&["reserve", "--as", "bob", "lib/**", "--ttl", "2s"]);
    let held = r.commit("lib/y.rs", "y\n", &[]);
    assert_eq!(held.code, 1, "{}", held.stderr);
    common::wait_until("the reservation lapses", Duration::from_secs(30), || {
        !r.relay_ok(&["reservations", "--json"])
            .doc()
            .to_string()
            .contains("lib/**")
    });
    let out = common::run(r.git(&["commit", "-q", "-m", "y"]), None, DEADLINE);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_gone_holder_does_not_block_but_a_live_one_does() {
    let r = Repo::new();
    r.install();
    r.h.register("bob");
    let mut listen = r.h.cmd(&["listen", "--as", "bob"]);
    listen
        .current_dir(r.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = listen.spawn().unwrap();
    common::wait_for("bob listens", || {
        r.relay_ok(&["roster", "--json"]).doc()["endpoints"][0]["presence"] == "live"
    });
    r.relay_ok(&["reserve", "--as", "bob", "src/**"]);
    let out = r.commit("src/x.rs", "x\n", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("[live"), "{}", out.stderr);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = common::run(r.git(&["commit", "-q", "-m", "x"]), None, DEADLINE);
    assert_eq!(out.code, 0, "a gone holder blocks nobody: {}", out.stderr);
}

#[test]
fn warn_mode_prints_the_same_and_lets_the_commit_through() {
    let r = Repo::new();
    r.install();
    r.h.register("bob");
    r.relay_ok(&["reserve", "--as", "bob", "src/**", "--reason", "mine"]);
    let before = r.commits();
    let out = r.commit("src/x.rs", "x\n", &[("RELAY_GUARD", "warn")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("bob") && out.stderr.contains("\"mine\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("goes ahead"), "{}", out.stderr);
    assert_eq!(r.commits(), before + 1);
    // A value that is not `warn` blocks (a typo must not let commits through).
    let out = r.commit("src/y.rs", "y\n", &[("RELAY_GUARD", "wran")]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("wran"), "{}", out.stderr);
}

#[test]
fn a_store_that_cannot_be_read_refuses_unless_warn() {
    let r = Repo::new();
    r.install();
    std::fs::create_dir_all(r.h.path()).unwrap();
    std::fs::write(r.h.db(), b"this is not a database\n".repeat(100)).unwrap();
    let out = r.commit("a.txt", "a\n", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot check this commit")
            && out.stderr.contains("not a relay database"),
        "{}",
        out.stderr
    );
    let out = common::run(
        {
            let mut c = r.git(&["commit", "-q", "-m", "a"]);
            c.env("RELAY_GUARD", "warn");
            c
        },
        None,
        DEADLINE,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("unchecked"), "{}", out.stderr);
}

/// A hook of the user's own: fails (exit 3, saying so) when a file named FAIL is staged.
const USER_HOOK: &[u8] = b"#!/bin/sh\n# my hook \xff\xfe (not UTF-8)\n\
if git diff --cached --name-only | grep -q '^FAIL$'; then\n\
  echo 'user hook says no' >&2\n  exit 3\nfi\nexit 0\n";

fn put_hook(dir: &Path, bytes: &[u8], mode: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("pre-commit");
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn an_existing_hook_is_chained_and_uninstall_restores_it_byte_for_byte() {
    let r = Repo::new();
    let hook = put_hook(&r.hooks(), USER_HOOK, 0o750);
    // A dry run shows the change and makes none.
    let dry = r
        .relay_ok(&["install", "guard", "--dry-run", "--json"])
        .doc();
    assert!(
        dry["diff"].as_str().unwrap().contains("guard check"),
        "{dry}"
    );
    assert_eq!(std::fs::read(&hook).unwrap(), USER_HOOK);
    assert!(!r.hooks().join("pre-commit.relay-chained").exists());
    r.install();
    let chained = r.hooks().join("pre-commit.relay-chained");
    assert_eq!(std::fs::read(&chained).unwrap(), USER_HOOK);
    assert_eq!(mode(&chained), 0o750);
    // Installing again changes nothing.
    let again = r.relay_ok(&["install", "guard", "--json"]).doc();
    assert_eq!(again["files"][0]["action"], "unchanged", "{again}");
    // The user's hook runs first, and its failure still refuses the commit.
    let before = r.commits();
    let out = r.commit("FAIL", "x\n", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("user hook says no"), "{}", out.stderr);
    assert_eq!(r.commits(), before);
    r.git_ok(&["rm", "-q", "--cached", "FAIL"]);
    // Where it passes, the guard runs after it.
    r.h.register("bob");
    r.relay_ok(&["reserve", "--as", "bob", "src/**"]);
    assert_eq!(r.commit("src/x.rs", "x\n", &[]).code, 1);
    r.git_ok(&["reset", "-q"]);
    assert_eq!(r.commit("ok.txt", "x\n", &[]).code, 0);
    // Uninstall puts the user's hook back exactly; nothing of relay's is left.
    let un = r.relay_ok(&["uninstall", "guard", "--json"]).doc();
    assert_eq!(un["files"][0]["action"], "restored", "{un}");
    assert_eq!(std::fs::read(&hook).unwrap(), USER_HOOK);
    assert_eq!(mode(&hook), 0o750);
    assert!(!chained.exists());
    let left: Vec<String> = std::fs::read_dir(r.hooks())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pre-commit") && !n.ends_with(".sample"))
        .collect();
    assert_eq!(left, ["pre-commit"]);
    // With relay's guard gone, a reserved path commits (only the user's hook runs).
    assert_eq!(r.commit("src/y.rs", "y\n", &[]).code, 0);
}

#[test]
fn without_an_earlier_hook_uninstall_removes_relays() {
    let r = Repo::new();
    r.install();
    let hook = r.hooks().join("pre-commit");
    assert_eq!(mode(&hook), 0o755);
    let text = std::fs::read_to_string(&hook).unwrap();
    assert!(
        text.contains(
            &std::fs::canonicalize(common::relay_bin())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        ),
        "the hook runs this relay by its absolute path: {text}"
    );
    r.relay_ok(&["uninstall", "guard"]);
    assert!(!hook.exists());
    // Uninstalling what is not there says so and changes nothing.
    let out = r.relay_ok(&["uninstall", "guard", "--json"]).doc();
    assert!(
        out["notes"][0].as_str().unwrap().contains("not installed"),
        "{out}"
    );
}

#[test]
fn core_hooks_path_is_honoured() {
    let r = Repo::new();
    r.git_ok(&["config", "core.hooksPath", ".githooks"]);
    let mine = put_hook(&r.path().join(".githooks"), USER_HOOK, 0o755);
    // Installed from a subdirectory, with --project: the repository's hooks path counts.
    std::fs::create_dir_all(r.path().join("sub")).unwrap();
    let mut c = r.h.cmd(&["install", "guard", "--project", "sub", "--json"]);
    c.current_dir(r.path());
    let out = common::run(c, None, DEADLINE);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let hooks_dir = PathBuf::from(out.doc()["hooks_dir"].as_str().unwrap());
    assert_eq!(
        hooks_dir.canonicalize().unwrap(),
        r.path().join(".githooks").canonicalize().unwrap()
    );
    assert!(!r.hooks().join("pre-commit").exists(), "not in .git/hooks");
    assert_eq!(
        std::fs::read(r.path().join(".githooks/pre-commit.relay-chained")).unwrap(),
        USER_HOOK
    );
    r.h.register("bob");
    r.relay_ok(&["reserve", "--as", "bob", "src/**"]);
    let out = r.commit("src/x.rs", "x\n", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("bob"), "{}", out.stderr);
    r.relay_ok(&["uninstall", "guard"]);
    assert_eq!(std::fs::read(&mine).unwrap(), USER_HOOK);
}

#[test]
fn install_guard_outside_a_repository_is_a_usage_error() {
    let h = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let mut c = h.cmd(&["install", "guard", "--json"]);
    c.current_dir(dir.path())
        .env("GIT_CEILING_DIRECTORIES", dir.path().parent().unwrap());
    let out = common::run(c, None, DEADLINE);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.doc()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not in a git repository"),
        "{}",
        out.stdout
    );
    // --scope means nothing for the guard.
    let out = h.run(&["install", "guard", "--scope", "project"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}
