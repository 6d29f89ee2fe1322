//! The one place a backend is chosen (DESIGN.md §3: nothing above `store/` names a backend
//! type). `RELAY_STORE` / `--store` (in [`Config::store`]) is one of:
//!
//! - unset or empty — SQLite at `$RELAY_HOME/relay.db`;
//! - `sqlite:DIR` — the SQLite store of the relay home `DIR` (a path ending in `relay.db`
//!   means its directory);
//! - `nats://host:4222[,nats://host2:4222,...]` (also `tls://`) — the NATS JetStream store
//!   (feature `nats`; docs/nats.md), credentials in the URL or in `RELAY_NATS_*`.

use std::path::PathBuf;

use super::{Error, Result, SqliteStore, Store};
use crate::config::Config;

/// A parsed store location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// SQLite in this relay home directory.
    Sqlite(PathBuf),
    /// A NATS cluster: its server URLs, in the order given (at least one).
    Nats(Vec<String>),
}

impl Location {
    /// Parses a location as `RELAY_STORE` / `--store` take it; `home` is the default home.
    ///
    /// # Errors
    /// [`Error::BadLocation`] naming what is wrong.
    pub fn parse(given: &str, home: &std::path::Path) -> Result<Location> {
        let t = given.trim();
        // Never echo credentials, even of a location that does not parse.
        let shown = given.split(',').map(redact).collect::<Vec<_>>().join(",");
        let bad = |why: &str| Error::BadLocation {
            given: shown.clone(),
            why: why.to_string(),
        };
        if t.is_empty() {
            return Ok(Location::Sqlite(home.to_path_buf()));
        }
        if let Some(path) = t.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(bad(
                    "sqlite: needs a directory, e.g. sqlite:/home/me/.local/state/relay",
                ));
            }
            let p = PathBuf::from(path);
            let dir = if p.file_name().is_some_and(|f| f == "relay.db") {
                p.parent().map(PathBuf::from).unwrap_or_default()
            } else {
                p
            };
            return Ok(Location::Sqlite(dir));
        }
        if t.starts_with("nats://") || t.starts_with("tls://") {
            let urls: Vec<String> = t
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect();
            for u in &urls {
                let rest = u
                    .strip_prefix("nats://")
                    .or_else(|| u.strip_prefix("tls://"))
                    .ok_or_else(|| {
                        bad(&format!(
                            "'{}' does not start with nats:// or tls://",
                            redact(u)
                        ))
                    })?;
                let hostport = rest.rsplit('@').next().unwrap_or(rest);
                if hostport.is_empty() || hostport.starts_with(':') {
                    return Err(bad(&format!("'{}' names no host", redact(u))));
                }
            }
            if urls.is_empty() {
                return Err(bad("no server URL given"));
            }
            return Ok(Location::Nats(urls));
        }
        Err(bad("unknown scheme"))
    }
}

/// `url` with any `user:password@` or `token@` part replaced by `***@`, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Opens the store `config` names ([`Config::store`], else SQLite in [`Config::home`]).
///
/// # Errors
/// [`Error::BadLocation`] for a location that does not parse, or `nats://` in a build
/// without the `nats` feature; the backend's open errors ([`SqliteStore::open`],
/// [`Error::Nats`] when no server of the cluster answers).
pub fn open(config: &Config) -> Result<Box<dyn Store>> {
    let given = config.store.clone().unwrap_or_default();
    open_at(&given, config)
}

/// Opens the store at `location` (the syntax of [`Location::parse`]) with `config`'s other
/// settings (durability, body cap). For `relay store copy`, which opens two.
///
/// # Errors
/// As [`open`].
pub fn open_at(location: &str, config: &Config) -> Result<Box<dyn Store>> {
    match Location::parse(location, &config.home)? {
        Location::Sqlite(home) => {
            let mut c = config.clone();
            c.home = home;
            Ok(Box::new(SqliteStore::open(&c)?))
        }
        #[cfg(feature = "nats")]
        Location::Nats(urls) => Ok(Box::new(super::nats::NatsStore::open(&urls, config)?)),
        #[cfg(not(feature = "nats"))]
        Location::Nats(_) => Err(Error::BadLocation {
            given: location
                .split(',')
                .map(redact)
                .collect::<Vec<_>>()
                .join(","),
            why: "this relay was built without the nats feature".into(),
        }),
    }
}

/// The name of this machine as endpoints record it ([`super::Endpoint::host`]):
/// `RELAY_HOST` when set (tests run two "machines" on one), else the kernel's host name.
pub fn local_host() -> String {
    if let Ok(h) = std::env::var("RELAY_HOST")
        && !h.trim().is_empty()
    {
        return h.trim().to_string();
    }
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let home = std::path::Path::new("/h");
        assert_eq!(
            Location::parse("", home).unwrap(),
            Location::Sqlite("/h".into())
        );
        assert_eq!(
            Location::parse("sqlite:/x/relay.db", home).unwrap(),
            Location::Sqlite("/x".into())
        );
        assert_eq!(
            Location::parse("nats://a:1, nats://b:2", home).unwrap(),
            Location::Nats(vec!["nats://a:1".into(), "nats://b:2".into()])
        );
        for bad in ["redis://x", "nats://", "nats://u:p@", "sqlite:"] {
            let e = Location::parse(bad, home).unwrap_err().to_string();
            assert!(e.contains("is not valid"), "{bad}: {e}");
            assert!(!e.contains("u:p@"), "{e}");
        }
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://***@h:4222");
    }
}
