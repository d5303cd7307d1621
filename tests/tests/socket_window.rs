//! The receive window a daemon advertises never lets a peer's flight exceed what its UDP
//! socket holds (`wire-protocol.md` §7.4, `limits.udp_recv_buffer` in `config.md`). B gets
//! a 128 KiB receive buffer (below any `net.core.rmem_max` a Linux host starts with, so the
//! kernel grants it and reads back 256 KiB); a tap between A and B records B's
//! acknowledgements while a 1 MiB argument crosses in 60,000-byte loopback fragments.
//! Every window B advertised is at most the 4 such datagrams that buffer holds (not the
//! 1,024 of `recv_window`), and the call still completes.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use rpcd_client::conn::CallOptions;
use rpcd_client::ipc::Outcome;
use rpcd_tests::{tempdir, Daemon, Serving, Tap, Toward};
use rpcd_transport::wire::Bundle;

#[test]
fn the_advertised_window_fits_the_receivers_socket() {
    let dir = tempdir();
    let b = Daemon::start(
        dir.path(),
        "b",
        "127.0.0.1:0",
        Some("[limits]\nudp_recv_buffer = 131072\n"),
    );
    let tap = Tap::start(b.udp);
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let server = Arc::new(b.connect("echo-server"));
    let worker = Serving::start(server.clone(), "test.echo", Outcome::Ok);
    let client = a.connect("caller");
    let opts = CallOptions::new(Some(Duration::from_secs(60)), false);
    let args: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let reply = client.call(&tap.front.to_string(), "test.echo", args.clone(), opts);
    drop(worker);
    assert!(reply.unwrap() == args, "the echo came back intact");

    let windows: Vec<u32> = tap
        .captured(Toward::Client)
        .iter()
        .filter_map(|udp| Bundle::parse(udp).ok())
        .flat_map(|bundle| bundle.datagrams.into_iter().filter_map(|d| d.ack))
        .map(|ack| ack.window)
        .collect();
    assert!(!windows.is_empty(), "B acknowledged something");
    // 256 KiB / (60,184 bytes charged as 62,464) = 4.
    let widest = windows.iter().copied().max().unwrap();
    assert!(
        (2..=4).contains(&widest),
        "B advertised up to {widest} datagrams"
    );
}
