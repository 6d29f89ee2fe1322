//! Routing: [`decide`] picks how a message travels from facts about its target (pure, no
//! I/O); [`dispatch`] gathers those facts, asks [`decide`], and carries the decision out.
//! Every interface sends through [`dispatch::send`]; none touches the store's SQL.

mod decide;
pub mod dispatch;

pub use decide::{Ask, Decision, Facts, LiveState, Reason, Resolution, decide};
pub use dispatch::{Error, SendRequest, Sent, send, send_all};
