//! A seed's world: nodes, fault rates, configuration, and the schedule of
//! partitions and restarts, all drawn from the seed.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rpcd_transport::Config;

use super::{
    keyed, ms, oracle, rand_time, us, Class, FastRng, Faults, Ledger, Node, Outcome, Sim, What,
    MESSAGE_MAX, PAYLOAD_MAX,
};

impl Sim {
    pub(super) fn new(seed: u64, class: Class) -> Self {
        let messages = class.messages();
        let mut rng = FastRng::new(seed);
        let nodes_n = rng.gen_range(2..=4);
        // A quarter of the seeds are clean apart from the odd fault; the
        // others draw every rate.
        let mut faults = Faults {
            loss: rng.gen_range(0.0..=0.5),
            dup: rng.gen_range(0.0..=0.1),
            reorder: rng.gen_range(0.0..=0.2),
            corrupt: rng.gen_range(0.0..=0.05),
            truncate: rng.gen_range(0.0..=0.02),
            delay: us(rng.gen_range(20..=2_000)),
            jitter: us(rng.gen_range(0..=1_000)),
            reorder_extra: us(rng.gen_range(0..=5_000)),
            partitions: 0,
            restarts: 0,
        };
        if class.clean {
            faults.loss = 0.0;
            faults.dup = 0.0;
            faults.corrupt = 0.0;
            faults.truncate = 0.0;
        }
        // Seeds without partitions or restarts: only datagram faults, and
        // nothing may fail.
        let strict = class.strict();
        if class.partitions {
            faults.partitions = rng.gen_range(1..=6);
        }
        if class.restarts {
            faults.restarts = rng.gen_range(1..=3);
        }
        let recv_window = rng.gen_range(16..=256);
        let cwnd_max = rng.gen_range(4..=256);
        let cwnd_initial = rng.gen_range(1..=cwnd_max.min(16));
        let mut cfg = Config {
            payload_max: PAYLOAD_MAX,
            message_max: MESSAGE_MAX,
            send_queue_max: rng.gen_range(4..=256),
            send_queue_bytes_max: MESSAGE_MAX * rng.gen_range(1..=8),
            recv_window,
            // The draw stays here to keep the seeds' streams; the floor is added below.
            reassembly_bytes_max: rng.gen_range(0..=40_000),
            reassembly_total_max: 0,
            cwnd_initial,
            cwnd_min: cwnd_initial.min(2),
            cwnd_max,
            rto_initial: ms(20),
            rto_min: ms(2),
            rto_max: ms(200),
            retransmits_max: 64,
            ack_delay: us(rng.gen_range(100..=1_500)),
            ack_every: rng.gen_range(1..=4),
            keepalive_interval: ms(100),
            peer_timeout: Duration::from_secs(120),
            revalidate_after: ms(rng.gen_range(20..=2_000)),
            peers_max: 8,
            ..Config::default()
        };
        if !strict {
            // Datagram faults alone must not explain a give-up (oracle.rs).
            faults.loss *= 0.3;
            cfg.retransmits_max = rng.gen_range(30..=48);
            cfg.rto_max = ms(rng.gen_range(50..=300));
            cfg.peer_timeout = cfg.rto_max * rng.gen_range(25..=40);
            cfg.keepalive_interval = cfg.peer_timeout / rng.gen_range(25..=40);
            cfg.revalidate_after = cfg.revalidate_after.min(cfg.peer_timeout);
            cfg.peer_idle_timeout = cfg.peer_idle_timeout.max(cfg.peer_timeout * 2);
        }
        cfg.reassembly_bytes_max += cfg.reassembly_floor();
        cfg.reassembly_total_max = 2 * cfg.reassembly_bytes_max;
        // Keyed runs draw their own parameters from their own stream: the
        // network's draws above and below stay those of the seed.
        let keyed = class
            .keyed
            .then(|| Box::new(keyed::Keyed::new(seed, nodes_n, &mut cfg)));
        cfg.validate().expect("simulated config is valid");
        let origin = Instant::now();
        let nodes = (0..nodes_n)
            .map(|i| Node {
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 7400)),
                ep: None,
                epoch: 0,
                timeout: None,
            })
            .collect();
        let gap_mean_us = rng.gen_range(10..=2_000);
        let mut sim = Sim {
            seed,
            schedule: Vec::new(),
            give_up: oracle::give_up(&cfg, faults.max_one_way()),
            last_sent: Duration::ZERO,
            cancel_p: 0.0,
            hold_p: 0.0,
            settled: None,
            reply_p: rng.gen_range(0.0..=0.6),
            burst_p: rng.gen_range(0.0..=0.05),
            small_p: 0.0,
            gap_mean_us,
            rng,
            origin,
            now: Duration::ZERO,
            order: 0,
            queue: BinaryHeap::new(),
            nodes,
            cut: vec![vec![0; nodes_n]; nodes_n],
            faults,
            cfg,
            strict,
            budget: messages,
            msgs: Ledger::default(),
            outstanding: 0,
            all_done: None,
            data_after_done: 0,
            violations: Vec::new(),
            tampered_handed: 0,
            dead_stats: (0, 0, 0, 0),
            out: Outcome {
                class: Some(class),
                faults,
                ..Outcome::default()
            },
            trace: std::env::var("SIM_TRACE").ok().map(|_| Vec::new()),
            replies: Vec::new(),
            touch_from: usize::MAX,
            touch_keys: Vec::new(),
            touch_round_one: Vec::new(),
            keyed,
            retx_at_done: None,
            stop_at_idle_channels: false,
        };
        for i in 0..nodes_n {
            sim.boot(i);
        }
        // Partitions and restarts fall in the expected sending phase.
        let phase = us(messages * gap_mean_us).max(ms(200));
        for _ in 0..faults.partitions {
            let at = rand_time(&mut sim.rng, phase);
            let a = sim.rng.gen_range(0..nodes_n);
            let b = (a + sim.rng.gen_range(1..nodes_n)) % nodes_n;
            let symmetric = sim.rng.gen_bool(0.7);
            let max_len = (cfg.peer_timeout * 2).as_micros() as u64;
            let len = us(sim.rng.gen_range(1_000..=max_len));
            sim.schedule.push(oracle::Fault {
                a,
                b,
                start: at,
                end: at + len,
                crash: false,
            });
            sim.push(
                at,
                What::Link {
                    a,
                    b,
                    symmetric,
                    cut: true,
                },
            );
            sim.push(
                at + len,
                What::Link {
                    a,
                    b,
                    symmetric,
                    cut: false,
                },
            );
        }
        for _ in 0..faults.restarts {
            let at = rand_time(&mut sim.rng, phase);
            // Sometimes every node restarts within a few milliseconds, so
            // late datagrams of dead incarnations meet new ones.
            let together = sim.rng.gen_bool(0.3);
            let first = sim.rng.gen_range(0..nodes_n);
            let nodes: Vec<usize> = if together {
                (0..nodes_n).collect()
            } else {
                vec![first]
            };
            for node in nodes {
                let at = at + us(sim.rng.gen_range(0..=5_000));
                let down = us(sim
                    .rng
                    .gen_range(0..=if together { 5_000 } else { 300_000 }));
                sim.schedule.push(oracle::Fault {
                    a: node,
                    b: node,
                    start: at,
                    end: at + down,
                    crash: true,
                });
                sim.push(at, What::Crash { node });
                sim.push(at + down, What::Boot { node });
            }
        }
        if sim.rng.gen_bool(0.5) {
            sim.small_p = sim.rng.gen_range(0.5..=1.0);
            sim.burst_p = sim.rng.gen_range(0.05..=0.3);
        }
        if sim.rng.gen_bool(0.5) {
            sim.cancel_p = sim.rng.gen_range(0.002..=0.03);
        }
        if sim.rng.gen_bool(0.5) {
            sim.hold_p = sim.rng.gen_range(0.01..=0.1);
        }
        sim.push(Duration::ZERO, What::AppTick);
        sim
    }
}
