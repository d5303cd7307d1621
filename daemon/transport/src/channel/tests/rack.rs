//! Scenario tests of loss detection by time (RFC 8985) for repairs, and of
//! the second copy a thin flight's repair gets.

use super::*;

fn seqs(dgs: &[Vec<u8>]) -> Vec<Seq> {
    dgs.iter().map(|d| parse(d).seq).collect()
}

/// `a` and `b` over a 10 ms round trip; message 1's datagram was sent
/// (and is returned, not delivered), 5 ms ago.
fn lost_first(c: Config) -> (Pair, Seq) {
    let mut p = Pair::with(c, c);
    let (_, lost) = p.handshake_over(vec![1], ms(10));
    let seq = parse(&lost[0]).seq;
    p.advance(ms(5));
    (p, seq)
}

/// b receives `dgs` and answers at once (ack delay included).
fn acks_for(p: &mut Pair, dgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    p.advance(ms(5));
    feed(&mut p.b, p.now, dgs);
    p.b.handle_timeout(p.now + ms(1));
    drain(&mut p.b, p.now + ms(1))
}

/// RFC 8985 §6.2: loss detection reads when a datagram last went, not its
/// counter, so a retransmission that is lost again is found like a first
/// loss: a round trip after it went, once a datagram sent after it is
/// acknowledged — here one sent at the same instant, just after it — long
/// before a probe timeout.
#[test]
fn a_lost_retransmission_is_detected_by_time_once_a_later_datagram_is_acknowledged() {
    let (mut p, lost) = lost_first(wan());
    p.a.send(p.now, vec![2]).expect("queued");
    let later = drain(&mut p.a, p.now);
    let ack = acks_for(&mut p, &later);
    p.advance(ms(6));
    feed(&mut p.a, p.now, &ack);
    // The repair goes, and message 3 right behind it, at the same instant.
    p.a.send(p.now, vec![3]).expect("queued");
    let out = drain(&mut p.a, p.now);
    assert_eq!(seqs(&out), [lost, Seq(lost.0 + 2)]);
    let probe_at = p.a.poll_timeout().expect("the probe timeout is armed");
    // The repair is lost too; message 3 arrives and is acknowledged.
    let ack = acks_for(&mut p, &out[1..]);
    p.advance(ms(6));
    assert!(p.now < probe_at, "before any timeout");
    feed(&mut p.a, p.now, &ack);
    let again = drain(&mut p.a, p.now);
    assert_eq!(seqs(&again), [lost], "the lost repair goes again at once");
    let stats = p.a.snapshot().stats;
    assert_eq!(
        (
            stats.retransmissions,
            stats.fast_retransmissions,
            stats.probes
        ),
        (2, 2, 0)
    );
    events(&mut p.b);
    feed(&mut p.b, p.now, &again);
    assert_eq!(delivered(&events(&mut p.b)), [vec![1]]);
}

/// A sender the application limits (nothing waits for the window) with a
/// thin flight sends a repair twice, so that a lost repair costs nothing;
/// the receiver takes the second as a duplicate.
#[test]
fn a_thin_flights_repair_goes_twice() {
    let c = Config {
        redundant_flight_max: 16,
        forward_copies: false,
        ..wan()
    };
    let (mut p, lost) = lost_first(c);
    p.a.send(p.now, vec![2]).expect("queued");
    let later = drain(&mut p.a, p.now);
    let ack = acks_for(&mut p, &later);
    p.advance(ms(6));
    feed(&mut p.a, p.now, &ack);
    let out = drain(&mut p.a, p.now);
    assert_eq!(seqs(&out), [lost, lost], "two copies of the repair");
    let stats = p.a.snapshot().stats;
    assert_eq!((stats.retransmissions, stats.redundant_copies), (2, 1));
    // The first copy is lost, the second delivers the message once.
    events(&mut p.b);
    feed(&mut p.b, p.now, &out[1..]);
    assert_eq!(delivered(&events(&mut p.b)), [vec![1]]);
    feed(&mut p.b, p.now, &out[1..]);
    assert!(delivered(&events(&mut p.b)).is_empty());
    assert_eq!(p.b.snapshot().stats.duplicates, 1);
}

/// A sender whose data waits for the window (a bulk transfer, a queue
/// overflowing somewhere) sends each repair once: copies would add to the
/// congestion the loss may signal.
#[test]
fn a_window_limited_sender_repairs_once() {
    let c = Config {
        redundant_flight_max: 16,
        forward_copies: false,
        cwnd_initial: 4,
        ..wan()
    };
    let (mut p, lost) = lost_first(c);
    for i in 2..12u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    let later = drain(&mut p.a, p.now);
    assert_eq!(later.len(), 3, "the window of 4 is full");
    let ack = acks_for(&mut p, &later);
    p.advance(ms(6));
    feed(&mut p.a, p.now, &ack);
    let out = drain(&mut p.a, p.now);
    assert_eq!(out.iter().filter(|d| parse(d).seq == lost).count(), 1);
    assert_eq!(p.a.snapshot().stats.redundant_copies, 0);
}

/// A fragment of a larger message is bulk, not an RPC's lone datagram: its
/// repair goes once, whatever the flight.
#[test]
fn a_fragment_of_a_larger_message_is_repaired_once() {
    let c = Config {
        redundant_flight_max: 16,
        forward_copies: false,
        ..wan()
    };
    let mut p = Pair::with(c, c);
    let (_, frags) = p.handshake_over(vec![7; 250], ms(10));
    assert_eq!(frags.len(), 3);
    p.advance(ms(5));
    // The first fragment is lost, the others arrive.
    let ack = acks_for(&mut p, &frags[1..]);
    p.advance(ms(6));
    feed(&mut p.a, p.now, &ack);
    let out = drain(&mut p.a, p.now);
    assert_eq!(seqs(&out), [parse(&frags[0]).seq]);
    assert_eq!(p.a.snapshot().stats.redundant_copies, 0);
}
