//! `relay bench inject`: how long mail takes to reach an idle interactive Claude Code
//! session in place — from the send to the model receiving the request that carries it.
//!
//! Set-up (all in a temporary directory, removed afterwards): a private HOME with relay
//! installed for Claude Code (`relay install claude`), a private RELAY_HOME, and the real
//! `claude` TUI under its own tmux server, talking to [`crate::standin::StandIn`] on
//! 127.0.0.1. One prompt is typed; the session answers and goes idle, and its idle waiter
//! (`relay hook claude idle`, see [`crate::agents::idle`]) blocks on the doorbell.
//!
//! Each round waits until a *new* waiter is recorded for the session (the previous one
//! exited with the previous round's mail), then times [`crate::route::dispatch::send`]
//! (in-process) to the stand-in's receipt of the request whose last user message holds
//! that round's body ([`crate::standin::Recorded::at`]). That span is: the doorbell, the
//! waiter's delivery and exit 2, Claude Code noticing the async hook's exit, and its new
//! request.
//!
//! Baseline from the same run: the bare doorbell — a thread blocked in [`Store::wait`]
//! woken by an enqueue from another thread (same store file).
//!
//! The client is `--claude`, else `RELAY_CLAUDE_BIN`, else
//! `${RELAY_AGENT_CACHE:-$HOME/.cache/relay-agents}/node_modules/.bin/claude`, else
//! `PATH`; without one (or without tmux) the bench fails with a message saying so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::{Latency, Machine, Recorder};
use crate::agents::idle;
use crate::config::Config;
use crate::route::dispatch::{self, SendRequest};
use crate::standin::{Recorded, Reply, StandIn, last_user_text};
use crate::store::{
    Fetch, FetchMode, Filter, Intent, Lookup, NewMessage, ProcessRef, Registration, SqliteStore,
    Store, TEXT_PLAIN,
};

/// Everything `relay bench inject` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// `claude --version`.
    pub client: String,
    /// Rounds.
    pub n: usize,
    /// Baseline: enqueue → a `Store::wait` in another thread returns.
    pub baseline_doorbell: Latency,
    /// Send → the session's idle waiter exits with the mail (relay's share of `inject`).
    pub waiter_exit: Latency,
    /// Send → the model receives the woken session's request with the mail (goal: p50 ≤
    /// 200 ms).
    pub inject: Latency,
}

/// Longest wait for any one step (session start, a waiter, a request).
const STEP: Duration = Duration::from_secs(60);

/// The Claude Code client to run: `explicit`, `RELAY_CLAUDE_BIN`, the agent cache, `PATH`.
///
/// # Errors
/// None found (the message names every place looked in).
pub fn locate_claude(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            bail!("--claude {} is not a file", p.display())
        };
    }
    if let Some(p) = std::env::var_os("RELAY_CLAUDE_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            bail!("RELAY_CLAUDE_BIN={} is not a file", p.display())
        };
    }
    let cache = std::env::var_os("RELAY_AGENT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/relay-agents")));
    if let Some(c) = cache {
        let p = c.join("node_modules/.bin/claude");
        if p.is_file() {
            return Ok(p);
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("claude");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "relay bench inject needs the Claude Code CLI and found none: pass --claude PATH, set \
         RELAY_CLAUDE_BIN, install it into the agent cache (npm install --prefix \
         ~/.cache/relay-agents @anthropic-ai/claude-code@2.1.332, as .ci/run does) or put \
         `claude` on PATH"
    )
}

/// A tmux server of our own; killed with everything in it when dropped.
struct Tmux {
    socket: PathBuf,
    name: &'static str,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn screen(&self) -> String {
        self.cmd()
            .args(["capture-pane", "-p", "-t", self.name])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn type_line(&self, text: &str) -> anyhow::Result<()> {
        for keys in [&["-l", text][..], &["Enter"][..]] {
            let st = self
                .cmd()
                .args(["send-keys", "-t", self.name])
                .args(keys)
                .status()?;
            if !st.success() {
                bail!("tmux send-keys failed");
            }
        }
        Ok(())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

/// Waits (bounded by [`STEP`]) for `ready`, looking every 2 ms: for states with no
/// notification (a process recorded in the store, a screen).
fn wait_until<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let end = Instant::now() + STEP;
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        if Instant::now() >= end {
            bail!("{what} did not happen within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The baseline: `n` enqueues, each waking a [`Store::wait`] in another thread.
fn doorbell(home: &Path, n: usize) -> anyhow::Result<Latency> {
    let store = SqliteStore::open(&Config::at(home))?;
    let reg = |name: &str| {
        store.register(&Registration {
            name: Some(name.into()),
            ..Default::default()
        })
    };
    let sink = reg("bench-doorbell-sink")?.endpoint;
    let from = reg("bench-doorbell-from")?.endpoint;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (woke_tx, woke_rx) = std::sync::mpsc::channel::<Instant>();
    let home2 = home.to_path_buf();
    let sink_id = sink.id.clone();
    let waiter = std::thread::spawn(move || -> anyhow::Result<()> {
        let store = SqliteStore::open(&Config::at(&home2))?;
        let req = Fetch {
            limit: 1,
            mode: FetchMode::Take,
            filter: Filter::default(),
        };
        for _ in 0..n {
            let _ = ready_tx.send(());
            let got = store.wait(&sink_id, &req, STEP)?;
            let at = Instant::now();
            if got.is_empty() {
                bail!("doorbell baseline: no message within {STEP:?}");
            }
            let _ = woke_tx.send(at);
        }
        Ok(())
    });
    let mut rec = Recorder::default();
    for _ in 0..n {
        ready_rx
            .recv_timeout(STEP)
            .context("doorbell waiter gone")?;
        // Let the waiter block (it signalled just before waiting).
        std::thread::sleep(Duration::from_millis(5));
        let t0 = Instant::now();
        store.enqueue(&NewMessage {
            from: from.id.clone(),
            to: sink.id.clone(),
            thread: None,
            reply_to: None,
            intent: Intent::Notify,
            content_type: TEXT_PLAIN.into(),
            body: b"ding".to_vec(),
            expires_at: None,
            hold: None,
        })?;
        let at = woke_rx.recv_timeout(STEP).context("doorbell waiter gone")?;
        rec.record(at - t0);
    }
    waiter
        .join()
        .map_err(|_| anyhow::anyhow!("doorbell waiter panicked"))??;
    Ok(rec.latency())
}

/// Watches process `p` through a pidfd (no polling) and sends the instant it exits; sends
/// nothing if it is already gone or outlives [`STEP`].
fn watch_exit(p: ProcessRef) -> std::sync::mpsc::Receiver<Instant> {
    let (tx, rx) = std::sync::mpsc::channel();
    let fd = rustix::process::Pid::from_raw(p.pid as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    if let Some(fd) = fd
        && crate::agents::procfs::alive(p)
    {
        std::thread::spawn(move || {
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let ts = rustix::event::Timespec {
                tv_sec: STEP.as_secs() as i64,
                tv_nsec: 0,
            };
            loop {
                match rustix::event::poll(&mut fds, Some(&ts)) {
                    Ok(n) if n > 0 => {
                        let _ = tx.send(Instant::now());
                        return;
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    _ => return,
                }
            }
        });
    }
    rx
}

/// Claude Code's session id of a request (`metadata.user_id` is JSON with `session_id`).
fn session_of(r: &Recorded) -> Option<String> {
    let uid = r.body.get("metadata")?.get("user_id")?.as_str()?;
    let v: serde_json::Value = serde_json::from_str(uid).ok()?;
    Some(v.get("session_id")?.as_str()?.to_string())
}

/// Runs the baseline and `n` injection rounds against `claude`.
///
/// # Errors
/// No tmux, a failing install, a session that does not start or is not woken in time.
pub fn run(n: usize, claude: &Path, tick: &dyn Fn()) -> anyhow::Result<Report> {
    let version = Command::new(claude)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", claude.display()))?;
    if !version.status.success() {
        bail!("{} --version failed", claude.display());
    }
    let client = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if Command::new("tmux").arg("-V").output().is_err() {
        bail!("relay bench inject needs tmux (apt-get install tmux)");
    }
    let tmp = tempfile::Builder::new()
        .prefix("relay-bench-inject-")
        .tempdir()?;
    let (user_home, relay_home, cwd) = (
        tmp.path().join("user"),
        tmp.path().join("relay"),
        tmp.path().join("project"),
    );
    for d in [&user_home, &relay_home, &cwd] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::set_permissions(&relay_home, std::fs::Permissions::from_mode(0o700))?;
    let cwd = cwd.canonicalize()?;

    let baseline_doorbell = doorbell(&tmp.path().join("doorbell"), n.max(100))?;

    // The session's first prompt gets "ready"; every woken request gets "noted".
    let model = StandIn::start(
        Box::new(|r: &Recorded| {
            let t = last_user_text(&r.body);
            Reply::Text(if t.contains("relay-mail") {
                "noted".into()
            } else {
                "ready".into()
            })
        }),
        STEP * 2 + Duration::from_secs(30) * n as u32,
    )?;
    let cwd_s = cwd.to_string_lossy().into_owned();
    let claude_json = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "customApiKeyResponses": {"approved": ["sk-test"], "rejected": []},
        "projects": {cwd_s: {"hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true}}
    });
    std::fs::write(user_home.join(".claude.json"), claude_json.to_string())?;
    let exe = std::env::current_exe()?;
    let env: Vec<(&str, std::ffi::OsString)> = vec![
        ("PATH", std::env::var_os("PATH").unwrap_or_default()),
        ("HOME", user_home.clone().into()),
        ("LANG", "C.UTF-8".into()),
        ("TERM", "xterm-256color".into()),
        ("RELAY_HOME", relay_home.clone().into()),
        ("RELAY_LOG", "warn".into()),
        ("DISABLE_TELEMETRY", "1".into()),
        ("DISABLE_AUTOUPDATER", "1".into()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
        ("ANTHROPIC_BASE_URL", model.base_url().into()),
        ("ANTHROPIC_API_KEY", "sk-test".into()),
    ];
    let install = Command::new(&exe)
        .args(["install", "claude"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd)
        .output()?;
    if !install.status.success() {
        bail!(
            "relay install claude failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
    }

    let tmux = Tmux {
        socket: tmp.path().join("tmux.sock"),
        name: "relay-bench-inject",
    };
    let st = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            tmux.name,
            "-x",
            "200",
            "-y",
            "50",
            "-c",
        ])
        .arg(&cwd)
        .arg("--")
        .arg(claude)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()?;
    if !st.success() {
        bail!("tmux new-session failed");
    }
    wait_until("the Claude Code prompt", || {
        tmux.screen().contains('\u{276f}').then_some(())
    })?;
    tmux.type_line("hello")?;
    let first = model
        .wait_for(|r| last_user_text(&r.body).contains("hello"), STEP)
        .context("the first prompt did not reach the model")?;
    let session = session_of(&first).context("no session id in the request's metadata")?;

    let store = SqliteStore::open(&Config::at(&relay_home))?;
    let sender = store
        .register(&Registration {
            name: Some("bench-inject-sender".into()),
            ..Default::default()
        })?
        .endpoint;
    let mut prev: Option<ProcessRef> = None;
    let mut rec = Recorder::default();
    let mut rec_exit = Recorder::default();
    for i in 0..n {
        // Idle again: a waiter other than the one that delivered the last round.
        let w = wait_until("the session's idle waiter", || {
            match store.lookup(&session).ok()? {
                Lookup::Found(e) => idle::waiter(&e).filter(|p| Some(*p) != prev),
                _ => None,
            }
        })?;
        prev = Some(w);
        let exited = watch_exit(w);
        let body = format!("inject-round-{i}-{}", crate::clock::now_us());
        let t0 = Instant::now();
        dispatch::send(
            &store,
            SendRequest {
                from: sender.clone(),
                to: session.clone(),
                body: body.clone().into_bytes(),
                content_type: TEXT_PLAIN.into(),
                intent: Intent::Notify,
                thread: None,
                reply_to: None,
                ttl: None,
                wake: false,
                runtime_dir: None,
            },
        )?;
        let got = model
            .wait_for(
                |r| r.at >= t0 && last_user_text(&r.body).contains(&body),
                STEP,
            )
            .with_context(|| format!("round {i}: the mail did not reach the model in {STEP:?}"))?;
        rec.record(got.at - t0);
        let exit = exited
            .recv_timeout(STEP)
            .with_context(|| format!("round {i}: the idle waiter did not exit"))?;
        rec_exit.record(exit.saturating_duration_since(t0));
        tick();
    }
    drop(tmux);
    Ok(Report {
        machine: Machine::detect(),
        client,
        n,
        baseline_doorbell,
        waiter_exit: rec_exit.latency(),
        inject: rec.latency(),
    })
}

/// The report as Markdown, for bench/results/inject.md.
pub fn markdown(r: &Report, when: &str) -> String {
    let row = super::ms_row;
    let mut s = super::report_header(
        "relay bench inject",
        &format!("relay bench inject --n {}", r.n),
        &r.machine,
        when,
    );
    s += &format!(
        "Client: {} (interactive, under tmux), against relay's stand-in model on 127.0.0.1.\n\n",
        r.client
    );
    s += "Mail to an idle session, from the send to the model receiving the woken request \
          that carries it (ms):\n\n\
          | what | samples | p50 | p99 | max |\n|---|---|---|---|---|\n";
    s += &row(
        "baseline: doorbell (enqueue → Store::wait returns, other thread)",
        &r.baseline_doorbell,
    );
    s += &row(
        "send → idle waiter exits 2 with the mail (relay)",
        &r.waiter_exit,
    );
    s += &row("inject: send → request with the mail", &r.inject);
    s += "\nThe rest of `inject` after the waiter's exit is Claude Code's: noticing the \
          async hook ended and making the new request.\n";
    let p50_ms = r.inject.p50_us / 1000.0;
    s += &format!(
        "\nGoal p50 ≤ 200 ms: {} ({p50_ms:.0} ms).\n",
        if p50_ms <= 200.0 { "met" } else { "NOT met" }
    );
    s
}
