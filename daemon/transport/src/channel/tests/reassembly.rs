//! Reassembly into one buffer per message: fragments copied once, in index
//! order, and the buffer's spare capacity charged to the budgets.

use super::*;
use crate::channel::recv::{charge, FRAGMENT_OVERHEAD, PARTIAL_OVERHEAD};

/// Fragment `index` of message 1 (5 fragments: four of 100 bytes, one of
/// 50), sent as counter `1 + index`.
fn fragment(index: u32, payload: &[u8]) -> Datagram<'_> {
    let mut d = first_fragment(A, 1 + u64::from(index), 5, payload);
    d.msg_floor = 1;
    if let Some(f) = d.fragment.as_mut() {
        f.msg_id = 1;
        f.index = index;
    }
    d
}

/// The payloads of the five fragments, each byte telling its fragment.
fn payloads() -> Vec<Vec<u8>> {
    (0..5u8)
        .map(|i| vec![i + 1; if i == 4 { 50 } else { 100 }])
        .collect()
}

fn delivered(ch: &mut Channel) -> Vec<Vec<u8>> {
    events(ch)
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered { data, .. } => Some(data),
            _ => None,
        })
        .collect()
}

/// In order, the first fragment takes exactly its size; the second reserves
/// what the rest of the message needs at its size (one buffer for the whole
/// message, charged at once); the rest are written into it, each charged
/// only its overhead; the message is handed over as that buffer.
#[test]
fn an_in_order_message_goes_into_one_buffer_reserved_at_its_second_fragment() {
    let mut b = Channel::new(cfg(), B, seed(B));
    let now = Instant::now();
    let parts = payloads();
    b.handle_datagram(now, &fragment(0, &parts[0]));
    assert_eq!(b.reassembly_bytes(), PARTIAL_OVERHEAD + charge(100));
    b.handle_datagram(now, &fragment(1, &parts[1]));
    assert_eq!(
        b.reassembly_bytes(),
        PARTIAL_OVERHEAD + 2 * FRAGMENT_OVERHEAD + 5 * 100,
        "the buffer for all five fragments at 100 bytes, reserved"
    );
    for (i, part) in parts.iter().enumerate().skip(2).take(2) {
        b.handle_datagram(now, &fragment(i as u32, part));
    }
    assert_eq!(
        b.reassembly_bytes(),
        PARTIAL_OVERHEAD + 4 * FRAGMENT_OVERHEAD + 5 * 100
    );
    assert!(delivered(&mut b).is_empty());
    b.handle_datagram(now, &fragment(4, &parts[4]));
    assert_eq!(delivered(&mut b), vec![parts.concat()]);
    assert_eq!(b.reassembly_bytes(), 0);
}

/// Fragments ahead of a gap wait apart, charged as before, and join the
/// buffer in index order once the gap is filled.
#[test]
fn fragments_ahead_of_a_gap_join_the_buffer_in_order() {
    let mut b = Channel::new(cfg(), B, seed(B));
    let now = Instant::now();
    let parts = payloads();
    for i in [3u32, 1] {
        b.handle_datagram(now, &fragment(i, &parts[i as usize]));
    }
    assert_eq!(b.reassembly_bytes(), PARTIAL_OVERHEAD + 2 * charge(100));
    for i in [4u32, 0] {
        b.handle_datagram(now, &fragment(i, &parts[i as usize]));
    }
    assert!(delivered(&mut b).is_empty(), "fragment 2 is missing");
    b.handle_datagram(now, &fragment(2, &parts[2]));
    assert_eq!(delivered(&mut b), vec![parts.concat()]);
    assert_eq!(b.reassembly_bytes(), 0);
}

/// Spare capacity is taken only while the budget has room for it: with
/// room for three fragments, the buffer grows by each fragment and the
/// budget holds; once room is back (other peers' messages completed), the
/// rest is taken and the message completes.
#[test]
fn without_room_for_spare_capacity_the_buffer_grows_by_the_fragment() {
    let mut b = Channel::new(cfg(), B, seed(B));
    let now = Instant::now();
    let parts = payloads();
    let mut limit = PARTIAL_OVERHEAD + 3 * charge(100);
    for (i, part) in parts.iter().enumerate() {
        // What the endpoint does before each datagram: the shared budget
        // left to this channel.
        b.set_shared_reassembly_room(limit.saturating_sub(b.reassembly_bytes()));
        b.handle_datagram(now, &fragment(i as u32, part));
        assert!(b.reassembly_bytes() <= limit, "fragment {i}: over budget");
        if i == 1 {
            assert_eq!(
                b.reassembly_bytes(),
                PARTIAL_OVERHEAD + 2 * charge(100),
                "no room to reserve the rest: no spare capacity"
            );
        }
        if i == 3 {
            assert_eq!(b.snapshot().stats.out_of_window, 1, "fragment 3: no room");
            limit *= 2;
            b.set_shared_reassembly_room(limit - b.reassembly_bytes());
            b.handle_datagram(now, &fragment(3, part));
        }
    }
    assert_eq!(delivered(&mut b), vec![parts.concat()]);
    assert_eq!(b.reassembly_bytes(), 0);
}

/// The owner's buffers, for tests: a shelf of buffers to hand out and what was given back.
#[derive(Debug, Default)]
struct Shelf {
    kept: std::sync::Mutex<Vec<Vec<u8>>>,
    given: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Buffers for Shelf {
    fn take(&self, min: usize, max: usize) -> Option<Vec<u8>> {
        let mut kept = self.kept.lock().unwrap();
        let i = kept
            .iter()
            .position(|b| (min..=max).contains(&b.capacity()))?;
        Some(kept.swap_remove(i))
    }

    fn give(&self, buf: Vec<u8>) {
        self.given.lock().unwrap().push(buf);
    }
}

/// A buffer of capacity `cap` holding stale bytes.
fn stale(cap: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(cap);
    b.resize(cap, 0xee);
    b
}

/// With the owner's buffers, the message is reassembled into one of them when it fits
/// (taken where a buffer would be reserved: at the second fragment), its stale bytes gone,
/// charged as a reserved buffer of its capacity; one whose spare capacity the budget has
/// no room for is left alone.
#[test]
fn a_message_is_reassembled_into_an_owners_buffer_that_fits() {
    let shelf = Arc::new(Shelf::default());
    // Too large for the budget's room: spare capacity past it.
    let huge = stale(1 << 20);
    let fits = stale(5 * 100 + 20);
    let fits_at = fits.as_ptr();
    shelf.kept.lock().unwrap().extend([huge, fits]);
    let mut b = Channel::new(cfg(), B, seed(B));
    b.set_buffers(Some(shelf.clone()));
    let now = Instant::now();
    let parts = payloads();
    let room = PARTIAL_OVERHEAD + 5 * charge(100) + 100;
    b.set_shared_reassembly_room(room);
    b.handle_datagram(now, &fragment(0, &parts[0]));
    assert_eq!(
        shelf.kept.lock().unwrap().len(),
        2,
        "the first fragment: its own size"
    );
    for (i, part) in parts.iter().enumerate().skip(1) {
        b.set_shared_reassembly_room(room - b.reassembly_bytes());
        b.handle_datagram(now, &fragment(i as u32, part));
        if i == 1 {
            assert_eq!(
                b.reassembly_bytes(),
                PARTIAL_OVERHEAD + 2 * FRAGMENT_OVERHEAD + 5 * 100 + 20,
                "charged for the taken buffer's capacity"
            );
        }
    }
    let got = delivered(&mut b);
    assert_eq!(got, vec![parts.concat()], "whole, nothing stale");
    assert_eq!(got[0].as_ptr(), fits_at, "in the owner's buffer");
    let kept = shelf.kept.lock().unwrap();
    assert!(
        kept.len() == 1 && kept[0].capacity() == 1 << 20,
        "the huge one stays"
    );
}

/// A sent message's buffer goes back to the owner once the message is acknowledged, and
/// once it fails.
#[test]
fn a_sent_messages_buffer_goes_back_to_the_owner_when_settled() {
    let shelf = Arc::new(Shelf::default());
    let c = Config {
        cwnd_initial: 16,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    p.a.set_buffers(Some(shelf.clone()));
    let msg = vec![7u8; 1050];
    let at = msg.as_ptr();
    let (_, frags) = p.handshake_with(msg);
    feed(&mut p.b, p.now, &frags);
    p.settle(Duration::from_secs(10));
    assert!(matches!(events(&mut p.a)[..], [Event::Acked { .. }]));
    {
        let given = shelf.given.lock().unwrap();
        assert!(
            given.len() == 1 && given[0].as_ptr() == at,
            "the acknowledged one"
        );
    }
    let id = p.a.send(p.now, vec![1u8; 300]).expect("queued");
    assert!(p.a.cancel(id));
    assert_eq!(shelf.given.lock().unwrap().len(), 2, "the cancelled one");
}
