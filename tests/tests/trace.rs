//! `rpcctl call --trace` against real daemons on loopback (`docs/cli.md`, "call --trace";
//! `docs/ipc-protocol.md` §5): the timeline of one call across both daemons, read from
//! `--json` (one object) and from the text form.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rpcd_client::ipc::Outcome;
use rpcd_tests::{bin, output_within, tempdir, Daemon, Serving};
use serde_json::Value;

const RUN_MAX: Duration = Duration::from_secs(60);

/// Datagrams at least this long carry a request's or a reply's fragment in these tests
/// (their arguments are larger); the handshake and acks are shorter.
const DATA_LEN_MIN: usize = 400;

/// A UDP relay from a client daemon to `server` that drops the first `drops` datagrams of
/// at least [`DATA_LEN_MIN`] bytes in each direction: chosen losses, no randomness.
struct DropRelay {
    front: SocketAddr,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DropRelay {
    fn start(server: SocketAddr, drops: u64) -> DropRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind back");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(1)))
                .expect("timeout");
        }
        let front_addr = front.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (stop2, dropped2) = (stop.clone(), dropped.clone());
        let thread = thread::spawn(move || {
            let mut client = None;
            let mut left = [drops, drops];
            let mut buf = vec![0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                for (dir, left) in left.iter_mut().enumerate() {
                    let (rx, tx) = if dir == 0 {
                        (&front, &back)
                    } else {
                        (&back, &front)
                    };
                    let Ok((n, from)) = rx.recv_from(&mut buf) else {
                        continue;
                    };
                    let to = if dir == 0 {
                        client = Some(from);
                        server
                    } else if let Some(c) = client {
                        c
                    } else {
                        continue;
                    };
                    if n >= DATA_LEN_MIN && *left > 0 {
                        *left -= 1;
                        dropped2.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let _ = tx.send_to(&buf[..n], to);
                }
            }
        });
        DropRelay {
            front: front_addr,
            dropped,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DropRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server app on `d` whose `trace.slow` sleeps `pause`, then echoes its arguments.
fn slow_echo(d: &Daemon, pause: Duration) -> Serving {
    Serving::on(d, "slow-echo", "trace.slow", move |args| {
        thread::sleep(pause);
        Outcome::Ok(args)
    })
}

fn rpcctl(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin("rpcctl"));
    cmd.arg("--socket").arg(socket).args(args);
    output_within(&mut cmd, RUN_MAX)
}

fn json_of(out: &std::process::Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A call through a relay that drops its first request datagram and its first reply
/// datagram: the trace shows the request's retransmission, the serving daemon's queue
/// and handler times (the handler sleeps 30 ms), the reply, and a total covering them.
#[test]
fn a_traced_call_through_a_lossy_relay_shows_retransmissions_and_both_sides() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let relay = DropRelay::start(b.udp, 1);
    let _server = slow_echo(&b, Duration::from_millis(30));
    let target = relay.front.to_string();
    let arg = format!("\"{}\"", "x".repeat(600));
    let out = rpcctl(
        &a.socket,
        &["--json", "call", &target, "trace.slow", &arg, "--trace"],
    );
    let doc = json_of(&out);
    // rpcctl sends its arguments as one array; the handler echoes it.
    assert_eq!(doc["reply"], serde_json::json!(["x".repeat(600)]), "{doc}");
    let t = &doc["trace"];
    assert_eq!(t["target"], Value::String(target.clone()), "{t}");
    assert_eq!(t["addresses"], serde_json::json!([target]), "{t}");
    let attempts = t["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{t}");
    let at = &attempts[0];
    assert_eq!(at["address"], Value::String(target.clone()), "{t}");
    assert_eq!(at["outcome"], "ok", "{t}");
    assert!(
        u(&at["retransmissions"]) >= 1,
        "the dropped request went again: {t}"
    );
    assert_eq!(
        u(&at["datagrams"]),
        u(&at["retransmissions"]) + 1,
        "one fragment, sent once plus its retransmissions: {t}"
    );
    assert!(u(&at["acked_us"]) > 0, "{t}");
    let serving = &t["serving"];
    assert!(
        u(&serving["handler_us"]) >= 30_000,
        "the handler slept 30 ms: {t}"
    );
    assert!(u(&serving["total_us"]) >= u(&serving["handler_us"]), "{t}");
    assert!(
        u(&serving["total_us"]) >= u(&serving["queued_us"]) + u(&serving["handler_us"]),
        "{t}"
    );
    assert!(
        u(&t["total_us"]) >= u(&at["acked_us"]).max(u(&serving["total_us"])),
        "{t}"
    );
    assert_eq!(relay.dropped.load(Ordering::Relaxed), 2, "one each way");

    // The text form tells the same story.
    let out = rpcctl(
        &a.socket,
        &["call", &target, "trace.slow", "\"hi\"", "--trace"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with('[') && text.find("\"hi\"") < text.find("trace of"),
        "the reply first: {text}"
    );
    assert!(
        text.contains(&format!("trace of trace.slow on {target}:")),
        "{text}"
    );
    assert!(text.contains("attempt 1 to"), "{text}");
    assert!(text.contains("at the serving daemon: queued"), "{text}");
}

/// A name whose first address is dead (a UDP socket that never answers): an idempotent
/// traced call shows both addresses, a first attempt ending `peer_unreachable` after
/// retransmissions, and a second attempt that answered.
#[test]
fn a_traced_call_to_a_name_with_a_dead_first_address_shows_the_failover() {
    let dir = tempdir();
    let dead = UdpSocket::bind("127.0.0.1:0").expect("bind the dead address");
    let dead_addr = dead.local_addr().expect("addr");
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let cfg = format!(
        "[names]\nkv = [\"{dead_addr}\", \"{}\"]\n\
         [transport]\nrto_initial_ms = 10\nrto_max_ms = 20\nretransmits_max = 3\n\
         keepalive_interval_ms = 50\npeer_timeout_ms = 300\n",
        b.udp
    );
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&cfg));
    let out = rpcctl(
        &a.socket,
        &[
            "--json",
            "call",
            "kv",
            "rpcd.echo",
            "7",
            "--idempotent",
            "--trace",
            "--deadline",
            "20s",
        ],
    );
    let doc = json_of(&out);
    assert_eq!(doc["reply"], serde_json::json!([7]), "{doc}");
    let t = &doc["trace"];
    assert_eq!(
        t["addresses"],
        serde_json::json!([dead_addr.to_string(), b.udp.to_string()]),
        "{t}"
    );
    let attempts = t["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{t}");
    assert_eq!(attempts[0]["address"], dead_addr.to_string(), "{t}");
    assert_eq!(attempts[0]["outcome"], "peer_unreachable", "{t}");
    assert_eq!(attempts[0]["acked_us"], 0, "{t}");
    assert_eq!(attempts[1]["address"], b.udp.to_string(), "{t}");
    assert_eq!(attempts[1]["outcome"], "ok", "{t}");
    assert!(
        u(&attempts[1]["start_us"]) >= u(&attempts[0]["end_us"]),
        "the second attempt after the first ended: {t}"
    );
    assert!(t["serving"].is_object(), "rpcd.echo served by b: {t}");
    drop(dead);
}
