//! Bulk through real daemons on loopback: a 4 MiB argument (and its 4 MiB echo) crosses
//! in datagrams of `transport.payload_max_loopback` bytes of message, so the daemons send
//! about 70 UDP datagrams each way, not the 3,500 that `payload_max` (1200) takes; with
//! `payload_max_loopback = 0` they fall back to `payload_max`. Counts from `stats` (a UDP
//! datagram counts once, `ipc-protocol.md` §8), not times.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use rpcd_client::conn::CallOptions;
use rpcd_client::ipc::Outcome;
use rpcd_tests::{tempdir, Daemon, Serving};

const LEN: usize = 4 * 1024 * 1024;

fn sent_to(stats: &rpcd_client::ipc::Stats, to: std::net::SocketAddr) -> u64 {
    stats
        .peers
        .iter()
        .find(|p| p.addr == to.to_string())
        .map_or(0, |p| p.counters.datagrams_sent)
}

/// Datagrams A sent to B and B to A while one `LEN`-byte call and its `LEN`-byte reply
/// crossed, with `config` for both daemons.
fn bulk_call(config: Option<&str>) -> (u64, u64) {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", config);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", config);
    let server = Arc::new(b.connect("echo-server"));
    let worker = Serving::start(server.clone(), "test.echo", Outcome::Ok);
    let client = a.connect("caller");
    let target = b.udp.to_string();
    let opts = CallOptions::new(Some(Duration::from_secs(60)), false);
    // A small call first: the channel is up before the counting starts.
    client
        .call(&target, "test.echo", b"warm".to_vec(), opts)
        .unwrap();
    let a0 = sent_to(&client.stats().unwrap(), b.udp);
    let b0 = sent_to(&server.stats().unwrap(), a.udp);
    let args: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let reply = client
        .call(&target, "test.echo", args.clone(), opts)
        .unwrap();
    assert!(reply == args, "the echo came back intact");
    // The last acknowledgements may still be on their way: counts settle within a moment.
    std::thread::sleep(Duration::from_millis(200));
    let a1 = sent_to(&client.stats().unwrap(), b.udp);
    let b1 = sent_to(&server.stats().unwrap(), a.udp);
    drop(worker);
    (a1 - a0, b1 - b0)
}

#[test]
fn a_bulk_call_on_loopback_crosses_in_large_datagrams() {
    let (a_to_b, b_to_a) = bulk_call(None);
    println!("4 MiB each way on loopback: A->B {a_to_b} datagrams, B->A {b_to_a}");
    // 70 fragments of 60,000 bytes each way, plus acknowledgements for the other
    // direction's and any retransmission: far under one datagram per 1200 bytes.
    let fragments = LEN.div_ceil(60_000) as u64;
    for sent in [a_to_b, b_to_a] {
        assert!(
            sent >= fragments,
            "{sent} datagrams for {fragments} fragments"
        );
        assert!(
            sent <= 3 * fragments,
            "{sent} datagrams for {fragments} fragments"
        );
    }
}

#[test]
fn payload_max_loopback_zero_keeps_small_datagrams_on_loopback() {
    let (a_to_b, b_to_a) = bulk_call(Some("[transport]\npayload_max_loopback = 0\n"));
    println!("4 MiB each way, payload_max_loopback = 0: A->B {a_to_b}, B->A {b_to_a}");
    let fragments = LEN.div_ceil(1200) as u64;
    // Bundles hold one full fragment at most: at least one datagram per fragment.
    for sent in [a_to_b, b_to_a] {
        assert!(
            sent >= fragments,
            "{sent} datagrams for {fragments} fragments"
        );
    }
}
