//! Shared-memory streams and frame buffers between real processes (`relay shm-peer` is the
//! other side), plus session-level contract checks over a real socket pair and memfd.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use relay::shm::frames::{FrameReader, Geometry};
use relay::shm::patterns::{check_frame, pattern};
use relay::shm::stream::ERROR_INVALID_HANDLE;
use relay::shm::{Error, Options, Session, StreamReader, StreamWriter};
use relay::transport::{Connection, Listener, Local, handshake};
use relay::wire::Msg;
use relay::wire::catalogue::{FD_PASSING, FRAMES, SHM_STREAMS, StreamData, StreamOpen};
use relay_ring::Read;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);
const ALL: u32 = FD_PASSING | SHM_STREAMS | FRAMES;

struct Peer {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        Peer::spawn_with(args, Stdio::null())
    }

    fn spawn_with(args: &[&str], stdin: Stdio) -> Peer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
            .arg("shm-peer")
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str(&l).unwrap()).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines: rx }
    }

    fn next(&self) -> Value {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("a line from shm-peer within 60 s")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listener(dir: &Path, name: &str) -> (Listener, PathBuf) {
    let p = dir.join(name);
    (Listener::bind(&p).unwrap(), p)
}

/// Accepts the peer's connection and starts a session on it (we are the listener).
fn accept(l: &Listener, opts: Options) -> Session {
    let mut conn = l.accept().unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut me = Local::new("test");
    me.capabilities = ALL;
    let agreed = handshake::accept(&mut conn, &me).unwrap();
    conn.set_read_timeout(None).unwrap();
    Session::new(conn, agreed.capabilities, false, opts).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn patterned(len: u64) -> Vec<u8> {
    (0..len).map(pattern).collect()
}

fn read_to_end(r: &mut StreamReader) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn dev_shm_entries() -> usize {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_shared_memory_round_trip_never_falls_back_and_leaves_nothing_in_dev_shm() {
    let before = dev_shm_entries();
    let dir = tempfile::tempdir().unwrap();
    let (l, path) = listener(dir.path(), "a.sock");
    let peer = Peer::spawn(&["sink", "--socket", path.to_str().unwrap()]);
    let s = accept(&l, Options::default());
    let mut w = s.open().unwrap();
    assert!(w.is_shm(), "both sides have SHM_STREAMS and free slots");
    // 5 MiB through a 1 MiB ring: many laps, wrap points everywhere.
    let data = patterned(5 << 20);
    w.write_all(&data).unwrap();
    assert!(w.is_shm(), "it never fell back");
    w.finish_and_wait(DEADLINE).unwrap();
    let got = peer.next();
    assert_eq!(got["bytes"], data.len() as u64);
    assert_eq!(got["sha256"], sha256(&data));
    assert_eq!(got["shm"], true);
    assert_eq!(got["error"], Value::Null);
    drop(s);
    drop(peer);
    assert_eq!(dev_shm_entries(), before, "nothing is named in /dev/shm");
}

#[test]
fn a_chain_a_to_b_to_c_through_a_middle_process_keeps_the_pattern_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (la, pa) = listener(dir.path(), "a.sock");
    let (lc, pc) = listener(dir.path(), "c.sock");
    let peer = Peer::spawn(&[
        "forward",
        "--socket",
        pa.to_str().unwrap(),
        "--next",
        pc.to_str().unwrap(),
    ]);
    let a = accept(&la, Options::default());
    let c = accept(&lc, Options::default());
    let data = patterned(3_000_000);
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        let mut w = a.open().unwrap();
        w.write_all(&sent).unwrap();
        w.finish_and_wait(DEADLINE).unwrap();
    });
    let mut r = c.accept(DEADLINE).unwrap();
    let got = read_to_end(&mut r);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ after the middle hop");
    let hop = peer.next();
    assert_eq!(hop["forwarded"], data.len() as u64);
    assert_eq!(hop["in_shm"], true);
    assert_eq!(hop["out_shm"], true);
    writer.join().unwrap();
}

/// Two sessions over a real socket pair in one process, the reader on the listener side.
fn pair(opts: Options) -> (Session, Session) {
    let (x, y) = UnixStream::pair().unwrap();
    let (a, b) = (Connection::new(x), Connection::new(y));
    let caps = if opts.slots > 0 { ALL } else { FD_PASSING };
    (
        Session::new(a, caps, true, opts).unwrap(),
        Session::new(b, caps, false, opts).unwrap(),
    )
}

fn open_pair(opts: Options) -> (Session, Session, StreamWriter, StreamReader) {
    let (a, b) = pair(opts);
    let w = a.open().unwrap();
    let r = b.accept(DEADLINE).unwrap();
    (a, b, w, r)
}

/// Waits until `try_read` gives something other than Pending.
fn read_some(r: &mut StreamReader, buf: &mut [u8]) -> Read {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match r.try_read(buf).unwrap() {
            Read::Pending => assert!(Instant::now() < deadline, "read hung"),
            other => return other,
        }
        std::thread::yield_now();
    }
}

#[test]
fn backpressure_wrap_and_end_of_stream_behave_the_same_on_both_paths() {
    for slots in [64, 0] {
        let opts = Options {
            slots,
            capacity: 4096,
            ..Options::default()
        };
        let (_a, _b, mut w, mut r) = open_pair(opts);
        assert_eq!(w.is_shm(), slots > 0);
        assert_eq!(r.is_shm(), slots > 0);
        let data = patterned(10_000);
        let first = w.try_write(&data).unwrap();
        assert_eq!(first, 4096, "accepted count = capacity (slots {slots})");
        assert_eq!(
            w.try_write(&data[first..]).unwrap(),
            0,
            "backpressure is Ok(0)"
        );
        let mut got = vec![0u8; 3000];
        let Read::Data(n) = read_some(&mut r, &mut got) else {
            panic!("data expected")
        };
        let mut all = got[..n].to_vec();
        // Drain the rest of the first write before writing more: the socket path frees
        // credit only in quarters of the window.
        while all.len() < first {
            let mut b = vec![0u8; 4096];
            if let Read::Data(n) = read_some(&mut r, &mut b) {
                all.extend_from_slice(&b[..n]);
            }
        }
        let mut empty = [0u8; 0];
        assert_eq!(r.try_read(&mut empty).unwrap(), Read::Pending, "empty buf");
        // The rest after the drain, crossing the ring's end on both sides.
        let mut off = first;
        let deadline = Instant::now() + DEADLINE;
        while off < data.len() {
            off += w.try_write(&data[off..]).unwrap();
            let mut b = vec![0u8; 1500];
            if let Read::Data(n) = r.try_read(&mut b).unwrap() {
                all.extend_from_slice(&b[..n]);
            }
            assert!(Instant::now() < deadline, "stalled at {off}");
        }
        let mut b = vec![0u8; 8192];
        while all.len() < data.len() {
            if let Read::Data(n) = read_some(&mut r, &mut b) {
                all.extend_from_slice(&b[..n]);
            }
        }
        assert!(all == data, "every byte once, in order (slots {slots})");
        assert_eq!(
            r.try_read(&mut b).unwrap(),
            Read::Pending,
            "open and drained"
        );
        drop(w);
        assert_eq!(
            read_some(&mut r, &mut b),
            Read::Eof,
            "Eof after writer drop"
        );
        assert_eq!(r.try_read(&mut b).unwrap(), Read::Eof, "sticky");
        assert_eq!(
            r.try_read(&mut empty).unwrap(),
            Read::Eof,
            "sticky for an empty buf"
        );
    }
}

#[test]
fn eof_waits_for_the_drain() {
    let (_a, _b, mut w, mut r) = open_pair(Options::default());
    w.write_all(b"last words").unwrap();
    drop(w);
    let mut b = [0u8; 4];
    assert_eq!(read_some(&mut r, &mut b), Read::Data(4), "data before Eof");
    assert_eq!(read_to_end(&mut r), b" words");
    assert_eq!(r.try_read(&mut b).unwrap(), Read::Eof);
}

#[test]
fn writes_after_the_reader_left_are_closed_on_both_paths() {
    for slots in [64, 0] {
        let opts = Options {
            slots,
            ..Options::default()
        };
        let (_a, _b, mut w, r) = open_pair(opts);
        drop(r);
        let deadline = Instant::now() + DEADLINE;
        loop {
            match w.try_write(b"x") {
                Err(Error::Closed(_)) => break,
                Ok(_) => assert!(Instant::now() < deadline, "never closed (slots {slots})"),
                Err(e) => panic!("{e}"),
            }
            std::thread::yield_now();
        }
    }
}

#[test]
fn the_65th_stream_falls_back_to_the_socket_and_still_delivers_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (l, path) = listener(dir.path(), "a.sock");
    let peer = Peer::spawn(&["sink", "--socket", path.to_str().unwrap()]);
    let s = accept(&l, Options::default());
    let mut writers: Vec<StreamWriter> = (0..65).map(|_| s.open().unwrap()).collect();
    let shm: Vec<bool> = writers.iter().map(StreamWriter::is_shm).collect();
    assert!(shm[..64].iter().all(|b| *b), "64 slots");
    assert!(!shm[64], "the 65th runs over the socket");
    let data = patterned(100_000);
    for w in &mut writers {
        w.write_all(&data).unwrap();
    }
    let ids: Vec<u32> = writers.iter().map(StreamWriter::id).collect();
    for w in writers {
        w.finish_and_wait(DEADLINE).unwrap();
    }
    let mut seen = std::collections::HashMap::new();
    for _ in 0..65 {
        let l = peer.next();
        seen.insert(l["id"].as_u64().unwrap() as u32, l);
    }
    for (i, id) in ids.iter().enumerate() {
        let l = &seen[id];
        assert_eq!(l["bytes"], 100_000, "stream {i}");
        assert_eq!(l["sha256"], sha256(&data), "stream {i}");
        assert_eq!(l["shm"], i < 64, "stream {i}");
    }
}

#[test]
fn a_forged_stream_id_is_an_invalid_handle() {
    let (x, y) = UnixStream::pair().unwrap();
    let session = Session::new(Connection::new(x), ALL, false, Options::default()).unwrap();
    let mut raw = Connection::new(y);
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    raw.write_frame(Msg::StreamData(StreamData {
        stream_id: 99,
        offset: 0,
        data: b"forged".to_vec(),
    }))
    .unwrap();
    match raw.read_frame().unwrap().map(|f| f.msg) {
        Some(Msg::Error(e)) => {
            assert_eq!(e.code, ERROR_INVALID_HANDLE);
            assert!(e.message.contains("99"), "{}", e.message);
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }
    assert!(matches!(session.reader(99), Err(Error::InvalidHandle(99))));
}

#[test]
fn a_ring_with_corrupted_cursors_is_corrupt_not_an_out_of_bounds_read() {
    use relay::shm::memory;
    use relay_ring::{Ring, region_len};
    let (x, y) = UnixStream::pair().unwrap();
    let session = Session::new(Connection::new(x), ALL, false, Options::default()).unwrap();
    let mut raw = Connection::new(y);
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    let (memfd, map) = memory::create("test", region_len(4096)).unwrap();
    let map = std::sync::Arc::new(map);
    // SAFETY: a fresh mapping of region_len(4096) bytes, kept alive by the Arc.
    let ring = unsafe { Ring::init(map.ptr(), map.len(), 4096, map.clone()) }.unwrap();
    ring.forge_cursors(1 << 40, 0);
    let (d, s) = (
        memory::Doorbell::new().unwrap(),
        memory::Doorbell::new().unwrap(),
    );
    raw.send_with_fds(
        Msg::StreamOpen(StreamOpen {
            stream_id: 1,
            capacity: 4096,
            shm: true,
        }),
        &[memfd.as_fd(), d.fd().as_fd(), s.fd().as_fd()],
    )
    .unwrap();
    let mut r = session.accept(DEADLINE).unwrap();
    assert!(r.is_shm());
    let mut b = [0u8; 64];
    match r.try_read(&mut b) {
        Err(Error::Corrupt(why)) => assert!(why.contains("over capacity"), "{why}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        matches!(r.try_read(&mut b), Err(Error::Corrupt(_))),
        "poisoned"
    );
}

#[test]
fn killing_the_writer_mid_stream_gives_the_reader_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (l, path) = listener(dir.path(), "a.sock");
    let mut peer = Peer::spawn(&[
        "write-then-hang",
        "--socket",
        path.to_str().unwrap(),
        "--bytes",
        "100000",
    ]);
    let s = accept(&l, Options::default());
    let mut r = s.accept(DEADLINE).unwrap();
    assert_eq!(peer.next()["written"], 100_000);
    let mut got = Vec::new();
    let mut b = vec![0u8; 65536];
    while got.len() < 100_000 {
        let n = r.read(&mut b).unwrap();
        got.extend_from_slice(&b[..n]);
    }
    assert!(got == patterned(100_000));
    peer.child.kill().unwrap();
    peer.child.wait().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(r.read(&mut b).map_err(|e| e.to_string()));
    });
    let outcome = rx
        .recv_timeout(DEADLINE)
        .expect("the read returned, no hang");
    let err = outcome.expect_err("the writer never finished, so this is not Eof");
    assert!(err.contains("vanished"), "{err}");
}

#[test]
fn frames_are_never_torn_and_ids_never_go_backwards() {
    let peer = Peer::spawn_with(&["publish-frames", "--count", "1000"], Stdio::piped());
    let path = peer.next()["path"].as_str().unwrap().to_string();
    let geometry = Geometry::rgba8(1280, 720);
    let wrong = FrameReader::open_path(Path::new(&path), Geometry::rgba8(1920, 720));
    match wrong {
        Err(e) => assert!(e.to_string().contains("1280x720"), "{e}"),
        Ok(_) => panic!("a wrong width must be refused"),
    }
    let mut reader = FrameReader::open_path(Path::new(&path), geometry).unwrap();
    let mut stdin = peer_stdin(&peer);
    stdin.write_all(b"go\n").unwrap();
    let (mut last, mut checked) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while last < 1000 {
        assert!(Instant::now() < deadline, "frames stopped at {last}");
        let Some(f) = reader.latest() else { continue };
        assert!(f.id >= last, "frame id went back from {last} to {}", f.id);
        if f.id > last {
            if let Err(i) = check_frame(f.id, &f[..]) {
                panic!("frame {} is torn at pixel {i}", f.id);
            }
            checked += 1;
            last = f.id;
        }
    }
    let done = peer.next();
    assert_eq!(done["published"], 1000);
    assert!(checked >= 2, "read {checked} frames");
    drop(stdin);
}

fn peer_stdin(p: &Peer) -> std::fs::File {
    // The child's stdin pipe, duplicated so the Peer keeps ownership of the Child.
    let fd = p
        .child
        .stdin
        .as_ref()
        .unwrap()
        .as_fd()
        .try_clone_to_owned()
        .unwrap();
    std::fs::File::from(fd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_adapters_carry_every_byte_on_both_paths() {
    use relay::shm::{AsyncStreamReader, AsyncStreamWriter};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for slots in [64, 0] {
        let opts = Options {
            slots,
            capacity: 64 * 1024,
            ..Options::default()
        };
        let (a, b) = pair(opts);
        let w = a.open().unwrap();
        let r = tokio::task::spawn_blocking(move || b.accept(DEADLINE).unwrap())
            .await
            .unwrap();
        assert_eq!(w.is_shm(), slots > 0);
        let data = patterned(3_000_000);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            let mut w = AsyncStreamWriter::new(w);
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
            w
        });
        let mut r = AsyncStreamReader::new(r);
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, r.read_to_end(&mut got))
            .await
            .expect("no hang")
            .unwrap();
        assert!(got == data, "every byte in order (slots {slots})");
        writer.await.unwrap();
    }
}

#[test]
fn different_windows_on_each_side_do_not_stall_the_socket_path() {
    // The writer's window is 64 KiB, the reader's default 1 MiB: credit must follow the
    // window the writer announced, or both wait for each other.
    let (x, y) = UnixStream::pair().unwrap();
    let small = Options {
        slots: 0,
        capacity: 64 * 1024,
        ..Options::default()
    };
    let big = Options {
        slots: 0,
        ..Options::default()
    };
    let a = Session::new(Connection::new(x), FD_PASSING, true, small).unwrap();
    let b = Session::new(Connection::new(y), FD_PASSING, false, big).unwrap();
    let data = patterned(1_000_000);
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        let mut w = a.open().unwrap();
        w.write_all(&sent).unwrap();
        w.finish_and_wait(DEADLINE).unwrap();
    });
    let mut r = b.accept(DEADLINE).unwrap();
    assert!(!r.is_shm());
    assert!(read_to_end(&mut r) == data);
    writer.join().unwrap();
}

#[test]
fn a_stream_open_with_too_few_descriptors_is_rejected_and_its_descriptors_closed() {
    let (x, y) = UnixStream::pair().unwrap();
    let session = Session::new(Connection::new(x), ALL, false, Options::default()).unwrap();
    let mut raw = Connection::new(y);
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    let d = relay::shm::memory::Doorbell::new().unwrap();
    let open = |id| {
        Msg::StreamOpen(StreamOpen {
            stream_id: id,
            capacity: 4096,
            shm: true,
        })
    };
    raw.send_with_fds(open(1), &[d.fd().as_fd(), d.fd().as_fd()])
        .unwrap();
    match raw.read_frame().unwrap().map(|f| f.msg) {
        Some(Msg::StreamReject(r)) => assert!(r.reason.contains("3 descriptors"), "{}", r.reason),
        other => panic!("expected StreamReject, got {other:?}"),
    }
    // A correct open after it is not paired with the stray descriptors.
    use relay::shm::memory;
    use relay_ring::{Ring, region_len};
    let (memfd, map) = memory::create("test", region_len(4096)).unwrap();
    let map = std::sync::Arc::new(map);
    // SAFETY: a fresh mapping of region_len(4096) bytes, kept alive by the Arc.
    unsafe { Ring::init(map.ptr(), map.len(), 4096, map.clone()) }.unwrap();
    let (e1, e2) = (
        memory::Doorbell::new().unwrap(),
        memory::Doorbell::new().unwrap(),
    );
    raw.send_with_fds(open(3), &[memfd.as_fd(), e1.fd().as_fd(), e2.fd().as_fd()])
        .unwrap();
    match raw.read_frame().unwrap().map(|f| f.msg) {
        Some(Msg::StreamAccept(a)) => assert!(a.shm && a.stream_id == 3),
        other => panic!("expected StreamAccept, got {other:?}"),
    }
    let r = session.accept(DEADLINE).unwrap();
    assert_eq!(r.id(), 3);
    assert!(
        matches!(session.reader(3), Err(Error::InvalidHandle(3))),
        "a stream has one reader"
    );
}

#[test]
fn a_frame_buffer_takes_one_reader_and_refuses_a_forged_slot_length() {
    use relay::shm::frames::FrameWriter;
    let g = Geometry::rgba8(64, 32);
    let w = FrameWriter::create(g).unwrap();
    let fd = w.fd().try_clone().unwrap();
    let first = FrameReader::open(&fd, g).unwrap();
    match FrameReader::open(&fd, g) {
        Err(e) => assert!(e.to_string().contains("another reader"), "{e}"),
        Ok(_) => panic!("a second reader must be refused"),
    }
    drop(first);
    drop(FrameReader::open(&fd, g).expect("free again after the first closed"));
    // Forge the slot length (header offset 24) as a hostile publisher could.
    let map = relay::shm::memory::map_received(&fd, 4096).unwrap();
    // SAFETY: offset 24 is inside the 4096-byte header mapping; u64-aligned.
    unsafe {
        map.ptr()
            .as_ptr()
            .add(24)
            .cast::<u64>()
            .write(u64::MAX / 3 + 1)
    };
    match FrameReader::open(&fd, g) {
        Err(e) => assert!(e.to_string().contains("slot length"), "{e}"),
        Ok(_) => panic!("a forged slot length must be refused"),
    }
}

#[test]
fn data_past_the_credit_window_closes_the_session_and_socket_windows_are_capped() {
    use relay::shm::stream::{ERROR_PROTOCOL, MAX_SOCKET_WINDOWS};
    let (x, y) = UnixStream::pair().unwrap();
    let opts = Options {
        slots: 0,
        ..Options::default()
    };
    let session = Session::new(Connection::new(x), FD_PASSING, false, opts).unwrap();
    let mut raw = Connection::new(y);
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    // A window that would take the session past its cap is rejected, naming the limit.
    let open = |raw: &mut Connection, id, capacity| {
        raw.write_frame(Msg::StreamOpen(StreamOpen {
            stream_id: id,
            capacity,
            shm: false,
        }))
        .unwrap();
        raw.read_frame().unwrap().map(|f| f.msg)
    };
    let too_big = (MAX_SOCKET_WINDOWS + 1) as u32;
    match open(&mut raw, 1, too_big) {
        Some(Msg::StreamReject(r)) => {
            assert!(
                r.reason.contains(&MAX_SOCKET_WINDOWS.to_string()),
                "{}",
                r.reason
            )
        }
        other => panic!("expected StreamReject, got {other:?}"),
    }
    assert!(matches!(
        open(&mut raw, 3, 4096),
        Some(Msg::StreamAccept(_))
    ));
    let mut r = session.accept(DEADLINE).unwrap();
    // 4096 bytes fit the window; one more byte unread is a protocol error.
    for (offset, len) in [(0u64, 4096usize), (4096, 1)] {
        raw.write_frame(Msg::StreamData(StreamData {
            stream_id: 3,
            offset,
            data: vec![7; len],
        }))
        .unwrap();
    }
    match raw.read_frame().map(|f| f.map(|f| f.msg)) {
        Ok(Some(Msg::Error(e))) => {
            assert_eq!(e.code, ERROR_PROTOCOL);
            assert!(e.message.contains("credit window"), "{}", e.message);
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }
    assert!(
        matches!(raw.read_frame(), Ok(None) | Err(_)),
        "the connection is closed"
    );
    let mut buf = [0u8; 64];
    match r.read(&mut buf) {
        Err(Error::Corrupt(why)) => assert!(why.contains("credit window"), "{why}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_session_reads_at_most_max_incoming_streams_at_once() {
    use relay::shm::stream::MAX_INCOMING;
    let (x, y) = UnixStream::pair().unwrap();
    let opts = Options {
        slots: 0,
        ..Options::default()
    };
    let _session = Session::new(Connection::new(x), FD_PASSING, false, opts).unwrap();
    let mut raw = Connection::new(y);
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    for i in 0..=MAX_INCOMING as u32 {
        raw.write_frame(Msg::StreamOpen(StreamOpen {
            stream_id: 2 * i + 1,
            capacity: 4096,
            shm: false,
        }))
        .unwrap();
        match (i as usize, raw.read_frame().unwrap().map(|f| f.msg)) {
            (n, Some(Msg::StreamAccept(_))) if n < MAX_INCOMING => {}
            (n, Some(Msg::StreamReject(r))) if n == MAX_INCOMING => {
                assert!(r.reason.contains(&MAX_INCOMING.to_string()), "{}", r.reason)
            }
            (n, other) => panic!("stream {n}: {other:?}"),
        }
    }
}
