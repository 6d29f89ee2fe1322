//! One suite, every backend: each case below runs against SQLite (a real file) and NATS
//! JetStream (a real single-node nats-server, one per case) through the `Store` trait, so
//! the two backends cannot drift apart. Cluster behaviour (replicas, a node killed) is in
//! tests/nats_cluster.rs.

// `&[id.clone()]` reads better in assertions than `std::slice::from_ref(&id)`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::clock::now_ms;
use relay::store::*;

/// One backend under test (tests/common/backend.rs).
struct Fx(common::backend::Backend);

impl Fx {
    fn sqlite() -> Option<Fx> {
        common::backend::Backend::sqlite().map(Fx)
    }

    fn nats() -> Option<Fx> {
        common::backend::Backend::nats("store conformance on NATS").map(Fx)
    }
}

impl std::ops::Deref for Fx {
    type Target = common::backend::Backend;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

both_stores!(
    register_is_a_field_preserving_upsert,
    a_name_moves_in_one_step,
    lookup_exact_prefix_ambiguous,
    bad_names_and_ids_are_refused,
    take_is_oldest_first_and_acks,
    peek_changes_nothing,
    deliver_leases_and_a_lapsed_lease_returns,
    ack_outcomes,
    filters_select,
    expired_mail_is_never_handed_out,
    pending_counts_and_bytes,
    batch_is_all_or_none,
    body_cap_and_thread_rule_before_any_write,
    unknown_endpoints_store_nothing,
    hold_claim_and_settle,
    release_gives_mail_back,
    injected_mail_is_settled_once,
    loop_counts_follow_thread_and_rate,
    receipts_by_id_and_prefix,
    wait_times_out_empty,
    wait_is_woken_by_another_process,
    wait_or_cancel_returns_on_cancel,
    bindings_round_trip,
    gc_removes_old_acked_and_expired,
    import_is_idempotent,
    hostile_text_round_trips,
    roster_counts_and_hosts,
    concurrent_readers_never_share_a_lease,
    acked_history_never_hides_pending_mail,
    history_filters_select,
    history_shows_states_and_changes_nothing,
    search_words_phrases_prefixes,
    search_hostile_bodies,
    search_scripts_with_marks_agree,
    search_finds_acked_and_loses_gcd,
    reserve_grants_and_conflicts_name_the_holder,
    reserve_shared_and_exclusive,
    reserve_same_holder_updates_in_place,
    reserve_is_all_or_none_and_force_records,
    reservations_expire_renew_release,
    reserve_unknown_holder_and_huge_ttl,
    reserve_races_have_one_winner,
    events_record_each_change,
    events_resume_exactly_once_and_tail,
    wait_events_is_woken_and_cancelled,
    gc_drops_old_events_and_cursors_go_on,
);

use common::backend::{msg, reg};

fn req(mode: FetchMode) -> Fetch {
    Fetch {
        limit: 100,
        mode,
        filter: Filter::default(),
    }
}

fn deliver(ms: u64) -> FetchMode {
    FetchMode::Deliver {
        lease: Duration::from_millis(ms),
    }
}

fn bodies(m: &[Message]) -> Vec<String> {
    m.iter().map(|m| m.text().into_owned()).collect()
}

/// Waits until the wall clock has passed `t` (ms): some rules compare times strictly.
fn after(t: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while now_ms() <= t {
        assert!(Instant::now() < deadline, "clock stuck");
        std::thread::yield_now();
    }
}

fn register_is_a_field_preserving_upsert(fx: &Fx) {
    let s = fx.open();
    let mut meta = serde_json::Map::new();
    meta.insert("team".into(), "blue".into());
    let r = s
        .register(&Registration {
            name: Some("ann".into()),
            kind: Some(Kind::Codex),
            cwd: Some("/w".into()),
            meta,
            ..Default::default()
        })
        .unwrap();
    assert!(r.created);
    assert_eq!(r.endpoint.host.as_deref(), Some(local_host().as_str()));
    let mut more = serde_json::Map::new();
    more.insert("role".into(), "lead".into());
    let again = s
        .register(&Registration {
            id: Some(r.endpoint.id.clone()),
            meta: more,
            ..Default::default()
        })
        .unwrap();
    assert!(!again.created);
    let e = again.endpoint;
    assert_eq!(e.name.as_deref(), Some("ann"), "name kept");
    assert_eq!(e.kind, Kind::Codex, "kind kept");
    assert_eq!(e.cwd.as_deref(), Some("/w"), "cwd kept");
    assert_eq!(e.meta.get("team").and_then(|v| v.as_str()), Some("blue"));
    assert_eq!(e.meta.get("role").and_then(|v| v.as_str()), Some("lead"));
    // By name alone: the same endpoint.
    let by_name = s
        .register(&Registration {
            name: Some("ann".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_name.endpoint.id, e.id);
    assert!(!by_name.created);
    // Another handle sees it.
    assert_eq!(fx.open().resolve("ann").unwrap().id, e.id);
}

fn a_name_moves_in_one_step(fx: &Fx) {
    let s = fx.open();
    let old = reg(&*s, "lead");
    let new = s
        .register(&Registration {
            id: Some("new-holder-1".into()),
            name: Some("lead".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(new.name_taken_from.as_deref(), Some(old.as_str()));
    assert_eq!(s.resolve("lead").unwrap().id, "new-holder-1");
    let old_ep = s.resolve(&old).unwrap();
    assert_eq!(old_ep.name, None, "the old holder lost the name");
    let roster = s.roster().unwrap();
    let named: Vec<_> = roster
        .iter()
        .filter(|r| r.endpoint.name.as_deref() == Some("lead"))
        .collect();
    assert_eq!(named.len(), 1, "one holder in the roster");
    // Renaming frees the previous name.
    s.register(&Registration {
        id: Some("new-holder-1".into()),
        name: Some("boss".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(s.lookup("lead").unwrap(), Lookup::Unknown));
    assert_eq!(s.resolve("boss").unwrap().id, "new-holder-1");
}

fn lookup_exact_prefix_ambiguous(fx: &Fx) {
    let s = fx.open();
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
    assert!(matches!(s.lookup("").unwrap(), Lookup::Unknown));
    assert!(
        matches!(s.lookup("bee").unwrap(), Lookup::Unknown),
        "prefixes under 4 chars never match"
    );
    assert!(matches!(s.lookup("beef000").unwrap(), Lookup::Ambiguous(c) if c.len() == 2));
    assert!(matches!(s.lookup("beef").unwrap(), Lookup::Found(e) if e.id == "cafe0001"));
    assert!(matches!(s.lookup("cafe").unwrap(), Lookup::Found(e) if e.id == "cafe0001"));
    assert!(
        matches!(s.lookup("beef0002").unwrap(), Lookup::Found(e) if e.name.as_deref() == Some("two"))
    );
    let err = s.resolve("beef000").unwrap_err().to_string();
    assert!(
        err.contains("beef0001 (one)") && err.contains("beef0002 (two)"),
        "{err}"
    );
    assert!(matches!(
        s.resolve("zzzz").unwrap_err(),
        Error::UnknownEndpoint { .. }
    ));
    // Subject metacharacters are just characters.
    assert!(matches!(s.lookup("a.*").unwrap(), Lookup::Unknown));
    assert!(matches!(s.lookup(">").unwrap(), Lookup::Unknown));
}

fn bad_names_and_ids_are_refused(fx: &Fx) {
    let s = fx.open();
    for name in [
        "",
        "has space",
        "0123456789abcdef0123456789abcdef",
        ".dot",
        "a*b",
    ] {
        let e = s
            .register(&Registration {
                name: Some(name.into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{name}: {e}");
    }
    for id in ["", "a b", "x>"] {
        let e = s
            .register(&Registration {
                id: Some(id.into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(e, Error::InvalidId { .. }), "{id}: {e}");
    }
    assert!(s.roster().unwrap().is_empty(), "nothing half-written");
}

fn take_is_oldest_first_and_acks(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    for i in 0..5 {
        s.enqueue(&msg(&a, &b, &format!("m{i}"))).unwrap();
    }
    let got = s
        .fetch(
            &b,
            &Fetch {
                limit: 3,
                ..req(FetchMode::Take)
            },
        )
        .unwrap();
    assert_eq!(bodies(&got), ["m0", "m1", "m2"]);
    assert!(
        got.iter()
            .all(|m| m.state == State::Acked && m.deliveries == 1)
    );
    assert_eq!(got[0].from_name.as_deref(), Some("a"));
    let r = s.receipt(&got[0].id).unwrap();
    assert_eq!(r.state, State::Acked);
    assert!(r.acked_at.is_some() && r.delivered_at.is_some());
    assert_eq!(
        bodies(&s.fetch(&b, &req(FetchMode::Take)).unwrap()),
        ["m3", "m4"]
    );
    assert!(s.fetch(&b, &req(FetchMode::Take)).unwrap().is_empty());
    assert!(
        s.fetch(&a, &req(FetchMode::Take)).unwrap().is_empty(),
        "a got nothing"
    );
}

fn peek_changes_nothing(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let id = s.enqueue(&msg(&a, &b, "look")).unwrap().id;
    for _ in 0..2 {
        let got = s.fetch(&b, &req(FetchMode::Peek)).unwrap();
        assert_eq!(bodies(&got), ["look"]);
        assert_eq!((got[0].state, got[0].deliveries), (State::Queued, 0));
    }
    let r = s.receipt(&id).unwrap();
    assert_eq!(
        (r.state, r.deliveries, r.delivered_at),
        (State::Queued, 0, None)
    );
}

fn deliver_leases_and_a_lapsed_lease_returns(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let id = s.enqueue(&msg(&a, &b, "again")).unwrap().id;
    // Leases long enough that a loaded machine gets the next three calls in before the
    // lapse (400 ms was not), short enough that the wait below is quick.
    let got = s.fetch(&b, &req(deliver(2_000))).unwrap();
    assert_eq!((got.len(), got[0].state), (1, State::Delivered));
    assert!(
        s.fetch(&b, &req(deliver(2_000))).unwrap().is_empty(),
        "leased"
    );
    assert_eq!(
        s.pending(&b).unwrap().0,
        0,
        "a leased message is not pending"
    );
    assert_eq!(s.receipt(&id).unwrap().state, State::Delivered);
    // wait() notices the lapse by itself (no doorbell rings for it).
    let got = s
        .wait(&b, &req(FetchMode::Take), Duration::from_secs(20))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id.as_str(), got[0].deliveries), (id.as_str(), 2));
    let r = s.receipt(&id).unwrap();
    assert_eq!((r.state, r.deliveries), (State::Acked, 2));
}

fn ack_outcomes(fx: &Fx) {
    let s = fx.open();
    let (a, b, c) = (reg(&*s, "a"), reg(&*s, "b"), reg(&*s, "c"));
    let m1 = s.enqueue(&msg(&a, &b, "1")).unwrap().id;
    let m2 = s.enqueue(&msg(&a, &c, "2")).unwrap().id;
    s.fetch(&b, &req(deliver(60_000))).unwrap();
    let out = s
        .ack(
            Some(&b),
            &[
                m1.clone(),
                m2.clone(),
                "ffffffff-no".into(),
                m1[..m1.len() - 3].into(),
            ],
        )
        .unwrap();
    let outcomes: Vec<AckOutcome> = out.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AckOutcome::Acked,
            AckOutcome::NotYours,
            AckOutcome::Unknown,
            AckOutcome::AlreadyAcked
        ]
    );
    assert_eq!(out[3].id, m1, "a prefix resolves to the full id");
    assert_eq!(s.receipt(&m2).unwrap().state, State::Queued, "not acked");
    // Without a recipient (an operator), and a prefix shared by both: ambiguous.
    let common: String = m1
        .chars()
        .zip(m2.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    if common.len() >= MIN_PREFIX {
        let amb = s.ack(None, &[common]).unwrap();
        assert_eq!(amb[0].outcome, AckOutcome::Ambiguous);
    }
    assert_eq!(
        s.ack(None, &[m2.clone()]).unwrap()[0].outcome,
        AckOutcome::Acked
    );
    let r = s.receipt(&m2).unwrap();
    assert_eq!((r.state, r.deliveries), (State::Acked, 0));
    assert!(r.delivered_at.is_some(), "acked implies delivered");
}

fn filters_select(fx: &Fx) {
    let s = fx.open();
    let (a, c, b) = (reg(&*s, "a"), reg(&*s, "c"), reg(&*s, "b"));
    let from_c = s.enqueue(&msg(&c, &b, "from c")).unwrap().id;
    let mut t = msg(&a, &b, "a in t");
    t.thread = Some("t one".into());
    let in_t = s.enqueue(&t).unwrap().id;
    let mut r = msg(&a, &b, "reply");
    r.reply_to = Some(from_c.clone());
    let reply = s.enqueue(&r).unwrap().id;
    let peek = |f: Filter| {
        bodies(
            &s.fetch(
                &b,
                &Fetch {
                    limit: 10,
                    mode: FetchMode::Peek,
                    filter: f,
                },
            )
            .unwrap(),
        )
    };
    assert_eq!(
        peek(Filter {
            from: Some(a.clone()),
            thread: Some("t one".into()),
            ..Default::default()
        }),
        ["a in t"]
    );
    assert_eq!(
        peek(Filter {
            thread: Some("t".into()),
            ..Default::default()
        }),
        Vec::<String>::new(),
        "threads match exactly"
    );
    assert_eq!(
        peek(Filter {
            ids: Some(vec![reply.clone(), from_c.clone()]),
            ..Default::default()
        }),
        ["from c", "reply"]
    );
    assert_eq!(
        peek(Filter {
            reply_to: Some(from_c.clone()),
            ..Default::default()
        }),
        ["reply"]
    );
    assert_eq!(
        peek(Filter {
            exclude: Some(vec![in_t, reply]),
            ..Default::default()
        }),
        ["from c"]
    );
}

fn expired_mail_is_never_handed_out(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let mut m = msg(&a, &b, "stale");
    m.expires_at = Some(now_ms() - 1);
    s.enqueue(&m).unwrap();
    s.enqueue(&msg(&a, &b, "fresh")).unwrap();
    assert_eq!(
        bodies(&s.fetch(&b, &req(FetchMode::Peek)).unwrap()),
        ["fresh"]
    );
    assert_eq!(s.pending(&b).unwrap().0, 1);
    assert_eq!(
        bodies(&s.fetch(&b, &req(FetchMode::Take)).unwrap()),
        ["fresh"]
    );
}

fn pending_counts_and_bytes(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    assert_eq!(s.pending(&b).unwrap(), (0, 0));
    s.enqueue(&msg(&a, &b, "12345")).unwrap();
    s.enqueue(&msg(&a, &b, "678")).unwrap();
    assert_eq!(s.pending(&b).unwrap(), (2, 8));
    s.fetch(
        &b,
        &Fetch {
            limit: 1,
            ..req(FetchMode::Take)
        },
    )
    .unwrap();
    assert_eq!(s.pending(&b).unwrap(), (1, 3));
    assert_eq!(
        fx.open().pending(&b).unwrap(),
        (1, 3),
        "another handle agrees"
    );
}

fn batch_is_all_or_none(fx: &Fx) {
    let s = fx.open();
    let (a, b, c) = (reg(&*s, "a"), reg(&*s, "b"), reg(&*s, "c"));
    let err = s
        .enqueue_batch(&[msg(&a, &b, "fine"), msg(&a, "no-such-endpoint", "bad")])
        .unwrap_err();
    assert!(matches!(err, Error::UnknownEndpoint { .. }), "{err}");
    assert!(s.fetch(&b, &req(FetchMode::Peek)).unwrap().is_empty());
    let big = "x".repeat(s.max_body() + 1);
    let err = s
        .enqueue_batch(&[msg(&a, &b, "fine"), msg(&a, &b, &big)])
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(s.fetch(&b, &req(FetchMode::Peek)).unwrap().is_empty());
    let rs = s
        .enqueue_batch(&[
            msg(&a, &b, "to b"),
            msg(&a, &c, "to c"),
            msg(&a, &b, "to b 2"),
        ])
        .unwrap();
    assert_eq!(rs.len(), 3);
    assert_eq!(rs[0].to_name.as_deref(), Some("b"));
    assert_eq!(
        bodies(&fx.open().fetch(&b, &req(FetchMode::Take)).unwrap()),
        ["to b", "to b 2"]
    );
    assert_eq!(
        bodies(&s.fetch(&c, &req(FetchMode::Take)).unwrap()),
        ["to c"]
    );
}

fn body_cap_and_thread_rule_before_any_write(fx: &Fx) {
    let mut cfg = fx.config();
    cfg.max_body = 1024;
    let s = fx.open_with(cfg);
    assert_eq!(s.max_body(), 1024);
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    s.enqueue(&msg(&a, &b, &"x".repeat(1024))).unwrap();
    let e = s.enqueue(&msg(&a, &b, &"x".repeat(1025))).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                size: 1025,
                cap: 1024
            }
        ),
        "{e}"
    );
    for bad in ["t\u{0}x", "line\nbreak", "\u{202e}rtl", &"t".repeat(257)] {
        let mut m = msg(&a, &b, "x");
        m.thread = Some(bad.to_string());
        let e = s.enqueue(&m).unwrap_err();
        assert!(matches!(e, Error::InvalidThread { .. }), "{bad:?}: {e}");
    }
    assert_eq!(s.pending(&b).unwrap().0, 1, "only the message at the cap");
}

fn unknown_endpoints_store_nothing(fx: &Fx) {
    let s = fx.open();
    let a = reg(&*s, "a");
    for (from, to) in [(a.as_str(), "ghost"), ("ghost", a.as_str())] {
        let e = s.enqueue(&msg(from, to, "x")).unwrap_err();
        assert!(
            matches!(e, Error::UnknownEndpoint { ref query } if query == "ghost"),
            "{e}"
        );
    }
    assert_eq!(s.pending(&a).unwrap().0, 0);
    assert_eq!(s.roster().unwrap().len(), 1);
}

fn hold_claim_and_settle(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let held = |body: &str| {
        let mut m = msg(&a, &b, body);
        m.hold = Some(Duration::from_secs(60));
        s.enqueue(&m).unwrap().id
    };
    // Held: invisible to every fetch.
    let shown = held("shown");
    assert!(s.fetch(&b, &req(FetchMode::Take)).unwrap().is_empty());
    assert_eq!(s.settle_hold(&b, &shown, true).unwrap(), State::Acked);
    assert_eq!(
        s.settle_hold(&b, &shown, false).unwrap(),
        State::Acked,
        "left as is"
    );
    // Not shown: back to the mailbox.
    let dropped = held("dropped");
    assert_eq!(s.settle_hold(&b, &dropped, false).unwrap(), State::Queued);
    assert_eq!(
        bodies(&s.fetch(&b, &req(FetchMode::Peek)).unwrap()),
        ["dropped"]
    );
    assert!(
        s.claim(&b, &dropped, Duration::from_secs(5))
            .unwrap()
            .is_none(),
        "not held"
    );
    // Claimed by the live receiver: delivered under its lease, then its ack.
    let claimed = held("claimed");
    let got = s
        .claim(&b, &claimed, Duration::from_secs(60))
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.text().as_ref(), got.state),
        ("claimed", State::Delivered)
    );
    assert!(
        s.claim(&b, &claimed, Duration::from_secs(60))
            .unwrap()
            .is_none(),
        "one holder"
    );
    assert_eq!(
        s.settle_hold(&b, &claimed, true).unwrap(),
        State::Delivered,
        "receiver acks"
    );
    assert_eq!(
        s.ack(Some(&b), &[claimed.clone()]).unwrap()[0].outcome,
        AckOutcome::Acked
    );
    let e = s.settle_hold(&a, &claimed, true).unwrap_err();
    assert!(
        matches!(e, Error::UnknownMessage { .. }),
        "not a's message: {e}"
    );
    // A hold that lapses (sender died) returns the message by itself.
    let mut m = msg(&a, &b, "lapsing");
    m.hold = Some(Duration::from_millis(300));
    s.enqueue(&m).unwrap();
    let got = s
        .wait(
            &b,
            &Fetch {
                limit: 10,
                mode: FetchMode::Take,
                filter: Filter {
                    exclude: Some(vec![dropped.clone()]),
                    ..Default::default()
                },
            },
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(bodies(&got), ["lapsing"]);
}

fn release_gives_mail_back(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let id = s.enqueue(&msg(&a, &b, "r")).unwrap().id;
    s.fetch(&b, &req(deliver(60_000))).unwrap();
    assert!(s.fetch(&b, &req(FetchMode::Peek)).unwrap().is_empty());
    assert_eq!(
        s.release(&a, &[id.clone()]).unwrap(),
        0,
        "other recipients' left alone"
    );
    assert_eq!(s.release(&b, &[id.clone(), "nope".into()]).unwrap(), 1);
    assert_eq!(s.release(&b, &[id.clone()]).unwrap(), 0, "already released");
    let got = s.fetch(&b, &req(FetchMode::Take)).unwrap();
    assert_eq!((got.len(), got[0].deliveries), (1, 2));
    assert_eq!(s.release(&b, &[id]).unwrap(), 0, "acked stays acked");
}

fn injected_mail_is_settled_once(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let m1 = s.enqueue(&msg(&a, &b, "one")).unwrap().id;
    let m2 = s.enqueue(&msg(&a, &b, "two")).unwrap().id;
    assert_eq!(
        s.mark_injected(&b, &[m1.clone()]).unwrap(),
        0,
        "not delivered yet"
    );
    s.fetch(&b, &req(deliver(60_000))).unwrap();
    assert_eq!(s.mark_injected(&a, &[m1.clone()]).unwrap(), 0, "not a's");
    assert_eq!(s.mark_injected(&b, &[m1.clone()]).unwrap(), 1);
    let hint = |s: &dyn Store| s.resolve(&b).unwrap().meta.get(INJECTED_HINT).cloned();
    assert_eq!(hint(&*s), Some(serde_json::Value::Bool(true)));
    assert!(s.receipt(&m1).unwrap().injected_at.is_some());
    assert_eq!(s.settle_injected(&b).unwrap(), [m1.clone()]);
    assert_eq!(hint(&*fx.open()), None);
    assert_eq!(s.receipt(&m1).unwrap().state, State::Acked);
    assert_eq!(
        s.receipt(&m2).unwrap().state,
        State::Delivered,
        "not injected: untouched"
    );
    assert!(s.settle_injected(&b).unwrap().is_empty());
}

fn loop_counts_follow_thread_and_rate(fx: &Fx) {
    let s = fx.open();
    let agent = |name: &str, kind: Kind| {
        s.register(&Registration {
            name: Some(name.into()),
            kind: Some(kind),
            ..Default::default()
        })
        .unwrap()
        .endpoint
        .id
    };
    let (x, y, h) = (
        agent("x", Kind::ClaudeCode),
        agent("y", Kind::Codex),
        agent("h", Kind::Human),
    );
    let before = now_ms() - 1;
    let in_thread = |from: &str, to: &str| {
        let mut m = msg(from, to, "t");
        m.thread = Some("plan".into());
        s.enqueue(&m).unwrap();
    };
    in_thread(&x, &y);
    in_thread(&y, &x);
    in_thread(&h, &x); // a human speaks: the run starts again
    in_thread(&x, &y);
    in_thread(&y, &x);
    in_thread(&x, &y);
    s.enqueue(&msg(&x, &y, "no thread")).unwrap();
    let c = s.loop_counts(&x, &y, Some("plan"), before).unwrap();
    assert_eq!(c.thread_run, 3);
    assert_eq!(c.sent_since, 4, "x sent 4 messages since `before`");
    assert_eq!(
        s.loop_counts(&x, &y, None, now_ms() + 1000).unwrap(),
        LoopCounts::default()
    );
    assert_eq!(
        s.loop_counts(&x, &h, Some("plan"), before)
            .unwrap()
            .thread_run,
        0
    );
    assert_eq!(
        s.loop_counts(&x, &y, Some("other"), before)
            .unwrap()
            .thread_run,
        0
    );
}

fn receipts_by_id_and_prefix(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "bee"));
    let mut m = msg(&a, &b, "x");
    m.thread = Some("th".into());
    m.expires_at = Some(now_ms() + 3_600_000);
    let sent = s.enqueue(&m).unwrap();
    assert_eq!(sent.state, State::Queued);
    assert_eq!(sent.to_name.as_deref(), Some("bee"));
    let r = s.receipt(&sent.id).unwrap();
    assert_eq!((r.from.as_str(), r.to.as_str()), (a.as_str(), b.as_str()));
    assert_eq!(r.to_name.as_deref(), Some("bee"));
    assert_eq!(r.thread.as_deref(), Some("th"));
    assert_eq!(r.expires_at, m.expires_at);
    assert_eq!(r.created_at, sent.created_at);
    let prefix = &sent.id[..sent.id.len() - 4];
    assert_eq!(s.receipt(prefix).unwrap().id, sent.id);
    assert!(matches!(
        s.receipt("abc").unwrap_err(),
        Error::UnknownMessage { .. }
    ));
    assert!(matches!(
        s.receipt("ffffffff").unwrap_err(),
        Error::UnknownMessage { .. }
    ));
    assert!(matches!(
        s.receipt("*").unwrap_err(),
        Error::UnknownMessage { .. }
    ));
    let other = s.enqueue(&msg(&a, &b, "y")).unwrap();
    let shared: String = sent
        .id
        .chars()
        .zip(other.id.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    if shared.len() >= MIN_PREFIX {
        assert!(matches!(
            s.receipt(&shared).unwrap_err(),
            Error::AmbiguousMessage { count: 2, .. }
        ));
    }
}

fn wait_times_out_empty(fx: &Fx) {
    let s = fx.open();
    let b = reg(&*s, "b");
    let t = Instant::now();
    assert!(
        s.wait(&b, &req(FetchMode::Take), Duration::from_millis(300))
            .unwrap()
            .is_empty()
    );
    assert!(t.elapsed() >= Duration::from_millis(290));
}

fn wait_is_woken_by_another_process(fx: &Fx) {
    let s: Arc<dyn Store> = Arc::from(fx.open());
    reg(&*s, "sender");
    let b = reg(&*s, "waiter");
    let waiter = {
        let (s, b) = (s.clone(), b.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let got = s.wait(&b, &req(FetchMode::Take), Duration::from_secs(60));
            (got, t.elapsed())
        })
    };
    // A sender process; the waiter may or may not have subscribed yet — either way it must
    // return the mail (the doorbell, or its first look).
    let child = fx
        .relay(&["send", "waiter", "--as", "sender", "ding from a process"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_with_deadline(child, common::DEADLINE, "relay send");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, took) = waiter.join().unwrap();
    let got = got.unwrap();
    assert_eq!(bodies(&got), ["ding from a process"]);
    assert!(
        took < Duration::from_secs(30),
        "woken, not timed out: {took:?}"
    );
}

fn wait_or_cancel_returns_on_cancel(fx: &Fx) {
    let s: Arc<dyn Store> = Arc::from(fx.open());
    let b = reg(&*s, "b");
    let cancel = Cancel::new();
    let h = {
        let (s, b, c) = (s.clone(), b.clone(), cancel.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = s.wait_or_cancel(&b, &req(FetchMode::Take), Duration::from_secs(60), &c);
            (r, t.elapsed())
        })
    };
    cancel.cancel();
    let (r, took) = h.join().unwrap();
    assert!(r.unwrap().is_empty());
    assert!(took < Duration::from_secs(10), "{took:?}");
}

fn bindings_round_trip(fx: &Fx) {
    let s = fx.open();
    let e = reg(&*s, "sess");
    let p = ProcessRef {
        pid: 4242,
        start: 777,
    };
    let q = ProcessRef {
        pid: 4243,
        start: 1,
    };
    let e2 = s.bind(p, "ghost").unwrap_err();
    assert!(matches!(e2, Error::UnknownEndpoint { .. }), "{e2}");
    s.bind(p, &e).unwrap();
    let (found, ep) = s.bound(&[q, p]).unwrap().unwrap();
    assert_eq!((found, ep.id.as_str()), (p, e.as_str()));
    assert!(s.bound(&[q]).unwrap().is_none());
    let all = s.bindings().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].process, all[0].endpoint_id.as_str()),
        (p, e.as_str())
    );
    let other = reg(&*s, "other");
    s.bind(p, &other).unwrap();
    assert_eq!(
        s.bound(&[p]).unwrap().unwrap().1.id,
        other,
        "rebinding replaces"
    );
    assert_eq!(s.unbind(&[p, q]).unwrap(), 1);
    assert!(s.bindings().unwrap().is_empty());
}

fn gc_removes_old_acked_and_expired(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let acked = s.enqueue(&msg(&a, &b, "done")).unwrap().id;
    let kept = s.enqueue(&msg(&a, &b, "kept")).unwrap().id;
    let mut e = msg(&a, &b, "expired");
    e.expires_at = Some(now_ms() - 1);
    let expired = s.enqueue(&e).unwrap().id;
    s.ack(Some(&b), &[acked.clone()]).unwrap();
    let acked_at = s.receipt(&acked).unwrap().acked_at.unwrap();
    // Not old enough yet.
    let r = s.gc(Duration::from_secs(3600)).unwrap();
    assert_eq!((r.acked_deleted, r.expired_deleted), (0, 1));
    after(acked_at);
    let r = s.gc(Duration::ZERO).unwrap();
    assert_eq!((r.acked_deleted, r.expired_deleted), (1, 0));
    for gone in [&acked, &expired] {
        assert!(matches!(
            s.receipt(gone).unwrap_err(),
            Error::UnknownMessage { .. }
        ));
    }
    assert_eq!(s.receipt(&kept).unwrap().state, State::Queued);
    let r = s.gc(Duration::ZERO).unwrap();
    assert_eq!((r.acked_deleted, r.expired_deleted), (0, 0), "idempotent");
}

fn import_is_idempotent(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let m = Message {
        id: "01a2c3d4-0000-7000-8000-000000000001".into(),
        from: a.clone(),
        from_name: Some("a".into()),
        to: b.clone(),
        thread: Some("copied".into()),
        reply_to: None,
        intent: Intent::Request,
        content_type: TEXT_PLAIN.into(),
        body: b"old mail".to_vec(),
        created_at: 1_700_000_000_000,
        expires_at: None,
        state: State::Delivered,
        deliveries: 3,
    };
    assert!(s.import(&m).unwrap());
    assert!(!s.import(&m).unwrap(), "second copy stores nothing");
    let got = s.fetch(&b, &req(FetchMode::Peek)).unwrap();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(
        (g.id.as_str(), g.state, g.deliveries),
        (m.id.as_str(), State::Queued, 0)
    );
    assert_eq!((g.created_at, g.intent), (m.created_at, Intent::Request));
    assert_eq!(g.thread.as_deref(), Some("copied"));
    let mut bad = m.clone();
    bad.id = "x y".into();
    assert!(matches!(
        s.import(&bad).unwrap_err(),
        Error::InvalidId { .. }
    ));
    bad.id = "01a2c3d4-0000-7000-8000-000000000002".into();
    bad.to = "ghost".into();
    assert!(matches!(
        s.import(&bad).unwrap_err(),
        Error::UnknownEndpoint { .. }
    ));
}

fn hostile_text_round_trips(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a.b-c_d"), reg(&*s, "x"));
    let body = "line\r\nNats-Msg-Id: forged\0\u{1b}[31m ☃ \u{202e}";
    let thread = "% relay.mail.* > thread ☃";
    let mut m = msg(&a, &b, body);
    m.thread = Some(thread.into());
    m.content_type = "text/x; a=\"b\"".into();
    m.reply_to = Some("r.e.p.l.y".into());
    s.enqueue(&m).unwrap();
    let got = s.fetch(&b, &req(FetchMode::Take)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text(), body);
    assert_eq!(got[0].thread.as_deref(), Some(thread));
    assert_eq!(got[0].content_type, "text/x; a=\"b\"");
    assert_eq!(got[0].reply_to.as_deref(), Some("r.e.p.l.y"));
    assert_eq!(got[0].from_name.as_deref(), Some("a.b-c_d"));
    let bin: Vec<u8> = (0..=255).collect();
    let mut m = msg(&a, &b, "");
    m.body = bin.clone();
    s.enqueue(&m).unwrap();
    assert_eq!(s.fetch(&b, &req(FetchMode::Take)).unwrap()[0].body, bin);
}

fn roster_counts_and_hosts(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    s.register(&Registration {
        id: Some("remote-1".into()),
        host: Some("elsewhere".into()),
        ..Default::default()
    })
    .unwrap();
    s.enqueue(&msg(&a, &b, "1")).unwrap();
    s.enqueue(&msg(&a, &b, "2")).unwrap();
    s.fetch(
        &b,
        &Fetch {
            limit: 1,
            ..req(deliver(60_000))
        },
    )
    .unwrap();
    let r = s.roster().unwrap();
    let names: Vec<_> = r
        .iter()
        .map(|e| e.endpoint.display_name().to_string())
        .collect();
    assert_eq!(names, ["a", "b", "remote-1"], "named first, then by id");
    assert_eq!(r[1].pending, 2, "unacked counts, leased or not");
    assert_eq!(r[0].pending, 0);
    assert_eq!(r[2].endpoint.host.as_deref(), Some("elsewhere"));
    assert_eq!(r[0].endpoint.host.as_deref(), Some(local_host().as_str()));
}

fn concurrent_readers_never_share_a_lease(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let n = 40;
    for i in 0..n {
        s.enqueue(&msg(&a, &b, &format!("{i}"))).unwrap();
    }
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let st = fx.open();
            let b = b.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let batch = st
                        .fetch(
                            &b,
                            &Fetch {
                                limit: 3,
                                ..req(deliver(60_000))
                            },
                        )
                        .unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch.into_iter().map(|m| m.id));
                }
            })
        })
        .collect();
    let mut all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (total, all.len()),
        (n, n),
        "every message leased exactly once"
    );
}

/// A reader skips history it knows is acked (the NATS store keeps an acked floor, in
/// process and in the cluster); mail above, between or under a lease must still come back.
fn acked_history_never_hides_pending_mail(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let ids: Vec<String> = (0..40)
        .map(|i| s.enqueue(&msg(&a, &b, &format!("{i}"))).unwrap().id)
        .collect();
    // Lease #20 briefly, ack everything else, in two rounds of looks. The lease must
    // outlast the 42 calls up to the second look on a loaded machine (300 ms did not).
    let leased = s
        .fetch(
            &b,
            &Fetch {
                limit: 1,
                mode: deliver(3_000),
                filter: Filter {
                    ids: Some(vec![ids[20].clone()]),
                    ..Default::default()
                },
            },
        )
        .unwrap();
    assert_eq!(leased.len(), 1);
    let first: Vec<String> = ids[..20].to_vec();
    assert_eq!(s.ack(Some(&b), &first).unwrap().len(), 20);
    assert!(
        s.fetch(&b, &req(FetchMode::Peek)).unwrap().len() == 19,
        "21..39 still queued"
    );
    let rest: Vec<String> = ids[21..].to_vec();
    s.ack(Some(&b), &rest).unwrap();
    assert!(s.fetch(&b, &req(FetchMode::Peek)).unwrap().is_empty());
    // A new handle (another process) after the lease lapses: #20 comes back.
    let late = s.enqueue(&msg(&a, &b, "late")).unwrap().id;
    let other = fx.open();
    let got = other
        .wait(&b, &req(FetchMode::Take), Duration::from_secs(20))
        .unwrap();
    let mut got_ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
    if got_ids.len() < 2 {
        got_ids.extend(
            other
                .wait(&b, &req(FetchMode::Take), Duration::from_secs(20))
                .unwrap()
                .into_iter()
                .map(|m| m.id),
        );
    }
    got_ids.sort();
    let mut want = vec![ids[20].clone(), late];
    want.sort();
    assert_eq!(got_ids, want);
    assert_eq!(other.pending(&b).unwrap().0, 0);
    assert_eq!(fx.open().pending(&b).unwrap().0, 0);
}

// ---- Coordination (DESIGN.md §12): history, search, reservations ----

fn hq() -> History {
    History {
        limit: 100,
        ..Default::default()
    }
}

fn ids_of(m: &[Message]) -> Vec<String> {
    m.iter().map(|m| m.id.clone()).collect()
}

fn search(s: &dyn Store, query: &str) -> Vec<String> {
    let got = s
        .history(&History {
            text: Some(query::TextQuery::parse(query).unwrap()),
            ..hq()
        })
        .unwrap();
    bodies(&got)
}

/// Sends `body` and waits past its creation millisecond, so every message below has its
/// own `created_at` and `since` can tell them apart.
fn send(s: &dyn Store, m: NewMessage) -> Receipt {
    let r = s.enqueue(&m).unwrap();
    after(r.created_at);
    r
}

fn history_filters_select(fx: &Fx) {
    let s = fx.open();
    let (a, b, c) = (reg(&*s, "a"), reg(&*s, "b"), reg(&*s, "c"));
    let mut m = msg(&a, &b, "one");
    m.thread = Some("t1".into());
    let m1 = send(&*s, m).id;
    let mut m = msg(&b, &a, "two");
    m.thread = Some("t1".into());
    m.reply_to = Some(m1.clone());
    let m2 = send(&*s, m).id;
    let r3 = send(&*s, msg(&a, &c, "three"));
    let m3 = r3.id;
    let mut m = msg(&c, &b, "four");
    m.thread = Some("t2".into());
    let m4 = send(&*s, m).id;
    let h = |q: History| ids_of(&s.history(&q).unwrap());
    let v = |xs: &[&String]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        h(hq()),
        v(&[&m4, &m3, &m2, &m1]),
        "everything, newest first"
    );
    let who = |id: &str| Some(id.to_string());
    assert_eq!(
        h(History {
            participant: who(&a),
            ..hq()
        }),
        v(&[&m3, &m2, &m1]),
        "sent or received"
    );
    assert_eq!(
        h(History {
            from: who(&a),
            ..hq()
        }),
        v(&[&m3, &m1])
    );
    assert_eq!(
        h(History {
            to: who(&b),
            ..hq()
        }),
        v(&[&m4, &m1])
    );
    assert_eq!(
        h(History {
            thread: Some("t1".into()),
            ..hq()
        }),
        v(&[&m2, &m1])
    );
    assert!(
        h(History {
            thread: Some("t".into()),
            ..hq()
        })
        .is_empty(),
        "threads match exactly"
    );
    assert_eq!(
        h(History {
            ids: Some(vec![m1.clone(), m4.clone(), "no-such-id".into()]),
            ..hq()
        }),
        v(&[&m4, &m1])
    );
    assert_eq!(
        h(History {
            reply_to: Some(vec![m1.clone()]),
            ..hq()
        }),
        v(&[&m2])
    );
    assert_eq!(
        h(History {
            since_ms: Some(r3.created_at),
            ..hq()
        }),
        v(&[&m4, &m3]),
        "since is inclusive"
    );
    assert_eq!(
        h(History { limit: 2, ..hq() }),
        v(&[&m4, &m3]),
        "the newest N"
    );
    assert_eq!(
        h(History { limit: 0, ..hq() }),
        v(&[&m4]),
        "0 is taken as 1"
    );
    assert_eq!(
        h(History {
            participant: who(&b),
            thread: Some("t1".into()),
            from: who(&b),
            ..hq()
        }),
        v(&[&m2]),
        "every condition holds"
    );
    assert!(
        h(History {
            from: who(&a),
            to: who(&a),
            ..hq()
        })
        .is_empty()
    );
    assert!(
        h(History {
            ids: Some(vec![]),
            ..hq()
        })
        .is_empty(),
        "an empty id list selects nothing"
    );
    // Fields come back whole.
    let got = s
        .history(&History {
            ids: Some(vec![m2.clone()]),
            ..hq()
        })
        .unwrap();
    let g = &got[0];
    assert_eq!((g.from.as_str(), g.to.as_str()), (b.as_str(), a.as_str()));
    assert_eq!(g.from_name.as_deref(), Some("b"));
    assert_eq!(g.thread.as_deref(), Some("t1"));
    assert_eq!(g.reply_to.as_deref(), Some(m1.as_str()));
    assert_eq!(g.text(), "two");
    assert_eq!(g.content_type, TEXT_PLAIN);
}

fn history_shows_states_and_changes_nothing(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let queued = send(&*s, msg(&a, &b, "queued")).id;
    let delivered = send(&*s, msg(&a, &b, "delivered")).id;
    let acked = send(&*s, msg(&a, &b, "acked")).id;
    let mut e = msg(&a, &b, "expired");
    e.expires_at = Some(now_ms() - 1);
    let expired = send(&*s, e).id;
    let got = s
        .fetch(
            &b,
            &Fetch {
                filter: Filter {
                    ids: Some(vec![delivered.clone()]),
                    ..Default::default()
                },
                ..req(deliver(60_000))
            },
        )
        .unwrap();
    assert_eq!(got.len(), 1);
    s.ack(Some(&b), &[acked.clone()]).unwrap();
    let before = s.receipt(&queued).unwrap();
    let got = s.history(&hq()).unwrap();
    let states: Vec<(String, State)> = got.iter().map(|m| (m.id.clone(), m.state)).collect();
    assert_eq!(
        states,
        [
            (expired, State::Queued),
            (acked, State::Acked),
            (delivered, State::Delivered),
            (queued.clone(), State::Queued),
        ],
        "every state, expired mail too until gc"
    );
    // Reading history delivers nothing and acks nothing.
    let after_ = s.receipt(&queued).unwrap();
    assert_eq!(
        (after_.state, after_.deliveries),
        (before.state, before.deliveries)
    );
    assert_eq!(s.pending(&b).unwrap().0, 1, "only `queued` is pending");
    assert_eq!(
        bodies(&s.fetch(&b, &req(FetchMode::Peek)).unwrap()),
        ["queued"]
    );
}

fn search_words_phrases_prefixes(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    for body in [
        "The lease expired before the deploy finished",
        "Deploy to staging went fine",
        "Émile reviewed the migration plan",
        "lease renewal: see the \"lease expiry\" notes",
    ] {
        send(&*s, msg(&a, &b, body));
    }
    let (l1, st, em, l4) = (
        "The lease expired before the deploy finished",
        "Deploy to staging went fine",
        "Émile reviewed the migration plan",
        "lease renewal: see the \"lease expiry\" notes",
    );
    assert_eq!(search(&*s, "lease expired"), [l1], "all words");
    assert_eq!(search(&*s, "LEASE"), [l4, l1], "case folded, newest first");
    assert_eq!(search(&*s, "\"lease expiry\""), [l4], "phrase");
    assert!(search(&*s, "\"expiry lease\"").is_empty(), "phrase order");
    assert_eq!(search(&*s, "expir*"), [l4, l1], "prefix");
    assert!(search(&*s, "expir").is_empty(), "a word is not a prefix");
    assert_eq!(search(&*s, "deploy -staging"), [l1], "exclusion");
    assert_eq!(search(&*s, "deploy NOT staging"), [l1], "NOT");
    assert_eq!(search(&*s, "staging OR migration"), [em, st], "OR");
    assert_eq!(search(&*s, "emile"), [em], "diacritics removed in the body");
    assert_eq!(search(&*s, "ÉMILE"), [em], "and in the query");
    assert_eq!(search(&*s, "the"), [l4, em, l1], "a common word");
    assert!(search(&*s, "zebra").is_empty(), "no match");
    assert!(search(&*s, "leas").is_empty());
    // FTS5 syntax in the query is only words.
    assert!(search(&*s, "body:lease").is_empty());
    assert!(
        search(&*s, "lease NEAR(expired)").is_empty(),
        "NEAR( is the word near"
    );
    assert!(search(&*s, "deploy AND").is_empty(), "AND is a word here");
    assert_eq!(search(&*s, "deploy and"), search(&*s, "deploy AND"));
    // With other conditions and a limit.
    let got = s
        .history(&History {
            text: Some(query::TextQuery::parse("lease").unwrap()),
            limit: 1,
            ..hq()
        })
        .unwrap();
    assert_eq!(bodies(&got), [l4]);
    let got = s
        .history(&History {
            text: Some(query::TextQuery::parse("deploy").unwrap()),
            participant: Some(b.clone()),
            since_ms: Some(now_ms() + 60_000),
            ..hq()
        })
        .unwrap();
    assert!(got.is_empty(), "since in the future");
}

/// issue 12 item 3: both stores tokenize with store::query::tokenize (SQLite indexes its
/// output), so scripts with combining marks, private-use characters, invalid UTF-8 and
/// accented Latin are found alike: each query finds exactly the messages
/// `TextQuery::matches` says, and the ones named here. (FTS5's unicode61 used to split
/// `हिन्दी` and pointed Hebrew at their vowel signs: SQLite found nothing, NATS the message.)
fn search_scripts_with_marks_agree(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let bodies: [&[u8]; 6] = [
        "हिन्दी भाषा test".as_bytes(),
        "שָׁלוֹם עוֹלָם".as_bytes(),
        "mark \u{E000}pua\u{F8FF}zone here".as_bytes(),
        b"bad \xff\xfe bytes caf\xc3\xa9 ok\xc3",
        "Crème brûlée, Ångström, naïve façade".as_bytes(),
        "plain ascii test".as_bytes(),
    ];
    let mut ids = Vec::new();
    for body in bodies {
        let mut m = msg(&a, &b, "");
        m.body = body.to_vec();
        ids.push(send(&*s, m).id);
    }
    for (query, want) in [
        ("हिन्दी", vec![0]),
        ("हिन्दी भाषा", vec![0]),
        ("हिन्*", vec![0]),
        ("test", vec![5, 0]),
        ("שָׁלוֹם", vec![1]),
        ("שלום", vec![1]),
        ("עולם", vec![1]),
        ("pua", vec![2]),
        ("zone", vec![2]),
        ("bytes", vec![3]),
        ("cafe", vec![3]),
        ("café ok", vec![3]),
        ("creme brulee", vec![4]),
        ("angstrom", vec![4]),
        ("NAÏVE façade", vec![4]),
        ("\"brûlée angstrom\"", vec![4]),
    ] {
        let q = query::TextQuery::parse(query).unwrap();
        let got = ids_of(
            &s.history(&History {
                text: Some(q.clone()),
                ..hq()
            })
            .unwrap(),
        );
        let want: Vec<String> = want.iter().map(|&i| ids[i].clone()).collect();
        assert_eq!(got, want, "{query:?}");
        // The reference: the query language's own matcher on the body as text.
        let by_matcher: Vec<String> = (0..bodies.len())
            .rev()
            .filter(|&i| q.matches(&String::from_utf8_lossy(bodies[i])))
            .map(|i| ids[i].clone())
            .collect();
        assert_eq!(
            got, by_matcher,
            "{query:?}: the store and TextQuery::matches differ"
        );
    }
}

fn search_hostile_bodies(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    // Cyrillic "е" (U+0435) in place of "e", fullwidth letters, a bidi override, NUL and
    // escape sequences: only real tokens match, and nothing here breaks the index.
    let hostile = "line\r\nNats-Msg-Id: forged\0\u{1b}[31m n\u{435}\u{435}dle \
                   \u{ff4e}\u{ff45}\u{ff45}\u{ff44}\u{ff4c}\u{ff45} \u{202e}evil\u{202c}\u{7}";
    send(&*s, msg(&a, &b, hostile));
    let plain = "a real needle here";
    send(&*s, msg(&a, &b, plain));
    let bin: Vec<u8> = (0..=255).collect();
    let mut m = msg(&a, &b, "");
    m.body = bin;
    send(&*s, m);
    send(&*s, msg(&a, &b, "\"quoted\" * OR AND NOT ( ) : ^ -"));
    assert_eq!(
        search(&*s, "needle"),
        [plain],
        "look-alikes are other words"
    );
    assert_eq!(search(&*s, "n\u{435}\u{435}dle"), [hostile]);
    assert_eq!(search(&*s, "evil"), [hostile], "format characters separate");
    assert_eq!(search(&*s, "forged"), [hostile]);
    assert_eq!(search(&*s, "nats msg id"), [hostile]);
    assert_eq!(search(&*s, "31m"), [hostile]);
    assert_eq!(search(&*s, "quoted"), ["\"quoted\" * OR AND NOT ( ) : ^ -"]);
}

fn search_finds_acked_and_loses_gcd(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let old = send(&*s, msg(&a, &b, "rollback plan for the schema")).id;
    let kept = send(&*s, msg(&a, &b, "schema review tomorrow")).id;
    let mut e = msg(&a, &b, "schema draft that expires");
    e.expires_at = Some(now_ms() + 200);
    let exp = send(&*s, e).id;
    s.ack(Some(&b), &[old.clone()]).unwrap();
    let got = s
        .history(&History {
            text: Some(query::TextQuery::parse("schema").unwrap()),
            ..hq()
        })
        .unwrap();
    let states: Vec<(String, State)> = got.iter().map(|m| (m.id.clone(), m.state)).collect();
    assert_eq!(
        states,
        [
            (exp.clone(), State::Queued),
            (kept.clone(), State::Queued),
            (old.clone(), State::Acked)
        ],
        "acked mail is still found"
    );
    let acked_at = s.receipt(&old).unwrap().acked_at.unwrap();
    after(acked_at.max(now_ms() + 200));
    let r = s.gc(Duration::ZERO).unwrap();
    assert_eq!((r.acked_deleted, r.expired_deleted), (1, 1));
    assert_eq!(
        search(&*s, "schema"),
        ["schema review tomorrow"],
        "gc'd mail is gone"
    );
    assert!(search(&*s, "rollback").is_empty());
    assert!(search(&*s, "expires").is_empty());
    // Mail sent after gc is indexed as before.
    send(&*s, msg(&a, &b, "rollback again"));
    assert_eq!(search(&*s, "rollback"), ["rollback again"]);
}

const PROJ: &str = "/work/proj";

fn rq(holder: &str, globs: &[&str]) -> ReserveRequest {
    ReserveRequest {
        project: PROJ.into(),
        holder: holder.into(),
        globs: globs.iter().map(|g| g.to_string()).collect(),
        mode: Mode::Exclusive,
        ttl: Duration::from_secs(600),
        reason: None,
        force: false,
    }
}

fn globs_of(r: &[Reservation]) -> Vec<String> {
    r.iter().map(|r| r.glob.clone()).collect()
}

fn reserve_grants_and_conflicts_name_the_holder(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let t0 = now_ms();
    let got = s
        .reserve(&ReserveRequest {
            reason: Some("refactor the store".into()),
            ..rq(&a, &["src/store/**"])
        })
        .unwrap();
    let t1 = now_ms();
    assert!(got.conflicts.is_empty());
    assert_eq!(got.granted.len(), 1);
    let held = got.granted[0].clone();
    assert_eq!(held.project, PROJ);
    assert_eq!(held.holder, a);
    assert_eq!(held.holder_name.as_deref(), Some("a"));
    assert_eq!(held.host, local_host());
    assert_eq!(held.glob, "src/store/**");
    assert_eq!(held.mode, Mode::Exclusive);
    assert_eq!(held.reason.as_deref(), Some("refactor the store"));
    assert!(!held.forced);
    assert!((t0..=t1).contains(&held.created_at), "created now");
    assert!(
        (t0 + 600_000..=t1 + 600_000).contains(&held.expires_at),
        "expires after the ttl"
    );
    assert!(!held.id.is_empty());
    assert_eq!(s.reservations(Some(PROJ)).unwrap(), [held.clone()]);
    assert_eq!(s.reservations(None).unwrap(), [held.clone()]);
    assert!(s.reservations(Some("/work/other")).unwrap().is_empty());
    // Another holder is refused, told who holds it, why, and until when.
    let refused = fx
        .open()
        .reserve(&rq(&b, &["src/store/sqlite.rs"]))
        .unwrap();
    assert!(refused.granted.is_empty(), "nothing granted");
    assert_eq!(refused.conflicts.len(), 1);
    let c = &refused.conflicts[0];
    assert_eq!(c.glob, "src/store/sqlite.rs");
    assert_eq!(c.held, held, "the holder's reservation, whole");
    assert_eq!(s.reservations(Some(PROJ)).unwrap().len(), 1);
    // Paths that do not overlap, and other projects, are free.
    let free = s
        .reserve(&rq(&b, &["tests/**", "src/cli/**", "*.md"]))
        .unwrap();
    assert!(free.conflicts.is_empty());
    assert_eq!(globs_of(&free.granted), ["tests/**", "src/cli/**", "*.md"]);
    let elsewhere = s
        .reserve(&ReserveRequest {
            project: "/work/other".into(),
            ..rq(&b, &["src/store/**"])
        })
        .unwrap();
    assert_eq!(elsewhere.granted.len(), 1, "projects are separate");
    // `*` does not cross `/`: a top-level `*.rs` is not `src/store/x.rs`.
    let top = s.reserve(&rq(&b, &["*.rs"])).unwrap();
    assert!(top.conflicts.is_empty(), "{:?}", top.conflicts);
    // But `**/*.rs` does.
    let deep = s.reserve(&rq(&b, &["**/*.rs"])).unwrap();
    assert!(deep.granted.is_empty());
    assert_eq!(deep.conflicts[0].held.id, held.id);
    let listed = s.reservations(None).unwrap();
    assert_eq!(listed.len(), 6);
    let order: Vec<(String, i64, String)> = listed
        .iter()
        .map(|r| (r.project.clone(), r.created_at, r.id.clone()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "ordered by project, created_at, id");
}

fn reserve_shared_and_exclusive(fx: &Fx) {
    let s = fx.open();
    let (a, b, c) = (reg(&*s, "a"), reg(&*s, "b"), reg(&*s, "c"));
    let shared = |who: &str, g: &str| ReserveRequest {
        mode: Mode::Shared,
        ..rq(who, &[g])
    };
    let ra = s.reserve(&shared(&a, "docs/**")).unwrap();
    assert_eq!(ra.granted[0].mode, Mode::Shared);
    let rb = s.reserve(&shared(&b, "docs/*.md")).unwrap();
    assert!(rb.conflicts.is_empty(), "shared and shared: fine");
    assert_eq!(rb.granted.len(), 1);
    // Exclusive against two shared holders: both named.
    let rc = s.reserve(&rq(&c, &["docs/a.md"])).unwrap();
    assert!(rc.granted.is_empty());
    let mut holders: Vec<String> = rc.conflicts.iter().map(|c| c.held.holder.clone()).collect();
    holders.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(holders, want);
    // A shared holder asking exclusive over the other's shared one: refused.
    let rb2 = s.reserve(&rq(&b, &["docs/b.md"])).unwrap();
    assert!(rb2.granted.is_empty());
    assert_eq!(rb2.conflicts.len(), 1);
    assert_eq!(rb2.conflicts[0].held.holder, a, "never its own");
    // Shared against exclusive: refused too.
    s.reserve(&rq(&c, &["src/**"])).unwrap();
    let ra2 = s.reserve(&shared(&a, "src/main.rs")).unwrap();
    assert!(ra2.granted.is_empty());
    assert_eq!(ra2.conflicts[0].held.holder, c);
    assert_eq!(ra2.conflicts[0].held.mode, Mode::Exclusive);
}

fn reserve_same_holder_updates_in_place(fx: &Fx) {
    let s = fx.open();
    let a = reg(&*s, "a");
    let first = s.reserve(&rq(&a, &["src/**"])).unwrap().granted[0].clone();
    after(first.created_at);
    let again = s
        .reserve(&ReserveRequest {
            mode: Mode::Shared,
            reason: Some("reading only".into()),
            ttl: Duration::from_secs(1200),
            ..rq(&a, &["src/**"])
        })
        .unwrap();
    assert!(again.conflicts.is_empty());
    let g = &again.granted[0];
    assert_eq!((&g.id, g.created_at), (&first.id, first.created_at), "kept");
    assert_eq!(g.mode, Mode::Shared);
    assert_eq!(g.reason.as_deref(), Some("reading only"));
    assert!(g.expires_at > first.expires_at, "expiry moved");
    assert_eq!(
        s.reservations(Some(PROJ)).unwrap(),
        [g.clone()],
        "one, not two"
    );
    // Its own overlapping reservations never conflict with each other.
    let more = s
        .reserve(&rq(&a, &["src/store/**", "src/main.rs"]))
        .unwrap();
    assert!(more.conflicts.is_empty());
    assert_eq!(more.granted.len(), 2);
    assert_eq!(s.reservations(Some(PROJ)).unwrap().len(), 3);
    // A glob asked twice in one request is one reservation.
    let twice = s.reserve(&rq(&a, &["lib/**", "lib/**"])).unwrap();
    assert_eq!(globs_of(&twice.granted), ["lib/**"]);
    assert_eq!(s.reservations(Some(PROJ)).unwrap().len(), 4);
}

fn reserve_is_all_or_none_and_force_records(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let held = s
        .reserve(&ReserveRequest {
            reason: Some("mine".into()),
            ..rq(&a, &["src/store/**"])
        })
        .unwrap()
        .granted[0]
        .clone();
    let refused = s
        .reserve(&rq(&b, &["free/**", "src/store/mod.rs", "also-free.txt"]))
        .unwrap();
    assert!(refused.granted.is_empty(), "all or none");
    assert_eq!(refused.conflicts.len(), 1);
    assert_eq!(refused.conflicts[0].glob, "src/store/mod.rs");
    assert_eq!(
        globs_of(&s.reservations(Some(PROJ)).unwrap()),
        ["src/store/**"]
    );
    let forced = s
        .reserve(&ReserveRequest {
            force: true,
            ..rq(&b, &["free/**", "src/store/mod.rs"])
        })
        .unwrap();
    assert_eq!(globs_of(&forced.granted), ["free/**", "src/store/mod.rs"]);
    assert_eq!(
        forced.granted.iter().map(|r| r.forced).collect::<Vec<_>>(),
        [false, true],
        "forced: recorded over a conflict"
    );
    assert_eq!(forced.conflicts.len(), 1, "and the conflict is reported");
    assert_eq!(forced.conflicts[0].held, held);
    let listed = s.reservations(Some(PROJ)).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .any(|r| r.glob == "src/store/mod.rs" && r.forced)
    );
    // Both exclusive holders are now visible to a third.
    let c = reg(&*s, "c");
    let third = s.reserve(&rq(&c, &["src/store/mod.rs"])).unwrap();
    assert_eq!(third.conflicts.len(), 2);
}

fn reservations_expire_renew_release(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let short = |g: &str, project: &str| ReserveRequest {
        project: project.into(),
        ttl: Duration::from_millis(300),
        ..rq(&a, &[g])
    };
    let p1 = s.reserve(&short("tmp/**", PROJ)).unwrap().granted[0].clone();
    let p2 = s.reserve(&short("x/**", "/work/other")).unwrap().granted[0].clone();
    assert_eq!(s.reservations(None).unwrap().len(), 2);
    after(p1.expires_at.max(p2.expires_at));
    assert!(s.reservations(None).unwrap().is_empty(), "expired: gone");
    assert!(
        s.renew_reservations(
            &ReservationSelect {
                holder: Some(a.clone()),
                ..Default::default()
            },
            Duration::from_secs(60)
        )
        .unwrap()
        .is_empty(),
        "expired ones are not revived"
    );
    let r = s.gc(Duration::from_secs(3600)).unwrap();
    assert_eq!(r.reservations_deleted, 2);
    assert_eq!(
        s.gc(Duration::from_secs(3600))
            .unwrap()
            .reservations_deleted,
        0
    );
    let free = s.reserve(&rq(&b, &["tmp/**"])).unwrap();
    assert!(
        free.conflicts.is_empty(),
        "an expired reservation conflicts with nothing"
    );
    // An expired reservation of the same holder and glob is not updated: a new one.
    let again = s.reserve(&short("y/**", PROJ)).unwrap().granted[0].clone();
    after(again.expires_at);
    let fresh = s.reserve(&rq(&a, &["y/**"])).unwrap().granted[0].clone();
    assert_ne!(fresh.id, again.id);

    // Renew: every live reservation selected, `ttl` from now.
    let s2 = s
        .reserve(&ReserveRequest {
            ttl: Duration::from_secs(5),
            ..rq(&a, &["src/**", "docs/**"])
        })
        .unwrap()
        .granted;
    let t0 = now_ms();
    let renewed = s
        .renew_reservations(
            &ReservationSelect {
                holder: Some(a.clone()),
                project: Some(PROJ.into()),
                globs: Some(vec!["src/**".into()]),
            },
            Duration::from_secs(900),
        )
        .unwrap();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].id, s2[0].id);
    assert!(renewed[0].expires_at >= t0 + 900_000);
    assert_eq!(renewed[0].created_at, s2[0].created_at);
    let listed = s.reservations(Some(PROJ)).unwrap();
    let docs = listed.iter().find(|r| r.glob == "docs/**").unwrap();
    assert_eq!(
        docs.expires_at, s2[1].expires_at,
        "not selected, not renewed"
    );
    let src = listed.iter().find(|r| r.glob == "src/**").unwrap();
    assert_eq!(src.expires_at, renewed[0].expires_at);
    let all = s
        .renew_reservations(
            &ReservationSelect {
                holder: Some(a.clone()),
                ..Default::default()
            },
            Duration::from_secs(60),
        )
        .unwrap();
    let mut got = globs_of(&all);
    got.sort();
    assert_eq!(got, ["docs/**", "src/**", "y/**"], "every live one of a's");

    // Release by glob, then all; only live ones are reported.
    let gone = s
        .release_reservations(&ReservationSelect {
            holder: Some(a.clone()),
            globs: Some(vec!["docs/**".into(), "never-held/**".into()]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(globs_of(&gone), ["docs/**"]);
    s.gc(Duration::from_secs(3600)).unwrap();
    let dying = s.reserve(&short("z/**", PROJ)).unwrap().granted[0].clone();
    after(dying.expires_at);
    let rest = s
        .release_reservations(&ReservationSelect {
            holder: Some(a.clone()),
            project: Some(PROJ.into()),
            globs: None,
        })
        .unwrap();
    let mut got = globs_of(&rest);
    got.sort();
    assert_eq!(
        got,
        ["src/**", "y/**"],
        "the expired z/** is deleted, not reported"
    );
    assert_eq!(
        s.gc(Duration::from_secs(3600))
            .unwrap()
            .reservations_deleted,
        0,
        "released, expired or not"
    );
    assert_eq!(
        globs_of(&s.reservations(None).unwrap()),
        ["tmp/**"],
        "b's is untouched"
    );
    // Anyone's, by project (what gc of a gone session or an operator does).
    let all_b = s
        .release_reservations(&ReservationSelect {
            project: Some(PROJ.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all_b.len(), 1);
    assert!(s.reservations(None).unwrap().is_empty());
}

fn reserve_unknown_holder_and_huge_ttl(fx: &Fx) {
    let s = fx.open();
    let err = s.reserve(&rq("ghost", &["src/**"])).unwrap_err();
    assert!(matches!(err, Error::UnknownEndpoint { .. }), "{err}");
    assert!(s.reservations(None).unwrap().is_empty(), "nothing stored");
    let a = reg(&*s, "a");
    let t0 = now_ms();
    let got = s
        .reserve(&ReserveRequest {
            ttl: Duration::from_secs(10 * 365 * 86_400),
            ..rq(&a, &["src/**"])
        })
        .unwrap();
    let cap = MAX_RESERVATION_TTL.as_millis() as i64;
    let e = got.granted[0].expires_at;
    assert!(
        e >= t0 + cap && e <= now_ms() + cap,
        "the ttl is capped at {MAX_RESERVATION_TTL:?}"
    );
    let renewed = s
        .renew_reservations(&ReservationSelect::default(), Duration::MAX)
        .unwrap();
    assert!(
        renewed[0].expires_at <= now_ms() + cap,
        "renew is capped too"
    );
    // Reasons and globs come back byte for byte.
    let hostile = "fix \u{202e}evil\u{202c} \"quotes\" ☃";
    let got = s
        .reserve(&ReserveRequest {
            reason: Some(hostile.into()),
            ..rq(&a, &["src/ünï cödé/[ab]*.{rs,md}"])
        })
        .unwrap();
    assert_eq!(got.granted[0].reason.as_deref(), Some(hostile));
    assert_eq!(got.granted[0].glob, "src/ünï cödé/[ab]*.{rs,md}");
    let empty = s.reserve(&rq(&a, &[])).unwrap();
    assert!(empty.granted.is_empty() && empty.conflicts.is_empty());
}

/// 16 holders, each on its own handle (as 16 processes would be), race for globs that all
/// cover `src/store/sqlite.rs`: exactly one wins, and every loser names the winner.
fn reserve_races_have_one_winner(fx: &Fx) {
    let setup = fx.open();
    let globs = [
        "src/**",
        "src/store/**",
        "src/store/*.rs",
        "**/*.rs",
        "src/store/sqlite.rs",
        "{src,tests}/**",
    ];
    let holders: Vec<String> = (0..16).map(|i| reg(&*setup, &format!("h{i}"))).collect();
    let stores: Vec<Box<dyn Store>> = (0..16).map(|_| fx.open()).collect();
    let barrier = Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = stores
        .into_iter()
        .zip(holders.clone())
        .enumerate()
        .map(|(i, (st, holder))| {
            let barrier = barrier.clone();
            let glob = globs[i % globs.len()];
            std::thread::spawn(move || {
                barrier.wait();
                (holder.clone(), st.reserve(&rq(&holder, &[glob])).unwrap())
            })
        })
        .collect();
    let results: Vec<(String, Reserved)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, r)| !r.granted.is_empty())
        .map(|(h, _)| h)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one wins: {winners:?}");
    let winner = winners[0];
    for (h, r) in &results {
        if h != winner {
            assert!(r.granted.is_empty());
            assert_eq!(r.conflicts.len(), 1, "{h}: {:?}", r.conflicts);
            assert_eq!(&r.conflicts[0].held.holder, winner);
        }
    }
    let held = setup.reservations(Some(PROJ)).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(&held[0].holder, winner);
}

// ---- the event log (store::events) ----

/// Every event after `after`, read page by page until `want(events)` holds or 10 s pass
/// (the NATS store records events a moment after the change: its event stream sources
/// the others). Waits on `wait_events`, never sleeps.
fn events_until(s: &dyn Store, after: u64, want: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got: Vec<Event> = Vec::new();
    let mut cursor = after;
    loop {
        let page = s
            .events(&EventQuery {
                after: Some(cursor),
                limit: MAX_EVENTS,
                ..Default::default()
            })
            .unwrap();
        cursor = page.next;
        got.extend(page.events);
        if want(&got) {
            return got;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "events never came; got {got:#?}");
        s.wait_events(cursor, left, &Cancel::new()).unwrap();
    }
}

fn head(s: &dyn Store) -> u64 {
    s.events(&EventQuery {
        tail: true,
        limit: 1,
        ..Default::default()
    })
    .unwrap()
    .head
}

fn kinds_of(ev: &[Event], message: &str) -> Vec<&'static str> {
    ev.iter()
        .filter(|e| e.message.as_deref() == Some(message))
        .map(|e| e.kind.as_str())
        .collect()
}

fn has(ev: &[Event], kind: EventKind, endpoint: &str, detail: &str) -> bool {
    ev.iter().any(|e| {
        e.kind == kind
            && e.endpoint.as_deref() == Some(endpoint)
            && e.detail.as_deref() == Some(detail)
    })
}

fn events_record_each_change(fx: &Fx) {
    let s = fx.open();
    let start = head(&*s);
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    // Mail: queued, delivered, acked; a held (live) one dropped to the mailbox; one given
    // back; one injected.
    let mut m1 = msg(&a, &b, "one");
    m1.thread = Some("t1".into());
    let m1 = s.enqueue(&m1).unwrap().id;
    assert_eq!(s.fetch(&b, &req(deliver(60_000))).unwrap().len(), 1);
    s.ack(Some(&b), &[m1.clone()]).unwrap();
    let mut held = msg(&a, &b, "held");
    held.hold = Some(Duration::from_secs(60));
    let held = s.enqueue(&held).unwrap().id;
    assert_eq!(s.settle_hold(&b, &held, false).unwrap(), State::Queued);
    let got = s.fetch(&b, &req(deliver(60_000))).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(s.release(&b, &[held.clone()]).unwrap(), 1);
    let got = s.fetch(&b, &req(deliver(60_000))).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(s.mark_injected(&b, &[held.clone()]).unwrap(), 1);
    // Endpoints: a rename; presence facts; reservations; a reject.
    s.register(&Registration {
        id: Some(a.clone()),
        name: Some("a2".into()),
        ..Default::default()
    })
    .unwrap();
    let p = ProcessRef {
        pid: 4242,
        start: 7,
    };
    s.bind(p, &b).unwrap();
    assert_eq!(s.unbind(&[p]).unwrap(), 1);
    assert!(
        s.reserve(&rq(&a, &["src/**"]))
            .unwrap()
            .conflicts
            .is_empty()
    );
    let sel = ReservationSelect {
        holder: Some(a.clone()),
        ..Default::default()
    };
    assert_eq!(
        s.renew_reservations(&sel, Duration::from_secs(900))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.release_reservations(&sel).unwrap().len(), 1);
    let rejected = s
        .record_event(&NewEvent {
            kind: Some(EventKind::Rejected),
            from: Some(a.clone()),
            to: Some("nobody".into()),
            detail: Some(format!("unknown-target: {}", "x".repeat(5000))),
            ..Default::default()
        })
        .unwrap();
    assert!(rejected > start);

    // Everything asserted below is waited for: NATS copies each source on its own.
    let ev = events_until(&*s, start, |ev| {
        ev.iter().any(|e| e.kind == EventKind::Rejected)
            && ev.iter().any(|e| e.kind == EventKind::Unreserved)
            && kinds_of(ev, &held).contains(&"message.injected")
            && kinds_of(ev, &m1).len() >= 3
    });
    // Cursors only grow, and every one is past the start.
    assert!(ev.windows(2).all(|w| w[0].cursor < w[1].cursor), "{ev:#?}");
    assert!(ev[0].cursor > start);
    assert!(ev.iter().all(|e| e.at > 0));
    assert_eq!(
        kinds_of(&ev, &m1),
        ["message.queued", "message.delivered", "message.acked"]
    );
    let q1 = ev
        .iter()
        .find(|e| e.message.as_deref() == Some(m1.as_str()))
        .unwrap();
    assert_eq!(q1.from.as_deref(), Some(a.as_str()));
    assert_eq!(q1.to.as_deref(), Some(b.as_str()));
    assert_eq!(q1.thread.as_deref(), Some("t1"));
    assert_eq!(q1.detail.as_deref(), Some("mailbox"));
    assert_eq!(
        kinds_of(&ev, &held),
        [
            "message.queued",
            "message.released",
            "message.delivered",
            "message.released",
            "message.delivered",
            "message.injected"
        ]
    );
    let qh = ev
        .iter()
        .find(|e| e.message.as_deref() == Some(held.as_str()))
        .unwrap();
    assert_eq!(
        qh.detail.as_deref(),
        Some("live"),
        "held for a live hand-over"
    );
    assert!(has(&ev, EventKind::Registered, &a, "a"));
    assert!(has(&ev, EventKind::Registered, &b, "b"));
    assert!(has(&ev, EventKind::Renamed, &a, "a2"));
    assert_eq!(
        ev.iter().filter(|e| e.kind == EventKind::Renamed).count(),
        1,
        "one rename, one event: {ev:#?}"
    );
    assert!(has(&ev, EventKind::Presence, &b, "bound"));
    assert!(has(&ev, EventKind::Presence, &b, "unbound"));
    assert!(has(&ev, EventKind::Reserved, &a, "exclusive src/**"));
    assert!(has(&ev, EventKind::Renewed, &a, "exclusive src/**"));
    assert!(has(&ev, EventKind::Unreserved, &a, "exclusive src/**"));
    let r = ev.iter().find(|e| e.kind == EventKind::Rejected).unwrap();
    assert_eq!(r.cursor, rejected);
    assert_eq!(r.to.as_deref(), Some("nobody"));
    let d = r.detail.as_deref().unwrap();
    assert!(
        d.starts_with("unknown-target: x") && d.len() <= MAX_DETAIL,
        "{}",
        d.len()
    );
}

fn events_resume_exactly_once_and_tail(fx: &Fx) {
    let s = fx.open();
    let (a, b, c) = (reg(&*s, "a"), reg(&*s, "b"), reg(&*s, "c"));
    let start = head(&*s);
    // Two writers at once, from two handles.
    let other = fx.open();
    let writer = {
        let (a, b) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            for i in 0..100 {
                other.enqueue(&msg(&a, &b, &format!("w{i}"))).unwrap();
            }
        })
    };
    for i in 0..100 {
        s.enqueue(&msg(&b, &c, &format!("x{i}"))).unwrap();
    }
    writer.join().unwrap();
    let all = events_until(&*s, start, |ev| {
        ev.iter().filter(|e| e.kind == EventKind::Queued).count() == 200
    });
    assert_eq!(all.len(), 200, "{:#?}", &all[..all.len().min(5)]);
    // Read again in pages of 7, resuming from each page's `next`: the same events, in the
    // same order, each once.
    let mut paged: Vec<Event> = Vec::new();
    let mut cursor = start;
    loop {
        let page = s
            .events(&EventQuery {
                after: Some(cursor),
                limit: 7,
                ..Default::default()
            })
            .unwrap();
        assert!(page.events.len() <= 7);
        if page.events.is_empty() {
            assert_eq!(page.next, page.head.max(cursor));
            break;
        }
        assert!(page.next >= page.events.last().unwrap().cursor);
        cursor = page.next;
        paged.extend(page.events);
    }
    assert_eq!(paged, all);
    // Only c's: the 100 sent to c, and `next` is past what was looked at.
    let page = s
        .events(&EventQuery {
            after: Some(start),
            participant: Some(c.clone()),
            limit: MAX_EVENTS,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.events.len(), 100);
    assert!(
        page.events
            .iter()
            .all(|e| e.to.as_deref() == Some(c.as_str()))
    );
    assert_eq!(page.next, page.head);
    // The newest 5, oldest first.
    let tail = s
        .events(&EventQuery {
            after: Some(start),
            tail: true,
            limit: 5,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(tail.events, all[all.len() - 5..]);
    assert_eq!(tail.next, tail.head);
    assert_eq!(tail.head, all.last().unwrap().cursor);
    // Limits are clamped, not errors.
    let one = s
        .events(&EventQuery {
            after: Some(start),
            limit: 0,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(one.events.len(), 1);
    assert!(one.first >= 1 && one.first <= all[0].cursor);
    // A cursor past the head finds nothing.
    let past = s
        .events(&EventQuery {
            after: Some(tail.head + 1000),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert!(past.events.is_empty());
}

fn wait_events_is_woken_and_cancelled(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    // Settle what registering recorded, then nothing new: a short wait times out.
    let h = events_until(&*s, 0, |ev| {
        ev.iter()
            .filter(|e| e.kind == EventKind::Registered)
            .count()
            >= 2
    })
    .last()
    .unwrap()
    .cursor;
    let t0 = Instant::now();
    assert!(
        !s.wait_events(h, Duration::from_millis(200), &Cancel::new())
            .unwrap()
    );
    assert!(t0.elapsed() >= Duration::from_millis(150));
    // Woken by a send from another process.
    let relay = fx.relay(&["send", "b", "--as", "a", "from afar"]);
    let waiter = {
        let s2 = fx.open();
        std::thread::spawn(move || {
            let t = Instant::now();
            (
                s2.wait_events(h, Duration::from_secs(20), &Cancel::new())
                    .unwrap(),
                t.elapsed(),
            )
        })
    };
    let mut relay = relay;
    assert!(relay.status().unwrap().success());
    let (woke, took) = waiter.join().unwrap();
    assert!(woke, "not woken");
    assert!(took < Duration::from_secs(15), "woken only after {took:?}");
    let _ = (a, b);
    // Cancelled: returns false at once.
    let cancel = Cancel::new();
    let h2 = head(&*s);
    let w = {
        let (s3, cancel) = (fx.open(), cancel.clone());
        std::thread::spawn(move || {
            s3.wait_events(h2 + 100, Duration::from_secs(20), &cancel)
                .unwrap()
        })
    };
    cancel.cancel();
    assert!(!w.join().unwrap());
}

fn gc_drops_old_events_and_cursors_go_on(fx: &Fx) {
    let s = fx.open();
    let (a, b) = (reg(&*s, "a"), reg(&*s, "b"));
    let m = s.enqueue(&msg(&a, &b, "old")).unwrap().id;
    let before = events_until(&*s, 0, |ev| !kinds_of(ev, &m).is_empty());
    let old_head = before.last().unwrap().cursor;
    // A long cutoff keeps them.
    let r = s.gc(Duration::from_secs(86_400)).unwrap();
    assert_eq!(r.events_deleted, 0);
    after(now_ms() + 2);
    let r = s.gc(Duration::ZERO).unwrap();
    assert!(r.events_deleted >= before.len() as u64, "{r:?}");
    let page = s
        .events(&EventQuery {
            after: None,
            limit: MAX_EVENTS,
            ..Default::default()
        })
        .unwrap();
    assert!(page.events.iter().all(|e| e.cursor > old_head), "{page:#?}");
    // A new event gets a cursor past every old one, even with the log emptied.
    let m2 = s.enqueue(&msg(&a, &b, "new")).unwrap().id;
    let after_gc = events_until(&*s, old_head, |ev| !kinds_of(ev, &m2).is_empty());
    let q = after_gc
        .iter()
        .find(|e| e.message.as_deref() == Some(m2.as_str()))
        .unwrap();
    assert!(q.cursor > old_head);
}
