//! Codex checks.
