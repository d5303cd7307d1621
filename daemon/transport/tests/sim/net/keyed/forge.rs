//! The forgeries the network injects in keyed runs, one builder per class.

use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, RngCore};
use rpcd_transport::secure::wire::{COOKIE_LEN, INIT_LEN, RESP_LEN};
use rpcd_transport::secure::{PeerKey, Security};
use rpcd_transport::wire::{AckInfo, Bundle, Datagram, Fragment, Kind};
use rpcd_transport::{Endpoint, Seq};

use super::super::{content, ms, Sim, What};
use super::{outer_type, sample, Class, Forged, BASE_WALL};

/// A forged datagram about to be injected.
pub(super) struct Forgery {
    pub(super) from: SocketAddr,
    pub(super) to: usize,
    pub(super) bytes: Vec<u8>,
    pub(super) delay: Duration,
    pub(super) variant: &'static str,
    pub(super) allowed: &'static [&'static str],
    pub(super) may_answer: bool,
}

/// What a replay of `bytes` may do, by its outer type.
pub(super) fn replay_allowed(bytes: &[u8], stranger: bool) -> (&'static [&'static str], bool) {
    match (outer_type(bytes), stranger) {
        (1, false) => (
            &[
                "handshake_replayed",
                "rate_limited",
                "cookies_sent",
                "bad_mac",
            ],
            true,
        ),
        (1, true) => (
            &["address_not_allowed", "rate_limited", "cookies_sent"],
            false,
        ),
        (2, _) => (&["unknown_session", "bad_mac"], false),
        (3, _) => (&["unknown_session", "auth_failed"], false),
        (4, false) => (&["replayed", "unknown_session", "auth_failed"], false),
        (4, true) => (&["unknown_session"], false),
        _ => (&[], false),
    }
}

impl Sim {
    pub(super) fn forge(&mut self, class: Class, src: usize, to: usize) {
        let f = match class {
            Class::Plain => Some(self.forge_plain(src, to)),
            Class::Junk => Some(self.forge_junk(self.nodes[src].addr, to)),
            Class::Replay => self.forge_replay(to),
            Class::Stranger => Some(self.forge_stranger(to)),
        };
        let Some(f) = f else {
            return;
        };
        let k = self.k();
        k.injected[class.i()] += 1;
        k.in_flight[class.i()] += 1;
        let at = self.now + f.delay;
        self.note(|| {
            format!(
                "forge {} ({}) {} bytes {} -> node {} at {at:?}",
                class.name(),
                f.variant,
                f.bytes.len(),
                f.from,
                f.to
            )
        });
        self.push(
            at,
            What::Arrive {
                to: f.to,
                from: f.from,
                bytes: f.bytes,
                tampered: false,
                benign: false,
                forged: Some(Forged {
                    class,
                    variant: f.variant,
                    allowed: f.allowed,
                    may_answer: f.may_answer,
                }),
            },
        );
    }

    /// A valid plaintext datagram from node `src`'s address.
    pub(super) fn forge_plain(&mut self, src: usize, to: usize) -> Forgery {
        let (se, re) = (self.nodes[src].epoch, self.nodes[to].epoch);
        let payload_max = self.cfg.payload_max;
        let delay = self.one_way();
        let k = self.k();
        let last = k.last_sent.get(&(src, to)).copied();
        let r = &mut k.rng;
        let payload;
        let (variant, d) = match r.gen_range(0..3) {
            0 => {
                let (id, nonce, len) = last.unwrap_or((1, r.next_u64(), 16));
                let all = content(nonce, len);
                payload = all[..len.min(payload_max)].to_vec();
                let count = len.div_ceil(payload_max).max(1) as u32;
                (
                    "data with current epochs and a sent message's id and bytes",
                    Datagram {
                        sender_epoch: se,
                        receiver_epoch: re,
                        kind: Kind::Data,
                        seq: Seq(r.gen_range(1..=2_000)),
                        send_floor: Seq(1),
                        msg_floor: 0,
                        ack: Some(AckInfo {
                            ack: Seq(r.gen_range(1..=2_000)),
                            sack: r.next_u64(),
                            window: 1024,
                        }),
                        ack_now: true,
                        fragment: Some(Fragment {
                            msg_id: id + r.gen_range(0..=2),
                            index: 0,
                            count,
                            payload: &payload,
                        }),
                        key_id: 0,
                        nonce: 0,
                    },
                )
            }
            1 => (
                "ack of everything",
                Datagram {
                    sender_epoch: se,
                    receiver_epoch: re,
                    kind: Kind::Ack,
                    seq: Seq(0),
                    send_floor: Seq(1 << 40),
                    msg_floor: 1 << 40,
                    ack: Some(AckInfo {
                        ack: Seq(1 << 40),
                        sack: u64::MAX,
                        window: u32::MAX,
                    }),
                    ack_now: false,
                    fragment: None,
                    key_id: 0,
                    nonce: 0,
                },
            ),
            _ => (
                "blind reset (a probe with a random epoch)",
                Datagram {
                    sender_epoch: r.gen_range(1..=u64::MAX),
                    receiver_epoch: if r.gen_bool(0.5) { 0 } else { re },
                    kind: Kind::Probe,
                    seq: Seq(0),
                    send_floor: Seq(1),
                    msg_floor: 0,
                    ack: None,
                    ack_now: true,
                    fragment: None,
                    key_id: 0,
                    nonce: 0,
                },
            ),
        };
        Forgery {
            from: self.nodes[src].addr,
            to,
            bytes: Bundle { datagrams: vec![d] }.to_vec(),
            delay,
            variant,
            allowed: &["not_authenticated"],
            may_answer: false,
        }
    }

    /// Random bytes dressed as an authenticated-mode datagram, from `from`.
    pub(super) fn forge_junk(&mut self, from: SocketAddr, to: usize) -> Forgery {
        let delay = self.one_way();
        let live = self.k().last_opened[to]
            .as_ref()
            .filter(|c| outer_type(&c.bytes) == 4)
            .map(|c| (c.from, c.bytes[4..16].to_vec()));
        let k = self.k();
        let r = &mut k.rng;
        let mut v = r.gen_range(0..6);
        if v == 4 && live.is_none() {
            v = 3;
        }
        let (ty, len, variant, allowed): (u8, usize, &'static str, &'static [&'static str]) =
            match v {
                0 => (1, INIT_LEN, "initiation-shaped", &["bad_mac"]),
                1 => (2, RESP_LEN, "response-shaped", &["bad_mac"]),
                2 => (
                    3,
                    COOKIE_LEN,
                    "cookie-shaped",
                    &["unknown_session", "auth_failed"],
                ),
                3 => (
                    4,
                    r.gen_range(32..=300),
                    "transport, random index",
                    &["unknown_session", "auth_failed"],
                ),
                4 => (
                    4,
                    r.gen_range(32..=300),
                    "transport, a live session's index and a nearby counter",
                    &["auth_failed", "replayed", "unknown_session"],
                ),
                _ => (
                    r.gen_range(1..=4),
                    0,
                    "bad framing (version or size)",
                    &["malformed"],
                ),
            };
        let mut b = vec![0; len.max(4)];
        r.fill_bytes(&mut b);
        b[..4].copy_from_slice(&[b'R', b'S', 1, ty]);
        let mut from = from;
        if v == 4 {
            let (src, head) = live.expect("checked");
            from = src;
            let mut counter = [0; 8];
            counter.copy_from_slice(&head[4..12]);
            let c = u64::from_be_bytes(counter);
            let c = c.saturating_add_signed(r.gen_range(-64..=64));
            b[4..8].copy_from_slice(&head[..4]);
            b[8..16].copy_from_slice(&c.to_be_bytes());
        }
        if v == 5 {
            if r.gen_bool(0.5) {
                b[2] = r.gen_range(2..=255);
                let n = r.gen_range(4..=200);
                b.resize(n, 0x5a);
            } else {
                // A handshake type at a size that is not its size.
                let n = match ty {
                    1 => INIT_LEN - 1,
                    2 => RESP_LEN + 1,
                    3 => COOKIE_LEN - 1,
                    _ => r.gen_range(4..32),
                };
                b.resize(n, 0xa5);
            }
        }
        Forgery {
            from,
            to,
            bytes: b,
            delay,
            variant,
            allowed,
            may_answer: false,
        }
    }

    /// A datagram some node already accepted, again.
    pub(super) fn forge_replay(&mut self, to: usize) -> Option<Forgery> {
        let n = self.nodes.len();
        let one_way = self.one_way();
        let k = self.k();
        let v = k.rng.gen_range(0..3);
        let (c, target, delay, variant) = match v {
            0 => {
                let c = k.last_opened[to].clone()?;
                (c, to, one_way, "at once")
            }
            1 => {
                let c = sample(&mut k.rng, &k.pool)?;
                let later = ms(k.rng.gen_range(100..=3_000));
                let t = c.to;
                (c, t, later, "much later")
            }
            _ => {
                let c = sample(&mut k.rng, &k.pool)?;
                let others: Vec<usize> = (0..n)
                    .filter(|&j| j != c.to && Some(j) != self.node_index(c.from))
                    .collect();
                let k = self.k();
                match sample(&mut k.rng, &others) {
                    Some(t) => (c, t, one_way, "to another node"),
                    None => {
                        let t = c.to;
                        (c, t, one_way, "at once")
                    }
                }
            }
        };
        let (allowed, may_answer) = replay_allowed(&c.bytes, false);
        let _ = c.at;
        Some(Forgery {
            from: c.from,
            to: target,
            bytes: c.bytes,
            delay,
            variant,
            allowed,
            may_answer,
        })
    }

    /// An initiation to node `to` from a daemon with its own key.
    pub(super) fn stranger_initiation(&mut self, to: usize) -> Vec<u8> {
        let target = self.nodes[to].addr;
        let (cfg, now, wall) = (self.cfg, self.instant(self.now), BASE_WALL + self.now);
        let k = self.k();
        let mut seed = [0; 32];
        k.rng.fill_bytes(&mut seed);
        let mut ep = Endpoint::with_security(
            cfg,
            k.rng.gen_range(1..=u64::MAX),
            Security::Keys {
                local: k.stranger.clone(),
                peers: vec![PeerKey {
                    name: "target".into(),
                    public: k.keys[to].public(),
                    addresses: vec![target],
                }],
            },
            seed,
            wall,
        );
        ep.send(now, target, b"kv.put x".to_vec())
            .expect("the stranger may send to its configured peer");
        ep.poll_transmit(now).expect("an initiation").bytes
    }

    /// Something from an address that is no node's.
    pub(super) fn forge_stranger(&mut self, to: usize) -> Forgery {
        let k = self.k();
        let from = SocketAddr::from((
            [10, 0, 1, k.rng.gen_range(1..=4)],
            k.rng.gen_range(1024..=u16::MAX),
        ));
        match k.rng.gen_range(0..4) {
            0 => {
                // A daemon with its own key that knows the target's public
                // key tries to open a session. Its first initiation to each
                // node is made once per run and sent from every stranger
                // address (the target's work is the same; making a new one
                // each time only costs the simulator X25519 operations).
                let delay = self.one_way();
                let bytes = match self.k().stranger_inits[to].clone() {
                    Some(b) => b,
                    None => {
                        let b = self.stranger_initiation(to);
                        self.k().stranger_inits[to] = Some(b.clone());
                        b
                    }
                };
                Forgery {
                    from,
                    to,
                    bytes,
                    delay,
                    variant: "a handshake with its own key",
                    allowed: &["unknown_key", "rate_limited", "cookies_sent"],
                    may_answer: false,
                }
            }
            1 => {
                let mut f = self.forge_plain(to, to);
                f.from = from;
                f.variant = "plaintext";
                f
            }
            2 => {
                let mut f = self.forge_junk(from, to);
                f.from = from;
                if f.allowed.contains(&"replayed") {
                    f.allowed = &["unknown_session"];
                }
                f.variant = "junk";
                f
            }
            _ => {
                let delay = self.one_way();
                let k = self.k();
                match sample(&mut k.rng, &k.pool) {
                    Some(c) => {
                        let (allowed, may_answer) = replay_allowed(&c.bytes, true);
                        Forgery {
                            from,
                            to: c.to,
                            bytes: c.bytes,
                            delay,
                            variant: "a captured datagram",
                            allowed,
                            may_answer,
                        }
                    }
                    None => {
                        let mut f = self.forge_plain(to, to);
                        f.from = from;
                        f.variant = "plaintext";
                        f
                    }
                }
            }
        }
    }
}
