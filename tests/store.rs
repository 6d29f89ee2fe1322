//! The store through its library API, on a real SQLite file.

use std::sync::Arc;
use std::time::Duration;

use relay::config::Config;
use relay::store::*;

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Config::at(dir.path().join("home"))).unwrap();
    (dir, store)
}

fn endpoint(s: &SqliteStore, name: &str) -> String {
    s.register(&Registration {
        name: Some(name.into()),
        ..Default::default()
    })
    .unwrap()
    .endpoint
    .id
}

fn msg(from: &str, to: &str, body: &str) -> NewMessage {
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

fn fetch(mode: FetchMode) -> Fetch {
    Fetch {
        limit: 100,
        mode,
        filter: Filter::default(),
    }
}

#[test]
fn take_delivers_and_acks_in_one_step_oldest_first() {
    let (_d, s) = open();
    let (a, b) = (endpoint(&s, "a"), endpoint(&s, "b"));
    for i in 0..5 {
        s.enqueue(&msg(&a, &b, &format!("m{i}"))).unwrap();
    }
    let got = s
        .fetch(
            &b,
            &Fetch {
                limit: 3,
                ..fetch(FetchMode::Take)
            },
        )
        .unwrap();
    let bodies: Vec<_> = got.iter().map(|m| m.text().into_owned()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    assert!(got.iter().all(|m| m.state == State::Acked));
    assert_eq!(s.receipt(&got[0].id).unwrap().state, State::Acked);
    assert_eq!(s.fetch(&b, &fetch(FetchMode::Take)).unwrap().len(), 2);
    assert!(s.fetch(&b, &fetch(FetchMode::Take)).unwrap().is_empty());
}

#[test]
fn a_batch_is_all_or_nothing() {
    let (_d, s) = open();
    let (a, b) = (endpoint(&s, "a"), endpoint(&s, "b"));
    let err = s
        .enqueue_batch(&[msg(&a, &b, "fine"), msg(&a, "no-such-endpoint", "bad")])
        .unwrap_err();
    assert!(matches!(err, Error::UnknownEndpoint { .. }), "{err}");
    assert!(s.fetch(&b, &fetch(FetchMode::Peek)).unwrap().is_empty());
    let big = "x".repeat(s.max_body() + 1);
    let err = s
        .enqueue_batch(&[msg(&a, &b, "fine"), msg(&a, &b, &big)])
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(s.fetch(&b, &fetch(FetchMode::Peek)).unwrap().is_empty());
}

#[test]
fn filters_select_by_sender_and_thread() {
    let (_d, s) = open();
    let (a, c, b) = (endpoint(&s, "a"), endpoint(&s, "c"), endpoint(&s, "b"));
    s.enqueue(&msg(&c, &b, "from c")).unwrap();
    let mut t = msg(&a, &b, "a in t");
    t.thread = Some("t".into());
    s.enqueue(&t).unwrap();
    let req = Fetch {
        limit: 10,
        mode: FetchMode::Peek,
        filter: Filter {
            from: Some(a.clone()),
            thread: Some("t".into()),
            ids: None,
            reply_to: None,
            exclude: None,
        },
    };
    let got = s.fetch(&b, &req).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text(), "a in t");
    assert_eq!(got[0].from_name.as_deref(), Some("a"));
}

#[test]
fn expired_messages_are_never_handed_out() {
    let (_d, s) = open();
    let (a, b) = (endpoint(&s, "a"), endpoint(&s, "b"));
    let mut m = msg(&a, &b, "stale");
    m.expires_at = Some(relay::clock::now_ms() - 1);
    s.enqueue(&m).unwrap();
    assert!(s.fetch(&b, &fetch(FetchMode::Take)).unwrap().is_empty());
    assert_eq!(s.gc(Duration::from_secs(86400)).unwrap().expired_deleted, 1);
}

#[test]
fn a_lapsed_lease_is_redelivered_and_wait_notices_without_a_ring() {
    let (_d, s) = open();
    let (a, b) = (endpoint(&s, "a"), endpoint(&s, "b"));
    let id = s.enqueue(&msg(&a, &b, "again")).unwrap().id;
    let lease = FetchMode::Deliver {
        lease: Duration::from_millis(300),
    };
    assert_eq!(s.fetch(&b, &fetch(lease)).unwrap().len(), 1);
    assert!(
        s.fetch(&b, &fetch(lease)).unwrap().is_empty(),
        "leased to the first reader"
    );
    let got = s
        .wait(&b, &fetch(FetchMode::Take), Duration::from_secs(20))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert_eq!(got[0].deliveries, 2);
    let r = s.receipt(&id).unwrap();
    assert_eq!((r.state, r.deliveries), (State::Acked, 2));
}

#[test]
fn wait_returns_mail_sent_through_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::at(dir.path().join("home"));
    let s = Arc::new(SqliteStore::open(&cfg).unwrap());
    let (a, b) = (endpoint(&s, "a"), endpoint(&s, "b"));
    let waiter = {
        let (s, b) = (s.clone(), b.clone());
        std::thread::spawn(move || s.wait(&b, &fetch(FetchMode::Take), Duration::from_secs(60)))
    };
    // A second store handle (as another process would have) does the send.
    let other = SqliteStore::open(&cfg).unwrap();
    other.enqueue(&msg(&a, &b, "ding")).unwrap();
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text(), "ding");
}

#[test]
fn wait_returns_empty_at_its_timeout() {
    let (_d, s) = open();
    let b = endpoint(&s, "b");
    assert!(
        s.wait(&b, &fetch(FetchMode::Take), Duration::from_millis(100))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn lookup_tells_unknown_from_ambiguous_and_prefers_names() {
    let (_d, s) = open();
    for (name, id) in [
        ("one", "beef0001"),
        ("two", "beef0002"),
        ("beef", "cafe0001"),
    ] {
        s.register(&Registration {
            id: Some(id.into()),
            name: Some(name.into()),
            ..Default::default()
        })
        .unwrap();
    }
    assert!(matches!(s.lookup("nothing").unwrap(), Lookup::Unknown));
    assert!(
        matches!(s.lookup("bee").unwrap(), Lookup::Unknown),
        "prefixes under 4 chars never match"
    );
    assert!(matches!(s.lookup("beef000").unwrap(), Lookup::Ambiguous(c) if c.len() == 2));
    assert!(
        matches!(s.lookup("beef").unwrap(), Lookup::Found(e) if e.id == "cafe0001"),
        "exact name wins"
    );
    assert!(
        matches!(s.lookup("beef0002").unwrap(), Lookup::Found(e) if e.name.as_deref() == Some("two"))
    );
    let err = s.resolve("beef000").unwrap_err().to_string();
    assert!(
        err.contains("beef0001 (one)") && err.contains("beef0002 (two)"),
        "{err}"
    );
}

#[test]
fn reopening_migrates_once_and_stays_at_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::at(dir.path().join("home"));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || SqliteStore::open(&cfg).map(drop))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let conn = rusqlite::Connection::open(cfg.db_path()).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn durability_sets_synchronous() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::at(dir.path().join("home"));
    assert_eq!(
        SqliteStore::open(&cfg).unwrap().synchronous().unwrap(),
        1,
        "NORMAL"
    );
    cfg.durability = relay::config::Durability::Full;
    assert_eq!(
        SqliteStore::open(&cfg).unwrap().synchronous().unwrap(),
        2,
        "FULL"
    );
}

#[test]
fn a_negative_schema_version_is_someone_elses_database() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::at(dir.path().join("home"));
    std::fs::create_dir_all(&cfg.home).unwrap();
    {
        let c = rusqlite::Connection::open(cfg.db_path()).unwrap();
        c.pragma_update(None, "user_version", -1).unwrap();
    }
    let err = SqliteStore::open(&cfg).unwrap_err();
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
}
