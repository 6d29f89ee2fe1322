//! Issue 12 review: presence probes, presence of endpoints that once ran `relay listen`,
//! and the git guard's install, uninstall and check.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::repo::Repo;
use super::common::{DEADLINE, Home, run, with_deadline};
use relay::config::Config;
use relay::store::{Kind, Registration, SqliteStore, Store};
use serde_json::Value;

fn store(h: &Home) -> SqliteStore {
    SqliteStore::open(&Config::at(h.path())).unwrap()
}

/// Registers `name` (kind process) directly in the store; its id.
fn register(h: &Home, name: &str) -> String {
    store(h)
        .register(&Registration {
            name: Some(name.into()),
            ..Registration::default()
        })
        .unwrap()
        .endpoint
        .id
}

fn roster_row(h: &Home, name: &str) -> Value {
    h.json(&["roster"])["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the roster"))
        .clone()
}

/// A socket at `path` that `listen(0)`s and never accepts, its backlog filled by pending
/// connections, so a blocking `connect` to it waits forever. Kept open while returned.
fn stalled_socket(path: &Path) -> Vec<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let sock = |flags| {
        rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None).unwrap()
    };
    let addr = SocketAddrUnix::new(path).unwrap();
    let listener = sock(SocketFlags::CLOEXEC);
    rustix::net::bind(&listener, &addr).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let mut fds = vec![listener];
    // Fill the backlog until the kernel says it is full (EAGAIN).
    for _ in 0..8 {
        let c = sock(SocketFlags::CLOEXEC | SocketFlags::NONBLOCK);
        let full = rustix::net::connect(&c, &addr).is_err();
        fds.push(c);
        if full {
            return fds;
        }
    }
    panic!("the backlog of {} never filled", path.display());
}

/// Pins: the presence probe's connect had no timeout, so one socket whose listener
/// stopped accepting (a full backlog) hung `relay roster` — and `relay send`, gc and the
/// guard — forever in the kernel's wait for the peer.
#[test]
fn a_socket_that_never_accepts_does_not_hang_roster_or_send() {
    with_deadline(Duration::from_secs(30), || {
        let h = Home::new();
        let id = register(&h, "stuck");
        let _held = stalled_socket(&h.path().join("run").join(format!("{id}.sock")));
        let started = Instant::now();
        let r = roster_row(&h, "stuck");
        assert_ne!(r["presence"], "live", "{r}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        h.register("me");
        let out = h.run(&["send", "stuck", "--as", "me", "hello"]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    });
}

/// Pins: every endpoint was probed one after another, each up to the probe timeout, so a
/// roster of 200 stalled sockets took 102 s; they are probed together under one deadline.
#[test]
fn many_stalled_sockets_are_probed_within_one_deadline() {
    with_deadline(Duration::from_secs(40), || {
        let h = Home::new();
        let mut held = Vec::new();
        for i in 0..40 {
            let id = register(&h, &format!("stuck{i}"));
            held.push(stalled_socket(
                &h.path().join("run").join(format!("{id}.sock")),
            ));
        }
        let started = Instant::now();
        let d = h.json(&["roster"]);
        let took = started.elapsed();
        assert_eq!(d["endpoints"].as_array().unwrap().len(), 40, "{d}");
        // 40 × 500 ms one by one would be 20 s; together, one deadline plus start-up.
        assert!(took < Duration::from_secs(5), "roster took {took:?}");
    });
}

/// Pins: the probe bounded each read, not the whole handshake, so a peer that accepts and
/// trickles a byte every 0.3 s held one probe for the frame deadline (~10 s).
#[test]
fn a_trickling_peer_holds_a_probe_at_most_its_timeout() {
    with_deadline(Duration::from_secs(30), || {
        use std::io::Write;
        let h = Home::new();
        let id = register(&h, "slow");
        let run_dir = h.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let listener =
            std::os::unix::net::UnixListener::bind(run_dir.join(format!("{id}.sock"))).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if conn.write_all(&[0]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                });
            }
        });
        let started = Instant::now();
        let r = roster_row(&h, "slow");
        let took = started.elapsed();
        assert_ne!(r["presence"], "live", "{r}");
        assert!(took < Duration::from_secs(4), "roster took {took:?}");
    });
}

/// `relay listen --as name` for a moment, then killed: its pid stays recorded.
fn listen_briefly(h: &Home, name: &str) {
    let mut c = h.cmd(&["listen", "--as", name]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    super::common::wait_for("it listens", || roster_row(h, name)["presence"] == "live");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Pins: a human endpoint that once ran `relay listen` was "gone" forever after ("pid N
/// exited"): its reservations showed gone, the guard passed others' commits over them,
/// others' `relay reserve` and `relay gc` released them.
#[test]
fn a_human_who_once_listened_is_never_gone() {
    with_deadline(DEADLINE, || {
        let h = Home::new();
        let project = tempfile::tempdir().unwrap();
        let dir = project.path().to_string_lossy().into_owned();
        let out = h.run(&["register", "hum", "--kind", "human"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        listen_briefly(&h, "hum");
        let r = roster_row(&h, "hum");
        assert_eq!(r["presence"], "idle", "{r}");
        let out = h.run(&["reserve", "h/**", "--as", "hum", "--project", &dir]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let d = h.json(&["reservations", "--project", &dir]);
        assert_ne!(d["reservations"][0]["presence"], "gone", "{d}");
        let d = h.json(&["gc"]);
        assert_eq!(d["reservations_released"], 0, "{d}");
        h.register("other");
        // Another session's overlapping reserve is refused, naming her, not granted over a
        // released reservation of hers.
        let out = h.run(&["reserve", "h/x.rs", "--as", "other", "--project", &dir]);
        assert_ne!(out.code, 0, "{}", out.stdout);
        assert!(out.stderr.contains("hum"), "{}", out.stderr);
    });
}

/// Pins: a mailbox endpoint whose recorded pid exited was gone even when it registered
/// again long after that process ran; the stale pid now counts only when the last
/// registration recorded it.
#[test]
fn a_stale_pid_from_before_the_last_registration_does_not_make_it_gone() {
    let h = Home::new();
    let mut child = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    // A process that started at boot (start time 0 ticks), registered now: the pid was
    // recorded long before this registration.
    store(&h)
        .register(&Registration {
            name: Some("worker".into()),
            kind: Some(Kind::Process),
            pid: Some(pid),
            pid_start: Some(0),
            ..Registration::default()
        })
        .unwrap();
    let r = roster_row(&h, "worker");
    assert_eq!(r["presence"], "idle", "{r}");
    assert!(
        r["why"].as_str().unwrap().contains("registered again"),
        "{r}"
    );
}

/// Pins: presence trusted a recorded pid of pid 1 (or of another user's process) with its
/// start time: init never exits, so the endpoint showed active forever.
#[test]
fn pid_one_and_other_users_processes_do_not_count() {
    let h = Home::new();
    let init = relay::agents::procfs::stat(1).unwrap().process;
    store(&h)
        .register(&Registration {
            name: Some("init".into()),
            pid: Some(1),
            pid_start: Some(init.start),
            ..Registration::default()
        })
        .unwrap();
    let r = roster_row(&h, "init");
    assert_ne!(r["presence"], "active", "{r}");
    // Another user's process: only root can start one here.
    if rustix::process::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        let mut other = Command::new("sleep")
            .arg("300")
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap();
        let p = relay::agents::procfs::stat(other.id()).unwrap().process;
        store(&h)
            .register(&Registration {
                name: Some("theirs".into()),
                pid: Some(p.pid),
                pid_start: Some(p.start),
                ..Registration::default()
            })
            .unwrap();
        let r = roster_row(&h, "theirs");
        other.kill().unwrap();
        other.wait().unwrap();
        assert_ne!(r["presence"], "active", "{r}");
        assert!(r["why"].as_str().unwrap().contains("uid 65534"), "{r}");
    }
}

fn put(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every file under `dir` with its bytes, for "nothing was changed".
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// Pins: chaining renamed husky's hook to pre-commit.relay-chained; husky's `h` runs
/// `.husky/$(basename "$0")`, found no `.husky/pre-commit.relay-chained` and exited 0, so
/// the user's failing lint hook no longer blocked commits. A hook that dispatches on its
/// name is refused, nothing changed, with the line to add instead.
#[test]
fn a_husky_hook_is_not_chained_and_still_blocks() {
    let r = Repo::new();
    // husky v9's layout: core.hooksPath .husky/_, each hook sourcing `h`.
    r.git_ok(&["config", "core.hooksPath", ".husky/_"]);
    let husky = r.path().join(".husky");
    put(
        &husky.join("_/pre-commit"),
        "#!/usr/bin/env sh\n. \"$(dirname \"$0\")/h\"\n",
    );
    put(
        &husky.join("_/h"),
        "#!/usr/bin/env sh\nn=$(basename \"$0\")\ns=$(dirname \"$(dirname \"$0\")\")/$n\n\
         [ ! -f \"$s\" ] && exit 0\nsh -e \"$s\"\n",
    );
    put(
        &husky.join("pre-commit"),
        "echo 'lint failed' >&2\nexit 1\n",
    );
    let before = snapshot(&husky);
    let out = r.relay(&["install", "guard"]);
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("guard check || exit 1"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(".husky/pre-commit"), "{}", out.stderr);
    assert_eq!(snapshot(&husky), before, "nothing was changed");
    let c = r.commit("a.txt", "x\n", &[]);
    assert_eq!(c.code, 1, "the lint hook still blocks: {}", c.stderr);
    assert!(c.stderr.contains("lint failed"), "{}", c.stderr);
}

/// Pins: uninstall and reinstall replaced or deleted relay's hook even after the user
/// edited it, losing the edits without a word.
#[test]
fn an_edited_guard_hook_is_neither_replaced_nor_removed() {
    let r = Repo::new();
    let out = r.relay(&["install", "guard"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let hook = r.path().join(".git/hooks/pre-commit");
    let mut text = std::fs::read_to_string(&hook).unwrap();
    text.push_str("# my own line\n");
    std::fs::write(&hook, &text).unwrap();
    for action in ["uninstall", "install"] {
        let out = r.relay(&[action, "guard"]);
        assert_ne!(out.code, 0, "{action}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("edited"), "{action}: {}", out.stderr);
        assert_eq!(std::fs::read_to_string(&hook).unwrap(), text, "{action}");
    }
    // Unedited, it is relay's to replace and remove as before.
    std::fs::remove_file(&hook).unwrap();
    assert_eq!(r.relay(&["install", "guard"]).code, 0);
    assert_eq!(r.relay(&["uninstall", "guard"]).code, 0);
    assert!(!hook.exists());
}

/// Pins: `guard check` compiled one glob per (staged path, reservation) pair: 10 000 staged
/// paths against 41 reservations took 12 minutes. Each glob is compiled once now.
#[test]
fn guard_check_compiles_each_reservation_once() {
    let h = Home::new();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().to_string_lossy().into_owned();
    h.register("bob");
    let globs: Vec<String> = (0..40).map(|i| format!("area{i}/**/*.rs")).collect();
    let mut args = vec!["reserve", "--as", "bob", "--project", &dir];
    args.extend(globs.iter().map(String::as_str));
    let out = h.run(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let staged: Vec<String> = (0..10_000)
        .map(|i| format!("area{}/deep/dir/file{i}.rs", i % 50))
        .collect();
    let s = store(&h);
    let project_key = relay::coord::reserve::project_of(project.path()).unwrap();
    let started = Instant::now();
    let blocking =
        relay::agents::guard::check(&s, &h.path().join("run"), &project_key, None, &staged)
            .unwrap();
    let took = started.elapsed();
    assert_eq!(blocking.len(), 40);
    assert_eq!(blocking[0].paths.len(), 200);
    // Release builds take milliseconds; the bound leaves room for a debug build.
    assert!(took < Duration::from_secs(20), "check took {took:?}");
}

/// Pins: with no store in RELAY_HOME (a hook run with another home than the sessions'),
/// the guard passed every commit without a word.
#[test]
fn the_guard_warns_when_its_home_has_no_store() {
    let r = Repo::new();
    let out = r.relay(&["install", "guard"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let home = r.h.path().join("elsewhere");
    let mut c = r.git(&["commit", "-q", "--allow-empty", "-m", "x"]);
    c.env("RELAY_HOME", &home);
    let out = run(c, None, DEADLINE);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("no relay store") && out.stderr.contains(&*home.to_string_lossy()),
        "{}",
        out.stderr
    );
    assert!(!home.join("relay.db").exists(), "no store was created");
}

/// Pins: installed from a subdirectory with a relative core.hooksPath, the hook's path
/// was printed as `…/sub/deep/../../.githooks/pre-commit`.
#[test]
fn install_from_a_subdirectory_prints_a_clean_path() {
    let r = Repo::new();
    r.git_ok(&["config", "core.hooksPath", ".githooks"]);
    let deep = r.path().join("sub/deep");
    std::fs::create_dir_all(&deep).unwrap();
    let mut c = r.h.cmd(&["install", "guard"]);
    c.current_dir(&deep);
    let out = run(c, None, DEADLINE);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains(".."), "{}", out.stdout);
    assert!(
        out.stdout.contains(".githooks/pre-commit"),
        "{}",
        out.stdout
    );
}
