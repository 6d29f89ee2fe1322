//! Agent integration (DESIGN.md §9): who a session is, hooks that put mail into its
//! context, the untrusted-data fence, config install, session discovery and wake.

pub mod claude;
pub mod codex;
pub mod codex_app;
pub mod discover;
pub mod fence;
pub mod guard;
pub mod hook;
pub mod identity;
pub mod idle;
pub mod install;
pub mod opencode;
pub mod pi;
pub mod presence;
pub mod procfs;
pub mod wake;

use crate::store::Kind;

/// An agent relay integrates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Agent {
    /// Anthropic's Claude Code.
    Claude,
    /// OpenAI's Codex CLI.
    Codex,
    /// pi (`@mariozechner/pi-coding-agent`), through relay's extension.
    Pi,
    /// OpenCode (`opencode-ai`): relay's MCP server and plugin.
    #[value(name = "opencode")]
    #[serde(rename = "opencode")]
    OpenCode,
}

impl Agent {
    /// Both agents.
    pub const ALL: [Agent; 4] = [Agent::Claude, Agent::Codex, Agent::Pi, Agent::OpenCode];

    /// The endpoint kind of its sessions.
    pub fn kind(self) -> Kind {
        match self {
            Agent::Claude => Kind::ClaudeCode,
            Agent::Codex => Kind::Codex,
            Agent::Pi => Kind::Pi,
            Agent::OpenCode => Kind::OpenCode,
        }
    }

    /// Command-line spelling: `claude`, `codex`.
    pub fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Pi => "pi",
            Agent::OpenCode => "opencode",
        }
    }

    /// Product name: `Claude Code`, `Codex`.
    pub fn display(self) -> &'static str {
        match self {
            Agent::Claude => "Claude Code",
            Agent::Codex => "Codex",
            Agent::Pi => "pi",
            Agent::OpenCode => "OpenCode",
        }
    }

    /// What `relay install` puts into its config, in words (for doctor and notes).
    pub fn integration(self) -> &'static str {
        match self {
            Agent::Claude | Agent::Codex => "MCP server and hooks",
            Agent::Pi => "extension",
            Agent::OpenCode => "MCP server and plugin",
        }
    }

    /// Whether `id` has the shape of this agent's session ids: a UUID (Claude Code, Codex,
    /// pi: UUIDv7), or OpenCode's `ses_` and 26 letters and digits. Only such ids are
    /// resumed (`relay wake`) or taken from a request as a session.
    pub fn session_id_shaped(self, id: &str) -> bool {
        match self {
            Agent::OpenCode => id.strip_prefix("ses_").is_some_and(|rest| {
                rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            }),
            _ => crate::store::names::is_uuid_shaped(id),
        }
    }

    /// The agent whose sessions have this endpoint kind, if any.
    pub fn of_kind(kind: Kind) -> Option<Agent> {
        Agent::ALL.into_iter().find(|a| a.kind() == kind)
    }
}
