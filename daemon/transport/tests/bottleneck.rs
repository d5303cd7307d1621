//! A sender behind a bottleneck: a link of fixed rate with a bounded
//! drop-tail queue, on a virtual clock. The channel must converge to the
//! bottleneck's rate — neither collapsing (a window stuck at its minimum, a
//! link left idle) nor flooding (retransmissions far beyond what the queue
//! drops) — while every message is still delivered exactly once.
//!
//! Everything is deterministic: the clock is virtual and nothing is random,
//! so the figures asserted here are properties of the algorithm, not of the
//! machine.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rpcd_transport::{Channel, ChannelEvent, Config};

/// One direction of the path: a FIFO queue drained at `rate` bytes per
/// second, then `delay` of propagation.
struct Link {
    rate: Option<f64>,
    queue_max: usize,
    delay: Duration,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    busy_until: Instant,
    line: VecDeque<(Instant, Vec<u8>)>,
    drops: u64,
}

impl Link {
    fn new(now: Instant, rate: Option<f64>, queue_max: usize, delay: Duration) -> Link {
        Link {
            rate,
            queue_max,
            delay,
            queue: VecDeque::new(),
            queued: 0,
            busy_until: now,
            line: VecDeque::new(),
            drops: 0,
        }
    }

    fn serialise(&self, len: usize) -> Duration {
        self.rate
            .map_or(Duration::ZERO, |r| Duration::from_secs_f64(len as f64 / r))
    }

    fn enter(&mut self, now: Instant, d: Vec<u8>) {
        if self.queued + d.len() > self.queue_max {
            self.drops += 1;
            return;
        }
        if self.queue.is_empty() && self.busy_until < now {
            self.busy_until = now;
        }
        self.queued += d.len();
        self.queue.push_back(d);
    }

    /// Datagrams that reach the far end by `now`.
    fn arrivals(&mut self, now: Instant) -> Vec<Vec<u8>> {
        while let Some(len) = self.queue.front().map(Vec::len) {
            let done = self.busy_until + self.serialise(len);
            if done > now {
                break;
            }
            self.busy_until = done;
            let d = self.queue.pop_front().expect("non-empty");
            self.queued -= d.len();
            self.line.push_back((done + self.delay, d));
        }
        let mut out = Vec::new();
        while self.line.front().is_some_and(|(t, _)| *t <= now) {
            out.push(self.line.pop_front().expect("non-empty").1);
        }
        out
    }

    fn next_event(&self) -> Option<Instant> {
        let q = self
            .queue
            .front()
            .map(|d| self.busy_until + self.serialise(d.len()));
        [q, self.line.front().map(|(t, _)| *t)]
            .into_iter()
            .flatten()
            .min()
    }
}

struct Run {
    goodput: f64,
    drops: u64,
    retransmissions: u64,
    cwnd_end: u32,
    cwnd_min_after_warmup: u32,
    delivered: u64,
    /// The longest time either side went without a delivery.
    longest_gap: Duration,
}

/// A bulk sender `a` keeps its queue full for `duration`; `b` receives
/// behind a `rate` bottleneck with a `queue_max` drop-tail queue and `rtt`.
fn run(rate: f64, queue_max: usize, rtt: Duration, duration: Duration, both_ways: bool) -> Run {
    let cfg = Config::default();
    let start = Instant::now();
    let mut now = start;
    let mut a = Channel::new(cfg, 0xA, 1);
    let mut b = Channel::new(cfg, 0xB, 2);
    let mut ab = Link::new(now, Some(rate), queue_max, rtt / 2);
    let mut ba = if both_ways {
        Link::new(now, Some(rate), queue_max, rtt / 2)
    } else {
        Link::new(now, None, usize::MAX, rtt / 2)
    };
    let warmup = start + duration / 4;
    let end = start + duration;
    let mut next_payload: u64 = 0;
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let (mut bytes_after_warmup, mut cwnd_min_after_warmup) = (0u64, u32::MAX);
    let mut back_bytes = 0u64;
    let (mut last_back, mut back_gap): (Option<Instant>, Duration) = (None, Duration::ZERO);
    let (mut last_fwd, mut fwd_gap): (Option<Instant>, Duration) = (None, Duration::ZERO);
    while now < end {
        // The application always has more to send.
        while a.snapshot().queued_messages < 256 {
            let mut m = vec![0u8; cfg.payload_max];
            m[..8].copy_from_slice(&next_payload.to_le_bytes());
            next_payload += 1;
            a.send(now, m).expect("the queue has room");
        }
        while both_ways && b.snapshot().queued_messages < 256 {
            b.send(now, vec![1u8; 16 * 1024])
                .expect("the queue has room");
        }
        while let Some(d) = a.poll_transmit(now) {
            ab.enter(now, d);
        }
        while let Some(d) = b.poll_transmit(now) {
            ba.enter(now, d);
        }
        while let Some(e) = a.poll_event() {
            if let ChannelEvent::Delivered { data, .. } = e {
                if now >= warmup {
                    back_bytes += data.len() as u64;
                }
                if let Some(l) = last_back {
                    back_gap = back_gap.max(now - l);
                }
                last_back = Some(now);
            }
        }
        while let Some(e) = b.poll_event() {
            if let ChannelEvent::Delivered { data, .. } = e {
                let id = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
                *seen.entry(id).or_default() += 1;
                if let Some(l) = last_fwd {
                    fwd_gap = fwd_gap.max(now - l);
                }
                last_fwd = Some(now);
                if now >= warmup {
                    bytes_after_warmup += data.len() as u64;
                }
            }
        }
        if now >= warmup {
            cwnd_min_after_warmup = cwnd_min_after_warmup.min(a.snapshot().cwnd);
        }
        let next = [
            a.poll_timeout(),
            b.poll_timeout(),
            ab.next_event(),
            ba.next_event(),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("a bulk transfer always has something pending");
        assert!(next >= now, "time never goes backwards");
        now = next.max(now);
        for d in ab.arrivals(now) {
            let dg = rpcd_transport::wire::Datagram::parse(&d).expect("valid");
            b.handle_datagram(now, &dg);
        }
        for d in ba.arrivals(now) {
            let dg = rpcd_transport::wire::Datagram::parse(&d).expect("valid");
            a.handle_datagram(now, &dg);
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "a message was delivered twice"
    );
    let snap = a.snapshot();
    Run {
        // Per direction loaded.
        goodput: (bytes_after_warmup + back_bytes) as f64
            / (end - warmup).as_secs_f64()
            / if both_ways { 2.0 } else { 1.0 },
        drops: ab.drops,
        retransmissions: snap.stats.retransmissions,
        cwnd_end: snap.cwnd,
        cwnd_min_after_warmup,
        delivered: seen.len() as u64,
        longest_gap: fwd_gap.max(back_gap),
    }
}

fn check(rate: f64, queue_kib: usize, rtt_ms: u64, both_ways: bool) {
    check_at(rate, queue_kib, rtt_ms, both_ways, 0.8);
}

/// `check`, with the share of the bottleneck the goodput must reach.
fn check_at(rate: f64, queue_kib: usize, rtt_ms: u64, both_ways: bool, share: f64) {
    let r = run(
        rate,
        queue_kib * 1024,
        Duration::from_millis(rtt_ms),
        Duration::from_secs(8),
        both_ways,
    );
    println!(
        "bottleneck {:.0} kB/s, queue {queue_kib} KiB, RTT {rtt_ms} ms: goodput {:.0} kB/s ({:.0} %), \
         {} delivered, queue drops {}, retransmissions {}, cwnd at the end {} (min after warm-up {}), longest gap {:?}",
        rate / 1e3,
        r.goodput / 1e3,
        r.goodput / rate * 100.0,
        r.delivered,
        r.drops,
        r.retransmissions,
        r.cwnd_end,
        r.cwnd_min_after_warmup,
        r.longest_gap
    );
    assert!(
        r.goodput >= share * rate,
        "converges to the bottleneck: goodput {:.0} of {rate:.0} B/s",
        r.goodput
    );
    assert!(
        r.retransmissions <= 2 * r.drops + 10,
        "no retransmission storm: {} retransmissions for {} drops",
        r.retransmissions,
        r.drops
    );
    assert!(
        r.drops * 20 <= r.delivered,
        "backs off at the queue: {} drops for {} messages",
        r.drops,
        r.delivered
    );
    assert!(
        r.cwnd_min_after_warmup > Config::default().cwnd_min,
        "the window never collapsed after warm-up"
    );
}

#[test]
fn converges_to_a_bottleneck_with_a_deep_queue() {
    // 1 MB/s, 20 ms: a BDP of ~16 datagrams; 64 KiB queues ~50 more.
    check(1e6, 64, 20, false);
}

#[test]
fn converges_to_a_bottleneck_with_a_shallow_queue() {
    // The queue holds about half a BDP.
    check(1e6, 8, 20, false);
}

#[test]
fn converges_to_a_fast_bottleneck_on_a_long_path() {
    // 4 MB/s over 60 ms: a BDP of ~185 datagrams, a queue of one BDP.
    check(4e6, 240, 60, false);
}

#[test]
fn converges_with_bulk_both_ways() {
    // Both directions loaded through their own bottleneck: acknowledgements
    // ride on data queued behind the peer's own bulk, so each sender sees
    // the other's queue as RTT its window must cover (TCP knows this as ack
    // compression); the bar is lower than one way's 80 %.
    check_at(1e6, 64, 20, true, 0.7);
}
