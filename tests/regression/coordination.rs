//! Issue 12 review: search, threads and file reservations (`relay search`, `thread`,
//! `reserve`, `release`, `renew`, `reservations` and their MCP tools).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::common::{self, Home, Run};

/// A project directory (a git top-level, by its `.git` directory) in its own tempdir.
fn project() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("project");
    std::fs::create_dir_all(p.join(".git")).unwrap();
    let p = p.canonicalize().unwrap();
    (d, p)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `relay args… --json`, expecting exit `code`; the document.
fn json_code(h: &Home, args: &[&str], code: i32) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let r = h.run(&a);
    assert_eq!(r.code, code, "relay {args:?}: {}{}", r.stdout, r.stderr);
    r.doc()
}

/// `git args…` in `dir`, which must succeed.
fn git(dir: &Path, args: &[&str]) {
    let mut c = Command::new("git");
    c.args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    let r: Run = common::run(c, None, common::DEADLINE);
    assert_eq!(r.code, 0, "git {args:?}: {}{}", r.stdout, r.stderr);
}

/// Pins: a holder was looked up by `lookup()`, which tries names first, so registering an
/// endpoint *named* like a holder's custom id made the holder seem gone — another
/// session's `reserve` released its reservations (`released_gone`) and `reservations`
/// showed it gone.
#[test]
fn a_name_equal_to_a_holders_id_does_not_make_it_gone() {
    let h = Home::new();
    let (_d, p) = project();
    h.json(&["register", "erin", "--id", "worker2"]);
    h.json(&["reserve", "lib/**", "--as", "erin", "--project", s(&p)]);
    let before = h.json(&["reservations", "--project", s(&p)]);
    let presence = before["reservations"][0]["presence"].clone();
    assert_ne!(presence, "gone", "{before}");
    h.register("worker2");
    h.register("bob");
    let refused = json_code(
        &h,
        &["reserve", "lib/a.rs", "--as", "bob", "--project", s(&p)],
        3,
    );
    assert_eq!(
        refused["conflicts"][0]["held"]["holder"], "worker2",
        "{refused}"
    );
    let after = h.json(&["reservations", "--project", s(&p)]);
    assert_eq!(after["reservations"][0]["holder"], "worker2", "{after}");
    assert_eq!(after["reservations"][0]["presence"], presence, "{after}");
}

/// Pins: `relay thread <message-id>` showed a thread someone *named* like that id
/// instead of the message: bob filing a message under thread "<M3>" hid alice's M3 from
/// her own `relay thread M3`.
#[test]
fn a_thread_named_like_a_message_id_does_not_hide_the_message() {
    let h = Home::new();
    let alice = h.register("alice");
    let bob = h.register("bob");
    h.register("carol");
    let m3 = h.json(&["send", "carol", "--as", "alice", "private"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.json(&["send", "alice", "--as", "bob", "--thread", &m3, "fake"]);
    let c = h.json(&["thread", "--as", "alice", &m3]);
    assert_eq!(c["message"], m3, "{c}");
    let msgs = c["messages"].as_array().unwrap();
    let senders: Vec<(&str, &str)> = msgs
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["from"].as_str().unwrap()))
        .collect();
    assert!(senders.contains(&(m3.as_str(), alice.as_str())), "{c}");
    // bob's message is part of the conversation, under his own name, never as M3's.
    assert!(
        msgs.iter()
            .any(|m| m["from"] == bob.as_str() && m["id"] != m3.as_str()),
        "{c}"
    );
    let text = h.run(&["thread", "--as", "alice", &m3]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("private"), "{}", text.stdout);
    assert!(text.stdout.contains("from bob"), "{}", text.stdout);
    // A thread name that is not an id still works.
    h.json(&["send", "bob", "--as", "alice", "--thread", "build", "b1"]);
    let t = h.json(&["thread", "--as", "alice", "build"]);
    assert_eq!(t["thread"], "build", "{t}");
    assert_eq!(t["messages"].as_array().unwrap().len(), 1, "{t}");
}

/// Pins: each linked worktree (`git worktree add`) was its own project, so a reservation
/// of `src/**` in the main checkout did not cover the same files in another worktree —
/// the one-worktree-per-agent setup escaped every reservation.
#[test]
fn a_linked_worktree_shares_its_main_checkouts_reservations() {
    let h = Home::new();
    let d = tempfile::tempdir().unwrap();
    let main = d.path().join("main");
    std::fs::create_dir_all(main.join("src")).unwrap();
    git(&main, &["init", "-q", "-b", "trunk"]);
    git(&main, &["commit", "-q", "--allow-empty", "-m", "init"]);
    git(&main, &["worktree", "add", "-q", "../wt2"]);
    let main = main.canonicalize().unwrap();
    let wt2 = d.path().join("wt2");
    assert!(wt2.join(".git").is_file());
    h.register("alice");
    h.register("bob");
    h.json(&["reserve", "src/**", "--as", "alice", "--project", s(&main)]);
    let refused = json_code(
        &h,
        &["reserve", "src/a.rs", "--as", "bob", "--project", s(&wt2)],
        3,
    );
    assert_eq!(refused["project"], s(&main), "{refused}");
    let listed = h.json(&["reservations", "--project", s(&wt2)]);
    assert_eq!(listed["project"], s(&main), "{listed}");
    assert_eq!(listed["reservations"][0]["glob"], "src/**", "{listed}");
}

/// Pins: `relay reserve src`, `src` an existing directory, reserved the bare path `src`:
/// `src/**` did not conflict with it and `--conflicts src/a.rs` said "not reserved".
#[test]
fn reserving_a_directory_reserves_what_is_in_it() {
    let h = Home::new();
    let (_d, p) = project();
    std::fs::create_dir_all(p.join("src")).unwrap();
    h.register("alice");
    h.register("bob");
    let got = h.json(&["reserve", "src", "--as", "alice", "--project", s(&p)]);
    assert_eq!(got["granted"][0]["glob"], "src/**", "{got}");
    assert_eq!(got["directories"], json!(["src"]), "{got}");
    let m = h.json(&[
        "reservations",
        "--project",
        s(&p),
        "--conflicts",
        &format!("{}/src/a.rs", s(&p)),
    ]);
    assert_eq!(m["conflicts"][0]["reservation"]["glob"], "src/**", "{m}");
    json_code(
        &h,
        &["reserve", "src/a.rs", "--as", "bob", "--project", s(&p)],
        3,
    );
    // The text says what was done; `release src` releases it again.
    let r = h.run(&["reserve", "src", "--as", "alice", "--project", s(&p)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("src is a directory: reserved as src/**"),
        "{}",
        r.stdout
    );
    let rel = h.json(&["release", "src", "--as", "alice", "--project", s(&p)]);
    assert_eq!(rel["released"][0]["glob"], "src/**", "{rel}");
    // A file, or a path that does not exist, stays as given.
    std::fs::write(p.join("Cargo.toml"), "").unwrap();
    let f = h.json(&[
        "reserve",
        "Cargo.toml",
        "missing",
        "--as",
        "alice",
        "--project",
        s(&p),
    ]);
    assert_eq!(f["directories"], json!([]), "{f}");
}

/// Pins: `--since 2026-01-31T12:00:00+05:00` (RFC 3339 with an offset) was refused, and
/// the message showed the duration parser's error.
#[test]
fn since_takes_rfc3339_offsets() {
    let h = Home::new();
    h.register("alice");
    h.json(&["send", "alice", "--as", "alice", "hello world"]);
    let all = h.json(&[
        "search",
        "--as",
        "alice",
        "--since",
        "2000-01-31T12:00:00+05:00",
        "hello",
    ]);
    assert_eq!(all["results"].as_array().unwrap().len(), 1, "{all}");
    let none = h.json(&[
        "search",
        "--as",
        "alice",
        "--since",
        "2999-01-31T12:00:00-08:00",
        "hello",
    ]);
    assert_eq!(none["results"], json!([]), "{none}");
    let bad = json_code(
        &h,
        &[
            "search",
            "--as",
            "alice",
            "--since",
            "2026-01-31T12:00:00+25:00",
            "hello",
        ],
        2,
    );
    let msg = bad["error"]["message"].as_str().unwrap();
    assert!(msg.contains("offset"), "{msg}");
    assert!(msg.contains("+05:00") && msg.contains("2d"), "{msg}");
    assert!(!msg.contains("time unit"), "{msg}");
}

/// Pins: `relay reservations` escaped a reason twice (`\\x1b`) and printed U+200B and
/// U+FEFF raw; the guard's `{:?}` form (`\u{1b}`, `\u{200b}`) is right.
#[test]
fn reservation_reasons_are_escaped_once_as_the_guard_does() {
    let h = Home::new();
    let (_d, p) = project();
    h.register("alice");
    let reason = "a\x1b[31mb\u{200b}c\u{feff}d";
    h.json(&[
        "reserve",
        "lib/**",
        "--as",
        "alice",
        "--project",
        s(&p),
        "--reason",
        reason,
    ]);
    let r = h.run(&["reservations", "--project", s(&p)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(r#""a\u{1b}[31mb\u{200b}c\u{feff}d""#),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("\\\\"), "{}", r.stdout);
    assert!(
        !r.stdout.contains(['\x1b', '\u{200b}', '\u{feff}']),
        "{:?}",
        r.stdout
    );
}

/// Pins: the MCP tools' params silently ignored unknown fields, so a typo such as
/// `"forse": true` reserved without force and said nothing.
#[test]
fn mcp_tools_refuse_unknown_fields() {
    let h = Home::new();
    h.register("alice");
    let mut m = common::mcp::Mcp::start(&h, Some("alice"));
    for (tool, args) in [
        ("reserve", json!({"globs": ["lib/**"], "forse": true})),
        ("release", json!({"all": true, "globz": ["x"]})),
        ("renew", json!({"tll": "1h"})),
        ("reservations", json!({"conflict": ["a"]})),
        ("search", json!({"query": "x", "sinse": "2d"})),
        ("thread", json!({"id_or_thread": "t", "all": true})),
    ] {
        let (err, v) = m.tool(tool, args);
        assert!(err, "{tool}: {v}");
        assert_eq!(v["error"], "usage", "{tool}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("unknown field"),
            "{tool}: {v}"
        );
    }
    let (err, v) = m.tool("reservations", json!({"all_projects": true}));
    assert!(!err, "{v}");
    assert_eq!(v["reservations"], json!([]), "{v}");
}

/// Pins: `release --all --project <deleted dir>` failed (it could not be
/// canonicalized), so a deleted checkout's reservations could only lapse.
#[test]
fn a_deleted_projects_reservations_can_still_be_released() {
    let h = Home::new();
    let (d, p) = project();
    h.register("alice");
    h.json(&["reserve", "lib/**", "--as", "alice", "--project", s(&p)]);
    std::fs::remove_dir_all(&p).unwrap();
    let listed = h.json(&["reservations", "--project", s(&p)]);
    assert_eq!(listed["reservations"][0]["glob"], "lib/**", "{listed}");
    assert!(
        listed["note"].as_str().unwrap().contains("does not exist"),
        "{listed}"
    );
    let renewed = h.json(&["renew", "--as", "alice", "--project", s(&p)]);
    assert_eq!(renewed["renewed"][0]["glob"], "lib/**", "{renewed}");
    // Named through `..`, as a script in a sibling directory might.
    let via = d.path().join("elsewhere/../project");
    let rel = h.json(&["release", "--all", "--as", "alice", "--project", s(&via)]);
    assert_eq!(rel["project"], s(&p), "{rel}");
    assert_eq!(rel["released"][0]["glob"], "lib/**", "{rel}");
    assert!(rel["note"].is_string(), "{rel}");
    let left = h.json(&["reservations", "--all-projects"]);
    assert_eq!(left["reservations"], json!([]), "{left}");
    // `reserve` still wants a directory that exists.
    json_code(
        &h,
        &["reserve", "lib/**", "--as", "alice", "--project", s(&p)],
        2,
    );
}
