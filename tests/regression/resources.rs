//! Regression tests: resources (see tests/regression.rs).
#![allow(unused_imports)]

use crate::common::*;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use relay::transport::{Connection, Local, handshake};
use relay::wire::catalogue::{FD_PASSING, Hello, StreamData, StreamOpen};
use relay::wire::{CATALOGUE_HASH, Msg, VERSION};

// ---- helpers -------------------------------------------------------------------------------

/// A field of `/proc/<pid>/status` (`Threads`, `VmRSS`, `VmHWM` …) as its number (kB for
/// the memory fields).
fn status_field(pid: u32, field: &str) -> u64 {
    status_field_if_running(pid, field)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// [`status_field`], or `None` once the process has exited (a zombie has no memory fields).
fn status_field_if_running(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A background relay process (killed when dropped).
struct Bg(Option<Child>);

impl Bg {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `relay <args> --as <me>` with its socket in `<home>/run`, waiting for the socket.
fn serve(h: &Home, args: &[&str], id: &str, stdout: Stdio) -> (Bg, PathBuf) {
    let mut c = h.cmd(args);
    c.env_remove("RELAY_RUNTIME_DIR")
        .stdout(stdout)
        .stderr(Stdio::piped());
    let child = Bg(Some(c.spawn().unwrap()));
    let sock = h.path().join("run").join(format!("{id}.sock"));
    wait_for("the socket", || UnixStream::connect(&sock).is_ok());
    (child, sock)
}

fn dial(sock: &Path) -> Connection {
    let conn = Connection::new(UnixStream::connect(sock).unwrap());
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn
}

fn hello(heartbeat_ms: u32) -> Msg {
    Msg::Hello(Hello {
        protocol_version: VERSION,
        catalogue_hash: CATALOGUE_HASH,
        endpoint_id: "flooder".into(),
        name: None,
        capabilities: 0,
        max_frame: relay::wire::HARD_MAX_FRAME,
        heartbeat_ms,
    })
}

// ---- items 15, 16: transport and stream bounds -------------------------------------------

/// issue 9 item 15: `Hello{heartbeat_ms: u32::MAX}` then silence held one listener thread
/// per connection for ~49 days (200 connections: 200 threads). heartbeat_ms is bounded
/// (100 ms–60 s; out of range is refused in the handshake, naming the range), so the
/// listener's thread count returns to its baseline while all 200 stay open.
#[test]
fn hellos_with_an_unbounded_heartbeat_do_not_hold_threads() {
    let h = Home::new();
    let b = h.register("b");
    let (l, sock) = serve(&h, &["listen", "--as", "b"], &b, Stdio::null());
    let pid = l.pid();
    let base = status_field(pid, "Threads");
    let mut conns = Vec::new();
    let mut refusals = 0;
    for _ in 0..200 {
        let mut c = dial(&sock);
        c.write_frame(hello(u32::MAX)).unwrap();
        // The listener answers each Hello (accepted before the fix, refused after).
        if let Ok(Some(f)) = c.read_frame()
            && let Msg::HelloAck(a) = f.msg
            && !a.accepted
        {
            let why = a.reason.unwrap_or_default();
            assert!(
                why.contains("heartbeat_ms") && why.contains("60000"),
                "{why}"
            );
            refusals += 1;
        }
        conns.push(c);
    }
    let mut threads = status_field(pid, "Threads");
    let deadline = Instant::now() + Duration::from_secs(20);
    while threads > base + 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        threads = status_field(pid, "Threads");
    }
    eprintln!("listener threads: {base} before, {threads} with 200 silent connections");
    assert!(
        threads <= base + 4,
        "200 silent connections hold {threads} threads (baseline {base})"
    );
    assert_eq!(refusals, 200, "each out-of-range Hello is refused");
    drop(conns);
}

/// issue 9 item 15: connections per listener are capped (64); one past the cap is told why
/// (a HelloAck refusal naming the limit) and closed, so 200 connections that never say
/// Hello cost at most 64 threads (each of which the handshake deadline frees).
#[test]
fn connections_per_listener_are_capped_with_a_clear_refusal() {
    let h = Home::new();
    let b = h.register("b");
    let (l, sock) = serve(&h, &["listen", "--as", "b"], &b, Stdio::null());
    let pid = l.pid();
    let base = status_field(pid, "Threads");
    let mut conns = Vec::new();
    let mut peak = base;
    for _ in 0..200 {
        conns.push(dial(&sock));
        peak = peak.max(status_field(pid, "Threads"));
    }
    // The 201st is refused with the limit in the reason.
    let mut late = dial(&sock);
    let said = match late.read_frame() {
        Ok(Some(f)) => format!("{:?}", f.msg),
        other => format!("{other:?}"),
    };
    // A dialer that does say Hello gets the same refusal from its handshake.
    let refused = handshake::dial(&mut dial(&sock), &Local::new("one-too-many"));
    assert!(
        matches!(&refused, Err(relay::transport::Error::Refused(why)) if why.contains("64")),
        "{refused:?}"
    );
    peak = peak.max(status_field(pid, "Threads"));
    eprintln!("listener threads: {base} before, peak {peak} with 202 silent connections");
    assert!(
        peak <= base + 64 + 2,
        "201 connections held {peak} threads (baseline {base})"
    );
    assert!(
        said.contains("accepted: false") && said.contains("64"),
        "the refusal names the cap: {said}"
    );
    drop(conns);
}

/// issue 9 item 15: 12 connections each stalled inside a 16 MiB frame held 203 MiB in the
/// listener. Partial large frames share a bounded budget (the rest stays in the senders'
/// socket buffers) and a stalled half-frame is closed after its deadline, so the
/// listener's peak RSS stays far below 12 × 16 MiB.
#[test]
fn stalled_half_frames_do_not_hold_their_size_in_memory() {
    let h = Home::new();
    let b = h.register("b");
    let (l, sock) = serve(&h, &["listen", "--as", "b"], &b, Stdio::null());
    let pid = l.pid();
    let base = status_field(pid, "VmRSS");
    let len: u32 = relay::wire::HARD_MAX_FRAME;
    // One payload shared by the 12 writers (one byte short of the frame).
    let body = std::sync::Arc::new(vec![0x61u8; len as usize - 1]);
    let writers: Vec<_> = (0..12)
        .map(|_| {
            let body = body.clone();
            let mut c = dial(&sock);
            handshake::dial(&mut c, &Local::new("staller")).unwrap();
            let raw = c.stream().try_clone().unwrap();
            std::thread::spawn(move || {
                let _keep = c;
                let mut head = Vec::with_capacity(16);
                head.extend_from_slice(&relay::wire::MAGIC.to_le_bytes());
                head.extend_from_slice(&VERSION.to_le_bytes());
                head.extend_from_slice(&5u16.to_le_bytes()); // Deliver
                head.extend_from_slice(&7u32.to_le_bytes());
                head.extend_from_slice(&len.to_le_bytes());
                // Blocks while the listener will not read more; fails once it hangs up.
                let sent = (&raw)
                    .write_all(&head)
                    .and_then(|()| (&raw).write_all(&body));
                // Then stall, one byte short, until the listener closes the connection.
                let mut buf = [0u8; 4096];
                let _ = raw.set_read_timeout(Some(Duration::from_secs(60)));
                loop {
                    match std::io::Read::read(&mut &raw, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                sent.is_ok()
            })
        })
        .collect();
    let complete = writers
        .into_iter()
        .map(|w| w.join().unwrap())
        .filter(|&done| done)
        .count();
    let peak = status_field(pid, "VmHWM");
    eprintln!(
        "listener RSS: {} MiB before, peak {} MiB with 12 stalled 16 MiB half-frames \
         ({complete} of 12 were read whole)",
        base / 1024,
        peak / 1024
    );
    assert!(
        peak < base + 48 * 1024,
        "12 stalled half-frames raised the listener's peak RSS to {} MiB (from {} MiB)",
        peak / 1024,
        base / 1024
    );
    drop(l);
}

/// issue 9 item 15: every read has a deadline. A peer that sends part of a frame and then
/// stalls (or trickles a byte now and then) blocked `read_frame` forever when the caller
/// had no read timeout; now a frame must arrive whole within the frame deadline of its
/// first byte, or the read fails with a protocol error naming the deadline.
#[test]
fn a_half_frame_has_a_deadline_even_without_a_read_timeout() {
    for trickle in [false, true] {
        let (raw, ours) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(ours);
        conn.set_read_timeout(None).unwrap();
        conn.set_frame_deadline(Duration::from_millis(300));
        let mut bytes = Vec::new();
        relay::wire::encode(
            &relay::wire::Frame {
                seq: 0,
                msg: Msg::Ping(relay::wire::catalogue::Ping { nonce: 1 }),
            },
            1 << 20,
            &mut bytes,
        )
        .unwrap();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let feeder = std::thread::spawn(move || {
            // All but the last byte, slowly when trickling; the frame never completes.
            let n = bytes.len() - 1;
            let step = if trickle { 1 } else { n };
            for chunk in bytes[..n].chunks(step) {
                if (&raw).write_all(chunk).is_err() {
                    break;
                }
                if stop_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    break;
                }
            }
            let _ = stop_rx.recv_timeout(Duration::from_secs(30));
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || drop(tx.send(conn.read_frame().map(|_| ()))));
        let got = rx.recv_timeout(Duration::from_secs(10));
        let took = started.elapsed();
        drop(stop_tx);
        feeder.join().unwrap();
        match got {
            Ok(Err(e)) => {
                let e = e.to_string();
                assert!(
                    (e.contains("did not arrive whole") || e.contains("a frame header ("))
                        && e.contains("300ms"),
                    "{e}"
                );
                assert!(took < Duration::from_secs(5), "closed after {took:?}");
            }
            other => panic!("a stalled half-frame (trickle {trickle}) was not closed: {other:?}"),
        }
    }
}

/// issue 9 item 16: a stream writer that ignores the credit window while the receiver's
/// output is stalled pushed 512 MiB into a receiver with a 64 KiB window. Bytes past the
/// window are a protocol error: the connection is closed, the receiver's memory stays
/// bounded by the window, and `stream recv` fails naming the error.
#[test]
fn a_stream_writer_that_ignores_credit_is_closed_with_a_protocol_error() {
    let h = Home::new();
    let b = h.register("b");
    // stdout is a pipe already full: the receiver's first write of output stalls.
    let (mut out, pipe) = std::io::pipe().unwrap();
    (&pipe).write_all(&[0u8; 64 * 1024]).unwrap();
    let (mut l, sock) = serve(
        &h,
        &["stream", "recv", "--as", "b", "--no-shm", "-"],
        &b,
        Stdio::from(pipe),
    );
    let pid = l.pid();
    let base = status_field(pid, "VmRSS");
    let mut conn = dial(&sock);
    let mut me = Local::new("pusher");
    me.capabilities = FD_PASSING;
    handshake::dial(&mut conn, &me).unwrap();
    let window: u32 = 64 * 1024;
    conn.write_frame(Msg::StreamOpen(StreamOpen {
        stream_id: 1,
        capacity: window,
        shm: false,
    }))
    .unwrap();
    match conn.read_frame().unwrap().map(|f| f.msg) {
        Some(Msg::StreamAccept(a)) => assert!(!a.shm),
        other => panic!("expected StreamAccept, got {other:?}"),
    }
    // Push 256 MiB regardless of credit.
    let chunk = vec![0x5au8; 16 * 1024];
    let mut offset = 0u64;
    let total = 256u64 << 20;
    let mut refused = None;
    // The receiver may exit once it refused the stream, and an exited process has no
    // memory figures: its peak is sampled while the push runs, and once more at the end.
    let mut peak = status_field(pid, "VmHWM");
    let mut n = 0u64;
    while offset < total {
        if let Err(e) = conn.write_frame(Msg::StreamData(StreamData {
            stream_id: 1,
            offset,
            data: chunk.clone(),
        })) {
            refused = Some(e.to_string());
            break;
        }
        offset += chunk.len() as u64;
        n += 1;
        if n.is_multiple_of(256)
            && let Some(p) = status_field_if_running(pid, "VmHWM")
        {
            peak = peak.max(p);
        }
    }
    if let Some(p) = status_field_if_running(pid, "VmHWM") {
        peak = peak.max(p);
    }
    eprintln!(
        "receiver RSS: {} MiB before, peak {} MiB after the writer pushed {} KiB ignoring a \
         64 KiB window",
        base / 1024,
        peak / 1024,
        offset >> 10
    );
    assert!(
        peak < base + 32 * 1024,
        "the receiver's peak RSS grew to {} MiB (from {} MiB) for a 64 KiB window",
        peak / 1024,
        base / 1024
    );
    assert!(
        refused.is_some(),
        "the connection stayed open through {offset} bytes"
    );
    // Unstall the output: the receiver then fails, naming the protocol error.
    let child = l.0.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let done = wait_with_deadline(child, Duration::from_secs(30), "stream recv");
    let err = String::from_utf8_lossy(&done.stderr);
    assert_ne!(done.status.code(), Some(0), "{err}");
    assert!(
        err.contains("credit window"),
        "the error names the window: {err}"
    );
}

/// The journal_mode switch is skipped when the file header already says WAL (a hook opens
/// the store on every tool call); a database someone turned back to a rollback journal is
/// still switched to WAL on the next open.
#[test]
fn the_store_is_in_wal_mode_after_every_open() {
    let h = Home::new();
    h.register("a");
    let mode = || -> String {
        let c = rusqlite::Connection::open(h.db()).unwrap();
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(mode(), "wal");
    {
        let c = rusqlite::Connection::open(h.db()).unwrap();
        let m: String = c
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .unwrap();
        assert_eq!(m, "delete");
    }
    h.register("b");
    assert_eq!(mode(), "wal");
}
