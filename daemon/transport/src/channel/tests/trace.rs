//! Per-message accounting of followed messages (`channel/trace.rs`).

use super::*;

/// A followed message lost once counts both transmissions, one of them a
/// retransmission, and gives no RTT sample (Karn); a clean one counts one
/// datagram and one sample; an unfollowed message leaves no record.
#[test]
fn a_followed_message_counts_its_datagrams_and_retransmissions() {
    let c = Config {
        rto_initial: ms(50),
        rto_min: ms(5),
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (first, lost) = {
        let id = p.a.send(p.now, b"x".to_vec()).expect("queued");
        assert!(p.a.trace_message(id));
        let probe = drain(&mut p.a, p.now);
        feed(&mut p.b, p.now, &probe);
        let ack = drain(&mut p.b, p.now);
        p.advance(ms(1));
        feed(&mut p.a, p.now, &ack);
        (id, drain(&mut p.a, p.now))
    };
    assert_eq!(kinds(&lost), [Kind::Data]);
    let sent_at = p.now;
    let t = p.a.poll_timeout().expect("rto armed");
    p.now = t;
    p.a.handle_timeout(t);
    let again = drain(&mut p.a, p.now);
    assert_eq!(kinds(&again), [Kind::Data]);
    p.advance(ms(1));
    feed(&mut p.b, p.now, &again);
    p.b.handle_timeout(p.now + ms(5));
    let ack = drain(&mut p.b, p.now + ms(5));
    feed(&mut p.a, p.now, &ack);
    assert!(events(&mut p.a).contains(&Event::Acked { msg_id: first }));
    let tr = p.a.take_message_trace(first).expect("followed");
    assert_eq!((tr.datagrams, tr.retransmissions), (2, 1));
    assert_eq!(tr.first_sent, Some(sent_at));
    assert_eq!(tr.acked, Some(p.now));
    assert!(
        tr.rtt_samples.is_empty(),
        "Karn: no sample from a retransmission"
    );
    assert_eq!(p.a.take_message_trace(first), None, "taken once");

    let second = p.a.send(p.now, b"y".to_vec()).expect("queued");
    assert!(p.a.trace_message(second));
    let untraced = p.a.send(p.now, b"z".to_vec()).expect("queued");
    let data = drain(&mut p.a, p.now);
    p.advance(ms(2));
    feed(&mut p.b, p.now, &data);
    p.b.handle_timeout(p.now + ms(5));
    let ack = drain(&mut p.b, p.now + ms(5));
    feed(&mut p.a, p.now, &ack);
    let tr = p.a.take_message_trace(second).expect("followed");
    assert_eq!((tr.datagrams, tr.retransmissions), (1, 0));
    assert_eq!(tr.rtt_samples, [ms(2)]);
    assert_eq!(p.a.take_message_trace(untraced), None);
}
