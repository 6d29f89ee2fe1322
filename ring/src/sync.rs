//! The one place the ring's atomics come from: `std` normally, `loom` under `--cfg loom`,
//! so the model checker sees every load, store and fence of the protocol.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
