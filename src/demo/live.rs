//! Part 4 of `relay demo`: the live path. A live endpoint (`relay listen`) receives over
//! its socket while a dormant one gets mail through its mailbox; then a supervisor kills
//! its child endpoint and measures how fast it notices and recovers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::route::{self, Decision, SendRequest};
use crate::store::{Endpoint, Registration, Store};
use crate::transport::{self, Local, supervise};

/// What part 4 showed.
#[derive(Debug, Default, Serialize)]
pub(crate) struct LiveOutcome {
    /// Sends that took the live route.
    pub live_sent: u32,
    /// Sends that took the mailbox route.
    pub mailbox_sent: u32,
    /// Live hand-over (send → acked receipt) p50, µs.
    pub live_send_p50_us: u64,
    /// Child SIGKILL → supervisor noticed, µs.
    pub supervise_detect_us: u64,
    /// Child SIGKILL → restarted, re-handshaken, echoed, µs.
    pub supervise_recover_us: u64,
}

const N: u32 = 20;

pub(crate) fn run(
    store: &dyn Store,
    home: &Path,
    say: &dyn Fn(String),
) -> anyhow::Result<LiveOutcome> {
    let mut o = LiveOutcome::default();
    let reg = |name: &str| -> anyhow::Result<Endpoint> {
        Ok(store
            .register(&Registration {
                name: Some(name.into()),
                ..Default::default()
            })?
            .endpoint)
    };
    let sender = reg("producer")?;
    let live = reg("live-worker")?;
    reg("dormant-worker")?;
    let runtime = transport::runtime_dir(home);
    let mut child = Command::new(std::env::current_exe()?)
        .args(["listen", "--as", "live-worker", "--json"])
        .env("RELAY_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start relay listen")?;
    let rx = crate::subprocess::stdout_lines(&mut child, crate::subprocess::text)?;
    let sock = transport::socket_path(&runtime, &live.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("relay listen did not come up");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut lat = hdrhistogram::Histogram::<u64>::new(3)?;
    for i in 0..N {
        for to in ["live-worker", "dormant-worker"] {
            let t = std::time::Instant::now();
            let sent = route::send(
                store,
                SendRequest {
                    runtime_dir: Some(runtime.clone()),
                    ..SendRequest::text(sender.clone(), to, format!("job {i}"))
                },
            )?;
            match sent.route {
                Decision::Live => {
                    o.live_sent += 1;
                    lat.record(t.elapsed().as_micros() as u64)?;
                }
                Decision::Mailbox => o.mailbox_sent += 1,
                _ => {}
            }
        }
    }
    let mut got = 0;
    while got < N {
        rx.recv_timeout(Duration::from_secs(30))
            .context("the live worker stopped printing")?;
        got += 1;
    }
    let _ = child.kill();
    let _ = child.wait();
    o.live_send_p50_us = lat.value_at_quantile(0.5);
    say(format!(
        "   {} sends to live-worker took the live route (send → acked receipt p50 {} µs); {} to dormant-worker waited in its mailbox",
        o.live_sent, o.live_send_p50_us, o.mailbox_sent
    ));

    let exe = std::env::current_exe()?;
    let me = Local::new("demo-supervisor");
    let mut s = supervise::Supervised::spawn(&exe, &["supervised-child"], &me)?;
    s.echo()?;
    let r = supervise::crash_and_recover(&mut s, &exe, &["supervised-child"], &me)?;
    s.kill();
    o.supervise_detect_us = r.detected_us;
    o.supervise_recover_us = r.recovered_us;
    say(format!(
        "   supervisor: child SIGKILLed → noticed in {} µs, restarted + handshake + echo in {} µs",
        r.detected_us, r.recovered_us
    ));
    Ok(o)
}
