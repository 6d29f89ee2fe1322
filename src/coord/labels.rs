//! Endpoint names for display: search results and conversations name both ends of each
//! message, and a message stores only its sender's name.

use std::collections::HashMap;

use crate::store::Store;

/// A cache of endpoint id → name, filled by [`super::endpoint_by_id`] on first use. Names are
/// decoration: a lookup that fails, or an id no endpoint has any more, gives `None`.
pub struct Labels<'a> {
    store: &'a dyn Store,
    cache: HashMap<String, Option<String>>,
}

impl<'a> Labels<'a> {
    /// An empty cache over `store`.
    pub fn new(store: &'a dyn Store) -> Labels<'a> {
        Labels {
            store,
            cache: HashMap::new(),
        }
    }

    /// Records that the endpoint `id` is now named `name` (an `endpoint.renamed` or
    /// `endpoint.registered` event passed), so later lookups need no store call.
    pub fn set(&mut self, id: &str, name: Option<String>) {
        self.cache.insert(id.to_string(), name);
    }

    /// The current name of the endpoint with exactly this id, if it has one.
    pub fn name(&mut self, id: &str) -> Option<String> {
        if let Some(n) = self.cache.get(id) {
            return n.clone();
        }
        // By exact id: `lookup` tries names first, so a name shadowing `id` would hide it.
        let name = super::endpoint_by_id(self.store, id)
            .ok()
            .flatten()
            .and_then(|e| e.name);
        self.cache.insert(id.to_string(), name.clone());
        name
    }
}
