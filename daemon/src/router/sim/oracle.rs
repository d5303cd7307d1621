//! What the simulated apps saw, and the properties it must have: every `ok`
//! is one execution's own result, nothing non-idempotent runs twice, a
//! definite failure ran nowhere, every call ends by its deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rpcd_client::ipc::ErrorCode;

/// How long after its deadline a call may end: the router fires deadlines
/// from its own timer heap, which the simulation runs exactly on time, so
/// any lateness beyond this is a deadline the router missed.
pub const DEADLINE_SLACK: Duration = Duration::from_millis(1);

/// What a call asks for, which decides what may happen to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `kv.put` (not idempotent) on another node.
    Put,
    /// `kv.put` on the caller's own daemon (served without UDP).
    LocalPut,
    /// Idempotent `kv.get` through a name with a dead address and the other nodes.
    NamedGet,
    /// A function nobody registers: can never run.
    Unknown,
    /// `deadline_ms` 0: refused before it is sent.
    ZeroDeadline,
    /// The built-in `rpcd.ping`: answered by the daemon, no app runs.
    Ping,
    /// After the network healed: must succeed.
    Probe,
}

/// How the serving app answers an invocation (drawn per nonce and node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Ok,
    AppError,
    /// Never answers: the call ends by its deadline, a cancel or a fault.
    Hold,
}

/// One execution: an `invoke` a serving app received.
#[derive(Debug, Clone)]
pub struct Exec {
    pub node: usize,
    pub at: Instant,
    pub plan: Plan,
}

/// One call an app made.
#[derive(Debug, Clone)]
pub struct CallRec {
    pub kind: Kind,
    pub caller_node: usize,
    pub target: String,
    pub function: String,
    pub idempotent: bool,
    pub issued: Instant,
    pub deadline: Instant,
    /// When the caller sent `cancel_call` while the call was pending.
    pub cancelled: Option<Instant>,
    pub outcome: Option<(Instant, Result<Vec<u8>, ErrorCode>)>,
    /// When the caller's connection ended (closed, or its daemon crashed)
    /// with the call pending: no outcome is owed.
    pub lost: Option<Instant>,
}

/// The result a serving app returns for `nonce`: it names the call and
/// the node that ran it, so a reply delivered to the wrong call shows.
pub fn result_bytes(nonce: u64, node: usize, function: &str) -> Vec<u8> {
    rmp_serde::to_vec(&(nonce, node as u64, function)).expect("a tuple encodes")
}

#[derive(Debug, Default)]
pub struct Oracle {
    pub calls: BTreeMap<u64, CallRec>,
    pub execs: BTreeMap<u64, Vec<Exec>>,
    pub violations: Vec<String>,
    /// Idempotent calls that ran more than once (allowed: they failed over).
    pub reruns: u64,
    /// Idempotent calls that ran at one address, failed over, and ended with
    /// a definite failure from the next (allowed for idempotent calls).
    pub definite_after_failover: u64,
    /// Frames for a connection that had closed (the shell drops them).
    pub frames_after_close: u64,
    /// Latest end relative to a deadline seen (for the report).
    pub max_overshoot: Duration,
}

impl Oracle {
    pub fn issue(&mut self, nonce: u64, rec: CallRec) {
        let prev = self.calls.insert(nonce, rec);
        assert!(prev.is_none(), "nonces are unique");
    }

    pub fn executed(&mut self, nonce: u64, exec: Exec) {
        if !self.calls.contains_key(&nonce) {
            self.violations.push(format!(
                "an invocation for nonce {nonce}, which no app called"
            ));
        }
        self.execs.entry(nonce).or_default().push(exec);
    }

    /// A caller received its call's one outcome.
    pub fn ended(&mut self, nonce: u64, now: Instant, outcome: Result<Vec<u8>, ErrorCode>) {
        let Some(c) = self.calls.get_mut(&nonce) else {
            self.violations
                .push(format!("an outcome for call {nonce}, which no app made"));
            return;
        };
        if let Some((at, first)) = &c.outcome {
            self.violations.push(format!(
                "call {nonce} ended twice: {:?} at {at:?}, then {:?}",
                brief(first),
                brief(&outcome)
            ));
            return;
        }
        if c.lost.is_some() {
            self.violations.push(format!(
                "call {nonce} ended after its caller's connection closed"
            ));
            return;
        }
        c.outcome = Some((now, outcome));
    }

    /// The caller's connection ended: its pending calls owe no outcome.
    pub fn lost(&mut self, nonce: u64, now: Instant) {
        if let Some(c) = self.calls.get_mut(&nonce) {
            if c.outcome.is_none() {
                c.lost = Some(now);
            }
        }
    }

    pub fn is_pending(&self, nonce: u64) -> bool {
        self.calls
            .get(&nonce)
            .is_some_and(|c| c.outcome.is_none() && c.lost.is_none())
    }

    /// Check every call against every execution; `start` is time zero of
    /// the messages.
    pub fn check(&mut self, start: Instant) {
        let mut found = Vec::new();
        let (mut reruns, mut definite_after_failover) = (0, 0);
        let mut max_overshoot = self.max_overshoot;
        for (&nonce, c) in &self.calls {
            let execs = self.execs.get(&nonce).map_or(&[][..], Vec::as_slice);
            let at = |t: Instant| t.saturating_duration_since(start);
            let mut bad = |what: String| {
                found.push(format!(
                    "call {nonce} ({:?} {} → {} from node {}, issued at {:?}): {what}; executions {:?}",
                    c.kind,
                    c.function,
                    c.target,
                    c.caller_node,
                    at(c.issued),
                    execs.iter().map(|e| (e.node, at(e.at), e.plan)).collect::<Vec<_>>()
                ))
            };
            // At most once: anywhere if not idempotent, per node if it is.
            let mut per_node = BTreeMap::new();
            for e in execs {
                *per_node.entry(e.node).or_insert(0u32) += 1;
            }
            if per_node.values().any(|&n| n > 1) || (!c.idempotent && execs.len() > 1) {
                bad(format!("ran {} times", execs.len()));
            }
            if c.idempotent && execs.len() > 1 {
                reruns += 1;
            }
            let builtin = c.function.starts_with("rpcd.");
            if (builtin || matches!(c.kind, Kind::Unknown | Kind::ZeroDeadline))
                && !execs.is_empty()
            {
                bad("a call no app could serve ran".into());
            }
            if c.kind == Kind::ZeroDeadline
                && !matches!(&c.outcome, Some((t, Err(ErrorCode::DeadlineExceeded))) if *t == c.issued)
            {
                bad(format!(
                    "deadline_ms 0 ended {:?}, not refused at once",
                    c.outcome.as_ref().map(|(t, o)| (at(*t), brief(o)))
                ));
            }
            let Some((ended, outcome)) = &c.outcome else {
                if c.lost.is_none() {
                    bad("never ended".into());
                }
                continue;
            };
            let late = ended.saturating_duration_since(c.deadline);
            max_overshoot = max_overshoot.max(late);
            if late > DEADLINE_SLACK {
                bad(format!("ended {late:?} after its deadline"));
            }
            if let Some(t) = c.cancelled {
                if !(*ended == t && *outcome == Err(ErrorCode::Cancelled)) {
                    bad(format!(
                        "cancelled at {:?} but ended {:?} at {:?}",
                        at(t),
                        brief(outcome),
                        at(*ended)
                    ));
                }
            }
            match outcome {
                Ok(data) if builtin => {
                    if data.is_empty() {
                        bad("an empty ping reply".into());
                    }
                }
                Ok(data) => {
                    // Exactly one execution returned these bytes, and they are its own.
                    let mine: Vec<&Exec> = execs
                        .iter()
                        .filter(|e| {
                            e.plan == Plan::Ok && *data == result_bytes(nonce, e.node, &c.function)
                        })
                        .collect();
                    if mine.len() != 1 {
                        let said = rmp_serde::from_slice::<(u64, u64, String)>(data);
                        bad(format!(
                            "ok with {} matching executions: the reply says {said:?}",
                            mine.len()
                        ));
                    }
                }
                Err(ErrorCode::AppError) => {
                    if !execs.iter().any(|e| e.plan == Plan::AppError) {
                        bad("app_error but no execution answered an error".into());
                    }
                }
                Err(code) if !code.outcome_unknown() && !execs.is_empty() => {
                    if c.idempotent {
                        // It ran at an address the call then failed over from.
                        definite_after_failover += 1;
                    } else {
                        bad(format!("definite failure {} but it ran", code.as_str()));
                    }
                }
                Err(code) if c.kind == Kind::Probe => {
                    bad(format!("after healing, failed {}", code.as_str()));
                }
                Err(_) => {}
            }
        }
        self.violations.extend(found);
        self.reruns += reruns;
        self.definite_after_failover += definite_after_failover;
        self.max_overshoot = max_overshoot;
    }

    /// Outcomes by code, for the report.
    pub fn outcome_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for c in self.calls.values() {
            let k = match &c.outcome {
                Some((_, Ok(_))) => "ok",
                Some((_, Err(code))) => code.as_str(),
                None if c.lost.is_some() => "caller_gone",
                None => "none",
            };
            *m.entry(k).or_default() += 1;
        }
        m
    }
}

fn brief(o: &Result<Vec<u8>, ErrorCode>) -> String {
    match o {
        Ok(b) => format!("ok({} bytes)", b.len()),
        Err(c) => c.as_str().to_owned(),
    }
}
