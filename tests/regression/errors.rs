//! Regression tests: errors (see tests/regression.rs).
#![allow(unused_imports)]

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

/// The user other-user tests plant files as, and run relay as: `nobody`.
const NOBODY: u32 = 65534;
/// A Claude Code session id for wake tests.
const SESSION: &str = "9e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a70";

/// True when running as root; otherwise says which test cannot run and why.
fn root(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipping {test}: it needs root to plant files owned by uid {NOBODY}");
    }
    root
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Registers a dormant Claude Code session `SESSION` with working directory `cwd`: a
/// stand-in agent process runs the SessionStart hook, then exits.
fn dormant_session(h: &Home, cwd: &Path) {
    let mut c = std::process::Command::new("python3");
    c.arg(fixture("fake_agent.py"))
        .args([
            env!("CARGO_BIN_EXE_relay"),
            "claude",
            SESSION,
            &cwd.to_string_lossy(),
            "--",
            "--version",
        ])
        .env("RELAY_HOME", h.path())
        .env_remove("RELAY_AS");
    let r = run(c, None, DEADLINE);
    assert_eq!(r.code, 0, "fake agent: {}", r.stderr);
}

/// A relay database with one endpoint, to plant elsewhere.
fn a_relay_db() -> (Home, PathBuf) {
    let h = Home::new();
    h.register("someone");
    let db = h.db();
    (h, db)
}

// --- other users (items 7, 10)

/// issue 9 item 7: a RELAY_HOME created by another user (mode 0777, a 0666 relay.db
/// planted in it) is refused — the error names the path, the owner, the mode and the fix —
/// and nothing in it is touched (it used to be used, with a warning).
#[test]
fn a_home_owned_by_another_user_is_refused_untouched() {
    if !root("a_home_owned_by_another_user_is_refused_untouched") {
        return;
    }
    let h = Home::new();
    let home = h.path();
    std::fs::create_dir(&home).unwrap();
    let (_src, planted) = a_relay_db();
    std::fs::copy(&planted, h.db()).unwrap();
    chmod(&home, 0o777);
    chmod(&h.db(), 0o666);
    chown(&home, NOBODY);
    chown(&h.db(), NOBODY);
    let before = bytes(&h.db());

    let r = h.run(&["roster", "--json"]);
    assert_ne!(r.code, 0, "another user's home was used: {}", r.stderr);
    let msg = &r.stderr;
    assert!(msg.contains(&home.display().to_string()), "{msg}");
    assert!(msg.contains("uid 65534 (nobody)"), "owner named: {msg}");
    assert!(msg.contains("777"), "mode named: {msg}");
    assert!(msg.contains("RELAY_HOME"), "fix named: {msg}");
    assert_eq!(r.doc()["error"]["kind"], "unsafe-home");
    // Untouched: modes, owner, the database's bytes; nothing created in it.
    assert_eq!(mode(&home), 0o777);
    assert_eq!(mode(&h.db()), 0o666);
    assert_eq!(std::fs::metadata(&home).unwrap().uid(), NOBODY);
    assert_eq!(bytes(&h.db()), before);
    let names: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [OsStr::new("relay.db")], "nothing created in it");
}

/// issue 9 item 7: a RELAY_HOME that is a symlink into another user's directory is refused
/// naming both paths and the owner (it was used silently); a symlink to a private directory
/// of our own is still fine.
#[test]
fn a_home_symlinked_into_another_users_directory_is_refused() {
    if !root("a_home_symlinked_into_another_users_directory_is_refused") {
        return;
    }
    let h = Home::new();
    let theirs = h.path().with_file_name("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chmod(&theirs, 0o700);
    chown(&theirs, NOBODY);
    std::os::unix::fs::symlink(&theirs, h.path()).unwrap();

    let r = h.run(&["roster", "--json"]);
    assert_ne!(r.code, 0, "a symlink into nobody's directory was used");
    let msg = &r.stderr;
    assert!(msg.contains(&h.path().display().to_string()), "{msg}");
    assert!(msg.contains(&theirs.display().to_string()), "{msg}");
    assert!(msg.contains("uid 65534 (nobody)"), "{msg}");
    assert_eq!(r.doc()["error"]["kind"], "unsafe-home");
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0, "untouched");

    // Our own private directory behind a symlink is fine.
    let ours = Home::new();
    let real = ours.path().with_file_name("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    std::os::unix::fs::symlink(&real, ours.path()).unwrap();
    ours.register("me");
    assert!(real.join("relay.db").exists());
}

/// issue 9 item 7: a home of our own that others can write to (0770, 0777) is refused
/// with the chmod fix, and its mode is left as it is — relay never chmods a directory it
/// did not create (DESIGN.md §4).
#[test]
fn a_group_or_other_writable_home_is_refused_and_not_chmodded() {
    for m in [0o770, 0o777, 0o1777] {
        let h = Home::new();
        std::fs::create_dir(h.path()).unwrap();
        chmod(&h.path(), m);
        let r = h.run(&["register", "a", "--json"]);
        assert_ne!(r.code, 0, "mode {m:o} was used: {}", r.stderr);
        assert!(
            r.stderr.contains(&h.path().display().to_string()),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(&format!("{m:o}")), "{}", r.stderr);
        assert!(r.stderr.contains("chmod 700"), "{}", r.stderr);
        assert_eq!(r.doc()["error"]["kind"], "unsafe-home");
        assert_eq!(mode(&h.path()), m, "mode was rewritten");
        assert!(!h.db().exists(), "nothing created");
    }
}

/// issue 9 item 7: a relay.db that others can write to (0666) is refused naming it, its
/// mode and the fix, and left as it is.
#[test]
fn a_world_writable_database_is_refused() {
    let h = Home::new();
    h.register("a");
    chmod(&h.db(), 0o666);
    let before = bytes(&h.db());
    let r = h.run(&["roster", "--json"]);
    assert_ne!(r.code, 0, "a 0666 relay.db was used");
    assert!(
        r.stderr.contains(&h.db().display().to_string()),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("666"), "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert_eq!(r.doc()["error"]["kind"], "unsafe-home");
    assert_eq!(mode(&h.db()), 0o666);
    assert_eq!(bytes(&h.db()), before);
}

/// issue 9 item 7: directories relay makes under the home follow the same rule: a doorbell
/// directory owned by another user is refused (it was used).
#[test]
fn a_doorbell_directory_owned_by_another_user_is_refused() {
    if !root("a_doorbell_directory_owned_by_another_user_is_refused") {
        return;
    }
    let h = Home::new();
    h.register("a");
    let bells = h.path().join("doorbell");
    chown(&bells, NOBODY);
    let r = h.run(&["roster", "--json"]);
    assert_ne!(r.code, 0, "nobody's doorbell directory was used");
    assert!(
        r.stderr.contains(&bells.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("uid 65534"), "{}", r.stderr);
    assert_eq!(std::fs::metadata(&bells).unwrap().uid(), NOBODY);
}

/// issue 9 item 7 (the choice for existing installs): our own pre-existing home that others
/// can read but not write (0755) still works, with a warning that names the fix; its mode
/// is left as it is.
#[test]
fn our_own_readable_home_works_with_a_warning() {
    let h = Home::new();
    std::fs::create_dir(h.path()).unwrap();
    chmod(&h.path(), 0o755);
    let r = h.run(&["register", "a"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("chmod 700"), "{}", r.stderr);
    assert_eq!(mode(&h.path()), 0o755);
}

/// issue 9 item 10: a SQLite file at user_version 0 that already has tables of its own is
/// refused, byte for byte untouched, with an error naming the file and its tables (relay
/// used to add its tables to it). relay's own fresh (empty) file still migrates.
#[test]
fn a_foreign_sqlite_database_is_refused_untouched() {
    let h = Home::new();
    std::fs::create_dir(h.path()).unwrap();
    chmod(&h.path(), 0o700);
    {
        let c = rusqlite::Connection::open(h.db()).unwrap();
        c.execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);
             INSERT INTO notes (text) VALUES ('mine');",
        )
        .unwrap();
    }
    chmod(&h.db(), 0o600);
    let before = bytes(&h.db());
    for args in [&["roster", "--json"][..], &["register", "a", "--json"]] {
        let r = h.run(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&h.db().display().to_string()),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("notes"), "its tables named: {}", r.stderr);
        assert!(r.stderr.contains("not relay's"), "{}", r.stderr);
        assert_eq!(r.doc()["error"]["kind"], "foreign-database");
    }
    assert_eq!(bytes(&h.db()), before, "the foreign file changed");
    assert!(!h.path().join("relay.db-wal").exists());

    // relay's own fresh file (created empty before the schema) still migrates.
    let fresh = Home::new();
    std::fs::create_dir(fresh.path()).unwrap();
    chmod(&fresh.path(), 0o700);
    std::fs::File::create(fresh.db()).unwrap();
    chmod(&fresh.db(), 0o600);
    fresh.register("a");
    assert_eq!(message_rows(&fresh), 0);
}

// --- wake (item 19)

/// issue 9 item 19: `relay wake` finds the agent program on PATH before it changes into
/// the session's directory, and skips empty and relative PATH entries: with
/// `PATH=":bin:/usr/bin:/bin"`, the session directory's own `./claude` (and `bin/claude`)
/// never runs (it used to: an empty entry means the current directory).
#[test]
fn wake_never_runs_an_agent_from_the_sessions_directory() {
    let h = Home::new();
    let cwd = tempfile::tempdir().unwrap();
    dormant_session(&h, cwd.path());
    let marker = cwd.path().join("planted-agent-ran");
    let script = format!("#!/bin/sh\ntouch '{}'\n", marker.display());
    std::fs::create_dir(cwd.path().join("bin")).unwrap();
    for p in [cwd.path().join("claude"), cwd.path().join("bin/claude")] {
        std::fs::write(&p, &script).unwrap();
        chmod(&p, 0o755);
    }
    let mut c = h.cmd(&["wake", SESSION, "--json"]);
    c.env("PATH", ":bin:/usr/bin:/bin");
    let r = run(c, None, DEADLINE);
    assert!(
        !marker.exists(),
        "wake ran the session directory's own ./claude"
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("claude"), "{}", r.stderr);
    assert!(r.stderr.contains("PATH"), "{}", r.stderr);
    assert_eq!(r.doc()["error"]["kind"], "wake-failed");
}

// --- clear errors (items 20, 21)

/// issue 9 item 20: a `--json` usage error carries clap's full reason (it said only
/// "invalid value for one of the arguments").
#[test]
fn json_usage_errors_carry_the_full_reason() {
    let h = Home::new();
    let r = h.run(&["inbox", "--limit", "100000", "--json"]);
    assert_eq!(r.code, 2);
    let e = &r.doc()["error"];
    assert_eq!(e["kind"], "usage");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("invalid value '100000' for '--limit <LIMIT>': 100000 is not in 1..=10000"),
        "{msg}"
    );
    assert!(!msg.starts_with("error:"), "{msg}");
    let r = h.run(&["roster", "--bogus", "--json"]);
    assert_eq!(r.code, 2);
    assert!(
        r.doc()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--bogus"),
        "{}",
        r.stdout
    );
}

/// The range a ranged integer option enforces, found by offering it values beyond every
/// range (`path` is the subcommand chain under the root); `None` for options without a
/// range and for a range that is just the integer type's.
fn probed_range(root: &clap::Command, path: &[&str], long: &str) -> Option<(i128, i128)> {
    let re = regex::Regex::new(r"is not in (-?\d+)\.\.=(-?\d+)").unwrap();
    for probe in ["-9223372036854775808", "18446744073709551615"] {
        let mut argv = vec!["relay".to_string()];
        argv.extend(path.iter().map(|p| p.to_string()));
        argv.push(format!("--{long}={probe}"));
        let Err(e) = root.clone().try_get_matches_from(argv) else {
            continue;
        };
        if let Some(c) = re.captures(&e.to_string()) {
            let (lo, hi): (i128, i128) = (c[1].parse().unwrap(), c[2].parse().unwrap());
            let whole = [u8::MAX as i128, u16::MAX as i128, u32::MAX as i128];
            if lo == 0 && whole.contains(&hi) || hi >= i64::MAX as i128 {
                return None;
            }
            return Some((lo, hi));
        }
    }
    None
}

/// Every ranged option under `cmd`: (command line, help text, range).
fn ranged_args<'a>(
    root: &clap::Command,
    cmd: &'a clap::Command,
    path: &mut Vec<&'a str>,
    out: &mut Vec<(String, String, (i128, i128))>,
) {
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if !arg.get_action().takes_values() || arg.is_global_set() {
            continue;
        }
        if let Some(range) = probed_range(root, path, long) {
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            out.push((format!("relay {} --{long}", path.join(" ")), help, range));
        }
    }
    for sub in cmd.get_subcommands() {
        path.push(sub.get_name());
        ranged_args(root, sub, path, out);
        path.pop();
    }
}

/// issue 9 item 20: `--help` shows the range of every ranged argument (`--limit` said
/// nothing of 1..=10000 until a value was refused).
#[test]
fn help_shows_the_range_of_every_ranged_argument() {
    let h = Home::new();
    let r = h.run(&["inbox", "--help"]);
    assert_eq!(r.code, 0);
    let line = r.stdout.lines().find(|l| l.contains("--limit")).unwrap();
    assert!(line.contains("[range: 1-10000]"), "{line}");

    use clap::CommandFactory;
    let mut cmd = relay::cli::Cli::command();
    cmd.build();
    let mut found = Vec::new();
    ranged_args(&cmd, &cmd, &mut Vec::new(), &mut found);
    assert!(
        found.len() >= 12,
        "the probe finds the ranged arguments: {found:?}"
    );
    for (arg, help, (lo, hi)) in found {
        let want = format!("[range: {lo}-{hi}]");
        assert!(help.contains(&want), "{arg}: help {help:?} lacks {want}");
    }
}

/// issue 9 item 21a: a RELAY_HOME relay cannot write to is named in the error (it said
/// only "database error: attempt to write a readonly database"), and so is a read-only
/// relay.db.
#[test]
fn a_read_only_home_names_the_path() {
    if !root("a_read_only_home_names_the_path") {
        return;
    }
    // As root nothing is read-only, so relay runs as nobody in a home nobody owns.
    let h = Home::new();
    chmod(h.path().parent().unwrap(), 0o755);
    std::fs::create_dir(h.path()).unwrap();
    chmod(&h.path(), 0o700);
    chown(&h.path(), NOBODY);
    let as_nobody = |args: &[&str]| {
        let mut c = h.cmd(args);
        c.uid(NOBODY).gid(NOBODY);
        run(c, None, DEADLINE)
    };
    let r = as_nobody(&["register", "a"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    chmod(&h.path(), 0o500);
    let r = as_nobody(&["register", "b", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&h.path().display().to_string()),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("attempt to write"), "{}", r.stderr);

    chmod(&h.path(), 0o700);
    chmod(&h.db(), 0o400);
    let r = as_nobody(&["register", "b", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&h.db().display().to_string()),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("attempt to write"), "{}", r.stderr);
}

/// issue 9 item 21b: `relay listen` whose socket path is a dangling symlink says which
/// path, and says it once (it printed "socket: Address already in use (os error 98)" twice
/// and no path).
#[test]
fn a_dangling_socket_symlink_is_named_once() {
    let h = Home::new();
    let id = h.register("l");
    let run_dir = h.path().with_file_name("run");
    std::fs::create_dir(&run_dir).unwrap();
    chmod(&run_dir, 0o700);
    let sock = run_dir.join(format!("{id}.sock"));
    std::os::unix::fs::symlink("/nonexistent/relay-target", &sock).unwrap();
    let mut c = h.cmd(&["listen", "--as", "l"]);
    c.env("RELAY_RUNTIME_DIR", &run_dir);
    let r = run(c, None, Duration::from_secs(30));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&sock.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(r.stderr.matches("(os error").count() <= 1, "{}", r.stderr);
}

/// issue 9 item 21c: the wake error for a session whose directory is gone prints the path,
/// not `Some("/path")`.
#[test]
fn the_wake_error_prints_the_directory_plainly() {
    let h = Home::new();
    dormant_session(&h, Path::new("/no/such/dir"));
    let r = h.run(&["wake", SESSION]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("/no/such/dir does not exist"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("Some("), "{}", r.stderr);
}

/// issue 9 item 21d: 20 MiB on `send --stdin` is reported as more than the 16 MiB hard
/// cap, with the body cap, not as "16777217 bytes"; with `--lines` nothing is sent either
/// (it used to send the lines of the first 16 MiB and drop the rest).
#[test]
fn oversized_stdin_is_reported_against_the_hard_cap() {
    let h = Home::new();
    h.register("x");
    let r = h.run_stdin(
        &["send", "x", "--as", "x", "--stdin", "--json"],
        &vec![b'a'; 20 << 20],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.doc()["error"]["kind"], "too-large");
    assert!(r.stderr.contains("more than 16 MiB"), "{}", r.stderr);
    assert!(
        r.stderr.contains("262144"),
        "the body cap is named: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("16777217"), "{}", r.stderr);

    let mut lines = Vec::new();
    while lines.len() < 20 << 20 {
        lines.extend_from_slice(&[b'l'; 100 * 1024]);
        lines.push(b'\n');
    }
    let r = h.run_stdin(&["send", "x", "--as", "x", "--stdin", "--lines"], &lines);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(message_rows(&h), 0, "part of an oversized stdin was sent");
}

/// issue 9 item 21e: log lines written to a stderr that is not a terminal carry no ANSI
/// colour (they reached a model's tool output).
#[test]
fn logs_to_a_pipe_are_not_coloured() {
    let h = Home::new();
    let mut c = h.cmd(&["register", "a"]);
    c.env("RELAY_LOG", "debug").env_remove("NO_COLOR");
    let r = run(c, None, DEADLINE);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("migrated schema"), "{}", r.stderr);
    assert!(!r.stderr.contains('\x1b'), "{:?}", r.stderr);
}

/// issue 9 item 7: `relay doctor` judges the data directory as relay does: ours at 0755 is
/// a warning (relay uses it), ours at 0770 a failure (relay refuses it); both name the fix.
#[test]
fn doctor_judges_the_home_as_relay_does() {
    let verdict = |m: u32| {
        let h = Home::new();
        h.register("a");
        chmod(&h.path(), m);
        let r = h.run(&["doctor", "--json"]);
        let d = r.doc();
        let c = d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "data directory")
            .unwrap()
            .clone();
        if c["status"] != "ok" {
            assert_eq!(c["fix"], format!("chmod 700 {}", h.path().display()));
        }
        c["status"].as_str().unwrap().to_string()
    };
    assert_eq!(verdict(0o755), "warn");
    assert_eq!(verdict(0o770), "fail");
    assert_eq!(verdict(0o700), "ok");
}

/// Issue 9 item 10, the fix's own race: the foreign-database check read the version and
/// the table list in two snapshots, so a process opening a fresh home while another ran
/// the first migration could call relay's own database foreign (seen in
/// `concurrent_upserts_from_sixteen_processes_lose_no_field`). 16 processes opening one
/// fresh home at once, 8 rounds: none may fail.
#[test]
fn sixteen_processes_opening_a_fresh_home_never_call_it_foreign() {
    for round in 0..8 {
        let h = Home::new();
        let children: Vec<_> = (0..16)
            .map(|i| {
                h.cmd(&["register", &format!("n{i}")])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = wait_with_deadline(c, DEADLINE, "relay register");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Review of issue 9 (item 10 beyond version 0): a foreign SQLite file at user_version 1
/// or 2 was taken for relay's and migrated (relay added `bindings` and bumped the version,
/// then failed on a missing table). relay's file is marked with its application id now;
/// anything unmarked without relay's tables is refused untouched at any version, and an
/// older relay database (unmarked, with relay's tables) still opens.
#[test]
fn a_foreign_sqlite_database_at_any_user_version_is_refused_untouched() {
    for version in [1, 2, 7] {
        let h = Home::new();
        std::fs::create_dir(h.path()).unwrap();
        chmod(&h.path(), 0o700);
        {
            let c = rusqlite::Connection::open(h.db()).unwrap();
            c.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);")
                .unwrap();
            c.pragma_update(None, "user_version", version).unwrap();
        }
        chmod(&h.db(), 0o600);
        let before = bytes(&h.db());
        let r = h.run(&["register", "a", "--json"]);
        assert_eq!(r.code, 1, "user_version {version}: {}", r.stdout);
        assert_eq!(r.doc()["error"]["kind"], "foreign-database", "{version}");
        assert_eq!(
            bytes(&h.db()),
            before,
            "user_version {version}: the file changed"
        );
    }
    // An older relay database: relay's tables, user_version 2, no application id.
    let h = Home::new();
    h.register("old");
    {
        let c = rusqlite::Connection::open(h.db()).unwrap();
        // Back to what version 2 had: without version 4's column and indexes, version
        // 5's host, version 6's search index and reservations and version 7's events.
        c.execute_batch(DROP_V7).unwrap();
        c.execute_batch(
            "DROP INDEX messages_thread; DROP INDEX messages_sender; \
             ALTER TABLE messages DROP COLUMN injected_at; \
             ALTER TABLE endpoints DROP COLUMN host; \
             DROP TRIGGER messages_fts_delete; DROP TABLE messages_fts; \
             DROP TABLE reservations;",
        )
        .unwrap();
        c.pragma_update(None, "application_id", 0).unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
    }
    let d = h.json(&["roster"]);
    assert_eq!(d["endpoints"][0]["name"], "old");
    let c = rusqlite::Connection::open(h.db()).unwrap();
    let app: i64 = c
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(app, relay::store::APPLICATION_ID, "marked on migration");
}

/// Review of issue 9: `status ''` and `ack ''` searched for an empty id (exit 3, "no
/// message has an id starting with ''"); `RELAY_RUNTIME_DIR` naming a file said "File
/// exists". Both are now clear errors that say what would be right.
#[test]
fn empty_ids_and_a_runtime_dir_that_is_a_file_are_clear_errors() {
    let h = Home::new();
    h.register("a");
    for args in [
        &["status", ""][..],
        &["ack", "--as", "a", ""],
        &["status", "ab"],
    ] {
        let r = h.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("at least 4 characters"), "{}", r.stderr);
    }
    let file = h.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let mut c = h.cmd(&["listen", "--as", "a"]);
    c.env("RELAY_RUNTIME_DIR", &file);
    let r = run(c, None, DEADLINE);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("is not a directory"), "{}", r.stderr);
}
