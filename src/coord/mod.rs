//! Coordination over the store (DESIGN.md §12), shared by the CLI, the MCP tools and the
//! hooks: the project a session works in, search results, conversations and
//! reservations. Pure logic over [`crate::store::Store`]; no interface code.

pub mod events;
pub mod labels;
pub mod project;
pub mod reserve;
pub mod search;
pub mod thread;

use crate::store::{self, Endpoint, Lookup, Store};

/// The endpoint whose id is exactly `id`, if any. Not [`Store::lookup`]: that tries names
/// first, so an endpoint *named* like another's id (custom ids such as `worker2` are not
/// UUID-shaped, so a name may equal one) would answer for it — and a holder looked up that
/// way would seem to be gone, its reservations released to whoever asked.
///
/// # Errors
/// Store errors.
pub fn endpoint_by_id(store: &dyn Store, id: &str) -> store::Result<Option<Endpoint>> {
    if let Lookup::Found(e) = store.lookup(id)?
        && e.id == id
    {
        return Ok(Some(e));
    }
    // Shadowed by a name, or unknown: the roster has every endpoint by id.
    Ok(store
        .roster()?
        .into_iter()
        .map(|r| r.endpoint)
        .find(|e| e.id == id))
}
