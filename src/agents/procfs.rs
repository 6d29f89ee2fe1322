//! Process facts from Linux `/proc`: parent pid, start time, command name.
//!
//! A pid alone can be reused after its process exits; a pid with its start time (clock
//! ticks since boot, field 22 of `/proc/<pid>/stat`) names one process for good.

use crate::store::ProcessRef;

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The process and its start time.
    pub process: ProcessRef,
    /// Parent pid (0 for the kernel's own).
    pub ppid: u32,
    /// Command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// State letter (field 3): `R`, `S`, `D`, … `Z` for a zombie, `X` for dead.
    pub state: char,
}

/// Parses the contents of `/proc/<pid>/stat`. `comm` may hold spaces and parentheses, so
/// the fields after it are found from the *last* `)`.
pub fn parse_stat(pid: u32, text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // After ") ": state(3) ppid(4) ... starttime(22) → indexes 0, 1, ..., 19.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some(Stat {
        process: ProcessRef { pid, start },
        ppid,
        comm,
        state,
    })
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone or unreadable.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// This process.
pub fn current() -> Option<Stat> {
    stat(std::process::id())
}

/// True while the process named by `p` runs (same pid *and* start time). A zombie — exited,
/// not yet reaped, as an orphan can stay for a while in a container whose init is slow to
/// reap — is not running.
pub fn alive(p: ProcessRef) -> bool {
    stat(p.pid).is_some_and(|s| s.process.start == p.start && !matches!(s.state, 'Z' | 'X'))
}

/// The ancestors of this process, parent first, up to (not including) pid 1.
pub fn ancestors() -> Vec<Stat> {
    let mut out = Vec::new();
    let mut pid = current().map_or(0, |s| s.ppid);
    // A cycle cannot happen in /proc, but a bound keeps a corrupted read from looping.
    while pid > 1 && out.len() < 64 {
        let Some(s) = stat(pid) else { break };
        pid = s.ppid;
        out.push(s);
    }
    out
}

/// Command names that sit between an agent and the hooks it runs (shells and launchers);
/// the agent process is the first ancestor that is none of these.
const WRAPPERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "fish", "ksh", "env", "timeout", "nice", "nohup", "relay", "sudo",
    "script", "stdbuf", "time", "xargs",
];

/// Command names of agent processes. Walking up from a relay process, an unbound one of
/// these ends the search: a session nested inside another (a `claude -p` run from a
/// session's shell, a Codex session whose hooks are not trusted yet) must not take its
/// parent's identity.
/// pi renames its process `pi` (`process.title`); OpenCode is a native `opencode`.
pub const AGENTS: &[&str] = &["claude", "codex", "node", "pi", "opencode"];

/// The agent process a hook runs under: the nearest ancestor that is not a shell or
/// launcher (see [`WRAPPERS`]). `None` when there is none (for example, run by init).
pub fn agent_process() -> Option<Stat> {
    ancestors()
        .into_iter()
        .find(|s| !WRAPPERS.contains(&s.comm.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let text = "4242 (tmux: server) S 1 4242 4242 0 -1 4194560 4036 0 0 0 13 4 0 0 20 0 1 0 8812345 9961472 1057 18446744073709551615 1 1 0 0 0 0 0 4096 84483 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(4242, text).unwrap();
        assert_eq!(s.comm, "tmux: server");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.process.start, 8812345);
        let odd = "7 (a) b) (c) R 3 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0";
        let s = parse_stat(7, odd).unwrap();
        assert_eq!(
            (s.comm.as_str(), s.ppid, s.process.start),
            ("a) b) (c", 3, 555)
        );
        assert!(parse_stat(1, "garbage").is_none());
        assert!(parse_stat(1, "1 (x) S").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = current().unwrap();
        assert!(alive(me.process));
        let reused = ProcessRef {
            start: me.process.start + 1,
            ..me.process
        };
        assert!(!alive(reused));
        assert!(!ancestors().is_empty());
    }
}
