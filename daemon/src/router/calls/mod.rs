//! Outgoing calls: admission, candidate order, failover, the one outcome,
//! and cancellation when the calling app goes away.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{CallTrace, DaemonMsg, ErrorCode};
use rpcd_transport::{ChannelSendError, SendError};
use tracing::debug;

mod network;
mod table;

pub(super) use table::Calls;
use table::{Call, CallState, Retry, Target};

use super::targets::{self, Resolution};
use super::trace::Watch;
use super::types::{CallId, ConnId, Failure};
use super::{Deadline, Router, Shutdown, UNREACHABLE_MEMORY};
use crate::envelope::Envelope;
use crate::payload::Payload;

/// A call as the app asked for it.
#[derive(Debug)]
pub(super) struct CallRequest {
    pub client_id: u64,
    pub target: String,
    pub function: String,
    pub args: Payload,
    pub deadline_ms: Option<u64>,
    pub idempotent: bool,
    /// The app asked for the call's trace.
    pub trace: bool,
}

impl Router {
    /// Admit an app's call (or refuse it with a `failed` frame), then send it
    /// or look its target up.
    pub(super) fn start_call(&mut self, now: Instant, app: ConnId, req: CallRequest) {
        let limits = self.settings.limits;
        let refusal = if self.shutdown != Shutdown::Running {
            Some(Failure::new(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down",
            ))
        } else if self.apps.get(app).map_or(0, |a| a.calls.len()) >= limits.calls_per_connection_max
        {
            Some(Failure::new(
                ErrorCode::Overloaded,
                format!(
                    "too many calls in flight on this connection (limit {})",
                    limits.calls_per_connection_max
                ),
            ))
        } else if req.deadline_ms == Some(0) {
            // A budget of nothing: refused before anything runs (docs/ipc-protocol.md §5).
            Some(Failure::new(
                ErrorCode::DeadlineExceeded,
                "deadline_ms is 0: the call's time was up before it started; it was not sent",
            ))
        } else if req.args.len() + req.function.len() > self.settings.payload_max() {
            Some(Failure::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "arguments of {} bytes exceed the maximum of {}",
                    req.args.len(),
                    self.settings.payload_max()
                ),
            ))
        } else {
            None
        };
        let resolution = match refusal {
            Some(f) => Err(f),
            None => self
                .resolution(&req.target)
                .map_err(|m| Failure::new(ErrorCode::BadRequest, m)),
        };
        let resolution = match resolution {
            Ok(r) => r,
            Err(f) => {
                self.frame(
                    app,
                    DaemonMsg::Failed {
                        id: req.client_id,
                        code: f.code,
                        message: f.message,
                        trace: None,
                    },
                );
                return;
            }
        };
        let wait = req
            .deadline_ms
            .map(Duration::from_millis)
            .unwrap_or(limits.deadline_default)
            .min(limits.deadline_max);
        let deadline = now + wait;
        let id = CallId(self.calls.next);
        self.calls.next += 1;
        let watch = self.watching(req.trace).then(|| {
            Box::new(Watch {
                started: now,
                function: req.function.clone(),
                target: req.target.clone(),
                args_bytes: req.args.len(),
                trace: req
                    .trace
                    .then(|| Box::new(CallTrace::new(req.target.clone()))),
                msg: None,
                address: None,
            })
        });
        if let Some(w) = &watch {
            self.watch_started(now, id, w);
        }
        self.calls.map.insert(
            id,
            Call {
                app,
                client_id: req.client_id,
                target: Target::Local,
                state: CallState::Resolving,
                deadline,
                function: req.function.clone(),
                started: now,
                retry: Some(Retry {
                    function: req.function,
                    args: req.args,
                    idempotent: req.idempotent,
                    candidates: VecDeque::new(),
                }),
                watch,
            },
        );
        if let Some(a) = self.apps.get_mut(app) {
            a.calls.insert(id);
        }
        self.arm(deadline, Deadline::Call(id));
        match resolution {
            Resolution::Ready(addrs) => self.call_addresses(now, id, addrs),
            Resolution::Lookup(targets) => self.lookup_for_call(now, id, targets),
        }
    }

    /// What `target` needs before a call to it can go ([`targets::resolution`]),
    /// a literal address parsed once while it keeps coming back.
    fn resolution(&mut self, target: &str) -> Result<Resolution, String> {
        if let Some(&a) = self.literal_targets.get(target) {
            return Ok(Resolution::Ready(vec![a]));
        }
        if let Some(a) = targets::literal(target) {
            self.literal_targets.insert(target.to_owned(), a);
            return Ok(Resolution::Ready(vec![a]));
        }
        targets::named_resolution(target, &self.settings.names, &self.settings.peers, self.me)
    }

    /// True while `call` waits for addresses.
    pub(super) fn call_is_resolving(&self, call: CallId) -> bool {
        self.calls
            .get(call)
            .is_some_and(|c| c.state == CallState::Resolving)
    }

    /// Addresses are known: order them (peers recently unreachable last) and
    /// send to the first.
    pub(super) fn call_addresses(
        &mut self,
        now: Instant,
        call: CallId,
        mut addrs: Vec<SocketAddr>,
    ) {
        let down = |a: &SocketAddr| {
            self.peer_down
                .get(a)
                .is_some_and(|t| now.saturating_duration_since(*t) < UNREACHABLE_MEMORY)
        };
        // The same address twice (a name listing it twice, two host names
        // resolving to it) would fail an idempotent call over to the peer
        // that just failed it, with the same call id.
        // One address (the usual call to `host:port`) has nothing to order.
        if addrs.len() > 1 {
            let mut seen = std::collections::HashSet::new();
            addrs.retain(|a| seen.insert(*a));
            addrs.sort_by_key(down);
        }
        self.watch_addresses(now, call, &addrs);
        if let Some(r) = self.calls.get_mut(call).and_then(|c| c.retry.as_mut()) {
            r.candidates = addrs.into();
        }
        self.send_to_next(now, call, None);
    }

    /// Send the call to its next candidate address; with none left, finish
    /// it with `last` (or `peer_unreachable`).
    fn send_to_next(&mut self, now: Instant, id: CallId, mut last: Option<Failure>) {
        let per_peer_max = self.settings.limits.calls_per_peer_max;
        loop {
            let next = self
                .calls
                .get_mut(id)
                .and_then(|c| c.retry.as_mut())
                .and_then(|r| r.candidates.pop_front());
            let Some(addr) = next else {
                let f = last.unwrap_or_else(|| {
                    Failure::new(ErrorCode::PeerUnreachable, "no address left to try")
                });
                self.finish_call(now, id, Err(f));
                return;
            };
            let local = targets::is_local(addr, self.me, &self.host_ips);
            let in_flight = self.calls.to_peer(addr);
            let Some(call) = self.calls.get_mut(id) else {
                return;
            };
            let Some(retry) = call.retry.as_mut() else {
                return;
            };
            let deadline = call.deadline;
            // Keep the request for another address only if it may run twice.
            let keep = retry.idempotent && !retry.candidates.is_empty();
            if local {
                let Some(r) = call.retry.take() else { return };
                call.target = Target::Local;
                call.state = CallState::Local;
                debug!(call = %self.call_tag(None, id), function = %r.function, "call served by this daemon");
                self.watch_sent(now, id, None);
                self.serve_local(now, id, &r.function, r.args, deadline);
                return;
            }
            if in_flight >= per_peer_max {
                last = Some(Failure::new(
                    ErrorCode::Overloaded,
                    format!("too many calls in flight to {addr} (limit {per_peer_max})"),
                ));
                if !keep {
                    call.retry = None;
                }
                continue;
            }
            let (function, args) = if keep {
                (retry.function.clone(), retry.args.clone())
            } else {
                let Some(r) = call.retry.take() else { return };
                (r.function, r.args)
            };
            let mut env = Envelope::Request {
                call_id: id.0,
                function,
                args,
                deadline_ms: deadline.saturating_duration_since(now).as_millis() as u64,
                idempotent: keep,
                trace: call.watch.as_ref().is_some_and(|w| w.trace.is_some()),
            };
            // Large arguments go to the transport as they are, not copied.
            let payload = env.take_outgoing();
            match self.endpoint.send(now, addr, payload) {
                Ok(msg) => {
                    if let Some(c) = self.calls.get_mut(id) {
                        c.target = Target::Remote(addr);
                        c.state = CallState::Sending(msg);
                    }
                    self.calls.by_msg.insert((addr, msg), id);
                    // One hold per peer with calls, not one per call: the
                    // channel only asks whether any hold is on, and each
                    // hold or release costs a pass over its timers.
                    if self.calls.add_to_peer(addr, id) == 1 {
                        self.endpoint.hold(now, addr);
                    }
                    self.watch_sent(now, id, Some((addr, msg)));
                    if let Envelope::Request {
                        function,
                        deadline_ms,
                        ..
                    } = &env
                    {
                        debug!(call = %self.call_tag(Some(addr), id), peer = %addr, %function, deadline_ms, "call sent");
                    }
                    return;
                }
                Err(e @ SendError::NoKey(_)) => {
                    // Nothing was sent, and an address of the call's
                    // target is not a peer this daemon trusts: a
                    // configuration mistake to report, not a peer to skip.
                    self.finish_call(
                        now,
                        id,
                        Err(Failure::new(ErrorCode::BadRequest, e.to_string())),
                    );
                    return;
                }
                Err(e) => {
                    let code = match e {
                        SendError::Channel(ChannelSendError::TooLarge { .. }) => {
                            ErrorCode::MessageTooLarge
                        }
                        _ => ErrorCode::Overloaded,
                    };
                    last = Some(Failure::new(code, e.to_string()));
                }
            }
        }
    }

    /// A call's peer proved unreachable: an idempotent call with addresses
    /// left fails over to the next; any other call ends here.
    fn fail_over_or_finish(&mut self, now: Instant, id: CallId, failure: Failure) {
        let can_fail_over = self.calls.get(id).is_some_and(|c| {
            now < c.deadline
                && c.retry
                    .as_ref()
                    .is_some_and(|r| r.idempotent && !r.candidates.is_empty())
        });
        if !can_fail_over {
            self.finish_call(now, id, Err(failure));
            return;
        }
        self.watch_attempt_ended(now, id, failure.code.as_str());
        if let Some(mut call) = self.calls.map.remove(&id) {
            let tag = self.call_tag(peer_of(call.target), id);
            self.detach_peer(id, &call);
            if let (Target::Remote(peer), CallState::Sending(msg)) = (call.target, call.state) {
                self.endpoint.cancel(peer, msg);
            }
            call.state = CallState::Resolving;
            call.target = Target::Local;
            self.calls.map.insert(id, call);
            debug!(call = %tag, "failing over to the next address");
            self.send_to_next(now, id, Some(failure));
        }
    }

    /// End a call with its one outcome and tell the app. The peer's side
    /// is left alone: it answered, restarted, or is unreachable.
    pub(super) fn finish_call(
        &mut self,
        now: Instant,
        id: CallId,
        result: Result<Vec<u8>, Failure>,
    ) {
        self.end_call(now, id, result, false);
    }

    /// This side stops waiting (its deadline passed, or it is shutting
    /// down): end the call with `failure` and stop the request wherever it
    /// is — no more retransmissions, and the serving daemon told to drop the
    /// work.
    pub(super) fn give_up_call(&mut self, now: Instant, id: CallId, failure: Failure) {
        self.end_call(now, id, Err(failure), true);
    }

    fn end_call(
        &mut self,
        now: Instant,
        id: CallId,
        result: Result<Vec<u8>, Failure>,
        stop_remote: bool,
    ) {
        let code = match &result {
            Ok(_) => "ok",
            Err(f) => f.code.as_str(),
        };
        self.watch_attempt_ended(now, id, code);
        let Some(mut call) = self.calls.map.remove(&id) else {
            return;
        };
        let trace = call
            .watch
            .take()
            .and_then(|w| self.watch_ended(now, id, *w, &result));
        self.unlink_call(id, &call);
        if stop_remote {
            self.stop_remote_work(now, id, &call);
        }
        if call.state == CallState::Local {
            self.local_call_ended(id);
        }
        let code = match &result {
            Ok(_) => "ok",
            Err(f) => f.code.as_str(),
        };
        self.calls.count(call.target, code);
        let latency = now.saturating_duration_since(call.started);
        let window = self.settings.metrics.window();
        (self.calls.figures).record(now, &call.function, code, latency, window);
        let what = match &result {
            Ok(_) => "answered",
            Err(f) if f.code == ErrorCode::DeadlineExceeded => "timed out",
            Err(_) => "failed",
        };
        debug!(call = %self.call_tag(peer_of(call.target), id), outcome = code, "call {what}");
        let msg = match result {
            Ok(data) => DaemonMsg::CallOk {
                id: call.client_id,
                data,
                trace,
            },
            Err(f) => DaemonMsg::Failed {
                id: call.client_id,
                code: f.code,
                message: f.message,
                trace,
            },
        };
        self.frame(call.app, msg);
    }

    /// The app cancelled its call `client_id` (`cancel_call`): end it now with
    /// `cancelled`, freeing its slot, and stop the work wherever it runs (a
    /// `cancel` envelope to the serving daemon, or `cancel` to the local
    /// serving app). A call that already ended is not found: nothing to do.
    pub(super) fn cancel_call(&mut self, now: Instant, app: ConnId, client_id: u64) {
        let Some(calls) = self.apps.get(app).map(|a| &a.calls) else {
            return;
        };
        // At most `calls_per_connection_max` entries.
        let found = calls.iter().copied().find(|id| {
            self.calls
                .get(*id)
                .is_some_and(|c| c.client_id == client_id)
        });
        let Some(id) = found else {
            debug!(conn = %app, client_id, "cancel for no pending call ignored");
            return;
        };
        debug!(call = %self.call_tag(None, id), "call cancelled by the app");
        self.give_up_call(
            now,
            id,
            Failure::new(ErrorCode::Cancelled, "cancelled by the caller"),
        );
    }

    /// The calling app went away: forget the call without an outcome, and
    /// stop the work it started wherever it runs.
    pub(super) fn abandon_call(&mut self, now: Instant, id: CallId) {
        // Frees what the transport counted for a traced request.
        self.watch_attempt_ended(now, id, "abandoned");
        let Some(call) = self.calls.map.remove(&id) else {
            return;
        };
        self.unlink_call(id, &call);
        debug!(call = %self.call_tag(peer_of(call.target), id), "call abandoned: the calling app is gone");
        self.stop_remote_work(now, id, &call);
        if call.state == CallState::Local {
            self.local_call_ended(id);
        }
    }

    /// Cancel a request in flight to a peer and tell the peer's daemon to
    /// drop the work: the request may have been delivered even if it was
    /// not acknowledged yet.
    fn stop_remote_work(&mut self, now: Instant, id: CallId, call: &Call) {
        let Target::Remote(peer) = call.target else {
            return;
        };
        if let CallState::Sending(msg) = call.state {
            self.endpoint.cancel(peer, msg);
        }
        if matches!(call.state, CallState::Sending(_) | CallState::Awaiting) {
            let cancel = Envelope::Cancel { call_id: id.0 };
            if let Err(e) = self.endpoint.send(now, peer, cancel.encode()) {
                debug!(%peer, error = %e, "cannot send a cancel");
            }
        }
    }

    fn unlink_call(&mut self, id: CallId, call: &Call) {
        if let Some(a) = self.apps.get_mut(call.app) {
            a.calls.remove(&id);
        }
        self.detach_peer(id, call);
    }

    /// Undo what sending to a peer set up: the indexes, and the peer's hold
    /// when this was its last call.
    fn detach_peer(&mut self, id: CallId, call: &Call) {
        if let Target::Remote(peer) = call.target {
            if let CallState::Sending(msg) = call.state {
                self.calls.by_msg.remove(&(peer, msg));
            }
            if self.calls.remove_from_peer(peer, id) {
                self.endpoint.release(peer);
            }
        }
    }
}

/// The peer a call was sent to, if it was.
fn peer_of(target: Target) -> Option<SocketAddr> {
    match target {
        Target::Remote(peer) => Some(peer),
        Target::Local => None,
    }
}
