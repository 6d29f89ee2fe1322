//! Authentication and TLS for the NATS store against a real nats-server: a token (from
//! `RELAY_NATS_TOKEN` and in the URL) and TLS with a private CA (`RELAY_NATS_CA`). The
//! certificates are made here with the `openssl` command line (`.ci/run` installs it).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{DEADLINE, Home, Run, run};

/// Kills the nats-server it started.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts nats-server with `args`, waits until it accepts connections on `port`.
fn server(args: &[&str], port: u16, store: &Path) -> Server {
    let bin = relay::natsd::server_binary().unwrap();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .arg("-sd")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server(child);
    let end = Instant::now() + Duration::from_secs(10);
    // Ready when a connection gets the server's INFO line: a bare TCP accept can come
    // before the server serves clients (CI saw "connection reset by peer" just after).
    while !greets(port) {
        assert!(Instant::now() < end, "nats-server did not greet on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

/// Whether a client connecting to `port` is sent the server's `INFO` line.
fn greets(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = [0u8; 4];
    c.read_exact(&mut head).is_ok() && &head == b"INFO"
}

fn relay(h: &Home, env: &[(&str, String)], args: &[&str]) -> Run {
    let mut c = h.cmd(args);
    c.envs(env.iter().map(|(k, v)| (k, v)));
    run(c, None, DEADLINE)
}

/// Register, send, read back: the store works through this connection.
fn round_trip(h: &Home, env: &[(&str, String)]) {
    for name in ["alice", "bob"] {
        let r = relay(h, env, &["register", name]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    }
    let r = relay(h, env, &["send", "bob", "--as", "alice", "over auth"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = relay(h, env, &["inbox", "--as", "bob", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("over auth"), "{}", r.stdout);
}

#[test]
fn a_token_from_the_environment_or_the_url() {
    if relay::natsd::skip_or_fail("a_token_from_the_environment_or_the_url") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _s = server(&["--auth", "t0ken-s3cret"], port, dir.path());
    let url = format!("nats://127.0.0.1:{port}");
    let h = Home::new();
    round_trip(
        &h,
        &[
            ("RELAY_STORE", url.clone()),
            ("RELAY_NATS_TOKEN", "t0ken-s3cret".into()),
        ],
    );
    let in_url = format!("nats://t0ken-s3cret@127.0.0.1:{port}");
    let r = relay(&h, &[("RELAY_STORE", in_url)], &["roster", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Wrong or no token: exit 1, a message naming the server, never the token.
    for env in [
        vec![("RELAY_STORE", url.clone())],
        vec![
            ("RELAY_STORE", url.clone()),
            ("RELAY_NATS_TOKEN", "wr0ng".to_string()),
        ],
    ] {
        let r = relay(&h, &env, &["roster", "--json"]);
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains(&format!("127.0.0.1:{port}")),
            "{}",
            r.stdout
        );
        assert!(!r.stdout.contains("wr0ng") && !r.stderr.contains("wr0ng"));
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (install it: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_with_a_private_ca() {
    if relay::natsd::skip_or_fail("tls_with_a_private_ca") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=relay test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    let port = free_port();
    let (cert, key) = (d.join("server.pem"), d.join("server.key"));
    let _s = server(
        &[
            "--tls",
            "--tlscert",
            cert.to_str().unwrap(),
            "--tlskey",
            key.to_str().unwrap(),
        ],
        port,
        &d.join("store"),
    );
    let h = Home::new();
    let ca = d.join("ca.pem").to_string_lossy().into_owned();
    round_trip(
        &h,
        &[
            ("RELAY_STORE", format!("tls://127.0.0.1:{port}")),
            ("RELAY_NATS_CA", ca.clone()),
        ],
    );
    round_trip(
        &Home::new(),
        &[
            ("RELAY_STORE", format!("nats://127.0.0.1:{port}")),
            ("RELAY_NATS_CA", ca),
        ],
    );
    // Without the CA the server's certificate is not trusted: a clear failure, exit 1.
    let r = relay(
        &h,
        &[("RELAY_STORE", format!("tls://127.0.0.1:{port}"))],
        &["roster", "--json"],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.stdout
    );
}
