//! Name lookups: handed to the shell's resolver as [`Output::Lookup`] and
//! answered through [`Router::handle_lookup`]. The router bounds how many
//! are pending, so the resolver's queue can never be the one to refuse.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rpcd_client::ipc::{ErrorCode, NameEntry};

use super::builtins;
use super::targets;
use super::types::{CallId, Failure, LookupAnswer, LookupId, LookupRequest, Origin, Output};
use super::Router;

/// Lookups waiting for the resolver; beyond this, callers get `overloaded`.
pub const LOOKUPS_PENDING_MAX: usize = 1024;

/// What a lookup was for.
#[derive(Debug)]
enum LookupFor {
    Call(CallId),
    Names { origin: Origin, table: Vec<NameRow> },
}

/// One row of `rpcd.names`: the name, its targets as configured, and the
/// `host:port` strings looked up for each (a peer's name stands for its
/// addresses).
#[derive(Debug)]
struct NameRow {
    name: String,
    targets: Vec<String>,
    lookups: Vec<Vec<String>>,
}

/// Pending lookups.
#[derive(Debug, Default)]
pub(super) struct Lookups {
    pending: HashMap<LookupId, LookupFor>,
    next: u64,
}

impl Router {
    /// Resolve a call's target strings.
    pub(super) fn lookup_for_call(&mut self, now: Instant, call: CallId, targets: Vec<String>) {
        if !self.start_lookup(targets, LookupFor::Call(call)) {
            self.finish_call(
                now,
                call,
                Err(Failure::new(
                    ErrorCode::Overloaded,
                    "too many name lookups pending",
                )),
            );
        }
    }

    /// `rpcd.names`: the naming table, resolved now.
    pub(super) fn lookup_names(&mut self, now: Instant, origin: Origin) {
        let peers = &self.settings.peers;
        let table: Vec<NameRow> = self
            .settings
            .names
            .iter()
            .map(|(n, t)| NameRow {
                name: n.clone(),
                targets: t.clone(),
                // A peer without addresses looks nothing up; the settings
                // refuse such a name anyway.
                lookups: t
                    .iter()
                    .map(|e| targets::expand(e, peers).unwrap_or_default())
                    .collect(),
            })
            .collect();
        if table.is_empty() {
            self.answer(now, origin, Ok(builtins::encode(&Vec::<NameEntry>::new())));
            return;
        }
        let targets = table
            .iter()
            .flat_map(|r| r.lookups.iter().flatten().cloned())
            .collect();
        if !self.start_lookup(targets, LookupFor::Names { origin, table }) {
            self.answer(
                now,
                origin,
                Err(Failure::new(
                    ErrorCode::Overloaded,
                    "too many name lookups pending",
                )),
            );
        }
    }

    /// True while an `rpcd.names` lookup waits for the resolver: work a
    /// graceful shutdown must answer.
    pub(super) fn names_lookup_pending(&self) -> bool {
        self.lookups
            .pending
            .values()
            .any(|p| matches!(p, LookupFor::Names { .. }))
    }

    /// Shutting down: answer every `rpcd.names` still waiting for the
    /// resolver with `shutting_down`.
    pub(super) fn fail_pending_names(&mut self, now: Instant) {
        let ids: Vec<LookupId> = self
            .lookups
            .pending
            .iter()
            .filter(|(_, p)| matches!(p, LookupFor::Names { .. }))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(LookupFor::Names { origin, .. }) = self.lookups.pending.remove(&id) {
                let f = Failure::new(
                    ErrorCode::ShuttingDown,
                    "the serving daemon is shutting down",
                );
                self.answer(now, origin, Err(f));
            }
        }
    }

    fn start_lookup(&mut self, targets: Vec<String>, purpose: LookupFor) -> bool {
        if self.lookups.pending.len() >= LOOKUPS_PENDING_MAX {
            return false;
        }
        self.lookups.next += 1;
        let id = LookupId(self.lookups.next);
        self.lookups.pending.insert(id, purpose);
        self.outputs
            .push_back(Output::Lookup(LookupRequest { id, targets }));
        true
    }

    pub(super) fn on_lookup(&mut self, now: Instant, answer: LookupAnswer) {
        match self.lookups.pending.remove(&answer.id) {
            Some(LookupFor::Call(call)) => {
                if !self.call_is_resolving(call) {
                    return;
                }
                let (addrs, errors): (Vec<_>, Vec<_>) =
                    answer.results.into_iter().partition(Result::is_ok);
                let addrs: Vec<SocketAddr> = addrs.into_iter().flatten().collect();
                if addrs.is_empty() {
                    let errors: Vec<String> = errors.into_iter().filter_map(Result::err).collect();
                    self.finish_call(
                        now,
                        call,
                        Err(Failure::new(
                            ErrorCode::PeerUnreachable,
                            format!("no address resolved: {}", errors.join("; ")),
                        )),
                    );
                } else {
                    self.call_addresses(now, call, addrs);
                }
            }
            Some(LookupFor::Names { origin, table }) => {
                let mut results = answer.results.into_iter();
                let entries: Vec<NameEntry> = table
                    .into_iter()
                    .map(|row| {
                        let mut e = NameEntry::default();
                        e.name = row.name;
                        e.targets = row.targets;
                        for _ in row.lookups.iter().flatten() {
                            match results.next() {
                                Some(Ok(a)) => e.resolved.push(a.to_string()),
                                Some(Err(err)) => e.errors.push(err),
                                None => {}
                            }
                        }
                        e
                    })
                    .collect();
                self.answer(now, origin, Ok(builtins::encode(&entries)));
            }
            None => {}
        }
    }
}
