//! The endpoint settles a channel (its events, its place in the transmit
//! queue, its timer) when the owner next polls, not after every input. These
//! tests drive the real `Endpoint` on a virtual clock and check that what the
//! owner sees does not depend on when it polls: many inputs between two polls
//! give the same datagrams and events as a poll after each input, and a timer
//! that an input armed fires even when the owner calls `handle_timeout`
//! without polling anything first.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_transport::{ChannelEvent, Config, Endpoint, Event};

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 7000 + u16::from(last)))
}

const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;

/// Endpoint A and two peers, on a lossless wire.
struct Net {
    now: Instant,
    eps: Vec<(SocketAddr, Endpoint)>,
    /// Every datagram put on the wire, in order: (from, to, bytes).
    wire: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Every event, in the order each endpoint gave them.
    events: Vec<(SocketAddr, Event)>,
}

impl Net {
    fn new(start: Instant) -> Self {
        let c = Config::default();
        let eps = [(A, 0xA1), (B, 0xB2), (C, 0xC3)]
            .into_iter()
            .map(|(n, epoch)| (addr(n), Endpoint::new(c, epoch)))
            .collect();
        Net {
            now: start,
            eps,
            wire: Vec::new(),
            events: Vec::new(),
        }
    }

    fn ep(&mut self, n: u8) -> &mut Endpoint {
        let at = addr(n);
        &mut self
            .eps
            .iter_mut()
            .find(|(a, _)| *a == at)
            .expect("a known endpoint")
            .1
    }

    /// Exchange everything and run the timers until every endpoint is quiet
    /// (virtual time, 10 s at most).
    fn run(&mut self) {
        let end = self.now + Duration::from_secs(10);
        let mut carried = self.wire.len();
        loop {
            let mut moved = false;
            for i in 0..self.eps.len() {
                let from = self.eps[i].0;
                while let Some(t) = self.eps[i].1.poll_transmit(self.now) {
                    moved = true;
                    self.wire.push((from, t.to, t.bytes));
                }
                while let Some(e) = self.eps[i].1.poll_event() {
                    self.events.push((from, e));
                }
            }
            let sent = self.wire[carried..].to_vec();
            carried = self.wire.len();
            for (from, to, bytes) in sent {
                let now = self.now;
                if let Some((_, ep)) = self.eps.iter_mut().find(|(a, _)| *a == to) {
                    ep.handle_datagram(now, from, &bytes);
                }
            }
            if moved {
                continue;
            }
            let next = self
                .eps
                .iter_mut()
                .filter_map(|(_, e)| e.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end && !self.eps.iter().all(|(_, e)| e.is_idle()) => {
                    self.now = self.now.max(t);
                    for (_, e) in &mut self.eps {
                        e.handle_timeout(self.now);
                    }
                }
                _ => return,
            }
        }
    }
}

/// One run: A sends `n` messages to B and C alternately, polling
/// `poll_timeout` (which settles) after each send or not at all.
fn one_run(start: Instant, n: usize, poll_between: bool) -> Net {
    let mut net = Net::new(start);
    let now = net.now;
    for i in 0..n {
        let to = if i % 2 == 0 { addr(B) } else { addr(C) };
        let bytes = format!("message {i}").into_bytes();
        net.ep(A).send(now, to, bytes).expect("send");
        if poll_between {
            net.ep(A).poll_timeout();
        }
    }
    net.run();
    net
}

#[test]
fn many_inputs_between_polls_give_what_a_poll_after_each_gives() {
    let start = Instant::now();
    let n = 40;
    let batched = one_run(start, n, false);
    let stepwise = one_run(start, n, true);
    assert_eq!(batched.wire, stepwise.wire, "the same datagrams, in order");
    assert_eq!(batched.events, stepwise.events, "the same events, in order");
    // And they are the right ones: every message delivered once, in order
    // per peer, and acknowledged once.
    for peer in [B, C] {
        let got: Vec<Vec<u8>> = batched
            .events
            .iter()
            .filter(|(at, _)| *at == addr(peer))
            .filter_map(|(_, e)| match &e.kind {
                ChannelEvent::Delivered { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect();
        let want: Vec<Vec<u8>> = (0..n)
            .filter(|i| (i % 2 == 0) == (peer == B))
            .map(|i| format!("message {i}").into_bytes())
            .collect();
        assert_eq!(got, want, "peer {peer}");
    }
    let acked = batched
        .events
        .iter()
        .filter(|(at, e)| *at == addr(A) && matches!(e.kind, ChannelEvent::Acked { .. }))
        .count();
    assert_eq!(acked, n);
}

#[test]
fn a_timer_an_input_armed_fires_without_a_poll_first() {
    let mut net = Net::new(Instant::now());
    let now = net.now;
    net.ep(A)
        .send(now, addr(B), b"hello".to_vec())
        .expect("send");
    net.run();
    let keepalive = Config::default().keepalive_interval;
    // Waiting for B (a hold) arms A's keepalive; the owner goes straight to
    // `handle_timeout` at that instant, polling nothing in between.
    let t0 = net.now;
    net.ep(A).hold(t0, addr(B));
    let at = t0 + keepalive;
    net.ep(A).handle_timeout(at);
    let t = net.ep(A).poll_transmit(at);
    assert!(
        t.as_ref().is_some_and(|t| t.to == addr(B)),
        "the keepalive probe goes to B: {t:?}"
    );
}

#[test]
fn an_event_and_a_timer_are_there_at_the_first_poll_after_their_input() {
    for timeout_first in [false, true] {
        let mut net = Net::new(Instant::now());
        let now = net.now;
        // Learn each other's epochs first.
        net.ep(A)
            .send(now, addr(B), b"first".to_vec())
            .expect("send");
        net.run();
        let now = net.now;
        net.ep(A)
            .send(now, addr(B), b"hello".to_vec())
            .expect("send");
        let t = net.ep(A).poll_transmit(now).expect("a datagram to B");
        net.ep(B).handle_datagram(now, addr(A), &t.bytes);
        // B's owner asks for its next timer (the delayed acknowledgement the
        // input armed) or its events first: either sees the input.
        if timeout_first {
            assert!(
                net.ep(B).poll_timeout().is_some(),
                "the delayed ack's timer"
            );
        }
        let e = net.ep(B).poll_event().expect("the delivery, at once");
        assert!(
            matches!(&e.kind, ChannelEvent::Delivered { data, .. } if data == b"hello"),
            "{e:?}"
        );
    }
}
