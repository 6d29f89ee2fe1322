//! Test support: a temporary `RELAY_HOME` and a builder that runs the real `relay` binary
//! with a deadline, so a hang fails the test instead of stalling CI.
#![allow(dead_code)]

pub mod backend;
pub mod mcp;
pub mod repo;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// SQL that removes what schema version 7 added (the event log and its triggers), for
/// tests that put a database back to what an older relay wrote. The triggers go first:
/// they name columns older downgrades drop.
pub const DROP_V7: &str = "DROP TRIGGER events_message_queued; \
     DROP TRIGGER events_message_state; DROP TRIGGER events_message_unheld; \
     DROP TRIGGER events_message_injected; DROP TRIGGER events_message_expired; \
     DROP TRIGGER events_endpoint_registered; DROP TRIGGER events_endpoint_renamed; \
     DROP TRIGGER events_presence_bound; DROP TRIGGER events_presence_rebound; \
     DROP TRIGGER events_presence_unbound; DROP TRIGGER events_reservation_taken; \
     DROP TRIGGER events_reservation_renewed; DROP TRIGGER events_reservation_released; \
     DROP TABLE events;";

/// Default deadline for one relay invocation.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A fresh, private relay home that is deleted when dropped.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// `$RELAY_HOME` (a subdirectory, so relay creates it with its own permissions).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn db(&self) -> PathBuf {
        self.path().join("relay.db")
    }

    /// A `relay` command with this home and a clean environment. `RELAY_TEST_BIN` runs
    /// another build instead (e.g. the code before a fix, to see a regression test fail).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(relay_bin());
        c.args(args)
            .env("RELAY_HOME", self.path())
            .env_remove("RELAY_AS")
            .env_remove("RELAY_STORE")
            .env_remove("RELAY_HOST")
            .env_remove("RELAY_MAX_BODY")
            .env_remove("RELAY_DURABILITY")
            .env_remove("XDG_RUNTIME_DIR")
            .env("RELAY_LOG", "warn");
        c
    }

    /// Runs `relay args…` to completion within [`DEADLINE`].
    pub fn run(&self, args: &[&str]) -> Run {
        run(self.cmd(args), None, DEADLINE)
    }

    /// Runs `relay args…` with `stdin` bytes.
    pub fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        run(self.cmd(args), Some(stdin), DEADLINE)
    }

    /// Runs with `--json` and returns the parsed document, asserting exit 0.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let r = self.run(&a);
        assert_eq!(r.code, 0, "relay {args:?} failed: {}", r.stderr);
        r.doc()
    }

    /// Registers `name` and returns its id.
    pub fn register(&self, name: &str) -> String {
        let d = self.json(&["register", name]);
        d["endpoint"]["id"].as_str().unwrap().to_string()
    }
}

/// Waits (bounded by `deadline`) for `ready`, looking every 5 ms; panics naming `what`
/// when the deadline passes. For events with no notification (a file appearing, a state
/// in the database), never to "let things settle".
pub fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + deadline;
    while !ready() {
        assert!(
            std::time::Instant::now() < end,
            "{what} did not happen within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`wait_until`] with a 30 s deadline.
pub fn wait_for(what: &str, ready: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(30), ready)
}

/// The relay binary under test: `RELAY_TEST_BIN` if set, else this build's.
pub fn relay_bin() -> PathBuf {
    std::env::var_os("RELAY_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_relay")))
}

/// The outcome of one invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as exactly one JSON document.
    pub fn doc(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {:?}", self.stdout))
    }
}

/// Waits for `child` at most `deadline`; kills it and panics when it overruns.
pub fn wait_with_deadline(child: Child, deadline: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            panic!("{what} did not finish within {deadline:?}");
        }
    }
}

/// Runs `cmd` with optional stdin, within `deadline`.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, deadline: Duration) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().expect("spawn relay");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let out = wait_with_deadline(child, deadline, &what);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every message id stored for `name`, whatever its state (via `relay status` would need
/// ids; this peeks and counts pending ones).
pub fn pending(home: &Home, name: &str) -> u64 {
    let d = home.json(&["roster"]);
    d["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["pending"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("{name} not in roster"))
}

/// Bytes of a file, for before/after comparisons.
pub fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

/// Rows in the messages table, read straight from the database file (read-only): the
/// ground truth for "nothing was stored".
pub fn message_rows(home: &Home) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        home.db(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open db read-only");
    conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .expect("count messages")
}

/// Runs `f` on its own thread and fails the test when it takes longer than `limit`.
pub fn with_deadline(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => h.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test exceeded its {limit:?} deadline"),
    }
}
