//! Who "me" is for a command or an MCP session: `--as`, else `$RELAY_AS`, else nobody.
//!
//! Agent sessions gain a third source later (a binding from the agent's process to its
//! session id, DESIGN.md §9); callers already handle "nobody" with [`HOW_TO_SET`].

use serde::Serialize;

/// Where an identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The `--as` flag.
    Flag,
    /// The `RELAY_AS` environment variable.
    Env,
    /// The MCP `register` tool, for the rest of that MCP session.
    Register,
}

/// A chosen identity: what to resolve, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Name, id or id prefix to resolve.
    pub query: String,
    /// Where it came from.
    pub source: Source,
}

/// What to tell a user who has no identity.
pub const HOW_TO_SET: &str = "no identity: pass --as NAME or set RELAY_AS=NAME \
     (register the name first with `relay register NAME`)";

/// Picks the identity: `flag` when given and non-empty, else `$RELAY_AS`, else `None`.
pub fn choose(flag: Option<&str>) -> Option<Identity> {
    if let Some(f) = flag.filter(|f| !f.is_empty()) {
        return Some(Identity {
            query: f.to_string(),
            source: Source::Flag,
        });
    }
    std::env::var("RELAY_AS")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|query| Identity {
            query,
            source: Source::Env,
        })
}
