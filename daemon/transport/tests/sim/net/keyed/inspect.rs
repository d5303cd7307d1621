//! What the authenticated layer made of each datagram in keyed runs: the
//! forgeries' checks, captures for later replays, and the end-of-run totals.

use std::net::SocketAddr;

use rpcd_transport::secure::wire::COOKIE_LEN;

use super::super::Sim;
use super::{add_security, grown, outer_type, Captured, Class, Ctx, Forged, KeyedOutcome};

impl Sim {
    /// Hand a datagram to node `to` in a keyed run and check what the
    /// authenticated layer made of it.
    pub(crate) fn arrive_keyed(
        &mut self,
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
        tampered: bool,
        benign: bool,
        forged: Option<Forged>,
    ) {
        let now = self.instant(self.now);
        if let Some(f) = &forged {
            self.k().in_flight[f.class.i()] -= 1;
        }
        let Some(ep) = self.nodes[to].ep.as_mut() else {
            return;
        };
        let before = ep.stats();
        ep.handle_datagram(now, from, &bytes);
        let after = ep.stats();
        if let Some(f) = &forged {
            let k = self.k();
            k.handed[f.class.i()] += 1;
            k.ctx = Some(Ctx {
                class: f.class,
                outs: Vec::new(),
                events: Vec::new(),
            });
        }
        self.drain(to);
        let ctx = self.k().ctx.take();
        let grew = grown(&before.security, &after.security);
        let inner_bad = (after.corrupt + after.malformed) - (before.corrupt + before.malformed);
        if inner_bad > 0 {
            self.violation(format!(
                "node {to}: a datagram from {from} got past the authenticated layer and failed the inner parse"
            ));
        }
        if tampered && !benign {
            let k = self.k();
            k.tampered.0 += 1;
            if grew.len() == 1 {
                k.tampered.1 += 1;
            } else {
                let (t, n) = (outer_type(&bytes), bytes.len());
                self.violation(format!(
                    "node {to}: a tampered datagram (type {t}, {n} bytes) from {from} was not dropped for one reason: {grew:?}"
                ));
            }
        }
        match (forged, ctx) {
            (Some(f), Some(ctx)) => {
                let hs = after.security.handshakes - before.security.handshakes;
                self.check_forgery(to, from, &bytes, f, &grew, hs, ctx);
            }
            (None, _) if !tampered && grew.is_empty() => {
                let at = self.now;
                self.k().capture(Captured {
                    from,
                    to,
                    bytes,
                    at,
                });
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_forgery(
        &mut self,
        to: usize,
        from: SocketAddr,
        bytes: &[u8],
        f: Forged,
        grew: &[&'static str],
        handshakes: u64,
        ctx: Ctx,
    ) {
        let what = || {
            format!(
                "forged {} datagram ({}, type {}, {} bytes) from {from} to node {to}",
                f.class.name(),
                f.variant,
                outer_type(bytes),
                bytes.len()
            )
        };
        if !ctx.events.is_empty() {
            let w = what();
            self.violation(format!("{w} caused events: {:?}", ctx.events));
        }
        if handshakes > 0 {
            let w = what();
            self.violation(format!("{w} completed a handshake"));
        }
        match grew {
            [reason] if f.allowed.contains(reason) => {
                *self.k().reasons.entry(reason).or_default() += 1;
            }
            [] if f.may_answer => self.k().answered += 1,
            _ => {
                let w = what();
                self.violation(format!(
                    "{w} raised drop counters {grew:?}; expected exactly one of {:?}",
                    f.allowed
                ));
            }
        }
        // Nothing is sent back, but the answer to a replayed initiation (to
        // its source) or a cookie reply to a stranger: one datagram, smaller
        // than what came.
        let answer_ok = |outs: &[(SocketAddr, usize)]| {
            outs.len() <= 1 && outs.iter().all(|&(a, n)| a == from && n < bytes.len())
        };
        let ok = match ctx.class {
            Class::Plain | Class::Junk => ctx.outs.is_empty(),
            Class::Replay => answer_ok(&ctx.outs) && (f.may_answer || ctx.outs.is_empty()),
            Class::Stranger => {
                answer_ok(&ctx.outs) && ctx.outs.iter().all(|&(_, n)| n == COOKIE_LEN)
            }
        };
        if !ok {
            let w = what();
            self.violation(format!("{w} made node {to} send {:?}", ctx.outs));
        }
        if ctx.class == Class::Stranger {
            let ep = self.nodes[to]
                .ep
                .as_ref()
                .expect("alive while it handled it");
            if ep.peer(from).is_some() || ep.peer_key(from).is_some() {
                let w = what();
                self.violation(format!("{w}: the stranger got a channel or a session"));
            }
        }
    }

    /// Record a datagram node `from` sends to `to` while it handles a
    /// forgery. Returns false outside one.
    pub(crate) fn note_forged_output(&mut self, to: SocketAddr, len: usize) -> bool {
        match self.keyed.as_mut().and_then(|k| k.ctx.as_mut()) {
            Some(ctx) => {
                ctx.outs.push((to, len));
                true
            }
            None => false,
        }
    }

    /// Record an event raised while a forgery is handled.
    pub(crate) fn note_forged_event(&mut self, i: usize, ev: &rpcd_transport::Event) {
        if let Some(ctx) = self.keyed.as_mut().and_then(|k| k.ctx.as_mut()) {
            let kind = match &ev.kind {
                rpcd_transport::ChannelEvent::Delivered { msg_id, data } => {
                    format!("delivered {msg_id} ({} bytes)", data.len())
                }
                other => format!("{other:?}"),
            };
            ctx.events
                .push(format!("node {i}: {kind} from {}", ev.peer));
        }
    }

    /// End-of-run checks and totals of a keyed run.
    pub(crate) fn finish_keyed(&mut self) {
        let Some(mut k) = self.keyed.take() else {
            return;
        };
        let mut security = k.dead_security;
        let mut inner_bad = k.dead_inner_bad;
        let nodes: Vec<SocketAddr> = self.nodes.iter().map(|n| n.addr).collect();
        let mut problems = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(ep) = n.ep.as_ref() else {
                continue;
            };
            let st = ep.stats();
            add_security(&mut security, &st.security);
            inner_bad += st.corrupt + st.malformed;
            for (p, _) in ep.peers() {
                if !nodes.contains(&p) {
                    problems.push(format!("node {i} has a channel for the stranger {p}"));
                }
            }
        }
        if inner_bad > 0 {
            problems.push(format!(
                "{inner_bad} datagrams got past the authenticated layer and failed the inner parse"
            ));
        }
        for c in Class::ALL {
            if k.enabled[c.i()] && k.handed[c.i()] == 0 {
                problems.push(format!(
                    "the seed enables {} forgeries, but none reached an endpoint ({} injected)",
                    c.name(),
                    k.injected[c.i()]
                ));
            }
        }
        let reason = |r: &str| k.reasons.get(r).copied().unwrap_or(0);
        // The counters saw the forgeries: every plaintext one (and more: the
        // network's tampering can produce some) as not authenticated.
        if security.not_authenticated < reason("not_authenticated") {
            problems.push(format!(
                "{} forgeries dropped as not authenticated, but the counter says {}",
                reason("not_authenticated"),
                security.not_authenticated
            ));
        }
        if security.replayed < reason("replayed") {
            problems.push(format!(
                "{} forgeries dropped as replayed, but the counter says {}",
                reason("replayed"),
                security.replayed
            ));
        }
        // A handful of replays may all be initiations sent to another node
        // (dropped as bad mac, rightly): the check needs a few.
        if k.enabled[Class::Replay.i()]
            && k.handed[Class::Replay.i()] >= 4
            && reason("replayed") + reason("unknown_session") + reason("handshake_replayed") == 0
            && k.answered == 0
        {
            problems.push("replays were injected, but none was counted as replayed, unknown session or handshake replayed".into());
        }
        for p in problems {
            self.violation(p);
        }
        self.out.keyed = Some(KeyedOutcome {
            injected: k.injected,
            handed: k.handed,
            answered: k.answered,
            tampered: k.tampered,
            to_strangers: k.to_strangers,
            sent_by_type: k.sent_by_type,
            security,
            forged_replayed: reason("replayed"),
            forged_not_authenticated: reason("not_authenticated"),
            forged_unknown_key: reason("unknown_key"),
            rekeying: k.rekeying,
            cookies: k.cookies,
        });
        k.ctx = None;
        self.keyed = Some(k);
    }
}
