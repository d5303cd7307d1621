//! Test hosts as Linux network namespaces: a [`Net`] of two or three hosts, each a
//! namespace with one veth link to a bridge that lives in a namespace of its own, so
//! nothing is added to the machine's own namespace. Addresses come from a private test
//! range (`10.77.0.0/24`) and exist only inside those namespaces; every network uses the
//! same range because each has its own bridge namespace.
//!
//! Each host runs one `rpcd` (`ip netns exec NS rpcd --listen 10.77.0.N:7400 --socket
//! DIR/NS.sock`); Unix sockets are filesystem objects, so the test process and serving
//! apps in the root namespace reach every daemon through its socket path.
//!
//! Keys: by default every host has a private key of its own (`rpcctl keys generate`, a
//! 0600 file in the network's directory, kept for the network's life, so a restarted
//! daemon keeps its identity), and every daemon's config gets `[security]` with that key
//! and a `[peers.NAME]` (`a`, `b`, `c`) for every other host, with its public key and
//! its address `10.77.0.N:7400`, appended to the config the test passes (which must
//! define neither). With `RPCD_TEST_PLAINTEXT=1` the daemons run in plaintext instead
//! (no key, no peers, `daemon.plaintext = true`). [`Net::start`] prints which.
//!
//! Faults are kernel packet filters in a host's namespace, on its link only (never its
//! loopback): random loss with `iptables -m statistic`, and partitions (drop everything).
//! They live in two chains of their own (`FAULT_IN`, `FAULT_OUT`), so healing is a flush.
//! Duplication (`dup to`) and corruption (a payload byte rewritten, UDP checksum zeroed)
//! are nftables rules in a table of their own, deleted on healing. Reordering (the kernel
//! has no `netem`) steers a fraction of datagrams into a slow HTB lane on the host's link
//! (`tc`) by an nftables rule in that table: see [`Net::reorder`].
//!
//! Cleanup: dropping the [`Net`] kills its processes by pid and deletes its namespaces,
//! also when a test panics. Namespaces left by a test process that was killed outright are
//! deleted by the next [`Net::start`] (their names carry the dead process's pid).
//!
//! Requirements: root, `ip` (iproute2), `iptables` with the `statistic` match, `nft`
//! (nftables). Without
//! them [`Net::start`] prints why and returns `None` (the test skips), unless
//! `RPCD_REQUIRE_NETNS=1`, where it panics with the reason.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rpcd_client::conn::Connection;

use crate::{bin, example, tempdir, wait_until, ProcessGuard};

mod chaos;
mod faults;
mod probe;
pub use chaos::{REORDER_LANE_PACKETS, REORDER_LANE_RATE};
pub use faults::Direction;
use faults::{chance, iptables};
pub use probe::available;
use probe::{generate_key, keyed_mode, remove_stale_namespaces};

/// The UDP port every host's `rpcd` listens on.
pub const PORT: u16 = 7400;

/// Prefix of every namespace these tests create: `rpcdt-<pid>-<n>-<host>`.
const NS_PREFIX: &str = "rpcdt-";

/// One test host: a namespace, its address, its key, and its `rpcd` when running.
#[derive(Debug)]
pub struct Host {
    /// The host's name (`a`, `b`, `c`): its name in the other daemons' `[peers]` with
    /// keys.
    pub name: String,
    /// The namespace's name.
    pub ns: String,
    /// The host's address on the test network.
    pub addr: Ipv4Addr,
    /// The daemon's socket path.
    pub socket: PathBuf,
    /// The daemon's stderr log.
    pub log: PathBuf,
    /// The daemon's public key (base64) with keys; `None` in plaintext.
    pub public_key: Option<String>,
    /// The daemon's private key file, with keys.
    key_file: Option<PathBuf>,
    /// Datagrams sent through reordering lanes deleted since (see [`Net::reordered`]).
    reordered_earlier: AtomicU64,
    config: PathBuf,
    daemon: Option<ProcessGuard>,
}

impl Host {
    /// The daemon's UDP address (`addr:7400`).
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::from((self.addr, PORT))
    }

    /// The daemon's UDP address as a call target.
    pub fn target(&self) -> String {
        self.listen().to_string()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A test network of hosts, each a namespace on one bridge. Dropping it kills its
/// processes and deletes its namespaces.
#[derive(Debug)]
pub struct Net {
    /// The hosts, `a`, `b`, `c` in order; addresses `10.77.0.2`, `.3`, `.4`.
    pub hosts: Vec<Host>,
    keyed: bool,
    bridge_ns: String,
    helpers: Vec<ProcessGuard>,
    dir: tempfile::TempDir,
}

impl Net {
    /// Build a network of `hosts` (1..=3) namespaces, or `None` (test skipped, reason
    /// printed) when this machine cannot: see the module doc. Daemons are not started;
    /// with keys (unless `RPCD_TEST_PLAINTEXT=1`), every host's key is made here.
    pub fn start(hosts: usize) -> Option<Net> {
        assert!((1..=3).contains(&hosts), "1 to 3 hosts");
        if let Err(reason) = available() {
            if std::env::var("RPCD_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
                panic!("RPCD_REQUIRE_NETNS=1 but network namespaces are unusable: {reason}");
            }
            eprintln!("skipped: network namespace tests need {reason}");
            return None;
        }
        let keyed = keyed_mode();
        remove_stale_namespaces();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempdir();
        let mut net = Net {
            hosts: Vec::new(),
            keyed,
            bridge_ns: format!("{base}-br"),
            helpers: Vec::new(),
            dir,
        };
        // From here on, Drop deletes whatever was created, even if a step fails.
        ip(&["netns", "add", &net.bridge_ns]);
        let br = net.bridge_ns.clone();
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        for (i, letter) in ["a", "b", "c"].iter().take(hosts).enumerate() {
            let ns = format!("{base}-{letter}");
            let addr = Ipv4Addr::new(10, 77, 0, 2 + i as u8);
            ip(&["netns", "add", &ns]);
            let (key_file, public_key) = if keyed {
                let file = net.dir.path().join(format!("{letter}.key"));
                let public = generate_key(&file);
                (Some(file), Some(public))
            } else {
                (None, None)
            };
            net.hosts.push(Host {
                name: (*letter).to_owned(),
                public_key,
                key_file,
                reordered_earlier: AtomicU64::new(0),
                socket: net.dir.path().join(format!("{letter}.sock")),
                log: net.dir.path().join(format!("{letter}.log")),
                config: net.dir.path().join(format!("{letter}.toml")),
                ns: ns.clone(),
                addr,
                daemon: None,
            });
            let port = format!("v{letter}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            for (chain, hook, flag) in [("FAULT_IN", "INPUT", "-i"), ("FAULT_OUT", "OUTPUT", "-o")]
            {
                iptables(&ns, &["-N", chain]);
                iptables(&ns, &["-A", hook, flag, "eth0", "-j", chain]);
            }
        }
        eprintln!(
            "netns {base}: {hosts} host(s), {}",
            if keyed {
                "keys (each host its own; RPCD_TEST_PLAINTEXT=1 for plaintext)"
            } else {
                "plaintext (RPCD_TEST_PLAINTEXT=1)"
            }
        );
        Some(net)
    }

    /// Whether the daemons run with keys (the default), not in plaintext
    /// (`RPCD_TEST_PLAINTEXT=1`).
    pub fn keyed(&self) -> bool {
        self.keyed
    }

    /// The temporary directory holding sockets, configs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Start `rpcd` on host `i` with `config` (TOML) and wait until its socket answers.
    /// With keys, the harness appends `[security]` and a `[peers.NAME]` for every other
    /// host: `config` must have neither.
    pub fn start_daemon(&mut self, i: usize, config: &str) {
        for line in config.lines().map(str::trim_start) {
            assert!(
                !["[security", "[peers", "security.", "peers."]
                    .iter()
                    .any(|p| line.starts_with(p)),
                "a test's config may not set the daemon's key or peers (the harness does): {line:?}"
            );
        }
        let text = format!("{config}\n{}", self.identity_config(i));
        std::fs::write(&self.hosts[i].config, text).expect("write config");
        self.spawn_daemon(i);
    }

    /// Host `i`'s `[security]` and `[peers]` with keys; nothing in plaintext.
    fn identity_config(&self, i: usize) -> String {
        let Some(key) = &self.hosts[i].key_file else {
            return String::new();
        };
        let mut text = format!(
            "[security]\nprivate_key_file = {:?}\n",
            key.display().to_string()
        );
        for (j, peer) in self.hosts.iter().enumerate() {
            if j == i {
                continue;
            }
            let public = peer.public_key.as_deref().expect("every host has a key");
            text.push_str(&format!(
                "\n[peers.{}]\npublic_key = \"{public}\"\naddresses = [\"{}\"]\n",
                peer.name,
                peer.listen()
            ));
        }
        text
    }

    /// SIGKILL host `i`'s `rpcd` (no cleanup: its socket file stays).
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(mut d) = self.hosts[i].daemon.take() {
            d.kill();
        }
    }

    /// SIGKILL host `i`'s `rpcd` and start it again on the same address, socket and
    /// config: a new epoch.
    pub fn restart_daemon(&mut self, i: usize) {
        self.kill_daemon(i);
        self.spawn_daemon(i);
    }

    /// Send `sig` to host `i`'s `rpcd`.
    pub fn signal_daemon(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(d) = &self.hosts[i].daemon {
            d.signal(sig);
        }
    }

    /// Wait up to `timeout` for host `i`'s `rpcd` to exit; its status, or `None` if it
    /// still runs.
    pub fn wait_daemon(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let d = self.hosts[i].daemon.as_mut()?;
        let st = d.wait_timeout(timeout);
        if st.is_some() {
            self.hosts[i].daemon = None;
        }
        st
    }

    /// Whether host `i`'s `rpcd` process runs.
    pub fn daemon_alive(&mut self, i: usize) -> bool {
        match self.hosts[i].daemon.as_mut() {
            Some(d) => d.wait_timeout(Duration::ZERO).is_none(),
            None => false,
        }
    }

    /// A new connection to host `i`'s daemon.
    pub fn connect(&self, i: usize, name: &str) -> Connection {
        Connection::connect(&self.hosts[i].socket, name).expect("connect to rpcd")
    }

    /// Start `kv_server` (in the root namespace) on host `i`'s socket and wait until
    /// `kv.incr` is registered there. The caller owns the process.
    pub fn kv_server(&self, i: usize) -> ProcessGuard {
        let child = Command::new(example("kv_server"))
            .arg("--socket")
            .arg(&self.hosts[i].socket)
            .args(["--workers", "4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kv_server");
        let guard = ProcessGuard::new("kv_server", child);
        self.wait_registered(i, "kv.incr");
        guard
    }

    /// Start the at-most-once oracle's serving app (`fault_helper oracle`, in the root
    /// namespace) on host `i`'s socket, appending every execution of `oracle.run` to
    /// `log`, and wait until `oracle.run` is registered there. The caller owns the
    /// process; a new one on the same `log` keeps the record.
    pub fn oracle_server(&self, i: usize, log: &Path) -> ProcessGuard {
        self.spawn_oracle(i, log, &[])
    }

    fn spawn_oracle(&self, i: usize, log: &Path, extra: &[&str]) -> ProcessGuard {
        let child = Command::new(bin("fault_helper"))
            .arg("oracle")
            .arg(&self.hosts[i].socket)
            .arg(log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fault_helper oracle");
        let guard = ProcessGuard::new("oracle", child);
        self.wait_registered(i, "oracle.run");
        guard
    }

    /// Wait (up to 20 s) until `function` is registered on host `i`'s daemon.
    pub fn wait_registered(&self, i: usize, function: &str) {
        let ok = wait_until(Duration::from_secs(20), || {
            Connection::connect(&self.hosts[i].socket, "probe")
                .is_ok_and(|c| c.list().is_ok_and(|l| l.iter().any(|f| f == function)))
        });
        assert!(ok, "{function} was not registered on host {i}");
    }

    /// A command running `program` inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].ns]).arg(program);
        cmd
    }

    /// Spawn `cmd` (from [`Net::command`]) and keep it until the network is dropped;
    /// returns its pid.
    pub fn spawn_helper(&mut self, name: &str, cmd: &mut Command) -> u32 {
        let g = ProcessGuard::new(name, cmd.spawn().expect("spawn helper"));
        let pid = g.pid();
        self.helpers.push(g);
        pid
    }

    fn spawn_daemon(&mut self, i: usize) {
        let h = &self.hosts[i];
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&h.log)
            .expect("log file");
        let mut cmd = self.command(i, &bin("rpcd"));
        crate::isolate(&mut cmd).env("RUST_LOG", "info");
        if !self.keyed {
            // The namespace hosts' addresses are not loopback, and these daemons have no
            // keys: consent to plaintext explicitly.
            cmd.env("RPCD_DAEMON__PLAINTEXT", "true");
        }
        let child = cmd
            .arg("--listen")
            .arg(h.listen().to_string())
            .arg("--socket")
            .arg(&h.socket)
            .arg("--config")
            .arg(&h.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn rpcd");
        // `ip netns exec` execs rpcd in place: the pid is rpcd's.
        let mut guard = ProcessGuard::new(&h.ns, child);
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = guard.wait_timeout(Duration::ZERO) {
                panic!(
                    "rpcd on {} exited early ({st}); log:\n{}",
                    h.ns,
                    h.log_text()
                );
            }
            if let Ok(c) = Connection::connect(&h.socket, "harness") {
                assert_eq!(c.daemon().listen, h.listen().to_string());
                // The mode is the harness's: its key, or plaintext.
                let stats = c.stats().expect("stats of a new daemon");
                assert_eq!(stats.public_key, h.public_key, "rpcd on {}", h.ns);
                break;
            }
            assert!(
                Instant::now() < until,
                "rpcd on {} did not come up; log:\n{}",
                h.ns,
                h.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.hosts[i].daemon = Some(guard);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.helpers.clear();
        for h in &mut self.hosts {
            h.daemon = None;
        }
        for h in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &h.ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge_ns])
            .stderr(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// Run `ip ARGS`; panic with its stderr on failure.
fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
