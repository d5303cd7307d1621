//! Scenario tests of forward copies (`Config::forward_copies`): on a thin
//! flight, each new whole-message datagram goes again with the next new
//! datagram sent at a later instant, while it is unacknowledged.

use super::*;

fn thin() -> Config {
    Config {
        redundant_flight_max: 16,
        forward_copies: true,
        ..wan()
    }
}

fn seqs(dgs: &[Vec<u8>]) -> Vec<Seq> {
    dgs.iter().map(|d| parse(d).seq).collect()
}

fn payloads(dgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    dgs.iter()
        .map(|d| parse(d).fragment.expect("data").payload.to_vec())
        .collect()
}

/// Message 1 went 5 ms ago (returned, not delivered); message 2 goes now.
fn two_messages(c: Config) -> (Pair, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut p = Pair::with(c, c);
    let (_, first) = p.handshake_over(vec![1], ms(10));
    p.advance(ms(5));
    p.a.send(p.now, vec![2]).expect("queued");
    let second = drain(&mut p.a, p.now);
    (p, first, second)
}

/// The next message carries a copy of the one before, with its counter:
/// when the first is lost, the copy delivers it, its acknowledgement
/// covers it, and nothing is retransmitted.
#[test]
fn the_next_message_carries_a_copy_of_the_previous_one() {
    let (mut p, first, second) = two_messages(thin());
    let s1 = parse(&first[0]).seq;
    assert_eq!(seqs(&second), [Seq(s1.0 + 1), s1]);
    assert_eq!(payloads(&second), [vec![2], vec![1]]);
    let stats = p.a.snapshot().stats;
    assert_eq!((stats.forward_copies, stats.retransmissions), (1, 0));
    // The first transmission of message 1 is lost; the copy delivers it.
    p.advance(ms(5));
    events(&mut p.b);
    feed(&mut p.b, p.now, &second);
    let mut got = delivered(&events(&mut p.b));
    got.sort();
    assert_eq!(got, [vec![1], vec![2]]);
    p.b.handle_timeout(p.now + ms(1));
    let ack = drain(&mut p.b, p.now + ms(1));
    p.advance(ms(6));
    feed(&mut p.a, p.now, &ack);
    assert!(drain(&mut p.a, p.now).is_empty(), "nothing left to repair");
    events(&mut p.a);
    assert!(p.a.evictable(), "both messages acknowledged");
    assert_eq!(p.a.snapshot().stats.retransmissions, 0);
}

/// When both transmissions arrive, the receiver delivers once and counts a
/// duplicate.
#[test]
fn a_copy_that_arrives_second_is_a_duplicate() {
    let (mut p, first, second) = two_messages(thin());
    events(&mut p.b);
    feed(&mut p.b, p.now, &first);
    feed(&mut p.b, p.now, &second);
    let mut got = delivered(&events(&mut p.b));
    got.sort();
    assert_eq!(got, [vec![1], vec![2]]);
    assert_eq!(p.b.snapshot().stats.duplicates, 1);
}

/// Each datagram is copied once: the third message carries a copy of the
/// second only.
#[test]
fn each_datagram_is_copied_once() {
    let (mut p, _, second) = two_messages(thin());
    p.advance(ms(5));
    p.a.send(p.now, vec![3]).expect("queued");
    let third = drain(&mut p.a, p.now);
    assert_eq!(payloads(&third), [vec![3], vec![2]]);
    assert_eq!(parse(&third[1]).seq, parse(&second[0]).seq);
    assert_eq!(p.a.snapshot().stats.forward_copies, 2);
}

/// Messages sent at the same instant share a UDP datagram: a copy of one
/// beside the other would share its fate, so none goes; the next message,
/// later, carries copies of both.
#[test]
fn messages_sent_at_one_instant_are_copied_by_the_next_later_one() {
    let (mut p, first, second) = two_messages(thin());
    feed(&mut p.b, p.now, &first);
    feed(&mut p.b, p.now, &second);
    p.b.handle_timeout(p.now + ms(1));
    let ack = drain(&mut p.b, p.now + ms(1));
    p.advance(ms(6));
    feed(&mut p.a, p.now, &ack);
    p.a.send(p.now, vec![3]).expect("queued");
    p.a.send(p.now, vec![4]).expect("queued");
    let burst = drain(&mut p.a, p.now);
    assert_eq!(payloads(&burst), [vec![3], vec![4]], "no copies in a burst");
    p.advance(ms(5));
    p.a.send(p.now, vec![5]).expect("queued");
    let next = drain(&mut p.a, p.now);
    assert_eq!(payloads(&next), [vec![5], vec![3], vec![4]]);
}

/// An acknowledged datagram is not copied.
#[test]
fn an_acknowledged_datagram_is_not_copied() {
    let mut p = Pair::with(thin(), thin());
    let (_, first) = p.handshake_over(vec![1], ms(10));
    p.advance(ms(5));
    feed(&mut p.b, p.now, &first);
    p.b.handle_timeout(p.now + ms(1));
    let ack = drain(&mut p.b, p.now + ms(1));
    p.advance(ms(6));
    feed(&mut p.a, p.now, &ack);
    p.a.send(p.now, vec![2]).expect("queued");
    assert_eq!(payloads(&drain(&mut p.a, p.now)), [vec![2]]);
    assert_eq!(p.a.snapshot().stats.forward_copies, 0);
}

/// A sender the window limits (a bulk transfer) sends no copies: they
/// would add to the congestion a loss may signal.
#[test]
fn a_window_limited_sender_sends_no_copies() {
    let c = Config {
        cwnd_initial: 4,
        ..thin()
    };
    let mut p = Pair::with(c, c);
    let (_, first) = p.handshake_over(vec![1], ms(10));
    assert_eq!(first.len(), 1);
    p.advance(ms(5));
    for i in 2..12u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    let out = drain(&mut p.a, p.now);
    assert_eq!(payloads(&out), [vec![2], vec![3], vec![4]]);
    assert_eq!(p.a.snapshot().stats.forward_copies, 0);
}

/// `forward_copies: false` sends none.
#[test]
fn switched_off_no_copy_goes() {
    let c = Config {
        forward_copies: false,
        ..thin()
    };
    let (p, _, second) = two_messages(c);
    assert_eq!(payloads(&second), [vec![2]]);
    assert_eq!(p.a.snapshot().stats.forward_copies, 0);
}
