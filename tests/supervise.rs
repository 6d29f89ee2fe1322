//! Supervision with real processes killed both ways (the events must happen; the tight
//! figures are measured by `relay demo` and the bench, not asserted here).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use relay::transport::Local;
use relay::transport::supervise::{Supervised, crash_and_recover};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_relay"))
}

#[test]
fn a_killed_child_is_noticed_restarted_once_and_answers_again() {
    let me = Local::new("parent");
    let mut s = Supervised::spawn(exe(), &["supervised-child"], &me).unwrap();
    s.echo().unwrap();
    let old = s.pid();
    let r = crash_and_recover(&mut s, exe(), &["supervised-child"], &me).unwrap();
    assert_ne!(s.pid(), old, "a new child runs");
    assert!(r.detected_us <= r.recovered_us);
    assert!(
        r.detected_us < 5_000_000,
        "noticed within 5 s (measured: {} µs)",
        r.detected_us
    );
    s.echo().unwrap();
    // The old child is really gone.
    assert!(
        !Path::new(&format!("/proc/{old}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{old}/stat")).unwrap_or_default();
            stat.contains(") Z ")
        }
    );
    s.kill();
}

#[test]
fn a_child_whose_parent_is_killed_exits_zero() {
    // Become the subreaper, so the orphaned child is reparented to this test and its exit
    // status can be read.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let mut parent = Command::new(exe())
        .arg("supervisor-parent")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child: i32 = line
        .trim()
        .parse()
        .expect("the parent printed its child's pid");
    parent.kill().unwrap();
    parent.wait().unwrap();
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let pid = rustix::process::Pid::from_raw(child).unwrap();
        let _ = tx.send(rustix::process::waitpid(
            Some(pid),
            rustix::process::WaitOptions::empty(),
        ));
    });
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the child exited within 10 s of its parent's death")
        .unwrap()
        .expect("a status")
        .1;
    assert_eq!(status.exit_status(), Some(0), "{status:?}");
    eprintln!(
        "child exited {:?} after its parent was killed",
        start.elapsed()
    );
}

#[test]
fn a_child_that_stops_answering_is_declared_dead_after_three_missed_pings() {
    use relay::transport::supervise::Health;
    let me = Local::new("parent");
    let mut s = Supervised::spawn(exe(), &["supervised-child"], &me).unwrap();
    s.echo().unwrap();
    // SIGSTOP: the socket stays open, only heartbeats can tell.
    let pid = rustix::process::Pid::from_raw(s.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let t = Instant::now();
    let health = s.monitor(Duration::from_millis(50)).unwrap();
    assert_eq!(health, Health::Hung { missed: 3 });
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "not before 3 intervals"
    );
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    s.kill();
    // A killed child is noticed by the monitor at once, not after pings.
    let mut s = Supervised::spawn(exe(), &["supervised-child"], &me).unwrap();
    s.kill();
    assert_eq!(s.monitor(Duration::from_secs(30)).unwrap(), Health::Exited);
}
