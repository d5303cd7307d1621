//! Regenerates the table in `docs/reliability.md` (between its `figures:begin` and
//! `figures:end` markers) and prints it:
//!
//! ```text
//! cargo build --release -p rpcd -p rpcd-client --examples --bins && \
//!   cargo test --release -p rpcd-tests --test reliability_figures -- --ignored --nocapture
//! ```
//!
//! Two namespace hosts, `rpcd` on both with default settings, the at-most-once oracle's
//! serving app on B; for each loss rate (iptables `statistic` on B's link, both
//! directions) A makes `CALLS` `oracle.run` calls from `CALLERS` threads on one
//! connection, and then, on the same namespaces under
//! the same rules, `fault_helper tcp-client` makes `CALLS` request/response exchanges of
//! 64 bytes over `CALLERS` TCP connections to `fault_helper tcp-serve` on B.
//! Needs root; ignored by default because it measures rather than tests. It still
//! tests one thing: if the oracle finds a call that ran twice, an `ok` that did not run
//! exactly once, or a definite failure that ran, it fails and leaves the docs untouched.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod faultlib;

use std::sync::Arc;
use std::time::{Duration, Instant};

use faultlib::{quantile, run_calls, verdict, Calls, Oracle};
use rpcd_tests::netns::{Direction, Net};
use rpcd_tests::{bin, wait_until};

const A: usize = 0;
const B: usize = 1;
const CALLS: usize = 2000;
const CALLERS: usize = 8;
const DEADLINE: Duration = Duration::from_secs(10);
const TCP_PORT: u16 = 7500;

#[test]
#[ignore = "measures; run by hand to regenerate docs/reliability.md"]
fn reliability_figures() {
    let Some(mut net) = Net::start(2) else {
        return;
    };
    net.start_daemon(A, "");
    net.start_daemon(B, "");
    let oracle = Oracle::start(&net, B);
    let tcp_addr = format!("{}:{TCP_PORT}", net.host(B).addr);
    let mut serve = net.command(B, &bin("fault_helper"));
    serve
        .args(["tcp-serve", &tcp_addr])
        .stdout(std::process::Stdio::null());
    net.spawn_helper("tcp-serve", &mut serve);
    // The TCP server is up when a clean exchange works.
    assert!(wait_until(Duration::from_secs(10), || tcp(
        &net, &tcp_addr, 1
    )
    .0
    .len()
        == 1));

    let conn = [Arc::new(net.connect(A, "figures"))];
    let target = net.host(B).target();
    let retransmissions = || {
        [A, B]
            .iter()
            .map(|&i| {
                net.connect(i, "stats")
                    .stats()
                    .unwrap()
                    .totals
                    .retransmissions
            })
            .sum::<u64>()
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut violations = Vec::new();
    let mut all = Vec::new();
    for loss in [0.0, 0.01, 0.05, 0.10, 0.30] {
        net.heal(B);
        let r0 = retransmissions();
        net.loss(B, Direction::Both, loss);
        let tally = run_calls(&Calls {
            conns: &conn,
            target: target.clone(),
            callers: CALLERS,
            calls: CALLS,
            deadline: DEADLINE,
            stop: None,
        });
        let (tcp_ok, tcp_failed) = tcp(&net, &tcp_addr, CALLS);
        net.heal(B);
        // Over every call so far: the log holds the earlier loss rates' runs too.
        all.extend(tally.records.iter().cloned());
        let check = match verdict(&oracle.executions(), &all) {
            Ok(_) if tally.ok() == tally.records.len() => "every call ran once".to_owned(),
            Ok(_) => {
                let runs = oracle.executions();
                let unknown: Vec<_> = tally.records.iter().filter(|r| r.unknown).collect();
                let ran = unknown
                    .iter()
                    .filter(|r| runs.contains_key(&r.nonce))
                    .count();
                format!(
                    "ok ran once each; {ran} of {} outcome-unknown ran",
                    unknown.len()
                )
            }
            Err(why) => {
                violations.push(format!("{:.0} % loss: {why}", loss * 100.0));
                "violated".to_owned()
            }
        };
        let retx = retransmissions() - r0;
        let failures: Vec<String> = tally
            .by_outcome()
            .into_iter()
            .filter(|(k, _)| k != "ok")
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let row = format!(
            "| {:>4.0} % | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} |",
            loss * 100.0,
            tally.records.len(),
            tally.ok(),
            if failures.is_empty() {
                "—".to_owned()
            } else {
                failures.join(", ")
            },
            check,
            ms(tally.quantile(0.5)),
            ms(tally.quantile(0.99)),
            retx as f64 / tally.records.len() as f64,
            ms(quantile(&tcp_ok, 0.5)),
            ms(quantile(&tcp_ok, 0.99)),
            tcp_failed,
        );
        eprintln!("{row}");
        rows.push(row);
    }
    let table = format!(
        "| loss (each way) | rpcd calls | ok | failures | at-most-once oracle | p50 | p99 | \
         retransmissions per call | TCP p50 | TCP p99 | TCP failed |\n\
         |---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|\n{}\n",
        rows.join("\n")
    );
    println!("{table}");
    eprintln!("figures took {:?}", started.elapsed());
    assert!(
        violations.is_empty(),
        "at-most-once violated; docs left untouched:\n{}",
        violations.join("\n")
    );
    write_into_doc(&table);
}

/// `n` TCP exchanges from A to B's echo server: latencies of the good ones, count failed.
fn tcp(net: &Net, addr: &str, n: usize) -> (Vec<Duration>, usize) {
    let out = net
        .command(A, &bin("fault_helper"))
        .args([
            "tcp-client",
            addr,
            &CALLERS.min(n).to_string(),
            &n.to_string(),
            "64",
            &DEADLINE.as_millis().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ok = Vec::new();
    let mut failed = 0;
    for line in text.lines() {
        match line.strip_prefix("ok ") {
            Some(us) => ok.push(Duration::from_micros(us.parse().unwrap())),
            None => failed += 1,
        }
    }
    (ok, failed)
}

fn ms(d: Option<Duration>) -> String {
    match d {
        None => "—".into(),
        Some(d) if d < Duration::from_millis(10) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
    }
}

/// Replace the text between the markers in `docs/reliability.md`.
fn write_into_doc(table: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reliability.md");
    let Ok(doc) = std::fs::read_to_string(&path) else {
        eprintln!("{} not found; table printed only", path.display());
        return;
    };
    let (begin, end) = ("<!-- figures:begin -->\n", "<!-- figures:end -->");
    let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
        eprintln!(
            "no figures markers in {}; table printed only",
            path.display()
        );
        return;
    };
    let new = format!("{}{table}{}", &doc[..b + begin.len()], &doc[e..]);
    std::fs::write(&path, new).unwrap();
    eprintln!("updated {}", path.display());
}
