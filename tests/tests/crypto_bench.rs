//! Encryption cost (ignored by default; timing is not a test):
//! `cargo build --release -p rpcd -p rpcctl && cargo test -p rpcd-tests --release --test crypto_bench -- --ignored --nocapture`
//!
//! Two pairs of daemons on loopback in one run — one pair with keys (Noise IK
//! sessions, ChaCha20-Poly1305 per datagram), one in plaintext — measured
//! alternately, three rounds each, with `rpcctl bench` calling `rpcd.echo`
//! with 32-byte arguments: one caller (p50 latency) and 32 callers on one
//! connection (calls/s). Reports the medians of the rounds and the ratio
//! keys/plaintext: the budget is at most 15 % cost.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rpcd_tests::{bin, output_within, tempdir, Daemon};
use rpcd_transport::secure::PrivateKey;

const ROUNDS: usize = 3;

fn key_file(dir: &Path, name: &str, key: &PrivateKey) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{}\n", key.to_base64())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Caller daemon A and serving daemon B, with keys or without.
fn pair(dir: &Path, keys: bool) -> (Daemon, Daemon) {
    let tag = if keys { "k" } else { "p" };
    if !keys {
        let b = Daemon::start(dir, &format!("{tag}b"), "127.0.0.1:0", None);
        let a = Daemon::start(dir, &format!("{tag}a"), "127.0.0.1:0", None);
        return (a, b);
    }
    let (ka, kb) = (
        PrivateKey::from_bytes([11; 32]),
        PrivateKey::from_bytes([12; 32]),
    );
    let fa = key_file(dir, "a.key", &ka);
    let fb = key_file(dir, "b.key", &kb);
    let b_config = format!(
        "[security]\nprivate_key_file = \"{}\"\n[peers.a]\npublic_key = \"{}\"\n",
        fb.display(),
        ka.public()
    );
    let b = Daemon::start(dir, &format!("{tag}b"), "127.0.0.1:0", Some(&b_config));
    let a_config = format!(
        "[security]\nprivate_key_file = \"{}\"\n[peers.b]\npublic_key = \"{}\"\naddresses = [\"{}\"]\n",
        fa.display(),
        kb.public(),
        b.udp
    );
    let a = Daemon::start(dir, &format!("{tag}a"), "127.0.0.1:0", Some(&a_config));
    (a, b)
}

/// `rpcctl bench` through A to B's `rpcd.echo`: (p50 µs, calls/s).
fn bench(a: &Daemon, b: &Daemon, calls: u64, concurrency: u16) -> (f64, f64) {
    let mut cmd = Command::new(bin("rpcctl"));
    cmd.arg("--socket")
        .arg(&a.socket)
        .args(["bench", &b.udp.to_string(), "rpcd.echo", "--json"])
        .args(["-n", &calls.to_string(), "-c", &concurrency.to_string()])
        // One 29-character string: 32 bytes of arguments as MessagePack.
        .arg(format!("\"{}\"", "x".repeat(29)));
    let out = output_within(&mut cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"].as_u64(), Some(calls), "every call succeeded: {v}");
    (
        v["latency_us"]["p50"].as_f64().unwrap(),
        v["calls_per_s"].as_f64().unwrap(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn encryption_cost_keys_against_plaintext() {
    let dir = tempdir();
    let plain = pair(dir.path(), false);
    let keyed = pair(dir.path(), true);
    // Warm up both (the keyed pair's handshake happens here).
    bench(&plain.0, &plain.1, 500, 1);
    bench(&keyed.0, &keyed.1, 500, 1);
    let (mut p1, mut k1, mut p32, mut k32) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let (pl, _) = bench(&plain.0, &plain.1, 5000, 1);
        let (kl, _) = bench(&keyed.0, &keyed.1, 5000, 1);
        let (_, pt) = bench(&plain.0, &plain.1, 50_000, 32);
        let (_, kt) = bench(&keyed.0, &keyed.1, 50_000, 32);
        println!(
            "round {round}: echo p50 plaintext {pl:.1} µs, keys {kl:.1} µs; \
             32 callers plaintext {pt:.0} calls/s, keys {kt:.0} calls/s"
        );
        p1.push(pl);
        k1.push(kl);
        p32.push(pt);
        k32.push(kt);
    }
    let (p1, k1, p32, k32) = (median(p1), median(k1), median(p32), median(k32));
    println!(
        "median echo p50: plaintext {p1:.1} µs, keys {k1:.1} µs: keys/plaintext {:.3}",
        k1 / p1
    );
    println!(
        "median 32-caller throughput: plaintext {p32:.0}/s, keys {k32:.0}/s: keys/plaintext {:.3}",
        k32 / p32
    );
    let stats = keyed.0.connect("bench").stats().unwrap();
    println!("keyed A security counters: {:?}", stats.security);
}
