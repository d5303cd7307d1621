//! What the network says about outgoing calls: a request acknowledged or given up on by the
//! transport, a reply, a peer restarted or unreachable.

use std::net::SocketAddr;
use std::time::Instant;

use rpcd_client::ipc::{ErrorCode, ServingTrace};
use rpcd_transport::{FailReason, MsgId};
use tracing::debug;

use super::table::{CallState, Target};
use crate::envelope::RemoteOutcome;
use crate::router::types::{CallId, Failure};
use crate::router::Router;

impl Router {
    /// The peer acknowledged a message: if it was a request, wait for the reply.
    pub(in crate::router) fn on_message_acked(&mut self, peer: SocketAddr, msg: MsgId) {
        if let Some(id) = self.calls.by_msg.remove(&(peer, msg)) {
            if let Some(c) = self.calls.get_mut(id) {
                c.state = CallState::Awaiting;
            }
        }
    }

    /// The transport gave up on a message: if it was a request, the call
    /// fails over or ends.
    pub(in crate::router) fn on_message_failed(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: MsgId,
        reason: FailReason,
    ) {
        let Some(&id) = self.calls.by_msg.get(&(peer, msg)) else {
            return;
        };
        match reason {
            FailReason::PeerUnreachable => {
                self.peer_down.insert(peer, now);
                self.fail_over_or_finish(
                    now,
                    id,
                    Failure::new(
                        ErrorCode::PeerUnreachable,
                        format!("{peer} did not acknowledge the request"),
                    ),
                );
            }
            FailReason::PeerRestarted => self.finish_call(
                now,
                id,
                Err(Failure::new(
                    ErrorCode::PeerRestarted,
                    format!("{peer} restarted; the call may or may not have run"),
                )),
            ),
            FailReason::Cancelled => {}
        }
    }

    /// A reply envelope: the call's outcome, if the call still waits for it
    /// from that peer; otherwise it is late, dropped and counted.
    pub(in crate::router) fn on_reply(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        id: CallId,
        outcome: RemoteOutcome,
        serving: Option<ServingTrace>,
    ) {
        let ours = self
            .calls
            .get(id)
            .is_some_and(|c| c.target == Target::Remote(peer));
        if !ours {
            debug!(call = %self.call_tag(Some(peer), id), "late reply dropped");
            self.counters.late_replies += 1;
            return;
        }
        let result = match outcome {
            RemoteOutcome::Ok(b) => Ok(b),
            RemoteOutcome::Err { code, message } => Err(Failure::new(code, message)),
        };
        self.watch_serving(id, serving);
        self.finish_call(now, id, result);
    }

    /// The peer restarted: calls whose request it acknowledged may or may
    /// not have run (the channel reports the unacknowledged ones itself).
    pub(in crate::router) fn on_peer_restarted_calls(&mut self, now: Instant, peer: SocketAddr) {
        for id in self.calls.snapshot_to(peer) {
            let awaiting = self
                .calls
                .get(id)
                .is_some_and(|c| c.state == CallState::Awaiting);
            if awaiting {
                self.finish_call(
                    now,
                    id,
                    Err(Failure::new(
                        ErrorCode::PeerRestarted,
                        format!("{peer} restarted; the call may or may not have run"),
                    )),
                );
            }
        }
    }

    /// The peer stopped answering: every call to it fails over or ends.
    pub(in crate::router) fn on_peer_unreachable_calls(&mut self, now: Instant, peer: SocketAddr) {
        self.peer_down.insert(peer, now);
        for id in self.calls.snapshot_to(peer) {
            self.fail_over_or_finish(
                now,
                id,
                Failure::new(
                    ErrorCode::PeerUnreachable,
                    format!("{peer} stopped answering"),
                ),
            );
        }
    }
}
