//! Incoming work: a call (from a peer daemon or from a local app) handed to
//! the app serving the function, and its result turned into an outcome.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rpcd_client::ipc::{Credentials, DaemonMsg, ErrorCode, Outcome, LOCAL_CALLER};
use tracing::debug;

use super::builtins::{self, Builtin};
use super::policy::Want;
use super::types::{ConnId, Failure, InvId, Invoke, Origin, Output};
use super::{Deadline, Router};
use crate::payload::Payload;

/// Work handed to a serving app and not answered yet.
#[derive(Debug)]
pub(super) struct Invocation {
    pub owner: ConnId,
    pub origin: Origin,
    pub deadline: Instant,
}

/// The invocation table, indexed by origin too.
#[derive(Debug)]
pub(super) struct Invocations {
    /// Keyed by ids this daemon chooses: a fast hash.
    map: FxHashMap<InvId, Invocation>,
    /// Keyed by what a peer chooses (its call ids): the seeded default hash, as a peer that
    /// knew the hash could pick ids that all collide and make each insert walk them all.
    by_origin: HashMap<Origin, InvId>,
    next: u64,
}

impl Default for Invocations {
    fn default() -> Self {
        Invocations {
            map: FxHashMap::default(),
            by_origin: HashMap::new(),
            next: 1,
        }
    }
}

impl Invocations {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn ids(&self) -> Vec<InvId> {
        self.map.keys().copied().collect()
    }

    pub fn deadline(&self, id: InvId) -> Option<Instant> {
        self.map.get(&id).map(|i| i.deadline)
    }

    pub fn deadlines(&self) -> impl Iterator<Item = (InvId, Instant)> + '_ {
        self.map.iter().map(|(&id, i)| (id, i.deadline))
    }

    /// Invocations for calls from `peer`.
    /// Every peer some invocation in progress came from.
    pub(super) fn remote_peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.by_origin.keys().filter_map(|o| match o {
            Origin::Remote { peer, .. } => Some(*peer),
            Origin::Local { .. } => None,
        })
    }

    fn invoked_by(&self, peer: SocketAddr) -> Vec<InvId> {
        self.by_origin
            .iter()
            .filter(|(o, _)| matches!(o, Origin::Remote { peer: p, .. } if *p == peer))
            .map(|(_, &i)| i)
            .collect()
    }
}

#[cfg(test)]
impl Invocations {
    /// The origin index agrees with the table.
    pub fn check_indexes(&self) {
        assert_eq!(self.by_origin.len(), self.map.len(), "by_origin size");
        for (id, inv) in &self.map {
            assert_eq!(
                self.by_origin.get(&inv.origin),
                Some(id),
                "by_origin of {id}"
            );
        }
    }

    /// Every invocation with its serving app.
    pub fn owners(&self) -> impl Iterator<Item = (InvId, ConnId)> + '_ {
        self.map.iter().map(|(&id, i)| (id, i.owner))
    }
}

impl Router {
    /// Run `function` for `origin`: a built-in at once, a registered function
    /// through its app, else `unknown_function`.
    pub(super) fn serve(
        &mut self,
        now: Instant,
        origin: Origin,
        function: &str,
        args: Payload,
        deadline: Instant,
    ) {
        if let Origin::Remote { peer, .. } = origin {
            if let Some(want) = Want::of_call(function, &args) {
                if let Err(f) = self.check_remote(now, peer, want) {
                    return self.answer(now, origin, Err(f));
                }
            }
        }
        if let Some(b) = Builtin::parse(function) {
            debug!(call = %self.origin_tag(origin), %function, "serving a built-in");
            let result = match b {
                Builtin::Ping => Ok(builtins::ping()),
                Builtin::Echo => Ok(args.into_vec()),
                Builtin::List => Ok(builtins::encode(&self.registry.list())),
                Builtin::Stats => Ok(builtins::encode(&self.stats(now))),
                Builtin::Names => return self.lookup_names(now, origin),
                Builtin::Describe => builtins::describe_args(&args)
                    .map_err(|m| Failure::new(ErrorCode::BadRequest, m))
                    .and_then(|only| {
                        self.registry
                            .describe(only.as_deref())
                            .map(|all| builtins::encode(&all))
                            .ok_or_else(|| {
                                Failure::new(
                                    ErrorCode::UnknownFunction,
                                    format!(
                                        "no function {} is registered on {}",
                                        only.unwrap_or_default(),
                                        self.me
                                    ),
                                )
                            })
                    }),
            };
            self.answer(now, origin, result);
            return;
        }
        // Read before the origin's slot is taken (the slot borrows the table).
        let (caller, peer) = self.who_called(origin);
        let credentials = self.local_credentials(origin);
        // One lookup of the origin (a seeded hash) for the check and the insert.
        let slot = match self.invocations.by_origin.entry(origin) {
            // The same call delivered twice as two messages (an idempotent
            // call failed over to the same address): the invocation already
            // running answers it; never run it twice.
            Entry::Occupied(_) => return,
            Entry::Vacant(slot) => slot,
        };
        let Some(owner) = self.registry.owner(function) else {
            let f = Failure::new(
                ErrorCode::UnknownFunction,
                format!("no function {function} is registered on {}", self.me),
            );
            self.answer(now, origin, Err(f));
            return;
        };
        let pending = self.apps.get(owner).map_or(0, |a| a.invocations.len());
        let max = self.settings.limits.invocations_per_app_max;
        if pending >= max {
            let f = Failure::new(
                ErrorCode::Overloaded,
                format!(
                    "the app serving {function} has {pending} invocations pending (limit {max})"
                ),
            );
            self.answer(now, origin, Err(f));
            return;
        }
        let id = InvId(self.invocations.next);
        self.invocations.next += 1;
        slot.insert(id);
        self.invocations.map.insert(
            id,
            Invocation {
                owner,
                origin,
                deadline,
            },
        );
        if let Some(a) = self.apps.get_mut(owner) {
            a.invocations.insert(id);
        }
        self.arm(deadline, Deadline::Invocation(id));
        debug!(call = %self.origin_tag(origin), %function, invocation = %id, app = %owner, "invoked");
        self.served_invoked(now, origin);
        self.outputs.push_back(Output::Invoke(
            owner,
            Invoke {
                invocation: id.0,
                function: function.to_owned(),
                args,
                caller,
                peer,
                deadline_ms: deadline.saturating_duration_since(now).as_millis() as u64,
                credentials,
            },
        ));
    }

    /// For a call from an app of this daemon, the kernel's credentials of
    /// the calling process; None for a remote caller (or a caller gone).
    fn local_credentials(&self, origin: Origin) -> Option<Credentials> {
        let Origin::Local { call } = origin else {
            return None;
        };
        let app = self.calls.get(call)?.app;
        let cred = self.apps.get(app)?.cred;
        Some(Credentials::new(
            cred.uid,
            cred.gid,
            u32::try_from(cred.pid).unwrap_or(0),
        ))
    }

    /// An invocation's `caller` and `peer` (`docs/ipc-protocol.md` §6): a
    /// remote daemon's address and, once its session is authenticated, its
    /// configured name (empty in plaintext mode); `"local"` twice for an
    /// app of this daemon.
    fn who_called(&mut self, origin: Origin) -> (String, String) {
        match origin {
            Origin::Remote { peer: addr, .. } => {
                // A configured name must never pass for a local app (the
                // settings are to refuse "local" as a peer name): should one
                // get through, its caller is no more trusted than an
                // unauthenticated one.
                let name = match self.endpoint.peer_name(addr) {
                    Some(name) if name != LOCAL_CALLER => name.to_owned(),
                    _ => String::new(),
                };
                // Written as text once while the caller keeps calling.
                let text = match self.caller_texts.get(&addr) {
                    Some(text) => text.clone(),
                    None => self.caller_texts.insert(addr, addr.to_string()).clone(),
                };
                (text, name)
            }
            Origin::Local { .. } => (LOCAL_CALLER.to_owned(), LOCAL_CALLER.to_owned()),
        }
    }

    /// A serving app's `result`.
    pub(super) fn on_result(&mut self, now: Instant, app: ConnId, id: InvId, outcome: Outcome) {
        let owned = self
            .invocations
            .map
            .get(&id)
            .is_some_and(|i| i.owner == app);
        if !owned {
            // Late (deadline passed, caller gone) or not this app's.
            self.counters.late_results += 1;
            return;
        }
        let Some(inv) = self.take_invocation(id) else {
            return;
        };
        let result = match outcome {
            Outcome::Ok(bytes) => {
                let max = self.settings.payload_max();
                if bytes.len() > max {
                    Err(Failure::new(
                        ErrorCode::MessageTooLarge,
                        format!(
                            "the result of {} bytes exceeds the maximum of {max}",
                            bytes.len()
                        ),
                    ))
                } else {
                    Ok(bytes)
                }
            }
            Outcome::Error(message) => Err(Failure::new(ErrorCode::AppError, message)),
            // A code the caller may get from a refusal passes; any other (a string that is
            // no code at all was read as app_error) reaches it as app_error.
            Outcome::Refused { code, message } => match code {
                ErrorCode::Overloaded | ErrorCode::BadRequest | ErrorCode::ServerAppGone => {
                    Err(Failure::new(code, message))
                }
                ErrorCode::AppError => Err(Failure::new(ErrorCode::AppError, message)),
                other => Err(Failure::new(
                    ErrorCode::AppError,
                    format!("refused with {}: {message}", other.as_str()),
                )),
            },
        };
        self.answer(now, inv.origin, result);
    }

    /// Remove an invocation from the table and every index.
    pub(super) fn take_invocation(&mut self, id: InvId) -> Option<Invocation> {
        let inv = self.invocations.map.remove(&id)?;
        if let Some(a) = self.apps.get_mut(inv.owner) {
            a.invocations.remove(&id);
        }
        self.invocations.by_origin.remove(&inv.origin);
        Some(inv)
    }

    /// Nobody waits for this invocation any more: free its slot at once and
    /// tell the serving app to stop (a late result is dropped and counted).
    pub(super) fn withdraw(&mut self, id: InvId) {
        if let Some(inv) = self.take_invocation(id) {
            debug!(call = %self.origin_tag(inv.origin), invocation = %id, "invocation withdrawn");
            // Its caller stopped waiting: no trace goes anywhere, and the
            // monitors learn no duration (no clock here).
            self.served_ended(None, inv.origin, Err("cancelled"));
            self.cancel_frame(inv.owner, id);
        }
    }

    /// Withdraw the invocation serving `origin`, if any.
    pub(super) fn withdraw_origin(&mut self, origin: Origin) {
        if let Some(&id) = self.invocations.by_origin.get(&origin) {
            self.withdraw(id);
        }
    }

    /// `peer` restarted: its old incarnation's calls have nowhere to go.
    pub(super) fn withdraw_from_peer(&mut self, peer: SocketAddr) {
        for id in self.invocations.invoked_by(peer) {
            self.withdraw(id);
        }
    }

    /// Tell a serving app that an invocation's caller is gone.
    pub(super) fn cancel_frame(&mut self, owner: ConnId, id: InvId) {
        if self.apps.get(owner).is_some() {
            self.frame(owner, DaemonMsg::Cancel { invocation: id.0 });
        }
    }
}
