//! `relay doctor`: is relay set up right? One line per check, and one concrete fix per
//! problem. Exit 1 when any check fails.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use super::{Ctx, EXIT_FAILURE, EXIT_OK, output};
use crate::agents::Agent;
use crate::agents::install::{self, Action, Scope};

/// Arguments of `relay doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(
    name: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        fix,
    }
}

fn store_checks(ctx: &Ctx, out: &mut Vec<Check>) {
    let home = &ctx.config.home;
    let location = ctx.config.store.as_deref().unwrap_or_default();
    match crate::store::Location::parse(location, home) {
        Err(e) => out.push(check(
            "store",
            Status::Fail,
            format!("{e}"),
            Some("fix RELAY_STORE / --store (docs/nats.md)".into()),
        )),
        Ok(crate::store::Location::Nats(urls)) => {
            let shown = urls
                .iter()
                .map(|u| crate::store::redact(u))
                .collect::<Vec<_>>()
                .join(",");
            match ctx.store().and_then(|s| Ok(s.roster()?.len())) {
                Ok(n) => out.push(check(
                    "store",
                    Status::Ok,
                    format!("NATS store at {shown} answers ({n} endpoints)"),
                    None,
                )),
                Err(e) => out.push(check(
                    "store",
                    Status::Fail,
                    format!("{e:#}"),
                    Some(
                        "start the cluster or fix the URLs, credentials (RELAY_NATS_CREDS, ...) \
                         and TLS (RELAY_NATS_CA); see docs/nats.md"
                            .into(),
                    ),
                )),
            }
        }
        Ok(crate::store::Location::Sqlite(dir)) => {
            let db = dir.join("relay.db");
            match ctx.store() {
                Ok(_) => out.push(check(
                    "store",
                    Status::Ok,
                    format!("{} opens and is migrated", db.display()),
                    None,
                )),
                Err(e) => out.push(check(
                    "store",
                    Status::Fail,
                    format!("{e:#}"),
                    Some(format!(
                        "fix or move {} (relay recreates it), or set RELAY_HOME",
                        db.display()
                    )),
                )),
            }
            if rustix::fs::access(&db, rustix::fs::Access::WRITE_OK).is_err() {
                out.push(check(
                    "store writable",
                    Status::Fail,
                    format!("{} is not writable by you", db.display()),
                    Some(format!("chmod 600 {}", db.display())),
                ));
            }
        }
    }
    out.push(dir_check(
        "data directory",
        home,
        "other users can list what is in it",
        (
            Status::Fail,
            "is missing",
            Some("run any relay command to create it".into()),
        ),
    ));
    out.push(dir_check(
        "runtime directory",
        &crate::transport::runtime_dir(home),
        "live sockets must not be reachable by others",
        (
            Status::Ok,
            "not created yet (relay creates it with mode 700)",
            None,
        ),
    ));
}

/// A directory that must be private (mode 700), judged as relay judges it
/// (`store::home`): another owner or write access for others fails (relay refuses it);
/// read access for others is a warning (relay uses it, `leak` says what that exposes);
/// `missing` is the verdict when it is absent.
fn dir_check(name: &str, dir: &Path, leak: &str, missing: (Status, &str, Option<String>)) -> Check {
    let Ok(meta) = std::fs::metadata(dir) else {
        return check(
            name,
            missing.0,
            format!("{} {}", dir.display(), missing.1),
            missing.2,
        );
    };
    let m = meta.mode() & 0o7777;
    let own = rustix::process::geteuid().as_raw();
    let chmod = Some(format!("chmod 700 {}", dir.display()));
    if meta.uid() != own {
        check(
            name,
            Status::Fail,
            format!(
                "{} is owned by {}, not by you ({}); relay refuses it",
                dir.display(),
                crate::store::home::user(meta.uid()),
                crate::store::home::user(own)
            ),
            Some("use a directory of your own (set RELAY_HOME or RELAY_RUNTIME_DIR)".into()),
        )
    } else if m & 0o022 != 0 {
        check(
            name,
            Status::Fail,
            format!(
                "{} has mode {m:o}: other users can write to it; relay refuses it",
                dir.display()
            ),
            chmod,
        )
    } else if m & 0o077 != 0 {
        check(
            name,
            Status::Warn,
            format!("{} has mode {m:o}: {leak}", dir.display()),
            chmod,
        )
    } else {
        check(
            name,
            Status::Ok,
            format!("{} mode {m:o}", dir.display()),
            None,
        )
    }
}

fn agent_checks(agent: Agent, out: &mut Vec<Check>) {
    let Ok(env) = super::install::env() else {
        out.push(check(
            agent.name(),
            Status::Fail,
            "HOME is not set",
            Some("set HOME".into()),
        ));
        return;
    };
    if agent == Agent::Pi {
        let both: Vec<std::path::PathBuf> = [Scope::User, Scope::Project]
            .into_iter()
            .map(|s| crate::agents::pi::extension_path(s, &env.home, &env.project))
            .filter(|p| {
                std::fs::read_to_string(p)
                    .ok()
                    .is_some_and(|t| crate::agents::pi::relay_of(&t).is_some())
            })
            .collect();
        if both.len() == 2 && both[0] != both[1] {
            // pi loads both and refuses to start: two extensions with the same tools.
            out.push(check(
                "pi",
                Status::Fail,
                format!(
                    "relay's extension is installed twice ({} and {}): pi refuses to start",
                    both[0].display(),
                    both[1].display()
                ),
                Some("relay uninstall pi --scope project".into()),
            ));
            return;
        }
    }
    let mut any = false;
    for scope in [Scope::User, Scope::Project] {
        let scope_name = match scope {
            Scope::User => "user",
            Scope::Project => "project",
        };
        let name = format!("{} ({scope_name})", agent.display());
        let flag = if scope == Scope::Project {
            " --scope project"
        } else {
            ""
        };
        let fix = Some(format!("relay install {}{flag}", agent.name()));
        let installed = match install::plan(agent, scope, Action::Uninstall, &env) {
            Ok(p) => p.files.iter().any(|f| !f.unchanged()),
            Err(e) => {
                out.push(check(
                    name,
                    Status::Fail,
                    e.to_string(),
                    Some("fix the file named above".into()),
                ));
                continue;
            }
        };
        if !installed {
            continue;
        }
        any = true;
        // The binaries the config points at must exist and run.
        let programs = install::installed_programs(agent, scope, &env);
        let broken: Vec<String> = programs
            .iter()
            .filter(|p| rustix::fs::access(p.as_path(), rustix::fs::Access::EXEC_OK).is_err())
            .map(|p| p.display().to_string())
            .collect();
        if !broken.is_empty() {
            out.push(check(
                name,
                Status::Fail,
                format!(
                    "the config runs {}, which does not exist or is not executable",
                    broken.join(", ")
                ),
                fix,
            ));
            continue;
        }
        let current = install::is_current(agent, scope, &env).unwrap_or(false);
        if current {
            let mut detail = format!(
                "{} installed, running {}",
                agent.integration(),
                env.exe.display()
            );
            if agent == Agent::Pi
                && let Some(hidden) = pi_hidden(scope, &env)
            {
                // pi loads only that file from a directory that has one.
                out.push(check(
                    name,
                    Status::Fail,
                    format!(
                        "{} makes pi load only it from that directory, so relay's extension \
                         beside it is not loaded",
                        hidden.display()
                    ),
                    Some(
                        "move relay.ts into a directory of its own there (extensions/relay/index.ts) \
                         or load it from your index.ts"
                            .into(),
                    ),
                ));
                continue;
            }
            if agent == Agent::Codex {
                detail.push_str("; trust them once in Codex's /hooks (older Codex: set [features] codex_hooks = true)");
            }
            out.push(check(name, Status::Ok, detail, None));
        } else {
            let points: Vec<String> = programs.iter().map(|p| p.display().to_string()).collect();
            let detail = if !points.is_empty() && programs.iter().all(|p| *p == env.exe) {
                // This very binary, but not every entry it installs (a hook added in a
                // newer relay, an MCP environment that changed): `install` would edit.
                "installed by this relay, but not every entry it installs now (hooks added \
                 since, the MCP server's environment changed, or an older extension)"
                    .to_string()
            } else {
                format!(
                    "installed, but incomplete or running {} rather than this relay ({})",
                    if points.is_empty() {
                        "something else".into()
                    } else {
                        points.join(", ")
                    },
                    env.exe.display()
                )
            };
            out.push(check(name, Status::Warn, detail, fix));
        }
    }
    // pi or OpenCode not installed where that agent is not in PATH: nothing to report (a
    // user of Claude Code alone is not warned about agents they do not run).
    if !any && (matches!(agent, Agent::Claude | Agent::Codex) || on_path(agent.name())) {
        out.push(check(
            format!("{} integration", agent.display()),
            Status::Warn,
            format!("relay's {} is not installed", agent.integration()),
            Some(format!("relay install {}", agent.name())),
        ));
    }
}

/// Whether an executable `name` is in `$PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            rustix::fs::access(d.join(name).as_path(), rustix::fs::Access::EXEC_OK).is_ok()
        })
    })
}

/// pi's extensions directory at `scope`, when it holds an `index.ts`/`index.js` or a
/// `package.json`, which make pi load only that entry from the directory (pi 0.73.1
/// `package-manager.js`, `collectAutoExtensionEntries`): the file that hides relay.ts.
fn pi_hidden(scope: Scope, env: &install::Env) -> Option<std::path::PathBuf> {
    let dir = crate::agents::pi::extension_path(scope, &env.home, &env.project);
    let dir = dir.parent()?;
    ["index.ts", "index.js", "package.json"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
}

pub(crate) fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<u8> {
    let mut checks = Vec::new();
    match std::env::current_exe().and_then(|p| p.canonicalize()) {
        Ok(p) => checks.push(check("binary", Status::Ok, p.display().to_string(), None)),
        Err(e) => checks.push(check(
            "binary",
            Status::Fail,
            e.to_string(),
            Some("reinstall relay".into()),
        )),
    }
    store_checks(ctx, &mut checks);
    for agent in Agent::ALL {
        agent_checks(agent, &mut checks);
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    #[derive(Serialize)]
    struct Doc<'a> {
        checks: &'a [Check],
    }
    output::emit_outcome(ctx.json, &Doc { checks: &checks }, !failed, || {
        checks
            .iter()
            .map(|c| {
                let mark = match c.status {
                    Status::Ok => "ok  ",
                    Status::Warn => "warn",
                    Status::Fail => "FAIL",
                };
                let mut line = format!("{mark} {:<26} {}", c.name, c.detail);
                if let Some(f) = &c.fix {
                    line.push_str(&format!("\n     fix: {f}"));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(if failed { EXIT_FAILURE } else { EXIT_OK })
}
