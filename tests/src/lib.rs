//! Shared harness for the integration tests in `tests/tests/`: real `rpcd`
//! processes on ephemeral ports and temporary socket directories, owned by
//! guards that kill them by pid on drop (even when a test fails), and a
//! seeded lossy UDP relay to put between two daemons.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rpcd_client::conn::Connection;

/// Path of a workspace binary (`rpcd`, `rpcctl`), next to the test executable's
/// directory. `cargo test --workspace` builds them (their packages have
/// integration tests); `RPCD_BIN_DIR` overrides the directory.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("RPCD_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            // target/debug/deps/<test> -> target/debug
            exe.parent()
                .and_then(Path::parent)
                .expect("test executable lives in target/<profile>/deps")
                .to_path_buf()
        }
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the binaries are built",
        p.display()
    );
    p
}

/// A temporary directory removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rpcd-test-")
        .tempdir()
        .expect("temporary directory")
}

/// A child process killed (SIGKILL, by pid) and reaped on drop.
#[derive(Debug)]
pub struct ProcessGuard {
    child: Option<Child>,
    name: String,
}

impl ProcessGuard {
    /// Own `child`.
    pub fn new(name: &str, child: Child) -> Self {
        ProcessGuard {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Send a signal by pid.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Kill with SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for exit up to `timeout`; the exit status, or None if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            let _ = &self.name;
        }
    }
}

/// `rpcd` isolated from the machine and from the test's own environment: an explicit
/// `--config` (`config`, else an empty file in `dir`), so the system file
/// (`/etc/rpcd/rpcd.toml`) is never read, an environment cleaned by [`isolate`], and
/// `RUST_LOG=info` for its log.
/// Add `--listen` (port 0) and `--socket` (in `dir`).
pub fn rpcd_command(dir: &Path, config: Option<&Path>) -> Command {
    let config = match config {
        Some(c) => c.to_owned(),
        None => {
            let empty = dir.join("empty.toml");
            std::fs::write(&empty, "").expect("write the empty config");
            empty
        }
    };
    let mut cmd = Command::new(bin("rpcd"));
    cmd.arg("--config").arg(config);
    isolate(&mut cmd).env("RUST_LOG", "info");
    cmd
}

/// Remove the variables of the test's environment that change what `rpcd`, `rpcctl` or
/// an app do: settings overrides (`RPCD_<SECTION>__<KEY>`), the socket path
/// (`RPCD_SOCKET`), systemd's notification, socket activation and credentials (a
/// private key), and the log filter.
pub fn isolate(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("RPCD_")
            || k.starts_with("LISTEN_")
            || [
                "NOTIFY_SOCKET",
                "CREDENTIALS_DIRECTORY",
                "RUST_LOG",
                "RUST_LOG_STYLE",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// A running `rpcd` with its own socket, log and (optional) config file.
#[derive(Debug)]
pub struct Daemon {
    /// The process.
    pub process: ProcessGuard,
    /// Its local socket.
    pub socket: PathBuf,
    /// Its UDP address, as reported in the handshake.
    pub udp: SocketAddr,
    /// Its stderr log.
    pub log: PathBuf,
    config: Option<PathBuf>,
}

impl Daemon {
    /// Start `rpcd` in `dir` named `name`, listening on `listen` (use
    /// `127.0.0.1:0` for an ephemeral port), with `config` TOML if given.
    pub fn start(dir: &Path, name: &str, listen: &str, config: Option<&str>) -> Daemon {
        Self::start_wrapped(dir, name, listen, config, &[])
    }

    /// [`Daemon::start`], with `rpcd` run through `wrapper`, a command that sets something
    /// up and then execs its arguments (so the process id stays rpcd's): e.g.
    /// `["prlimit", "--nofile=64", "--"]`, or `["sh", "-c", "umask 000; exec \"$@\"", "sh"]`.
    pub fn start_wrapped(
        dir: &Path,
        name: &str,
        listen: &str,
        config: Option<&str>,
        wrapper: &[&str],
    ) -> Daemon {
        let socket = dir.join(format!("{name}.sock"));
        let cfg_path = config.map(|text| {
            let p = dir.join(format!("{name}.toml"));
            std::fs::write(&p, text).expect("write config");
            p
        });
        Self::spawn_with(dir, name, listen, socket, cfg_path, wrapper)
    }

    fn spawn(
        dir: &Path,
        name: &str,
        listen: &str,
        socket: PathBuf,
        config: Option<PathBuf>,
    ) -> Daemon {
        Self::spawn_with(dir, name, listen, socket, config, &[])
    }

    fn spawn_with(
        dir: &Path,
        name: &str,
        listen: &str,
        socket: PathBuf,
        config: Option<PathBuf>,
        wrapper: &[&str],
    ) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = rpcd_command(dir, config.as_deref());
        cmd.arg("--listen").arg(listen).arg("--socket").arg(&socket);
        if let Some((program, args)) = wrapper.split_first() {
            let mut wrapped = Command::new(program);
            wrapped
                .args(args)
                .arg(cmd.get_program())
                .args(cmd.get_args());
            for (key, value) in cmd.get_envs() {
                match value {
                    Some(v) => wrapped.env(key, v),
                    None => wrapped.env_remove(key),
                };
            }
            cmd = wrapped;
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf);
        let child = cmd.spawn().expect("spawn rpcd");
        let mut process = ProcessGuard::new(name, child);
        // Ready when the socket answers the handshake.
        let until = Instant::now() + Duration::from_secs(20);
        let udp = loop {
            if let Some(st) = process.wait_timeout(Duration::ZERO) {
                panic!(
                    "rpcd {name} exited early ({st}); log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(c) = Connection::connect(&socket, "harness") {
                break c.daemon().listen.parse().expect("listen address");
            }
            assert!(
                Instant::now() < until,
                "rpcd {name} did not come up; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Daemon {
            process,
            socket,
            udp,
            log,
            config,
        }
    }

    /// A new connection to this daemon.
    pub fn connect(&self, name: &str) -> Connection {
        Connection::connect(&self.socket, name).expect("connect to rpcd")
    }

    /// SIGKILL the daemon and start a new one on the same UDP address and socket.
    pub fn restart_after_kill(&mut self, dir: &Path, name: &str) {
        self.process.kill();
        let listen = self.udp.to_string();
        let new = Self::spawn(dir, name, &listen, self.socket.clone(), self.config.clone());
        *self = new;
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.process.wait_timeout(Duration::ZERO).is_none() && self.process.pid() != 0
    }
}

/// Faults a [`Relay`] applies, each direction alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// Probability a datagram is sent twice.
    pub duplicate: f64,
    /// Probability a datagram is held back and sent after the next one.
    pub reorder: f64,
    /// Fixed one-way delay added to every datagram.
    pub delay: Duration,
    /// Extra random delay, uniform in `0..jitter` (reorders datagrams too).
    pub jitter: Duration,
    /// Probability a datagram is cut short at a random length.
    pub truncate: f64,
}

/// Counters of a relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams forwarded (duplicates counted twice).
    pub forwarded: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
    /// Datagrams duplicated.
    pub duplicated: AtomicU64,
    /// Datagrams reordered.
    pub reordered: AtomicU64,
    /// Datagrams cut short.
    pub truncated: AtomicU64,
}

/// A seeded lossy UDP relay between a client daemon and a server daemon:
/// the client daemon sends to `front`; the relay forwards to the server
/// from `back`, and the server's replies come back through it.
#[derive(Debug)]
pub struct Relay {
    /// Address the client daemon targets.
    pub front: SocketAddr,
    /// Counters.
    pub stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Start a relay to `server` with `faults`, seeded by `seed`.
    pub fn start(server: SocketAddr, faults: Faults, seed: u64) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind relay front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind relay back");
        let front_addr = front.local_addr().expect("addr");
        front
            .set_read_timeout(Some(Duration::from_millis(1)))
            .expect("timeout");
        back.set_read_timeout(Some(Duration::from_millis(1)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut client: Option<SocketAddr> = None;
            let mut held: [Option<(Vec<u8>, SocketAddr)>; 2] = [None, None];
            // Delayed datagrams: (due, order, direction, bytes, destination).
            type Delayed = Reverse<(Instant, u64, usize, Vec<u8>, SocketAddr)>;
            let mut delayed: BinaryHeap<Delayed> = BinaryHeap::new();
            let mut order = 0u64;
            let mut buf = vec![0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                let now = Instant::now();
                while delayed.peek().is_some_and(|Reverse(d)| d.0 <= now) {
                    if let Some(Reverse((_, _, dir, d, to))) = delayed.pop() {
                        let tx = if dir == 0 { &back } else { &front };
                        let _ = tx.send_to(&d, to);
                        stats2.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for (dir, held) in held.iter_mut().enumerate() {
                    let (rx, tx) = if dir == 0 {
                        (&front, &back)
                    } else {
                        (&back, &front)
                    };
                    let (n, from) = match rx.recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(_) => {
                            // Idle: release a held datagram so reordering never
                            // turns into loss.
                            if let Some((d, to)) = held.take() {
                                let _ = tx.send_to(&d, to);
                                stats2.forwarded.fetch_add(1, Ordering::Relaxed);
                            }
                            continue;
                        }
                    };
                    let to = if dir == 0 {
                        client = Some(from);
                        server
                    } else {
                        match client {
                            Some(c) => c,
                            None => continue,
                        }
                    };
                    let mut data = buf[..n].to_vec();
                    if rng.gen_bool(faults.loss) {
                        stats2.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if n > 0 && rng.gen_bool(faults.truncate) {
                        data.truncate(rng.gen_range(0..n));
                        stats2.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    let copies = if rng.gen_bool(faults.duplicate) {
                        stats2.duplicated.fetch_add(1, Ordering::Relaxed);
                        2
                    } else {
                        1
                    };
                    if !faults.delay.is_zero() || !faults.jitter.is_zero() {
                        for _ in 0..copies {
                            let extra = if faults.jitter.is_zero() {
                                Duration::ZERO
                            } else {
                                faults.jitter.mul_f64(rng.gen::<f64>())
                            };
                            order += 1;
                            delayed.push(Reverse((
                                Instant::now() + faults.delay + extra,
                                order,
                                dir,
                                data.clone(),
                                to,
                            )));
                        }
                        continue;
                    }
                    if held.is_none() && rng.gen_bool(faults.reorder) {
                        stats2.reordered.fetch_add(1, Ordering::Relaxed);
                        *held = Some((data, to));
                        continue;
                    }
                    for _ in 0..copies {
                        let _ = tx.send_to(&data, to);
                        stats2.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some((d, t)) = held.take() {
                        let _ = tx.send_to(&d, t);
                        stats2.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Relay {
            front: front_addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run `cmd` to completion, owned by a guard from the moment it starts: its output, or
/// a panic (the process killed) if it runs longer than `timeout`. For commands that
/// must exit by themselves (a refused start, `--check-config`, a daemonizing parent).
pub fn output_within(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    let dir = tempdir();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut guard = ProcessGuard::new("bounded", child);
    let Some(status) = guard.wait_timeout(timeout) else {
        panic!(
            "{cmd:?} still ran after {timeout:?} (killed); stderr:\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Path of an example binary of a workspace package (`kv_server`, `kv_client`, `bulk`),
/// in `target/<profile>/examples/`; `cargo test --workspace` builds them.
pub fn example(name: &str) -> PathBuf {
    let dir = bin_dir().join("examples");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p rpcd-client --examples` \
         (or run `cargo test --workspace`)",
        p.display()
    );
    p
}

/// The directory holding the workspace binaries (see [`bin`]).
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("RPCD_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::current_exe()
            .expect("test executable path")
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps")
            .to_path_buf(),
    }
}
pub mod netns;
mod serving;
pub use serving::Serving;

/// Which way a datagram crossed a [`Tap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// From the client daemon to the server daemon.
    Server,
    /// From the server daemon back to the client daemon.
    Client,
}

/// What a [`Tap`] recorded: each datagram with its direction, in order.
type TapLog = Arc<std::sync::Mutex<Vec<(Toward, Vec<u8>)>>>;

/// A UDP forwarder that records every datagram, for an on-path attacker: the client
/// daemon sends to `front`; the tap forwards to the server from `back` (the address the
/// server knows the client by) and the server's datagrams back to the client (the first
/// sender to `front`). What it recorded can be sent again, from `back`, as the client
/// would.
#[derive(Debug)]
pub struct Tap {
    /// Address the client daemon targets.
    pub front: SocketAddr,
    /// Address the server daemon sees the client at.
    pub back: SocketAddr,
    back_tx: UdpSocket,
    server: SocketAddr,
    captured: TapLog,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tap {
    /// Start a tap in front of `server`.
    pub fn start(server: SocketAddr) -> Tap {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind tap front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind tap back");
        let (front_addr, back_addr) = (
            front.local_addr().expect("addr"),
            back.local_addr().expect("addr"),
        );
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(1)))
                .expect("timeout");
        }
        let back_tx = back.try_clone().expect("clone the back socket");
        let stop = Arc::new(AtomicBool::new(false));
        let captured: TapLog = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, captured2) = (stop.clone(), captured.clone());
        let thread = std::thread::spawn(move || {
            let mut client: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    // The first sender is the client; strays (to a reused port) are not.
                    if *client.get_or_insert(from) != from {
                        continue;
                    }
                    captured2
                        .lock()
                        .expect("tap log")
                        .push((Toward::Server, buf[..n].to_vec()));
                    let _ = back.send_to(&buf[..n], server);
                }
                if let Ok((n, from)) = back.recv_from(&mut buf) {
                    if from != server {
                        continue;
                    }
                    captured2
                        .lock()
                        .expect("tap log")
                        .push((Toward::Client, buf[..n].to_vec()));
                    if let Some(c) = client {
                        let _ = front.send_to(&buf[..n], c);
                    }
                }
            }
        });
        Tap {
            front: front_addr,
            back: back_addr,
            back_tx,
            server,
            captured,
            stop,
            thread: Some(thread),
        }
    }

    /// Every datagram forwarded `toward`, in order, so far.
    pub fn captured(&self, toward: Toward) -> Vec<Vec<u8>> {
        self.captured
            .lock()
            .expect("tap log")
            .iter()
            .filter(|(t, _)| *t == toward)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Bytes forwarded `toward` so far.
    pub fn bytes(&self, toward: Toward) -> usize {
        self.captured
            .lock()
            .expect("tap log")
            .iter()
            .filter(|(t, _)| *t == toward)
            .map(|(_, d)| d.len())
            .sum()
    }

    /// Send `bytes` to the server from `back`, as if the client had sent them.
    pub fn inject_to_server(&self, bytes: &[u8]) {
        self.back_tx
            .send_to(bytes, self.server)
            .expect("send from the tap");
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends UDP datagrams with any IPv4 source address and port, through a raw socket
/// (`IPPROTO_RAW`: the IP header is ours). Needs `CAP_NET_RAW` (root).
#[derive(Debug)]
pub struct Spoofer {
    fd: std::os::fd::OwnedFd,
}

impl Spoofer {
    /// A raw socket, or why there is none (not root).
    pub fn new() -> Result<Spoofer, String> {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
        socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Raw,
        )
        .map(|fd| Spoofer { fd })
        .map_err(|e| format!("no raw socket ({e}): spoofing a source address needs CAP_NET_RAW"))
    }

    /// Send `payload` in a UDP datagram that claims to come from `from`.
    pub fn send(
        &self,
        from: std::net::SocketAddrV4,
        to: std::net::SocketAddrV4,
        payload: &[u8],
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        let total16 = u16::try_from(total).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let mut p = Vec::with_capacity(total);
        // IPv4 header: the kernel fills in the checksum (and the id, left zero).
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&total16.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&from.ip().octets());
        p.extend_from_slice(&to.ip().octets());
        // UDP header, checksum zero (none, valid over IPv4).
        p.extend_from_slice(&from.port().to_be_bytes());
        p.extend_from_slice(&to.port().to_be_bytes());
        p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        let dest = nix::sys::socket::SockaddrIn::from(std::net::SocketAddrV4::new(*to.ip(), 0));
        nix::sys::socket::sendto(
            self.fd.as_raw_fd(),
            &p,
            &dest,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map(|_| ())
        .map_err(std::io::Error::from)
    }
}

/// Bytes and datagrams from `from` waiting on `sock`, read without blocking. Datagrams
/// from elsewhere are read and ignored: a port just closed by another test may be
/// reused, and its old peer may still be sending to it.
pub fn drain(sock: &UdpSocket, from: SocketAddr) -> (usize, usize) {
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = vec![0u8; 65_536];
    let (mut bytes, mut datagrams) = (0, 0);
    while let Ok((n, sender)) = sock.recv_from(&mut buf) {
        if sender == from {
            bytes += n;
            datagrams += 1;
        }
    }
    (bytes, datagrams)
}

/// Peak resident memory of a process, in bytes (VmHWM of `/proc/PID/status`).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

/// Raise this process's soft limit on open files towards `want` (up to the hard limit);
/// the soft limit now in force. Tests that hold thousands of sockets call it (a normal
/// user's soft limit is often 1,024).
pub fn raise_fd_limit(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    let new = want.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
        Ok(()) => new,
        Err(_) => soft,
    }
}

/// The uid and gid [`as_nobody`] runs commands as.
pub const NOBODY: u32 = 65_534;

/// True when this test can change uids (it runs as root). Otherwise prints why the test is
/// skipped and returns false, unless `RPCD_REQUIRE_NETNS=1` (CI, as root), where it panics.
pub fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("RPCD_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("RPCD_REQUIRE_NETNS=1 but this test is not root: {what} needs another uid");
    }
    eprintln!("skipped: {what} needs root (to run a client as another uid)");
    false
}

/// `program` run as uid and gid [`NOBODY`] with no supplementary groups (`setpriv`),
/// its environment cleaned by [`isolate`].
pub fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
    ])
    .arg(program);
    isolate(&mut cmd);
    cmd
}

/// `voluntary_ctxt_switches` of one `/proc/.../status` text: the times the thread slept
/// (blocked); being switched out while runnable is not counted.
pub fn voluntary_switches(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}
