//! Who "me" is (DESIGN.md §9): `--as`, else `$RELAY_AS`, else the binding of the agent
//! session this process runs in, else nobody.
//!
//! An MCP request may also name its session itself ([`from_request`]): Codex puts the
//! thread and session ids in every `tools/call`'s `_meta`, and the MCP servers of every
//! session a Codex app-server runs are children of that one process (which the hooks of
//! every session bind), so a process binding cannot tell them apart. Order: `--as`/`RELAY_AS`, then the request, then the `register` tool,
//! then the binding ([`resolve_for_request`]).
//!
//! An agent's SessionStart hook records a binding {agent pid + start time → session
//! endpoint}. Any relay process started by that agent (`relay mcp`, or `relay inbox` run
//! from the agent's shell tool) walks its own ancestors and takes the nearest bound one
//! whose start time still matches — so two sessions in one directory never share an
//! identity, and a reused pid never matches.

use serde::Serialize;

use super::procfs;
use crate::store::{self, Endpoint, ProcessRef, Store};

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
    /// A hook's binding of an ancestor agent process to its session.
    Binding,
    /// The MCP request's `_meta` named a registered session (Codex's `threadId` or
    /// `sessionId`).
    Request,
}

impl Source {
    /// How a person would name it: `--as`, `RELAY_AS`, …
    pub fn describe(self) -> &'static str {
        match self {
            Source::Flag => "--as",
            Source::Env => "RELAY_AS",
            Source::Register => "the register tool",
            Source::Binding => "the agent session binding",
            Source::Request => "the request's _meta (threadId)",
        }
    }
}

/// An explicitly chosen identity: what to resolve, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Name, id or id prefix to resolve.
    pub query: String,
    /// Where it came from.
    pub source: Source,
}

/// A resolved identity.
#[derive(Debug, Clone, Serialize)]
pub struct Me {
    /// The endpoint acted as.
    pub endpoint: Endpoint,
    /// How it was decided.
    pub source: Source,
    /// With [`Source::Binding`]: the bound agent process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRef>,
}

/// What to tell a user who has no identity.
pub const HOW_TO_SET: &str = "no identity: pass --as NAME or set RELAY_AS=NAME \
     (register the name first with `relay register NAME`), or run inside an agent session \
     whose relay hooks are installed (`relay install claude` or `relay install codex`)";

/// No identity could be found; the text says how to get one.
#[derive(Debug, thiserror::Error)]
#[error("{HOW_TO_SET}")]
pub struct NoIdentity;

/// Picks the explicit identity: `flag` when given and non-empty, else `$RELAY_AS`.
pub fn explicit(flag: Option<&str>) -> Option<Identity> {
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

/// The nearest ancestor of this process bound to a session, with its endpoint. The walk
/// stops at the nearest agent process ([`procfs::AGENTS`]), bound or not.
///
/// # Errors
/// Store errors.
pub fn from_binding(store: &dyn Store) -> store::Result<Option<Me>> {
    // Ancestors up to and including the nearest agent-named process: past it, a binding
    // would belong to an enclosing session, not this one.
    let mut refs: Vec<ProcessRef> = Vec::new();
    for s in procfs::ancestors() {
        refs.push(s.process);
        if procfs::AGENTS.contains(&s.comm.as_str()) {
            break;
        }
    }
    Ok(store.bound(&refs)?.map(|(p, endpoint)| Me {
        endpoint,
        source: Source::Binding,
        process: Some(p),
    }))
}

/// The session ids an MCP request names in its `_meta`: Codex's `threadId` and
/// `x-codex-turn-metadata.thread_id`; only when neither is there, `sessionId` and
/// `x-codex-turn-metadata.session_id` (Codex 0.171 sends all four with every `tools/call`;
/// in `codex exec` they are equal). Only UUID-shaped valid endpoint ids
/// ([`store::names::check_id`]) are kept, without duplicates; empty when the request names
/// no session (Claude Code sends only `claudecode/toolUseId`).
pub fn request_ids(meta: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let turn = meta.get("x-codex-turn-metadata");
    let keep = |vals: [Option<&serde_json::Value>; 2]| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for id in vals.into_iter().flatten().filter_map(|v| v.as_str()) {
            if store::names::check_id(id).is_ok()
                && store::names::is_uuid_shaped(id)
                && !out.iter().any(|o| o == id)
            {
                out.push(id.to_string());
            }
        }
        out
    };
    // The thread is the session (its hooks register the thread id); a session id is only
    // consulted when no thread is named, so a subagent's thread never falls through to a
    // parent's session id.
    let threads = keep([meta.get("threadId"), turn.and_then(|t| t.get("thread_id"))]);
    if !threads.is_empty() {
        return threads;
    }
    keep([
        meta.get("sessionId"),
        turn.and_then(|t| t.get("session_id")),
    ])
}

/// The argument relay's OpenCode plugin adds to each relay tool call: the calling
/// session's id (OpenCode passes MCP servers no `_meta` naming it). `relay mcp` removes it
/// before the tool parses its arguments.
pub const SESSION_ARG: &str = "_relay_session";

/// The endpoint kinds a request may name as its session: agents whose one process serves
/// many sessions (Codex's app-server, an OpenCode process), so the binding cannot tell
/// them apart.
pub const REQUEST_KINDS: [store::Kind; 2] = [store::Kind::Codex, store::Kind::OpenCode];

/// The first of `ids` (see [`request_ids`]) that is exactly the id of a registered Codex
/// or OpenCode session endpoint, as [`Source::Request`]. A name, an id prefix or another kind of
/// endpoint (a process, a Claude Code session) never matches: only the session's own id,
/// which the agent's hooks registered.
///
/// # Errors
/// Store errors.
pub fn from_request(store: &dyn Store, ids: &[String]) -> store::Result<Option<Me>> {
    for id in ids {
        if let store::Lookup::Found(endpoint) = store.lookup(id)?
            && endpoint.id == *id
            && REQUEST_KINDS.contains(&endpoint.kind)
        {
            return Ok(Some(Me {
                endpoint,
                source: Source::Request,
                process: None,
            }));
        }
    }
    Ok(None)
}

/// Resolves "me" for one MCP request: `--as`/`RELAY_AS` ([`Source::Flag`],
/// [`Source::Env`]) win; then the session the request names ([`from_request`] over
/// `request`); then a `register`ed identity; then — only when the request names no
/// session — the binding. A request that names sessions none of which is registered never
/// falls back to the binding: the agent process above it (Codex's app-server) hosts every
/// session, and its binding is whichever session started last.
///
/// # Errors
/// As [`resolve`]; [`NoIdentity`] also when the request names only unregistered sessions.
pub fn resolve_for_request(
    store: &dyn Store,
    explicit: Option<&Identity>,
    request: &[String],
) -> anyhow::Result<Me> {
    let strong = explicit.filter(|i| matches!(i.source, Source::Flag | Source::Env));
    if strong.is_none() && !request.is_empty() {
        if let Some(me) = from_request(store, request)? {
            return Ok(me);
        }
        if explicit.is_none() {
            return Err(NoIdentity.into());
        }
    }
    resolve(store, explicit)
}

/// Resolves "me": the explicit identity if any (it always wins), else a binding.
///
/// # Errors
/// [`NoIdentity`] when there is neither; the store's `UnknownEndpoint` /
/// `AmbiguousEndpoint` when an explicit identity does not resolve; store errors.
pub fn resolve(store: &dyn Store, explicit: Option<&Identity>) -> anyhow::Result<Me> {
    match explicit {
        Some(id) => Ok(Me {
            endpoint: store.resolve(&id.query)?,
            source: id.source,
            process: None,
        }),
        None => from_binding(store)?.ok_or_else(|| NoIdentity.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_ids_come_best_first_without_duplicates_or_bad_ids() {
        let meta = |v: serde_json::Value| v.as_object().unwrap().clone();
        let t = "019b0000-0000-7000-8000-00000000000a";
        let s = "019b0000-0000-7000-8000-00000000000b";
        assert_eq!(
            request_ids(&meta(json!({"threadId": t, "sessionId": s,
                "x-codex-turn-metadata": {"thread_id": t, "session_id": s}}))),
            [t],
            "a named thread wins over any session id"
        );
        assert_eq!(
            request_ids(&meta(json!({"threadId": "worker-1", "sessionId": s}))),
            [s],
            "only UUID-shaped ids count"
        );
        assert_eq!(
            request_ids(&meta(json!({"x-codex-turn-metadata": {"session_id": s}}))),
            [s]
        );
        // Claude Code names no session; paths, empty strings and non-strings are no ids.
        assert!(request_ids(&meta(json!({"claudecode/toolUseId": "toolu_1"}))).is_empty());
        assert!(
            request_ids(&meta(json!({"threadId": "../x", "sessionId": "", "x": 1}))).is_empty()
        );
        assert!(request_ids(&meta(json!({"threadId": 5}))).is_empty());
    }
}
