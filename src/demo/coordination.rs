//! Part 7 of `relay demo`: coordination in one repository. Two sessions reserve
//! overlapping paths (the second is refused, naming the first), `relay search` finds an
//! earlier message, and the git pre-commit guard refuses a commit that touches the
//! first session's reserved files. Every step is a real `relay` or `git` process; the
//! part is skipped with a hint when `git` is not installed.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::Context;
use serde::Serialize;

use crate::store::{Intent, NewMessage, Store, TEXT_PLAIN};

/// What part 7 showed.
#[derive(Debug, Default, Serialize)]
pub(crate) struct CoordinationOutcome {
    /// The part ran (git was found).
    pub coord_ran: bool,
    /// alice's exclusive reservation was granted.
    pub reserve_granted: bool,
    /// bob's overlapping reservation was refused, naming alice.
    pub overlap_refused: bool,
    /// Messages `relay search` found for the earlier word.
    pub search_hits: u64,
    /// The guard refused bob's commit, naming alice.
    pub guard_refused: bool,
    /// After alice released, bob's commit went through.
    pub commit_after_release: bool,
}

impl CoordinationOutcome {
    /// Why the part failed, when it ran and something did not happen as it must.
    pub fn failure(&self) -> Option<&'static str> {
        if !self.coord_ran {
            None
        } else if !self.reserve_granted {
            Some("the first reservation was not granted")
        } else if !self.overlap_refused {
            Some("an overlapping exclusive reservation was not refused")
        } else if self.search_hits == 0 {
            Some("search did not find the earlier message")
        } else if !self.guard_refused {
            Some("the guard did not refuse a commit of reserved files")
        } else if !self.commit_after_release {
            Some("a commit after the release was refused")
        } else {
            None
        }
    }
}

fn relay(home: &Path, cwd: &Path, who: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(std::env::current_exe()?)
        .args(args)
        .current_dir(cwd)
        .env("RELAY_HOME", home)
        .env("RELAY_AS", who)
        .env_remove("RELAY_STORE")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run relay {}", args.join(" ")))
}

fn git(repo: &Path, home: &Path, who: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new("git")
        .args([
            "-c",
            "user.name=relay demo",
            "-c",
            "user.email=demo@relay.invalid",
        ])
        .args(args)
        .current_dir(repo)
        .env("RELAY_HOME", home)
        .env("RELAY_AS", who)
        .env_remove("RELAY_STORE")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run git {}", args.join(" ")))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The first line of `s` that mentions `needle`, trimmed (what the demo quotes).
fn line_with<'a>(s: &'a str, needle: &str) -> &'a str {
    s.lines().find(|l| l.contains(needle)).unwrap_or("").trim()
}

pub(crate) fn run(
    store: &dyn Store,
    home: &Path,
    dir: &Path,
    say: &dyn Fn(String),
) -> anyhow::Result<CoordinationOutcome> {
    let mut o = CoordinationOutcome::default();
    if Command::new("git")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        say("   skipped: git is not installed (apt install git)".into());
        return Ok(o);
    }
    o.coord_ran = true;
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("src/store"))?;
    let alice = relay(home, &repo, "alice", &["register", "alice-session"])?;
    let bob = relay(home, &repo, "bob", &["register", "bob-session"])?;
    for r in [&alice, &bob] {
        anyhow::ensure!(r.status.success(), "relay register: {}", text(r));
    }
    let init = git(&repo, home, "alice-session", &["init", "-q"])?;
    anyhow::ensure!(init.status.success(), "git init: {}", text(&init));

    // Two sessions, overlapping paths.
    let granted = relay(
        home,
        &repo,
        "alice-session",
        &[
            "reserve",
            "src/store/**",
            "--ttl",
            "30m",
            "--reason",
            "moving the store to NATS",
        ],
    )?;
    o.reserve_granted = granted.status.success();
    say(format!(
        "   alice-session: relay reserve 'src/store/**' → {}",
        if o.reserve_granted {
            "granted (exclusive, 30m)".to_string()
        } else {
            format!("FAILED: {}", text(&granted).trim())
        }
    ));
    let refused = relay(
        home,
        &repo,
        "bob-session",
        &["reserve", "src/**/*.rs", "--reason", "renaming types"],
    )?;
    let said = text(&refused);
    o.overlap_refused = refused.status.code() == Some(3) && said.contains("alice-session");
    say(format!(
        "   bob-session:   relay reserve 'src/**/*.rs'  → {}",
        if o.overlap_refused {
            format!("refused: {}", line_with(&said, "alice-session"))
        } else {
            format!(
                "NOT REFUSED (exit {:?}): {}",
                refused.status.code(),
                said.trim()
            )
        }
    ));

    // Search finds an earlier message.
    let from = store.resolve("alice-session")?;
    let to = store.resolve("bob-session")?;
    store.enqueue(&NewMessage {
        from: from.id.clone(),
        to: to.id.clone(),
        thread: Some("store-move".into()),
        reply_to: None,
        intent: Intent::Notify,
        content_type: TEXT_PLAIN.into(),
        body: "heads up: the lease expiry logic moves to src/store/lease.rs".into(),
        expires_at: None,
        hold: None,
    })?;
    let found = relay(
        home,
        &repo,
        "bob-session",
        &["search", "lease expiry", "--json"],
    )?;
    let doc: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap_or_default();
    o.search_hits = doc
        .get("results")
        .and_then(|r| r.as_array())
        .map_or(0, |r| r.len() as u64);
    say(format!(
        "   bob-session:   relay search 'lease expiry'  → {} message(s){}",
        o.search_hits,
        doc.pointer("/results/0/snippet")
            .and_then(|s| s.as_str())
            .map(|s| format!(": {}", crate::cli::terminal_safe(s)))
            .unwrap_or_default()
    ));

    // The guard refuses bob's commit of alice's files.
    let installed = relay(home, &repo, "alice-session", &["install", "guard"])?;
    anyhow::ensure!(
        installed.status.success(),
        "relay install guard: {}",
        text(&installed)
    );
    std::fs::write(repo.join("src/store/lease.rs"), "// lease expiry\n")?;
    let add = git(&repo, home, "bob-session", &["add", "src/store/lease.rs"])?;
    anyhow::ensure!(add.status.success(), "git add: {}", text(&add));
    let commit = git(&repo, home, "bob-session", &["commit", "-q", "-m", "lease"])?;
    let said = text(&commit);
    o.guard_refused = !commit.status.success() && said.contains("alice-session");
    say(format!(
        "   bob-session:   git commit src/store/lease.rs → {}",
        if o.guard_refused {
            format!(
                "refused by the guard: {}",
                line_with(&said, "alice-session")
            )
        } else {
            format!("NOT REFUSED: {}", said.trim())
        }
    ));
    let released = relay(home, &repo, "alice-session", &["release", "--all"])?;
    anyhow::ensure!(
        released.status.success(),
        "relay release: {}",
        text(&released)
    );
    let commit = git(&repo, home, "bob-session", &["commit", "-q", "-m", "lease"])?;
    o.commit_after_release = commit.status.success();
    say(format!(
        "   alice-session: relay release --all; bob-session's commit → {}",
        if o.commit_after_release {
            "committed".to_string()
        } else {
            format!("REFUSED: {}", text(&commit).trim())
        }
    ));
    Ok(o)
}
