//! `relay mcp` driven as a real client would: rmcp's client over a child process.

mod common;

use std::time::Duration;

use common::Home;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const DEADLINE: Duration = Duration::from_secs(90);

type Client = RunningService<RoleClient, ()>;

async fn connect(h: &Home, args: &[&str]) -> Client {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.arg("mcp")
        .args(args)
        .env("RELAY_HOME", h.path())
        .env_remove("RELAY_AS")
        .env("RELAY_LOG", "warn");
    ().serve(TokioChildProcess::new(cmd).expect("spawn relay mcp"))
        .await
        .expect("initialize")
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let mut p = CallToolRequestParams::new(tool.to_string());
    if let Value::Object(m) = args {
        p = p.with_arguments(m);
    }
    c.call_tool(p).await.expect("tools/call is answered")
}

fn text(r: &CallToolResult) -> Value {
    let t = &r.content[0].as_text().expect("text content").text;
    serde_json::from_str(t).expect("tool result text is JSON")
}

/// Calls a tool that must succeed and returns its JSON.
async fn ok(c: &Client, tool: &str, args: Value) -> Value {
    let r = call(c, tool, args).await;
    assert_ne!(r.is_error, Some(true), "{tool} failed: {:?}", r.content);
    text(&r)
}

/// Calls a tool that must fail and returns its error JSON.
async fn err(c: &Client, tool: &str, args: Value) -> Value {
    let r = call(c, tool, args).await;
    assert_eq!(
        r.is_error,
        Some(true),
        "{tool} should fail: {:?}",
        r.content
    );
    text(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_send_wait_ack_and_the_sender_sees_acked() {
    tokio::time::timeout(DEADLINE, async {
        let h = Home::new();
        let a = connect(&h, &[]).await;
        let b = connect(&h, &[]).await;

        let tools = a.list_all_tools().await.unwrap();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ack",
                "events",
                "inbox",
                "register",
                "release",
                "renew",
                "reservations",
                "reserve",
                "roster",
                "search",
                "send",
                "status",
                "thread",
                "wait",
                "whoami"
            ]
        );
        for t in &tools {
            assert!(
                t.description.as_deref().is_some_and(|d| d.len() > 40),
                "{} needs a description",
                t.name
            );
        }

        // No identity yet: a tool error that says what to do.
        let e = err(&a, "whoami", json!({})).await;
        assert_eq!(e["error"], "usage");
        assert!(e["message"].as_str().unwrap().contains("register"));

        let reg = ok(
            &a,
            "register",
            json!({"name": "alice", "kind": "claude-code"}),
        )
        .await;
        assert_eq!(reg["endpoint"]["name"], "alice");
        ok(&b, "register", json!({"name": "bob"})).await;
        let me = ok(&a, "whoami", json!({})).await;
        assert_eq!(me["endpoint"]["kind"], "claude-code");
        assert_eq!(me["source"], "register");

        let sent = ok(
            &a,
            "send",
            json!({"to": "bob", "body": "please review", "intent": "request"}),
        )
        .await;
        assert_eq!(sent["route"], "mailbox");
        assert_eq!(sent["state"], "queued");
        let id = sent["id"].as_str().unwrap().to_string();

        let got = ok(
            &b,
            "wait",
            json!({"timeout_s": 30, "from": "alice", "ack": false}),
        )
        .await;
        assert_eq!(got["timed_out"], false);
        assert_eq!(got["messages"][0]["id"], id.as_str());
        assert_eq!(got["messages"][0]["body"], "please review");
        assert_eq!(got["messages"][0]["intent"], "request");
        assert_eq!(
            ok(&a, "status", json!({"id": id})).await["state"],
            "delivered"
        );

        let acked = ok(&b, "ack", json!({"ids": [id]})).await;
        assert_eq!(acked["results"][0]["outcome"], "acked");
        let st = ok(&a, "status", json!({"id": id})).await;
        assert_eq!(st["state"], "acked");
        assert!(st["acked_at"].is_i64());

        // The reply path, inbox with default ack, and roster.
        ok(
            &b,
            "send",
            json!({"to": "alice", "body": "done", "reply_to": id}),
        )
        .await;
        let inbox = ok(&a, "inbox", json!({})).await;
        assert_eq!(inbox["messages"][0]["thread"], id.as_str());
        assert_eq!(inbox["acked"], true);
        let roster = ok(&a, "roster", json!({})).await;
        assert_eq!(roster["endpoints"].as_array().unwrap().len(), 2);

        // Failures are tool errors carrying the reason; nothing is stored.
        let e = err(&a, "send", json!({"to": "nobody", "body": "x"})).await;
        assert_eq!(e["error"], "unknown-target");
        let e = err(
            &a,
            "send",
            json!({"to": "bob", "body": "x".repeat(256 * 1024 + 1)}),
        )
        .await;
        assert_eq!(e["error"], "too-large");
        let e = err(&a, "register", json!({"name": "evil\u{0}name"})).await;
        assert_eq!(e["error"], "invalid-name");
        let e = err(&a, "wait", json!({"timeout_s": 301})).await;
        assert!(e["message"].as_str().unwrap().contains("1 to 300"));
        let e = err(
            &a,
            "send",
            json!({"to": "bob", "body": "x", "intent": "shout"}),
        )
        .await;
        assert!(e["message"].as_str().unwrap().contains("notify"));
        // Wrong types and missing fields are tool errors too, with the reason.
        let e = err(&a, "send", json!({"to": 5, "body": "x"})).await;
        assert_eq!(e["error"], "usage");
        assert!(
            e["message"].as_str().unwrap().contains("invalid arguments"),
            "{e}"
        );
        let e = err(&a, "ack", json!({})).await;
        assert!(e["message"].as_str().unwrap().contains("ids"), "{e}");
        let timed = ok(&a, "wait", json!({"timeout_s": 1})).await;
        assert_eq!(timed["timed_out"], true);
        assert_eq!(common::message_rows(&h), 2);

        a.cancel().await.unwrap();
        b.cancel().await.unwrap();
    })
    .await
    .expect("MCP round trip ran past its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_stdin_is_ignored_and_stdout_carries_only_protocol_frames() {
    tokio::time::timeout(DEADLINE, async {
        let h = Home::new();
        h.register("x");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["mcp", "--as", "x"])
            .env("RELAY_HOME", h.path())
            .env("RELAY_LOG", "debug")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let garbage: &[&[u8]] = &[
            b"hello\n",
            b"{\n",
            b"\x00\x01\x02\xff\xfe\n",
            b"[1,2,3]\n",
            b"{\"jsonrpc\":\"2.0\"}\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n",
            b"\n",
        ];
        for g in garbage {
            stdin.write_all(g).await.unwrap();
        }
        let init = json!({"jsonrpc":"2.0","id":"init","method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":"garbage-test","version":"0"}}});
        stdin.write_all(format!("{init}\n").as_bytes()).await.unwrap();
        stdin.write_all(b"more garbage after init\n").await.unwrap();
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .await
            .unwrap();
        stdin.write_all(b"}}}{{{\n").await.unwrap();
        let list = json!({"jsonrpc":"2.0","id":"list","method":"tools/list"});
        stdin.write_all(format!("{list}\n").as_bytes()).await.unwrap();
        let call = json!({"jsonrpc":"2.0","id":"who","method":"tools/call","params":{"name":"whoami","arguments":{}}});
        stdin.write_all(format!("{call}\n").as_bytes()).await.unwrap();

        let mut seen_init = false;
        let mut seen_list = false;
        let mut seen_who = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("non-protocol bytes on stdout ({e}): {line:?}"));
            assert_eq!(v["jsonrpc"], "2.0", "{line}");
            match v["id"].as_str() {
                Some("init") => seen_init = v["result"]["serverInfo"]["name"] == "relay",
                Some("list") => seen_list = v["result"]["tools"].as_array().is_some_and(|t| t.len() == 15),
                Some("who") => {
                    let t = v["result"]["content"][0]["text"].as_str().unwrap();
                    let who: Value = serde_json::from_str(t).unwrap();
                    assert_eq!(who["endpoint"]["name"], "x");
                    seen_who = true;
                }
                _ => {}
            }
            // Requests are served concurrently: the call may be answered before the list.
            if seen_who && seen_list {
                break;
            }
        }
        assert!(seen_init && seen_list, "initialize and tools/list were answered");
        drop(stdin);
        // Closing stdin ends the session cleanly.
        let status = child.wait().await.unwrap();
        assert!(status.success(), "{status:?}");
        let rest: Vec<String> = {
            let mut v = Vec::new();
            while let Some(l) = lines.next_line().await.unwrap() {
                v.push(l);
            }
            v
        };
        for l in rest {
            serde_json::from_str::<Value>(&l).expect("only JSON-RPC frames after the call");
        }
    })
    .await
    .expect("garbage test ran past its deadline");
}

/// Every tool says truthfully what it does to the world. Codex 0.171 runs a tool without
/// asking (e.g. under `codex exec`) only if readOnlyHint is true, or destructiveHint and
/// openWorldHint are both false; a missing hint counts as true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_is_annotated_so_codex_runs_it_without_approval() {
    tokio::time::timeout(DEADLINE, async {
        let h = Home::new();
        let c = connect(&h, &[]).await;
        let tools = c.list_all_tools().await.unwrap();
        // (read only, idempotent) per tool; none is destructive or open-world.
        let want: &[(&str, bool, bool)] = &[
            ("whoami", true, true),
            ("roster", true, true),
            ("status", true, true),
            ("register", false, true),
            ("ack", false, true),
            ("send", false, false),
            ("inbox", false, false),
            ("wait", false, false),
            ("search", true, true),
            ("events", true, true),
            ("thread", true, true),
            ("reservations", true, true),
            ("reserve", false, true),
            ("release", false, true),
            ("renew", false, true),
        ];
        assert_eq!(tools.len(), want.len());
        for (name, read_only, idempotent) in want {
            let t = tools
                .iter()
                .find(|t| t.name == *name)
                .unwrap_or_else(|| panic!("no tool {name}"));
            let a = t
                .annotations
                .as_ref()
                .unwrap_or_else(|| panic!("{name} has no annotations"));
            let got = (
                a.read_only_hint,
                a.destructive_hint,
                a.idempotent_hint,
                a.open_world_hint,
            );
            assert_eq!(
                got,
                (
                    Some(*read_only),
                    Some(false),
                    Some(*idempotent),
                    Some(false)
                ),
                "{name}"
            );
            // Codex's rule, as it decides.
            let runs_unasked = a.read_only_hint == Some(true)
                || (a.destructive_hint == Some(false) && a.open_world_hint == Some(false));
            assert!(runs_unasked, "{name}");
        }
        c.cancel().await.unwrap();
    })
    .await
    .expect("annotation test ran past its deadline");
}

const T1: &str = "019b0000-0000-7000-8000-00000000000a";
const T2: &str = "019b0000-0000-7000-8000-00000000000b";
const T3: &str = "019b0000-0000-7000-8000-00000000000c";

/// Two Codex sessions share one app-server, so one `relay mcp` serves both: each
/// `tools/call` acts as the session its `_meta` names, not as the process's binding or
/// whoever called register first. `--as` still wins.
#[test]
fn one_mcp_process_acts_for_each_session_its_requests_name() {
    let h = Home::new();
    for (name, id) in [("codex-a", T1), ("codex-b", T2)] {
        h.json(&["register", name, "--id", id, "--kind", "codex"]);
    }
    h.register("bob");
    let mut m = common::mcp::Mcp::start_client(&h, None, "codex-mcp-client");
    for t in [T1, T2, T1] {
        let (e, who) = m.tool_meta("whoami", json!({}), common::mcp::codex_meta(t));
        assert!(!e, "{who}");
        assert_eq!(
            (who["endpoint"]["id"].as_str(), who["source"].as_str()),
            (Some(t), Some("request"))
        );
        let (e, sent) = m.tool_meta(
            "send",
            json!({"to": "bob", "body": format!("from {t}")}),
            common::mcp::codex_meta(t),
        );
        assert!(!e, "{sent}");
    }
    let inbox = h.json(&["inbox", "--as", "bob", "--peek"]);
    let froms: Vec<(&str, &str)> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].as_str().unwrap(), m["body"].as_str().unwrap()))
        .collect();
    assert_eq!(
        froms,
        [
            (T1, format!("from {T1}").as_str()),
            (T2, format!("from {T2}").as_str()),
            (T1, format!("from {T1}").as_str())
        ]
    );

    // A session nobody registered (its hooks did not run) gets no one else's identity:
    // the error names this session, the relay home relay mcp uses, and Codex's fix.
    let (e, err) = m.tool_meta("whoami", json!({}), common::mcp::codex_meta(T3));
    assert!(e, "{err}");
    let msg = err["message"].as_str().unwrap();
    let home = h.path().display().to_string();
    assert!(
        msg.contains(T3)
            && msg.contains(&home)
            && msg.contains("relay install codex")
            && !msg.contains("relay install claude"),
        "{msg}"
    );
    // Its register takes the session's own id, so its next calls find it again, and
    // pins nothing for the other sessions.
    let (e, reg) = m.tool_meta(
        "register",
        json!({"name": "codex-c"}),
        common::mcp::codex_meta(T3),
    );
    assert!(!e, "{reg}");
    assert_eq!(
        (
            reg["endpoint"]["id"].as_str(),
            reg["endpoint"]["kind"].as_str()
        ),
        (Some(T3), Some("codex"))
    );
    let (_, who) = m.tool_meta("whoami", json!({}), common::mcp::codex_meta(T3));
    assert_eq!(
        (who["endpoint"]["name"].as_str(), who["source"].as_str()),
        (Some("codex-c"), Some("request"))
    );
    let (_, who) = m.tool_meta("whoami", json!({}), common::mcp::codex_meta(T2));
    assert_eq!(who["endpoint"]["id"], T2);
    // A request without _meta has no session: not someone else's either.
    let (e, _) = m.tool("whoami", json!({}));
    assert!(e, "no _meta, no binding, no register: no identity");

    // --as wins over the request.
    let mut pinned = common::mcp::Mcp::start_client(&h, Some("bob"), "codex-mcp-client");
    let (_, who) = pinned.tool_meta("whoami", json!({}), common::mcp::codex_meta(T1));
    assert_eq!(
        (who["endpoint"]["name"].as_str(), who["source"].as_str()),
        (Some("bob"), Some("flag"))
    );
}

/// whoami names the relay home relay mcp uses, and without an identity so does the error
/// (the hooks may use another home); a client that is not Codex is not told to install
/// Codex's hooks, nor Claude's when it is Codex.
#[test]
fn no_identity_names_the_relay_home_and_the_clients_own_agent() {
    let h = Home::new();
    let home = h.path().display().to_string();
    let mut claude = common::mcp::Mcp::start_client(&h, None, "claude-code");
    let (e, err) = claude.tool("whoami", json!({}));
    assert!(e);
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains(&home)
            && msg.contains("relay install claude")
            && !msg.contains("install codex"),
        "{msg}"
    );
    let mut codex = common::mcp::Mcp::start_client(&h, None, "codex-mcp-client");
    let (_, err) = codex.tool("whoami", json!({}));
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains(&home)
            && msg.contains("relay install codex")
            && !msg.contains("install claude"),
        "{msg}"
    );
    h.register("x");
    let mut x = common::mcp::Mcp::start_client(&h, Some("x"), "codex-mcp-client");
    let (_, who) = x.tool("whoami", json!({}));
    assert_eq!(who["relay_home"], home);
}
