//! The load of the scale tests, speaking the local socket protocol itself
//! (`docs/ipc-protocol.md`): the blocking client library takes a thread per call in
//! flight, and 10,000 threads would measure the scheduler, not the daemon. Here each app
//! connection has one reader thread, and any number of calls in flight.
//!
//! [`Callers`]: many app connections (one per "app") calling one function; a closed loop
//! holds a fixed number `L` of calls in flight, spread evenly over the `n` connections:
//! each reply on connection `i` sends the next call on connection `(i + L) mod n`. So the
//! spread holds: with `L` a multiple of `n` each connection keeps its own `L / n` calls;
//! with `L` a divisor of `n` each call keeps to its own residue class mod `L` and no two
//! ever share a connection (at 1 in flight the one call visits every connection in turn).
//! (Sending on the next connection instead let calls gather: a read that returns `k`
//! replies sends `k` calls together, and calls that travel together stay together, so how
//! many were batched per datagram — and the daemons' CPU per call — drifted from run to
//! run.) [`Servers`]: serving connections answering every
//! invocation with its arguments, or holding them all until released, so the test can see
//! exactly `L` calls in flight at once.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rpcd_client::ipc::{
    encode_frame, ClientMsg, DaemonMsg, FrameReader, Outcome, FRAME_MAX_DEFAULT, PROTOCOL_VERSION,
    PROTOCOL_VERSION_MIN,
};

/// How often a blocked reader looks at its stop flag.
const TICK: Duration = Duration::from_millis(20);

/// Every call's deadline: far beyond any level's run, so no call fails for time.
pub const CALL_DEADLINE_MS: u64 = 120_000;

/// One app connection after the handshake: the socket, its frame reader.
struct RawConn {
    stream: UnixStream,
    reader: FrameReader,
}

impl RawConn {
    /// Connects to `socket` and does the `hello` handshake as `name`.
    fn connect(socket: &Path, name: &str) -> RawConn {
        let stream = UnixStream::connect(socket).expect("connect to the daemon's socket");
        stream
            .set_read_timeout(Some(TICK))
            .expect("set a read timeout");
        let mut conn = RawConn {
            stream,
            reader: FrameReader::new(FRAME_MAX_DEFAULT),
        };
        conn.send(&ClientMsg::Hello {
            id: 0,
            version: PROTOCOL_VERSION,
            version_min: Some(PROTOCOL_VERSION_MIN),
            name: name.to_owned(),
        });
        for _ in 0..500 {
            match conn.next() {
                Some(DaemonMsg::HelloOk { .. }) => return conn,
                Some(other) => panic!("{name}: expected hello_ok, got {other:?}"),
                None => {}
            }
        }
        panic!("{name}: no hello_ok within 10 s");
    }

    fn send(&mut self, msg: &ClientMsg) {
        self.stream
            .write_all(&encode_frame(msg))
            .expect("write a frame to the daemon");
    }

    /// The next frame already read, if any: no read.
    fn buffered(&mut self) -> Option<DaemonMsg> {
        self.reader.next_frame().expect("a well-formed frame")
    }

    /// The next frame, or None after one tick without a whole frame.
    fn next(&mut self) -> Option<DaemonMsg> {
        if let Some(msg) = self.reader.next_frame().expect("a well-formed frame") {
            return Some(msg);
        }
        match self.reader.read_from(&mut self.stream) {
            // Closed (the daemon ended): nothing more comes; the test sees its calls
            // unanswered.
            Ok(0) => {
                std::thread::sleep(TICK);
                None
            }
            Ok(_) => self.reader.next_frame().expect("a well-formed frame"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) if e.kind() == ErrorKind::Interrupted => None,
            Err(e) => panic!("read from the daemon: {e}"),
        }
    }
}

/// What the callers counted.
#[derive(Debug, Default)]
struct Counts {
    /// Calls sent.
    sent: AtomicU64,
    /// Calls answered `call_ok` with their own arguments back.
    ok: AtomicU64,
    /// Calls answered otherwise (`failed`, or `call_ok` with other bytes); the first few
    /// kept in `errors`.
    failed: AtomicU64,
    /// Calls the loop may still send; each reply sends one while this is above zero.
    budget: AtomicU64,
}

/// Shared by the reader threads of [`Callers`].
struct CallShared {
    writers: Vec<Mutex<UnixStream>>,
    next_id: AtomicU64,
    counts: Counts,
    errors: Mutex<Vec<String>>,
    target: String,
    function: String,
    stop: AtomicBool,
    /// How far a reply's replacement call moves: `L mod n` of the level running.
    step: AtomicU64,
}

impl CallShared {
    /// Sends up to `n` calls (as the budget allows) in one write on connection `conn`.
    fn send_calls(&self, conn: usize, n: u64) {
        let Ok(before) =
            self.counts
                .budget
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    (b > 0).then_some(b.saturating_sub(n))
                })
        else {
            return;
        };
        let n = n.min(before);
        let mut out = Vec::new();
        for _ in 0..n {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(&encode_frame(&ClientMsg::Call {
                id,
                target: self.target.clone(),
                function: self.function.clone(),
                args: id.to_be_bytes().to_vec().into(),
                deadline_ms: Some(CALL_DEADLINE_MS),
                idempotent: false,
                trace: false,
            }));
        }
        self.counts.sent.fetch_add(n, Ordering::AcqRel);
        self.writers[conn % self.writers.len()]
            .lock()
            .expect("writer lock")
            .write_all(&out)
            .expect("write calls");
    }

    fn record_error(&self, what: String) {
        self.counts.failed.fetch_add(1, Ordering::AcqRel);
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < 10 {
            errors.push(what);
        }
    }
}

/// App connections calling `function` on `target` in a closed loop.
pub struct Callers {
    shared: Arc<CallShared>,
    readers: Vec<JoinHandle<()>>,
}

impl Callers {
    /// Opens one connection to `socket` per entry of `sockets` (an app each).
    pub fn connect(sockets: &[&Path], target: &str, function: &str) -> Callers {
        let conns: Vec<RawConn> = sockets
            .iter()
            .enumerate()
            .map(|(i, s)| RawConn::connect(s, &format!("scale-app-{i}")))
            .collect();
        let writers = conns
            .iter()
            .map(|c| Mutex::new(c.stream.try_clone().expect("clone a socket")))
            .collect();
        let shared = Arc::new(CallShared {
            writers,
            next_id: AtomicU64::new(1),
            counts: Counts::default(),
            errors: Mutex::new(Vec::new()),
            target: target.to_owned(),
            function: function.to_owned(),
            stop: AtomicBool::new(false),
            step: AtomicU64::new(0),
        });
        let readers = conns
            .into_iter()
            .enumerate()
            .map(|(i, conn)| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || read_replies(i, conn, &shared))
            })
            .collect();
        Callers { shared, readers }
    }

    /// Starts `in_flight` calls, and allows `total` calls in all (`total >= in_flight`):
    /// each reply sends the next until `total` were sent.
    pub fn start(&self, in_flight: u64, total: u64) {
        assert!(total >= in_flight);
        let conns = self.shared.writers.len() as u64;
        self.shared.step.store(in_flight % conns, Ordering::Release);
        self.shared.counts.budget.store(total, Ordering::Release);
        for conn in 0..conns.min(in_flight) {
            // Spread evenly: the first `in_flight % conns` connections take one more.
            let share = in_flight / conns + u64::from(conn < in_flight % conns);
            self.shared.send_calls(conn as usize, share);
        }
    }

    /// Sends no more calls (those in flight still complete).
    pub fn stop_sending(&self) {
        self.shared.counts.budget.store(0, Ordering::Release);
    }

    /// (sent, ok, failed) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.shared.counts;
        (
            c.sent.load(Ordering::Acquire),
            c.ok.load(Ordering::Acquire),
            c.failed.load(Ordering::Acquire),
        )
    }

    /// Calls sent and not answered yet.
    pub fn in_flight(&self) -> u64 {
        let (sent, ok, failed) = self.counts();
        sent - ok - failed
    }

    /// Waits until nothing may be sent and every call sent was answered, up to `timeout`;
    /// whether that happened.
    pub fn wait_done(&self, timeout: Duration) -> bool {
        rpcd_tests::wait_until(timeout, || {
            self.shared.counts.budget.load(Ordering::Acquire) == 0 && self.in_flight() == 0
        })
    }

    /// The first few failures, for a report.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().expect("errors lock").clone()
    }
}

impl Drop for Callers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// Caller connection `index`'s reader: counts the replies of each read and sends as many
/// calls, in one write, on the connection `step` further on (see the module's notes).
fn read_replies(index: usize, mut conn: RawConn, shared: &CallShared) {
    while !shared.stop.load(Ordering::Acquire) {
        let Some(first) = conn.next() else { continue };
        let mut replies = 0;
        let mut msg = Some(first);
        while let Some(m) = msg {
            match m {
                DaemonMsg::CallOk { id, data, .. } if data == id.to_be_bytes() => {
                    shared.counts.ok.fetch_add(1, Ordering::AcqRel);
                }
                other => shared.record_error(format!("{other:?}")),
            }
            replies += 1;
            msg = conn.buffered();
        }
        let step = shared.step.load(Ordering::Acquire) as usize;
        shared.send_calls(index + step, replies);
    }
}

/// Shared by the threads of [`Servers`].
#[derive(Default)]
struct ServeShared {
    /// While set, invocations are held, not answered.
    hold: AtomicBool,
    /// Invocations held now, over all serving connections.
    held: AtomicU64,
    /// Invocations answered.
    answered: AtomicU64,
    stop: AtomicBool,
}

/// Serving connections for `function`, answering each invocation with its arguments.
pub struct Servers {
    shared: Arc<ServeShared>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// `count` connections to `socket`, each registered for `function`.
    pub fn start(socket: &Path, function: &str, count: usize) -> Servers {
        let shared = Arc::new(ServeShared::default());
        let threads = (0..count)
            .map(|i| {
                let mut conn = RawConn::connect(socket, &format!("scale-server-{i}"));
                conn.send(&ClientMsg::Register {
                    id: 1,
                    function: function.to_owned(),
                    idempotent: None,
                    deadline_ms: None,
                    signature: None,
                });
                let registered = (0..500).find_map(|_| conn.next());
                assert!(
                    matches!(registered, Some(DaemonMsg::Done { id: 1 })),
                    "register {function}: {registered:?}"
                );
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(conn, &shared))
            })
            .collect();
        Servers { shared, threads }
    }

    /// From now on, hold invocations instead of answering them.
    pub fn hold(&self) {
        self.shared.hold.store(true, Ordering::Release);
    }

    /// Answer the held invocations, and every later one at once.
    pub fn release(&self) {
        self.shared.hold.store(false, Ordering::Release);
    }

    /// Invocations held now.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::Acquire)
    }

    /// Invocations answered so far.
    pub fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::Acquire)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A serving connection: answers (or holds) each invocation; the invocations of one read
/// are answered in one write.
fn serve(mut conn: RawConn, shared: &ServeShared) {
    let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
    // Of `pending`, how many are counted in `shared.held`.
    let mut counted = 0u64;
    let mut out = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        let mut msg = conn.next();
        while let Some(m) = msg {
            match m {
                DaemonMsg::Invoke {
                    invocation, args, ..
                } => pending.push((invocation, args.to_vec())),
                DaemonMsg::Cancel { .. } => {}
                other => panic!("a serving app got {other:?}"),
            }
            msg = conn.buffered();
        }
        if shared.hold.load(Ordering::Acquire) {
            let new = pending.len() as u64 - counted;
            shared.held.fetch_add(new, Ordering::AcqRel);
            counted += new;
            continue;
        }
        if pending.is_empty() {
            continue;
        }
        out.clear();
        let answered = pending.len() as u64;
        for (invocation, args) in pending.drain(..) {
            out.extend_from_slice(&encode_frame(&ClientMsg::Result {
                invocation,
                outcome: Outcome::Ok(args),
            }));
        }
        conn.stream.write_all(&out).expect("write results");
        shared.answered.fetch_add(answered, Ordering::AcqRel);
        shared.held.fetch_sub(counted, Ordering::AcqRel);
        counted = 0;
    }
}
