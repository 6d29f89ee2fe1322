//! One test per fixed bug, each headed by what it pins (issue 9 and later). Each test failed
//! on the code before its fix. Grouped by area; every area is its own file under
//! `tests/regression/`.

mod common;

#[path = "regression/coordination.rs"]
mod coordination;
#[path = "regression/errors.rs"]
mod errors;
#[path = "regression/events.rs"]
mod events;
#[path = "regression/guard.rs"]
mod guard;
#[path = "regression/identity.rs"]
mod identity;
#[path = "regression/idle.rs"]
mod idle;
#[path = "regression/install.rs"]
mod install;
#[cfg(feature = "nats")]
#[path = "regression/nats.rs"]
mod nats;
#[path = "regression/readers.rs"]
mod readers;
#[path = "regression/resources.rs"]
mod resources;
#[path = "regression/store_search.rs"]
mod store_search;
#[path = "regression/text.rs"]
mod text;
#[path = "regression/users.rs"]
mod users;
