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
}

impl Agent {
    /// Both agents.
    pub const ALL: [Agent; 3] = [Agent::Claude, Agent::Codex, Agent::Pi];

    /// The endpoint kind of its sessions.
    pub fn kind(self) -> Kind {
        match self {
            Agent::Claude => Kind::ClaudeCode,
            Agent::Codex => Kind::Codex,
            Agent::Pi => Kind::Pi,
        }
    }

    /// Command-line spelling: `claude`, `codex`.
    pub fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Pi => "pi",
        }
    }

    /// Product name: `Claude Code`, `Codex`.
    pub fn display(self) -> &'static str {
        match self {
            Agent::Claude => "Claude Code",
            Agent::Codex => "Codex",
            Agent::Pi => "pi",
        }
    }

    /// What `relay install` puts into its config, in words (for doctor and notes).
    pub fn integration(self) -> &'static str {
        match self {
            Agent::Claude | Agent::Codex => "MCP server and hooks",
            Agent::Pi => "extension",
        }
    }

    /// The agent whose sessions have this endpoint kind, if any.
    pub fn of_kind(kind: Kind) -> Option<Agent> {
        Agent::ALL.into_iter().find(|a| a.kind() == kind)
    }
}
