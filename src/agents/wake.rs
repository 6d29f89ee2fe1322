//! `relay wake`: resume a dormant agent session headlessly so it reads its mail
//! (DESIGN.md §9).
//!
//! - Claude Code: `claude -p --resume <uuid> --output-format json -- <nudge>`
//! - Codex: `codex exec resume <uuid> --json -- <nudge>`
//! - pi: `pi --session <uuid> -p <nudge>`
//! - OpenCode: `opencode run --session <ses_…> <nudge>`
//!
//! A Codex session is not dormant just because nothing else runs it: its TUI runs the
//! session inside the shared app-server daemon of its `CODEX_HOME`, which outlives the TUI
//! and is the process relay's hooks bind to (they run as its children). So for Codex the
//! bound process being alive says nothing when it is that daemon (`codex app-server` on its
//! command line); [`state`] asks the daemon instead ([`codex_app::codex_presence`]): a
//! thread with a running turn is at work, an idle thread the daemon holds is woken *in
//! place* by a turn carrying its mail ([`Via::Inject`]), and only a thread no daemon holds
//! is resumed headlessly. Measured on 0.171: the daemon unloads a thread about a minute
//! after its last client (the TUI) left, so "held" means a TUI is attached or just left.
//!
//! Run in the session's working directory (refused when it no longer exists), as an argv
//! — never through a shell — with `--` before the message, for UUID session ids only. The
//! agent program is found on `PATH` *before* changing into that directory, in absolute
//! `PATH` entries only: an empty or relative entry would mean the session's directory, and
//! a `./claude` planted there must never run.
//! One wake per target at a time: an exclusive `flock` on `$RELAY_HOME/wake/<id>.lock`,
//! which the kernel releases if relay dies. A second wake meanwhile is refused with
//! "wake in progress".

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Agent, claude, codex, codex_app};
use crate::store::{Endpoint, Kind, Store};

/// Default nudge sent to the woken session.
pub const DEFAULT_NUDGE: &str = "relay: you have new mail from other sessions. Read it with \
the relay inbox tool (or `relay inbox`), answer with the send tool if a sender expects a \
reply, then stop.";

/// Default limit on a wake: 10 minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a session cannot be woken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a Claude Code or Codex session.
    #[error("{name} is a {kind} endpoint; only Claude Code and Codex sessions can be woken")]
    NotAgent {
        /// Endpoint label.
        name: String,
        /// Its kind.
        kind: String,
    },
    /// The endpoint id is not a UUID session id.
    #[error(
        "{name}'s id {id} is not an agent session id (a UUID; OpenCode: ses_…); only sessions registered by relay's hooks can be woken"
    )]
    NotUuid {
        /// Endpoint label.
        name: String,
        /// Its id.
        id: String,
    },
    /// The session lives on another machine (a shared NATS store): only that machine
    /// can resume it.
    #[error(
        "{name} is a session on {host}, not on this machine ({here}); run relay wake there, or send mail and it is read when the session next runs"
    )]
    OtherHost {
        /// Endpoint label.
        name: String,
        /// Where it registered.
        host: String,
        /// This machine.
        here: String,
    },
    /// No working directory is known, or it is gone.
    #[error("{}", no_cwd(name, cwd.as_deref()))]
    NoCwd {
        /// Endpoint label.
        name: String,
        /// The recorded directory, if any.
        cwd: Option<String>,
    },
    /// The session's agent process still runs: it is not dormant.
    #[error(
        "{name} is running (agent pid {pid}); mail reaches it through its hooks, no wake needed"
    )]
    Running {
        /// Endpoint label.
        name: String,
        /// The agent process.
        pid: u32,
    },
    /// Another wake of the same session is running.
    #[error("wake in progress: another relay is already waking {name}; try again when it ends")]
    InProgress {
        /// Endpoint label.
        name: String,
    },
    /// The agent program is not in any absolute `PATH` entry.
    #[error(
        "cannot find {program} on PATH (searched: {searched}; empty and relative entries are skipped, since wake runs in the session's directory): is it installed?"
    )]
    NotOnPath {
        /// The program looked for.
        program: String,
        /// The directories searched, `:`-separated.
        searched: String,
    },
    /// A directory of `$RELAY_HOME/wake` is unsafe or cannot be made.
    #[error(transparent)]
    Dir(crate::store::Error),
    /// The agent program could not be started.
    #[error("cannot start {program}: {err} (is it installed and on PATH?)")]
    Spawn {
        /// `argv[0]`.
        program: String,
        /// The OS error.
        err: std::io::Error,
    },
    /// The lock file could not be made.
    #[error("cannot lock {path}: {err}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
}

fn no_cwd(name: &str, cwd: Option<&str>) -> String {
    match cwd {
        Some(c) => format!(
            "{name}'s working directory {c} does not exist; the session cannot be resumed there"
        ),
        None => format!(
            "{name} has no recorded working directory; the session cannot be resumed without one"
        ),
    }
}

/// Where to look for programs when `PATH` is unset (glibc's `confstr(_CS_PATH)`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Finds `program` in the absolute entries of `path` (a `PATH` value; `None`: unset),
/// first match wins, as `execvp` would, but skipping empty and relative entries, which
/// would resolve against whatever directory the child runs in. A `program` containing a
/// `/` is taken as it is, made absolute against this process's directory.
///
/// # Errors
/// [`Error::NotOnPath`] when no absolute entry holds an executable file of that name.
pub fn find_program(program: &str, path: Option<&OsStr>) -> Result<PathBuf, Error> {
    if program.contains('/') {
        return std::path::absolute(program).map_err(|err| Error::Spawn {
            program: program.to_string(),
            err,
        });
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    let dirs: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .collect();
    for dir in &dirs {
        let candidate = dir.join(program);
        let is_file = std::fs::metadata(&candidate).is_ok_and(|m| m.is_file());
        if is_file && rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok() {
            return Ok(candidate);
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(Error::NotOnPath {
        program: program.to_string(),
        searched: if searched.is_empty() {
            "no absolute entries".into()
        } else {
            searched.join(":")
        },
    })
}

/// How a wake reaches the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// Headless resume: the agent program runs in the session's directory.
    Resume,
    /// A turn started in the idle session held by Codex's app-server (no program runs).
    Inject,
}

/// What a wake would run.
#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    /// Which agent.
    pub agent: Agent,
    /// How the session is reached.
    pub via: Via,
    /// The argv, program first (an absolute path once [`run`] found it on `PATH`); empty
    /// for [`Via::Inject`].
    pub argv: Vec<String>,
    /// The directory it runs in (for [`Via::Inject`], the session's recorded directory).
    pub cwd: PathBuf,
    /// The `CODEX_HOME` whose daemon holds the session, for [`Via::Inject`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codex_home: Option<PathBuf>,
}

/// What a wake did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The endpoint woken.
    pub endpoint_id: String,
    /// What was run.
    #[serde(flatten)]
    pub invocation: Invocation,
    /// True when only planned.
    pub dry_run: bool,
    /// The child's exit code (None: killed, timed out, or dry run).
    pub exit_code: Option<i32>,
    /// True when the child was killed at the timeout.
    pub timed_out: bool,
    /// Wall time, ms.
    pub duration_ms: u64,
    /// The end of the child's stdout (at most 4 KiB).
    pub stdout_tail: String,
    /// The end of the child's stderr (at most 4 KiB).
    pub stderr_tail: String,
    /// [`Via::Inject`]: the turn started (or joined) in the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<codex_app::Injected>,
    /// [`Via::Inject`]: the mail ids the turn carried (empty: it carried the nudge).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub injected: Vec<String>,
    /// [`Via::Inject`]: why no turn was started (the mail is pending again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// True when the wake did its job: planned only, the agent exited 0, or a turn was
    /// injected.
    pub fn ok(&self) -> bool {
        self.dry_run
            || match self.invocation.via {
                Via::Resume => self.exit_code == Some(0),
                Via::Inject => self.turn.is_some(),
            }
    }
}

/// The session's agent process, when it still runs (same pid and start time).
pub fn running(e: &Endpoint) -> Option<u32> {
    // A pid from another machine says nothing about this one's processes.
    if !e.is_local() {
        return None;
    }
    let p = crate::store::ProcessRef {
        pid: e.pid?,
        start: e.pid_start?,
    };
    super::procfs::alive(p).then_some(p.pid)
}

/// Whether a session is at work, idle in a daemon, or dormant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum State {
    /// At work: its own agent process runs (Claude Code, a Codex process that is not the
    /// app-server), or Codex's daemon runs a turn in it (or cannot be asked while the bound
    /// process lives). Mail reaches it through its hooks.
    AtWork {
        /// The bound agent process, if it runs.
        pid: Option<u32>,
    },
    /// A Codex session its app-server holds with no turn running: woken in place.
    HeldIdle,
    /// Nothing runs it: woken by a headless resume.
    Dormant,
}

/// The `CODEX_HOME` whose daemon may hold Codex sessions: `$CODEX_HOME`, else
/// `$HOME/.codex` ([`codex::home_dir`]); `None` when neither is set (a relative
/// `.codex` would depend on the working directory).
pub fn codex_home() -> Option<PathBuf> {
    if std::env::var_os("CODEX_HOME").is_some_and(|v| !v.is_empty()) {
        return Some(codex::home_dir(Path::new("/")));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(codex::home_dir(Path::new(&home)))
}

/// The pid the daemon of `codex_home` recorded (`app-server-daemon/daemon.pid`, JSON
/// `{"pid": …}` in 0.171), if that file is readable.
fn daemon_pid(codex_home: &Path) -> Option<u32> {
    let text =
        std::fs::read_to_string(codex_home.join("app-server-daemon").join("daemon.pid")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    u32::try_from(v.get("pid")?.as_u64()?).ok()
}

/// The state of `e` (see the module docs). For Codex sessions this asks the daemon of
/// `codex_home` (`None`: unknown; at most [`codex_app::PRESENCE_TIMEOUT`]) unless the bound process runs
/// and is not an app-server. A daemon that cannot be asked counts as at work while the
/// bound process lives (a headless resume beside a daemon that may hold the thread would
/// run one session twice), else as dormant.
pub fn state(e: &Endpoint, codex_home: Option<&Path>) -> State {
    let pid = running(e);
    if e.kind != Kind::Codex || pid.is_some_and(|p| !codex_app::is_app_server(p)) {
        return match pid {
            Some(_) => State::AtWork { pid },
            None => State::Dormant,
        };
    }
    let presence = match codex_home {
        Some(h) => codex_app::codex_presence(h, &e.id),
        None => codex_app::Presence::Unknown,
    };
    match presence {
        codex_app::Presence::Held { running: true } => State::AtWork { pid },
        codex_app::Presence::Held { running: false } => State::HeldIdle,
        codex_app::Presence::NotHeld => State::Dormant,
        codex_app::Presence::Unknown if pid.is_some() => State::AtWork { pid },
        codex_app::Presence::Unknown => State::Dormant,
    }
}

/// Plans the wake of `e` with `nudge`: checks kind, id, [`state`] (with the
/// [`codex_home`] of this environment) and working directory.
///
/// # Errors
/// [`Error::NotAgent`], [`Error::NotUuid`], [`Error::OtherHost`], [`Error::Running`],
/// [`Error::NoCwd`].
pub fn invocation(e: &Endpoint, nudge: &str) -> Result<Invocation, Error> {
    invocation_in(e, nudge, codex_home().as_deref())
}

/// [`invocation`] with Codex sessions looked up in the daemon of `codex_home`.
///
/// # Errors
/// As [`invocation`].
pub fn invocation_in(
    e: &Endpoint,
    nudge: &str,
    codex_home: Option<&Path>,
) -> Result<Invocation, Error> {
    let name = e.display_name().to_string();
    let agent = Agent::of_kind(e.kind).ok_or_else(|| Error::NotAgent {
        name: name.clone(),
        kind: e.kind.to_string(),
    })?;
    if !agent.session_id_shaped(&e.id) {
        return Err(Error::NotUuid {
            name,
            id: e.id.clone(),
        });
    }
    if !e.is_local() {
        return Err(Error::OtherHost {
            name,
            host: e.host.clone().unwrap_or_default(),
            here: crate::store::local_host(),
        });
    }
    match state(e, codex_home) {
        State::AtWork { pid } => {
            return Err(Error::Running {
                name,
                pid: pid.or_else(|| codex_home.and_then(daemon_pid)).unwrap_or(0),
            });
        }
        State::HeldIdle => {
            return Ok(Invocation {
                agent,
                via: Via::Inject,
                argv: Vec::new(),
                cwd: e.cwd.as_deref().map(PathBuf::from).unwrap_or_default(),
                codex_home: codex_home.map(Path::to_path_buf),
            });
        }
        State::Dormant => {}
    }
    resume_plan(e, agent, nudge)
}

/// The headless resume of `e` by `agent`.
fn resume_plan(e: &Endpoint, agent: Agent, nudge: &str) -> Result<Invocation, Error> {
    let name = e.display_name().to_string();
    let cwd = e
        .cwd
        .as_deref()
        .map(PathBuf::from)
        .filter(|c| c.is_dir())
        .ok_or_else(|| Error::NoCwd {
            name,
            cwd: e.cwd.clone(),
        })?;
    let argv = match agent {
        Agent::Claude => claude::resume_argv(&e.id, nudge),
        Agent::Codex => codex::resume_argv(&e.id, nudge),
        Agent::Pi => super::pi::resume_argv(&e.id, nudge),
        Agent::OpenCode => super::opencode::resume_argv(&e.id, nudge),
    };
    Ok(Invocation {
        agent,
        via: Via::Resume,
        argv,
        cwd,
        codex_home: None,
    })
}

/// The lock file for waking `endpoint_id`, under `relay_home`.
pub fn lock_path(relay_home: &Path, endpoint_id: &str) -> PathBuf {
    relay_home.join("wake").join(format!("{endpoint_id}.lock"))
}

/// Takes the per-target wake lock (blocking when `wait`); held until the returned file and
/// any child that inherited it are gone.
///
/// # Errors
/// [`Error::InProgress`] when another process holds it; [`Error::Lock`] otherwise.
pub fn lock(relay_home: &Path, e: &Endpoint, wait: bool) -> Result<std::fs::File, Error> {
    let path = lock_path(relay_home, &e.id);
    let lock_err = |err| Error::Lock {
        path: path.clone(),
        err,
    };
    if let Some(dir) = path.parent() {
        crate::store::home::private_dir(dir).map_err(Error::Dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(lock_err)?;
    let op = if wait {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    };
    match rustix::fs::flock(file.as_fd(), op) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::InProgress {
            name: e.display_name().to_string(),
        }),
        Err(err) => Err(lock_err(err.into())),
    }
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(4096);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Injects into a Codex session its daemon holds idle, under the wake lock: with `store`,
/// its pending mail ([`codex_app::deliver`]); with no mail pending (or no store), `nudge`.
/// `None` when the daemon no longer holds the session (nothing was injected).
fn inject(
    relay_home: &Path,
    e: &Endpoint,
    nudge: &str,
    timeout: Duration,
    wait_for_lock: bool,
    store: Option<&dyn Store>,
    mut report: Report,
) -> Result<Option<Report>, Error> {
    let lock = lock(relay_home, e, wait_for_lock)?;
    let start = Instant::now();
    // Set whenever the plan is Via::Inject.
    let Some(home) = report.invocation.codex_home.clone() else {
        return Ok(None);
    };
    let delivered = match store {
        Some(s) => codex_app::deliver(s, e, &home, timeout),
        None => Ok(None),
    };
    let not_held = |err: &anyhow::Error| {
        matches!(
            err.downcast_ref::<codex_app::Error>(),
            Some(codex_app::Error::NotHeld { .. })
        )
    };
    match delivered {
        Ok(Some((shown, turn))) => {
            report.injected = shown;
            report.turn = Some(turn);
        }
        Ok(None) => match codex_app::inject(&home, &e.id, nudge, timeout) {
            Ok(turn) => report.turn = Some(turn),
            Err(codex_app::Error::NotHeld { .. }) => return Ok(None),
            Err(err) => report.error = Some(err.to_string()),
        },
        // The daemon let the thread go since it was asked: resume it headlessly.
        Err(err) if not_held(&err) => return Ok(None),
        Err(err) => report.error = Some(format!("{err:#}")),
    }
    drop(lock);
    report.duration_ms = start.elapsed().as_millis() as u64;
    Ok(Some(report))
}

/// Wakes `e`. A session a Codex daemon holds idle ([`Via::Inject`]) gets a turn in place:
/// its pending mail from `store` (see [`codex_app::deliver`]), else `nudge`; a failure is
/// reported in [`Report::error`] and the mail stays pending. Otherwise finds the agent on
/// `PATH` ([`find_program`]), takes the lock (or, with `wait_for_lock`, waits for a running
/// wake to end first), runs the agent in the session's directory with `RELAY_AS` set to the
/// session, waits at most `timeout` (then kills its whole process group), and reports the
/// exit status. With `dry_run`, only plans.
///
/// # Errors
/// Any [`Error`].
pub fn run(
    relay_home: &Path,
    e: &Endpoint,
    nudge: &str,
    timeout: Duration,
    dry_run: bool,
    wait_for_lock: bool,
    store: Option<&dyn Store>,
) -> Result<Report, Error> {
    let mut invocation = invocation(e, nudge)?;
    let planned = |invocation| Report {
        endpoint_id: e.id.clone(),
        invocation,
        dry_run,
        exit_code: None,
        timed_out: false,
        duration_ms: 0,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        turn: None,
        injected: Vec::new(),
        error: None,
    };
    if invocation.via == Via::Inject {
        let report = planned(invocation);
        if dry_run {
            return Ok(report);
        }
        match inject(relay_home, e, nudge, timeout, wait_for_lock, store, report)? {
            Some(report) => return Ok(report),
            None => invocation = resume_plan(e, Agent::Codex, nudge)?,
        }
    }
    // Resolved here, in relay's own directory: the child's PATH search would run after
    // its chdir into the session's directory.
    let program = find_program(&invocation.argv[0], std::env::var_os("PATH").as_deref())?;
    invocation.argv[0] = program.to_string_lossy().into_owned();
    let mut report = planned(invocation);
    if dry_run {
        return Ok(report);
    }
    let lock = lock(relay_home, e, wait_for_lock)?;
    let argv = &report.invocation.argv;
    let start = Instant::now();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&report.invocation.cwd)
        // The woken session is the target, never whoever woke it.
        .env("RELAY_AS", &e.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can stop everything it started.
        .process_group(0);
    let lock_fd = lock.as_raw_fd();
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls
    // are allowed; fcntl(F_SETFD) is one. It lets the child inherit the lock, so the
    // session stays exclusive even if this process dies while the agent runs.
    unsafe {
        cmd.pre_exec(move || {
            let fd = rustix::fd::BorrowedFd::borrow_raw(lock_fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|err| Error::Spawn {
        program: argv[0].clone(),
        err,
    })?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                report.timed_out = true;
                break None;
            }
            // A child's exit has no descriptor to block on here; 20 ms bounds the cost.
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    report.exit_code = status.and_then(|s| s.code());
    report.duration_ms = start.elapsed().as_millis() as u64;
    report.stdout_tail = tail(&out.join().unwrap_or_default());
    report.stderr_tail = tail(&err.join().unwrap_or_default());
    Ok(report)
}

/// A wake started in the background by `send --wake`.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// The background `relay wake` process.
    pub pid: u32,
    /// Where its report goes.
    pub log: PathBuf,
}

/// Starts `relay wake <id>` in the background (for `send --wake`), logging to
/// `$RELAY_HOME/wake/<id>.log`, so the sender is not held for the length of a session turn.
///
/// # Errors
/// When the log cannot be created or the process cannot start.
pub fn start_background(relay_home: &Path, endpoint_id: &str) -> std::io::Result<Started> {
    let dir = relay_home.join("wake");
    crate::store::home::private_dir(&dir).map_err(std::io::Error::other)?;
    let log = dir.join(format!("{endpoint_id}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)?;
    let child = Command::new(std::env::current_exe()?)
        .args(["wake", endpoint_id, "--json", "--after-running"])
        .env("RELAY_HOME", relay_home)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    let pid = child.id();
    // Reap it when it ends, so a long-lived caller (the MCP server) leaves no zombie.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(Started { pid, log })
}

/// What `send --wake` did about the wake, after the message was queued.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FollowUp {
    /// A background `relay wake` was started.
    Started(Started),
    /// It could not be started; the message is queued all the same.
    Failed(String),
}

/// Starts the wake for a send whose route is `wake`; `None` for any other route.
pub fn follow_up(relay_home: &Path, sent: &crate::route::Sent) -> Option<FollowUp> {
    (sent.route == crate::route::Decision::Wake).then(|| {
        match start_background(relay_home, &sent.receipt.to) {
            Ok(s) => FollowUp::Started(s),
            Err(e) => FollowUp::Failed(format!("could not start the wake: {e}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Empty and relative PATH entries are never searched; the first absolute hit wins.
    #[test]
    fn programs_are_found_in_absolute_path_entries_only() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let prog = bin.join("agent");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(":bin:.:{}", bin.display());
        assert_eq!(
            find_program("agent", Some(OsStr::new(&path))).unwrap(),
            prog
        );
        let e = find_program("agent", Some(OsStr::new(":bin:."))).unwrap_err();
        assert!(e.to_string().contains("no absolute entries"), "{e}");
        // Not executable: skipped.
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o644)).unwrap();
        let only = bin.display().to_string();
        assert!(find_program("agent", Some(OsStr::new(&only))).is_err());
    }
}
