//! Writes the `secure` target's seeds into `seeds/secure/`, from datagrams
//! captured in the target's own setup (deterministic: fixed keys, seeds and
//! clock), and runs each through the target's checks.
//!
//! `cd daemon/transport/fuzz && cargo run --example secure_seeds`

use std::path::Path;

#[path = "../fuzz_targets/secure_world.rs"]
mod world;

use world::{op, World, ADDR_A};

/// A script, op by op.
#[derive(Default)]
struct Script(Vec<u8>);

impl Script {
    /// A raw datagram from `sel` (0: A, 1: a stranger, 2: A's neighbour).
    fn raw(mut self, sel: u8, bytes: &[u8]) -> Self {
        let len = u16::try_from(bytes.len()).expect("a datagram");
        self.0.extend([op::RAW, sel]);
        self.0.extend(len.to_be_bytes());
        self.0.extend(bytes);
        self
    }
    fn op(mut self, code: u8, operands: &[u8]) -> Self {
        self.0.push(code);
        self.0.extend(operands);
        self
    }
}

fn main() {
    let w = World::new();
    let from_a = |ty: u8| {
        w.captured
            .iter()
            .filter(move |(from, d)| *from == ADDR_A && d[..4] == [b'R', b'S', 1, ty])
            .map(|(_, d)| d.clone())
    };
    let init = from_a(1).next().expect("A's initiation was captured");
    // The longest: a data fragment, not an ack or a keepalive.
    let transport = from_a(4)
        .max_by_key(Vec::len)
        .expect("A's data was captured");
    // Its index for the CAPTURED op (0 = the latest capture).
    let back = w
        .captured
        .iter()
        .rev()
        .position(|(_, d)| *d == transport)
        .and_then(|i| u8::try_from(i).ok())
        .expect("among the latest 256");
    let mut garbage = Vec::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..512 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        garbage.push(x as u8);
    }
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        // The captured initiation again from A (a duplicate: the same
        // response), from a stranger (address not allowed) and from A's
        // neighbour (allowed, but an old timestamp).
        (
            "initiation",
            Script::default()
                .raw(0, &init)
                .raw(1, &init)
                .raw(2, &init)
                .0,
        ),
        // A captured data datagram replayed from A, then with one byte of
        // its ciphertext flipped (a replay all the same), then with a
        // counter never used (it fails the AEAD), then from the stranger.
        (
            "transport",
            Script::default()
                .raw(0, &transport)
                .op(op::CAPTURED, &[0, back, 1, 0, 40, 0x20])
                .op(op::CAPTURED, &[0, back, 0x81, 0, 0, 0, 1, 0, 0, 0, 0])
                .op(op::CAPTURED, &[1, back, 0])
                .0,
        ),
        ("garbage", garbage),
        // A session under way: A sends, the datagrams are held and
        // reordered, a replay and a truncated copy go in, time passes past
        // the rekey, both sides send again.
        (
            "session",
            Script::default()
                .op(op::SEND_A, &[0x04, 0x00])
                .op(op::REORDER, &[0])
                .op(op::DELIVER, &[0])
                .op(op::CAPTURED, &[0, 1, 0])
                .op(op::CAPTURED, &[1, 0, 2, 0, 20])
                .op(op::DUPLICATE, &[0])
                .op(op::FLUSH, &[])
                .op(op::WAIT, &[0xFF, 0xFF, 23])
                .op(op::SEND_B, &[3])
                .op(op::SEND_A, &[0, 9])
                .op(op::DROP, &[0])
                .op(op::CAPTURED, &[2, 0, 0])
                .op(op::NEXT_TIMER, &[])
                .0,
        ),
        // B rekeys (its session is past rekey_after) and a response to
        // its initiation is forged from A's address: valid mac1, the right
        // index, a Noise message that cannot be A's. Then the real one.
        (
            "forged-response",
            Script::default()
                .op(op::WAIT, &[0xFF, 0xFF, 23])
                .op(op::SEND_B, &[1])
                .op(op::RESPONSE, &[0, 0, 0, 0, 7])
                .op(op::FLUSH, &[])
                .0,
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/secure");
    std::fs::create_dir_all(&dir).expect("seeds dir");
    for (name, bytes) in seeds {
        world::check_outer_all(&bytes);
        let mut w = World::new();
        w.run(&bytes);
        println!("{name}: {:?}", w.b.stats().security);
        std::fs::write(dir.join(name), &bytes).expect("write seed");
        println!("seeds/secure/{name}: {} bytes", bytes.len());
    }
}
