//! What only the SQLite store has: migrations, durability, refusing foreign files. The
//! semantics every backend shares are in tests/store_conformance.rs.

mod common;

use relay::config::Config;
use relay::store::*;

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

fn reg(s: &dyn Store, name: &str) -> String {
    s.register(&Registration {
        name: Some(name.into()),
        ..Default::default()
    })
    .unwrap()
    .endpoint
    .id
}

fn mail(from: &str, to: &str, body: &str) -> NewMessage {
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

fn search(s: &dyn Store, q: &str) -> Vec<String> {
    s.history(&History {
        text: Some(query::TextQuery::parse(q).unwrap()),
        limit: MAX_HISTORY,
        ..Default::default()
    })
    .unwrap()
    .iter()
    .map(|m| m.text().into_owned())
    .collect()
}

/// FTS5's own check of the (contentless) index's internal consistency.
fn fts_in_step(conn: &rusqlite::Connection) {
    conn.execute(
        "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
        [],
    )
    .expect("the search index matches the messages table");
}

/// Mail stored by a version-5 relay (no search index) is searchable after the upgrade.
#[test]
fn a_v5_database_with_mail_migrates_and_its_mail_is_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::at(dir.path().join("home"));
    let (a, b) = {
        let s = SqliteStore::open(&cfg).unwrap();
        let (a, b) = (reg(&s, "a"), reg(&s, "b"));
        s.enqueue(&mail(&a, &b, "the old lease report")).unwrap();
        s.enqueue(&mail(&b, &a, "Réponse: lease renewed")).unwrap();
        (a, b)
    };
    // Versions 6 and 7 only added objects, so dropping them (and the version) is a
    // version-5 database with the same mail in it.
    {
        let conn = rusqlite::Connection::open(cfg.db_path()).unwrap();
        conn.execute_batch(common::DROP_V7).unwrap();
        conn.execute_batch(
            "DROP TRIGGER messages_fts_delete; DROP TABLE messages_fts; \
             DROP TABLE reservations; PRAGMA user_version = 5;",
        )
        .unwrap();
        // Mail written by the old binary: no trigger indexes it.
        conn.execute(
            "INSERT INTO messages (id, sender, recipient, intent, content_type, body, created_at) \
             VALUES ('01900000-0000-7000-8000-000000000001', ?1, ?2, 'notify', 'text/plain', \
             CAST('written by v5' AS BLOB), 1)",
            [&a, &b],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&cfg).unwrap();
    let conn = rusqlite::Connection::open(cfg.db_path()).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    assert_eq!(
        search(&s, "lease"),
        ["Réponse: lease renewed", "the old lease report"]
    );
    assert_eq!(search(&s, "reponse"), ["Réponse: lease renewed"]);
    assert_eq!(search(&s, "v5"), ["written by v5"]);
    fts_in_step(&conn);
    // And the new tables work.
    let got = s
        .reserve(&ReserveRequest {
            project: "/p".into(),
            holder: a.clone(),
            globs: vec!["src/**".into()],
            mode: Mode::Exclusive,
            ttl: std::time::Duration::from_secs(60),
            reason: None,
            force: false,
        })
        .unwrap();
    assert_eq!(got.granted.len(), 1);
    // The event log starts at the migration: nothing for the old mail, the reservation
    // just taken is its first event.
    let page = s
        .events(&EventQuery {
            limit: MAX_EVENTS,
            ..Default::default()
        })
        .unwrap();
    let kinds: Vec<&str> = page.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["reservation.taken"]);
    assert_eq!(page.events[0].endpoint.as_deref(), Some(a.as_str()));
}

/// gc deletes mail and its index rows in one transaction: the index never points at a
/// message that is gone, and what remains is found.
#[test]
fn the_search_index_stays_in_step_through_gc() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::at(dir.path().join("home"));
    let s = SqliteStore::open(&cfg).unwrap();
    let (a, b) = (reg(&s, "a"), reg(&s, "b"));
    let mut ack = Vec::new();
    for i in 0..50 {
        let r = s
            .enqueue(&mail(&a, &b, &format!("report {i} parity{}", i % 2)))
            .unwrap();
        if i % 2 == 0 {
            ack.push(r.id);
        }
    }
    let mut e = mail(&a, &b, "report expired");
    e.expires_at = Some(relay::clock::now_ms() - 1);
    s.enqueue(&e).unwrap();
    s.ack(Some(&b), &ack).unwrap();
    let conn = rusqlite::Connection::open(cfg.db_path()).unwrap();
    fts_in_step(&conn);
    assert_eq!(search(&s, "report").len(), 51);
    // Wait past the acks' millisecond so a zero-age gc takes them.
    let acked_at = s.receipt(&ack[0]).unwrap().acked_at.unwrap();
    while relay::clock::now_ms() <= acked_at + 1 {
        std::thread::yield_now();
    }
    let r = s.gc(std::time::Duration::ZERO).unwrap();
    assert_eq!((r.acked_deleted, r.expired_deleted), (25, 1));
    fts_in_step(&conn);
    let left = search(&s, "report");
    assert_eq!(left.len(), 25);
    assert!(left.iter().all(|b| b.ends_with("parity1")), "{left:?}");
    assert!(search(&s, "parity0").is_empty());
    assert!(search(&s, "expired").is_empty());
    let indexed: i64 = conn
        .query_row(
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'report'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexed, 25, "no index rows left for deleted mail");
}

/// Search reads the index newest first and stops at the limit, however it is driven:
/// walking every match (the other conditions keep much of the mail), walking the span of
/// the few messages one condition selects, or nothing at all (a condition selects none).
/// Each gives the answer a plain filter over every message gives.
#[test]
fn search_is_driven_by_the_index_and_agrees_with_a_plain_filter() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&Config::at(dir.path().join("home"))).unwrap();
    let (a, b, c, d) = (reg(&s, "a"), reg(&s, "b"), reg(&s, "c"), reg(&s, "d"));
    const WORDS: [&str; 6] = ["lease", "deploy", "staging", "plan", "review", "merge"];
    // (id, from, to, thread, body), oldest first.
    let mut sent: Vec<(String, String, String, Option<String>, String)> = Vec::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut batch = Vec::new();
    for i in 0..2400usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let words: Vec<&str> = (0..4)
            .map(|k| WORDS[((x >> (k * 8)) % 6) as usize])
            .collect();
        // Few of c's and d's, early, in the middle and late; most of them a -> b.
        let (from, to) = match i {
            5 | 6 | 1200 | 2390 => (&c, &d),
            7 | 1201 | 2391 => (&d, &a),
            _ => (&a, &b),
        };
        let mut m = mail(from, to, &words.join(" "));
        m.thread = (i % 5 == 0).then(|| format!("t{}", i % 3));
        batch.push(m);
        if batch.len() == 400 {
            for (m, r) in batch.iter().zip(s.enqueue_batch(&batch).unwrap()) {
                let body = String::from_utf8(m.body.clone()).unwrap();
                sent.push((r.id, m.from.clone(), m.to.clone(), m.thread.clone(), body));
            }
            batch.clear();
        }
    }
    let some_ids: Vec<String> = sent.iter().step_by(97).map(|m| m.0.clone()).collect();
    let who = |id: &str| Some(id.to_string());
    let conditions: Vec<(&str, History)> = vec![
        ("all", History::default()),
        (
            "big participant",
            History {
                participant: who(&a),
                ..Default::default()
            },
        ),
        (
            "small participant",
            History {
                participant: who(&c),
                ..Default::default()
            },
        ),
        (
            "from",
            History {
                from: who(&d),
                ..Default::default()
            },
        ),
        (
            "to",
            History {
                to: who(&b),
                ..Default::default()
            },
        ),
        (
            "thread",
            History {
                thread: Some("t1".into()),
                ..Default::default()
            },
        ),
        (
            "ids",
            History {
                ids: Some(some_ids.clone()),
                ..Default::default()
            },
        ),
        (
            "nobody",
            History {
                participant: who("nobody"),
                ..Default::default()
            },
        ),
        (
            "mixed",
            History {
                participant: who(&a),
                thread: Some("t2".into()),
                ..Default::default()
            },
        ),
    ];
    let mut drives = std::collections::BTreeSet::new();
    for text in [
        "lease",
        "deploy staging",
        "\"plan review\"",
        "mer*",
        "lease -merge OR plan",
    ] {
        let tq = query::TextQuery::parse(text).unwrap();
        for (what, cond) in &conditions {
            for limit in [3, 20, MAX_HISTORY] {
                let q = History {
                    text: Some(tq.clone()),
                    limit,
                    ..cond.clone()
                };
                let got: Vec<String> = s.history(&q).unwrap().into_iter().map(|m| m.id).collect();
                let want: Vec<String> = sent
                    .iter()
                    .rev()
                    .filter(|(id, from, to, thread, body)| {
                        q.participant.as_ref().is_none_or(|p| p == from || p == to)
                            && q.from.as_ref().is_none_or(|f| f == from)
                            && q.to.as_ref().is_none_or(|t| t == to)
                            && q.thread.as_ref().is_none_or(|t| Some(t) == thread.as_ref())
                            && q.ids.as_ref().is_none_or(|ids| ids.contains(id))
                            && tq.matches(body)
                    })
                    .take(limit)
                    .map(|m| m.0.clone())
                    .collect();
                assert_eq!(got, want, "{text:?} with {what}, limit {limit}");
                let plan = s.history_plan(&q).unwrap();
                assert!(!plan.contains("TEMP B-TREE"), "sorts every match:\n{plan}");
                drives.insert(if plan.starts_with("NOTHING") {
                    "nothing"
                } else if plan.contains("LIST SUBQUERY") {
                    "span"
                } else {
                    assert!(plan.contains("VIRTUAL TABLE INDEX"), "{plan}");
                    "walk"
                });
            }
        }
    }
    assert_eq!(
        drives.into_iter().collect::<Vec<_>>(),
        ["nothing", "span", "walk"],
        "every drive was tried"
    );
    // Without text, store order comes from the primary key or the thread index.
    for q in [
        History {
            limit: 20,
            ..Default::default()
        },
        History {
            thread: Some("t1".into()),
            limit: 20,
            ..Default::default()
        },
    ] {
        let plan = s.history_plan(&q).unwrap();
        assert!(!plan.contains("TEMP B-TREE"), "sorts:\n{plan}");
    }
}
