//! What the transport reports: delivered envelopes, acknowledged and failed
//! messages, restarted and unreachable peers — routed to calls (replies)
//! and invocations (requests, cancels).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_client::ipc::ErrorCode;
use rpcd_transport::{ChannelEvent, MsgId};
use tracing::{debug, info};

use super::types::{CallId, Failure, Origin, RemoteCallId, SentReply};
use super::{Router, Shutdown};
use crate::envelope::Envelope;

/// How often a full peer table is swept for idle peers.
const SWEEP_WHEN_FULL_EVERY: Duration = Duration::from_secs(1);

impl Router {
    pub(super) fn on_transport_event(&mut self, now: Instant, peer: SocketAddr, ev: ChannelEvent) {
        match ev {
            ChannelEvent::Delivered { data, .. } => {
                self.peer_down.remove(&peer);
                // The message is done with: a large payload stays in its buffer.
                match Envelope::decode_owned(data) {
                    Ok(env) => self.on_envelope(now, peer, env),
                    Err(e) => {
                        self.counters.bad_envelopes += 1;
                        debug!(%peer, error = %e, "dropping a message that is not an RPC envelope");
                    }
                }
            }
            ChannelEvent::Acked { msg_id } => {
                self.peer_down.remove(&peer);
                self.reply_done(peer, msg_id);
                self.on_message_acked(peer, msg_id);
            }
            ChannelEvent::Failed { msg_id, reason, .. } => {
                self.reply_done(peer, msg_id);
                self.on_message_failed(now, peer, msg_id, reason)
            }
            ChannelEvent::PeerRestarted => {
                info!(%peer, "peer restarted (new epoch)");
                // The channel keeps the messages it never transmitted for the
                // new incarnation: right for a request, wrong for a reply,
                // which would end the new incarnation's call of the same id
                // with another call's result.
                // Rare: a pass over every reply outstanding.
                let mut old = Vec::new();
                self.replies.retain(|r| {
                    if r.peer == peer {
                        old.push(r.msg);
                    }
                    r.peer != peer
                });
                for msg in old {
                    self.endpoint.cancel(peer, msg);
                }
                self.on_peer_restarted_calls(now, peer);
                self.withdraw_from_peer(peer);
            }
            ChannelEvent::PeerUnreachable => {
                info!(%peer, "peer unreachable");
                self.on_peer_unreachable_calls(now, peer);
            }
        }
    }

    /// A reply to `peer` was acknowledged or failed: forget it.
    fn reply_done(&mut self, peer: SocketAddr, msg: MsgId) {
        // The calling side sends no replies: no hashing for its acks.
        if !self.replies.is_empty() {
            self.replies.remove(&SentReply { peer, msg });
        }
    }

    /// Drop the channels of peers quiet for `transport.peer_idle_timeout`
    /// that no call or invocation uses, with everything kept about them:
    /// the peer table holds the peers in use, not every address that ever
    /// sent a datagram. Runs when timers fire, at most every quarter of the
    /// idle timeout, and when the table is full, at most once a second (a
    /// quiet daemon needs no sweeping: only a new peer needs the room).
    pub(super) fn sweep_idle_peers(&mut self, now: Instant) {
        let idle = self.settings.transport.peer_idle_timeout;
        let full = self.endpoint.peer_count() >= self.settings.transport.peers_max;
        let every = if full {
            SWEEP_WHEN_FULL_EVERY.min(idle / 4)
        } else {
            idle / 4
        };
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return;
        }
        self.last_sweep = Some(now);
        let in_use: HashSet<SocketAddr> = self
            .calls
            .peers()
            .chain(self.invocations.remote_peers())
            .collect();
        for peer in self.endpoint.evict_idle(now, idle, |a| in_use.contains(&a)) {
            debug!(%peer, "forgetting a peer quiet for {idle:?}");
            self.peer_down.remove(&peer);
        }
    }

    fn on_envelope(&mut self, now: Instant, peer: SocketAddr, env: Envelope) {
        match env {
            Envelope::Request {
                call_id,
                function,
                args,
                deadline_ms,
                trace,
                ..
            } => {
                let origin = Origin::Remote {
                    peer,
                    call: RemoteCallId(call_id),
                };
                debug!(call = %self.origin_tag(origin), %peer, %function, deadline_ms, "request received");
                self.served_received(now, origin, &function, args.len(), trace);
                if self.shutdown != Shutdown::Running {
                    let f = Failure::new(
                        ErrorCode::ShuttingDown,
                        "the serving daemon is shutting down",
                    );
                    self.answer(now, origin, Err(f));
                    return;
                }
                let wait =
                    Duration::from_millis(deadline_ms).min(self.settings.limits.deadline_max);
                self.serve(now, origin, &function, args, now + wait);
            }
            Envelope::Reply {
                call_id,
                outcome,
                trace,
            } => self.on_reply(now, peer, CallId(call_id), outcome, trace),
            Envelope::Cancel { call_id } => {
                let origin = Origin::Remote {
                    peer,
                    call: RemoteCallId(call_id),
                };
                debug!(call = %self.origin_tag(origin), %peer, "cancel received");
                self.withdraw_origin(origin)
            }
        }
    }
}
