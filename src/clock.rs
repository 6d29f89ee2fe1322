//! Wall-clock helpers. Stored times are milliseconds since the Unix epoch (DESIGN.md §2);
//! latency measurements across processes use microseconds from the same clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    (now_us() / 1000) as i64
}

/// Microseconds since the Unix epoch, from the system clock. Comparable between processes
/// on one machine; used to measure send→receive latency.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
