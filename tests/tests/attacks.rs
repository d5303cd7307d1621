//! Attacks from `shared/FAULTS.md`, tried through the real interfaces (the
//! socket, real datagrams) against real daemons: each test shows the attack
//! fails and what is observed instead.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rpcd_client::conn::CallOptions;
use rpcd_client::ipc::{
    decode_frame, encode_frame, ClientMsg, DaemonMsg, ErrorCode, PROTOCOL_VERSION,
};
use rpcd_tests::{tempdir, wait_until, Daemon};
use rpcd_transport::wire::{Datagram, Kind};
use rpcd_transport::{ChannelEvent, Config, Endpoint, Seq};
use serde::{Deserialize, Serialize};

/// MessagePack: a map {"op": "call", "x": [nil; n]} — one valid-looking
/// message whose decoding buffers every nil.
fn nil_bomb(op_key: &str, op: &str, n: usize) -> Vec<u8> {
    let s = |x: &str| {
        let mut v = vec![0xa0 | x.len() as u8];
        v.extend_from_slice(x.as_bytes());
        v
    };
    let mut b = vec![0x82];
    b.extend(s(op_key));
    b.extend(s(op));
    b.extend(s("x"));
    b.push(0xdd);
    b.extend_from_slice(&(n as u32).to_be_bytes());
    b.resize(b.len() + n, 0xc0);
    b
}

/// Peak resident memory of a process, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

const MIB: u64 = 1024 * 1024;
/// 16 MiB of nils cost ~546 MiB in the daemon before values were counted
/// first; a frame or message this size may legitimately occupy a few
/// buffers of its size, no more.
const BOMB_MEMORY_MAX: u64 = 5 * 16 * MIB;

/// A 16 MiB frame of `nil`s on the local socket is refused with a fatal
/// frame naming the problem, and the daemon's peak memory stays within a
/// small multiple of the frame.
#[test]
fn messagepack_bomb_over_the_socket_is_refused_with_bounded_memory() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let mut s = UnixStream::connect(&a.socket).unwrap();
    s.write_all(&encode_frame(&ClientMsg::Hello {
        id: 1,
        version: PROTOCOL_VERSION,
        version_min: None,
        name: "bomber".into(),
    }))
    .unwrap();
    let body = nil_bomb("op", "call", 16 * 1024 * 1024 - 64);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    s.write_all(&frame).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut msgs = Vec::new();
    let mut rest = &got[..];
    while let Ok(Some((m, used))) = decode_frame::<DaemonMsg>(rest, 1 << 20) {
        msgs.push(m);
        rest = &rest[used..];
    }
    let fatal = msgs.iter().find_map(|m| match m {
        DaemonMsg::Fatal { code, message } => Some((*code, message.clone())),
        _ => None,
    });
    let (code, message) = fatal.expect("a fatal frame, then the close");
    assert_eq!(code, ErrorCode::ProtocolError);
    assert!(
        message.contains("more than 64 MessagePack values"),
        "{message}"
    );
    let peak = peak_rss(a.process.pid());
    assert!(peak < BOMB_MEMORY_MAX, "peak RSS {} MiB", peak / MIB);
    // The daemon still serves.
    a.connect("after").ping().unwrap();
}

/// A stranger's transport endpoint on a real UDP socket: sends one message
/// to `to` and drives the exchange until it is acknowledged.
fn send_as_stranger(to: SocketAddr, message: Vec<u8>) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut ep = Endpoint::new(Config::default(), 0x5eed_5eed);
    let start = Instant::now();
    ep.send(start, to, message).unwrap();
    let mut buf = vec![0u8; 65_536];
    while start.elapsed() < Duration::from_secs(20) {
        let now = Instant::now();
        ep.handle_timeout(now);
        while let Some(t) = ep.poll_transmit(now) {
            let _ = sock.send_to(&t.bytes, t.to);
        }
        while let Some(ev) = ep.poll_event() {
            match ev.kind {
                ChannelEvent::Acked { .. } => return true,
                ChannelEvent::Failed { .. } => return false,
                _ => {}
            }
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            ep.handle_datagram(Instant::now(), from, &buf[..n]);
        }
    }
    false
}

/// A 16 MiB transport message of `nil`s from a peer is dropped as a bad
/// envelope (counted `malformed`), never decoded value by value, and the
/// daemon's peak memory stays within a small multiple of the message.
#[test]
fn messagepack_bomb_over_udp_is_dropped_with_bounded_memory() {
    let dir = tempdir();
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let before = b.connect("stats").stats().unwrap().malformed;
    let bomb = nil_bomb("t", "req", 16 * 1024 * 1024 - 4096);
    assert!(
        send_as_stranger(b.udp, bomb),
        "the message was not acknowledged"
    );
    let stats = b.connect("stats");
    assert!(
        wait_until(Duration::from_secs(5), || stats
            .stats()
            .is_ok_and(|s| s.malformed == before + 1)),
        "the bomb was not counted as malformed"
    );
    let peak = peak_rss(b.process.pid());
    assert!(peak < BOMB_MEMORY_MAX, "peak RSS {} MiB", peak / MIB);
    stats.ping().unwrap();
}

/// A peer daemon played by the test: a transport endpoint on a real UDP
/// socket, answering RPC envelopes by hand. The test can also send raw
/// datagrams from the very same address (a forger with that source address).
struct FakePeer {
    sock: UdpSocket,
    ep: Endpoint,
    buf: Vec<u8>,
}

/// The fields of a request envelope this test reads (`docs/rpc-layer.md`).
#[derive(Deserialize)]
struct Request {
    t: String,
    call_id: u64,
    function: String,
}

/// A reply envelope with a result.
#[derive(Serialize)]
struct Reply {
    t: &'static str,
    call_id: u64,
    outcome: ReplyOutcome,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum ReplyOutcome {
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl FakePeer {
    fn start(epoch: u64) -> FakePeer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        FakePeer {
            sock,
            ep: Endpoint::new(Config::default(), epoch),
            buf: vec![0u8; 65_536],
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Drive the endpoint for `d`, handing every event to `f`.
    fn run_for(&mut self, d: Duration, mut f: impl FnMut(&mut Endpoint, SocketAddr, ChannelEvent)) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok((n, from)) = self.sock.recv_from(&mut self.buf) {
                self.ep
                    .handle_datagram(Instant::now(), from, &self.buf[..n]);
            }
            let now = Instant::now();
            self.ep.handle_timeout(now);
            while let Some(t) = self.ep.poll_transmit(now) {
                let _ = self.sock.send_to(&t.bytes, t.to);
            }
            while let Some(ev) = self.ep.poll_event() {
                f(&mut self.ep, ev.peer, ev.kind);
            }
        }
    }
}

/// Blind reset: while A's call waits for B's reply, a datagram forged with
/// B's source address claims a new epoch of B (with floors of 2^64 - 1, and
/// knowing no epoch of A's). A challenges the claim, nobody can answer, and
/// nothing changes: the call is not failed "peer restarted", B's real reply
/// (from the epoch A knows) is delivered, and A still knows B's epoch.
#[test]
fn blind_reset_with_a_forged_new_epoch_leaves_calls_in_flight_alone() {
    const B_EPOCH: u64 = 0xB0B0_B0B0;
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let mut b = FakePeer::start(B_EPOCH);
    let target = b.addr().to_string();
    let client = a.connect("client");
    let caller = std::thread::spawn(move || {
        let opts = CallOptions::new(Some(Duration::from_secs(20)), false);
        client.call(&target, "test.fn", b"args".to_vec(), opts)
    });
    // B receives the request (and acknowledges it): the call is in flight.
    let mut request = None;
    let started = Instant::now();
    while request.is_none() && started.elapsed() < Duration::from_secs(10) {
        b.run_for(Duration::from_millis(10), |_, from, ev| {
            if let ChannelEvent::Delivered { data, .. } = ev {
                let r: Request = rmp_serde::from_slice(&data).unwrap();
                assert_eq!((r.t.as_str(), r.function.as_str()), ("req", "test.fn"));
                request = Some((from, r.call_id));
            }
        });
    }
    let (a_addr, call_id) = request.expect("the request reached B");
    b.run_for(Duration::from_millis(50), |_, _, _| {});
    // The forgery, from B's address: a new epoch, no epoch of A's, bogus floors.
    let forged = Datagram {
        sender_epoch: 0xF0F0_F0F0,
        receiver_epoch: 0,
        kind: Kind::Probe,
        seq: Seq(0),
        send_floor: Seq(u64::MAX),
        msg_floor: u64::MAX,
        ack: None,
        ack_now: true,
        fragment: None,
        nonce: 0,
        key_id: 0,
    }
    .to_bundle();
    for _ in 0..3 {
        b.sock.send_to(&forged, a_addr).unwrap();
    }
    // A's challenge reaches the real B (addressed to an epoch B never had,
    // B's channel only acknowledges it); the call stays in flight.
    b.run_for(Duration::from_millis(500), |_, _, ev| {
        assert!(
            !matches!(ev, ChannelEvent::PeerRestarted),
            "B saw a restart"
        );
    });
    let stats = a.connect("stats").stats().unwrap();
    let peer = stats
        .peers
        .iter()
        .find(|p| p.addr == b.addr().to_string())
        .expect("A has a channel to B");
    assert_eq!(peer.epoch, Some(B_EPOCH), "A still knows B's epoch");
    assert!(!caller.is_finished(), "the call ended early");
    // B's real reply is delivered: the call succeeds.
    let reply = rmp_serde::to_vec_named(&Reply {
        t: "rep",
        call_id,
        outcome: ReplyOutcome::Ok(b"result".to_vec()),
    })
    .unwrap();
    b.ep.send(Instant::now(), a_addr, reply).unwrap();
    let started = Instant::now();
    while !caller.is_finished() && started.elapsed() < Duration::from_secs(10) {
        b.run_for(Duration::from_millis(10), |_, _, _| {});
    }
    assert_eq!(caller.join().unwrap().unwrap(), b"result");
    let stats = a.connect("stats").stats().unwrap();
    assert_eq!(stats.calls.get("ok").copied(), Some(1), "{:?}", stats.calls);
}
