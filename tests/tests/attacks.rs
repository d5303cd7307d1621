//! Attacks from `shared/FAULTS.md`, tried through the real interfaces (the
//! socket, real datagrams) against real daemons: each test shows the attack
//! fails and what is observed instead.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{
    decode_frame, encode_frame, ClientMsg, DaemonMsg, ErrorCode, PROTOCOL_VERSION,
};
use rpcd_tests::{tempdir, wait_until, Daemon};
use rpcd_transport::{ChannelEvent, Config, Endpoint};

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
