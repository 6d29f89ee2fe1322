//! Where relay keeps its data and how hard it tries to keep it (DESIGN.md §4).
//!
//! - `RELAY_HOME` — data directory; default `$XDG_STATE_HOME/relay`, then
//!   `~/.local/state/relay`. Created with mode 0700.
//! - `RELAY_DURABILITY` — `normal` (default, `synchronous=NORMAL`: a power cut may lose the
//!   last transactions, never corrupt) or `full` (`synchronous=FULL`: fsync on every commit).
//! - `RELAY_MAX_BODY` — body cap in bytes (`262144`, `256KiB`, `1MiB`); default 256 KiB,
//!   at most 16 MiB.
//! - `RELAY_STORE` — which store holds endpoints and mail: unset for SQLite in `RELAY_HOME`,
//!   `sqlite:DIR` for the SQLite store of another home, or `nats://h1:4222,nats://h2:4222`
//!   for a NATS JetStream cluster (docs/nats.md). Parsed by [`crate::store::open`].

use std::path::PathBuf;
use std::str::FromStr;

/// Default cap on a message body: 256 KiB.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;
/// Largest body cap that may be configured: 16 MiB, the wire's hard frame cap.
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: durable across process crashes; a power cut may
    /// lose the most recent commits.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced before it returns.
    Full,
}

impl FromStr for Durability {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Durability::Normal),
            "full" => Ok(Durability::Full),
            _ => Err(ConfigError::Durability(s.to_string())),
        }
    }
}

/// A setting that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `RELAY_DURABILITY` / `--durability` was neither `normal` nor `full`.
    #[error("durability '{0}' is not known; use 'normal' or 'full'")]
    Durability(String),
    /// `RELAY_MAX_BODY` did not parse or was out of range.
    #[error(
        "body cap '{0}' is not valid; give bytes between 1 and 16MiB, e.g. 262144, 256KiB or 1MiB"
    )]
    MaxBody(String),
    /// No `RELAY_HOME`, `XDG_STATE_HOME` or `HOME` to put data in.
    #[error("cannot find a data directory: set RELAY_HOME (or HOME)")]
    NoHome,
}

/// Resolved settings for one process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (`RELAY_HOME`).
    pub home: PathBuf,
    /// Commit durability.
    pub durability: Durability,
    /// Body cap in bytes.
    pub max_body: usize,
    /// Where the store is (`RELAY_STORE` / `--store`); `None` = SQLite in `home`.
    pub store: Option<String>,
}

impl Config {
    /// Reads the settings from the environment.
    ///
    /// # Errors
    /// [`ConfigError`] when a variable is set to something invalid or no home can be found.
    pub fn from_env() -> Result<Config, ConfigError> {
        let home = match std::env::var_os("RELAY_HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
                Some(x) => PathBuf::from(x).join("relay"),
                None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                    Some(h) => PathBuf::from(h).join(".local/state/relay"),
                    None => return Err(ConfigError::NoHome),
                },
            },
        };
        let durability = match std::env::var("RELAY_DURABILITY") {
            Ok(v) if !v.is_empty() => v.parse()?,
            _ => Durability::Normal,
        };
        let max_body = match std::env::var("RELAY_MAX_BODY") {
            Ok(v) if !v.is_empty() => parse_size(&v)?,
            _ => DEFAULT_MAX_BODY,
        };
        let store = std::env::var("RELAY_STORE")
            .ok()
            .filter(|v| !v.trim().is_empty());
        Ok(Config {
            home,
            durability,
            max_body,
            store,
        })
    }

    /// A config rooted at `home` with default durability and body cap (tests, demo, bench).
    pub fn at(home: impl Into<PathBuf>) -> Config {
        Config {
            home: home.into(),
            durability: Durability::Normal,
            max_body: DEFAULT_MAX_BODY,
            store: None,
        }
    }

    /// The SQLite database: `$RELAY_HOME/relay.db`.
    pub fn db_path(&self) -> PathBuf {
        self.home.join("relay.db")
    }

    /// Directory of per-recipient doorbell files: `$RELAY_HOME/doorbell`.
    pub fn doorbell_dir(&self) -> PathBuf {
        self.home.join("doorbell")
    }
}

/// Parses a byte size: a plain number of bytes, or a number with `KiB`/`MiB` (also `K`/`M`).
///
/// # Errors
/// [`ConfigError::MaxBody`] when it does not parse or is outside 1 byte ..= 16 MiB.
pub fn parse_size(s: &str) -> Result<usize, ConfigError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (digits, mult) = if let Some(d) = lower.strip_suffix("mib").or(lower.strip_suffix('m')) {
        (d, 1024 * 1024)
    } else if let Some(d) = lower.strip_suffix("kib").or(lower.strip_suffix('k')) {
        (d, 1024)
    } else {
        (lower.strip_suffix('b').unwrap_or(&lower), 1)
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| ConfigError::MaxBody(s.to_string()))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| ConfigError::MaxBody(s.to_string()))?;
    if bytes == 0 || bytes > MAX_BODY_LIMIT {
        return Err(ConfigError::MaxBody(s.to_string()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_size("262144").unwrap(), 262144);
        assert_eq!(parse_size("256KiB").unwrap(), 262144);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("17MiB").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durability_parses_both_words_only() {
        assert_eq!("FULL".parse::<Durability>().unwrap(), Durability::Full);
        assert_eq!("normal".parse::<Durability>().unwrap(), Durability::Normal);
        assert!("fast".parse::<Durability>().is_err());
    }
}
