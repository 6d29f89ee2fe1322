//! One test per fixed bug, each headed by what it pins (issue 9 and later). Each test failed
//! on the code before its fix. Grouped by area; every area is its own file under
//! `tests/regression/`.

mod common;

#[path = "regression/errors.rs"]
mod errors;
#[path = "regression/identity.rs"]
mod identity;
#[path = "regression/idle.rs"]
mod idle;
#[path = "regression/install.rs"]
mod install;
#[path = "regression/readers.rs"]
mod readers;
#[path = "regression/resources.rs"]
mod resources;
#[path = "regression/text.rs"]
mod text;
#[path = "regression/users.rs"]
mod users;
