//! Presence (DESIGN.md §2) from real facts: a listening socket, a running process, a
//! resumable session, another host's last-seen time; and what `relay gc` and the router
//! do with it.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};

use common::Home;
use relay::config::Config;
use relay::store::{Kind, ProcessRef, Registration, SqliteStore, Store};
use serde_json::Value;

const SESSION: &str = "0199aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee";

/// The roster row of `name`, from `relay roster --json`.
fn row(h: &Home, name: &str) -> Value {
    h.json(&["roster"])["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the roster"))
        .clone()
}

fn store(h: &Home) -> SqliteStore {
    SqliteStore::open(&Config::at(h.path())).unwrap()
}

/// A child process that runs until killed, and its pid with start time.
fn sleeper() -> (Child, ProcessRef) {
    let child = Command::new("sleep")
        .arg("300")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let p = relay::agents::procfs::stat(child.id()).unwrap().process;
    (child, p)
}

/// Registers `name` as a `kind` endpoint run by process `p`.
fn register_process(h: &Home, name: &str, kind: Kind, id: Option<&str>, p: ProcessRef) {
    store(h)
        .register(&Registration {
            id: id.map(str::to_string),
            name: Some(name.into()),
            kind: Some(kind),
            cwd: Some(h.path().parent().unwrap().to_string_lossy().into_owned()),
            pid: Some(p.pid),
            pid_start: Some(p.start),
            ..Registration::default()
        })
        .unwrap();
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    // Reaped, so its pid no longer names it (a zombie counts as not running anyway).
    child.wait().unwrap();
}

#[test]
fn a_listening_endpoint_is_live_and_the_probe_leaves_no_trace() {
    let h = Home::new();
    h.register("ear");
    let mut listen = h.cmd(&["listen", "--as", "ear"]);
    listen
        .env("RELAY_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = listen.spawn().unwrap();
    common::wait_for("ear listens", || row(&h, "ear")["presence"] == "live");
    let r = row(&h, "ear");
    assert!(r["why"].as_str().unwrap().contains("socket answers"), "{r}");
    let seen = r["last_seen"].as_i64().unwrap();
    assert!(
        (relay::clock::now_ms() - seen).abs() < 60_000,
        "last seen is now: {r}"
    );
    // The text roster has the columns.
    let text = h.run(&["roster"]).stdout;
    let header = text.lines().next().unwrap();
    assert!(
        header.contains("PRESENCE") && header.contains("LAST SEEN"),
        "{text}"
    );
    assert!(text.contains("live") && text.contains("just now"), "{text}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    // The probe said goodbye: the listener logged no broken connection for it.
    assert!(!err.contains("connection closed"), "{err}");
    // Killed: its socket is stale, its pid dead.
    let r = row(&h, "ear");
    assert_eq!(r["presence"], "gone", "{r}");
}

#[test]
fn a_running_process_is_active_and_gone_once_killed() {
    let h = Home::new();
    let (child, p) = sleeper();
    register_process(&h, "worker", Kind::Process, None, p);
    let r = row(&h, "worker");
    assert_eq!(r["presence"], "active", "{r}");
    assert!(
        r["why"].as_str().unwrap().contains(&p.pid.to_string()),
        "{r}"
    );
    kill(child);
    let r = row(&h, "worker");
    assert_eq!(r["presence"], "gone", "{r}");
    assert!(r["why"].as_str().unwrap().contains("exited"), "{r}");
}

#[test]
fn a_resumable_session_not_running_is_dormant() {
    let h = Home::new();
    let cwd = tempfile::tempdir().unwrap();
    let cwd_s = cwd.path().to_string_lossy().into_owned();
    let out = h.run(&[
        "register",
        "napper",
        "--kind",
        "claude-code",
        "--id",
        SESSION,
        "--cwd",
        &cwd_s,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = row(&h, "napper");
    assert_eq!(r["presence"], "dormant", "{r}");
    assert!(r["why"].as_str().unwrap().contains("resumable"), "{r}");
    // Its directory gone, it cannot be resumed: gone.
    drop(cwd);
    let r = row(&h, "napper");
    assert_eq!(r["presence"], "gone", "{r}");
    assert!(r["why"].as_str().unwrap().contains("does not exist"), "{r}");
}

#[test]
fn a_running_session_is_active_and_a_wake_of_it_is_refused_saying_so() {
    let h = Home::new();
    let (child, p) = sleeper();
    register_process(&h, "busy", Kind::ClaudeCode, Some(SESSION), p);
    h.register("lead");
    let r = row(&h, "busy");
    assert_eq!(r["presence"], "active", "{r}");
    // The router reads the same presence: an active session is not dormant, so a wake is
    // refused and nothing is stored; plain mail goes to its mailbox.
    let out = h.run(&["send", "busy", "--as", "lead", "--wake", "--json", "hi"]);
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert_eq!(out.doc()["error"]["kind"], "not-wakeable");
    assert!(out.stdout.contains("active"), "{}", out.stdout);
    assert_eq!(common::message_rows(&h), 0);
    assert_eq!(
        h.json(&["send", "busy", "--as", "lead", "hi"])["route"],
        "mailbox"
    );
    kill(child);
    assert_eq!(row(&h, "busy")["presence"], "dormant");
}

#[test]
fn another_hosts_endpoint_is_judged_by_last_seen_only() {
    let h = Home::new();
    let cwd = h.path().parent().unwrap().to_string_lossy().into_owned();
    let mut reg = h.cmd(&[
        "register",
        "far",
        "--kind",
        "claude-code",
        "--id",
        SESSION,
        "--cwd",
        &cwd,
    ]);
    reg.env("RELAY_HOST", "far-away-box");
    let out = common::run(reg, None, common::DEADLINE);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = row(&h, "far");
    // Resumable-looking and not running here, yet not dormant: only its own machine can
    // tell or resume it.
    assert_eq!(r["presence"], "active", "just registered: {r}");
    let why = r["why"].as_str().unwrap();
    assert!(
        why.contains("far-away-box") && why.contains("last-seen only"),
        "{r}"
    );
    assert_eq!(r["last_seen"], r["updated_at"], "{r}");
}

#[test]
fn a_mailbox_with_no_process_is_idle_not_gone() {
    let h = Home::new();
    h.run(&["register", "alice", "--kind", "human"]);
    let r = row(&h, "alice");
    assert_eq!(r["presence"], "idle", "{r}");
    let r2 = h.run(&["register", "sink", "--no-mailbox"]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    assert_eq!(row(&h, "sink")["presence"], "gone");
}

#[test]
fn gc_drops_bindings_and_reservations_of_gone_sessions_only() {
    let h = Home::new();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().to_string_lossy().into_owned();
    let (child, p) = sleeper();
    register_process(&h, "leaver", Kind::Process, None, p);
    h.run(&["register", "alice", "--kind", "human"]);
    for (who, glob) in [("leaver", "src/**"), ("alice", "docs/**")] {
        let out = h.run(&["reserve", "--as", who, "--project", &dir, glob]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let s = store(&h);
    let leaver = s.resolve("leaver").unwrap();
    s.bind(p, &leaver.id).unwrap();
    // While it runs, gc leaves everything.
    let d = h.json(&["gc"]);
    assert_eq!(d["reservations_released"], 0, "{d}");
    assert_eq!(d["bindings_deleted"], 0, "{d}");
    kill(child);
    let d = h.json(&["gc"]);
    assert_eq!(d["reservations_released"], 1, "{d}");
    assert_eq!(d["bindings_deleted"], 1, "{d}");
    assert_eq!(
        d["released_holders"][0]["holder"],
        leaver.id.as_str(),
        "{d}"
    );
    let left = h.json(&["reservations", "--all-projects"]).to_string();
    assert!(
        left.contains("docs/**") && !left.contains("src/**"),
        "the idle human keeps hers: {left}"
    );
    assert!(s.bindings().unwrap().is_empty());
}
