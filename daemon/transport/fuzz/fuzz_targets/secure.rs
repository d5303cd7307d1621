//! Authenticated mode on hostile input: the outer decoder, and a keyed
//! endpoint in the middle of a real session.
//!
//! (a) `secure::wire::Outer::parse` is total on arbitrary bytes and agrees
//! with the documented layout, written out independently in
//! `secure_world.rs`: the same verdict (error included), and every field of
//! an `Ok` is the bytes at its documented offsets with its documented size.
//! The input is checked as it is and shaped as each of the four types (the
//! prefix written in, the size fitted), and so is every datagram below.
//!
//! (b) Two keyed endpoints, A and B (fixed keys, seeds and clock), complete
//! a handshake and exchange a few messages; then the input, a script, feeds
//! B datagrams from A's address, from a stranger, and from a neighbour on
//! A's IP (another port): raw bytes, or captured genuine datagrams replayed,
//! truncated, extended, with bytes flipped or a counter or index rewritten,
//! and handshake messages with a valid mac1 (anyone who knows B's public
//! key can compute it), including responses to B's initiation in flight.
//! Meanwhile the genuine traffic is delivered, duplicated, reordered, held
//! while time passes (2 s at most, below `peer_timeout`), a few datagrams
//! lost, and both sides send more. Then the network heals and time runs on
//! (60 s at most). Checked throughout and at the end:
//! - no panic, no runaway `poll_transmit`, no timer still due after
//!   `handle_timeout`;
//! - B delivers only bytes A sent, each at most once, attributed to A's
//!   address; B keeps no channel for any other address (and likewise A);
//! - an ack means the peer delivered the message; nothing fails, no peer
//!   is declared restarted or unreachable;
//! - while B has a handshake in flight to A, the first copy of A's genuine
//!   response completes it, whatever came before (up to four forged
//!   responses: see `FORGED_RESPONSES_SURVIVED`);
//! - once healed, every message either side sent was delivered exactly once;
//! - no amplification: B sends a stranger address no more bytes than it
//!   received from it, neither per datagram nor in total.
//!
//! Each run costs a handshake (a few X25519 operations); the handshake rate
//! limits in `config()` bound how many more a script can cause.
//! Seeds: `cargo run --example secure_seeds` (writes `seeds/secure/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "secure_world.rs"]
mod world;

fuzz_target!(|data: &[u8]| {
    world::check_outer_all(data);
    world::World::new().run(data);
});
