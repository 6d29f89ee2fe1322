//! Byte streams between two live endpoints over one connection (DESIGN.md §8).
//!
//! A [`Session`] takes a handshaken [`Connection`] and runs a demultiplexing thread on its
//! reading side. The opener of a stream is its writer. With `SHM_STREAMS` negotiated and a
//! free slot on both sides, the opener creates a memfd ring and two eventfds (data ready,
//! space ready) and passes them with `StreamOpen`; bytes then never touch the socket.
//! Otherwise the same stream runs over `StreamData` frames with a credit window the size of
//! the ring, so backpressure, end of stream and errors behave the same: the caller's code
//! does not change.
//!
//! Socket-path frames (the wire catalogue is unchanged):
//! - writer → reader: `StreamData {offset, data}`, offsets contiguous from 0;
//! - reader → writer: `StreamData {offset: bytes consumed, data: []}` — a credit update;
//! - writer → reader: `StreamClose {total}` — end of stream after `total` bytes;
//! - reader → writer: `StreamClose {total: bytes read}` — the reader is done or gone.
//!
//! Stream ids: the dialer's are odd, the listener's even, so both may open at once.
//!
//! Memory on the socket path is bounded by the window: a writer that sends more than the
//! reader has credited (bytes buffered and unread would exceed the window it announced)
//! breaks the protocol, and the connection is closed at once. The windows of all socket-path
//! streams open on one session together may not exceed [`MAX_SOCKET_WINDOWS`], nor their
//! number [`MAX_INCOMING`]; a stream that would is rejected.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use relay_ring::{Read, Ring};

use super::Error;
use super::memory::{self, Doorbell, Mapping};
use crate::transport::Connection;
use crate::wire::Msg;
use crate::wire::catalogue::{
    ErrorMsg, Pong, SHM_STREAMS, ShutdownAck, StreamAccept, StreamClose, StreamData, StreamOpen,
    StreamReject,
};

/// Ring capacity for new streams, bytes (1 MiB); also the socket path's credit window.
pub const DEFAULT_CAPACITY: u32 = 1 << 20;
/// Shared-memory streams one connection may hold at once; more run over the socket.
pub const DEFAULT_SLOTS: usize = 64;
/// How long a blocked reader or writer polls before parking on the eventfd.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);
/// `ErrorMsg.code` for a frame naming a stream that is not open.
pub const ERROR_INVALID_HANDLE: u16 = 2;
/// `ErrorMsg.code` for a protocol violation that closes the connection (e.g. stream data
/// past the credit window).
pub const ERROR_PROTOCOL: u16 = 3;
/// Largest `StreamData` payload the socket path sends, bytes.
const MAX_CHUNK: usize = 256 * 1024;
/// How long `open` waits for the peer's StreamAccept.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Parked waits wake at least this often to notice a dead connection.
const PARK_SLICE: Duration = Duration::from_millis(100);
/// Sum of the credit windows of the socket-path streams a session reads at once, bytes
/// (64 MiB: 64 streams of the default window). Bounds what a peer can make us buffer.
pub const MAX_SOCKET_WINDOWS: u64 = 64 << 20;
/// Streams a session reads at once (each holds an eventfd and a buffer); more are rejected.
pub const MAX_INCOMING: usize = 256;

/// Options for a [`Session`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Shared-memory slots (default 64); 0 forces the socket path.
    pub slots: usize,
    /// Ring capacity and socket credit window, bytes (power of two, default 1 MiB).
    pub capacity: u32,
    /// Spin before parking (default 50 µs; zero parks at once).
    pub spin: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            slots: DEFAULT_SLOTS,
            capacity: DEFAULT_CAPACITY,
            spin: DEFAULT_SPIN,
        }
    }
}

/// Streams over one connection. Cheap to clone. The connection is shut down when the last
/// clone and the last stream half drop (or when the peer closes it).
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    guard: Arc<CloseOnDrop>,
}

/// Shuts the socket down when the last user-facing handle (session or stream half) drops;
/// the demultiplexer then sees end of stream and exits, and so does the peer's.
struct CloseOnDrop(std::os::unix::net::UnixStream);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

struct Shared {
    out: Mutex<Connection>,
    /// Frames the demultiplexer sends (accepts, rejects, pongs, errors). A separate thread
    /// writes them, so the demultiplexer never blocks on a socket write while a stream
    /// writer holds `out` — which, with both peers doing the same, would stop both.
    control: Mutex<std::sync::mpsc::Sender<Msg>>,
    state: Mutex<State>,
    cond: Condvar,
    shm: bool,
    opts: Options,
    chunk: usize,
}

#[derive(Default)]
struct State {
    next_id: u32,
    streams: HashMap<u32, Slot>,
    incoming: VecDeque<u32>,
    answers: HashMap<u32, Result<bool, String>>,
    shm_in_use: usize,
    /// Sum of the windows of incoming socket-path streams open now, bytes.
    socket_windows: u64,
    /// Why the connection ended, once it has.
    gone: Option<String>,
}

/// What the session keeps per stream: enough to route frames and to tell a shared-memory
/// half that its peer is gone.
enum Slot {
    /// We read it.
    In {
        shm: Option<ShmEnds>,
        /// Rung whenever something arrives for this stream or the connection ends (async
        /// readers poll it; socket path).
        bell: Arc<Doorbell>,
        buf: VecDeque<u8>,
        received: u64,
        total: Option<u64>,
        broken: Option<String>,
        /// The opener's window (its ring capacity): credit is returned per quarter of it.
        window: u64,
        /// A reader half exists (or existed): a second claim is `InvalidHandle`.
        claimed: bool,
    },
    /// We write it.
    Out {
        shm: Option<ShmEnds>,
        /// Rung on credit, on the reader's close and when the connection ends.
        bell: Arc<Doorbell>,
        consumed: u64,
        reader_done: bool,
    },
}

impl Slot {
    fn bell(&self) -> &Arc<Doorbell> {
        match self {
            Slot::In { bell, .. } | Slot::Out { bell, .. } => bell,
        }
    }
}

#[derive(Clone)]
struct ShmEnds {
    ring: Ring,
    data: Arc<Doorbell>,
    space: Arc<Doorbell>,
}

impl Session {
    /// Starts streams on a handshaken connection. `capabilities` are the negotiated bits
    /// (HelloAck); `dialer` says which side we are (it picks the stream id parity).
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be duplicated for the writing half.
    pub fn new(
        conn: Connection,
        capabilities: u32,
        dialer: bool,
        opts: Options,
    ) -> Result<Session, Error> {
        let mut out = Connection::new(conn.stream().try_clone()?);
        let max_frame = conn.max_frame();
        out.set_max_frame(max_frame);
        let (control_tx, control_rx) = std::sync::mpsc::channel::<Msg>();
        let shared = Arc::new(Shared {
            out: Mutex::new(out),
            control: Mutex::new(control_tx),
            state: Mutex::new(State {
                next_id: if dialer { 1 } else { 2 },
                ..State::default()
            }),
            cond: Condvar::new(),
            shm: capabilities & SHM_STREAMS != 0 && opts.slots > 0,
            opts,
            chunk: (max_frame as usize).saturating_sub(64).clamp(1, MAX_CHUNK),
        });
        let guard = Arc::new(CloseOnDrop(conn.stream().try_clone()?));
        let demux = shared.clone();
        std::thread::Builder::new()
            .name("relay-streams".into())
            .spawn(move || demux.run(conn))?;
        // Ends when the demultiplexer (the only sender) is gone.
        let sender = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("relay-streams-control".into())
            .spawn(move || {
                for msg in control_rx {
                    let Some(s) = sender.upgrade() else { return };
                    if s.send(msg).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Session { shared, guard })
    }

    /// Opens a stream to the peer, which becomes its reader. Shared memory when both sides
    /// can and have a free slot, else the socket path.
    ///
    /// # Errors
    /// [`Error::Rejected`] with the peer's reason; [`Error::Closed`] when the connection
    /// ended; [`Error::Io`] for memfd/eventfd/socket failures; [`Error::Timeout`] after 10 s
    /// without an answer.
    pub fn open(&self) -> Result<StreamWriter, Error> {
        let s = &self.shared;
        let cap = s.opts.capacity;
        let bell = Arc::new(Doorbell::new()?);
        let (id, want_shm) = {
            let mut st = s.lock();
            if let Some(why) = &st.gone {
                return Err(Error::Closed(why.clone()));
            }
            let id = st.next_id;
            st.next_id = st.next_id.wrapping_add(2);
            let want = s.shm && st.shm_in_use < s.opts.slots;
            if want {
                st.shm_in_use += 1;
            }
            st.streams.insert(
                id,
                Slot::Out {
                    shm: None,
                    bell: bell.clone(),
                    consumed: 0,
                    reader_done: false,
                },
            );
            (id, want)
        };
        let ends = if want_shm {
            match self.offer_shm(id, cap) {
                Ok(e) => Some(e),
                Err(e) => {
                    self.forget(id, true);
                    return Err(e);
                }
            }
        } else {
            let open = StreamOpen {
                stream_id: id,
                capacity: cap,
                shm: false,
            };
            if let Err(e) = s.send(Msg::StreamOpen(open)) {
                self.forget(id, false);
                return Err(e);
            }
            None
        };
        let answer = {
            let deadline = Instant::now() + OPEN_TIMEOUT;
            let mut st = s.lock();
            loop {
                if let Some(a) = st.answers.remove(&id) {
                    break Ok(a);
                }
                if let Some(why) = &st.gone {
                    break Err(Error::Closed(why.clone()));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Err(Error::Timeout("the peer did not answer StreamOpen".into()));
                }
                st = s.wait(st, left);
            }
        };
        let on_shm = match answer {
            Ok(Ok(shm)) => shm && ends.is_some(),
            Ok(Err(reason)) => {
                self.forget(id, want_shm);
                return Err(Error::Rejected(reason));
            }
            Err(e) => {
                self.forget(id, want_shm);
                // A late accept must not leave the peer's reader waiting for bytes.
                let _ = s.send(Msg::StreamClose(StreamClose {
                    stream_id: id,
                    total: 0,
                }));
                return Err(e);
            }
        };
        let path = match (on_shm, ends) {
            (true, Some(e)) => {
                let mut st = s.lock();
                if st.gone.is_some() {
                    // The demultiplexer already marked the halves it knew; this one too.
                    e.ring.mark(relay_ring::READER_GONE);
                }
                if let Some(Slot::Out { shm, .. }) = st.streams.get_mut(&id) {
                    *shm = Some(e.clone());
                }
                drop(st);
                OutPath::Shm {
                    // SAFETY: we created this ring for this stream and make its only writer
                    // here; the peer only reads it.
                    w: unsafe { e.ring.clone().writer() },
                    ends: e,
                }
            }
            (_, _) => {
                if want_shm {
                    // The peer had no slot: the ring we made is dropped, the slot freed.
                    s.lock().shm_in_use -= 1;
                }
                OutPath::Socket
            }
        };
        Ok(StreamWriter {
            _guard: self.guard.clone(),
            bell,
            id,
            session: s.clone(),
            path,
            written: 0,
            finished: false,
        })
    }

    fn offer_shm(&self, id: u32, cap: u32) -> Result<ShmEnds, Error> {
        let len = relay_ring::region_len(u64::from(cap));
        let (memfd, map) = memory::create("relay-stream", len)?;
        let map = Arc::new(map);
        // SAFETY: a fresh page-aligned mapping of `len` bytes, kept alive by the Arc, and not
        // shared with the peer until the StreamOpen below.
        let ring = unsafe { Ring::init(map.ptr(), map.len(), u64::from(cap), map.clone()) }
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let (data, space) = (Arc::new(Doorbell::new()?), Arc::new(Doorbell::new()?));
        let open = StreamOpen {
            stream_id: id,
            capacity: cap,
            shm: true,
        };
        let fds = [memfd.as_fd(), data.fd().as_fd(), space.fd().as_fd()];
        self.shared
            .out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send_with_fds(Msg::StreamOpen(open), &fds)?;
        Ok(ShmEnds { ring, data, space })
    }

    fn forget(&self, id: u32, shm_slot: bool) {
        let mut st = self.shared.lock();
        st.streams.remove(&id);
        if shm_slot {
            st.shm_in_use -= 1;
        }
    }

    /// Waits at most `timeout` for the peer to open a stream; we are its reader.
    ///
    /// # Errors
    /// [`Error::Closed`] when the connection ended; [`Error::Timeout`].
    pub fn accept(&self, timeout: Duration) -> Result<StreamReader, Error> {
        let s = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut st = s.lock();
        loop {
            if let Some(id) = st.incoming.pop_front() {
                drop(st);
                return self.reader(id);
            }
            if let Some(why) = &st.gone {
                return Err(Error::Closed(why.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout("no stream was opened".into()));
            }
            st = s.wait(st, left);
        }
    }

    /// The reading half of incoming stream `id` (for callers that learn ids another way).
    ///
    /// # Errors
    /// [`Error::InvalidHandle`] when no incoming stream has that id.
    pub fn reader(&self, id: u32) -> Result<StreamReader, Error> {
        let mut st = self.shared.lock();
        st.incoming.retain(|i| *i != id);
        let (path, bell) = match st.streams.get_mut(&id) {
            Some(Slot::In {
                shm: Some(e),
                bell,
                claimed: claimed @ false,
                ..
            }) => {
                *claimed = true;
                (
                    InPath::Shm {
                        // SAFETY: `claimed` makes this the stream's only reader on our side;
                        // the peer only writes it.
                        r: unsafe { e.ring.clone().reader() },
                        ends: e.clone(),
                    },
                    bell.clone(),
                )
            }
            Some(Slot::In {
                shm: None,
                bell,
                claimed: claimed @ false,
                ..
            }) => {
                *claimed = true;
                (InPath::Socket, bell.clone())
            }
            _ => return Err(Error::InvalidHandle(id)),
        };
        Ok(StreamReader {
            _guard: self.guard.clone(),
            bell,
            id,
            session: self.shared.clone(),
            path,
            read: 0,
            credited: 0,
            window: u64::from(self.shared.opts.capacity),
            eof: false,
            told_writer: false,
        })
    }

    /// Shared-memory streams open now on this side.
    pub fn shm_in_use(&self) -> usize {
        self.shared.lock().shm_in_use
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, msg: Msg) -> Result<(), Error> {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_frame(msg)
            .map_err(Error::from)
    }

    /// Queues a frame for the control thread (never blocks).
    fn control_send(&self, msg: Msg) -> Result<(), Error> {
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(msg)
            .map_err(|_| Error::Closed("the session is shutting down".into()))
    }

    /// Best effort, for a connection about to close: writes `msg` if no stream writer holds
    /// the socket now, waiting at most 100 ms for the peer to take it.
    fn tell_peer(&self, msg: Msg) {
        // A writer holding the socket (the control thread sending a credit) lets go within
        // one frame: try for up to 100 ms rather than once, or the reason is often lost.
        let until = std::time::Instant::now() + Duration::from_millis(100);
        loop {
            match self.out.try_lock() {
                Ok(mut out) => {
                    let _ = out
                        .stream()
                        .set_write_timeout(Some(Duration::from_millis(100)));
                    let _ = out.write_frame(msg);
                    return;
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    let _ = p.into_inner().write_frame(msg);
                    return;
                }
                Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
        }
    }

    /// Waits on the session's condition (a frame was routed) for at most `t`.
    fn wait<'a>(&'a self, st: MutexGuard<'a, State>, t: Duration) -> MutexGuard<'a, State> {
        self.cond
            .wait_timeout(st, t)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }

    /// The demultiplexer: routes every frame the peer sends until the connection ends.
    fn run(self: Arc<Shared>, mut conn: Connection) {
        let why = loop {
            match conn.read_frame() {
                Ok(Some(f)) => {
                    if let Err(e) = self.route(&mut conn, f.msg) {
                        break e.to_string();
                    }
                    if !conn.has_buffered() {
                        // Descriptors that came with a frame that takes none: close them
                        // rather than let them pile up or pair with a later StreamOpen.
                        drop(conn.take_fds());
                    }
                }
                Ok(None) => break "the peer closed the connection".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        tracing::debug!("stream session ended: {why}");
        // Nothing more is read, so nothing more may be sent to us: close both directions
        // (the session's other handles share the socket), so a peer that broke the
        // protocol sees the close at once.
        let _ = conn.stream().shutdown(std::net::Shutdown::Both);
        let mut st = self.lock();
        st.gone = Some(why);
        // Wake every shared-memory half: its peer cannot make progress any more.
        for slot in st.streams.values() {
            slot.bell().ring();
            match slot {
                Slot::In { shm: Some(e), .. } => {
                    e.ring.mark(relay_ring::WRITER_GONE);
                    e.data.ring();
                }
                Slot::Out { shm: Some(e), .. } => {
                    e.ring.mark(relay_ring::READER_GONE);
                    e.space.ring();
                }
                _ => {}
            }
        }
        drop(st);
        self.cond.notify_all();
    }

    fn route(&self, conn: &mut Connection, msg: Msg) -> Result<(), Error> {
        match msg {
            Msg::StreamOpen(o) => self.on_open(conn, o)?,
            Msg::StreamAccept(a) => {
                let mut st = self.lock();
                if matches!(st.streams.get(&a.stream_id), Some(Slot::Out { .. })) {
                    st.answers.insert(a.stream_id, Ok(a.shm));
                }
            }
            Msg::StreamReject(r) => {
                let mut st = self.lock();
                if matches!(st.streams.get(&r.stream_id), Some(Slot::Out { .. })) {
                    st.answers.insert(r.stream_id, Err(r.reason));
                }
            }
            Msg::StreamData(d) => {
                let mut st = self.lock();
                match st.streams.get_mut(&d.stream_id) {
                    Some(Slot::In {
                        buf,
                        received,
                        broken,
                        bell,
                        total,
                        window,
                        shm: None,
                        ..
                    }) => {
                        bell.ring();
                        let unread = buf.len() as u64;
                        if unread + d.data.len() as u64 > *window {
                            let why = format!(
                                "stream {}: the writer sent {} bytes with {unread} unread, past \
                                 its {}-byte credit window (protocol error; the connection was \
                                 closed)",
                                d.stream_id,
                                d.data.len(),
                                window
                            );
                            *broken = Some(why.clone());
                            // Nothing buffered will be read now: give the memory back.
                            *buf = VecDeque::new();
                            drop(st);
                            self.cond.notify_all();
                            self.tell_peer(Msg::Error(ErrorMsg {
                                code: ERROR_PROTOCOL,
                                message: why.clone(),
                            }));
                            return Err(Error::Protocol(why));
                        }
                        if d.offset != *received {
                            *broken = Some(format!(
                                "stream data at offset {} where {} was expected",
                                d.offset, received
                            ));
                        } else if total.is_some() {
                            *broken = Some("stream data after the writer's close".into());
                        } else {
                            *received += d.data.len() as u64;
                            buf.extend(d.data);
                        }
                    }
                    Some(Slot::Out { consumed, bell, .. }) if d.data.is_empty() => {
                        *consumed = (*consumed).max(d.offset);
                        bell.ring();
                    }
                    // A credit for a stream we finished and dropped: nothing to do.
                    None if d.data.is_empty() => {}
                    _ => {
                        drop(st);
                        self.control_send(Msg::Error(ErrorMsg {
                            code: ERROR_INVALID_HANDLE,
                            message: format!(
                                "stream {} is not open for data on this connection",
                                d.stream_id
                            ),
                        }))?;
                    }
                }
            }
            Msg::StreamClose(c) => {
                let mut st = self.lock();
                match st.streams.get_mut(&c.stream_id) {
                    Some(Slot::In {
                        total,
                        bell,
                        received,
                        shm,
                        broken,
                        ..
                    }) => {
                        // On the socket path every byte came before the close.
                        if shm.is_none() && c.total != *received {
                            *broken = Some(format!(
                                "the writer closed at {} bytes but {} arrived",
                                c.total, received
                            ));
                        }
                        *total = Some(c.total);
                        bell.ring();
                    }
                    Some(Slot::Out {
                        reader_done, bell, ..
                    }) => {
                        *reader_done = true;
                        bell.ring();
                    }
                    // A close crossing ours: the stream is already gone here.
                    None => {}
                }
            }
            Msg::Ping(p) => self.control_send(Msg::Pong(Pong { nonce: p.nonce }))?,
            Msg::Shutdown(_) => {
                let _ = self.control_send(Msg::ShutdownAck(ShutdownAck {}));
                return Err(Error::Closed("the peer shut the connection down".into()));
            }
            Msg::Error(e) => tracing::warn!(code = e.code, "peer reported: {}", e.message),
            // A sender that found this endpoint live: refused, so the message stays in the
            // mailbox (dispatch falls back) instead of ending the session.
            Msg::Deliver(d) => {
                self.control_send(Msg::DeliverAck(crate::wire::catalogue::DeliverAck {
                    message_id: d.message_id,
                    accepted: false,
                    reason: Some(
                        "this connection carries streams; the message stays in the mailbox".into(),
                    ),
                }))?
            }
            Msg::Pong(_) | Msg::ShutdownAck(_) => {}
            other => {
                return Err(Error::Protocol(format!(
                    "{} is not part of a stream session",
                    other.name()
                )));
            }
        }
        self.cond.notify_all();
        Ok(())
    }

    fn on_open(&self, conn: &mut Connection, o: StreamOpen) -> Result<(), Error> {
        let id = o.stream_id;
        // Descriptors travel with the first byte of their frame, so whatever is queued now
        // came with this StreamOpen: take it all, and close what it does not use.
        let fds = conn.take_fds();
        let fds = (o.shm && fds.len() == 3).then_some(fds);
        let mut st = self.lock();
        if st.streams.contains_key(&id) {
            drop(st);
            return self.control_send(Msg::StreamReject(StreamReject {
                stream_id: id,
                reason: format!("stream id {id} is already open"),
            }));
        }
        let incoming = st
            .streams
            .values()
            .filter(|s| matches!(s, Slot::In { .. }))
            .count();
        if incoming >= MAX_INCOMING {
            drop(st);
            return self.control_send(Msg::StreamReject(StreamReject {
                stream_id: id,
                reason: format!(
                    "this session already reads {MAX_INCOMING} streams (its limit); close one first"
                ),
            }));
        }
        let mut ends = None;
        if o.shm {
            let Some(fds) = fds else {
                drop(st);
                return self.control_send(Msg::StreamReject(StreamReject {
                    stream_id: id,
                    reason: "StreamOpen with shm=true must carry 3 descriptors (memfd, data \
                             eventfd, space eventfd)"
                        .into(),
                }));
            };
            if self.shm && st.shm_in_use < self.opts.slots {
                match attach(&fds, o.capacity) {
                    Ok(e) => {
                        st.shm_in_use += 1;
                        ends = Some(e);
                    }
                    Err(e) => {
                        drop(st);
                        return self.control_send(Msg::StreamReject(StreamReject {
                            stream_id: id,
                            reason: format!("cannot map the stream's shared memory: {e}"),
                        }));
                    }
                }
            }
        }
        let on_shm = ends.is_some();
        let window = u64::from(o.capacity);
        if !on_shm {
            let reason = if window == 0 {
                Some("capacity 0: a socket-path stream needs the writer's credit window".into())
            } else if st.socket_windows + window > MAX_SOCKET_WINDOWS {
                Some(format!(
                    "a {window}-byte window would take this session's socket-path windows \
                     to {} bytes, over its {MAX_SOCKET_WINDOWS}-byte limit",
                    st.socket_windows + window
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                drop(st);
                return self.control_send(Msg::StreamReject(StreamReject {
                    stream_id: id,
                    reason,
                }));
            }
            st.socket_windows += window;
        }
        st.streams.insert(
            id,
            Slot::In {
                shm: ends,
                bell: Arc::new(Doorbell::new()?),
                buf: VecDeque::new(),
                received: 0,
                total: None,
                broken: None,
                window,
                claimed: false,
            },
        );
        st.incoming.push_back(id);
        drop(st);
        self.control_send(Msg::StreamAccept(StreamAccept {
            stream_id: id,
            shm: on_shm,
        }))
    }
}

fn attach(fds: &[std::os::fd::OwnedFd], capacity: u32) -> Result<ShmEnds, Error> {
    let [memfd, data, space] = fds else {
        return Err(Error::Protocol("expected 3 descriptors".into()));
    };
    let map: Arc<Mapping> = Arc::new(memory::map_received(
        memfd,
        relay_ring::region_len(u64::from(capacity)),
    )?);
    // SAFETY: the mapping is page aligned, covers at least region_len(capacity) bytes
    // (checked above, and sealed against shrinking), and is kept alive by the Arc.
    let ring = unsafe { Ring::attach(map.ptr(), map.len(), map.clone()) }
        .map_err(|e| Error::Protocol(e.to_string()))?;
    if ring.capacity() != u64::from(capacity) {
        return Err(Error::Protocol(format!(
            "ring capacity {} differs from the {capacity} announced",
            ring.capacity()
        )));
    }
    Ok(ShmEnds {
        ring,
        data: Arc::new(Doorbell::from_fd(data.try_clone()?)?),
        space: Arc::new(Doorbell::from_fd(space.try_clone()?)?),
    })
}

enum OutPath {
    Shm {
        w: relay_ring::Writer,
        ends: ShmEnds,
    },
    Socket,
}

/// The writing half of a stream. Dropping it finishes the stream (the reader sees end of
/// stream after the drain); [`StreamWriter::finish`] does the same and reports errors.
pub struct StreamWriter {
    _guard: Arc<CloseOnDrop>,
    bell: Arc<Doorbell>,
    id: u32,
    session: Arc<Shared>,
    path: OutPath,
    written: u64,
    finished: bool,
}

impl StreamWriter {
    /// The stream id on this connection.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// True when the bytes go through shared memory, false on the socket path.
    pub fn is_shm(&self) -> bool {
        matches!(self.path, OutPath::Shm { .. })
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The eventfd an async writer polls for space, and whether it may park now (see
    /// [`StreamReader::arm`]). `None`: space appeared meanwhile, write again.
    pub(crate) fn arm(&mut self) -> Option<Arc<Doorbell>> {
        match &mut self.path {
            OutPath::Shm { w, ends } => w.park().then(|| ends.space.clone()),
            OutPath::Socket => Some(self.bell.clone()),
        }
    }

    /// Clears the parked flag after a wake-up.
    pub(crate) fn disarm(&mut self) {
        if let OutPath::Shm { w, .. } = &self.path {
            w.unpark();
        }
    }

    /// Ends the stream without waiting (for async shutdown).
    ///
    /// # Errors
    /// As [`StreamWriter::finish`].
    pub(crate) fn end_now(&mut self) -> Result<(), Error> {
        self.end()
    }

    /// Non-blocking write: the count accepted; `Ok(0)` for a non-empty `buf` is
    /// backpressure (the ring or credit window is full), never an error.
    ///
    /// # Errors
    /// [`Error::Closed`] once the reader is gone or the connection ended;
    /// [`Error::Corrupt`] on impossible ring cursors.
    pub fn try_write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if self.finished {
            return Err(Error::Closed("the stream was finished".into()));
        }
        let n = match &mut self.path {
            OutPath::Shm { w, ends } => {
                let n = w.write(buf).map_err(Error::from)?;
                if n > 0 && w.reader_wants_doorbell() {
                    ends.data.ring();
                }
                n
            }
            OutPath::Socket => {
                let s = &self.session;
                let st = s.lock();
                let consumed = match st.streams.get(&self.id) {
                    Some(Slot::Out {
                        reader_done: false,
                        consumed,
                        ..
                    }) => *consumed,
                    _ => return Err(Error::Closed("the reader closed the stream".into())),
                };
                if let Some(why) = &st.gone {
                    return Err(Error::Closed(why.clone()));
                }
                drop(st);
                let window = u64::from(s.opts.capacity);
                let Some(in_flight) = self.written.checked_sub(consumed) else {
                    return Err(Error::Protocol(format!(
                        "the reader credited {consumed} bytes, more than the {} written",
                        self.written
                    )));
                };
                let credit = window.saturating_sub(in_flight);
                let n = (credit as usize).min(buf.len()).min(s.chunk);
                if n > 0 {
                    s.send(Msg::StreamData(StreamData {
                        stream_id: self.id,
                        offset: self.written,
                        data: buf[..n].to_vec(),
                    }))?;
                }
                n
            }
        };
        self.written += n as u64;
        Ok(n)
    }

    /// Blocking write: waits (spin, then park) until at least one byte is accepted.
    ///
    /// # Errors
    /// As [`StreamWriter::try_write`].
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let spin_until = Instant::now() + self.session.opts.spin;
        loop {
            let n = self.try_write(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            // Socket path: the bell is rung on every credit and close for this stream; a
            // stale ring only loops.
            if let Some(bell) = self.arm() {
                bell.wait(PARK_SLICE);
                self.disarm();
            }
        }
    }

    /// Writes all of `buf`, blocking as needed.
    ///
    /// # Errors
    /// As [`StreamWriter::try_write`].
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Ends the stream: the reader sees end of stream once it has read every byte.
    ///
    /// # Errors
    /// [`Error::Closed`] when the connection ended (the reader may not get the end).
    pub fn finish(mut self) -> Result<(), Error> {
        self.end()
    }

    /// Ends the stream and waits at most `timeout` until the reader has read everything
    /// and closed its half.
    ///
    /// # Errors
    /// [`Error::Closed`] when the connection ended first; [`Error::Timeout`].
    pub fn finish_and_wait(mut self, timeout: Duration) -> Result<(), Error> {
        self.end()?;
        let s = self.session.clone();
        let deadline = Instant::now() + timeout;
        let mut st = s.lock();
        loop {
            match st.streams.get(&self.id) {
                Some(Slot::Out {
                    reader_done: true, ..
                })
                | None => return Ok(()),
                _ => {}
            }
            if let Some(why) = &st.gone {
                return Err(Error::Closed(why.clone()));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(
                    "the reader did not finish the stream".into(),
                ));
            }
            st = s.wait(st, PARK_SLICE);
        }
    }

    fn end(&mut self) -> Result<(), Error> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if let OutPath::Shm { w, ends } = &self.path {
            w.finish();
            // Always ring: a reader between its check and its park sees the flag or this.
            ends.data.ring();
        }
        self.session.send(Msg::StreamClose(StreamClose {
            stream_id: self.id,
            total: self.written,
        }))
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let _ = self.end();
        let mut st = self.session.lock();
        if let Some(Slot::Out { shm, .. }) = st.streams.remove(&self.id)
            && shm.is_some()
        {
            st.shm_in_use -= 1;
        }
    }
}

impl std::io::Write for StreamWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        StreamWriter::write(self, buf).map_err(std::io::Error::from)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum InPath {
    Shm {
        r: relay_ring::Reader,
        ends: ShmEnds,
    },
    Socket,
}

/// The reading half of a stream. Dropping it tells the writer (its writes then fail with
/// `Closed`).
pub struct StreamReader {
    _guard: Arc<CloseOnDrop>,
    bell: Arc<Doorbell>,
    id: u32,
    session: Arc<Shared>,
    path: InPath,
    read: u64,
    credited: u64,
    /// The writer's window (socket path), learned from its StreamOpen.
    window: u64,
    /// End of stream was returned once; it is returned ever after.
    eof: bool,
    /// StreamClose was sent: at end of stream (so `finish_and_wait` returns as soon as the
    /// last byte is read) or when the reader drops.
    told_writer: bool,
}

impl StreamReader {
    /// The stream id on this connection.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// True when the bytes come through shared memory, false on the socket path.
    pub fn is_shm(&self) -> bool {
        matches!(self.path, InPath::Shm { .. })
    }

    /// Non-blocking read: `Data(n)`, `Pending` (open and empty, or `buf` empty), or `Eof`
    /// (the writer finished and everything was read; sticky).
    ///
    /// # Errors
    /// [`Error::WriterGone`] when the writer's connection ended before it finished (the
    /// bytes before that were read); [`Error::Corrupt`] on impossible cursors or
    /// out-of-order socket data.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<Read, Error> {
        if self.eof {
            return Ok(Read::Eof);
        }
        let got = match &mut self.path {
            InPath::Shm { r, ends } => {
                let got = r.read(buf).map_err(Error::from)?;
                if matches!(got, Read::Data(_)) && r.writer_wants_doorbell() {
                    ends.space.ring();
                }
                got
            }
            InPath::Socket => {
                let mut st = self.session.lock();
                let gone = st.gone.is_some();
                let Some(Slot::In {
                    buf: q,
                    total,
                    broken,
                    window,
                    ..
                }) = st.streams.get_mut(&self.id)
                else {
                    return Err(Error::InvalidHandle(self.id));
                };
                self.window = *window;
                if let Some(why) = broken {
                    return Err(Error::Corrupt(why.clone()));
                }
                if buf.is_empty() {
                    // As on the shm path: an empty buffer is Pending until Eof was seen.
                    Read::Pending
                } else if !q.is_empty() {
                    let n = q.len().min(buf.len());
                    let (front, back) = q.as_slices();
                    let k = front.len().min(n);
                    buf[..k].copy_from_slice(&front[..k]);
                    buf[k..n].copy_from_slice(&back[..n - k]);
                    q.drain(..n);
                    Read::Data(n)
                } else if q.is_empty() && *total == Some(self.read) {
                    Read::Eof
                } else if q.is_empty() && total.is_none() && gone {
                    return Err(Error::WriterGone);
                } else {
                    Read::Pending
                }
            }
        };
        if got == Read::Eof {
            self.eof = true;
            self.tell_writer();
        }
        if let Read::Data(n) = got {
            self.read += n as u64;
            if matches!(self.path, InPath::Socket)
                && self.read - self.credited >= (self.window / 4).max(1)
            {
                self.credited = self.read;
                // The bytes are already the caller's: a credit that cannot be sent (the
                // writer finished and hung up) must not turn this read into an error.
                let _ = self.session.send(Msg::StreamData(StreamData {
                    stream_id: self.id,
                    offset: self.read,
                    data: Vec::new(),
                }));
            }
        }
        Ok(got)
    }

    /// Blocking read: waits (spin, then park) for data; `Ok(0)` at end of stream.
    ///
    /// # Errors
    /// As [`StreamReader::try_read`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let spin_until = Instant::now() + self.session.opts.spin;
        loop {
            match self.try_read(buf)? {
                Read::Data(n) => return Ok(n),
                Read::Eof => return Ok(0),
                Read::Pending => {}
            }
            if Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            if let Some(bell) = self.arm() {
                bell.wait(PARK_SLICE);
                self.disarm();
            }
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.read
    }

    /// The eventfd an async reader polls, and whether it may park now: on the shm path the
    /// writer's data doorbell (rung only while our parked flag is set, which this sets), on
    /// the socket path this stream's own bell (rung on every arrival). `None`: data or the
    /// end appeared meanwhile, read again instead of parking.
    pub(crate) fn arm(&mut self) -> Option<Arc<Doorbell>> {
        match &mut self.path {
            InPath::Shm { r, ends } => r.park().then(|| ends.data.clone()),
            InPath::Socket => Some(self.bell.clone()),
        }
    }

    /// Clears the parked flag after a wake-up.
    pub(crate) fn disarm(&mut self) {
        if let InPath::Shm { r, .. } = &self.path {
            r.unpark();
        }
    }

    /// Sends StreamClose once: the reader is done (at end of stream) or gone (dropped).
    fn tell_writer(&mut self) {
        if self.told_writer {
            return;
        }
        self.told_writer = true;
        let _ = self.session.send(Msg::StreamClose(StreamClose {
            stream_id: self.id,
            total: self.read,
        }));
    }

    fn close(&mut self) {
        if let InPath::Shm { r, ends } = &self.path {
            r.close();
            ends.space.ring();
        }
        self.tell_writer();
        let mut st = self.session.lock();
        match st.streams.remove(&self.id) {
            Some(Slot::In { shm: Some(_), .. }) => st.shm_in_use -= 1,
            Some(Slot::In {
                shm: None, window, ..
            }) => st.socket_windows -= window,
            _ => {}
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::io::Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        StreamReader::read(self, buf).map_err(std::io::Error::from)
    }
}
