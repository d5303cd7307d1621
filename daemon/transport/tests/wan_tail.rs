//! KCP's loss harness (`tests/tests/kcp_bench.rs`) on a virtual clock: two
//! channels, a path that drops 5 % each way and delays each datagram by a
//! uniform 30–62 ms one way in FIFO order, one echo call every 20 ms.
//! Deterministic per seed. It asserts that every call is answered and every
//! message delivered once, and prints the latency figures (the benchmark's
//! targets are reported there, not asserted): where the slowest calls spend
//! their time is the question it answers.
//!
//! `WAN_SEEDS=N` runs seeds 1..=N (default 4); `WAN_TRACE=S` prints every
//! datagram around seed S's slowest call; `WAN_TALLY=1` prints, for each
//! call over 330 ms, how often its request and its reply were lost.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rpcd_transport::{Channel, ChannelEvent, Config};

struct Link {
    rng: ChaCha8Rng,
    loss: f64,
    delay: (Duration, Duration),
    /// In flight: the channel datagrams of one UDP datagram (a bundle, as
    /// the endpoint gathers them), lost or delivered together.
    line: VecDeque<(Instant, Vec<Vec<u8>>)>,
    drops: u64,
    name: &'static str,
    log: Vec<(Instant, String)>,
}

fn describe(d: &[u8]) -> String {
    let g = rpcd_transport::wire::Datagram::parse(d).expect("valid");
    let frag = g
        .fragment
        .map(|f| u64::from_le_bytes(f.payload[..8].try_into().expect("8")));
    format!(
        "{:?} seq={} call={:?} ack={:?}",
        g.kind,
        g.seq.0,
        frag,
        g.ack.map(|a| (a.ack.0, a.sack))
    )
}

impl Link {
    fn new(seed: u64, loss: f64, name: &'static str) -> Link {
        Link {
            name,
            log: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss,
            delay: (Duration::from_millis(30), Duration::from_millis(62)),
            line: VecDeque::new(),
            drops: 0,
        }
    }
    fn enter(&mut self, now: Instant, d: Vec<Vec<u8>>) {
        let lost = self.rng.gen_bool(self.loss);
        for one in &d {
            self.log.push((
                now,
                format!(
                    "{} {} {}",
                    self.name,
                    if lost { "LOST" } else { "sent" },
                    describe(one)
                ),
            ));
        }
        if lost {
            self.drops += 1;
            return;
        }
        let span = self.delay.1 - self.delay.0;
        let mut due = now + self.delay.0 + span.mul_f64(self.rng.gen::<f64>());
        if let Some(&(last, _)) = self.line.back() {
            due = due.max(last);
        }
        self.line.push_back((due, d));
    }
    fn arrivals(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while self.line.front().is_some_and(|(t, _)| *t <= now) {
            out.extend(self.line.pop_front().expect("non-empty").1);
        }
        out
    }
    /// Everything `c` has to send now, gathered the way the endpoint does:
    /// one bundle per drain, except that a datagram identical to the one
    /// before it (a repair's redundant copy) starts a bundle of its own.
    fn drain(&mut self, now: Instant, c: &mut Channel) {
        let mut bundle: Vec<Vec<u8>> = Vec::new();
        while let Some(d) = c.poll_transmit(now) {
            if bundle.last() == Some(&d) {
                self.enter(now, std::mem::take(&mut bundle));
            }
            bundle.push(d);
        }
        if !bundle.is_empty() {
            self.enter(now, bundle);
        }
    }
    fn next_event(&self) -> Option<Instant> {
        self.line.front().map(|(t, _)| *t)
    }
}

struct Call {
    sent: Instant,
    at_b: Option<Instant>,
    back: Option<Instant>,
}

fn run(seed: u64, n: u64, loss: f64) -> (Vec<Call>, u64) {
    let cfg = Config::default();
    let start = Instant::now();
    let mut now = start;
    let mut a = Channel::new(cfg, 0xA, seed);
    let mut b = Channel::new(cfg, 0xB, seed ^ 1);
    let mut ab = Link::new(seed ^ 2, loss, "a->b");
    let mut ba = Link::new(seed ^ 3, loss, "b->a");
    let mut calls: BTreeMap<u64, Call> = BTreeMap::new();
    let mut next_call = 0u64;
    let tick = Duration::from_millis(20);
    loop {
        while next_call < n && start + tick * next_call as u32 <= now {
            a.send(now, next_call.to_le_bytes().to_vec()).expect("room");
            calls.insert(
                next_call,
                Call {
                    sent: now,
                    at_b: None,
                    back: None,
                },
            );
            next_call += 1;
        }
        while let Some(e) = b.poll_event() {
            if let ChannelEvent::Delivered { data, .. } = e {
                let id = u64::from_le_bytes(data[..8].try_into().expect("8"));
                let call = calls.get_mut(&id).expect("known");
                assert!(
                    call.at_b.is_none(),
                    "seed {seed}: call {id} delivered twice"
                );
                call.at_b = Some(now);
                b.send(now, data).expect("room");
            }
        }
        while let Some(e) = a.poll_event() {
            if let ChannelEvent::Delivered { data, .. } = e {
                let id = u64::from_le_bytes(data[..8].try_into().expect("8"));
                let call = calls.get_mut(&id).expect("known");
                assert!(
                    call.back.is_none(),
                    "seed {seed}: reply {id} delivered twice"
                );
                call.back = Some(now);
            }
        }
        ab.drain(now, &mut a);
        ba.drain(now, &mut b);
        if next_call == n && calls.values().all(|c| c.back.is_some()) {
            break;
        }
        let tick_due = (next_call < n).then(|| start + tick * next_call as u32);
        let next = [
            a.poll_timeout(),
            b.poll_timeout(),
            ab.next_event(),
            ba.next_event(),
            tick_due,
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("something pending");
        now = next.max(now);
        for d in ab.arrivals(now) {
            b.handle_datagram(
                now,
                &rpcd_transport::wire::Datagram::parse(&d).expect("valid"),
            );
        }
        for d in ba.arrivals(now) {
            a.handle_datagram(
                now,
                &rpcd_transport::wire::Datagram::parse(&d).expect("valid"),
            );
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    if std::env::var("WAN_TRACE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        == Some(seed)
    {
        let worst = calls
            .iter()
            .max_by_key(|(_, c)| c.back.expect("answered") - c.sent)
            .expect("calls");
        let (from, to) = (worst.1.sent, worst.1.back.expect("answered"));
        println!("worst call {} at {:?}", worst.0, from - start);
        let mut log: Vec<_> = ab
            .log
            .iter()
            .chain(ba.log.iter())
            .filter(|(t, _)| *t + Duration::from_millis(20) >= from && *t <= to)
            .collect();
        log.sort_by_key(|(t, _)| *t);
        for (t, l) in log {
            println!("{:>8.1} {l}", (*t - from).as_secs_f64() * 1e3);
        }
    }
    if std::env::var("WAN_TALLY").is_ok() {
        let mut lost: BTreeMap<(u64, &str), u32> = BTreeMap::new();
        for (_, l) in ab.log.iter().chain(ba.log.iter()) {
            if let Some(rest) = l
                .strip_prefix("a->b LOST Data")
                .or(l.strip_prefix("b->a LOST Data"))
            {
                if let Some(i) = rest.find("call=Some(") {
                    let id: u64 = rest[i + 10..]
                        .split(')')
                        .next()
                        .expect("id")
                        .parse()
                        .expect("num");
                    *lost.entry((id, &l[..4])).or_default() += 1;
                }
            }
        }
        for (id, c) in &calls {
            let t = c.back.expect("answered") - c.sent;
            if t > Duration::from_millis(330) {
                println!(
                    "slow call {id}: {t:?} request losses {} reply losses {}",
                    lost.get(&(*id, "a->b")).unwrap_or(&0),
                    lost.get(&(*id, "b->a")).unwrap_or(&0)
                );
            }
        }
    }
    let retx = a.snapshot().stats.retransmissions + b.snapshot().stats.retransmissions;
    (calls.into_values().collect(), retx)
}

#[test]
fn kcp_harness_virtual() {
    let seeds: u64 = std::env::var("WAN_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let (mut maxes, mut over300, mut over350, mut avgs, mut retx) = (Vec::new(), 0, 0, 0.0, 0);
    for seed in 1..=seeds {
        let (calls, r) = run(seed, 1000, 0.05);
        retx += r;
        let mut rtts: Vec<(Duration, Duration, Duration)> = calls
            .iter()
            .map(|c| {
                let b = c.at_b.expect("delivered");
                let back = c.back.expect("answered");
                (back - c.sent, b - c.sent, back - b)
            })
            .collect();
        rtts.sort();
        let avg = rtts.iter().map(|r| r.0.as_secs_f64()).sum::<f64>() / rtts.len() as f64;
        maxes.push(rtts.last().expect("calls").0.as_secs_f64() * 1e3);
        over300 += rtts
            .iter()
            .filter(|r| r.0 > Duration::from_millis(300))
            .count();
        over350 += rtts
            .iter()
            .filter(|r| r.0 > Duration::from_millis(350))
            .count();
        avgs += avg;
        println!(
            "seed {seed}: avg {:.1} ms p99 {:?} max {:?}; worst (total, request leg, reply leg): {:?}",
            avg * 1e3,
            rtts[rtts.len() * 99 / 100].0,
            rtts.last().expect("calls").0,
            &rtts[rtts.len() - 5..]
        );
    }
    maxes.sort_by(f64::total_cmp);
    println!(
        "{seeds} seeds: mean avg {:.1} ms, median max {:.0} ms, worst max {:.0} ms, calls over 300 ms {over300}, over 350 ms {over350}, retransmissions {retx}",
        avgs * 1e3 / seeds as f64,
        maxes[maxes.len() / 2],
        maxes[maxes.len() - 1]
    );
}
