//! The handshake side of [`Sessions`]: initiations (answered, rate-limited,
//! or met with a cookie), responses, cookie replies, and starting our own
//! initiations. See the parent module for the sessions they yield.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::super::crypto::{self, INIT_PAYLOAD_LEN};
use super::super::wire::{self, MAC_LEN};
use super::peer::{Keypair, PeerSession, Pending};
use super::{Sessions, COOKIE_LIFETIME, FORGED_RESPONSES_MAX, SOURCES_MAX};

/// Constant-time equality of MACs.
fn same(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn addr_bytes(a: SocketAddr) -> Vec<u8> {
    let mut b = match a.ip().to_canonical() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    b.extend_from_slice(&a.port().to_be_bytes());
    b
}

impl Sessions {
    pub(super) fn timestamp(&mut self, now: Instant) -> u64 {
        let born = *self.born.get_or_insert(now);
        let t = self.wall_clock + now.saturating_duration_since(born);
        u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Our cookie for `addr` (the secret rotates every `COOKIE_LIFETIME`).
    pub(super) fn cookie_for(&mut self, now: Instant, addr: SocketAddr) -> [u8; MAC_LEN] {
        let fresh = self
            .cookie_secret
            .1
            .is_some_and(|t| now.saturating_duration_since(t) < COOKIE_LIFETIME);
        if !fresh {
            self.cookie_secret = (self.rng.bytes(), Some(now));
        }
        crypto::mac(&self.cookie_secret.0, &[&addr_bytes(addr)])
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_init(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: u32,
        noise: &[u8],
        (mac1_covered, mac1): (&[u8], &[u8; MAC_LEN]),
        (mac2_covered, mac2): (&[u8], &[u8; MAC_LEN]),
        epoch: u64,
    ) {
        // The cheap check first: only someone who knows our public key can
        // make us do any Diffie-Hellman work.
        if !same(&crypto::mac(&self.mac1_key, &[mac1_covered]), mac1) {
            self.stats.bad_mac += 1;
            return;
        }
        // A duplicate of the initiation we last answered from this address
        // gets the same response (the first was lost), not a new session.
        if let Some((m, resp)) = self.sessions.get(&from).and_then(|s| s.answered.as_ref()) {
            if same(m, mac1) {
                self.out.push_back((from, resp.clone()));
                return;
            }
        }
        self.limiter.roll(now);
        if self.limiter.total >= self.cfg.handshake_load_max {
            // Under load: only initiators that proved their address (by
            // echoing our cookie in mac2) get any work done.
            let cookie = self.cookie_for(now, from);
            if !same(&crypto::mac(&cookie, &[mac2_covered]), mac2) {
                let nonce: [u8; 24] = self.rng.bytes();
                let sealed = crypto::seal_cookie(&self.cookie_key, &nonce, &cookie, mac1);
                self.out
                    .push_back((from, wire::cookie_reply(sender, &nonce, &sealed)));
                self.stats.cookies_sent += 1;
                return;
            }
        }
        let per_source = self.limiter.per_source.len();
        let count = match self.limiter.per_source.get_mut(&from.ip()) {
            Some(c) => c,
            None if per_source >= SOURCES_MAX => {
                self.stats.rate_limited += 1;
                return;
            }
            None => self.limiter.per_source.entry(from.ip()).or_insert(0),
        };
        if *count >= self.cfg.handshake_rate_per_source {
            self.stats.rate_limited += 1;
            return;
        }
        *count += 1;
        self.limiter.total += 1;
        let Ok(init) = crypto::read_initiation(&mut self.rng, &self.local, noise) else {
            self.stats.handshake_failed += 1;
            return;
        };
        let Some(peer) = self.peers.iter().find(|p| p.public == init.remote) else {
            self.stats.unknown_key += 1;
            return;
        };
        if !peer.addresses.is_empty()
            && !peer
                .addresses
                .iter()
                .any(|a| a.ip().to_canonical() == from.ip().to_canonical())
        {
            self.stats.address_not_allowed += 1;
            return;
        }
        let mut ts = [0; 8];
        ts.copy_from_slice(&init.payload[8..16]);
        let ts = u64::from_be_bytes(ts);
        if self.timestamps.get(&init.remote).is_some_and(|&t| ts <= t) {
            self.stats.handshake_replayed += 1;
            return;
        }
        if !self.sessions.contains_key(&from) && self.sessions.len() >= self.cfg.peers_max {
            // Every entry belongs to an authenticated, configured peer; the
            // owner evicts idle ones.
            self.stats.rate_limited += 1;
            return;
        }
        let remote = init.remote;
        let Ok((msg, keys)) = init.respond(&epoch.to_be_bytes()) else {
            self.stats.handshake_failed += 1;
            return;
        };
        self.timestamps.insert(remote, ts);
        let local_index = self.rng.u32();
        let mut resp = wire::resp_body(local_index, sender, &msg);
        let m1 = crypto::mac(&crypto::mac1_key(&remote), &[&resp]);
        resp.extend_from_slice(&m1);
        resp.extend_from_slice(&[0; MAC_LEN]);
        let s = self
            .sessions
            .get_or_insert_with(from, || PeerSession::new(remote));
        if s.peer != remote {
            // Another configured peer now answers at this address.
            *s = PeerSession::new(remote);
        }
        s.next = Some(Keypair::new(keys, local_index, sender, now));
        s.answered = Some((*mac1, resp.clone()));
        self.out.push_back((from, resp));
        self.reschedule(from);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_resp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: u32,
        receiver: u32,
        noise: &[u8],
        mac1_covered: &[u8],
        mac1: &[u8; MAC_LEN],
    ) {
        if !same(&crypto::mac(&self.mac1_key, &[mac1_covered]), mac1) {
            self.stats.bad_mac += 1;
            return;
        }
        let Some(s) = self.sessions.get_mut(&from) else {
            self.stats.unknown_session += 1;
            return;
        };
        if s.pending.as_ref().is_none_or(|p| p.index != receiver) {
            self.stats.unknown_session += 1;
            return;
        }
        let Some(pending) = s.pending.as_mut() else {
            return;
        };
        let Some(initiator) = pending.initiator.take() else {
            self.stats.unknown_session += 1;
            return;
        };
        let index = pending.index;
        let Ok((_epoch, keys)) = initiator.finish(noise) else {
            // Not the responder's (forged or corrupt): rebuild the
            // initiator the forgery consumed and keep waiting for the real
            // response (a few times; then the next retry starts afresh).
            self.stats.handshake_failed += 1;
            if pending.rebuilds < FORGED_RESPONSES_MAX {
                pending.rebuilds += 1;
                pending.initiator =
                    crypto::initiate(pending.seed, &self.local, &s.peer, &pending.payload)
                        .ok()
                        .map(|(i, _)| i);
            }
            return;
        };
        s.handshake_rtt = Some(now.saturating_duration_since(pending.sent_at));
        s.pending = None;
        s.previous = s.current.take();
        s.current = Some(Keypair::new(keys, index, sender, now));
        s.last_heard = Some(now);
        s.unanswered_since = None;
        self.stats.handshakes += 1;
        // Flush what waited; with nothing waiting, a keepalive lets the
        // responder confirm the session.
        let queued: Vec<Vec<u8>> = s.queued.drain(..).collect();
        let kp = s.current.as_mut().expect("just set");
        if queued.is_empty() {
            let d = kp.seal(&[]);
            self.out.push_back((from, d));
        }
        for q in queued {
            let d = kp.seal(&q);
            self.out.push_back((from, d));
        }
        self.reschedule(from);
    }

    pub(super) fn on_cookie(
        &mut self,
        now: Instant,
        from: SocketAddr,
        receiver: u32,
        nonce: &[u8; 24],
        sealed: &[u8],
        epoch: u64,
    ) {
        let Some(s) = self.sessions.get_mut(&from) else {
            self.stats.unknown_session += 1;
            return;
        };
        let Some(p) = s
            .pending
            .as_mut()
            .filter(|p| p.index == receiver && !p.cookie_taken)
        else {
            self.stats.unknown_session += 1;
            return;
        };
        let key = crypto::cookie_key(&s.peer);
        let Some(cookie) = crypto::open_cookie(&key, nonce, sealed, &p.mac1) else {
            self.stats.auth_failed += 1;
            return;
        };
        p.cookie_taken = true;
        s.cookie = Some((cookie, now));
        // Retry at once with the cookie in mac2.
        let attempt = p.attempt;
        let started = p.started;
        self.initiate(now, from, attempt + 1, started, epoch);
    }

    pub(super) fn initiate(
        &mut self,
        now: Instant,
        to: SocketAddr,
        attempt: u32,
        started: Instant,
        epoch: u64,
    ) {
        let ts = self.timestamp(now);
        let Some(s) = self.sessions.get(&to) else {
            return;
        };
        let peer = s.peer;
        let cookie = s
            .cookie
            .filter(|(_, t)| now.saturating_duration_since(*t) < COOKIE_LIFETIME)
            .map(|(c, _)| c);
        let mut payload = [0; INIT_PAYLOAD_LEN];
        payload[..8].copy_from_slice(&epoch.to_be_bytes());
        payload[8..].copy_from_slice(&ts.to_be_bytes());
        let seed = self.rng.bytes();
        let Ok((initiator, noise)) = crypto::initiate(seed, &self.local, &peer, &payload) else {
            return;
        };
        let index = self.rng.u32();
        let mut msg = wire::init_body(index, &noise);
        let mac1 = crypto::mac(&crypto::mac1_key(&peer), &[&msg]);
        msg.extend_from_slice(&mac1);
        let mac2 = cookie.map_or([0; MAC_LEN], |c| crypto::mac(&c, &[&msg]));
        msg.extend_from_slice(&mac2);
        let s = self.sessions.get_mut(&to).expect("checked above");
        s.pending = Some(Pending {
            initiator: Some(initiator),
            seed,
            payload,
            rebuilds: 0,
            index,
            sent_at: now,
            attempt,
            started,
            mac1,
            cookie_taken: false,
        });
        self.out.push_back((to, msg));
        self.reschedule(to);
    }
}
