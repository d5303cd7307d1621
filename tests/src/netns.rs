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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rpcd_client::conn::Connection;

use crate::{bin, example, tempdir, wait_until, ProcessGuard};

mod chaos;
pub use chaos::{REORDER_LANE_PACKETS, REORDER_LANE_RATE};

/// The UDP port every host's `rpcd` listens on.
pub const PORT: u16 = 7400;

/// The nftables table holding duplication and corruption rules.
const NFT_TABLE: &str = "rpcd_fault";

/// Prefix of every namespace these tests create: `rpcdt-<pid>-<n>-<host>`.
const NS_PREFIX: &str = "rpcdt-";

/// Which traffic of a host a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Datagrams arriving at the host.
    In,
    /// Datagrams leaving the host.
    Out,
    /// Both.
    Both,
}

impl Direction {
    fn chains(self) -> &'static [&'static str] {
        match self {
            Direction::In => &["FAULT_IN"],
            Direction::Out => &["FAULT_OUT"],
            Direction::Both => &["FAULT_IN", "FAULT_OUT"],
        }
    }
}

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

    /// Drop a random fraction `probability` (0..=1) of host `i`'s traffic in `dir`,
    /// in addition to any fault already in force.
    pub fn loss(&self, i: usize, dir: Direction, probability: f64) {
        assert!((0.0..=1.0).contains(&probability));
        if probability == 0.0 {
            return;
        }
        let p = format!("{probability:.4}");
        for chain in dir.chains() {
            iptables(
                &self.hosts[i].ns,
                &[
                    "-A",
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            );
        }
    }

    /// Cut host `i` off the network: drop everything in and out of its link.
    pub fn partition(&self, i: usize) {
        for chain in Direction::Both.chains() {
            iptables(&self.hosts[i].ns, &["-I", chain, "-j", "DROP"]);
        }
    }

    /// Remove every fault of host `i`.
    pub fn heal(&self, i: usize) {
        for chain in Direction::Both.chains() {
            iptables(&self.hosts[i].ns, &["-F", chain]);
        }
        let _ = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.hosts[i].ns,
            "nft",
            "delete",
            "table",
            "ip",
            NFT_TABLE,
        ]));
    }

    /// Duplicate a random fraction `probability` of the datagrams host `i` sends to
    /// host `to`'s `rpcd` (nftables `dup to`: the kernel sends the copy to the same
    /// next hop, so `to` receives the datagram twice). Needs `nft`.
    pub fn duplicate(&self, i: usize, to: usize, probability: f64) {
        let dst = self.hosts[to].addr;
        self.nft_rule(
            i,
            &format!(
                "ip daddr {dst} udp dport {PORT} {} dup to {dst} device eth0",
                chance(probability)
            ),
        );
    }

    /// Corrupt a random fraction `probability` of the datagrams host `i` sends to host
    /// `to`'s `rpcd`: one byte (in the sequence counter, the selective ack, or the
    /// payload, a third of the time each) is overwritten and the UDP checksum set to 0
    /// ("none" in IPv4), so the datagram reaches `rpcd` corrupt. Needs `nft`.
    pub fn corrupt(&self, i: usize, to: usize, probability: f64) {
        let dst = self.hosts[to].addr;
        // Offsets in the rpcd datagram (see docs/wire-protocol.md), after the 8-byte
        // UDP header.
        for offset in [27u32, 44, 100] {
            let bits = (8 + offset) * 8;
            self.nft_rule(
                i,
                &format!(
                    "ip daddr {dst} udp dport {PORT} {} udp checksum set 0 @th,{bits},8 set 0x55",
                    chance(probability / 3.0)
                ),
            );
        }
    }

    fn nft_rule(&self, i: usize, rule: &str) {
        let ns = &self.hosts[i].ns;
        nft(ns, &format!("add table ip {NFT_TABLE}"));
        nft(
            ns,
            &format!("add chain ip {NFT_TABLE} out {{ type filter hook output priority 0; }}"),
        );
        nft(ns, &format!("add rule ip {NFT_TABLE} out {rule}"));
    }

    /// Packets dropped so far by host `i`'s fault rules.
    pub fn dropped(&self, i: usize) -> u64 {
        let mut total = 0;
        for chain in Direction::Both.chains() {
            let out = iptables(&self.hosts[i].ns, &["-L", chain, "-v", "-n", "-x"]);
            // Lines after the two headers: `pkts bytes target ...`.
            for line in String::from_utf8_lossy(&out.stdout).lines().skip(2) {
                let mut cols = line.split_whitespace();
                let packets = cols.next().and_then(|n| n.parse::<u64>().ok());
                if cols.nth(1) == Some("DROP") {
                    total += packets.unwrap_or(0);
                }
            }
        }
        total
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

/// Whether this machine can run the namespace tests: `Err` names what is missing.
pub fn available() -> Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK.get_or_init(check).clone()
}

fn check() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("root (to create network namespaces)".into());
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("nft", "nftables"),
    ] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("`{tool}` (package {package})"));
        }
    }
    // A namespace with a statistic-match rule proves the kernel side works.
    let ns = format!("{NS_PREFIX}{}-probe", std::process::id());
    let add = run(Command::new("ip").args(["netns", "add", &ns]));
    if !add.status.success() {
        return Err(format!(
            "`ip netns add` to work: {}",
            String::from_utf8_lossy(&add.stderr).trim()
        ));
    }
    let rule = run(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "iptables",
        "-A",
        "INPUT",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.5",
        "-j",
        "DROP",
    ]));
    let _ = run(Command::new("ip").args(["netns", "del", &ns]));
    if !rule.status.success() {
        return Err(format!(
            "iptables' statistic match in a namespace: {}",
            String::from_utf8_lossy(&rule.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether the daemons get keys: yes unless `RPCD_TEST_PLAINTEXT=1`.
fn keyed_mode() -> bool {
    match std::env::var("RPCD_TEST_PLAINTEXT").as_deref() {
        Err(_) | Ok("" | "0") => true,
        Ok("1") => false,
        Ok(other) => panic!("RPCD_TEST_PLAINTEXT={other:?}: set it to 1 (plaintext) or unset it"),
    }
}

/// A new private key in `file` (`rpcctl keys generate`: mode 0600); its public key.
fn generate_key(file: &Path) -> String {
    let mut cmd = Command::new(bin("rpcctl"));
    crate::isolate(&mut cmd)
        .args(["keys", "generate", "--out"])
        .arg(file);
    let out = crate::output_within(&mut cmd, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "rpcctl keys generate --out {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Delete namespaces named by a test process that no longer runs.
fn remove_stale_namespaces() {
    let out = run(Command::new("ip").args(["netns", "list"]));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
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

/// An nftables match true for a random fraction `probability` of packets.
fn chance(probability: f64) -> String {
    assert!((0.0..=1.0).contains(&probability));
    format!(
        "numgen random mod 10000 < {}",
        (probability * 10_000.0).round() as u32
    )
}

/// Run `nft COMMAND` in `ns`; panic on failure.
fn nft(ns: &str, command: &str) {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .arg(command));
    assert!(
        out.status.success(),
        "nft {command} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `iptables ARGS` in `ns` (waiting for the xtables lock); panic on failure.
fn iptables(ns: &str, args: &[&str]) -> Output {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w", "5"])
        .args(args));
    assert!(
        out.status.success(),
        "iptables {} in {ns}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
