//! Name lookups: handed to the shell's resolver as [`Output::Lookup`] and
//! answered through [`Router::handle_lookup`]. The router bounds how many
//! are pending, so the resolver's queue can never be the one to refuse.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rpcd_client::ipc::{ErrorCode, NameEntry, SrvEntry, SrvRecordEntry};

use super::builtins;
use super::srv::{self, SrvCache, SrvRecord};
use super::targets;
use super::types::{
    CallId, Failure, LookupAnswer, LookupId, LookupRequest, Origin, Output, Resolved,
};
use super::Router;
use crate::settings;

/// Lookups waiting for the resolver; beyond this, callers get `overloaded`.
pub const LOOKUPS_PENDING_MAX: usize = 1024;

/// The ChaCha stream of the SRV order: not the transport's (stream 0 of
/// the same seed), so an order a peer can observe tells nothing of its keys.
const SRV_RNG_STREAM: u64 = 0x0053_5256; // "SRV"

/// What a lookup was for.
#[derive(Debug)]
enum LookupFor {
    Call { call: CallId, plan: Vec<Step> },
    Names { origin: Origin, table: Vec<NameRow> },
}

/// One target on the way to addresses.
#[derive(Debug)]
enum Step {
    /// An `srv:` target whose answer is fresh in the cache.
    Cached(String),
    /// Asked of the resolver: the next result of the answer is its.
    Asked(String),
}

/// One row of `rpcd.names`: the name, its targets as configured, and the
/// lookups of each (a peer's name stands for its addresses).
#[derive(Debug)]
struct NameRow {
    name: String,
    targets: Vec<String>,
    steps: Vec<Vec<Step>>,
}

/// Pending lookups, the SRV cache and the RNG of the SRV order.
#[derive(Debug)]
pub(super) struct Lookups {
    pending: HashMap<LookupId, LookupFor>,
    next: u64,
    srv: SrvCache,
    rng: ChaCha20Rng,
}

impl Lookups {
    /// No lookups yet; the SRV order drawn from `seed` (the incarnation's).
    pub(super) fn new(seed: [u8; 32]) -> Lookups {
        let mut rng = ChaCha20Rng::from_seed(seed);
        rng.set_stream(SRV_RNG_STREAM);
        Lookups {
            pending: HashMap::new(),
            next: 0,
            srv: SrvCache::default(),
            rng,
        }
    }
}

impl Router {
    /// Resolve a call's target strings: `srv:` ones from the cache while
    /// fresh, the rest through the resolver.
    pub(super) fn lookup_for_call(&mut self, now: Instant, call: CallId, targets: Vec<String>) {
        let plan: Vec<Step> = targets.into_iter().map(|t| self.step(t, now)).collect();
        let ask = asked(plan.iter());
        if ask.is_empty() {
            self.call_resolved(now, call, plan, Vec::new());
        } else if !self.start_lookup(ask, LookupFor::Call { call, plan }) {
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

    /// `rpcd.names`: the naming table, resolved now, and the SRV names
    /// called directly that the cache holds.
    pub(super) fn lookup_names(&mut self, now: Instant, origin: Origin) {
        let mut rows: Vec<(String, Vec<String>)> = self
            .settings
            .names
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let listed: HashSet<String> = rows
            .iter()
            .flat_map(|(_, t)| t.iter().map(|t| t.to_ascii_lowercase()))
            .collect();
        for name in self.lookups.srv.names() {
            let t = format!("{}{name}", settings::dns::SRV_PREFIX);
            if !listed.contains(&t) {
                rows.push((t.clone(), vec![t]));
            }
        }
        let mut table = Vec::with_capacity(rows.len());
        for (name, targets) in rows {
            // A peer without addresses looks nothing up; the settings
            // refuse such a name anyway.
            let steps = targets
                .iter()
                .map(|e| {
                    targets::expand(e, &self.settings.peers)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| self.step(t, now))
                        .collect()
                })
                .collect();
            table.push(NameRow {
                name,
                targets,
                steps,
            });
        }
        let ask = asked(table.iter().flat_map(|r| r.steps.iter().flatten()));
        if ask.is_empty() {
            self.names_resolved(now, origin, table, Vec::new());
        } else if !self.start_lookup(ask, LookupFor::Names { origin, table }) {
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
            Some(LookupFor::Call { call, plan }) if self.call_is_resolving(call) => {
                self.call_resolved(now, call, plan, answer.results);
            }
            Some(LookupFor::Names { origin, table }) => {
                self.names_resolved(now, origin, table, answer.results);
            }
            Some(LookupFor::Call { .. }) | None => {}
        }
    }

    /// How `target` gets its addresses now.
    fn step(&self, target: String, now: Instant) -> Step {
        match settings::srv_target(&target) {
            Some(Ok(name)) if self.lookups.srv.fresh(name, now).is_some() => Step::Cached(target),
            _ => Step::Asked(target),
        }
    }

    /// Keep a fresh SRV answer for its TTL.
    fn srv_store(&mut self, target: &str, answer: &srv::SrvAnswer, now: Instant) {
        if let Some(Ok(name)) = settings::srv_target(target) {
            let max = self.settings.dns.cache_max;
            self.lookups.srv.insert(name, answer, now, max);
        }
    }

    /// The cached records of an `srv:` target.
    fn srv_cached(&self, target: &str) -> Option<&srv::Cached> {
        match settings::srv_target(target) {
            Some(Ok(name)) => self.lookups.srv.get(name),
            _ => None,
        }
    }

    /// The plan's addresses, in order: to the call, or its failure.
    fn call_resolved(
        &mut self,
        now: Instant,
        call: CallId,
        plan: Vec<Step>,
        results: Vec<Result<Resolved, String>>,
    ) {
        let mut results = results.into_iter();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for step in plan {
            match step {
                Step::Cached(t) => {
                    let records = self.srv_cached(&t).map(|c| c.records.clone());
                    let records = records.unwrap_or_default();
                    addrs.extend(srv::order(&records, &mut self.lookups.rng));
                }
                Step::Asked(t) => match results.next() {
                    Some(Ok(Resolved::Addr(a))) => addrs.push(a),
                    Some(Ok(Resolved::Srv(answer))) => {
                        self.srv_store(&t, &answer, now);
                        addrs.extend(srv::order(&answer.records, &mut self.lookups.rng));
                    }
                    Some(Err(e)) => errors.push(e),
                    None => errors.push(format!("{t}: no answer from the resolver")),
                },
            }
        }
        if addrs.is_empty() {
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

    /// Answer `rpcd.names` with what the table's lookups found.
    fn names_resolved(
        &mut self,
        now: Instant,
        origin: Origin,
        table: Vec<NameRow>,
        results: Vec<Result<Resolved, String>>,
    ) {
        let mut results = results.into_iter();
        let mut entries = Vec::with_capacity(table.len());
        for row in table {
            let mut e = NameEntry::default();
            e.name = row.name;
            e.targets = row.targets;
            for step in row.steps.into_iter().flatten() {
                match step {
                    Step::Cached(t) => {
                        if let Some(c) = self.srv_cached(&t) {
                            show_srv(
                                &mut e,
                                t,
                                &c.records,
                                now.saturating_duration_since(c.fetched),
                                c.expires.saturating_duration_since(now),
                            );
                        }
                    }
                    Step::Asked(t) => match results.next() {
                        Some(Ok(Resolved::Addr(a))) => e.resolved.push(a.to_string()),
                        Some(Ok(Resolved::Srv(answer))) => {
                            self.srv_store(&t, &answer, now);
                            show_srv(&mut e, t, &answer.records, Duration::ZERO, answer.ttl);
                        }
                        Some(Err(err)) => e.errors.push(err),
                        None => {}
                    },
                }
            }
            entries.push(e);
        }
        self.answer(now, origin, Ok(builtins::encode(&entries)));
    }
}

/// The targets of `steps` to ask the resolver for.
fn asked<'a>(steps: impl Iterator<Item = &'a Step>) -> Vec<String> {
    steps
        .filter_map(|s| match s {
            Step::Asked(t) => Some(t.clone()),
            Step::Cached(_) => None,
        })
        .collect()
}

/// An SRV answer in a names entry: its records, and their addresses (by
/// priority, as DNS listed them within one) among the entry's resolved ones.
fn show_srv(
    e: &mut NameEntry,
    target: String,
    records: &[SrvRecord],
    age: Duration,
    left: Duration,
) {
    let mut by_priority: Vec<&SrvRecord> = records.iter().collect();
    by_priority.sort_by_key(|r| r.priority);
    for r in by_priority {
        e.resolved.extend(
            r.addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, r.port).to_string()),
        );
    }
    let mut s = SrvEntry::default();
    s.target = target;
    s.age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    s.ttl_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    s.records = records
        .iter()
        .map(|r| {
            let mut x = SrvRecordEntry::default();
            x.target = r.target.clone();
            x.port = r.port;
            x.priority = r.priority;
            x.weight = r.weight;
            x.addresses = r.addrs.iter().map(ToString::to_string).collect();
            x
        })
        .collect();
    e.srv.push(s);
}
