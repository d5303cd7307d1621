//! Throughput of the client library (ignored by default; timing is not a test):
//!
//! ```text
//! cargo build --release -p rpcd -p rpcd-client --examples && \
//!   cargo test --release -p rpcd-tests --test client_bench -- --ignored --nocapture
//! ```
//!
//! Calls per second from one `Client` with 1 and with 32 concurrent callers, to a
//! `#[service]` echo served by a `Server` (default pool), on the same daemon (local short
//! circuit) and across two daemons on loopback (UDP). Reported, never asserted.

use std::thread;
use std::time::{Duration, Instant};

use rpcd_client::{CallOptions, Client, Server};
use rpcd_tests::{tempdir, Daemon};

#[rpcd_client::service]
trait Echo {
    fn echo(&self, seq: u64, payload: String) -> (u64, String);
}

struct EchoImpl;

impl Echo for EchoImpl {
    fn echo(&self, seq: u64, payload: String) -> (u64, String) {
        (seq, payload)
    }
}

const CALLS_TOTAL: u64 = 40_000;

fn measure(stub: &EchoClient, callers: u64) -> f64 {
    let per_caller = CALLS_TOTAL / callers;
    // Warm up the path (connection, channel, RTT estimate).
    for seq in 0..200 {
        stub.echo(seq, "warm").expect("warm-up call");
    }
    let started = Instant::now();
    thread::scope(|s| {
        for c in 0..callers {
            let stub = stub.clone();
            s.spawn(move || {
                for i in 0..per_caller {
                    let seq = c * per_caller + i;
                    let (back, _) = stub
                        .echo(seq, "payload-32-bytes-abcdefghijklmnop")
                        .expect("call");
                    assert_eq!(back, seq);
                }
            });
        }
    });
    (per_caller * callers) as f64 / started.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run explicitly, see the module docs"]
fn calls_per_second_with_1_and_32_callers() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let opts = CallOptions::new(Some(Duration::from_secs(30)), false);
    let client_a = Client::connect_to(&a.socket).expect("client on a");
    let server_a =
        Server::new(&Client::connect_to(&a.socket).expect("server on a")).expect("server");
    EchoImpl.serve(&server_a).expect("serve on a");
    let client_b = Client::connect_to(&b.socket).expect("client on b");
    let server_b = Server::new(&client_b).expect("server");
    EchoImpl.serve(&server_b).expect("serve on b");

    println!("workers per server: {}", server_a.options().workers);
    for (path, target) in [
        ("local (same daemon)", a.udp),
        ("across two daemons", b.udp),
    ] {
        let stub = EchoClient::new(&client_a, target).with_options(opts);
        for callers in [1, 32] {
            let rate = measure(&stub, callers);
            println!("{path:<22} callers={callers:<3} {rate:>10.0} calls/s");
        }
    }
    server_a.stop();
    server_b.stop();
}
