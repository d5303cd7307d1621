//! The attacks of `shared/FAULTS.md` ("Attacks") against daemons with keys, through real
//! `rpcd` processes and real UDP datagrams: A and B trust each other by key, B serves
//! functions that count their executions, and each test tries one attack and shows it
//! fails — the function does not run, calls in flight are unaffected, and B's (or A's)
//! `security` counters say why.
//!
//! Keys are fixed per test (`PrivateKey::from_bytes`), daemons listen on port 0, so a
//! daemon that must be reached first is started first: B knows A by key only, A knows B's
//! key and address (as `keys::a_peer_name_is_a_call_target` does).
//!
//! Spoofing a daemon's exact source address needs a raw socket (root); without one the
//! spoofing tests send their forgeries from another socket and say so. With keys the
//! source address authenticates nothing — only a session's keys do — so the forgery
//! meets the same checks either way; the spoofed copy shows it also holds for a datagram
//! from the peer's own address and port.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rpcd_client::conn::Connection;
use rpcd_client::ipc::Stats;
use rpcd_client::{CallError, CallOptions, Client, Handler, Outcome, Server, ServerOptions};
use rpcd_tests::{
    drain, peak_rss, raise_fd_limit, tempdir, wait_until, Daemon, Spoofer, Tap, Toward,
};
use rpcd_transport::secure::{PeerKey, PrivateKey, PublicKey, Security};
use rpcd_transport::seq::Seq;
use rpcd_transport::wire::{AckInfo, Datagram, Fragment, Kind};
use rpcd_transport::{ChannelEvent, Config, Endpoint};
use serde::Serialize;

/// Generous: how long an outcome may take to show on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ keyed daemons

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

/// A trusted peer in a daemon's configuration.
struct Peer<'a> {
    name: &'a str,
    key: &'a PrivateKey,
    at: Option<SocketAddr>,
}

fn peer<'a>(name: &'a str, key: &'a PrivateKey, at: Option<SocketAddr>) -> Peer<'a> {
    Peer { name, key, at }
}

/// The configuration of daemon `name` with private key `me` (written 0600 into `dir`),
/// the trusted `peers`, and `extra` TOML.
fn keyed_config(
    dir: &Path,
    name: &str,
    me: &PrivateKey,
    peers: &[Peer<'_>],
    extra: &str,
) -> String {
    let file = dir.join(format!("{name}.key"));
    std::fs::write(&file, me.to_base64()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = format!(
        "[security]\nprivate_key_file = {:?}\n",
        file.display().to_string()
    );
    for p in peers {
        c.push_str(&format!(
            "[peers.{}]\npublic_key = \"{}\"\n",
            p.name,
            p.key.public()
        ));
        if let Some(at) = p.at {
            c.push_str(&format!("addresses = [\"{at}\"]\n"));
        }
    }
    c.push_str(extra);
    c
}

/// `rpcd` named `name` with key `me` and `peers`, on an ephemeral loopback port.
fn keyed(dir: &Path, name: &str, me: &PrivateKey, peers: &[Peer<'_>], extra: &str) -> Daemon {
    let config = keyed_config(dir, name, me, peers, extra);
    Daemon::start(dir, name, "127.0.0.1:0", Some(&config))
}

/// B (knows A by key) and A (knows B's key and address), and B's counting service.
/// (Fields drop in order: the service, the daemons, then their directory.)
struct Pair {
    service: Service,
    a: Daemon,
    b: Daemon,
    dir: tempfile::TempDir,
}

const KA: u8 = 0xa1;
const KB: u8 = 0xb2;

fn pair() -> Pair {
    let dir = tempdir();
    let (ka, kb) = (key(KA), key(KB));
    let b = keyed(dir.path(), "b", &kb, &[peer("a", &ka, None)], "");
    let a = keyed(dir.path(), "a", &ka, &[peer("b", &kb, Some(b.udp))], "");
    let service = Service::on(&b);
    Pair { service, a, b, dir }
}

fn deadline(ms: u64) -> CallOptions {
    CallOptions::new(Some(Duration::from_millis(ms)), false)
}

/// The functions B serves: `test.count` (counts, returns its argument), `test.hold`
/// (counts, then waits for the gate before answering "real"), `test.whoami` (who called).
struct Service {
    server: Server,
    _client: Client,
    /// Executions of `test.count` and `test.hold`.
    runs: Arc<AtomicU64>,
    /// `test.hold` invocations waiting at the gate or past it.
    held: Arc<AtomicU64>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Service {
    fn on(d: &Daemon) -> Service {
        let client = Client::connect_to(&d.socket).unwrap();
        let server = Server::with_options(&client, ServerOptions::new(4, 64)).unwrap();
        let runs = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicU64::new(0));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        {
            let runs = runs.clone();
            server
                .register_fn("test.count", move |(tag,): (u64,)| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(tag)
                })
                .unwrap();
        }
        {
            let (runs, held, gate) = (runs.clone(), held.clone(), gate.clone());
            server
                .register_fn("test.hold", move |(_,): (u64,)| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    held.fetch_add(1, Ordering::SeqCst);
                    let (open, cv) = &*gate;
                    let open = open.lock().unwrap();
                    let _ = cv
                        .wait_timeout_while(open, Duration::from_secs(60), |o| !*o)
                        .unwrap();
                    Ok::<_, String>("real".to_owned())
                })
                .unwrap();
        }
        server
            .register(
                "test.whoami",
                Handler::with_request(|req| {
                    let seen = (req.peer, req.caller, req.identity().to_string());
                    Outcome::Ok(rmp_serde::to_vec(&seen).expect("strings encode"))
                }),
            )
            .unwrap();
        Service {
            server,
            _client: client,
            runs,
            held,
            gate,
        }
    }

    fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    fn open_gate(&self) {
        let (open, cv) = &*self.gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.open_gate();
        self.server.stop();
    }
}

/// `client` calls `test.count(tag)` on `target` and expects `tag` back.
fn count_call(client: &Client, target: &str, tag: u64) {
    let got: u64 = client
        .call_with(target, "test.count", &(tag,), deadline(15_000))
        .unwrap_or_else(|e| panic!("test.count({tag}) on {target}: {e}"));
    assert_eq!(got, tag);
}

/// A's call of `test.hold` on B, in flight on its own thread until B's gate opens.
fn hold_call(client: &Client, service: &Service) -> thread::JoinHandle<Result<String, CallError>> {
    let client = client.clone();
    let before = service.held.load(Ordering::SeqCst);
    let t = thread::spawn(move || client.call_with("b", "test.hold", &(1u64,), deadline(30_000)));
    assert!(
        wait_until(WAIT, || service.held.load(Ordering::SeqCst) > before),
        "test.hold started on B"
    );
    t
}

// ------------------------------------------------------------------ counters

fn stats(c: &Connection) -> Stats {
    c.stats().unwrap()
}

/// The sum of the named `security` counters.
fn sec(s: &Stats, keys: &[&str]) -> u64 {
    keys.iter()
        .map(|k| {
            *s.security
                .get(*k)
                .unwrap_or_else(|| panic!("no counter {k}"))
        })
        .sum()
}

/// Wait until the named counters of `c`'s daemon sum to at least `n`; the last stats.
fn wait_sec(c: &Connection, keys: &[&str], n: u64) -> Stats {
    let mut last = stats(c);
    let ok = wait_until(WAIT, || {
        last = stats(c);
        sec(&last, keys) >= n
    });
    assert!(ok, "{keys:?} did not reach {n}: {:?}", last.security);
    last
}

/// Names of the peers a daemon keeps state for (`None`: an unauthenticated entry).
fn peer_names(s: &Stats) -> Vec<Option<String>> {
    s.peers.iter().map(|p| p.name.clone()).collect()
}

// ------------------------------------------------------------------ forgeries

/// The RPC envelopes of `daemon/src/envelope.rs`, built independently.
#[derive(Serialize)]
struct Request<'a> {
    t: &'static str,
    call_id: u64,
    function: &'a str,
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
    deadline_ms: u64,
    idempotent: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum RemoteOutcome {
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Serialize)]
struct Reply {
    t: &'static str,
    call_id: u64,
    outcome: RemoteOutcome,
}

fn request_envelope(call_id: u64, function: &str, args: Vec<u8>, deadline_ms: u64) -> Vec<u8> {
    rmp_serde::to_vec_named(&Request {
        t: "req",
        call_id,
        function,
        args,
        deadline_ms,
        idempotent: true,
    })
    .unwrap()
}

fn reply_envelope(call_id: u64, result: &[u8]) -> Vec<u8> {
    rmp_serde::to_vec_named(&Reply {
        t: "rep",
        call_id,
        outcome: RemoteOutcome::Ok(result.to_vec()),
    })
    .unwrap()
}

/// A plaintext ("RD", as a v1 peer sends) data datagram carrying the whole `message`,
/// with acknowledgement fields and floors as far forward as they go.
fn plain_data(
    sender_epoch: u64,
    receiver_epoch: u64,
    seq: u64,
    msg_id: u64,
    message: &[u8],
) -> Vec<u8> {
    Datagram {
        sender_epoch,
        receiver_epoch,
        kind: Kind::Data,
        seq: Seq(seq),
        send_floor: Seq(seq),
        msg_floor: msg_id,
        ack: None,
        ack_now: true,
        fragment: Some(Fragment {
            msg_id,
            index: 0,
            count: 1,
            payload: message,
        }),
        key_id: 0,
        nonce: 0,
    }
    .to_bundle()
}

/// A plaintext fragment `index` of a message of `count` fragments.
fn plain_fragment(
    sender_epoch: u64,
    seq: u64,
    msg_id: u64,
    index: u32,
    count: u32,
    payload: &[u8],
) -> Vec<u8> {
    Datagram {
        sender_epoch,
        receiver_epoch: 0,
        kind: Kind::Data,
        seq: Seq(seq),
        send_floor: Seq(0),
        msg_floor: 0,
        ack: None,
        ack_now: false,
        fragment: Some(Fragment {
            msg_id,
            index,
            count,
            payload,
        }),
        key_id: 0,
        nonce: 0,
    }
    .to_bundle()
}

/// A plaintext probe: "I am a peer with this epoch" (a new epoch: the blind reset).
fn plain_probe(sender_epoch: u64, receiver_epoch: u64) -> Vec<u8> {
    Datagram {
        sender_epoch,
        receiver_epoch,
        kind: Kind::Probe,
        seq: Seq(0),
        send_floor: Seq(0),
        msg_floor: 0,
        ack: None,
        ack_now: true,
        fragment: None,
        key_id: 0,
        nonce: 0,
    }
    .to_bundle()
}

/// A plaintext ack that acknowledges everything and moves every floor to the end.
fn plain_forged_ack(sender_epoch: u64, receiver_epoch: u64) -> Vec<u8> {
    Datagram {
        sender_epoch,
        receiver_epoch,
        kind: Kind::Ack,
        seq: Seq(0),
        send_floor: Seq(u64::MAX),
        msg_floor: u64::MAX,
        ack: Some(AckInfo {
            ack: Seq(u64::MAX / 2),
            sack: u64::MAX,
            window: u32::MAX,
        }),
        ack_now: false,
        fragment: None,
        key_id: 0,
        nonce: 0,
    }
    .to_bundle()
}

/// An authenticated-mode transport datagram for a guessed session and counter, with
/// garbage for ciphertext and tag.
fn sealed_guess(receiver: u32, counter: u64, inner_len: usize) -> Vec<u8> {
    let mut d = b"RS\x01\x04".to_vec();
    d.extend_from_slice(&receiver.to_be_bytes());
    d.extend_from_slice(&counter.to_be_bytes());
    d.extend((0..inner_len + 16).map(|i| (i as u8).wrapping_mul(31) ^ receiver as u8));
    d
}

fn wall_clock() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// A real handshake initiation to `to` from a stranger: a key (`stranger`) that knows
/// `responder`'s public key but that `to` does not trust.
fn stranger_initiation(stranger: &PrivateKey, responder: PublicKey, to: SocketAddr) -> Vec<u8> {
    let mut ep = Endpoint::with_security(
        Config::default(),
        0x5eed,
        Security::Keys {
            local: stranger.clone(),
            peers: vec![PeerKey {
                name: "b".into(),
                public: responder,
                addresses: vec![to],
            }],
        },
        [0x42; 32],
        wall_clock(),
    );
    let now = Instant::now();
    ep.send(now, to, b"x".to_vec()).unwrap();
    let t = ep.poll_transmit(now).expect("an initiation");
    assert_eq!(t.bytes.len(), 152, "an initiation is 152 bytes");
    assert_eq!(&t.bytes[..4], b"RS\x01\x01");
    t.bytes
}

/// Sends forgeries to a daemon claiming to come from another daemon's exact address
/// (with a raw socket, as root), and always from an ordinary socket of its own too.
struct Forger {
    spoofer: Option<Spoofer>,
    own: UdpSocket,
}

impl Forger {
    fn new(test: &str) -> Forger {
        let spoofer = match Spoofer::new() {
            Ok(s) => Some(s),
            Err(why) => {
                println!(
                    "{test}: {why}; skipping the spoofed copies (the forgeries still go from \
                     another socket: with keys the source address authenticates nothing)"
                );
                None
            }
        };
        Forger {
            spoofer,
            own: UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    /// How many copies `send` makes of each forgery.
    fn copies(&self) -> u64 {
        1 + u64::from(self.spoofer.is_some())
    }

    /// Send `bytes` to `to` as `claimed` (spoofed) and from our own socket.
    fn send(&self, claimed: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if let Some(s) = &self.spoofer {
            s.send(v4(claimed), v4(to), bytes).unwrap();
        }
        self.own.send_to(bytes, to).unwrap();
    }
}

/// A plaintext (v1) transport endpoint of a stranger, on its own UDP socket: sends
/// `message` to `to` and runs the exchange until it is acknowledged or `within` passes.
/// Whether it was acknowledged, and the bytes the stranger received.
fn plaintext_stranger_sends(to: SocketAddr, message: Vec<u8>, within: Duration) -> (bool, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut ep = Endpoint::new(Config::default(), 0x0bad_5eed);
    let start = Instant::now();
    ep.send(start, to, message).unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut received = 0;
    while start.elapsed() < within {
        let now = Instant::now();
        ep.handle_timeout(now);
        while let Some(t) = ep.poll_transmit(now) {
            let _ = sock.send_to(&t.bytes, t.to);
        }
        while let Some(ev) = ep.poll_event() {
            if let ChannelEvent::Acked { .. } = ev.kind {
                return (true, received);
            }
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            received += n;
            ep.handle_datagram(Instant::now(), from, &buf[..n]);
        }
    }
    (false, received)
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("loopback IPv4 only"),
    }
}

// ------------------------------------------------------------------ the attacks

/// A stranger gets silence: hand-made plaintext requests (as a v1 peer sends them) and a
/// stranger's own keyed rpcd (which knows B's public key) call B's function; it never
/// runs, the stranger receives not one byte, B counts `not_authenticated` and
/// `unknown_key` and keeps no peer entry. The same plaintext request does run the
/// function on a plaintext daemon (the forgery is a real request).
#[test]
fn a_stranger_gets_silence_and_never_runs_a_function() {
    let p = pair();
    let sb = p.b.connect("stats");
    let from_a = Client::connect_to(&p.a.socket).unwrap();
    count_call(&from_a, "b", 1);
    assert_eq!(p.service.runs(), 1);
    let args = rmp_serde::to_vec(&(7u64,)).unwrap();

    // Control: a plaintext daemon runs the forged request.
    let plain = Daemon::start(p.dir.path(), "plain", "127.0.0.1:0", None);
    let plain_service = Service::on(&plain);
    let (acked, _) = plaintext_stranger_sends(
        plain.udp,
        request_envelope(1, "test.count", args.clone(), 5_000),
        WAIT,
    );
    assert!(acked, "the plaintext daemon took the request");
    assert!(wait_until(WAIT, || plain_service.runs() == 1), "and ran it");
    // Gone before it retransmits its reply to a port another test may reuse.
    drop(plain_service);
    drop(plain);

    // Hand-made datagrams: requests with B's real epoch and with none, and probes.
    let before = stats(&sb);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0;
    for i in 1..=50u64 {
        let env = request_envelope(i, "test.count", args.clone(), 5_000);
        for receiver_epoch in [0, before.epoch] {
            stranger
                .send_to(&plain_data(0x5700 + i, receiver_epoch, i, i, &env), p.b.udp)
                .unwrap();
            sent += 1;
        }
        stranger
            .send_to(&plain_probe(0x5700 + i, 0), p.b.udp)
            .unwrap();
        sent += 1;
    }
    // A full v1 peer, running the plaintext protocol with retransmissions.
    let (acked, received) = plaintext_stranger_sends(
        p.b.udp,
        request_envelope(99, "test.count", args, 5_000),
        Duration::from_secs(1),
    );
    assert!(!acked);
    assert_eq!(received, 0, "the v1 stranger got nothing back");
    wait_sec(
        &sb,
        &["not_authenticated"],
        sec(&before, &["not_authenticated"]) + sent + 1,
    );

    // A stranger's own rpcd, with its own key, knowing B's public key; a tap counts
    // what comes back to it.
    let tap = Tap::start(p.b.udp);
    let ks = key(0x55);
    let s = keyed(
        p.dir.path(),
        "stranger",
        &ks,
        &[peer("b", &key(KB), Some(tap.front))],
        "",
    );
    let err = Client::connect_to(&s.socket)
        .unwrap()
        .call_with::<_, u64>("b", "test.count", &(8u64,), deadline(2_000))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::DeadlineExceeded(_) | CallError::PeerUnreachable(_)
        ),
        "{err:?}"
    );
    let after = wait_sec(&sb, &["unknown_key"], sec(&before, &["unknown_key"]) + 1);
    assert!(tap.bytes(Toward::Server) >= 152, "the stranger did try");
    assert_eq!(tap.bytes(Toward::Client), 0, "B sent the stranger nothing");
    assert_eq!(
        drain(&stranger, p.b.udp),
        (0, 0),
        "nor the hand-made requests"
    );
    assert_eq!(p.service.runs(), 1, "the function never ran for a stranger");
    assert!(
        after
            .peers
            .iter()
            .all(|e| e.name.as_deref() == Some("a") && e.addr == p.a.udp.to_string()),
        "B keeps state for A only: {:?}",
        after.peers
    );
    assert_eq!(after.security["handshakes"], before.security["handshakes"]);
    // B still serves A.
    count_call(&from_a, "b", 2);
    assert_eq!(p.service.runs(), 2);
}

/// A blind reset: while A has a call in flight to B, datagrams claiming B's address and a
/// new epoch go to A (and claiming A's to B), in plaintext and as guessed sealed
/// datagrams. They are counted and dropped: the call completes with B's reply, nobody
/// sees a restart, both keep the other's epoch.
#[test]
fn a_blind_reset_leaves_the_call_in_flight_alone() {
    let p = pair();
    let forger = Forger::new("a_blind_reset_leaves_the_call_in_flight_alone");
    let (sa, sb) = (p.a.connect("stats"), p.b.connect("stats"));
    let from_a = Client::connect_to(&p.a.socket).unwrap();
    count_call(&from_a, "b", 1);
    let call = hold_call(&from_a, &p.service);
    let (before_a, before_b) = (stats(&sa), stats(&sb));
    let b_epoch_at_a = before_a.peers[0].epoch;

    let n = 200u64;
    for i in 0..n {
        let new_epoch = 0xdead_0000 + i;
        forger.send(p.b.udp, p.a.udp, &plain_probe(new_epoch, before_a.epoch));
        forger.send(p.a.udp, p.b.udp, &plain_probe(new_epoch, before_b.epoch));
        forger.send(p.b.udp, p.a.udp, &sealed_guess(i as u32, i, 96));
        forger.send(p.a.udp, p.b.udp, &sealed_guess(i as u32, i, 96));
    }
    let sealed = ["unknown_session", "auth_failed"];
    let k = forger.copies();
    for (c, before) in [(&sa, &before_a), (&sb, &before_b)] {
        wait_sec(
            c,
            &["not_authenticated"],
            sec(before, &["not_authenticated"]) + k * n,
        );
        wait_sec(c, &sealed, sec(before, &sealed) + k * n);
    }
    p.service.open_gate();
    assert_eq!(call.join().unwrap().unwrap(), "real", "the call completed");
    count_call(&from_a, "b", 2);
    let (after_a, after_b) = (stats(&sa), stats(&sb));
    for s in [&after_a, &after_b] {
        assert!(!s.calls.contains_key("peer_restarted"), "{:?}", s.calls);
        assert_eq!(s.peers.len(), 1, "{:?}", s.peers);
    }
    assert_eq!(
        after_a.peers[0].epoch, b_epoch_at_a,
        "A still has B's epoch"
    );
    assert_eq!(after_b.peers[0].epoch, before_b.peers[0].epoch);
    assert_eq!(after_a.calls.get("ok"), Some(&3));
    assert_eq!(p.service.runs(), 3);
}

/// Forged acknowledgements and floors (`msg_floor` = 2⁶⁴−1, everything acked) to B, and
/// hundreds of forged replies for guessed call ids and counters to A, while A's call is
/// in flight: none is delivered; A gets B's real reply, and the channel carries on.
#[test]
fn forged_acks_floors_and_replies_never_reach_the_caller() {
    let p = pair();
    let forger = Forger::new("forged_acks_floors_and_replies_never_reach_the_caller");
    let (sa, sb) = (p.a.connect("stats"), p.b.connect("stats"));
    let from_a = Client::connect_to(&p.a.socket).unwrap();
    count_call(&from_a, "b", 1);
    let call = hold_call(&from_a, &p.service);
    let (before_a, before_b) = (stats(&sa), stats(&sb));
    // The attacker knows both epochs (the worst case).
    let (ea, eb) = (before_a.epoch, before_b.epoch);
    let forged = rmp_serde::to_vec("forged").unwrap();

    let n = 300u64;
    for guess in 0..n {
        let reply = reply_envelope(guess, &forged);
        forger.send(
            p.b.udp,
            p.a.udp,
            &plain_data(eb, ea, guess + 1, guess, &reply),
        );
        forger.send(p.a.udp, p.b.udp, &plain_forged_ack(ea, eb));
        forger.send(p.b.udp, p.a.udp, &sealed_guess(guess as u32, guess, 64));
    }
    let k = forger.copies();
    let sealed = ["unknown_session", "auth_failed"];
    wait_sec(
        &sa,
        &["not_authenticated"],
        sec(&before_a, &["not_authenticated"]) + k * n,
    );
    wait_sec(&sa, &sealed, sec(&before_a, &sealed) + k * n);
    wait_sec(
        &sb,
        &["not_authenticated"],
        sec(&before_b, &["not_authenticated"]) + k * n,
    );

    assert!(!call.is_finished(), "no forged reply answered the call");
    p.service.open_gate();
    assert_eq!(
        call.join().unwrap().unwrap(),
        "real",
        "B's reply, not a forged one"
    );
    count_call(&from_a, "b", 2);
    let after_a = stats(&sa);
    assert_eq!(after_a.late_replies, before_a.late_replies);
    assert_eq!(after_a.calls.get("ok"), Some(&3));
    assert_eq!(p.service.runs(), 3);
}

/// An on-path attacker records everything A sends B and sends it again — at once, from
/// A's address and from another, and after B restarted with the same key: every call ran
/// exactly once; replayed datagrams are counted `replayed`, a replayed initiation
/// `handshake_replayed`, datagrams of a session gone with the restart `unknown_session`.
#[test]
fn replayed_datagrams_run_nothing_twice_even_after_a_restart() {
    let dir = tempdir();
    let (ka, kb) = (key(KA), key(KB));
    let mut b = keyed(dir.path(), "b", &kb, &[peer("a", &ka, None)], "");
    let tap = Tap::start(b.udp);
    let a = keyed(dir.path(), "a", &ka, &[peer("b", &kb, Some(tap.front))], "");
    let from_a = Client::connect_to(&a.socket).unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_udp = b.udp;
    let replay = |captured: &[Vec<u8>]| {
        for d in captured {
            tap.inject_to_server(d);
            elsewhere.send_to(d, b_udp).unwrap();
        }
    };
    let transport = |captured: &[Vec<u8>]| {
        captured
            .iter()
            .filter(|d| d.starts_with(b"RS\x01\x04"))
            .count() as u64
    };

    let service = Service::on(&b);
    count_call(&from_a, "b", 1);
    count_call(&from_a, "b", 2);
    let sb = b.connect("stats");
    let first = tap.captured(Toward::Server);
    assert!(
        first[0].starts_with(b"RS\x01\x01"),
        "the capture opens with the handshake"
    );
    let before = stats(&sb);
    replay(&first);
    // From A's address, every transport datagram is a replay; from elsewhere, no
    // session knows it; the initiation elsewhere is older than the one accepted.
    wait_sec(
        &sb,
        &["replayed"],
        before.security["replayed"] + transport(&first),
    );
    wait_sec(
        &sb,
        &["handshake_replayed"],
        before.security["handshake_replayed"] + 1,
    );
    wait_sec(
        &sb,
        &["unknown_session"],
        before.security["unknown_session"] + transport(&first),
    );
    assert_eq!(service.runs(), 2, "nothing ran twice");

    // B restarts with the same key (and port): the old sessions are gone with it.
    drop(service);
    drop(sb);
    b.restart_after_kill(dir.path(), "b");
    let service = Service::on(&b);
    let sb = b.connect("stats");
    let before = stats(&sb);
    replay(&first);
    wait_sec(
        &sb,
        &["unknown_session"],
        before.security["unknown_session"] + 2 * transport(&first),
    );
    // A learns of the restart with a builtin (nothing counted): a call sent before A
    // heard of the new epoch may fail `peer_restarted`, the next one does not.
    let echo = || from_a.call_with::<_, Vec<String>>("b", "rpcd.echo", &["x"], deadline(15_000));
    if let Err(e) = echo() {
        assert!(matches!(e, CallError::PeerRestarted(_)), "{e:?}");
        echo().unwrap();
    }
    count_call(&from_a, "b", 3);
    // A new session with the restarted B; replay both it and the old one.
    let all = tap.captured(Toward::Server);
    let before = stats(&sb);
    replay(&all);
    wait_sec(&sb, &["replayed"], before.security["replayed"] + 1);
    wait_sec(
        &sb,
        &["handshake_replayed"],
        before.security["handshake_replayed"] + 1,
    );
    // From A's address the new session's datagrams are replays and the old session's
    // unknown; from elsewhere all are unknown.
    let after = wait_sec(
        &sb,
        &["replayed", "unknown_session"],
        sec(&before, &["replayed", "unknown_session"]) + 2 * transport(&all),
    );
    assert_eq!(
        service.runs(),
        1,
        "the restarted B ran call 3 once, nothing else"
    );
    assert_eq!(
        peer_names(&after),
        [Some("a".to_owned())],
        "{:?}",
        after.peers
    );
    count_call(&from_a, "b", 4);
    assert_eq!(service.runs(), 2);
}

/// One plaintext probe and one stranger's initiation from each of 1,024 source ports:
/// B answers none, keeps no state (its only peer is A, with a peer table of 4), and a
/// new configured peer C then connects and calls, and B calls a new peer D.
#[test]
fn probes_from_a_thousand_ports_leave_no_state_and_new_peers_get_in() {
    let dir = tempdir();
    let (ka, kb, kc, kd) = (key(KA), key(KB), key(0xc3), key(0xd4));
    let d = keyed(dir.path(), "d", &kd, &[peer("b", &kb, None)], "");
    let b = keyed(
        dir.path(),
        "b",
        &kb,
        &[
            peer("a", &ka, None),
            peer("c", &kc, None),
            peer("d", &kd, Some(d.udp)),
        ],
        "[transport]\npeers_max = 4\n",
    );
    let a = keyed(dir.path(), "a", &ka, &[peer("b", &kb, Some(b.udp))], "");
    let service = Service::on(&b);
    count_call(&Client::connect_to(&a.socket).unwrap(), "b", 1);
    let sb = b.connect("stats");
    let before = stats(&sb);

    let init = stranger_initiation(&key(0x66), kb.public(), b.udp);
    // 1,024 distinct source ports, 128 sockets open at a time (a normal user may hold
    // only 1,024 files): each batch probes, B has counted it, nothing came back.
    let mut ports = std::collections::HashSet::new();
    let handshakes = ["unknown_key", "rate_limited", "cookies_sent"];
    let mut last = before.clone();
    while ports.len() < 1024 {
        let batch: Vec<UdpSocket> = (0..128.min(1024 - ports.len()))
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .filter(|s| ports.insert(s.local_addr().unwrap().port()))
            .collect();
        for (i, s) in batch.iter().enumerate() {
            s.send_to(&plain_probe(0x1000 + i as u64, 0), b.udp)
                .unwrap();
            s.send_to(&init, b.udp).unwrap();
        }
        let n = batch.len() as u64;
        wait_sec(
            &sb,
            &["not_authenticated"],
            sec(&last, &["not_authenticated"]) + n,
        );
        // One source IP: a few initiations cost a Diffie-Hellman (unknown key), the
        // rest are over the per-source rate; none is answered.
        last = wait_sec(&sb, &handshakes, sec(&last, &handshakes) + n);
        thread::sleep(Duration::from_millis(20));
        for s in &batch {
            assert_eq!(
                drain(s, b.udp),
                (0, 0),
                "a probe was answered: {:?}",
                last.security
            );
        }
    }
    let after = last;
    assert_eq!(
        after.security["cookies_sent"],
        before.security["cookies_sent"]
    );
    assert_eq!(
        peer_names(&after),
        [Some("a".to_owned())],
        "{:?}",
        after.peers
    );
    assert_eq!(after.refused_peers, before.refused_peers);

    // A new peer gets in (its first handshakes may meet the rate limit the probes used
    // up: it retries), and B reaches a new peer.
    let c = keyed(dir.path(), "c", &kc, &[peer("b", &kb, Some(b.udp))], "");
    count_call(&Client::connect_to(&c.socket).unwrap(), "b", 2);
    let echoed: Vec<String> = Client::connect_to(&b.socket)
        .unwrap()
        .call_with("d", "rpcd.echo", &["hi"], deadline(15_000))
        .unwrap();
    assert_eq!(echoed, ["hi"]);
    let mut names = peer_names(&stats(&sb));
    names.sort();
    assert_eq!(
        names,
        [Some("a".into()), Some("c".into()), Some("d".into())]
    );
    assert_eq!(service.runs(), 2);
}

/// A flood of real-looking handshake initiations (a stranger's, which pass mac1) from
/// 2,048 source addresses while A connects for the first time: B answers with cookies
/// instead of Diffie-Hellman work, A proves its address and its call succeeds, and the
/// flood's sockets receive fewer bytes than they sent (no amplification).
#[test]
fn a_handshake_flood_meets_cookies_and_the_real_peer_still_connects() {
    let dir = tempdir();
    let (ka, kb) = (key(KA), key(KB));
    let b = keyed(dir.path(), "b", &kb, &[peer("a", &ka, None)], "");
    let service = Service::on(&b);
    let sb = b.connect("stats");
    let before = stats(&sb);
    let init = Arc::new(stranger_initiation(&key(0x77), kb.public(), b.udp));
    // Spoofed sources: every 127/8 address is this host's, so the flood comes from
    // 2,048 addresses other than A's 127.0.0.1, each with its own port (fewer if this
    // process may not open that many files).
    let sources = (raise_fd_limit(2048 + 512).saturating_sub(512)).min(2048) as u32;
    if sources < 2048 {
        println!("flooding from {sources} sockets only: the open-files limit allows no more");
    }
    assert!(sources >= 256, "too few files for a flood: {sources}");
    let flood: Arc<Vec<UdpSocket>> = Arc::new(
        (0..sources)
            .map(|i| {
                let ip = std::net::Ipv4Addr::new(127, 1, (i / 200) as u8, (i % 200 + 1) as u8);
                UdpSocket::bind((ip, 0)).unwrap()
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    let flooder = {
        let (flood, stop, sent, rounds, init, to) = (
            flood.clone(),
            stop.clone(),
            sent.clone(),
            rounds.clone(),
            init.clone(),
            b.udp,
        );
        thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                for s in flood.iter() {
                    if s.send_to(&init, to).is_ok() {
                        sent.fetch_add(init.len(), Ordering::Relaxed);
                    }
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                // Some 20,000 initiations a second, 200 times `handshake_load_max`: a
                // flood of handshakes, not of bytes (one that fills the socket drops
                // the real peer's datagrams with the rest, in the kernel).
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    wait_sec(&sb, &["cookies_sent"], before.security["cookies_sent"] + 1);
    assert!(wait_until(WAIT, || rounds.load(Ordering::Relaxed) >= 3));

    // A connects under the flood.
    let a = keyed(dir.path(), "a", &ka, &[peer("b", &kb, Some(b.udp))], "");
    count_call(&Client::connect_to(&a.socket).unwrap(), "b", 1);
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    // B works through what its socket still holds; then every answer is in.
    let seen = ["cookies_sent", "unknown_key", "rate_limited"];
    let mut last = 0;
    let settled = wait_until(WAIT, || {
        thread::sleep(Duration::from_millis(100));
        let now = sec(&stats(&sb), &seen);
        std::mem::replace(&mut last, now) == now
    });
    assert!(settled, "B kept answering after the flood stopped");
    let got: Vec<(usize, usize)> = flood.iter().map(|s| drain(s, b.udp)).collect();
    let after = stats(&sb);
    let (bytes_in, datagrams_in) = got.iter().fold((0, 0), |(b, d), &(x, y)| (b + x, d + y));
    let bytes_out = sent.load(Ordering::Relaxed);
    println!(
        "flood: {} rounds, {bytes_out} bytes sent, {bytes_in} bytes in {datagrams_in} \
         datagrams back; B: {:?}",
        rounds.load(Ordering::Relaxed),
        after.security
    );
    assert!(
        bytes_out > 0 && bytes_in <= bytes_out,
        "amplification {bytes_in}/{bytes_out}"
    );
    assert!(
        got.iter().all(|&(bytes, n)| bytes == 64 * n),
        "every answer to the flood is a 64-byte cookie reply"
    );
    let met = after.security["cookies_sent"] - before.security["cookies_sent"];
    println!(
        "A {} a cookie",
        if met > datagrams_in as u64 {
            "met"
        } else {
            "did not meet"
        }
    );
    assert!(datagrams_in as u64 <= met);
    assert!(after.security["cookies_sent"] > before.security["cookies_sent"]);
    assert_eq!(
        peer_names(&after),
        [Some("a".to_owned())],
        "no state for the flood"
    );
    assert_eq!(service.runs(), 1);
}

/// A 173-byte `rpcd.stats` request forged as a plaintext datagram, and every other kind
/// of unauthenticated input, sent to a keyed daemon from a victim's socket: not one byte
/// comes back. (The same request to a plaintext daemon is answered.)
#[test]
fn unauthenticated_input_is_never_answered_let_alone_amplified() {
    let dir = tempdir();
    let kb = key(KB);
    let b = keyed(dir.path(), "b", &kb, &[peer("a", &key(KA), None)], "");
    let plain = Daemon::start(dir.path(), "plain", "127.0.0.1:0", None);
    let args = rmp_serde::to_vec(&()).unwrap();
    let stats_request = |epoch| {
        plain_data(
            0x7777,
            epoch,
            1,
            1,
            &request_envelope(1, "rpcd.stats", args.clone(), 100_000),
        )
    };
    assert_eq!(stats_request(0).len(), 173);

    // Control: a plaintext daemon answers it.
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    victim.send_to(&stats_request(0), plain.udp).unwrap();
    victim
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 65_536];
    let (n, _) = victim
        .recv_from(&mut buf)
        .expect("the plaintext daemon answers");
    println!("control: a plaintext daemon answers the 173-byte request with {n} bytes first");
    drop(plain);

    let sb = b.connect("stats");
    let before = stats(&sb);
    let mut junk_init = vec![0x11u8; 152];
    junk_init[..4].copy_from_slice(b"RS\x01\x01");
    let mut junk_resp = vec![0x22u8; 100];
    junk_resp[..4].copy_from_slice(b"RS\x01\x02");
    let mut junk_cookie = vec![0x33u8; 64];
    junk_cookie[..4].copy_from_slice(b"RS\x01\x03");
    let inputs: Vec<Vec<u8>> = vec![
        stats_request(0),
        stats_request(before.epoch),
        plain_probe(0x7777, 0),
        stranger_initiation(&key(0x88), kb.public(), b.udp),
        junk_init,
        junk_resp,
        junk_cookie,
        sealed_guess(1, 0, 96),
        b"RS\x01\x09 an unknown type".to_vec(),
        vec![0xff; 1200],
        Vec::new(),
    ];
    let rounds = 20;
    let mut bytes_out = 0;
    for _ in 0..rounds {
        for d in &inputs {
            victim.send_to(d, b.udp).unwrap();
            bytes_out += d.len();
        }
    }
    let counted = [
        "not_authenticated",
        "malformed",
        "bad_mac",
        "unknown_key",
        "rate_limited",
        "unknown_session",
    ];
    let after = wait_sec(
        &sb,
        &counted,
        sec(&before, &counted) + rounds * inputs.len() as u64,
    );
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        drain(&victim, b.udp),
        (0, 0),
        "{bytes_out} bytes in, nothing out: {:?}",
        after.security
    );
    assert!(after.peers.is_empty(), "{:?}", after.peers);
}

/// A fragment bomb from strangers: 20,000 empty and 1-byte fragments of messages that
/// claim a million fragments each, never completed, from several sockets. All dropped
/// unopened (`not_authenticated`), no peer entry, and B's peak memory barely moves.
#[test]
fn a_fragment_bomb_from_strangers_is_dropped_with_bounded_memory() {
    let p = pair();
    let from_a = Client::connect_to(&p.a.socket).unwrap();
    count_call(&from_a, "b", 1);
    let sb = p.b.connect("stats");
    let before = stats(&sb);
    let peak_before = peak_rss(p.b.process.pid());
    let strangers: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let total = 20_000u64;
    let batch = 100u64;
    let mut sent = 0u64;
    while sent < total {
        for i in sent..sent + batch {
            let s = &strangers[(i % 4) as usize];
            let payload: &[u8] = if i % 2 == 0 { b"" } else { b"x" };
            let d = plain_fragment(
                0xf00 + i % 4,
                i + 1,
                i / 4,
                (i * 7919 % (1 << 20)) as u32,
                1 << 20,
                payload,
            );
            s.send_to(&d, p.b.udp).unwrap();
        }
        sent += batch;
        wait_sec(
            &sb,
            &["not_authenticated"],
            before.security["not_authenticated"] + sent,
        );
    }
    let after = stats(&sb);
    let peak_after = peak_rss(p.b.process.pid());
    const MIB: u64 = 1 << 20;
    println!(
        "fragment bomb: {total} datagrams; B's peak RSS {} KiB -> {} KiB",
        peak_before / 1024,
        peak_after / 1024
    );
    assert!(
        peak_after < peak_before + 8 * MIB,
        "peak RSS {} MiB -> {} MiB",
        peak_before / MIB,
        peak_after / MIB
    );
    assert_eq!(peer_names(&after), [Some("a".to_owned())]);
    assert_eq!(after.malformed, before.malformed);
    for s in &strangers {
        assert_eq!(drain(s, p.b.udp), (0, 0));
    }
    count_call(&from_a, "b", 2);
    assert_eq!(p.service.runs(), 2);
}

/// B's configuration rewritten with `peers` and reloaded (SIGHUP), once B logged it.
fn reload_b(p: &Pair, peers: &[Peer<'_>]) {
    let reloads = || p.b.log_text().matches("settings reloaded").count();
    let n = reloads();
    std::fs::write(
        p.dir.path().join("b.toml"),
        keyed_config(p.dir.path(), "b", &key(KB), peers, ""),
    )
    .unwrap();
    p.b.process.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(WAIT, || reloads() > n), "B reloaded");
}

/// A calls B; B's operator removes A from `[peers]` and reloads: B forgets A at once,
/// A's next call fails and runs nothing, B counts what A still sends.
fn remove_a_from_b(p: &Pair, from_a: &Client) {
    let sb = p.b.connect("stats");
    count_call(from_a, "b", 1);
    assert_eq!(peer_names(&stats(&sb)), [Some("a".to_owned())]);
    reload_b(p, &[]);
    let removed = stats(&sb);
    assert!(removed.peers.is_empty(), "{:?}", removed.peers);
    let err = from_a
        .call_with::<_, u64>("b", "test.count", &(2u64,), deadline(2_000))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::DeadlineExceeded(_) | CallError::PeerUnreachable(_)
        ),
        "{err:?}"
    );
    // A's datagrams in its old session, then its new handshakes.
    let refused = ["unknown_session", "unknown_key"];
    let cut = wait_sec(
        &sb,
        &["unknown_session"],
        sec(&removed, &["unknown_session"]) + 1,
    );
    let cut = wait_sec(&sb, &refused, sec(&cut, &refused) + 1);
    assert_eq!(
        cut.security["handshakes"], removed.security["handshakes"],
        "no session for a removed peer"
    );
    assert!(cut.peers.is_empty(), "{:?}", cut.peers);
    assert_eq!(p.service.runs(), 1, "nothing ran for a removed peer");
}

/// B's operator removes A from `[peers]` and reloads (SIGHUP): B forgets A at once
/// (no peer entry), A's next call fails (`deadline_exceeded`) and runs nothing, and B
/// counts A's datagrams `unknown_session` and its new handshakes `unknown_key`.
#[test]
fn a_peer_removed_on_reload_is_cut_off_at_once() {
    let p = pair();
    let from_a = Client::connect_to(&p.a.socket).unwrap();
    remove_a_from_b(&p, &from_a);
}

/// After the removal above, re-adding A and reloading lets A's calls through again.
///
/// The regression it guards: `Endpoint::set_peers` once dropped the removed peer's channel
/// without moving the endpoint's channel generation (as `evict_idle` does), so B's new
/// channel to A had the old channel's epoch; A, which kept its channel, took B's new
/// datagrams (sequence numbers from 1 again) for duplicates: B ran A's call and replied, A
/// dropped the reply, and the call ended `deadline_exceeded`.
#[test]
fn a_peer_added_back_on_reload_is_answered_again() {
    let p = pair();
    let from_a = Client::connect_to(&p.a.socket).unwrap();
    remove_a_from_b(&p, &from_a);
    reload_b(&p, &[peer("a", &key(KA), None)]);
    let got = from_a.call_with::<_, u64>("b", "test.count", &(3u64,), deadline(15_000));
    let (sa, sb) = (stats(&p.a.connect("stats")), stats(&p.b.connect("stats")));
    assert_eq!(
        got,
        Ok(3),
        "B ran {} calls; A's view of B: {:?}",
        p.service.runs(),
        sa.peers
    );
    // Call 2's request (its caller gone) may also have reached B once A was back.
    assert!((2..=3).contains(&p.service.runs()));
    assert_eq!(peer_names(&sb), [Some("a".to_owned())]);
}

/// With keys, a handler on B sees who called by the name B's configuration gives A's key
/// (`peer` = "a", identity `peer a`), with A's address as `caller`; a local app is
/// "local".
#[test]
fn a_handler_sees_the_configured_name_of_a_keyed_caller() {
    let p = pair();
    type Seen = (String, String, String);
    let seen: Seen = Client::connect_to(&p.a.socket)
        .unwrap()
        .call_with("b", "test.whoami", &(), deadline(15_000))
        .unwrap();
    assert_eq!(seen, ("a".into(), p.a.udp.to_string(), "peer a".into()));
    let seen: Seen = Client::connect_to(&p.b.socket)
        .unwrap()
        .call_with(p.b.udp, "test.whoami", &(), deadline(15_000))
        .unwrap();
    assert_eq!(seen, ("local".into(), "local".into(), "local".into()));
}
