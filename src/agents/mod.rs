//! Agent integration (DESIGN.md §9): who a session is, hooks that put mail into its
//! context, the untrusted-data fence, config install, session discovery and wake.

pub mod identity;
pub mod procfs;
