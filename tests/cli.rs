//! The CLI end to end: real binary, real SQLite file in a temp RELAY_HOME.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Home, bytes, message_rows, wait_with_deadline};
use serde_json::Value;

fn id_of(doc: &Value) -> String {
    doc["id"].as_str().expect("id").to_string()
}

#[test]
fn receipts_move_queued_delivered_acked_and_never_claim_more() {
    let h = Home::new();
    h.register("alice");
    h.register("bob");
    let sent = h.json(&["send", "bob", "--as", "alice", "hello", "bob"]);
    assert_eq!(sent["route"], "mailbox");
    assert_eq!(sent["state"], "queued");
    assert_eq!(sent["to_name"], "bob");
    let id = id_of(&sent);
    assert_eq!(h.json(&["status", &id])["state"], "queued");

    // Peeking changes nothing.
    let peek = h.json(&["inbox", "--as", "bob", "--peek"]);
    assert_eq!(peek["messages"][0]["body"], "hello bob");
    assert_eq!(h.json(&["status", &id])["state"], "queued");

    // Fetched without ack: delivered, not acked.
    let got = h.json(&["inbox", "--as", "bob", "--no-ack"]);
    assert_eq!(got["acked"], false);
    assert_eq!(got["messages"][0]["from_name"], "alice");
    let st = h.json(&["status", &id]);
    assert_eq!(st["state"], "delivered");
    assert!(st["acked_at"].is_null());

    let acked = h.json(&["ack", "--as", "bob", &id[..8]]);
    assert_eq!(acked["results"][0]["outcome"], "acked");
    assert_eq!(acked["results"][0]["id"], id.as_str());
    let st = h.json(&["status", &id[..10]]);
    assert_eq!(st["state"], "acked");
    assert!(st["acked_at"].as_i64().unwrap() >= st["delivered_at"].as_i64().unwrap());

    // Acking again is harmless and says so.
    let again = h.json(&["ack", "--as", "bob", &id]);
    assert_eq!(again["results"][0]["outcome"], "already-acked");
}

#[test]
fn inbox_acks_after_printing_by_default() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    let id = id_of(&h.json(&["send", "b", "--as", "a", "one"]));
    let got = h.json(&["inbox", "--as", "b"]);
    assert_eq!(got["acked"], true);
    assert_eq!(got["messages"].as_array().unwrap().len(), 1);
    assert_eq!(h.json(&["status", &id])["state"], "acked");
    assert_eq!(
        h.json(&["inbox", "--as", "b"])["messages"],
        serde_json::json!([])
    );
}

#[test]
fn identity_comes_from_flag_then_env_else_a_usage_error() {
    let h = Home::new();
    h.register("alice");
    let r = h.run(&["whoami"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--as NAME or set RELAY_AS"),
        "{}",
        r.stderr
    );

    let mut c = h.cmd(&["whoami", "--json"]);
    c.env("RELAY_AS", "alice");
    let r = common::run(c, None, common::DEADLINE);
    assert_eq!(r.code, 0);
    assert_eq!(r.doc()["source"], "env");
    assert_eq!(r.doc()["endpoint"]["name"], "alice");

    let d = h.json(&["whoami", "--as", "alice"]);
    assert_eq!(d["source"], "flag");

    let r = h.run(&["send", "alice", "--as", "ghost", "hi"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--as"), "{}", r.stderr);
}

#[test]
fn bad_names_are_refused_with_the_rule_and_register_nothing() {
    let h = Home::new();
    let long = "n".repeat(65);
    for bad in [
        "a/b",
        "..",
        ".",
        long.as_str(),
        "0190f5a2-7b3c-7def-8abc-0123456789ab",
        "-dash",
        "sp ace",
    ] {
        let r = h.run(&["register", "--json", "--", bad]);
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("names are 1-64 characters"),
            "{bad:?}: {}",
            r.stderr
        );
        assert_eq!(r.doc()["error"]["kind"], "invalid-name");
    }
    let roster = h.json(&["roster"]);
    assert_eq!(roster["endpoints"], serde_json::json!([]));
    // Ids become file names: path tricks are refused too.
    let r = h.run(&["register", "x", "--id", "../../etc"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn a_name_moves_to_its_new_holder_and_the_old_one_is_reported() {
    let h = Home::new();
    h.json(&["register", "worker", "--id", "endpoint-one"]);
    let d = h.json(&["register", "worker", "--id", "endpoint-two"]);
    assert_eq!(d["name_taken_from"], "endpoint-one");
    assert_eq!(d["created"], true);
    let roster = h.json(&["roster"]);
    let eps = roster["endpoints"].as_array().unwrap();
    let one = eps.iter().find(|e| e["id"] == "endpoint-one").unwrap();
    assert!(one["name"].is_null());
    // Re-registering keeps fields it was not given.
    h.json(&[
        "register",
        "worker",
        "--id",
        "endpoint-two",
        "--kind",
        "human",
        "--cwd",
        "/tmp",
    ]);
    let d = h.json(&["register", "worker", "--meta", "team=infra"]);
    let e = &d["endpoint"];
    assert_eq!(e["id"], "endpoint-two");
    assert_eq!(e["kind"], "human");
    assert_eq!(e["cwd"], "/tmp");
    assert_eq!(e["meta"]["team"], "infra");
}

#[test]
fn unknown_and_ambiguous_recipients_are_distinct_rejects_that_store_nothing() {
    let h = Home::new();
    h.register("me");
    h.json(&["register", "w1", "--id", "abcd1111"]);
    h.json(&["register", "w2", "--id", "abcd2222"]);

    let r = h.run(&["send", "nobody", "--as", "me", "--json", "hi"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.doc()["error"]["kind"], "unknown-target");
    assert!(r.stderr.contains("relay roster"), "{}", r.stderr);

    let r = h.run(&["send", "abcd", "--as", "me", "--json", "hi"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.doc()["error"]["kind"], "ambiguous-target");
    assert!(
        r.stderr.contains("abcd1111 (w1)") && r.stderr.contains("abcd2222 (w2)"),
        "{}",
        r.stderr
    );

    // Prefixes shorter than 4 characters never match.
    let r = h.run(&["send", "abc", "--as", "me", "hi"]);
    assert_eq!(r.code, 3);
    assert_eq!(message_rows(&h), 0);

    // A unique prefix works.
    let d = h.json(&["send", "abcd1", "--as", "me", "hi"]);
    assert_eq!(d["to"], "abcd1111");
    assert_eq!(message_rows(&h), 1);
}

#[test]
fn oversized_bodies_are_refused_before_any_write() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    let big = vec![b'x'; 256 * 1024 + 1];
    let r = h.run_stdin(&["send", "b", "--as", "a", "--stdin", "--json"], &big);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.doc()["error"]["kind"], "too-large");
    assert!(
        r.stderr.contains("262145 bytes") && r.stderr.contains("262144"),
        "{}",
        r.stderr
    );
    // Exactly at the cap is fine.
    let ok = h.run_stdin(&["send", "b", "--as", "a", "--stdin"], &big[1..]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(message_rows(&h), 1);

    // The cap is configurable.
    let mut c = h.cmd(&["send", "b", "--as", "a", "--stdin"]);
    c.env("RELAY_MAX_BODY", "1KiB");
    let r = common::run(c, Some(&[b'y'; 1025]), common::DEADLINE);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let mut c = h.cmd(&["roster"]);
    c.env("RELAY_MAX_BODY", "lots");
    let r = common::run(c, None, common::DEADLINE);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("256KiB"), "{}", r.stderr);
    assert_eq!(message_rows(&h), 1);
}

#[test]
fn non_utf8_stdin_is_a_usage_error_and_stores_nothing() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    let r = h.run_stdin(
        &["send", "b", "--as", "a", "--stdin"],
        b"ok so far \xff\xfe",
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("not valid UTF-8") && r.stderr.contains("offset 10"),
        "{}",
        r.stderr
    );
    assert_eq!(message_rows(&h), 0);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let h = Home::new();
    std::fs::create_dir_all(h.path()).unwrap();
    let junk = b"this is my thesis, not a database\n".repeat(100);
    std::fs::write(h.db(), &junk).unwrap();
    let r = h.run(&["roster", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.doc()["error"]["kind"], "not-a-database");
    assert!(r.stderr.contains("not a relay database"), "{}", r.stderr);
    assert_eq!(bytes(&h.db()), junk);
    assert!(!h.path().join("relay.db-wal").exists());
}

#[test]
fn a_database_from_a_newer_relay_is_refused_naming_both_versions() {
    let h = Home::new();
    h.register("a");
    {
        let conn = rusqlite::Connection::open(h.db()).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let before = bytes(&h.db());
    let r = h.run(&["roster"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("schema version 99"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("up to version {}", relay::store::SCHEMA_VERSION)),
        "{}",
        r.stderr
    );
    assert_eq!(bytes(&h.db()), before);
}

#[test]
fn data_lives_in_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new();
    h.register("a");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&h.path()), 0o700);
    assert_eq!(mode(&h.db()), 0o600);
}

#[test]
fn an_expired_lease_hands_the_message_out_again() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    let id = id_of(&h.json(&["send", "b", "--as", "a", "retry me"]));
    let first = h.json(&["inbox", "--as", "b", "--no-ack", "--lease", "5s"]);
    assert_eq!(first["messages"][0]["deliveries"], 1);
    // While leased, nobody else gets it.
    assert_eq!(
        h.json(&["inbox", "--as", "b", "--peek"])["messages"],
        serde_json::json!([])
    );
    // wait wakes when the lease ends, with no doorbell ring.
    let again = h.json(&["wait", "--as", "b", "--timeout", "20s"]);
    assert_eq!(again["messages"][0]["id"], id.as_str());
    assert_eq!(again["messages"][0]["deliveries"], 2);
    assert_eq!(h.json(&["status", &id])["state"], "acked");
}

#[test]
fn wait_wakes_when_mail_arrives_and_filters_by_sender_and_thread() {
    let h = Home::new();
    h.register("a");
    h.register("c");
    h.register("b");
    let mut waiter = h.cmd(&[
        "wait",
        "--as",
        "b",
        "--from",
        "a",
        "--thread",
        "t1",
        "--timeout",
        "60s",
        "--json",
    ]);
    waiter.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = waiter.spawn().unwrap();
    // Mail that does not match the filter must not end the wait.
    h.json(&["send", "b", "--as", "c", "--thread", "t1", "from c"]);
    h.json(&["send", "b", "--as", "a", "--thread", "t2", "wrong thread"]);
    let id = id_of(&h.json(&["send", "b", "--as", "a", "--thread", "t1", "this one"]));
    let out = wait_with_deadline(child, Duration::from_secs(30), "relay wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let msgs = doc["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{doc}");
    assert_eq!(msgs[0]["id"], id.as_str());
    assert_eq!(common::pending(&h, "b"), 2);
}

#[test]
fn wait_times_out_with_exit_4_and_caps_the_timeout() {
    let h = Home::new();
    h.register("b");
    let r = h.run(&["wait", "--as", "b", "--timeout", "200ms", "--json"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.doc()["timed_out"], true);
    let r = h.run(&["wait", "--as", "b", "--timeout", "301s"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("300s"), "{}", r.stderr);
}

#[test]
fn replies_keep_the_thread_and_reference_the_request() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    let req = h.json(&["send", "b", "--as", "a", "--intent", "request", "ping?"]);
    let rid = id_of(&req);
    let rep = h.json(&["send", "a", "--as", "b", "--reply-to", &rid[..12], "pong"]);
    assert_eq!(rep["thread"], rid.as_str());
    let got = h.json(&["inbox", "--as", "a"]);
    assert_eq!(got["messages"][0]["reply_to"], rid.as_str());
    let r = h.run(&["send", "a", "--as", "b", "--reply-to", "ffffffff", "x"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
}

#[test]
fn ack_refuses_other_peoples_mail_and_unknown_ids() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    h.register("c");
    let id = id_of(&h.json(&["send", "b", "--as", "a", "for b"]));
    let r = h.run(&["ack", "--as", "c", &id, "0000nope", "--json"]);
    assert_eq!(r.code, 3);
    let d = r.doc();
    assert_eq!(d["results"][0]["outcome"], "not-yours");
    assert_eq!(d["results"][1]["outcome"], "unknown");
    assert_eq!(h.json(&["status", &id])["state"], "queued");
}

#[test]
fn gc_deletes_old_acked_and_expired_mail_only() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    h.json(&["send", "b", "--as", "a", "read me"]);
    h.json(&["inbox", "--as", "b"]);
    h.json(&["send", "b", "--as", "a", "--ttl", "1ms", "gone soon"]);
    let keep = id_of(&h.json(&["send", "b", "--as", "a", "unread"]));
    let d = h.json(&["gc"]);
    assert_eq!(d["acked_deleted"], 0, "14-day default keeps fresh acks");
    assert_eq!(d["expired_deleted"], 1);
    let d = h.json(&["gc", "--days", "0"]);
    assert_eq!(d["acked_deleted"], 1);
    assert_eq!(h.json(&["status", &keep])["state"], "queued");
    assert_eq!(message_rows(&h), 1);
}

#[test]
fn not_deliverable_when_the_target_reads_no_mailbox() {
    let h = Home::new();
    h.register("a");
    h.json(&["register", "sensor", "--no-mailbox"]);
    let r = h.run(&["send", "sensor", "--as", "a", "--json", "x"]);
    assert_eq!(r.code, 3);
    assert_eq!(r.doc()["error"]["kind"], "not-deliverable");
    assert_eq!(message_rows(&h), 0);
}

#[test]
fn help_teaches_and_usage_errors_exit_2() {
    let h = Home::new();
    let r = h.run(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Quick start"), "{}", r.stdout);
    let r = h.run(&["send", "--help"]);
    assert!(r.stdout.contains("Examples"), "{}", r.stdout);
    let r = h.run(&["send"]);
    assert_eq!(r.code, 2);
    let r = h.run(&["frobnicate"]);
    assert_eq!(r.code, 2);
    let r = h.run(&["roster", "--durability", "fast"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn send_lines_sends_one_message_per_line() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    let r = h.run_stdin(
        &["send", "b", "--as", "a", "--stdin", "--lines", "--json"],
        b"one\ntwo\n\nthree\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.doc()["count"], 3);
    let got = h.json(&["inbox", "--as", "b"]);
    let bodies: Vec<_> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies, ["one", "two", "three"]);

    // All or nothing: one line over the cap stores none of them.
    let mut c = h.cmd(&["send", "b", "--as", "a", "--stdin", "--lines"]);
    c.env("RELAY_MAX_BODY", "10");
    let r = common::run(
        c,
        Some(b"short\nthis line is too long\nshort\n"),
        common::DEADLINE,
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(message_rows(&h), 3);
}

#[test]
fn json_mode_prints_one_document_even_for_usage_errors() {
    let h = Home::new();
    let r = h.run(&["send", "--json"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.doc()["error"]["kind"], "usage");
    let r = h.run(&["wait", "--as", "nobody", "--json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.doc()["ok"], false);
    // ok mirrors the exit status.
    h.register("b");
    let r = h.run(&["wait", "--as", "b", "--timeout", "100ms", "--json"]);
    assert_eq!(
        (r.code, r.doc()["ok"].clone()),
        (4, serde_json::json!(false))
    );
    let r = h.run(&["ack", "--as", "b", "0000nope", "--json"]);
    assert_eq!(
        (r.code, r.doc()["ok"].clone()),
        (3, serde_json::json!(false))
    );
}

#[test]
fn acking_needs_an_identity() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    let id = id_of(&h.json(&["send", "b", "--as", "a", "x"]));
    let r = h.run(&["ack", &id]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(h.json(&["status", &id])["state"], "queued");
}

#[test]
fn empty_optional_arguments_mean_absent_and_bounds_are_enforced() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    h.json(&[
        "send",
        "b",
        "--as",
        "a",
        "--thread",
        "",
        "--reply-to",
        "",
        "x",
    ]);
    let got = h.json(&["inbox", "--as", "b", "--thread", "", "--from", ""]);
    assert_eq!(got["messages"].as_array().unwrap().len(), 1);
    assert!(got["messages"][0]["thread"].is_null());
    for bad in [["--ttl", "0s"], ["--ttl", "400days"]] {
        let r = h.run(&["send", "b", "--as", "a", bad[0], bad[1], "x"]);
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
    }
    let r = h.run(&["inbox", "--as", "b", "--no-ack", "--lease", "2d"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn a_request_with_wait_returns_the_correlated_reply() {
    let h = Home::new();
    h.register("a");
    h.register("b");
    let mut asker = h.cmd(&[
        "send", "b", "--as", "a", "--intent", "request", "--wait", "60s", "--json", "ping?",
    ]);
    asker.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = asker.spawn().unwrap();
    // b waits for the request (the event), then answers it; an unrelated message to a
    // must not count as the reply.
    let req = h.json(&["wait", "--as", "b", "--timeout", "60s"]);
    let id = req["messages"][0]["id"].as_str().unwrap().to_string();
    h.json(&["send", "a", "--as", "b", "not the reply"]);
    h.json(&["send", "a", "--as", "b", "--reply-to", &id, "pong"]);
    let out = wait_with_deadline(child, Duration::from_secs(60), "send --wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["reply"]["body"], "pong");
    assert_eq!(doc["reply"]["reply_to"], id.as_str());
    assert_eq!(doc["timed_out"], false);

    let r = h.run(&[
        "send", "b", "--as", "a", "--intent", "request", "--wait", "200ms", "--json", "anyone?",
    ]);
    assert_eq!(
        (r.code, r.doc()["timed_out"].clone()),
        (4, serde_json::json!(true))
    );
    let r = h.run(&[
        "send",
        "b",
        "--as",
        "a",
        "--wait",
        "1s",
        "notify cannot wait",
    ]);
    assert_eq!(r.code, 2);
}

/// A session registered from another machine (a shared NATS store) is never resumed here:
/// its pid and working directory describe that machine, not this one.
#[test]
fn a_session_on_another_host_is_not_woken_here() {
    let h = Home::new();
    let id = "0199aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee";
    let cwd = h.path().parent().unwrap().to_string_lossy().into_owned();
    let mut reg = h.cmd(&[
        "register",
        "far",
        "--kind",
        "claude-code",
        "--id",
        id,
        "--cwd",
        &cwd,
    ]);
    reg.env("RELAY_HOST", "far-away-box");
    let out = common::run(reg, None, common::DEADLINE);
    assert_eq!(out.code, 0, "{}", out.stderr);
    h.run(&["register", "me"]);
    let roster = h.json(&["roster"]);
    let far = roster["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "far")
        .unwrap()
        .clone();
    assert_eq!(far["host"], "far-away-box");
    let send = h.run(&["send", "far", "--as", "me", "--wake", "hello", "--json"]);
    assert_eq!(send.code, 3, "{}{}", send.stdout, send.stderr);
    assert!(send.stdout.contains("far-away-box"), "{}", send.stdout);
    let wake = h.run(&["wake", "far", "--dry-run", "--json"]);
    assert_ne!(wake.code, 0, "{}", wake.stdout);
    assert!(
        wake.stdout.contains("not on this machine"),
        "{}",
        wake.stdout
    );
    // Without --wake the mail waits in its mailbox, as for any dormant session.
    let plain = h.json(&["send", "far", "--as", "me", "hello"]);
    assert_eq!(plain["route"], "mailbox");
}
