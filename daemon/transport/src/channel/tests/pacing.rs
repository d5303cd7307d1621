//! Scenario tests of pacing (RFC 9002 §7.7), with explicit time.

use super::*;

fn paced(burst: u32) -> Config {
    Config {
        pacing_burst: burst,
        pacing_gain_percent: 125,
        ..wan()
    }
}

/// Beyond the burst, a window's worth of data leaves at the pacing rate
/// (125 % of the window per smoothed RTT), each next send a timer in
/// `poll_timeout`, not in one burst the path's queue must absorb.
#[test]
fn a_window_beyond_the_burst_is_spread_over_the_rtt() {
    let mut p = Pair::with(paced(4), paced(4));
    let (_, first) = p.handshake_over(vec![0], ms(20));
    assert_eq!(first.len(), 1);
    let snap = p.a.snapshot();
    assert_eq!((snap.srtt, snap.cwnd), (Some(ms(20)), 10));
    for i in 1..8u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    // The burst: 4 datagrams at once (the first took one token).
    assert_eq!(drain(&mut p.a, p.now).len(), 3);
    // 10 datagrams per 20 ms at 125 %: one every 1.6 ms.
    let gap = Duration::from_micros(1600);
    let mut t = p.now;
    for k in 0..4 {
        let next =
            p.a.poll_timeout()
                .expect("the pacer's next send is a timer");
        assert_eq!(next, t + gap, "paced send {k}");
        assert!(drain(&mut p.a, next - Duration::from_micros(1)).is_empty());
        p.a.handle_timeout(next);
        assert_eq!(drain(&mut p.a, next).len(), 1, "one datagram per gap");
        t = next;
    }
    assert_eq!(p.a.snapshot().stats.paced_delays, 4);
    assert_eq!(p.a.snapshot().in_flight, 8, "all 8 sent, within the window");
}

/// The initial window goes at once (before any RTT is known), and a lone
/// message never waits for the pacer: only data filling the window is paced.
#[test]
fn the_initial_window_and_a_lone_message_go_at_once() {
    let mut p = Pair::with(paced(10), paced(10));
    let id = p.a.send(p.now, vec![0]).expect("queued");
    for i in 1..10u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    let probe = drain(&mut p.a, p.now);
    feed(&mut p.b, p.now, &probe);
    let ack = drain(&mut p.b, p.now);
    p.advance(ms(10));
    feed(&mut p.a, p.now, &ack);
    assert_eq!(
        drain(&mut p.a, p.now).len(),
        10,
        "the initial window at once"
    );
    assert!(!events(&mut p.a).contains(&Event::Acked { msg_id: id }));
    p.settle(Duration::from_secs(1));
    // Calls one at a time, each answered before the next: none waits.
    for i in 0..20u8 {
        p.advance(ms(3));
        p.a.send(p.now, vec![i]).expect("queued");
        let out = drain(&mut p.a, p.now);
        assert_eq!(out.len(), 1, "lone message {i} goes at once");
        feed(&mut p.b, p.now, &out);
        p.settle(ms(2));
    }
    assert_eq!(p.a.snapshot().stats.paced_delays, 0);
}

/// On a path whose RTT is far below the event loop's timer granularity
/// (1 ms: loopback, a LAN), a wait for the pacer would last a whole
/// millisecond and cap the sender at a burst per millisecond. The bucket
/// holds a granularity's worth at the rate instead: the window goes at once.
#[test]
fn a_fast_path_is_not_capped_at_a_burst_per_timer_tick() {
    let mut p = Pair::with(paced(4), paced(4));
    let (_, first) = p.handshake_over(vec![0], Duration::from_micros(100));
    assert_eq!(first.len(), 1);
    let snap = p.a.snapshot();
    assert_eq!(
        (snap.srtt, snap.cwnd),
        (Some(Duration::from_micros(100)), 10)
    );
    for i in 1..10u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    // 10 datagrams per 100 µs at 125 %: 125 per millisecond, so the rest of
    // the window (9) goes now, with no pacing timer.
    assert_eq!(drain(&mut p.a, p.now).len(), 9);
    assert_eq!(p.a.snapshot().stats.paced_delays, 0);
    assert_eq!(p.a.snapshot().in_flight, 10);
}

/// Between the two: a rate that refills a datagram within a timer
/// granularity (1 ms) but not a window. The event loop turns a shorter wait
/// into a whole granularity and may wake a granularity late: the bucket
/// keeps two granularities' worth, so such a wakeup sends all the rate
/// allowed since, and the loop's coarse timers lose none of the rate.
#[test]
fn a_late_wakeup_loses_none_of_the_pacing_rate() {
    let mut p = Pair::with(paced(4), paced(4));
    let (_, first) = p.handshake_over(vec![0], ms(4));
    assert_eq!(first.len(), 1);
    let snap = p.a.snapshot();
    assert_eq!((snap.srtt, snap.cwnd), (Some(ms(4)), 10));
    for i in 1..10u8 {
        p.a.send(p.now, vec![i]).expect("queued");
    }
    // 10 datagrams per 4 ms at 125 %: 3.125 per millisecond, a bucket of
    // 6.25 (two milliseconds' worth, more than the burst of 4). The first
    // datagram took one token: 5 more go now.
    assert_eq!(drain(&mut p.a, p.now).len(), 5);
    let next = p.a.poll_timeout().expect("the pacer's next send");
    let wait = next - p.now;
    assert!(
        wait > Duration::from_micros(230) && wait < Duration::from_micros(250),
        "the next token, in {wait:?} (0.75 / 3.125 ms)"
    );
    // The event loop wakes 2 ms later (a sub-millisecond wait rounded up,
    // and late): two milliseconds' worth went into the bucket (0.25 + 6.25,
    // capped at 6.25), so the last 4 of the window go at once.
    let late = p.now + ms(2);
    p.a.handle_timeout(late);
    assert_eq!(drain(&mut p.a, late).len(), 4);
    assert_eq!(p.a.snapshot().in_flight, 10, "the window, in two bursts");
    assert_eq!(p.a.snapshot().stats.paced_delays, 1);
}
