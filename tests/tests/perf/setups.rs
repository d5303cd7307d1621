//! The paths the benchmark measures, each started once and measured many times: the floor
//! (plain relays), tarpc over TCP, and rpcd across two daemons.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rpcd_client::conn::{CallOptions, Connection};
use rpcd_tests::{bin, isolate, Daemon, ProcessGuard};
use rpcd_transport::secure::PrivateKey;

use crate::perf_common::{read_frame, write_frame, KvClient, KEY, VALUE};

/// A path under measurement.
pub trait Setup {
    /// Its processes (label, pid); the caller is this process.
    fn procs(&self) -> Vec<(&'static str, u32)>;
    /// Datagrams sent so far (caller's side, serving side), when the path counts them.
    fn datagrams(&self) -> Option<(u64, u64)>;
    /// Makes `calls` calls with `callers` in flight at once; the latency of each and the
    /// time they all took.
    fn run(&mut self, calls: u64, callers: usize) -> (Vec<Duration>, Duration);
}

/// Where the examples are: `target/<profile>/examples`.
fn example(name: &str) -> PathBuf {
    let rpcd = bin("rpcd");
    let dir = rpcd.parent().expect("a binary lives in a directory");
    let p = dir.join("examples").join(name);
    assert!(
        p.exists(),
        "{} is missing: build with `cargo build --release --workspace --bins --examples`",
        p.display()
    );
    p
}

/// Starts a helper and waits for its `ready` line (and the address on it).
fn start(name: &str, mut cmd: Command, ready: &str) -> (ProcessGuard, Option<SocketAddr>) {
    isolate(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a helper");
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = ProcessGuard::new(name, child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the helper's first line");
    assert!(line.starts_with(ready), "{name} said {line:?}");
    let addr = line[ready.len()..].trim().parse().ok();
    (guard, addr)
}

fn helper(args: &[&str]) -> Command {
    let mut cmd = Command::new(example("perf_helper"));
    cmd.args(args);
    cmd
}

/// app -UDS-> relay -UDP-> relay -UDS-> app, the relays and the serving app as plain as
/// they get (`perf_helper`).
pub struct Floor {
    _guards: Vec<ProcessGuard>,
    pids: [u32; 3],
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Floor {
    /// `looped`: the relays wait in an event loop (`perf_helper loop-relay-*`) instead of
    /// blocking a thread per direction.
    pub fn start(dir: &Path, looped: bool) -> Floor {
        let tag = if looped { "loop" } else { "floor" };
        let (server_sock, relay_sock) = (
            dir.join(format!("{tag}-s.sock")),
            dir.join(format!("{tag}-a.sock")),
        );
        let (connect, listen) = if looped {
            ("loop-relay-connect", "loop-relay-listen")
        } else {
            ("relay-connect", "relay-listen")
        };
        let (server, _) = start(
            "echo-server",
            helper(&["echo-server", server_sock.to_str().expect("utf-8 path")]),
            "ready",
        );
        let (relay_b, b_addr) = start(
            "relay-b",
            helper(&[connect, server_sock.to_str().expect("utf-8 path")]),
            "ready ",
        );
        let b_addr = b_addr.expect("relay b's address").to_string();
        let (relay_a, _) = start(
            "relay-a",
            helper(&[listen, relay_sock.to_str().expect("utf-8 path"), &b_addr]),
            "ready ",
        );
        let writer = UnixStream::connect(&relay_sock).expect("connect to relay a");
        // A lost datagram would stall the floor for ever: fail instead.
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let reader = BufReader::new(writer.try_clone().expect("clone"));
        let pids = [relay_a.pid(), relay_b.pid(), server.pid()];
        Floor {
            _guards: vec![relay_a, relay_b, server],
            pids,
            writer,
            reader,
        }
    }
}

impl Setup for Floor {
    fn procs(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("caller", std::process::id()),
            ("relay A", self.pids[0]),
            ("relay B", self.pids[1]),
            ("server", self.pids[2]),
        ]
    }

    fn datagrams(&self) -> Option<(u64, u64)> {
        None
    }

    /// One thread keeps `callers` requests in flight: a new one leaves as each reply
    /// comes back. A request is its 8-byte sequence number and 32 bytes of argument.
    fn run(&mut self, calls: u64, callers: usize) -> (Vec<Duration>, Duration) {
        let mut sent = vec![Instant::now(); calls as usize];
        let mut out = Vec::with_capacity(calls as usize);
        let (mut body, mut scratch) = (Vec::new(), Vec::new());
        let mut request = [0u8; 40];
        request[8..].copy_from_slice(&[0x5a; 32]);
        let started = Instant::now();
        let mut next = 0u64;
        let mut send = |next: &mut u64, sent: &mut Vec<Instant>| {
            request[..8].copy_from_slice(&next.to_le_bytes());
            sent[*next as usize] = Instant::now();
            write_frame(&mut self.writer, &mut scratch, &request).expect("send to relay a");
            *next += 1;
        };
        while next < calls.min(callers as u64) {
            send(&mut next, &mut sent);
        }
        while (out.len() as u64) < calls {
            assert!(
                read_frame(&mut self.reader, &mut body).expect("the floor's reply"),
                "relay a closed"
            );
            let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
            out.push(sent[seq as usize].elapsed());
            if next < calls {
                send(&mut next, &mut sent);
            }
        }
        (out, started.elapsed())
    }
}

/// tarpc 0.36 over TCP loopback: the server in its own process, the callers tasks of one
/// client (one connection) on a tokio runtime in this process.
pub struct Tarpc {
    _guard: ProcessGuard,
    pid: u32,
    runtime: tokio::runtime::Runtime,
    client: KvClient,
}

impl Tarpc {
    pub fn start() -> Tarpc {
        let (guard, addr) = start("tarpc-server", helper(&["tarpc-server"]), "ready ");
        let addr = addr.expect("tarpc server's address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = runtime.block_on(async {
            let transport = tarpc::serde_transport::tcp::connect(
                addr,
                tarpc::tokio_serde::formats::Bincode::default,
            )
            .await
            .expect("connect to the tarpc server");
            KvClient::new(tarpc::client::Config::default(), transport).spawn()
        });
        Tarpc {
            pid: guard.pid(),
            _guard: guard,
            runtime,
            client,
        }
    }
}

impl Setup for Tarpc {
    fn procs(&self) -> Vec<(&'static str, u32)> {
        vec![("caller", std::process::id()), ("server", self.pid)]
    }

    fn datagrams(&self) -> Option<(u64, u64)> {
        None
    }

    fn run(&mut self, calls: u64, callers: usize) -> (Vec<Duration>, Duration) {
        let per = calls / callers as u64;
        self.runtime.block_on(async {
            let started = Instant::now();
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let client = self.client.clone();
                    tokio::spawn(async move {
                        let mut out = Vec::with_capacity(per as usize);
                        for _ in 0..per {
                            let t = Instant::now();
                            let v = client
                                .get(tarpc::context::current(), KEY.to_owned())
                                .await
                                .expect("tarpc call");
                            out.push(t.elapsed());
                            assert_eq!(v.as_deref(), Some(VALUE));
                        }
                        out
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(calls as usize);
            for t in tasks {
                all.extend(t.await.expect("caller task"));
            }
            (all, started.elapsed())
        })
    }
}

/// `kv.get` (32 bytes of arguments) served by the `kv_server` example behind daemon B,
/// called from daemon A by threads sharing one `Connection` (by tasks: [`RpcdTasks`]); the
/// `bulk` example serves
/// beside it for the goodput figure.
pub struct Rpcd {
    pub a: Daemon,
    pub b: Daemon,
    _servers: Vec<ProcessGuard>,
    server_pid: u32,
    bulk_pid: u32,
    pub conn: Connection,
    b_conn: Connection,
    pub target: String,
    args: Vec<u8>,
}

impl Rpcd {
    /// Two daemons on loopback, plaintext (the default without a key) or with keys that
    /// trust each other (then the target is B's peer name); `sleeping`: plaintext, with
    /// busy polling off (`daemon.busy_poll_us = 0`), so that each input wakes a daemon.
    pub fn start(dir: &Path, keyed: bool, sleeping: bool) -> Rpcd {
        let tag = match (keyed, sleeping) {
            (true, _) => "k",
            (false, true) => "n",
            (false, false) => "p",
        };
        let (a, b, target) = if keyed {
            let (ka, kb) = (
                PrivateKey::from_bytes(rand::random()),
                PrivateKey::from_bytes(rand::random()),
            );
            let key_file = |name: &str, key: &PrivateKey| {
                use std::os::unix::fs::PermissionsExt;
                let p = dir.join(name);
                std::fs::write(&p, key.to_base64()).expect("write a key");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod the key");
                format!(
                    "[security]\nprivate_key_file = {:?}\n",
                    p.display().to_string()
                )
            };
            let b_config = format!(
                "{}[peers.a]\npublic_key = \"{}\"\n",
                key_file("kb.key", &kb),
                ka.public()
            );
            let b = Daemon::start(dir, "kb", "127.0.0.1:0", Some(&b_config));
            let a_config = format!(
                "{}[peers.b]\npublic_key = \"{}\"\naddresses = [\"{}\"]\n",
                key_file("ka.key", &ka),
                kb.public(),
                b.udp
            );
            let a = Daemon::start(dir, "ka", "127.0.0.1:0", Some(&a_config));
            (a, b, "b".to_owned())
        } else {
            let config = sleeping.then_some("[daemon]\nbusy_poll_us = 0\n");
            let a = Daemon::start(dir, &format!("{tag}a"), "127.0.0.1:0", config);
            let b = Daemon::start(dir, &format!("{tag}b"), "127.0.0.1:0", config);
            let target = b.udp.to_string();
            (a, b, target)
        };
        let b_sock = b.socket.to_str().expect("utf-8 path").to_owned();
        let mut kv = Command::new(example("kv_server"));
        kv.args(["--socket", &b_sock]);
        let (kv, _) = start("kv_server", kv, "kv_server: serving");
        let mut bulk = Command::new(example("bulk"));
        bulk.args(["--socket", &b_sock, "--serve"]);
        let (bulk, _) = start("bulk", bulk, "bulk: serving");
        let conn = a.connect("perf-bench");
        let b_conn = b.connect("perf-bench-stats");
        let put = rmp_serde::to_vec_named(&(KEY, VALUE)).expect("encode");
        conn.call(&target, "kv.put", put, opts(10))
            .expect("kv.put before the benchmark");
        let args = rmp_serde::to_vec_named(&(KEY,)).expect("encode");
        assert_eq!(args.len(), 32);
        Rpcd {
            server_pid: kv.pid(),
            bulk_pid: bulk.pid(),
            _servers: vec![kv, bulk],
            a,
            b,
            conn,
            b_conn,
            target,
            args,
        }
    }
}

/// Call options with a deadline of `secs`.
pub fn opts(secs: u64) -> CallOptions {
    CallOptions::new(Some(Duration::from_secs(secs)), false)
}

impl Setup for Rpcd {
    fn procs(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("caller", std::process::id()),
            ("rpcd A", self.a.process.pid()),
            ("rpcd B", self.b.process.pid()),
            ("server", self.server_pid),
        ]
    }

    fn datagrams(&self) -> Option<(u64, u64)> {
        let a = self.conn.stats().expect("stats of A");
        let b = self.b_conn.stats().expect("stats of B");
        Some((a.totals.datagrams_sent, b.totals.datagrams_sent))
    }

    /// `callers` threads claim calls from a shared counter, like `rpcctl bench`.
    fn run(&mut self, calls: u64, callers: usize) -> (Vec<Duration>, Duration) {
        let claimed = AtomicU64::new(0);
        let all = Mutex::new(Vec::with_capacity(calls as usize));
        let want: Vec<u8> = rmp_serde::to_vec_named(&Some(VALUE)).expect("encode");
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..callers {
                s.spawn(|| {
                    let mut out = Vec::new();
                    while claimed.fetch_add(1, Ordering::Relaxed) < calls {
                        let t = Instant::now();
                        let r = self
                            .conn
                            .call(&self.target, "kv.get", self.args.clone(), opts(30))
                            .expect("kv.get");
                        out.push(t.elapsed());
                        assert_eq!(r, want);
                    }
                    all.lock().expect("no caller panicked").extend(out);
                });
            }
        });
        let elapsed = started.elapsed();
        (all.into_inner().expect("no caller panicked"), elapsed)
    }
}

/// A tokio multi-thread runtime (the default, like tarpc's) with one async client
/// (`rpcd_client::tokio::Client`, one connection) on daemon A, as tarpc's callers have.
pub struct TokioCaller {
    runtime: tokio::runtime::Runtime,
    client: rpcd_client::tokio::Client,
}

impl TokioCaller {
    /// The runtime and its client connected to `rpcd`'s daemon A.
    pub fn start(rpcd: &Rpcd) -> TokioCaller {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = runtime.block_on(async {
            rpcd_client::tokio::Client::connect_to(&rpcd.a.socket)
                .await
                .expect("connect the async client to A")
        });
        TokioCaller { runtime, client }
    }
}

/// The same path as [`Rpcd`], called by tasks of a [`TokioCaller`] sharing its one async
/// client, as tarpc's callers are. A view: made for each measurement, so that the threads
/// rows can take turns with it on the same daemons.
pub struct RpcdTasks<'a> {
    pub rpcd: &'a Rpcd,
    pub caller: &'a TokioCaller,
}

impl Setup for RpcdTasks<'_> {
    fn procs(&self) -> Vec<(&'static str, u32)> {
        self.rpcd.procs()
    }

    fn datagrams(&self) -> Option<(u64, u64)> {
        self.rpcd.datagrams()
    }

    /// `callers` tasks, each making its share of the calls one after another, like
    /// tarpc's.
    fn run(&mut self, calls: u64, callers: usize) -> (Vec<Duration>, Duration) {
        let per = calls / callers as u64;
        let want: Vec<u8> = rmp_serde::to_vec_named(&Some(VALUE)).expect("encode");
        self.caller.runtime.block_on(async {
            let started = Instant::now();
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let client = self.caller.client.clone();
                    let (target, args, want) = (
                        self.rpcd.target.clone(),
                        self.rpcd.args.clone(),
                        want.clone(),
                    );
                    tokio::spawn(async move {
                        let mut out = Vec::with_capacity(per as usize);
                        for _ in 0..per {
                            let t = Instant::now();
                            let r = client
                                .call_raw_with(target.as_str(), "kv.get", args.clone(), opts(30))
                                .await
                                .expect("kv.get");
                            out.push(t.elapsed());
                            assert_eq!(r, want);
                        }
                        out
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(calls as usize);
            for t in tasks {
                all.extend(t.await.expect("caller task"));
            }
            (all, started.elapsed())
        })
    }
}

/// Goodput of one 16 MiB message (the argument is 4 KiB short of it, so the envelope fits
/// the default `message_max`) through two daemons to `bulk.digest`, in MiB/s.
pub fn bulk_rpcd(r: &Rpcd, len: usize) -> f64 {
    #[derive(serde::Deserialize)]
    struct Digest {
        len: u64,
    }
    let data = serde_bytes::ByteBuf::from(vec![0xa5u8; len]);
    let args = rmp_serde::to_vec_named(&(data,)).expect("encode");
    let t = Instant::now();
    let reply = r
        .conn
        .call(&r.target, "bulk.digest", args, opts(120))
        .expect("bulk.digest");
    let secs = t.elapsed().as_secs_f64();
    let d: Digest = rmp_serde::from_slice(&reply).expect("a digest");
    assert_eq!(d.len, len as u64);
    len as f64 / secs / (1024.0 * 1024.0)
}

/// The transport counters of both daemons that say where a bulk message's time went
/// (`rpcctl stats`), and A's view of the path to B afterwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkCounters {
    /// Retransmissions, probe timeouts, pacer waits and datagrams sent, by A and by B.
    pub a: [u64; 4],
    pub b: [u64; 4],
    /// A's smoothed RTT to B (µs) and congestion window (datagrams).
    pub srtt_us: u64,
    pub cwnd: u32,
    /// CPU time so far (µs) of the caller, daemon A, daemon B and the serving app.
    pub cpu_us: [f64; 4],
}

impl BulkCounters {
    pub fn of(r: &Rpcd) -> BulkCounters {
        let a = r.conn.stats().expect("stats of A");
        let b = r.b_conn.stats().expect("stats of B");
        let four = |c: &rpcd_client::ipc::PeerCounters| {
            [
                c.retransmissions,
                c.probes,
                c.paced_delays,
                c.datagrams_sent,
            ]
        };
        let peer = a.peers.iter().find(|p| p.addr == r.target);
        BulkCounters {
            a: four(&a.totals),
            b: four(&b.totals),
            srtt_us: peer.and_then(|p| p.srtt_us).unwrap_or(0),
            cwnd: peer.map_or(0, |p| p.cwnd),
            cpu_us: [
                cpu_us(std::process::id()),
                cpu_us(r.a.process.pid()),
                cpu_us(r.b.process.pid()),
                cpu_us(r.bulk_pid),
            ],
        }
    }

    /// Adds what changed from `before` to `after` to these totals (kept from zero), and
    /// takes `after`'s path figures, so that messages measured apart can be summed.
    pub fn add(&mut self, before: &BulkCounters, after: &BulkCounters) {
        for i in 0..4 {
            self.a[i] += after.a[i] - before.a[i];
            self.b[i] += after.b[i] - before.b[i];
            self.cpu_us[i] += after.cpu_us[i] - before.cpu_us[i];
        }
        self.srtt_us = after.srtt_us;
        self.cwnd = after.cwnd;
    }

    /// Per message between `self` (before) and `after`, for `n` messages, as one line.
    pub fn per_message(&self, after: &BulkCounters, n: u64) -> String {
        let d = |x: &[u64; 4], y: &[u64; 4], i: usize| (y[i] - x[i]) as f64 / n as f64;
        format!(
            "per message: A retransmissions {:.1}, probes {:.1}, paced_delays {:.1}, \
             datagrams {:.0}; B retransmissions {:.1}, probes {:.1}, datagrams {:.0}; \
             A's srtt to B after {} us, cwnd {}; CPU ms: caller {:.1}, A {:.1}, B {:.1}, \
             serving app {:.1}",
            d(&self.a, &after.a, 0),
            d(&self.a, &after.a, 1),
            d(&self.a, &after.a, 2),
            d(&self.a, &after.a, 3),
            d(&self.b, &after.b, 0),
            d(&self.b, &after.b, 1),
            d(&self.b, &after.b, 3),
            after.srtt_us,
            after.cwnd,
            (after.cpu_us[0] - self.cpu_us[0]) / n as f64 / 1000.0,
            (after.cpu_us[1] - self.cpu_us[1]) / n as f64 / 1000.0,
            (after.cpu_us[2] - self.cpu_us[2]) / n as f64 / 1000.0,
            (after.cpu_us[3] - self.cpu_us[3]) / n as f64 / 1000.0,
        )
    }
}

/// Goodput of the same bytes copied over a TCP loopback connection to a thread that reads
/// them all and answers one byte, in MiB/s.
pub fn bulk_tcp(len: usize) -> f64 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < len {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "early end of stream");
            got += n;
        }
        s.write_all(&[1]).expect("ack");
    });
    let data = vec![0xa5u8; len];
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(&data).expect("write");
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).expect("ack");
    let secs = t.elapsed().as_secs_f64();
    sink.join().expect("sink thread");
    len as f64 / secs / (1024.0 * 1024.0)
}

/// CPU time (user + system) of a process so far, in microseconds, from `/proc/PID/stat`.
pub fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    ticks as f64 * 10_000.0
}

/// A map from label to value, kept in order of first insertion.
pub type Labelled = Vec<(&'static str, f64)>;

/// Per-process CPU microseconds per call between two snapshots.
pub fn cpu_per_call(
    before: &HashMap<u32, f64>,
    procs: &[(&'static str, u32)],
    calls: u64,
) -> Labelled {
    procs
        .iter()
        .map(|(label, pid)| (*label, (cpu_us(*pid) - before[pid]) / calls as f64))
        .collect()
}
