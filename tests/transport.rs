//! The transport over real Unix sockets: handshake, refusals, fd passing, EOF, stale
//! sockets, and other users.

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use relay::transport::{Connection, Error, Listener, Local, handshake};
use relay::wire::catalogue::{self, Hello, Ping, StreamOpen};
use relay::wire::{self, CATALOGUE_HASH, Msg};

const T: Option<Duration> = Some(Duration::from_secs(10));

fn pair() -> (Connection, Connection) {
    let (a, b) = UnixStream::pair().unwrap();
    let (a, b) = (Connection::new(a), Connection::new(b));
    a.set_read_timeout(T).unwrap();
    b.set_read_timeout(T).unwrap();
    (a, b)
}

#[test]
fn handshake_intersects_capabilities_and_takes_the_smaller_frame() {
    let (mut dialer, mut listener) = pair();
    let server = std::thread::spawn(move || {
        let mut me = Local::new("listener-id");
        me.capabilities = catalogue::FD_PASSING | catalogue::SHM_STREAMS;
        me.max_frame = 1 << 20;
        let s = handshake::accept(&mut listener, &me).unwrap();
        (s, listener)
    });
    let mut me = Local::new("dialer-id");
    me.name = Some("alice".into());
    me.capabilities = catalogue::FD_PASSING | catalogue::FRAMES;
    me.max_frame = 4096;
    let s = handshake::dial(&mut dialer, &me).unwrap();
    let (ls, _l) = server.join().unwrap();
    assert_eq!(s.peer_id, "listener-id");
    assert_eq!((s.capabilities, s.max_frame), (catalogue::FD_PASSING, 4096));
    assert_eq!(
        (ls.peer_id.as_str(), ls.peer_name.as_deref()),
        ("dialer-id", Some("alice"))
    );
    assert_eq!(
        (ls.capabilities, ls.max_frame),
        (catalogue::FD_PASSING, 4096)
    );
}

#[test]
fn a_catalogue_mismatch_is_refused_naming_both_hashes() {
    let (mut dialer, mut listener) = pair();
    let server = std::thread::spawn(move || handshake::accept(&mut listener, &Local::new("l")));
    dialer
        .write_frame(Msg::Hello(Hello {
            protocol_version: 1,
            catalogue_hash: 0x1234,
            endpoint_id: "d".into(),
            name: None,
            capabilities: 0,
            max_frame: 1024,
            heartbeat_ms: 1000,
        }))
        .unwrap();
    let ack = match dialer.read_frame().unwrap().unwrap().msg {
        Msg::HelloAck(a) => a,
        other => panic!("{other:?}"),
    };
    assert!(!ack.accepted);
    let reason = ack.reason.unwrap();
    assert!(
        reason.contains("0x0000000000001234")
            && reason.contains(&format!("{CATALOGUE_HASH:#018x}")),
        "{reason}"
    );
    assert!(matches!(server.join().unwrap(), Err(Error::Refused(_))));

    // A different protocol version likewise.
    let (mut dialer, mut listener) = pair();
    let server = std::thread::spawn(move || handshake::accept(&mut listener, &Local::new("l")));
    dialer
        .write_frame(Msg::Hello(Hello {
            protocol_version: 2,
            catalogue_hash: CATALOGUE_HASH,
            endpoint_id: "d".into(),
            name: None,
            capabilities: 0,
            max_frame: 1024,
            heartbeat_ms: 1000,
        }))
        .unwrap();
    match dialer.read_frame().unwrap().unwrap().msg {
        Msg::HelloAck(a) => assert!(a.reason.unwrap().contains("protocol version 2 is not 1")),
        other => panic!("{other:?}"),
    }
    assert!(server.join().unwrap().is_err());
}

#[test]
fn nothing_but_hello_is_read_before_the_handshake() {
    let (mut dialer, mut listener) = pair();
    let server = std::thread::spawn(move || handshake::accept(&mut listener, &Local::new("l")));
    dialer.write_frame(Msg::Ping(Ping { nonce: 1 })).unwrap();
    match dialer.read_frame().unwrap().unwrap().msg {
        Msg::HelloAck(a) => {
            assert!(!a.accepted);
            assert!(a.reason.unwrap().contains("expected Hello first, got Ping"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(server.join().unwrap(), Err(Error::Refused(_))));
}

#[test]
fn a_memfd_passed_with_scm_rights_is_readable_in_the_peer() {
    let (mut a, mut b) = pair();
    let fd = rustix::fs::memfd_create("relay-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut file = std::fs::File::from(fd);
    file.write_all(b"shared bytes").unwrap();
    a.send_with_fds(
        Msg::StreamOpen(StreamOpen {
            stream_id: 1,
            capacity: 4096,
            shm: true,
        }),
        &[file.as_fd()],
    )
    .unwrap();
    let frame = b.read_frame().unwrap().unwrap();
    assert!(matches!(
        frame.msg,
        Msg::StreamOpen(StreamOpen { stream_id: 1, .. })
    ));
    let fds = b.take_fds();
    assert_eq!(fds.len(), 1);
    let mut got = std::fs::File::from(fds.into_iter().next().unwrap());
    got.rewind().unwrap();
    let mut text = String::new();
    got.read_to_string(&mut text).unwrap();
    assert_eq!(text, "shared bytes");
}

#[test]
fn eof_between_frames_is_clean_and_inside_a_frame_is_truncated() {
    let (mut a, mut b) = pair();
    a.write_frame(Msg::Ping(Ping { nonce: 9 })).unwrap();
    drop(a);
    assert!(b.read_frame().unwrap().is_some());
    assert!(b.read_frame().unwrap().is_none(), "clean EOF");

    let (raw, other) = UnixStream::pair().unwrap();
    let mut b = Connection::new(other);
    b.set_read_timeout(T).unwrap();
    let mut bytes = Vec::new();
    wire::encode(
        &wire::Frame {
            seq: 0,
            msg: Msg::Ping(Ping { nonce: 300 }),
        },
        1 << 20,
        &mut bytes,
    )
    .unwrap();
    (&raw).write_all(&bytes[..bytes.len() - 1]).unwrap();
    drop(raw);
    assert!(matches!(
        b.read_frame(),
        Err(Error::Wire(wire::Error::Truncated { .. }))
    ));

    let (raw, other) = UnixStream::pair().unwrap();
    let mut b = Connection::new(other);
    (&raw).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(matches!(
        b.read_frame(),
        Err(Error::Wire(wire::Error::BadMagic { .. }))
    ));
}

#[test]
fn stale_socket_files_are_reclaimed_and_live_ones_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/ep.sock");
    // A crashed endpoint: the file stays, nothing listens.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    // Another test's child, forked before its exec, may briefly hold a copy of the
    // dropped listener's fd: the socket is stale only once nothing accepts on it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&path).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped socket still accepts"
        );
        std::thread::yield_now();
    }
    let live = Listener::bind(&path).expect("stale socket reclaimed");
    // A second listener for the endpoint is refused by its lock, naming the holder's pid.
    match Listener::bind(&path) {
        Err(e @ Error::Locked { pid, .. }) => {
            assert_eq!(pid, Some(std::process::id() as i32));
            assert!(
                e.to_string().contains(&std::process::id().to_string()),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(path.exists(), "the live socket was not unlinked");
    // Something listening outside the lock (not a relay listener) is never unlinked either.
    let other = path.with_file_name("raw.sock");
    let _raw = std::os::unix::net::UnixListener::bind(&other).unwrap();
    match Listener::bind(&other) {
        Err(Error::InUse { pid, .. }) => assert_eq!(pid as u32, std::process::id()),
        other => panic!("{other:?}"),
    }
    assert!(other.exists());
    // The directory existed (0755 from create_dir_all): its mode is never rewritten.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755);
    drop(live);
    assert!(!path.exists(), "dropping the listener removes its socket");
}

#[test]
fn other_users_are_refused_before_a_byte_is_read() {
    assert!(matches!(
        relay::transport::listener::check_peer(1000, 0),
        Err(Error::PeerUid { uid: 1000, own: 0 })
    ));
    assert!(relay::transport::listener::check_peer(7, 7).is_ok());
    // With root and setpriv, a real connection from another uid.
    let root = rustix::process::geteuid().is_root();
    // The system python (readable by other users), not a per-user shim.
    let tools = ["/usr/bin/setpriv", "/usr/bin/python3"]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    if !(root && tools) {
        eprintln!("skipping the cross-uid connection: needs root, setpriv and /usr/bin/python3");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("ep.sock");
    let listener = Listener::bind(&path).unwrap();
    // Open the way for the other user (relay itself keeps both at 0700/owner-only).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\ntry:\n    s.sendall(b'RLAY')\n    print('read', len(s.recv(16)))\nexcept OSError:\n    print('closed')",
        path.to_string_lossy()
    );
    let mut child = std::process::Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Accept with a deadline, so a client that never connects fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|_| ()));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Err(Error::PeerUid { uid, own })) => assert_eq!((uid, own), (65534, 0)),
        Ok(other) => panic!("expected a refusal, got {other:?}"),
        Err(_) => {
            let _ = child.kill();
            panic!("no connection from the other user within 30 s");
        }
    }
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("closed") || said.contains("read 0"),
        "the client saw the close: {said}"
    );
}

#[test]
fn an_existing_runtime_dir_others_can_write_is_refused_and_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770)).unwrap();
    match Listener::bind(&run.join("ep.sock")) {
        Err(e @ Error::UnsafeDir { mode: 0o770, .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&run.display().to_string())
                    && text.contains("0770")
                    && text.contains("chmod go-w"),
                "{text}"
            );
        }
        other => panic!("expected UnsafeDir, got {other:?}"),
    }
    let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o770, "never chmod-ed");
    assert_eq!(
        std::fs::read_dir(&run).unwrap().count(),
        0,
        "nothing created in it"
    );
    // A missing one is created 0700, parents included.
    let fresh = dir.path().join("a/b/run");
    let l = Listener::bind(&fresh.join("ep.sock")).unwrap();
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    drop(l);
}
