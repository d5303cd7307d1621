//! Coalescing through real daemons: 32 threads share one connection to
//! daemon A and call a function an app serves behind daemon B; the
//! datagrams each daemon sent the other (UDP datagrams: a bundle counts
//! once, `ipc-protocol.md` §8) are fewer than the calls, each way. Without
//! coalescing every request and every reply is a datagram of its own (1.04
//! per call each way, counting acknowledgements). Counts, not times: with 32
//! calls in flight the daemons always find several messages queued for the
//! other in one loop iteration. The ratios are printed
//! (`--nocapture`); the assertion is the brief's bound, < 1.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use rpcd_client::conn::CallOptions;
use rpcd_client::ipc::Outcome;
use rpcd_tests::{tempdir, Daemon, Serving};

const CALLERS: usize = 32;
const CALLS_EACH: usize = 100;

fn sent_to(stats: &rpcd_client::ipc::Stats, to: std::net::SocketAddr) -> (u64, u64) {
    let p = stats
        .peers
        .iter()
        .find(|p| p.addr == to.to_string())
        .expect("a channel to the other daemon");
    (p.counters.datagrams_sent, p.counters.retransmissions)
}

#[test]
fn thirty_two_concurrent_calls_share_datagrams_both_ways() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    // The serving app behind B: echoes, from two worker threads.
    let server = Arc::new(b.connect("echo-server"));
    let workers = Serving::with_threads(server.clone(), "test.echo", 2, Outcome::Ok);
    let client = Arc::new(a.connect("callers"));
    let target = b.udp.to_string();
    let opts = CallOptions::new(Some(Duration::from_secs(20)), true);
    // One call first: the channel is up before the counting starts.
    client
        .call(&target, "test.echo", b"warm".to_vec(), opts)
        .unwrap();
    let a0 = sent_to(&client.stats().unwrap(), b.udp);
    let b0 = sent_to(&server.stats().unwrap(), a.udp);
    let callers: Vec<_> = (0..CALLERS)
        .map(|t| {
            let (client, target) = (client.clone(), target.clone());
            std::thread::spawn(move || {
                for i in 0..CALLS_EACH {
                    let args = format!("{t:02}-{i:04}-{}", "x".repeat(20)).into_bytes();
                    let r = client
                        .call(&target, "test.echo", args.clone(), opts)
                        .unwrap();
                    assert_eq!(r, args);
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    let a1 = sent_to(&client.stats().unwrap(), b.udp);
    let b1 = sent_to(&server.stats().unwrap(), a.udp);
    drop(workers);
    let calls = (CALLERS * CALLS_EACH) as f64;
    let a_per_call = (a1.0 - a0.0) as f64 / calls;
    let b_per_call = (b1.0 - b0.0) as f64 / calls;
    println!(
        "{CALLERS} callers x {CALLS_EACH} calls: A->B {:.3} UDP datagrams per call, B->A {:.3} \
         (retransmissions A {} B {})",
        a_per_call,
        b_per_call,
        a1.1 - a0.1,
        b1.1 - b0.1
    );
    assert!(a_per_call < 1.0, "A->B {a_per_call:.3} datagrams per call");
    assert!(b_per_call < 1.0, "B->A {b_per_call:.3} datagrams per call");
}
