//! Loss and congestion benchmarks (ignored by default; timing is not a test):
//!
//! ```text
//! cargo build --release -p rpcd && \
//!   cargo test -p rpcd-tests --release --test kcp_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `kcp_harness`: KCP's published loss harness (`test.cpp`'s
//! `LatencySimulator(10, 60, 125)`) rebuilt around two real daemons: a relay
//! that drops 10 % of a round trip (5 % each way), delays each datagram by a
//! uniform 30–62 ms one way (RTT 60–125 ms) and keeps each direction in FIFO
//! order (a datagram never overtakes an earlier one, as in KCP's simulator);
//! one `rpcd.echo` call every 20 ms, each call's round trip recorded. The
//! same relay code then carries a TCP connection (the kernel's TCP, tunnelled
//! through VXLAN between two network namespaces, so every TCP segment meets
//! the same loss, delay and order) making the same exchange: an 8-byte
//! message every 20 ms, echoed. KCP's own figures are printed for reference.
//! Environment: `KCP_N` (messages, default 1000), `KCP_LOSS` (round-trip
//! loss in percent, default 10), `KCP_RTT_MIN_MS` / `KCP_RTT_MAX_MS` (60,
//! 125), `KCP_KEYS=1` (both daemons with keys, plaintext by default; it
//! needs `rpcctl` built too: `cargo build --release -p rpcd -p rpcctl`). The
//! TCP half needs root, `ip` and VXLAN; without them it is skipped.
//!
//! `congestion_bottleneck`: a relay with a bandwidth limit and a bounded
//! drop-tail queue per direction (no random loss), loaded by callers that
//! echo large messages as fast as they can. Reports goodput against the
//! bottleneck and the retransmissions against the queue's drops.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rpcd_client::conn::CallOptions;
use rpcd_tests::{tempdir, Daemon};

// ------------------------------------------------------------------ relay

/// One direction of the emulated path.
#[derive(Debug, Clone, Copy)]
struct LinkSpec {
    /// Probability a datagram is dropped on entry (random loss).
    loss: f64,
    /// One-way delay, uniform in `delay_min..delay_max`.
    delay_min: Duration,
    delay_max: Duration,
    /// Bottleneck rate in bytes per second (`None`: unlimited, no queue).
    rate: Option<u64>,
    /// Bytes the bottleneck's drop-tail queue holds.
    queue_bytes: usize,
    /// Datagrams the delay line holds (KCP's `nmax`), beyond which they drop.
    line_max: usize,
}

#[derive(Debug, Default)]
struct LinkCounts {
    received: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    random_drops: AtomicU64,
    queue_drops: AtomicU64,
}

struct Link {
    spec: LinkSpec,
    rng: ChaCha8Rng,
    /// The bottleneck's queue and when its head finishes serialising.
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    busy_until: Instant,
    /// Datagrams on the wire, in FIFO order, each with its arrival time.
    line: VecDeque<(Instant, Vec<u8>)>,
    counts: Arc<LinkCounts>,
}

impl Link {
    fn new(spec: LinkSpec, seed: u64, counts: Arc<LinkCounts>) -> Link {
        Link {
            spec,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: VecDeque::new(),
            queued_bytes: 0,
            busy_until: Instant::now(),
            line: VecDeque::new(),
            counts,
        }
    }

    fn serialise(&self, len: usize) -> Duration {
        match self.spec.rate {
            Some(r) => Duration::from_secs_f64(len as f64 / r as f64),
            None => Duration::ZERO,
        }
    }

    fn enter(&mut self, now: Instant, d: Vec<u8>) {
        self.counts.received.fetch_add(1, Ordering::Relaxed);
        if self.rng.gen_bool(self.spec.loss) {
            self.counts.random_drops.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.spec.rate.is_some() {
            if self.queued_bytes + d.len() > self.spec.queue_bytes {
                self.counts.queue_drops.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if self.queue.is_empty() && self.busy_until < now {
                self.busy_until = now;
            }
            self.queued_bytes += d.len();
            self.queue.push_back(d);
        } else {
            self.put_on_line(now, d);
        }
    }

    fn put_on_line(&mut self, at: Instant, d: Vec<u8>) {
        if self.line.len() >= self.spec.line_max {
            self.counts.queue_drops.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let span = self.spec.delay_max.saturating_sub(self.spec.delay_min);
        let mut due = at + self.spec.delay_min + span.mul_f64(self.rng.gen::<f64>());
        // FIFO: a datagram never overtakes the one before it.
        if let Some(&(last, _)) = self.line.back() {
            due = due.max(last);
        }
        self.line.push_back((due, d));
    }

    /// Move serialised datagrams onto the line; return those that arrived.
    fn service(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        while let Some(len) = self.queue.front().map(Vec::len) {
            let done = self.busy_until + self.serialise(len);
            if done > now {
                break;
            }
            self.busy_until = done;
            let d = self.queue.pop_front().expect("non-empty");
            self.queued_bytes -= d.len();
            self.put_on_line(done, d);
        }
        while self.line.front().is_some_and(|(due, _)| *due <= now) {
            let (_, d) = self.line.pop_front().expect("non-empty");
            self.counts.delivered.fetch_add(1, Ordering::Relaxed);
            self.counts
                .delivered_bytes
                .fetch_add(d.len() as u64, Ordering::Relaxed);
            out.push(d);
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let q = self
            .queue
            .front()
            .map(|d| self.busy_until + self.serialise(d.len()));
        let l = self.line.front().map(|(t, _)| *t);
        [q, l].into_iter().flatten().min()
    }
}

/// A UDP relay: the client side sends to `front`, which forwards to
/// `server` from the back socket; the server's datagrams go back to the
/// client (a fixed address, or the last one heard from). Each direction is
/// a [`Link`].
struct PathRelay {
    front: SocketAddr,
    up: Arc<LinkCounts>,
    down: Arc<LinkCounts>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PathRelay {
    /// `netns`: run the relay's sockets inside this network namespace.
    fn start(
        front_bind: SocketAddr,
        back_bind: SocketAddr,
        server: SocketAddr,
        client: Option<SocketAddr>,
        spec: LinkSpec,
        seed: u64,
        netns: Option<String>,
    ) -> PathRelay {
        let (up, down) = (Arc::<LinkCounts>::default(), Arc::<LinkCounts>::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (up2, down2, stop2) = (up.clone(), down.clone(), stop.clone());
        let vxlan = netns.is_some();
        let thread = std::thread::spawn(move || {
            if let Some(ns) = netns {
                enter_netns(&ns);
            }
            let front = UdpSocket::bind(front_bind).unwrap();
            let back = UdpSocket::bind(back_bind).unwrap();
            front.set_nonblocking(true).unwrap();
            back.set_nonblocking(true).unwrap();
            tx.send(front.local_addr().unwrap()).unwrap();
            let mut links = [
                Link::new(spec, seed, up2),
                Link::new(spec, seed ^ 0x5eed, down2),
            ];
            let mut client = client;
            let mut buf = vec![0u8; 65_536];
            let mut arrived = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                let mut busy = false;
                for _ in 0..64 {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        break;
                    };
                    busy = true;
                    client.get_or_insert(from);
                    let mut d = buf[..n].to_vec();
                    if vxlan {
                        complete_inner_tcp_checksum(&mut d);
                    }
                    links[0].enter(Instant::now(), d);
                }
                for _ in 0..64 {
                    let Ok((n, _)) = back.recv_from(&mut buf) else {
                        break;
                    };
                    busy = true;
                    let mut d = buf[..n].to_vec();
                    if vxlan {
                        complete_inner_tcp_checksum(&mut d);
                    }
                    links[1].enter(Instant::now(), d);
                }
                let now = Instant::now();
                links[0].service(now, &mut arrived);
                for d in arrived.drain(..) {
                    let _ = back.send_to(&d, server);
                }
                links[1].service(now, &mut arrived);
                for d in arrived.drain(..) {
                    if let Some(c) = client {
                        let _ = front.send_to(&d, c);
                    }
                }
                if !busy {
                    let next = links.iter().filter_map(Link::next_event).min();
                    let pause = next.map_or(Duration::from_micros(200), |t| {
                        t.saturating_duration_since(Instant::now())
                    });
                    std::thread::sleep(pause.min(Duration::from_micros(200)));
                }
            }
        });
        let front = rx.recv().unwrap();
        PathRelay {
            front,
            up,
            down,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PathRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------- reporting

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Summary {
    n: usize,
    avg: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

fn summarise(mut v: Vec<Duration>) -> Summary {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |p: f64| ms(v[((v.len() as f64 - 1.0) * p).round() as usize]);
    Summary {
        n: v.len(),
        avg: v.iter().map(|d| ms(*d)).sum::<f64>() / v.len().max(1) as f64,
        p50: at(0.5),
        p99: at(0.99),
        max: ms(v[v.len() - 1]),
    }
}

fn print_row(name: &str, s: &Summary, extra: &str) {
    println!(
        "{name:<24} n={:<5} avg={:>7.1} ms  p50={:>7.1} ms  p99={:>7.1} ms  max={:>7.1} ms  {extra}",
        s.n, s.avg, s.p50, s.p99, s.max
    );
}

// ----------------------------------------------------------- KCP harness

struct Harness {
    n: usize,
    interval: Duration,
    spec: LinkSpec,
}

impl Harness {
    fn from_env() -> Harness {
        let loss_rt = env_or("KCP_LOSS", 10) as f64 / 100.0;
        let (rtt_min, rtt_max) = (env_or("KCP_RTT_MIN_MS", 60), env_or("KCP_RTT_MAX_MS", 125));
        Harness {
            n: env_or("KCP_N", 1000) as usize,
            interval: Duration::from_millis(20),
            spec: LinkSpec {
                // As KCP's simulator: the round-trip figure halved per direction.
                loss: loss_rt / 2.0,
                delay_min: Duration::from_millis(rtt_min / 2),
                delay_max: Duration::from_millis(rtt_max / 2),
                rate: None,
                queue_bytes: 0,
                line_max: 1000,
            },
        }
    }
}

/// A new private key in `file` (`rpcctl keys generate`); its public key.
fn generate_key(file: &std::path::Path) -> String {
    let out = Command::new(rpcd_tests::bin("rpcctl"))
        .args(["keys", "generate", "--out"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "rpcctl keys generate: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn rpcd_over_relay(h: &Harness) -> (Vec<Duration>, usize, String) {
    let dir = tempdir();
    let config = "# KCP harness: the built-in transport defaults.\n[transport]\n";
    // KCP_KEYS=1: both daemons run with keys (Noise IK; the first call
    // waits for one handshake round trip), each the other's [peers] entry.
    let keys = std::env::var("KCP_KEYS").is_ok_and(|v| v == "1");
    let key_of = |name: &str| {
        let file = dir.path().join(format!("{name}.key"));
        let public = generate_key(&file);
        (file, public)
    };
    let ((ka, pa), (kb, pb)) = if keys {
        (key_of("a"), key_of("b"))
    } else {
        Default::default()
    };
    let b_config = if keys {
        format!("{config}[security]\nprivate_key_file = {kb:?}\n[peers.a]\npublic_key = {pa:?}\n")
    } else {
        config.to_owned()
    };
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", Some(&b_config));
    let relay = PathRelay::start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        b.udp,
        None,
        h.spec,
        11,
        None,
    );
    let a_config = if keys {
        format!(
            "{config}[security]\nprivate_key_file = {ka:?}\n[peers.b]\npublic_key = {pb:?}\naddresses = [\"{}\"]\n",
            relay.front
        )
    } else {
        config.to_owned()
    };
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&a_config));
    let client = Arc::new(a.connect("kcp-bench"));
    let target = relay.front.to_string();
    let opts = CallOptions::new(Some(Duration::from_secs(30)), true);
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    for i in 0..h.n {
        let due = start + h.interval * i as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let (client, target, tx) = (client.clone(), target.clone(), tx.clone());
        std::thread::spawn(move || {
            let payload = (i as u64).to_le_bytes().to_vec();
            let t = Instant::now();
            let r = client.call(&target, "rpcd.echo", payload.clone(), opts);
            let ok = r.as_ref().is_ok_and(|r| *r == payload);
            let _ = tx.send((ok, t.elapsed()));
        });
    }
    drop(tx);
    let mut rtts = Vec::new();
    let mut failed = 0;
    for (ok, d) in rx {
        if ok {
            rtts.push(d);
        } else {
            failed += 1;
        }
    }
    let sa = client.stats().unwrap().totals;
    let sb = b.connect("kcp-bench-b").stats().unwrap().totals;
    let note = format!(
        "failed={failed} {} retransmissions={} (redundant {}) datagrams={} relay drops={}",
        if keys { "keyed" } else { "plaintext" },
        sa.retransmissions + sb.retransmissions,
        sa.redundant_copies + sb.redundant_copies,
        sa.datagrams_sent + sb.datagrams_sent,
        relay.up.random_drops.load(Ordering::Relaxed)
            + relay.down.random_drops.load(Ordering::Relaxed)
    );
    (rtts, failed, note)
}

/// The kernel leaves a TCP checksum for the NIC to complete (offload); a
/// veth never does, so a segment tunnelled in VXLAN through a userspace
/// relay would arrive with a partial one and be dropped. Complete it:
/// VXLAN header (8) + Ethernet (14) + IPv4 + TCP.
fn complete_inner_tcp_checksum(d: &mut [u8]) {
    const IP: usize = 8 + 14;
    if d.len() < IP + 20 || d[IP - 2..IP] != [0x08, 0x00] || d[IP + 9] != 6 {
        return;
    }
    let ihl = usize::from(d[IP] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([d[IP + 2], d[IP + 3]]));
    if total < ihl + 20 || IP + total > d.len() {
        return;
    }
    let tcp = IP + ihl..IP + total;
    d[tcp.start + 16] = 0;
    d[tcp.start + 17] = 0;
    let mut sum: u32 = 6 + (total - ihl) as u32;
    let words = |b: &[u8]| -> u32 {
        b.chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    };
    sum += words(&d[IP + 12..IP + 20]);
    sum += words(&d[tcp.clone()]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    d[tcp.start + 16..tcp.start + 18].copy_from_slice(&c.to_be_bytes());
}

/// Two network namespaces joined by VXLAN, whose UDP underlay runs through a
/// relay in a third namespace: TCP between the first two meets the relay.
struct VxlanPath {
    names: [String; 3],
}

impl VxlanPath {
    const A: &'static str = "10.80.0.1";
    const B: &'static str = "10.80.0.2";

    fn setup() -> Result<VxlanPath, String> {
        let tag = std::process::id();
        let names = [
            format!("kcpb-{tag}-a"),
            format!("kcpb-{tag}-b"),
            format!("kcpb-{tag}-r"),
        ];
        let path = VxlanPath { names };
        let [a, b, r] = &path.names;
        let script = [
            format!("netns add {a}"),
            format!("netns add {b}"),
            format!("netns add {r}"),
            format!("-n {r} link set lo up"),
            format!("-n {r} link add va type veth peer name eth0 netns {a}"),
            format!("-n {r} link add vb type veth peer name eth0 netns {b}"),
            format!("-n {r} addr add 10.79.1.1/30 dev va"),
            format!("-n {r} addr add 10.79.2.1/30 dev vb"),
            format!("-n {r} link set va up"),
            format!("-n {r} link set vb up"),
            format!("-n {a} addr add 10.79.1.2/30 dev eth0"),
            format!("-n {b} addr add 10.79.2.2/30 dev eth0"),
            format!("-n {a} link set eth0 up"),
            format!("-n {b} link set eth0 up"),
            format!("-n {a} link add vx0 address 02:00:00:00:00:01 type vxlan id 79 remote 10.79.1.1 local 10.79.1.2 dstport 4789"),
            format!("-n {b} link add vx0 address 02:00:00:00:00:02 type vxlan id 79 remote 10.79.2.1 local 10.79.2.2 dstport 4789"),
            format!("-n {a} addr add {}/24 dev vx0", Self::A),
            format!("-n {b} addr add {}/24 dev vx0", Self::B),
            format!("-n {a} link set vx0 up"),
            format!("-n {b} link set vx0 up"),
            format!("-n {a} neigh add {} lladdr 02:00:00:00:00:02 dev vx0 nud permanent", Self::B),
            format!("-n {b} neigh add {} lladdr 02:00:00:00:00:01 dev vx0 nud permanent", Self::A),
        ];
        for line in script {
            let out = Command::new("ip")
                .args(line.split(' '))
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ip {line}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(path)
    }
}

impl Drop for VxlanPath {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn enter_netns(name: &str) {
    let f = File::open(PathBuf::from("/var/run/netns").join(name)).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

fn tcp_over_relay(h: &Harness) -> Result<(Vec<Duration>, usize, String), String> {
    let path = VxlanPath::setup()?;
    let [a, b, r] = path.names.clone();
    let relay = PathRelay::start(
        "10.79.1.1:4789".parse().unwrap(),
        "10.79.2.1:4789".parse().unwrap(),
        "10.79.2.2:4789".parse().unwrap(),
        Some("10.79.1.2:4789".parse().unwrap()),
        h.spec,
        11,
        Some(r),
    );
    let (ltx, lrx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        enter_netns(&b);
        let l = TcpListener::bind((VxlanPath::B, 7000)).unwrap();
        ltx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    lrx.recv().unwrap();
    let (n, interval) = (h.n, h.interval);
    let client = std::thread::spawn(move || -> Vec<Duration> {
        enter_netns(&a);
        let mut s = TcpStream::connect_timeout(
            &format!("{}:7000", VxlanPath::B).parse().unwrap(),
            Duration::from_secs(10),
        )
        .unwrap();
        s.set_nodelay(true).unwrap();
        let mut reader = s.try_clone().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
            Arc::new(std::sync::Mutex::new(vec![None; n]));
        let sent2 = sent.clone();
        let read = std::thread::spawn(move || {
            let mut rtts = Vec::with_capacity(n);
            let mut rec = [0u8; 8];
            for _ in 0..n {
                if reader.read_exact(&mut rec).is_err() {
                    break;
                }
                let i = u64::from_le_bytes(rec) as usize;
                if let Some(t) = sent2.lock().unwrap().get(i).copied().flatten() {
                    rtts.push(t.elapsed());
                }
            }
            rtts
        });
        let start = Instant::now();
        for i in 0..n {
            let due = start + interval * i as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            sent.lock().unwrap()[i] = Some(Instant::now());
            s.write_all(&(i as u64).to_le_bytes()).unwrap();
        }
        let rtts = read.join().unwrap();
        let _ = s.shutdown(std::net::Shutdown::Both);
        rtts
    });
    let rtts = client.join().map_err(|_| "tcp client panicked")?;
    let _ = server.join();
    let failed = h.n - rtts.len();
    let note = format!(
        "unanswered={failed} relay drops={}",
        relay.up.random_drops.load(Ordering::Relaxed)
            + relay.down.random_drops.load(Ordering::Relaxed)
    );
    drop(relay);
    drop(path);
    Ok((rtts, failed, note))
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn kcp_harness() {
    let h = Harness::from_env();
    println!(
        "KCP harness: {} messages, one every {} ms; loss {:.1} % each way; one-way delay {}-{} ms, FIFO",
        h.n,
        h.interval.as_millis(),
        h.spec.loss * 100.0,
        h.spec.delay_min.as_millis(),
        h.spec.delay_max.as_millis()
    );
    let (rtts, failed, note) = rpcd_over_relay(&h);
    let r = summarise(rtts);
    print_row("rpcd.echo (2 daemons)", &r, &note);
    match tcp_over_relay(&h) {
        Ok((rtts, _, note)) if !rtts.is_empty() => {
            let t = summarise(rtts);
            print_row("TCP (same relay)", &t, &note);
            println!(
                "ratio rpcd/TCP: avg {:.2}x  p99 {:.2}x  max {:.2}x",
                r.avg / t.avg,
                r.p99 / t.p99,
                r.max / t.max
            );
        }
        Ok(_) => println!("TCP (same relay)         no answers"),
        Err(e) => println!("TCP (same relay)         skipped: {e}"),
    }
    println!(
        "KCP fast (published)     avg={:>7.1} ms  max={:>7.1} ms",
        138.0, 392.0
    );
    println!(
        "KCP normal (published)   avg={:>7.1} ms  max={:>7.1} ms",
        156.0, 571.0
    );
    println!(
        "ratio rpcd/KCP fast: avg {:.2}x  max {:.2}x",
        r.avg / 138.0,
        r.max / 392.0
    );
    assert_eq!(failed, 0, "every call is answered");
}

// --------------------------------------------------- congestion scenario

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn congestion_bottleneck() {
    let rate = env_or("CONG_RATE_KB", 1000) * 1000; // bytes per second
    let queue_bytes = env_or("CONG_QUEUE_KB", 64) as usize * 1024;
    let secs = env_or("CONG_SECS", 10);
    let callers = env_or("CONG_CALLERS", 8) as usize;
    let size = env_or("CONG_MSG_KB", 16) as usize * 1024;
    let spec = LinkSpec {
        loss: 0.0,
        delay_min: Duration::from_millis(10),
        delay_max: Duration::from_millis(10),
        rate: Some(rate),
        queue_bytes,
        line_max: usize::MAX,
    };
    println!(
        "congestion: bottleneck {} kB/s each way, drop-tail queue {} KiB, RTT 20 ms, {callers} callers echoing {} KiB for {secs} s",
        rate / 1000,
        queue_bytes / 1024,
        size / 1024
    );
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let relay = PathRelay::start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        b.udp,
        None,
        spec,
        7,
        None,
    );
    let client = Arc::new(a.connect("cong-bench"));
    let target = relay.front.to_string();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let workers: Vec<_> = (0..callers)
        .map(|w| {
            let (client, target) = (client.clone(), target.clone());
            std::thread::spawn(move || {
                let payload = vec![w as u8; size];
                let opts = CallOptions::new(Some(Duration::from_secs(30)), true);
                let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
                while Instant::now() < end {
                    let t = Instant::now();
                    match client.call(&target, "rpcd.echo", payload.clone(), opts) {
                        Ok(r) if r.len() == size => {
                            ok += 1;
                            lat.push(t.elapsed());
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed, lat)
            })
        })
        .collect();
    let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
    for w in workers {
        let (o, f, l) = w.join().unwrap();
        ok += o;
        failed += f;
        lat.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (full_a, full_b) = (
        client.stats().unwrap(),
        b.connect("cong-bench-b").stats().unwrap(),
    );
    println!(
        "calls at A by outcome {:?}; messages failed A {} B {}",
        full_a.calls, full_a.totals.messages_failed, full_b.totals.messages_failed
    );
    let (sa, sb) = (full_a.totals, full_b.totals);
    let goodput = ok as f64 * size as f64 / elapsed;
    let wire = relay.up.delivered_bytes.load(Ordering::Relaxed) as f64 / elapsed;
    let qdrops = relay.up.queue_drops.load(Ordering::Relaxed)
        + relay.down.queue_drops.load(Ordering::Relaxed);
    let retx = sa.retransmissions + sb.retransmissions;
    let sent = sa.datagrams_sent + sb.datagrams_sent;
    print_row(
        "rpcd.echo",
        &summarise(lat),
        &format!("ok={ok} failed={failed}"),
    );
    println!(
        "goodput {:.0} kB/s = {:.0} % of the bottleneck; bytes through it {:.0} kB/s = {:.0} %",
        goodput / 1e3,
        goodput / rate as f64 * 100.0,
        wire / 1e3,
        wire / rate as f64 * 100.0
    );
    println!(
        "datagrams sent {sent}, retransmissions {retx} ({:.1} %), queue drops {qdrops} ({:.1} %); retransmissions / drops = {:.2}",
        retx as f64 / sent.max(1) as f64 * 100.0,
        qdrops as f64 / sent.max(1) as f64 * 100.0,
        retx as f64 / qdrops.max(1) as f64
    );
}
