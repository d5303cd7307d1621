//! Scenario tests: two channels driven by hand, with explicit time.

use super::*;
use std::time::Duration;

use crate::seq::Seq;

use crate::wire::{AckInfo, Fragment, Kind, HEADER_LEN};

mod forward;
mod pacing;
mod rack;
mod reassembly;
mod trace;

const A: u64 = 0xA0;
const B: u64 = 0xB0;

/// A channel's seed in these tests: fixed per epoch, so every run is the same.
fn seed(epoch: u64) -> u64 {
    epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> Config {
    let mut c = Config {
        payload_max: 100,
        // A thin flight's repair goes twice (tests in `rack.rs`); here each
        // rule is seen alone, one datagram per repair.
        redundant_flight_max: 0,
        // Pacing has its own tests (`pacing.rs`); these scenarios send
        // whole windows at one instant.
        pacing_burst: 1 << 20,
        ..Config::default()
    };
    // Small fragments cost more overhead per byte: the budget grows to fit.
    c.reassembly_bytes_max = c.reassembly_floor();
    c.reassembly_total_max = c.reassembly_bytes_max;
    c
}

/// `c` with the smallest reassembly budgets its message size allows.
fn tight_reassembly(mut c: Config) -> Config {
    // The floor of the fragment size these tests send (not the loopback one).
    c.payload_max_loopback = 0;
    c.reassembly_bytes_max = c.reassembly_floor();
    c.reassembly_total_max = c.reassembly_bytes_max;
    c
}

/// From `sender` to B: the first of `count` fragments of message `n`, sent
/// as counter `n` — a new partial message per datagram, as a hostile peer
/// starting many messages would send.
fn first_fragment(sender: u64, n: u64, count: u32, payload: &[u8]) -> Datagram<'_> {
    Datagram {
        sender_epoch: sender,
        receiver_epoch: B,
        kind: Kind::Data,
        seq: Seq(n),
        send_floor: Seq(1),
        msg_floor: 1,
        ack: None,
        ack_now: false,
        fragment: Some(Fragment {
            msg_id: n,
            index: 0,
            count,
            payload,
        }),
        nonce: 0,
        key_id: 0,
    }
}

fn parse(bytes: &[u8]) -> Datagram<'_> {
    Datagram::parse(bytes).expect("the channel emits valid datagrams")
}

fn kinds(dgs: &[Vec<u8>]) -> Vec<Kind> {
    dgs.iter().map(|b| parse(b).kind).collect()
}

fn drain(ch: &mut Channel, now: Instant) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| ch.poll_transmit(now)).collect()
}

fn events(ch: &mut Channel) -> Vec<Event> {
    std::iter::from_fn(|| ch.poll_event()).collect()
}

fn feed(ch: &mut Channel, now: Instant, dgs: &[Vec<u8>]) {
    for b in dgs {
        ch.handle_datagram(now, &parse(b));
    }
}

fn delivered(evs: &[Event]) -> Vec<Vec<u8>> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Delivered { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// Two channels on a clock the test moves.
struct Pair {
    now: Instant,
    a: Channel,
    b: Channel,
}

impl Pair {
    fn new() -> Self {
        Self::with(cfg(), cfg())
    }

    fn with(ca: Config, cb: Config) -> Self {
        Pair {
            now: Instant::now(),
            a: Channel::new(ca, A, seed(A)),
            b: Channel::new(cb, B, seed(B)),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// `a` sends a first message: probe, ack, then the data goes out.
    /// Returns the message's data datagrams, not yet delivered.
    fn handshake_with(&mut self, data: Vec<u8>) -> (MsgId, Vec<Vec<u8>>) {
        self.handshake_over(data, ms(1))
    }

    /// `handshake_with` on a path whose round trip takes `rtt`.
    fn handshake_over(&mut self, data: Vec<u8>, rtt: Duration) -> (MsgId, Vec<Vec<u8>>) {
        let id = self.a.send(self.now, data).expect("queued");
        let probe = drain(&mut self.a, self.now);
        assert_eq!(kinds(&probe), [Kind::Probe]);
        feed(&mut self.b, self.now, &probe);
        let ack = drain(&mut self.b, self.now);
        assert_eq!(kinds(&ack), [Kind::Ack]);
        self.advance(rtt);
        feed(&mut self.a, self.now, &ack);
        (id, drain(&mut self.a, self.now))
    }

    /// a has heard from a new epoch of b: what a sends is one challenge,
    /// addressed to that epoch, a bare header; b answers with the echo
    /// first. Returns b's answer, not yet fed to a.
    fn challenge_answered_by_b(&mut self) -> Vec<Vec<u8>> {
        let b_epoch = self.b.local_epoch;
        let challenge = drain(&mut self.a, self.now);
        assert_eq!(kinds(&challenge), [Kind::Probe], "one challenge");
        assert_eq!(challenge[0].len(), HEADER_LEN);
        let c = parse(&challenge[0]);
        assert_eq!(
            (c.receiver_epoch, c.ack, c.send_floor, c.msg_floor),
            (b_epoch, None, Seq(0), 0),
            "addressed to the claimed epoch; nothing of the old incarnation's state"
        );
        assert_ne!(c.nonce, 0);
        feed(&mut self.b, self.now, &challenge);
        let answer = drain(&mut self.b, self.now);
        let e = parse(&answer[0]);
        assert_eq!(
            (e.kind, e.sender_epoch, e.receiver_epoch, e.nonce),
            (Kind::Ack, b_epoch, A, c.nonce),
            "the echo goes first"
        );
        answer
    }

    /// Deliver everything both ways until neither has anything to send;
    /// returns the number of datagrams exchanged.
    fn exchange(&mut self) -> usize {
        let mut n = 0;
        loop {
            let ab = drain(&mut self.a, self.now);
            let ba = drain(&mut self.b, self.now);
            if ab.is_empty() && ba.is_empty() {
                return n;
            }
            n += ab.len() + ba.len();
            feed(&mut self.b, self.now, &ab);
            feed(&mut self.a, self.now, &ba);
        }
    }

    /// Exchange and run timers until no timer is armed (or `limit` passes).
    fn settle(&mut self, limit: Duration) -> usize {
        let end = self.now + limit;
        let mut n = self.exchange();
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next else { return n };
            if t > end {
                return n;
            }
            assert!(t >= self.now, "a deadline in the past after handling it");
            self.now = t;
            self.a.handle_timeout(t);
            self.b.handle_timeout(t);
            n += self.exchange();
        }
    }
}

#[test]
fn request_reply_costs_two_datagrams_plus_one_delayed_ack() {
    let mut p = Pair::new();
    let (req, data) = p.handshake_with(b"request".to_vec());
    assert_eq!(kinds(&data), [Kind::Data]);
    feed(&mut p.b, p.now, &data);
    assert_eq!(delivered(&events(&mut p.b)), [b"request".to_vec()]);
    // The server answers before its ack timer: nothing left on its own.
    assert!(drain(&mut p.b, p.now).is_empty());
    let rep = p.b.send(p.now, b"reply".to_vec()).expect("queued");
    let reply = drain(&mut p.b, p.now);
    assert_eq!(kinds(&reply), [Kind::Data]);
    assert!(parse(&reply[0]).ack.is_some_and(|a| a.ack == Seq(2)));
    p.advance(ms(1) / 4);
    feed(&mut p.a, p.now, &reply);
    let ev = events(&mut p.a);
    assert!(ev.contains(&Event::Acked { msg_id: req }));
    assert_eq!(delivered(&ev), [b"reply".to_vec()]);
    // The client's ack waits for something to ride on, then goes alone.
    assert!(drain(&mut p.a, p.now).is_empty());
    let t = p.a.poll_timeout().expect("delayed ack armed");
    assert_eq!(t, p.now + cfg().ack_delay);
    p.now = t;
    p.a.handle_timeout(t);
    let ack = drain(&mut p.a, p.now);
    assert_eq!(kinds(&ack), [Kind::Ack]);
    feed(&mut p.b, p.now, &ack);
    assert_eq!(events(&mut p.b), [Event::Acked { msg_id: rep }]);
    // Request + reply + one delayed ack, and then nothing at all.
    assert_eq!(p.settle(Duration::from_secs(60)), 0);
    assert!(p.a.is_idle() && p.b.is_idle());
    assert_eq!(p.a.poll_timeout(), None);
    assert_eq!(p.b.poll_timeout(), None);
}

#[test]
fn handshake_learns_epoch_before_data() {
    let mut p = Pair::new();
    p.a.send(p.now, b"x".to_vec()).expect("queued");
    let probe = drain(&mut p.a, p.now);
    assert_eq!(
        probe.len(),
        1,
        "only a probe until the peer's epoch is known"
    );
    let d = parse(&probe[0]);
    assert_eq!(
        (d.kind, d.sender_epoch, d.receiver_epoch, d.ack_now),
        (Kind::Probe, A, 0, true)
    );
    feed(&mut p.b, p.now, &probe);
    let ack = drain(&mut p.b, p.now);
    let d = parse(&ack[0]);
    assert_eq!(
        (d.kind, d.sender_epoch, d.receiver_epoch),
        (Kind::Ack, B, A)
    );
    p.advance(ms(2));
    feed(&mut p.a, p.now, &ack);
    assert_eq!(p.a.snapshot().peer_epoch, Some(B));
    // The handshake's round trip is the first RTT sample.
    assert_eq!(p.a.snapshot().srtt, Some(ms(2)));
    let data = drain(&mut p.a, p.now);
    let d = parse(&data[0]);
    assert_eq!((d.kind, d.receiver_epoch), (Kind::Data, B));
}

#[test]
fn unanswered_handshake_fails_unsent_messages_as_not_delivered() {
    let c = Config {
        retransmits_max: 2,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let id = p.a.send(p.now, b"x".to_vec()).expect("queued");
    let mut probes = 0;
    for _ in 0..10 {
        probes += drain(&mut p.a, p.now).len();
        let Some(t) = p.a.poll_timeout() else { break };
        p.now = t;
        p.a.handle_timeout(t);
    }
    assert_eq!(probes, 3);
    let ev = events(&mut p.a);
    assert!(ev.contains(&Event::Failed {
        msg_id: id,
        reason: FailReason::PeerUnreachable,
        maybe_delivered: false
    }));
}

/// Regression: both sides opened at once; a's probe was lost, so a learnt
/// b's epoch from b's probe. The handshake deadline used to stay in the
/// past, and poll_timeout kept returning it (the endpoint spun).
#[test]
fn simultaneous_open_does_not_leave_a_deadline_in_the_past() {
    let mut p = Pair::new();
    p.a.send(p.now, b"from a".to_vec()).expect("queued");
    p.b.send(p.now, b"from b".to_vec()).expect("queued");
    let _lost = drain(&mut p.a, p.now);
    let b_probe = drain(&mut p.b, p.now);
    feed(&mut p.a, p.now, &b_probe);
    let from_a = drain(&mut p.a, p.now);
    // The data goes at once and carries the answer to b's probe.
    assert_eq!(kinds(&from_a), [Kind::Data]);
    assert_eq!(parse(&from_a[0]).receiver_epoch, B);
    for _ in 0..50 {
        let Some(t) = p.a.poll_timeout() else { break };
        assert!(t >= p.now);
        p.now = t;
        p.a.handle_timeout(t);
        let _ = drain(&mut p.a, p.now);
        assert!(
            p.a.poll_timeout().is_none_or(|n| n > t),
            "timer re-armed in the past"
        );
    }
}

#[test]
fn duplicate_is_acked_not_delivered() {
    let mut p = Pair::new();
    let (_, data) = p.handshake_with(b"once".to_vec());
    feed(&mut p.b, p.now, &data);
    assert_eq!(delivered(&events(&mut p.b)).len(), 1);
    let _ = drain(&mut p.b, p.now);
    feed(&mut p.b, p.now, &data);
    assert!(events(&mut p.b).is_empty());
    assert_eq!(p.b.snapshot().stats.duplicates, 1);
    // Acknowledged at once: the sender evidently missed the ack.
    let ack = drain(&mut p.b, p.now);
    assert_eq!(kinds(&ack), [Kind::Ack]);
    assert_eq!(parse(&ack[0]).ack.map(|a| a.ack), Some(Seq(2)));
}

#[test]
fn out_of_order_delivery_without_head_of_line_blocking() {
    let mut p = Pair::new();
    let (_, first) = p.handshake_with(b"m1".to_vec());
    p.a.send(p.now, b"m2".to_vec()).expect("queued");
    p.a.send(p.now, b"m3".to_vec()).expect("queued");
    let rest = drain(&mut p.a, p.now);
    assert_eq!(rest.len(), 2);
    // m1 is lost: m2 and m3 are delivered as they arrive.
    feed(&mut p.b, p.now, &rest);
    assert_eq!(
        delivered(&events(&mut p.b)),
        [b"m2".to_vec(), b"m3".to_vec()]
    );
    let ack = drain(&mut p.b, p.now);
    let a = parse(&ack[ack.len() - 1]).ack.expect("ack");
    assert_eq!((a.ack, a.sack), (Seq(1), 0b11));
    feed(&mut p.b, p.now, &first);
    assert_eq!(delivered(&events(&mut p.b)), [b"m1".to_vec()]);
}

#[test]
fn rto_backs_off_until_max_retries_then_peer_unreachable() {
    let c = Config {
        retransmits_max: 4,
        rto_initial: ms(10),
        rto_min: ms(10),
        rto_max: ms(1000),
        ack_delay: ms(1),
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (id, first) = p.handshake_with(b"x".to_vec());
    assert_eq!(first.len(), 1);
    // The handshake measured 1 ms: RTO = max(rto_min, 1 + 4 * 0.5) = 10 ms.
    let mut sent_at = vec![p.now];
    let mut failed = None;
    while let Some(t) = p.a.poll_timeout() {
        p.now = t;
        p.a.handle_timeout(t);
        let out = drain(&mut p.a, p.now);
        for d in &out {
            if parse(d).kind == Kind::Data {
                sent_at.push(p.now);
            }
        }
        let ev = events(&mut p.a);
        if let Some(e) = ev.iter().find(|e| matches!(e, Event::Failed { .. })) {
            failed = Some((p.now, e.clone()));
            break;
        }
    }
    let gaps: Vec<Duration> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [ms(10), ms(20), ms(40), ms(80)]);
    let (at, e) = failed.expect("fails after the last retransmission");
    assert_eq!(at - sent_at[4], ms(160));
    assert_eq!(
        e,
        Event::Failed {
            msg_id: id,
            reason: FailReason::PeerUnreachable,
            maybe_delivered: true
        }
    );
    assert_eq!(p.a.snapshot().stats.retransmissions, 4);
    // Nothing more is sent for it.
    assert!(drain(&mut p.a, p.now)
        .iter()
        .all(|d| parse(d).kind != Kind::Data));
}

#[test]
fn karn_rule_no_sample_from_retransmission() {
    let c = Config {
        rto_initial: ms(50),
        rto_min: ms(5),
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (_, first) = p.handshake_with(b"x".to_vec());
    let srtt = p.a.snapshot().srtt;
    assert_eq!(srtt, Some(ms(1)));
    drop(first); // lost
    let t = p.a.poll_timeout().expect("rto armed");
    p.now = t;
    p.a.handle_timeout(t);
    let again = drain(&mut p.a, p.now);
    assert_eq!(kinds(&again), [Kind::Data]);
    // The ack comes back long after the first transmission: had it been
    // taken as a sample of the first, SRTT would jump.
    p.advance(ms(1));
    feed(&mut p.b, p.now, &again);
    p.b.handle_timeout(p.now + ms(5));
    let ack = drain(&mut p.b, p.now + ms(5));
    feed(&mut p.a, p.now, &ack);
    assert!(matches!(events(&mut p.a)[..], [Event::Acked { .. }]));
    assert_eq!(p.a.snapshot().srtt, srtt);
}

#[test]
fn fast_retransmit_on_sack_gap() {
    let c = Config {
        rto_initial: ms(500),
        rto_min: ms(100),
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (_, first) = p.handshake_with(vec![1]);
    for i in 2..=5u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    let rest = drain(&mut p.a, p.now);
    assert_eq!(rest.len(), 4);
    drop(first); // seq 1 lost; 2..=5 arrive
    p.advance(ms(1));
    feed(&mut p.b, p.now, &rest);
    let acks = drain(&mut p.b, p.now);
    p.advance(ms(1));
    feed(&mut p.a, p.now, &acks);
    // Well before the RTO: seq 1 goes again because 3 later ones were acked.
    let again = drain(&mut p.a, p.now);
    assert_eq!(
        again.iter().map(|d| parse(d).seq).collect::<Vec<_>>(),
        [Seq(1)]
    );
    assert_eq!(p.a.snapshot().stats.fast_retransmissions, 1);
    assert_eq!(p.a.snapshot().stats.retransmissions, 1);
}

/// RFC 6928: a new channel may send ten datagrams before the first
/// acknowledgement.
#[test]
fn initial_window_is_ten_datagrams() {
    assert_eq!(Config::default().cwnd_initial, 10);
    let c = Config {
        cwnd_initial: Config::default().cwnd_initial,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (_, first) = p.handshake_with(vec![0]);
    for i in 1..30u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    let rest = drain(&mut p.a, p.now);
    assert_eq!(first.len() + rest.len(), 10);
}

/// A path with a 10 ms round trip and no clamping of the timeouts: the
/// first probe is RACK-TLP's two smoothed RTTs, not the RTO.
fn wan() -> Config {
    Config {
        rto_initial: ms(100),
        rto_min: ms(2),
        rto_max: ms(1000),
        ..cfg()
    }
}

/// RFC 8985 §7: when the last datagrams of a flight are lost, nothing later
/// is acknowledged to reveal it; a tail-loss probe two smoothed RTTs after
/// the last transmission sends it again, well before the RTO would.
#[test]
fn tail_loss_is_recovered_by_a_probe_before_the_rto() {
    let mut p = Pair::with(wan(), wan());
    let (_, mut data) = p.handshake_over(vec![1], ms(10));
    for i in 2..=3u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    data.extend(drain(&mut p.a, p.now));
    let sent = p.now;
    assert_eq!(data.len(), 3);
    let tail = data.pop().expect("three datagrams");
    // The first two arrive and are acknowledged; the tail is lost.
    p.advance(ms(5));
    feed(&mut p.b, p.now, &data);
    let acks = drain(&mut p.b, p.now);
    p.advance(ms(5));
    feed(&mut p.a, p.now, &acks);
    assert!(drain(&mut p.a, p.now).is_empty());
    let snap = p.a.snapshot();
    let srtt = snap.srtt.expect("measured");
    let tlp = sent + srtt * 2 + cfg().ack_delay;
    assert!(tlp < sent + snap.rto, "the probe comes before the RTO");
    assert_eq!(p.a.poll_timeout(), Some(tlp));
    p.now = tlp;
    p.a.handle_timeout(p.now);
    let probe = drain(&mut p.a, p.now);
    assert_eq!(
        probe.iter().map(|d| parse(d).seq).collect::<Vec<_>>(),
        [parse(&tail).seq],
        "the probe is the lost tail, with its own counter"
    );
    p.advance(ms(5));
    feed(&mut p.b, p.now, &probe);
    assert_eq!(delivered(&events(&mut p.b)), [vec![1], vec![2], vec![3]]);
    p.settle(Duration::from_secs(1));
    let acked = events(&mut p.a)
        .iter()
        .filter(|e| matches!(e, Event::Acked { .. }))
        .count();
    assert_eq!(acked, 3);
    assert_eq!(p.a.snapshot().stats.probes, 1);
}

/// RFC 8985 §6.2: a datagram sent before one that is acknowledged is lost
/// once a round trip has passed since it went (on a path that keeps order,
/// no reordering window), though too few later counters were acknowledged
/// for the packet threshold: the repair goes one RTT after the loss, not at
/// a timeout.
#[test]
fn time_threshold_declares_a_loss_one_rtt_after_sending() {
    let mut p = Pair::with(wan(), wan());
    let (_, lost) = p.handshake_over(vec![1], ms(10));
    let lost_seq = parse(&lost[0]).seq;
    p.advance(ms(5));
    p.a.send(p.now, vec![2]).expect("queued");
    let later = drain(&mut p.a, p.now);
    p.advance(ms(5));
    feed(&mut p.b, p.now, &later);
    p.b.handle_timeout(p.now + ms(1));
    let ack = drain(&mut p.b, p.now + ms(1));
    p.advance(ms(6));
    feed(&mut p.a, p.now, &ack);
    let again = drain(&mut p.a, p.now);
    assert_eq!(
        again.iter().map(|d| parse(d).seq).collect::<Vec<_>>(),
        [lost_seq]
    );
    let stats = p.a.snapshot().stats;
    assert_eq!((stats.fast_retransmissions, stats.probes), (1, 0));
}

/// RFC 9002 §6.2: a probe timeout is no proof of congestion, so it leaves
/// the window alone, however often it fires.
#[test]
fn a_probe_timeout_does_not_reduce_the_window() {
    let mut p = Pair::with(wan(), wan());
    let (_, lost) = p.handshake_over(vec![1], ms(10));
    drop(lost);
    let cwnd = p.a.snapshot().cwnd;
    for round in 1..=3 {
        let t = p.a.poll_timeout().expect("the probe timeout is armed");
        p.now = t;
        p.a.handle_timeout(t);
        assert_eq!(
            kinds(&drain(&mut p.a, p.now)),
            [Kind::Data],
            "probe {round}"
        );
        assert_eq!(p.a.snapshot().cwnd, cwnd);
    }
    assert_eq!(p.a.snapshot().stats.probes, 3);
    // The path comes back: the next probe gets through, nothing was lost
    // for good, and the window is still whole.
    let t = p.a.poll_timeout().expect("armed");
    p.now = t;
    p.a.handle_timeout(t);
    let probe = drain(&mut p.a, p.now);
    feed(&mut p.b, p.now, &probe);
    p.settle(Duration::from_secs(1));
    assert!(events(&mut p.a).contains(&Event::Acked { msg_id: MsgId(1) }));
    let snap = p.a.snapshot();
    assert_eq!((snap.cwnd, snap.stats.congestion_events), (cwnd, 0));
}

/// RFC 9002 §7.3.2: losses from one flight are one congestion event; the
/// window is reduced once, and again only for a datagram sent after the
/// recovery period began.
#[test]
fn one_reduction_per_recovery_period() {
    let mut p = Pair::with(wan(), wan());
    let (_, mut data) = p.handshake_over(vec![0], ms(10));
    for i in 1..10u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    data.extend(drain(&mut p.a, p.now));
    assert_eq!(data.len(), 10);
    // Counters 2 and 6 are lost; the others arrive.
    let arrive: Vec<Vec<u8>> = data
        .iter()
        .filter(|d| ![Seq(2), Seq(6)].contains(&parse(d).seq))
        .cloned()
        .collect();
    p.advance(ms(5));
    feed(&mut p.b, p.now, &arrive);
    p.b.handle_timeout(p.now + ms(1));
    let acks = drain(&mut p.b, p.now + ms(1));
    p.advance(ms(5));
    feed(&mut p.a, p.now, &acks);
    let snap = p.a.snapshot();
    assert_eq!(snap.stats.congestion_events, 1, "two losses, one event");
    // (How far it reduced depends on what the path delivered: see
    // congestion.rs; here the point is how often.)
    let reduced = snap.cwnd;
    // Both go again; their acknowledgement ends the recovery period.
    let again = drain(&mut p.a, p.now);
    assert_eq!(
        again.iter().map(|d| parse(d).seq).collect::<Vec<_>>(),
        [Seq(2), Seq(6)]
    );
    assert_eq!(p.a.snapshot().cwnd, reduced, "no second reduction");
    p.advance(ms(5));
    feed(&mut p.b, p.now, &again);
    p.settle(Duration::from_secs(1));
    // A loss from a flight sent after the recovery began: a new event.
    for i in 10..20u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    let flight = drain(&mut p.a, p.now);
    // The first of them is lost.
    let rest = &flight[1..];
    p.advance(ms(5));
    feed(&mut p.b, p.now, rest);
    p.b.handle_timeout(p.now + ms(1));
    let acks = drain(&mut p.b, p.now + ms(1));
    p.advance(ms(5));
    feed(&mut p.a, p.now, &acks);
    assert_eq!(p.a.snapshot().stats.congestion_events, 2);
}

/// RFC 9002 §7.6: when everything sent over more than three probe timeouts
/// is lost, the path has stopped delivering, and only then does the window
/// collapse, to its minimum.
#[test]
fn persistent_congestion_collapses_the_window() {
    let mut p = Pair::with(wan(), wan());
    let (_, lost) = p.handshake_over(vec![1], ms(10));
    drop(lost);
    let first_sent = p.now;
    // Probes go unanswered until the loss spans three PTOs; the window
    // stays (a timeout is not congestion).
    let pc = (p.a.snapshot().rto + cfg().ack_delay) * 3;
    while p.now < first_sent + pc {
        let t = p.a.poll_timeout().expect("armed");
        p.now = t;
        p.a.handle_timeout(t);
        let _ = drain(&mut p.a, p.now);
        assert_eq!(p.a.snapshot().cwnd, 10);
    }
    // The path comes back: a new message gets through and is acknowledged,
    // which shows the old one lost, over a span with nothing delivered.
    p.advance(ms(1));
    p.a.send(p.now, vec![2]).expect("queued");
    let fresh = drain(&mut p.a, p.now);
    p.advance(ms(5));
    feed(&mut p.b, p.now, &fresh);
    p.b.handle_timeout(p.now + ms(1));
    let acks = drain(&mut p.b, p.now + ms(1));
    p.advance(ms(5));
    feed(&mut p.a, p.now, &acks);
    if let Some(t) = p.a.poll_timeout() {
        // The time threshold may still be running.
        p.now = t;
        p.a.handle_timeout(t);
    }
    let snap = p.a.snapshot();
    assert_eq!(snap.stats.persistent_congestion, 1);
    assert_eq!(snap.cwnd, 2);
}

#[test]
fn never_more_in_flight_than_cwnd_and_peer_window() {
    // cwnd limits.
    let c = Config {
        cwnd_initial: 10,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (_, first) = p.handshake_with(vec![0]);
    for i in 1..100u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    let rest = drain(&mut p.a, p.now);
    assert_eq!(first.len() + rest.len(), 10);
    assert_eq!(p.a.snapshot().in_flight, 10);
    // The peer's advertised window limits when it is smaller.
    let ca = Config {
        cwnd_initial: 64,
        cwnd_max: 64,
        ..cfg()
    };
    let cb = Config {
        recv_window: 16,
        ..cfg()
    };
    let mut p = Pair::with(ca, cb);
    let (_, first) = p.handshake_with(vec![0]);
    for i in 1..100u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    let rest = drain(&mut p.a, p.now);
    assert_eq!(p.a.snapshot().peer_window, 16);
    assert_eq!(first.len() + rest.len(), 16);
    // The last one that fits asks for an immediate ack.
    assert!(parse(&rest[rest.len() - 1]).ack_now);
    // After the acks, the rest flows, still within the window each round.
    feed(&mut p.b, p.now, &first);
    feed(&mut p.b, p.now, &rest);
    let mut total = 16;
    for _ in 0..20 {
        let acks = drain(&mut p.b, p.now);
        feed(&mut p.a, p.now, &acks);
        let more = drain(&mut p.a, p.now);
        assert!(more.len() <= 16);
        assert!(p.a.snapshot().in_flight <= 16);
        total += more.len();
        feed(&mut p.b, p.now, &more);
        if more.is_empty() && acks.is_empty() {
            break;
        }
    }
    assert_eq!(total, 100);
}

#[test]
fn fragmentation_and_reassembly_of_multi_fragment_message() {
    let msg: Vec<u8> = (0..1050u32).map(|i| (i * 7 % 251) as u8).collect();
    let c = Config {
        cwnd_initial: 16,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (_, mut frags) = p.handshake_with(msg.clone());
    assert_eq!(frags.len(), 11);
    for (i, f) in frags.iter().enumerate() {
        let d = parse(f);
        let fr = d.fragment.expect("data");
        assert_eq!((fr.index, fr.count), (i as u32, 11));
        assert_eq!(fr.payload.len(), if i == 10 { 50 } else { 100 });
    }
    // Arriving in reverse order; the message appears once, whole.
    frags.reverse();
    for (i, f) in frags.iter().enumerate() {
        feed(&mut p.b, p.now, std::slice::from_ref(f));
        let got = delivered(&events(&mut p.b));
        if i < 10 {
            assert!(got.is_empty());
            assert!(p.b.snapshot().reassembly_bytes > 0);
        } else {
            assert_eq!(got, std::slice::from_ref(&msg));
        }
    }
    assert_eq!(p.b.snapshot().reassembly_bytes, 0);
    assert_eq!(p.settle(Duration::from_secs(10)), 1, "one ack");
    assert!(matches!(events(&mut p.a)[..], [Event::Acked { .. }]));
    assert!(p.a.is_idle() && p.b.is_idle());
}

#[test]
fn message_too_large_is_refused() {
    let c = tight_reassembly(Config {
        message_max: 1000,
        send_queue_bytes_max: 1000,
        ..cfg()
    });
    let mut ch = Channel::new(c, A, seed(A));
    let now = Instant::now();
    assert_eq!(
        ch.send(now, vec![0; 1001]),
        Err(SendError::TooLarge {
            size: 1001,
            max: 1000
        })
    );
    assert!(ch.send(now, vec![0; 1000]).is_ok());
    assert_eq!(ch.snapshot().queued_messages, 1);
}

#[test]
fn send_queue_full() {
    let c = Config {
        send_queue_max: 2,
        ..cfg()
    };
    let mut ch = Channel::new(c, A, seed(A));
    let now = Instant::now();
    assert!(ch.send(now, vec![1]).is_ok());
    assert!(ch.send(now, vec![2]).is_ok());
    assert_eq!(ch.send(now, vec![3]), Err(SendError::QueueFull));
    let c = tight_reassembly(Config {
        message_max: 1000,
        send_queue_bytes_max: 1500,
        ..cfg()
    });
    let mut ch = Channel::new(c, A, seed(A));
    assert!(ch.send(now, vec![0; 1000]).is_ok());
    assert_eq!(ch.send(now, vec![0; 501]), Err(SendError::QueueFull));
    assert!(ch.send(now, vec![0; 500]).is_ok());
}

/// A hostile or confused peer starting many multi-fragment messages: the
/// receiver holds at most `reassembly_bytes_max`, each fragment and each
/// partial message charged its overhead besides its payload, and says so in
/// its window.
#[test]
fn reassembly_memory_is_bounded() {
    use crate::channel::recv::{charge, PARTIAL_OVERHEAD};
    let c = tight_reassembly(Config {
        message_max: 1000,
        send_queue_bytes_max: 1000,
        recv_window: 1024,
        ..cfg()
    });
    let mut b = Channel::new(c, B, seed(B));
    let now = Instant::now();
    let payload = [7u8; 100];
    for i in 0..200u64 {
        let d = first_fragment(A, 1 + i, 2, &payload);
        b.handle_datagram(now, &d);
        assert!(b.snapshot().reassembly_bytes <= c.reassembly_bytes_max);
    }
    let per_message = PARTIAL_OVERHEAD + charge(100);
    let fit = c.reassembly_bytes_max / per_message;
    assert_eq!(b.snapshot().reassembly_bytes, fit * per_message);
    assert!(b.snapshot().stats.out_of_window > 0);
    let ack = drain(&mut b, now);
    let a = parse(&ack[ack.len() - 1]).ack.expect("ack");
    let left = c.reassembly_bytes_max - fit * per_message;
    assert_eq!(
        a.window as usize,
        left / charge(100),
        "only the room left is advertised"
    );
    assert_eq!(
        a.ack,
        Seq(1 + fit as u64),
        "the refused datagrams are not acknowledged"
    );
}

/// Empty and 1-byte fragments are not free: a peer sending nothing but them
/// is held to the same budget, counted in real memory, not in payload bytes.
#[test]
fn empty_and_one_byte_fragments_are_charged_their_overhead() {
    use crate::channel::recv::{charge, PARTIAL_OVERHEAD};
    let c = tight_reassembly(Config {
        message_max: 1000,
        send_queue_bytes_max: 1000,
        recv_window: 1 << 20,
        ..cfg()
    });
    for size in [0usize, 1] {
        let mut b = Channel::new(c, B, seed(B));
        let now = Instant::now();
        let payload = vec![7u8; size];
        let mut accepted = 0usize;
        for i in 0..100_000u64 {
            let d = first_fragment(A, 1 + i, 3, &payload);
            let before = b.snapshot().stats.out_of_window;
            b.handle_datagram(now, &d);
            if b.snapshot().stats.out_of_window == before {
                accepted += 1;
            }
            assert!(b.snapshot().reassembly_bytes <= c.reassembly_bytes_max);
        }
        assert_eq!(
            accepted,
            c.reassembly_bytes_max / (PARTIAL_OVERHEAD + charge(size)),
            "{size}-byte fragments"
        );
    }
}

/// The endpoint-wide budget: peers together hold at most
/// `reassembly_total_max`, however many there are.
#[test]
fn reassembly_is_bounded_across_peers() {
    use crate::endpoint::Endpoint;
    let c = Config {
        reassembly_total_max: 3 * cfg().reassembly_bytes_max / 2,
        ..cfg()
    };
    let mut ep = Endpoint::new(c, B);
    let now = Instant::now();
    let payload = [7u8; 100];
    for peer in 0..4u16 {
        let from: std::net::SocketAddr = ([127, 0, 0, 1], 1000 + peer).into();
        for i in 0..100_000u64 {
            let d = first_fragment(A + u64::from(peer), 1 + i, 2, &payload);
            let bytes = crate::wire::Bundle { datagrams: vec![d] }.to_vec();
            ep.handle_datagram(now, from, &bytes);
            assert!(ep.reassembly_bytes() <= c.reassembly_total_max);
            if ep.peer(from).is_some_and(|s| s.stats.out_of_window > 0) {
                break; // this peer is full (its own budget or the shared one)
            }
        }
    }
    assert!(
        ep.reassembly_bytes() + 1000 > c.reassembly_total_max,
        "the shared budget was reached: {}",
        ep.reassembly_bytes()
    );
}

/// Messages on the wire to the old incarnation fail "peer restarted"; one
/// never transmitted goes to the new incarnation.
#[test]
fn new_peer_epoch_resets_and_fails_outstanding_with_peer_restarted() {
    let c = Config {
        cwnd_initial: 1,
        cwnd_min: 1,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (sent, _lost) = p.handshake_with(b"on the wire".to_vec());
    let waiting = p.a.send(p.now, b"queued".to_vec()).expect("queued");
    assert!(drain(&mut p.a, p.now).is_empty(), "cwnd 1 holds it back");
    // b restarts and speaks first.
    p.b = Channel::new(c, B + 1, seed(B + 1));
    p.b.send(p.now, b"hello".to_vec()).expect("queued");
    let probe = drain(&mut p.b, p.now);
    feed(&mut p.a, p.now, &probe);
    // Only a claim until the new epoch answers a's challenge (b has not
    // learnt a's epoch yet, and answers all the same).
    assert!(events(&mut p.a).is_empty());
    assert_eq!(p.a.snapshot().peer_epoch, Some(B));
    let answer = p.challenge_answered_by_b();
    feed(&mut p.a, p.now, &answer);
    let ev = events(&mut p.a);
    assert_eq!(
        ev,
        [
            Event::Failed {
                msg_id: sent,
                reason: FailReason::PeerRestarted,
                maybe_delivered: true
            },
            Event::PeerRestarted,
            Event::Delivered {
                msg_id: MsgId(1),
                data: b"hello".to_vec()
            }
        ]
    );
    assert_eq!(p.a.snapshot().peer_epoch, Some(B + 1));
    assert_eq!(p.a.snapshot().stats.peer_restarts, 1);
    // The queued message goes to the new incarnation, with fresh counters.
    let out = drain(&mut p.a, p.now);
    let data: Vec<_> = out
        .iter()
        .map(|b| parse(b))
        .filter(|d| d.kind == Kind::Data)
        .collect();
    assert_eq!(data.len(), 1);
    assert_eq!((data[0].seq, data[0].receiver_epoch), (Seq(1), B + 1));
    feed(&mut p.b, p.now, &out);
    assert_eq!(delivered(&events(&mut p.b)), [b"queued".to_vec()]);
    p.settle(Duration::from_secs(10));
    assert!(events(&mut p.a).contains(&Event::Acked { msg_id: waiting }));
}

#[test]
fn datagram_from_retired_epoch_is_dropped() {
    let mut p = Pair::new();
    let (_, data) = p.handshake_with(b"x".to_vec());
    feed(&mut p.b, p.now, &data);
    p.b.send(p.now, b"old reply".to_vec()).expect("queued");
    let old = drain(&mut p.b, p.now);
    // b restarts before the old reply arrives.
    p.b = Channel::new(cfg(), B + 1, seed(B + 1));
    p.b.send(p.now, b"new".to_vec()).expect("queued");
    let probe = drain(&mut p.b, p.now);
    feed(&mut p.a, p.now, &probe);
    let answer = p.challenge_answered_by_b();
    feed(&mut p.a, p.now, &answer);
    assert!(events(&mut p.a).contains(&Event::PeerRestarted));
    let _ = drain(&mut p.a, p.now);
    let before = p.a.snapshot();
    feed(&mut p.a, p.now, &old);
    assert!(
        events(&mut p.a).is_empty(),
        "not delivered, no second reset"
    );
    let after = p.a.snapshot();
    assert_eq!(after.stats.stale_epoch, before.stats.stale_epoch + 1);
    assert_eq!(after.peer_epoch, Some(B + 1));
    assert!(drain(&mut p.a, p.now).is_empty(), "silence");
}

/// b restarted; a still sends to its old epoch. The new incarnation must not
/// deliver (its predecessor may have), and answers so a learns the epoch.
#[test]
fn datagram_addressed_to_our_old_epoch_is_not_delivered_and_answered() {
    let mut p = Pair::new();
    let (id, data) = p.handshake_with(b"request".to_vec());
    p.b = Channel::new(cfg(), B + 1, seed(B + 1));
    feed(&mut p.b, p.now, &data);
    assert!(events(&mut p.b).is_empty());
    assert_eq!(p.b.snapshot().stats.stale_epoch, 1);
    let answer = drain(&mut p.b, p.now);
    assert_eq!(answer.len(), 1);
    let d = parse(&answer[0]);
    assert_eq!(
        (d.kind, d.sender_epoch, d.receiver_epoch),
        (Kind::Ack, B + 1, A)
    );
    feed(&mut p.a, p.now, &answer);
    assert!(events(&mut p.a).is_empty(), "a claim, not yet a restart");
    let echo = p.challenge_answered_by_b();
    feed(&mut p.a, p.now, &echo);
    assert_eq!(
        events(&mut p.a),
        [
            Event::Failed {
                msg_id: id,
                reason: FailReason::PeerRestarted,
                maybe_delivered: true
            },
            Event::PeerRestarted
        ]
    );
    assert!(p.a.is_idle());
}

/// An epoch b never had, as an off-path forger picks it.
const FORGED: u64 = 0xF0F0;

/// A datagram forged with b's address: from `epoch`, to whatever epoch of
/// a's the forger knows (0: none), the smallest a datagram can be.
fn forged_from(epoch: u64, receiver_epoch: u64, kind: Kind, nonce: u64) -> Vec<u8> {
    Datagram {
        sender_epoch: epoch,
        receiver_epoch,
        kind,
        seq: Seq(0),
        send_floor: Seq(u64::MAX),
        msg_floor: u64::MAX,
        ack: Some(AckInfo {
            ack: Seq(1),
            sack: 0,
            window: 64,
        }),
        ack_now: kind == Kind::Probe,
        fragment: None,
        nonce,
        key_id: 0,
    }
    .to_vec()
}

/// Blind reset: one datagram forged with b's address and a new epoch. a
/// drops it and challenges the claimed epoch at b's address, where the real
/// b reads the challenge as addressed to an epoch it never had. Nothing
/// confirms the claim: the message in flight is acknowledged as usual, the
/// real b's later datagrams are delivered, and the claim is forgotten after
/// `peer_timeout`.
#[test]
fn a_forged_new_epoch_neither_resets_nor_fails_outstanding_messages() {
    let mut p = Pair::new();
    let (id, data) = p.handshake_with(b"request".to_vec());
    let forged = forged_from(FORGED, 0, Kind::Probe, 0);
    let heard = p.now;
    feed(&mut p.a, p.now, std::slice::from_ref(&forged));
    assert!(events(&mut p.a).is_empty(), "nothing failed, no reset");
    let snap = p.a.snapshot();
    assert_eq!(snap.peer_epoch, Some(B));
    assert_eq!(snap.in_flight, 1);
    assert_eq!(
        (snap.stats.unconfirmed_epoch, snap.stats.peer_restarts),
        (1, 0)
    );
    assert_eq!(snap.stats.datagrams_received, 1, "a claim is not heard");
    let challenge = drain(&mut p.a, p.now);
    assert_eq!(kinds(&challenge), [Kind::Probe]);
    assert!(challenge[0].len() <= forged.len(), "no amplification");
    let c = parse(&challenge[0]);
    assert_eq!((c.sender_epoch, c.receiver_epoch), (A, FORGED));
    assert_ne!(c.nonce, 0);
    assert_eq!(p.a.snapshot().stats.epoch_challenges, 1);
    // The real b: the challenge is stale to it, the request is not.
    feed(&mut p.b, p.now, &challenge);
    feed(&mut p.b, p.now, &data);
    assert_eq!(delivered(&events(&mut p.b)), [b"request".to_vec()]);
    assert_eq!(p.b.snapshot().stats.stale_epoch, 1);
    p.b.send(p.now, b"reply".to_vec()).expect("queued");
    p.settle(ms(100));
    let ev = events(&mut p.a);
    assert_eq!(
        ev,
        [
            Event::Acked { msg_id: id },
            Event::Delivered {
                msg_id: MsgId(1),
                data: b"reply".to_vec()
            }
        ]
    );
    // The forged floors were never applied either.
    p.a.send(p.now, b"later".to_vec()).expect("queued");
    p.settle(ms(100));
    assert_eq!(delivered(&events(&mut p.b)), [b"later".to_vec()]);
    // The unconfirmed claim arms no timer (it expires when next consulted,
    // `peer_timeout` after it was heard).
    p.settle(Duration::from_secs(10));
    assert_eq!(events(&mut p.a), [Event::Acked { msg_id: MsgId(2) }]);
    assert!(p.a.is_idle() && p.b.is_idle());
    assert_eq!(p.a.poll_timeout(), None);
    assert_eq!(p.a.snapshot().peer_epoch, Some(B));
    // Past it, even the right echo (had the forger seen the challenge) no
    // longer confirms: it is a new claim, challenged afresh.
    p.now = heard + cfg().peer_timeout;
    feed(
        &mut p.a,
        p.now,
        &[forged_from(FORGED, A, Kind::Ack, c.nonce)],
    );
    assert!(events(&mut p.a).is_empty());
    let again = drain(&mut p.a, p.now);
    assert_eq!(kinds(&again), [Kind::Probe]);
    assert_ne!(parse(&again[0]).nonce, c.nonce);
    assert_eq!(p.a.snapshot().peer_epoch, Some(B));
}

/// Only an Ack from the claimed epoch, addressed to a's epoch and echoing
/// the challenge confirms a claim: a guess, no echo, an answer to no one,
/// another epoch, or a probe carrying the value, all fail.
#[test]
fn a_wrong_echo_does_not_confirm_a_claimed_epoch() {
    let mut p = Pair::new();
    let (id, _data) = p.handshake_with(b"request".to_vec());
    feed(&mut p.a, p.now, &[forged_from(FORGED, 0, Kind::Probe, 0)]);
    let challenge = drain(&mut p.a, p.now);
    let nonce = parse(&challenge[0]).nonce;
    let wrong = [
        forged_from(FORGED, A, Kind::Ack, nonce ^ 1),
        forged_from(FORGED, A, Kind::Ack, nonce.wrapping_add(1)),
        forged_from(FORGED, A, Kind::Ack, 0),
        forged_from(FORGED, 0, Kind::Ack, nonce),
        forged_from(FORGED + 1, A, Kind::Ack, nonce),
        forged_from(FORGED, A, Kind::Probe, nonce),
    ];
    for w in &wrong {
        feed(&mut p.a, p.now, std::slice::from_ref(w));
        assert!(events(&mut p.a).is_empty(), "{:?}", parse(w));
        assert_eq!(p.a.snapshot().peer_epoch, Some(B));
    }
    // The probe was a challenge to a's epoch: a echoes it, in a bare
    // header (nothing of the incarnation it knows), and sends nothing else.
    let out = drain(&mut p.a, p.now);
    assert_eq!(kinds(&out), [Kind::Ack]);
    let e = parse(&out[0]);
    assert_eq!(
        (e.receiver_epoch, e.nonce, e.ack, e.send_floor, e.msg_floor),
        (FORGED, nonce, None, Seq(0), 0)
    );
    let snap = p.a.snapshot();
    assert_eq!(snap.stats.unconfirmed_epoch, 1 + wrong.len() as u64);
    assert_eq!(
        snap.stats.epoch_challenges, 1,
        "one challenge outstanding, not re-sent before its answer is overdue"
    );
    // The right echo confirms (an on-path attacker reads the challenge:
    // without keys nothing more is promised).
    feed(&mut p.a, p.now, &[forged_from(FORGED, A, Kind::Ack, nonce)]);
    assert_eq!(
        events(&mut p.a),
        [
            Event::Failed {
                msg_id: id,
                reason: FailReason::PeerRestarted,
                maybe_delivered: true
            },
            Event::PeerRestarted
        ]
    );
    assert_eq!(p.a.snapshot().peer_epoch, Some(FORGED));
}

/// b restarts while a's request waits for its acknowledgement. a's
/// retransmission meets the new b, whose answer is a claim; a's challenge
/// and b's echo take one round trip, then the request fails "peer
/// restarted", once, and the next message reaches the new b. A late
/// datagram of the old b changes nothing.
#[test]
fn a_real_restart_is_confirmed_within_a_round_trip_and_reported_once() {
    let one_way = ms(3);
    let mut p = Pair::new();
    let (id, _lost) = p.handshake_over(b"request".to_vec(), one_way * 2);
    p.b.send(p.now, b"old".to_vec()).expect("queued");
    let late = drain(&mut p.b, p.now);
    assert_eq!(kinds(&late), [Kind::Data]);
    p.b = Channel::new(cfg(), B + 1, seed(B + 1));
    let t = p.a.poll_timeout().expect("the request is retransmitted");
    p.now = t;
    p.a.handle_timeout(t);
    let again = drain(&mut p.a, p.now);
    p.advance(one_way);
    feed(&mut p.b, p.now, &again);
    let stale_answer = drain(&mut p.b, p.now);
    p.advance(one_way);
    let heard = p.now;
    feed(&mut p.a, p.now, &stale_answer);
    assert!(events(&mut p.a).is_empty());
    let challenge = drain(&mut p.a, p.now);
    p.advance(one_way);
    feed(&mut p.b, p.now, &challenge);
    let echo = drain(&mut p.b, p.now);
    p.advance(one_way);
    feed(&mut p.a, p.now, &echo);
    assert_eq!(p.now - heard, one_way * 2, "one round trip");
    assert_eq!(
        events(&mut p.a),
        [
            Event::Failed {
                msg_id: id,
                reason: FailReason::PeerRestarted,
                maybe_delivered: true
            },
            Event::PeerRestarted
        ]
    );
    p.a.send(p.now, b"next".to_vec()).expect("queued");
    p.settle(Duration::from_secs(10));
    feed(&mut p.a, p.now, &late);
    p.settle(Duration::from_secs(10));
    assert_eq!(delivered(&events(&mut p.b)), [b"next".to_vec()]);
    let ev = events(&mut p.a);
    assert_eq!(ev, [Event::Acked { msg_id: MsgId(2) }], "no second reset");
    let snap = p.a.snapshot();
    assert_eq!(
        (
            snap.peer_epoch,
            snap.stats.peer_restarts,
            snap.stats.epoch_challenges
        ),
        (Some(B + 1), 1, 1)
    );
    assert!(p.a.is_idle() && p.b.is_idle());
}

/// A thousand claims, each with a new epoch, at once: one claim is kept (the
/// last) and one challenge sent; another claim within the challenge's backed-off RTO sends
/// nothing; once its answer is overdue a newer claim replaces it.
#[test]
fn epoch_claims_are_bounded_and_challenges_rate_limited() {
    let mut p = Pair::new();
    let (_, data) = p.handshake_with(b"x".to_vec());
    feed(&mut p.b, p.now, &data);
    p.settle(ms(100));
    let _ = events(&mut p.a);
    let _ = events(&mut p.b);
    assert!(p.a.is_idle());
    let first = p.now;
    for i in 0..1000 {
        feed(&mut p.a, p.now, &[forged_from(FORGED + i, 0, Kind::Ack, 0)]);
    }
    let out = drain(&mut p.a, p.now);
    assert_eq!(kinds(&out), [Kind::Probe]);
    let c = parse(&out[0]);
    assert_eq!(
        c.receiver_epoch,
        FORGED + 999,
        "each claim replaced the last until a challenge went out"
    );
    feed(&mut p.a, p.now, &[forged_from(FORGED, 0, Kind::Ack, 0)]);
    assert!(drain(&mut p.a, p.now).is_empty(), "rate limited");
    let rto = p.a.snapshot().rto;
    p.advance(rto - Duration::from_micros(1));
    feed(&mut p.a, p.now, &[forged_from(FORGED + 1, 0, Kind::Ack, 0)]);
    assert!(drain(&mut p.a, p.now).is_empty(), "not yet overdue");
    p.advance(Duration::from_micros(1));
    feed(&mut p.a, p.now, &[forged_from(FORGED + 1, 0, Kind::Ack, 0)]);
    let out = drain(&mut p.a, p.now);
    let c2 = parse(&out[0]);
    assert_eq!((out.len(), c2.receiver_epoch), (1, FORGED + 1));
    assert_ne!(c2.nonce, c.nonce, "a new claim, a new challenge");
    // The same claim again, every RTO: re-challenged with the same
    // challenge one RTO after the first, then two, then four (backoff).
    let mut resent = Vec::new();
    for _ in 0..7 {
        p.advance(rto);
        feed(&mut p.a, p.now, &[forged_from(FORGED + 1, 0, Kind::Ack, 0)]);
        for d in drain(&mut p.a, p.now) {
            assert_eq!(parse(&d).nonce, c2.nonce);
            resent.push(p.now);
        }
    }
    let challenged = resent[0] - rto;
    assert_eq!(
        resent,
        [challenged + rto, challenged + rto * 3, challenged + rto * 7]
    );
    let snap = p.a.snapshot();
    assert_eq!(snap.stats.unconfirmed_epoch, 1003 + 7);
    assert_eq!(snap.stats.epoch_challenges, 2 + 3);
    assert_eq!(snap.peer_epoch, Some(B));
    // It arms no timer, and expires `peer_timeout` after it was first
    // heard: from then on even its echo does not confirm it.
    assert!(p.a.is_idle());
    assert_eq!(p.a.poll_timeout(), None);
    p.now = first + rto + cfg().peer_timeout;
    feed(
        &mut p.a,
        p.now,
        &[forged_from(FORGED + 1, A, Kind::Ack, c2.nonce)],
    );
    assert!(events(&mut p.a).is_empty());
    assert_eq!(p.a.snapshot().peer_epoch, Some(B));
}

#[test]
fn keepalive_probes_then_silent_peer_unreachable_within_peer_timeout() {
    let c = Config {
        retransmits_max: 64,
        keepalive_interval: ms(500),
        peer_timeout: Duration::from_secs(5),
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (id, _lost) = p.handshake_with(b"x".to_vec());
    let heard = p.now;
    let mut probes = Vec::new();
    let mut unreachable_at = None;
    while let Some(t) = p.a.poll_timeout() {
        assert!(t <= heard + c.peer_timeout);
        p.now = t;
        p.a.handle_timeout(t);
        for d in drain(&mut p.a, p.now) {
            if parse(&d).kind == Kind::Probe {
                probes.push(p.now - heard);
            }
        }
        let ev = events(&mut p.a);
        if ev.contains(&Event::PeerUnreachable) {
            assert!(ev.contains(&Event::Failed {
                msg_id: id,
                reason: FailReason::PeerUnreachable,
                maybe_delivered: true
            }));
            unreachable_at = Some(p.now);
            break;
        }
    }
    assert_eq!(unreachable_at, Some(heard + c.peer_timeout));
    let expected: Vec<Duration> = (1..10).map(|i| ms(500) * i).collect();
    assert_eq!(probes, expected);
    assert!(p.a.is_idle());
    assert_eq!(p.a.poll_timeout(), None);
}

#[test]
fn cancel_stops_retransmission() {
    let mut p = Pair::new();
    let (id, _lost) = p.handshake_with(b"x".to_vec());
    assert!(p.a.cancel(id));
    assert!(!p.a.cancel(id), "already failed");
    assert_eq!(
        events(&mut p.a),
        [Event::Failed {
            msg_id: id,
            reason: FailReason::Cancelled,
            maybe_delivered: true
        }]
    );
    let end = p.now + Duration::from_secs(30);
    while let Some(t) = p.a.poll_timeout().filter(|&t| t < end) {
        p.now = t;
        p.a.handle_timeout(t);
        assert!(drain(&mut p.a, p.now)
            .iter()
            .all(|d| parse(d).kind != Kind::Data));
    }
    assert!(p.a.is_idle());
}

/// a abandons a 3-fragment message after one fragment: b drops the partial
/// and the gap when a's floors say so, and both end idle.
#[test]
fn floors_let_receiver_skip_abandoned_messages_and_free_partials() {
    let c = Config {
        cwnd_initial: 1,
        cwnd_min: 1,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (id, frag0) = p.handshake_with(vec![9; 500]);
    assert_eq!(frag0.len(), 1);
    feed(&mut p.b, p.now, &frag0);
    assert_eq!(
        p.b.snapshot().reassembly_bytes,
        crate::channel::recv::PARTIAL_OVERHEAD + crate::channel::recv::charge(100)
    );
    let ack = drain(&mut p.b, p.now);
    feed(&mut p.a, p.now, &ack);
    // Slow start: two more fragments (both lost); two never sent.
    let lost = drain(&mut p.a, p.now);
    assert_eq!(lost.len(), 2);
    assert!(p.a.cancel(id));
    assert!(events(&mut p.a).contains(&Event::Failed {
        msg_id: id,
        reason: FailReason::Cancelled,
        maybe_delivered: false
    }));
    // frag1 is lost. The next message carries the floors past both.
    p.a.send(p.now, b"next".to_vec()).expect("queued");
    let next = drain(&mut p.a, p.now);
    let d = parse(&next[0]);
    assert_eq!((d.seq, d.send_floor, d.msg_floor), (Seq(4), Seq(4), 2));
    feed(&mut p.b, p.now, &next);
    assert_eq!(delivered(&events(&mut p.b)), [b"next".to_vec()]);
    assert_eq!(p.b.snapshot().reassembly_bytes, 0);
    // The lost fragment turning up late is a duplicate, never reassembled.
    feed(&mut p.b, p.now, &lost);
    assert!(events(&mut p.b).is_empty());
    assert_eq!(p.b.snapshot().stats.duplicates, 2);
    p.settle(Duration::from_secs(10));
    assert!(matches!(events(&mut p.a)[..], [Event::Acked { .. }]));
    assert!(p.a.is_idle() && p.b.is_idle());
}

/// A partition longer than the retransmission budget, with the receiver's
/// whole window in flight and none of it received: every counter of that
/// window is abandoned, so the receiver will not believe a floor past them
/// (it never saw one) and the sender may not send past the window. After
/// the network heals the sender's window filler (a Data datagram with its
/// highest used counter and message 0) opens the window, and the next
/// message is delivered, alone. Found by sim seed 235812855224353, where
/// both sides stayed wedged for the four virtual hours.
#[test]
fn a_window_abandoned_unseen_is_reopened_by_a_filler() {
    let c = Config {
        recv_window: 16,
        cwnd_initial: 16,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (_, first) = p.handshake_with(b"m0".to_vec());
    feed(&mut p.b, p.now, &first);
    assert_eq!(delivered(&events(&mut p.b)), [b"m0".to_vec()]);
    p.settle(Duration::from_secs(1));
    assert!(matches!(events(&mut p.a)[..], [Event::Acked { .. }]));
    // The partition: a fills b's window, and nothing arrives until every
    // message has failed.
    for i in 0..16u8 {
        p.a.send(p.now, vec![i; 10]).expect("queued");
    }
    let mut failed = 0;
    for _ in 0..1_000 {
        let lost = drain(&mut p.a, p.now);
        assert!(
            lost.iter().all(|d| parse(d).seq < Seq(18)),
            "within b's window"
        );
        failed += events(&mut p.a)
            .iter()
            .filter(|e| matches!(e, Event::Failed { .. }))
            .count();
        if failed == 16 {
            break;
        }
        let t = p.a.poll_timeout().unwrap_or_else(|| {
            panic!(
                "a timer while messages wait: {failed} failed, {:?}",
                p.a.snapshot()
            )
        });
        p.now = t;
        p.a.handle_timeout(t);
    }
    assert_eq!(failed, 16, "every message of the window failed");
    assert!(p.b.is_idle(), "b never heard of them");
    // Healed. The next message must get through: a revalidates b's epoch
    // (a quiet spell), then its filler opens b's window.
    p.a.send(p.now, b"after".to_vec()).expect("queued");
    p.settle(Duration::from_secs(10));
    assert_eq!(delivered(&events(&mut p.b)), [b"after".to_vec()]);
    assert!(matches!(events(&mut p.a)[..], [Event::Acked { .. }]));
    assert_eq!(p.a.snapshot().stats.window_fillers, 1);
    assert_eq!(p.b.snapshot().stats.messages_delivered, 2, "m0 and after");
    p.settle(Duration::from_secs(10));
    assert!(p.a.is_idle() && p.b.is_idle());
}

/// When the abandoned message was the last one, the receiver's probe (it
/// waits on the peer while it holds a partial) brings the floors back.
#[test]
fn receiver_holding_a_partial_probes_and_learns_the_floor() {
    let c = Config {
        cwnd_initial: 1,
        cwnd_min: 1,
        keepalive_interval: ms(100),
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (id, frag0) = p.handshake_with(vec![9; 500]);
    feed(&mut p.b, p.now, &frag0);
    let ack = drain(&mut p.b, p.now);
    feed(&mut p.a, p.now, &ack);
    let _lost = drain(&mut p.a, p.now);
    assert!(p.a.cancel(id));
    let _ = events(&mut p.a);
    assert!(!p.b.is_idle());
    p.settle(Duration::from_secs(10));
    assert_eq!(p.b.snapshot().reassembly_bytes, 0);
    assert!(p.a.is_idle() && p.b.is_idle());
    assert!(p.b.snapshot().stats.datagrams_sent <= 4);
}

/// A cancelled message that was still queued is skipped when its turn
/// comes (never transmitted); cancelling costs no scan of the queue.
#[test]
fn cancelled_queued_message_is_never_sent() {
    let c = Config {
        cwnd_initial: 1,
        cwnd_min: 1,
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let (_, first) = p.handshake_with(b"m1".to_vec());
    let m2 = p.a.send(p.now, b"m2".to_vec()).expect("queued");
    p.a.send(p.now, b"m3".to_vec()).expect("queued");
    assert!(p.a.cancel(m2));
    assert_eq!(
        events(&mut p.a),
        [Event::Failed {
            msg_id: m2,
            reason: FailReason::Cancelled,
            maybe_delivered: false
        }]
    );
    feed(&mut p.b, p.now, &first);
    p.settle(Duration::from_secs(10));
    let got: Vec<Vec<u8>> = delivered(&events(&mut p.b));
    assert_eq!(got, [b"m1".to_vec(), b"m3".to_vec()]);
    let _ = events(&mut p.a);
    assert!(p.a.is_idle() && p.b.is_idle());
    // Cancelled before the handshake: nothing goes out at all.
    let mut ch = Channel::new(cfg(), A, seed(A));
    let now = Instant::now();
    let id = ch.send(now, b"x".to_vec()).expect("queued");
    assert!(ch.cancel(id));
    assert_eq!(ch.poll_transmit(now), None);
    assert!(!ch.wants_transmit());
}

/// Regression: both sides restarted, and each learnt the other's previous
/// epoch from a late datagram. Each then addressed the other's old epoch and
/// each ignored the other: every message between them failed, forever.
#[test]
fn both_restarted_with_stale_epochs_converge() {
    let mut p = Pair::new();
    let (_, _) = p.handshake_with(b"x".to_vec());
    let now = p.now;
    // Late datagrams of the dead incarnations, each addressed to the other.
    p.a.send(now, b"late from a".to_vec()).expect("queued");
    p.b.send(now, b"late from b".to_vec()).expect("queued");
    let late_b = drain(&mut p.b, now);
    let _ = drain(&mut p.a, now);
    // b never learned a's epoch in this handshake (b answered a probe), so
    // forge a's late datagram from its parts.
    let late_a = Datagram {
        sender_epoch: A,
        receiver_epoch: B,
        kind: Kind::Probe,
        seq: Seq(0),
        send_floor: Seq(1),
        msg_floor: 1,
        ack: None,
        ack_now: true,
        fragment: None,
        nonce: 0,
        key_id: 0,
    }
    .to_vec();
    let mut a2 = Channel::new(cfg(), A + 1, seed(A + 1));
    let mut b2 = Channel::new(cfg(), B + 1, seed(B + 1));
    feed(&mut a2, now, &late_b);
    feed(&mut b2, now, &[late_a]);
    assert_eq!(a2.snapshot().peer_epoch, Some(B));
    assert_eq!(b2.snapshot().peer_epoch, Some(A));
    let _ = drain(&mut a2, now);
    let _ = drain(&mut b2, now);
    p.a = a2;
    p.b = b2;
    p.a.send(now, b"from a2".to_vec()).expect("queued");
    p.b.send(now, b"from b2".to_vec()).expect("queued");
    p.settle(Duration::from_secs(30));
    assert_eq!(p.a.snapshot().peer_epoch, Some(B + 1));
    assert_eq!(p.b.snapshot().peer_epoch, Some(A + 1));
    // Neither had heard from a live incarnation of the other, so each
    // confirmed the other's epoch with a probe before sending data: both
    // channels reset to the live epochs and both messages got through, once,
    // with no failure. (Before revalidation, both failed "peer restarted".)
    let ev_a = events(&mut p.a);
    let ev_b = events(&mut p.b);
    assert_eq!(delivered(&ev_a), [b"from b2".to_vec()]);
    assert_eq!(delivered(&ev_b), [b"from a2".to_vec()]);
    for ev in [&ev_a, &ev_b] {
        assert!(
            !ev.iter().any(|e| matches!(e, Event::Failed { .. })),
            "{ev:?}"
        );
    }
    // Each saw the other's live epoch as a claim and confirmed it with a
    // challenge, each answering the other's.
    for ch in [&p.a, &p.b] {
        let s = ch.snapshot().stats;
        assert_eq!((s.peer_restarts, s.epoch_challenges), (1, 1), "{s:?}");
    }
    // And the next messages get through.
    p.a.send(p.now, b"again from a2".to_vec()).expect("queued");
    p.b.send(p.now, b"again from b2".to_vec()).expect("queued");
    p.settle(Duration::from_secs(30));
    assert_eq!(delivered(&events(&mut p.b)), [b"again from a2".to_vec()]);
    assert_eq!(delivered(&events(&mut p.a)), [b"again from b2".to_vec()]);
    assert!(p.a.is_idle() && p.b.is_idle());
}

/// A peer restarts while we have nothing outstanding to it and we do not
/// notice. After `revalidate_after` of quiet, the next message waits for a
/// probe that confirms the epoch: it meets the new incarnation, the channel
/// resets with nothing to fail, and the message is delivered to it once.
#[test]
fn quiet_peer_restart_is_revalidated_before_data() {
    let mut p = Pair::new();
    let _ = p.handshake_with(b"first".to_vec());
    p.settle(Duration::from_secs(5));
    let _ = events(&mut p.a);
    let _ = events(&mut p.b);
    // b restarts silently; a waits past revalidate_after.
    p.b = Channel::new(cfg(), B + 7, seed(B + 7));
    p.advance(cfg().revalidate_after + ms(1));
    let now = p.now;
    p.a.send(now, b"after restart".to_vec()).expect("queued");
    let first = drain(&mut p.a, now);
    assert_eq!(
        kinds(&first),
        [Kind::Probe],
        "data went out before the epoch was confirmed"
    );
    feed(&mut p.b, now, &first);
    p.settle(Duration::from_secs(5));
    let ev_a = events(&mut p.a);
    assert!(ev_a.contains(&Event::PeerRestarted), "{ev_a:?}");
    assert!(
        !ev_a.iter().any(|e| matches!(e, Event::Failed { .. })),
        "{ev_a:?}"
    );
    assert_eq!(delivered(&events(&mut p.b)), [b"after restart".to_vec()]);
    assert_eq!(p.a.snapshot().peer_epoch, Some(B + 7));
}

/// Within `revalidate_after` of hearing from the peer, data goes at once:
/// a busy exchange pays no extra round trip.
#[test]
fn recent_peer_needs_no_revalidation() {
    let mut p = Pair::new();
    let _ = p.handshake_with(b"first".to_vec());
    p.settle(ms(20));
    let now = p.now;
    p.a.send(now, b"soon after".to_vec()).expect("queued");
    assert_eq!(kinds(&drain(&mut p.a, now)), [Kind::Data]);
}

// ------------------------------------------------------------------ timers

use super::timer::Timer;

/// Run `ch`'s timers at each deadline it reports, dropping what it sends,
/// and check the no-spin rule after every `handle_timeout`: the next
/// deadline is strictly later, or the channel has something to send (which
/// re-arms its timers). Returns the instants at which it was woken.
fn run_timers_unanswered(ch: &mut Channel, mut now: Instant, rounds: usize) -> Vec<Instant> {
    let mut woken = Vec::new();
    for _ in 0..rounds {
        let _ = drain(ch, now);
        let Some(t) = ch.poll_timeout() else { break };
        assert!(t >= now, "a deadline in the past");
        now = t;
        woken.push(t);
        ch.handle_timeout(t);
        assert!(
            ch.poll_timeout().is_none_or(|n| n > t) || ch.wants_transmit(),
            "handle_timeout({t:?}) left a due deadline and nothing to send: the owner would spin"
        );
    }
    woken
}

/// The earliest armed timer is the one `poll_timeout` reports; it does not
/// fire a moment before its deadline, and does at it.
fn assert_fires_at_reported_deadline(ch: &mut Channel, timer: Timer) -> Instant {
    let t = ch.poll_timeout().expect("a timer is armed");
    assert_eq!(
        ch.timer_deadline(timer),
        Some(t),
        "{timer:?} is the earliest"
    );
    ch.handle_timeout(t - Duration::from_micros(1));
    assert_eq!(ch.timer_deadline(timer), Some(t), "{timer:?} fired early");
    ch.handle_timeout(t);
    assert_ne!(ch.timer_deadline(timer), Some(t), "{timer:?} did not fire");
    t
}

#[test]
fn no_timer_spins_through_handshake_loss_keepalive_and_timeout() {
    // Handshake retries unanswered, then the peer is given up.
    let mut p = Pair::new();
    p.a.send(p.now, b"x".to_vec()).expect("queued");
    run_timers_unanswered(&mut p.a, p.now, 1000);
    assert_eq!(p.a.poll_timeout(), None);

    // Data in flight, every retransmission lost; a hold outlives it.
    let mut p = Pair::new();
    let (_, _lost) = p.handshake_with(vec![1; 1000]);
    p.a.hold(p.now);
    run_timers_unanswered(&mut p.a, p.now, 1000);
    assert!(events(&mut p.a).contains(&Event::PeerUnreachable));

    // The receiver holds a partial message and a gap: it probes the sender.
    let mut p = Pair::new();
    let (_, data) = p.handshake_with(vec![2; 450]);
    feed(&mut p.b, p.now, &data[1..2]);
    run_timers_unanswered(&mut p.b, p.now, 1000);
}

#[test]
fn retransmit_timer_fires_at_reported_deadline() {
    let mut p = Pair::new();
    let (_, _lost) = p.handshake_with(b"lost".to_vec());
    assert!(drain(&mut p.a, p.now).is_empty());
    assert_fires_at_reported_deadline(&mut p.a, Timer::Probe);
    let again = drain(&mut p.a, p.now);
    assert_eq!(kinds(&again), [Kind::Data]);
    assert_eq!(p.a.snapshot().stats.retransmissions, 1);
}

#[test]
fn delayed_ack_timer_fires_at_reported_deadline() {
    let mut p = Pair::new();
    let (_, data) = p.handshake_with(b"one".to_vec());
    feed(&mut p.b, p.now, &data);
    assert!(drain(&mut p.b, p.now).is_empty(), "the ack waits");
    let t = assert_fires_at_reported_deadline(&mut p.b, Timer::DelayedAck);
    assert_eq!(t, p.now + cfg().ack_delay);
    assert_eq!(kinds(&drain(&mut p.b, t)), [Kind::Ack]);
}

#[test]
fn handshake_timer_fires_at_reported_deadline() {
    let mut p = Pair::new();
    p.a.send(p.now, b"x".to_vec()).expect("queued");
    assert_eq!(kinds(&drain(&mut p.a, p.now)), [Kind::Probe]);
    let t = assert_fires_at_reported_deadline(&mut p.a, Timer::Handshake);
    assert_eq!(t, p.now + cfg().rto_initial);
    assert_eq!(
        kinds(&drain(&mut p.a, t)),
        [Kind::Probe],
        "the probe is retried"
    );
}

/// A hold keeps a silent peer checked: keepalive at `keepalive_interval`,
/// then "unreachable" at `peer_timeout` (before the second keepalive).
#[test]
fn keepalive_and_peer_timeout_timers_fire_at_reported_deadlines() {
    let c = Config {
        keepalive_interval: Duration::from_secs(3),
        peer_timeout: Duration::from_secs(5),
        ..cfg()
    };
    let mut p = Pair::with(c, c);
    let _ = p.handshake_with(b"x".to_vec());
    p.settle(ms(50));
    let _ = events(&mut p.a);
    p.a.hold(p.now);
    let heard = p.now;
    let t = assert_fires_at_reported_deadline(&mut p.a, Timer::Keepalive);
    assert_eq!(t, heard + c.keepalive_interval);
    assert_eq!(kinds(&drain(&mut p.a, t)), [Kind::Probe]);
    let t = assert_fires_at_reported_deadline(&mut p.a, Timer::PeerTimeout);
    assert_eq!(t, heard + c.peer_timeout);
    assert!(events(&mut p.a).contains(&Event::PeerUnreachable));
}

/// A forged floor (`msg_floor` = 2^64 - 1, with the peer's epoch, as an
/// on-path forger could send it) must not make the receiver treat every
/// later message as abandoned: the floor never passes the messages it has
/// seen. (The counter floor: the next test.)
#[test]
fn a_bogus_message_floor_does_not_swallow_later_messages() {
    let mut p = Pair::new();
    let (_, first) = p.handshake_with(b"m1".to_vec());
    feed(&mut p.b, p.now, &first);
    assert_eq!(delivered(&events(&mut p.b)), [b"m1".to_vec()]);
    let mut forged = parse(&first[0]);
    forged.msg_floor = u64::MAX;
    forged.fragment = None;
    forged.seq = Seq(0);
    forged.kind = Kind::Probe;
    let mut bytes = Vec::new();
    forged.emit(&mut bytes);
    feed(&mut p.b, p.now, &[bytes]);
    for m in [b"m2".to_vec(), b"m3".to_vec()] {
        p.a.send(p.now, m).expect("queued");
    }
    let later = drain(&mut p.a, p.now);
    feed(&mut p.b, p.now, &later);
    assert_eq!(
        delivered(&events(&mut p.b)),
        [b"m2".to_vec(), b"m3".to_vec()],
        "later messages are still delivered"
    );
}

/// A forged counter floor (`send_floor` = 2^64 - 1, again and again, with
/// the peer's epoch) never moves the receiver past the counters it has
/// received, so never past its window: later datagrams are delivered, not
/// taken for duplicates (which are acknowledged and dropped: lost for good).
#[test]
fn a_bogus_send_floor_does_not_swallow_later_datagrams() {
    let mut p = Pair::new();
    let (_, first) = p.handshake_with(b"m1".to_vec());
    feed(&mut p.b, p.now, &first);
    assert_eq!(delivered(&events(&mut p.b)), [b"m1".to_vec()]);
    let mut forged = parse(&first[0]);
    forged.send_floor = Seq(u64::MAX);
    forged.fragment = None;
    forged.seq = Seq(0);
    forged.kind = Kind::Probe;
    let forged = forged.to_vec();
    for _ in 0..10 {
        feed(&mut p.b, p.now, std::slice::from_ref(&forged));
    }
    let acks = drain(&mut p.b, p.now);
    let a = parse(&acks[acks.len() - 1]).ack.expect("ack state");
    assert_eq!(a.ack, Seq(2), "the next counter expected is still 2");
    for m in [b"m2".to_vec(), b"m3".to_vec()] {
        p.a.send(p.now, m).expect("queued");
    }
    let later = drain(&mut p.a, p.now);
    feed(&mut p.b, p.now, &later);
    assert_eq!(
        delivered(&events(&mut p.b)),
        [b"m2".to_vec(), b"m3".to_vec()],
        "later datagrams are still delivered"
    );
    assert_eq!(p.b.snapshot().stats.duplicates, 0);
}
