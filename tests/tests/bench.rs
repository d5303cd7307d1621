//! Latency benchmark (ignored by default; timing is not a test):
//! `cargo build --release -p rpcd && cargo test -p rpcd-tests --release --test bench -- --ignored --nocapture`
//!
//! Measures, in one run on the same machine: a plain UDP ping-pong between two
//! threads (the floor), and `rpcd.echo` between two daemons on loopback
//! (app → rpcd A → UDP → rpcd B → UDP → rpcd A → app). Reports medians, p99
//! and the ratio, since absolute times on shared 2-core machines are noise.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use rpcd_client::conn::CallOptions;
use rpcd_tests::{tempdir, Daemon};

const ROUNDS: usize = 5000;
const WARMUP: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.50), percentile(&v, 0.99));
    println!(
        "{name:<28} n={:<6} p50={:>8.1} µs  p99={:>8.1} µs  max={:>8.1} µs",
        v.len(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        v[v.len() - 1].as_secs_f64() * 1e6
    );
    (p50, p99)
}

fn udp_ping_pong() -> Vec<Duration> {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..ROUNDS + WARMUP {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            b.send_to(&buf[..n], from).unwrap();
        }
    });
    let mut out = Vec::with_capacity(ROUNDS);
    let mut buf = [0u8; 64];
    for i in 0..ROUNDS + WARMUP {
        let t = Instant::now();
        a.send_to(b"ping-payload", b_addr).unwrap();
        let _ = a.recv_from(&mut buf).unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    echo.join().unwrap();
    let _ = a_addr;
    out
}

fn rpcd_echo() -> Vec<Duration> {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let client = a.connect("bench");
    let target = b.udp.to_string();
    let opts = CallOptions::new(Some(Duration::from_secs(5)), true);
    let mut out = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS + WARMUP {
        let t = Instant::now();
        let r = client
            .call(&target, "rpcd.echo", b"ping-payload".to_vec(), opts)
            .unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
        assert_eq!(r, b"ping-payload");
    }
    let stats = client.stats().unwrap();
    println!(
        "rpcd A: datagrams sent {} received {} retransmissions {} (per call {:.3} sent)",
        stats.totals.datagrams_sent,
        stats.totals.datagrams_received,
        stats.totals.retransmissions,
        stats.totals.datagrams_sent as f64 / (ROUNDS + WARMUP) as f64
    );
    out
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn echo_latency_against_udp_ping_pong() {
    let (u50, u99) = summary("plain UDP ping-pong", udp_ping_pong());
    let (r50, r99) = summary("rpcd.echo across 2 daemons", rpcd_echo());
    println!(
        "ratio rpcd/udp: p50 {:.1}x  p99 {:.1}x",
        r50.as_secs_f64() / u50.as_secs_f64(),
        r99.as_secs_f64() / u99.as_secs_f64()
    );
}
