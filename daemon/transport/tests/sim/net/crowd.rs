//! The crowd: more peers than `peers_max` contact one endpoint (the hub), in plaintext,
//! while strangers (addresses no real endpoint has) send it garbage and copies of real
//! datagrams. A seed whose class has `crowd` runs this beside its network run.
//!
//! What plaintext promises here (`docs/wire-protocol.md` §4 and §7.11,
//! `docs/security.md`, "Bounded state"), and what is asserted, exactly:
//! - a stranger's garbage is dropped and counted: each UDP datagram that does not parse
//!   adds exactly one to the hub's `malformed` or `corrupt`, opens no channel, and gets
//!   nothing back;
//! - a well-formed datagram from a new address (a real peer, or a stranger sending a
//!   copy of a real peer's datagram: plaintext authenticates nobody) opens a channel only
//!   while the hub has fewer than `peers_max`; beyond that each such bundle is dropped
//!   and counted in `refused_peers` (the count must equal the model's, bundle by bundle),
//!   opens nothing and gets nothing back;
//! - the hub's channels are exactly the addresses the model admitted, never more than
//!   `peers_max` at any step; its reassembly memory stays within `reassembly_total_max`;
//! - every message of an admitted real peer is delivered once, from that peer, and
//!   acknowledged; no message of a refused peer is delivered, and each fails at its
//!   sender; whatever the hub delivers from a stranger's address is a copy of a real
//!   message, from an admitted address, at most once per address.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rpcd_transport::{ChannelEvent, Config, Endpoint};

/// Virtual time after which a crowd run counts as stuck.
const VIRTUAL_MAX: Duration = Duration::from_secs(600);

/// What a crowd run counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrowdOutcome {
    /// Addresses the hub opened a channel for (its `peers_max`, when full).
    pub admitted: u64,
    /// Real peers and strangers that contacted it.
    pub contacts: u64,
    /// Well-formed bundles refused for `peers_max` (`refused_peers`).
    pub refused: u64,
    /// Garbage datagrams from strangers (`malformed` + `corrupt`).
    pub garbage: u64,
    /// Messages the real peers sent, and of those, delivered to the hub.
    pub messages: u64,
    pub delivered: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    /// Real peer `i` queues its messages.
    Send(usize),
    /// A stranger sends garbage, or a copy of a real datagram (`copy`).
    Stranger { src: usize, copy: bool },
    /// A datagram arrives; `valid` when its bytes are a real endpoint's, untouched.
    Arrive {
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
        valid: bool,
    },
}

/// One crowd run, from `seed`'s own stream.
pub fn run_crowd(seed: u64) -> Result<CrowdOutcome, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6372_6f77_645f_7369);
    let peers_max = rng.gen_range(1..=8usize);
    let real = peers_max + rng.gen_range(1..=8usize);
    let strangers = rng.gen_range(1..=6usize);
    let garbage_sends = rng.gen_range(5..=40usize);
    let copies = rng.gen_range(0..=6usize);
    let hub_addr = SocketAddr::from(([10, 1, 0, 1], 7400));
    let real_addr = |i: usize| SocketAddr::from(([10, 2, 0, i as u8 + 1], 7400));
    let stranger_addr = |i: usize| SocketAddr::from(([10, 3, 0, i as u8 + 1], 40_000));

    let mut cfg = Config {
        payload_max: 200,
        message_max: 4_000,
        rto_initial: Duration::from_millis(20),
        rto_min: Duration::from_millis(2),
        rto_max: Duration::from_millis(200),
        keepalive_interval: Duration::from_millis(100),
        peer_timeout: Duration::from_secs(2),
        revalidate_after: Duration::from_millis(250),
        ack_delay: Duration::from_micros(500),
        peers_max,
        ..Config::default()
    };
    cfg.reassembly_bytes_max = cfg.reassembly_floor();
    cfg.reassembly_total_max = 2 * cfg.reassembly_bytes_max;
    cfg.validate().map_err(|e| format!("crowd config: {e}"))?;
    let total_max = cfg.reassembly_total_max;
    let origin = Instant::now();
    let mut hub = Endpoint::new(cfg, rng.gen_range(1..u64::MAX));
    let mut peers: Vec<Endpoint> = (0..real)
        .map(|_| Endpoint::new(cfg, rng.gen_range(1..u64::MAX)))
        .collect();
    let index_of: HashMap<SocketAddr, usize> = (0..real).map(|i| (real_addr(i), i)).collect();

    let mut queue: BinaryHeap<Reverse<(Duration, u64, What)>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut push = |q: &mut BinaryHeap<_>, at: Duration, what: What| {
        order += 1;
        q.push(Reverse((at, order, what)));
    };
    for i in 0..real {
        let at = Duration::from_micros(rng.gen_range(0..50_000));
        push(&mut queue, at, What::Send(i));
    }
    for _ in 0..garbage_sends {
        let at = Duration::from_micros(rng.gen_range(0..3_000_000));
        let src = rng.gen_range(0..strangers);
        push(&mut queue, at, What::Stranger { src, copy: false });
    }
    for _ in 0..copies {
        let at = Duration::from_micros(rng.gen_range(20_000..3_000_000));
        let src = rng.gen_range(0..strangers);
        push(&mut queue, at, What::Stranger { src, copy: true });
    }

    let mut v: Vec<String> = Vec::new();
    let mut out = CrowdOutcome::default();
    // The model: addresses admitted in order of their first well-formed bundle.
    let mut admitted: HashSet<SocketAddr> = HashSet::new();
    let mut contacted: HashSet<SocketAddr> = HashSet::new();
    let mut refused_expected = 0u64;
    let mut garbage_sent = 0u64;
    // Real datagrams seen on the wire to the hub, for strangers to copy.
    let mut captured: Vec<Vec<u8>> = Vec::new();
    // Per real peer: message id -> tag; outcomes; hub deliveries by (from, tag).
    let mut sent_tags: Vec<BTreeMap<u64, Vec<u8>>> = vec![BTreeMap::new(); real];
    let mut outcome_of: HashMap<(usize, u64), bool> = HashMap::new();
    let mut delivered: HashMap<(SocketAddr, Vec<u8>), u64> = HashMap::new();
    let all_tags: HashSet<Vec<u8>> = (0..real)
        .flat_map(|i| (0..8u8).map(move |m| vec![b'c', i as u8, m]))
        .collect();
    let mut now = Duration::ZERO;
    let mut events = 0u64;
    loop {
        let at = origin + now;
        // Flush what every endpoint wants sent, then its events.
        while let Some(t) = hub.poll_transmit(at) {
            if !admitted.contains(&t.to) {
                v.push(format!(
                    "at {now:?}: the hub sent to {}, which it never admitted",
                    t.to
                ));
            }
            let delay = Duration::from_micros(rng.gen_range(500..3_000));
            let what = What::Arrive {
                from: hub_addr,
                to: t.to,
                bytes: t.bytes,
                valid: true,
            };
            push(&mut queue, now + delay, what);
        }
        for (i, p) in peers.iter_mut().enumerate() {
            while let Some(t) = p.poll_transmit(at) {
                if t.to != hub_addr {
                    v.push(format!("peer {i} sent to {}", t.to));
                }
                if captured.len() < 64 {
                    captured.push(t.bytes.clone());
                }
                let delay = Duration::from_micros(rng.gen_range(500..3_000));
                let what = What::Arrive {
                    from: real_addr(i),
                    to: t.to,
                    bytes: t.bytes,
                    valid: true,
                };
                push(&mut queue, now + delay, what);
            }
            while let Some(e) = p.poll_event() {
                match e.kind {
                    ChannelEvent::Acked { msg_id } => {
                        outcome_of.insert((i, u64::from(msg_id)), true);
                    }
                    ChannelEvent::Failed { msg_id, .. } => {
                        outcome_of.insert((i, u64::from(msg_id)), false);
                    }
                    ChannelEvent::Delivered { .. } => {
                        v.push(format!(
                            "peer {i} got a message from the hub, which sends none"
                        ));
                    }
                    ChannelEvent::PeerRestarted | ChannelEvent::PeerUnreachable => {}
                }
            }
        }
        while let Some(e) = hub.poll_event() {
            if let ChannelEvent::Delivered { data, .. } = e.kind {
                // Keyed by the message's tag (its first 3 bytes), which the model knows.
                let tag = data.get(..3).unwrap_or(&data).to_vec();
                *delivered.entry((e.peer, tag)).or_insert(0) += 1;
            }
        }
        if hub.peer_count() > peers_max {
            v.push(format!(
                "at {now:?}: the hub has {} channels",
                hub.peer_count()
            ));
        }
        if hub.reassembly_bytes() > total_max {
            v.push(format!(
                "at {now:?}: reassembly {} bytes",
                hub.reassembly_bytes()
            ));
        }
        if !v.is_empty() {
            break;
        }
        // The next thing to happen: an event or a timer.
        let next_event = queue.peek().map(|Reverse((t, _, _))| *t);
        let next_timer = std::iter::once(&mut hub)
            .chain(peers.iter_mut())
            .filter_map(|e| e.poll_timeout())
            .min()
            .map(|t| t.saturating_duration_since(origin));
        let Some(next) = [next_event, next_timer].into_iter().flatten().min() else {
            break;
        };
        now = now.max(next);
        events += 1;
        if now > VIRTUAL_MAX || events > 5_000_000 {
            v.push(format!("no quiescence by {now:?} ({events} events)"));
            break;
        }
        let at = origin + now;
        if next_event.is_some_and(|t| t <= now) {
            let Some(Reverse((_, _, what))) = queue.pop() else {
                break;
            };
            match what {
                What::Send(i) => {
                    for m in 0..rng.gen_range(1..=8u8) {
                        let mut data = vec![b'c', i as u8, m];
                        data.resize(rng.gen_range(3..=900), m);
                        let tag = data[..3].to_vec();
                        match peers[i].send(at, hub_addr, data) {
                            Ok(id) => {
                                sent_tags[i].insert(u64::from(id), tag);
                                out.messages += 1;
                            }
                            Err(e) => v.push(format!("peer {i} could not send: {e}")),
                        }
                    }
                }
                What::Stranger { src, copy } => {
                    let bytes = match (copy, captured.is_empty()) {
                        (true, false) => captured[rng.gen_range(0..captured.len())].clone(),
                        (false, false) if rng.gen_bool(0.5) => {
                            // A real datagram with one byte changed: CRC32C detects any
                            // error within 32 bits, and the framing any other.
                            let mut b = captured[rng.gen_range(0..captured.len())].clone();
                            let at = rng.gen_range(0..b.len());
                            b[at] ^= rng.gen_range(1..=255u8);
                            b
                        }
                        _ => (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
                    };
                    let valid = copy && !captured.is_empty();
                    let what = What::Arrive {
                        from: stranger_addr(src),
                        to: hub_addr,
                        bytes,
                        valid,
                    };
                    push(&mut queue, now, what);
                }
                What::Arrive {
                    from,
                    to,
                    bytes,
                    valid,
                } => {
                    if to == hub_addr {
                        if valid {
                            contacted.insert(from);
                            if !admitted.contains(&from) {
                                if admitted.len() < peers_max {
                                    admitted.insert(from);
                                } else {
                                    refused_expected += 1;
                                }
                            }
                        } else {
                            garbage_sent += 1;
                        }
                        hub.handle_datagram(at, from, &bytes);
                    } else if let Some(&i) = index_of.get(&to) {
                        peers[i].handle_datagram(at, from, &bytes);
                    }
                }
            }
        } else {
            hub.handle_timeout(at);
            for p in &mut peers {
                p.handle_timeout(at);
            }
        }
    }

    // The end: the hub's state is the model's, every count exact.
    let stats = hub.stats();
    let channels: HashSet<SocketAddr> = hub.peers().map(|(a, _)| a).collect();
    if channels != admitted {
        v.push(format!(
            "the hub's channels {channels:?}, the model admitted {admitted:?}"
        ));
    }
    if stats.refused_peers != refused_expected {
        v.push(format!(
            "refused_peers {} but {refused_expected} well-formed bundles came from addresses beyond peers_max",
            stats.refused_peers
        ));
    }
    if stats.malformed + stats.corrupt != garbage_sent {
        v.push(format!(
            "malformed {} + corrupt {} but {garbage_sent} garbage datagrams",
            stats.malformed, stats.corrupt
        ));
    }
    for (i, tags) in sent_tags.iter().enumerate() {
        let addr = real_addr(i);
        for (id, tag) in tags {
            let n = delivered.get(&(addr, tag.clone())).copied().unwrap_or(0);
            let acked = outcome_of.get(&(i, *id)).copied();
            let want = if admitted.contains(&addr) {
                (1, Some(true))
            } else {
                (0, Some(false))
            };
            if (n, acked) != want {
                v.push(format!(
                    "peer {i} ({}) message {tag:?}: delivered {n} times, acked {acked:?}",
                    if admitted.contains(&addr) {
                        "admitted"
                    } else {
                        "refused"
                    }
                ));
            }
        }
    }
    for ((from, tag), n) in &delivered {
        out.delivered += u64::from(index_of.contains_key(from));
        if !admitted.contains(from) || !all_tags.contains(tag) || *n != 1 {
            v.push(format!(
                "the hub delivered {n} x the message tagged {tag:?} from {from} (admitted: {})",
                admitted.contains(from)
            ));
        }
    }
    if v.is_empty() {
        out.admitted = admitted.len() as u64;
        out.contacts = contacted.len() as u64;
        out.refused = refused_expected;
        out.garbage = garbage_sent;
        Ok(out)
    } else {
        v.truncate(10);
        Err(format!(
            "crowd (peers_max {peers_max}, {real} real peers, {strangers} strangers): {}",
            v.join("; ")
        ))
    }
}
