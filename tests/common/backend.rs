//! One store backend under test, for the suites that run every case on both: SQLite (a
//! real file in a temporary home) and NATS JetStream (a real single-node nats-server of
//! its own, skipped visibly unless `RELAY_REQUIRE_NATS=1`). [`both_stores!`] instantiates
//! each case once per backend; the helpers make endpoints and messages through the
//! `Store` trait.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use relay::config::Config;
use relay::store::{Intent, NewMessage, Registration, Store, TEXT_PLAIN, open_at};

/// A store location and the home the relay processes use; the nats-server, if any, lives
/// as long as this.
pub struct Backend {
    pub dir: tempfile::TempDir,
    pub location: String,
    _cluster: Option<relay::natsd::Cluster>,
}

impl Backend {
    /// A fresh SQLite store.
    pub fn sqlite() -> Option<Backend> {
        let dir = tempfile::tempdir().unwrap();
        let location = format!("sqlite:{}", dir.path().join("home").display());
        Some(Backend {
            dir,
            location,
            _cluster: None,
        })
    }

    /// A fresh single-node NATS store, or `None` (with a visible skip) when no
    /// nats-server is found and CI does not require one; `what` names the suite.
    pub fn nats(what: &str) -> Option<Backend> {
        if relay::natsd::skip_or_fail(what) {
            return None;
        }
        let cluster = relay::natsd::Cluster::start(1, Duration::from_secs(300)).unwrap();
        Some(Backend {
            dir: tempfile::tempdir().unwrap(),
            location: cluster.url_list(),
            _cluster: Some(cluster),
        })
    }

    /// `$RELAY_HOME` of the relay processes.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The configuration of this home.
    pub fn config(&self) -> Config {
        Config::at(self.home())
    }

    /// A new handle on the same data (as another process would open it).
    pub fn open(&self) -> Box<dyn Store> {
        self.open_with(self.config())
    }

    /// A new handle with another configuration (a smaller body cap, say).
    pub fn open_with(&self, cfg: Config) -> Box<dyn Store> {
        open_at(&self.location, &cfg).unwrap()
    }

    /// The real `relay` binary on this store, with a clean identity.
    pub fn relay(&self, args: &[&str]) -> Command {
        let mut c = Command::new(super::relay_bin());
        c.args(args)
            .env("RELAY_HOME", self.home())
            .env("RELAY_STORE", &self.location)
            .env_remove("RELAY_AS")
            .env("RELAY_LOG", "warn");
        c
    }
}

/// Each case, a `fn(&Fx)`, as a test in `mod sqlite` and in `mod nats`, where `Fx` has
/// `sqlite()` and `nats()` constructors returning `Option<Fx>` (`None`: skipped).
#[macro_export]
macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { if let Some(fx) = super::Fx::sqlite() { super::$case(&fx) } })*
        }
        mod nats {
            $(#[test] fn $case() { if let Some(fx) = super::Fx::nats() { super::$case(&fx) } })*
        }
    };
}

/// Registers an endpoint named `name`; its id.
pub fn reg(s: &dyn Store, name: &str) -> String {
    s.register(&Registration {
        name: Some(name.into()),
        ..Default::default()
    })
    .unwrap()
    .endpoint
    .id
}

/// A plain-text notify from `from` to `to` (endpoint ids).
pub fn msg(from: &str, to: &str, body: &str) -> NewMessage {
    NewMessage {
        from: from.into(),
        to: to.into(),
        thread: None,
        reply_to: None,
        intent: Intent::Notify,
        content_type: TEXT_PLAIN.into(),
        body: body.as_bytes().to_vec(),
        expires_at: None,
        hold: None,
    }
}
