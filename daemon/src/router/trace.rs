//! What the router records of a call for `call --trace` and for monitors
//! (`docs/ipc-protocol.md` §5, §8): only for calls someone watches, so an
//! unwatched call costs one check of an empty table.
//!
//! An outgoing call carries a [`Watch`] from `start_call` to its outcome; each
//! address its request went to is one attempt, closed with the transport's
//! count of the request's datagrams (`Endpoint::trace_message`). A request
//! served here is an entry in [`Served`] from its delivery to its answer; for
//! a traced one the answer carries a [`ServingTrace`] back to the caller.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{CallTrace, MonitorEvent, ServingTrace, TraceAttempt};
use rpcd_transport::MsgId;

use super::types::{CallId, Failure, Origin};
use super::Router;

/// A watched outgoing call.
#[derive(Debug)]
pub(super) struct Watch {
    pub started: Instant,
    pub function: String,
    pub target: String,
    pub args_bytes: usize,
    /// Only when the app asked for a trace.
    pub trace: Option<Box<CallTrace>>,
    /// The request message of the open attempt, to take its count.
    pub msg: Option<(SocketAddr, MsgId)>,
    /// The address of the open attempt, for the monitor's `peer`.
    pub address: Option<String>,
}

/// A call served here that someone watches.
#[derive(Debug)]
pub(super) struct ServedCall {
    pub received: Instant,
    pub invoked: Option<Instant>,
    pub function: String,
    pub args_bytes: usize,
    /// The caller asked for the serving part of a trace.
    pub traced: bool,
}

/// Calls served here that someone watches, by origin.
pub(super) type Served = HashMap<Origin, ServedCall>;

impl Router {
    /// Whether an outgoing call must carry a watch.
    pub(super) fn watching(&self, trace: bool) -> bool {
        trace || self.monitors.is_active()
    }

    /// A watched call started: tell the monitors.
    pub(super) fn watch_started(&mut self, now: Instant, id: CallId, watch: &Watch) {
        if !self.monitors.is_active() {
            return;
        }
        let mut e = self.event_base(now, "start", "out");
        e.call = self.call_tag(None, id).to_string();
        e.function = watch.function.clone();
        e.peer = watch.target.clone();
        e.args_bytes = watch.args_bytes as u64;
        self.monitor_event(e, &[watch.target.as_str()]);
    }

    /// The call's addresses are known.
    pub(super) fn watch_addresses(&mut self, now: Instant, id: CallId, addrs: &[SocketAddr]) {
        if let Some(t) = self.trace_of(id) {
            let started = t.0;
            let tr = t.1;
            tr.addresses = addrs.iter().map(ToString::to_string).collect();
            tr.resolve_us = micros(now.saturating_duration_since(started));
        }
    }

    /// The request went to `address` (None: served by this daemon).
    pub(super) fn watch_sent(&mut self, now: Instant, id: CallId, to: Option<(SocketAddr, MsgId)>) {
        if let (true, Some((peer, msg))) = (self.call_traced(id), to) {
            self.endpoint.trace_message(peer, msg);
        }
        let Some(w) = self.calls.get_mut(id).and_then(|c| c.watch.as_mut()) else {
            return;
        };
        let address = to.map_or_else(|| "local".to_owned(), |(a, _)| a.to_string());
        let start_us = micros(now.saturating_duration_since(w.started));
        w.msg = to;
        if let Some(tr) = w.trace.as_mut() {
            let mut a = TraceAttempt::default();
            a.address = address.clone();
            a.start_us = start_us;
            tr.attempts.push(a);
        }
        w.address = Some(address);
    }

    /// The open attempt ended with `outcome` (`ok` or a code): fill in what
    /// the transport counted for its request.
    pub(super) fn watch_attempt_ended(&mut self, now: Instant, id: CallId, outcome: &str) {
        let Some(w) = self.calls.get_mut(id).and_then(|c| c.watch.as_mut()) else {
            return;
        };
        let msg = w.msg.take();
        let started = w.started;
        let Some(tr) = w.trace.as_mut() else { return };
        let Some(a) = tr.attempts.last_mut().filter(|a| a.outcome.is_empty()) else {
            return;
        };
        let since = |t: Instant| micros(t.saturating_duration_since(started));
        a.outcome = outcome.to_owned();
        a.end_us = since(now);
        if let Some(m) = msg.and_then(|(peer, msg)| self.endpoint.take_message_trace(peer, msg)) {
            a.datagrams = m.datagrams.into();
            a.retransmissions = m.retransmissions.into();
            if let Some(first) = m.first_sent {
                a.queued_us = since(first).saturating_sub(a.start_us);
            }
            a.acked_us = m.acked.map_or(0, since);
            a.rtt_us = m.rtt_samples.into_iter().map(micros).collect();
        }
    }

    /// The serving daemon's part arrived with the reply.
    pub(super) fn watch_serving(&mut self, id: CallId, serving: Option<ServingTrace>) {
        if let (Some(s), Some(t)) = (serving, self.trace_of(id)) {
            t.1.serving = Some(s);
        }
    }

    /// The call ended: the trace for the app (when it asked), and the
    /// monitors told.
    pub(super) fn watch_ended(
        &mut self,
        now: Instant,
        id: CallId,
        mut watch: Watch,
        result: &Result<Vec<u8>, Failure>,
    ) -> Option<Box<CallTrace>> {
        let code = match result {
            Ok(_) => "ok",
            Err(f) => f.code.as_str(),
        };
        if let Some(tr) = watch.trace.as_mut() {
            tr.total_us = micros(now.saturating_duration_since(watch.started));
        }
        if self.monitors.is_active() {
            let mut e = self.event_base(now, "end", "out");
            let peer = watch.address.as_deref().map(|a| watch.address_of(a));
            let sent_to = watch.address.as_deref().and_then(|a| a.parse().ok());
            e.call = self.call_tag(sent_to, id).to_string();
            e.function = std::mem::take(&mut watch.function);
            e.peer = peer.unwrap_or_else(|| watch.target.clone());
            e.args_bytes = watch.args_bytes as u64;
            e.reply_bytes = result.as_ref().map_or(0, |b| b.len() as u64);
            e.code = code.to_owned();
            e.duration_us = micros(now.saturating_duration_since(watch.started));
            let addr = watch.address.clone().unwrap_or_default();
            self.monitor_event(e, &[watch.target.as_str(), addr.as_str()]);
        }
        watch.trace
    }

    /// A request to be served here arrived; watched when it asks for a
    /// trace or a monitor is on.
    pub(super) fn served_received(
        &mut self,
        now: Instant,
        origin: Origin,
        function: &str,
        args_bytes: usize,
        traced: bool,
    ) {
        if !traced && !self.monitors.is_active() {
            return;
        }
        self.served.insert(
            origin,
            ServedCall {
                received: now,
                invoked: None,
                function: function.to_owned(),
                args_bytes,
                traced,
            },
        );
        if let (true, Origin::Remote { peer, .. }) = (self.monitors.is_active(), origin) {
            let mut e = self.event_base(now, "start", "in");
            e.call = self.origin_tag(origin).to_string();
            e.function = function.to_owned();
            e.peer = peer.to_string();
            e.args_bytes = args_bytes as u64;
            let from = e.peer.clone();
            self.monitor_event(e, &[from.as_str()]);
        }
    }

    /// The request was handed to its serving app.
    pub(super) fn served_invoked(&mut self, now: Instant, origin: Origin) {
        if let Some(s) = self.served.get_mut(&origin) {
            s.invoked = Some(now);
        }
    }

    /// The request served here ended (answered, or withdrawn with `code`):
    /// the serving part of its trace, if it asked for one.
    pub(super) fn served_ended(
        &mut self,
        now: Option<Instant>,
        origin: Origin,
        result: Result<usize, &str>,
    ) -> Option<ServingTrace> {
        if self.served.is_empty() {
            return None;
        }
        let s = self.served.remove(&origin)?;
        if let (true, Origin::Remote { peer, .. }) = (self.monitors.is_active(), origin) {
            let mut e = self.event_base(now.unwrap_or(s.received), "end", "in");
            e.call = self.origin_tag(origin).to_string();
            e.function = s.function.clone();
            e.peer = peer.to_string();
            e.args_bytes = s.args_bytes as u64;
            e.reply_bytes = result.map_or(0, |n| n as u64);
            e.code = result.err().unwrap_or("ok").to_owned();
            e.duration_us = now.map_or(0, |t| micros(t.saturating_duration_since(s.received)));
            let from = e.peer.clone();
            self.monitor_event(e, &[from.as_str()]);
        }
        let now = now?;
        s.traced.then(|| {
            let invoked = s.invoked.unwrap_or(s.received);
            ServingTrace::new(
                micros(invoked.saturating_duration_since(s.received)),
                micros(now.saturating_duration_since(invoked)),
                micros(now.saturating_duration_since(s.received)),
            )
        })
    }

    /// Whether the app asked for `call`'s trace.
    pub(super) fn call_traced(&self, call: CallId) -> bool {
        self.calls
            .get(call)
            .and_then(|c| c.watch.as_ref())
            .is_some_and(|w| w.trace.is_some())
    }

    /// The call's start and trace, when it is traced.
    fn trace_of(&mut self, id: CallId) -> Option<(Instant, &mut CallTrace)> {
        let w = self.calls.get_mut(id)?.watch.as_mut()?;
        let started = w.started;
        w.trace.as_deref_mut().map(|t| (started, t))
    }

    fn event_base(&self, now: Instant, kind: &str, direction: &str) -> MonitorEvent {
        let mut e = MonitorEvent::default();
        e.kind = kind.to_owned();
        e.direction = direction.to_owned();
        e.time_us = micros(now.saturating_duration_since(self.started));
        e
    }
}

impl Watch {
    /// `target -> address`, or the address alone when the app named it.
    fn address_of(&self, address: &str) -> String {
        if self.target == address {
            address.to_owned()
        } else {
            format!("{} -> {address}", self.target)
        }
    }
}

/// Whole microseconds, saturating.
pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
