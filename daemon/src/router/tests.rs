//! Routers over an in-memory link on a moved clock: the RPC layer's
//! scenarios, run in milliseconds without a process or a socket.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{
    ClientMsg, DaemonMsg, ErrorCode, Outcome, POOLED_CAPACITY_MIN, PROTOCOL_VERSION,
};

use super::{ConnId, Incarnation, Output, PeerCred, Router};
use crate::settings::Settings;

impl Router {
    /// Every table and index agrees with every other.
    pub(crate) fn check_invariants(&self) {
        self.calls.check_indexes();
        self.invocations.check_indexes();
        for (id, app) in self.calls.apps() {
            let a = self.apps.get(app).expect("a call's app is connected");
            assert!(a.calls.contains(&id), "{app} does not list call {id}");
        }
        for (id, owner) in self.invocations.owners() {
            let a = self
                .apps
                .get(owner)
                .expect("an invocation's app is connected");
            assert!(a.invocations.contains(&id), "{owner} does not list {id}");
        }
        let (calls, invs): (usize, usize) = self.apps.iter().fold((0, 0), |(c, i), (_, a)| {
            (c + a.calls.len(), i + a.invocations.len())
        });
        assert_eq!(calls, self.calls.len(), "apps list calls that ended");
        assert_eq!(
            invs,
            self.invocations.len(),
            "apps list invocations that ended"
        );
    }
}

const A: &str = "127.0.0.1:7401";
const B: &str = "127.0.0.1:7402";
/// An address where no daemon answers.
const DEAD: &str = "127.0.0.1:7403";
const LATENCY: Duration = Duration::from_millis(2);
/// How far the virtual clock may run in one `run_until`.
const RUN_MAX: Duration = Duration::from_secs(60);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// One daemon: its router and what it said to its apps.
struct Node {
    router: Router,
    lookups: Vec<super::LookupRequest>,
    frames: Vec<(ConnId, DaemonMsg)>,
    /// Where each `invoke`'s arguments started in their buffer, in order.
    args_offsets: Vec<usize>,
    closed: Vec<ConnId>,
    transmits: u64,
}

/// Daemons on a link with a fixed latency, a clock that only the test
/// moves, and a seeded loss rate.
struct Net {
    now: Instant,
    /// Ordered, so that the seeded loss decisions do not depend on hashing.
    nodes: BTreeMap<SocketAddr, Node>,
    /// Daemons whose router finished a shutdown: gone, like an exited process.
    exited: BTreeSet<SocketAddr>,
    in_flight: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Percent of datagrams lost, decided by `rng`.
    loss: u64,
    rng: u64,
    seed: u64,
    epoch: u64,
}

impl Net {
    fn new(seed: u64, settings: impl Fn(&mut Settings)) -> Net {
        let mut net = Net {
            now: Instant::now(),
            nodes: BTreeMap::new(),
            exited: BTreeSet::new(),
            in_flight: Vec::new(),
            loss: 0,
            rng: seed | 1,
            seed,
            epoch: 100,
        };
        for a in [A, B] {
            net.start(a, &settings);
        }
        net
    }

    /// A and B, an app on each: the caller (conn 1) on A, and the server
    /// (conn 2) on B serving `kv.get`.
    fn served(seed: u64, settings: impl Fn(&mut Settings)) -> (Net, ConnId, ConnId) {
        let mut net = Net::new(seed, settings);
        let caller = net.app(A, 1);
        let server = net.app(B, 2);
        net.register(B, server, "kv.get");
        (net, caller, server)
    }

    /// (Re)start the daemon at `a` with a new epoch and no state.
    fn start(&mut self, a: &str, settings: impl Fn(&mut Settings)) {
        let mut s = Settings {
            listen: addr(a),
            ..Settings::default()
        };
        settings(&mut s);
        self.epoch += 1;
        self.exited.remove(&addr(a));
        let incarnation = Incarnation {
            epoch: self.epoch,
            seed: [0; 32],
            wall_clock: Duration::ZERO,
        };
        let router = Router::new(s, addr(a), Vec::new(), incarnation, self.now);
        self.nodes.insert(
            addr(a),
            Node {
                router,
                lookups: Vec::new(),
                frames: Vec::new(),
                args_offsets: Vec::new(),
                closed: Vec::new(),
                transmits: 0,
            },
        );
    }

    fn node(&mut self, a: &str) -> &mut Node {
        self.nodes.get_mut(&addr(a)).expect("a node of the test")
    }

    fn random(&mut self) -> u64 {
        // xorshift64: reproducible from the printed seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// An app connects to `a` and says hello.
    fn app(&mut self, a: &str, conn: u64) -> ConnId {
        let now = self.now;
        let c = ConnId(conn);
        let r = &mut self.node(a).router;
        r.handle_conn_opened(c, PeerCred::default());
        r.handle_client_msg(
            now,
            c,
            ClientMsg::Hello {
                id: 0,
                version: PROTOCOL_VERSION,
                version_min: None,
                name: format!("app{conn}"),
            },
        );
        self.settle();
        assert!(
            matches!(self.take(a, c).as_slice(), [DaemonMsg::HelloOk { .. }]),
            "hello answered"
        );
        c
    }

    fn send(&mut self, a: &str, c: ConnId, msg: ClientMsg) {
        let now = self.now;
        self.node(a).router.handle_client_msg(now, c, msg);
        self.settle();
    }

    fn register(&mut self, a: &str, c: ConnId, function: &str) {
        self.send(
            a,
            c,
            ClientMsg::Register {
                id: 1,
                function: function.into(),
                idempotent: None,
                deadline_ms: None,
                signature: None,
            },
        );
        assert_eq!(self.take(a, c), vec![DaemonMsg::Done { id: 1 }]);
    }

    fn call(
        &mut self,
        a: &str,
        c: ConnId,
        id: u64,
        target: &str,
        function: &str,
        deadline_ms: u64,
    ) {
        self.call_how(a, c, id, (target, function), false, deadline_ms);
    }

    fn call_how(
        &mut self,
        a: &str,
        c: ConnId,
        id: u64,
        (target, function): (&str, &str),
        idempotent: bool,
        deadline_ms: u64,
    ) {
        self.send(
            a,
            c,
            ClientMsg::Call {
                id,
                target: target.into(),
                function: function.into(),
                args: rmp_serde::to_vec(&id).expect("an id encodes").into(),
                deadline_ms: Some(deadline_ms),
                idempotent,
                trace: false,
            },
        );
    }

    /// Frames `a` sent to `c` since the last take.
    fn take(&mut self, a: &str, c: ConnId) -> Vec<DaemonMsg> {
        let node = self.node(a);
        let (mine, rest): (Vec<_>, Vec<_>) = node.frames.drain(..).partition(|(to, _)| *to == c);
        node.frames = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }

    /// Invocations handed to `c` so far (taking its frames).
    fn invocations(&mut self, a: &str, c: ConnId) -> Vec<u64> {
        self.take(a, c)
            .into_iter()
            .filter_map(|m| match m {
                DaemonMsg::Invoke { invocation, .. } => Some(invocation),
                _ => None,
            })
            .collect()
    }

    fn answer(&mut self, a: &str, c: ConnId, invocation: u64, bytes: Vec<u8>) {
        self.send(
            a,
            c,
            ClientMsg::Result {
                invocation,
                outcome: Outcome::Ok(bytes),
            },
        );
    }

    /// Move everything the routers produced onto the link and into the
    /// frame logs, without moving the clock.
    fn settle(&mut self) {
        let now = self.now;
        let mut sent = Vec::new();
        for (&from, node) in self.nodes.iter_mut() {
            while let Some(t) = node.router.poll_transmit(now) {
                node.transmits += 1;
                sent.push((from, t.to, t.bytes));
            }
            while let Some(o) = node.router.poll_output() {
                match o {
                    Output::Frame(c, m) => node.frames.push((c, m)),
                    Output::Invoke(c, i) => {
                        node.args_offsets.push(i.args.offset());
                        node.frames.push((c, i.into()));
                    }
                    Output::Close(c) => node.closed.push(c),
                    Output::Lookup(l) => node.lookups.push(l),
                }
            }
        }
        for node in self.nodes.values() {
            node.router.check_invariants();
        }
        for (from, to, bytes) in sent {
            if self.loss > 0 && self.random() % 100 < self.loss {
                continue;
            }
            self.in_flight.push((now + LATENCY, from, to, bytes));
        }
    }

    /// One step: deliver what is due, fire due timers, then move the clock
    /// to the next event. False when nothing is left to happen.
    fn step(&mut self) -> bool {
        self.settle();
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|d| d.0 <= now);
        self.in_flight = later;
        for (_, from, to, bytes) in due {
            if let Some(n) = self.nodes.get_mut(&to) {
                n.router.handle_datagram(now, from, &bytes);
            }
        }
        for n in self.nodes.values_mut() {
            n.router.handle_timeout(now);
        }
        self.settle();
        // A router that finished its shutdown is a daemon that exited: it
        // hears and sends nothing more.
        let finished: Vec<SocketAddr> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.router.is_finished())
            .map(|(&a, _)| a)
            .collect();
        for a in finished {
            self.nodes.remove(&a);
            self.exited.insert(a);
        }
        let next_timer = self
            .nodes
            .values_mut()
            .filter_map(|n| n.router.poll_timeout())
            .min();
        let next_delivery = self.in_flight.iter().map(|d| d.0).min();
        let next = match (next_timer, next_delivery) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        self.now = self.now.max(next);
        true
    }

    /// Run until `done` holds; panics (with the seed) after `RUN_MAX`.
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Net) -> bool) {
        let start = self.now;
        loop {
            if done(self) {
                return;
            }
            if !self.step() {
                // Nothing more will happen: one last look.
                assert!(done(self), "SEED={}: {what} never happened", self.seed);
                return;
            }
            assert!(
                self.now - start < RUN_MAX,
                "SEED={}: gave up waiting for {what} after {:?}",
                self.seed,
                self.now - start
            );
        }
    }

    /// Run the clock forward by `d`.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            if !self.step() {
                self.now = until;
            }
        }
        self.now = until;
        self.step();
    }

    /// The first frame for `c` that ends call `id`, if any yet.
    fn outcome(&mut self, a: &str, c: ConnId, id: u64) -> Option<Result<Vec<u8>, ErrorCode>> {
        let node = self.node(a);
        let pos = node.frames.iter().position(|(to, m)| {
            *to == c
                && matches!(m, DaemonMsg::CallOk { id: i, .. } | DaemonMsg::Failed { id: i, .. } if *i == id)
        })?;
        match node.frames.remove(pos).1 {
            DaemonMsg::CallOk { data, .. } => Some(Ok(data)),
            DaemonMsg::Failed { code, .. } => Some(Err(code)),
            _ => unreachable!("matched above"),
        }
    }

    fn wait_outcome(&mut self, a: &str, c: ConnId, id: u64) -> Result<Vec<u8>, ErrorCode> {
        let mut got = None;
        self.run_until("a call's outcome", |n| {
            got = n.outcome(a, c, id);
            got.is_some()
        });
        got.expect("run_until returned")
    }

    fn wait_invocation(&mut self, a: &str, c: ConnId) -> u64 {
        let mut got = Vec::new();
        self.run_until("an invocation", |n| {
            got = n.invocations(a, c);
            !got.is_empty()
        });
        assert_eq!(got.len(), 1, "one invocation: {got:?}");
        got[0]
    }

    /// The next invocation handed to `c`, with its `caller` and `peer`.
    fn wait_invoke(&mut self, a: &str, c: ConnId) -> (u64, String, String) {
        let mut got = None;
        self.run_until("an invocation", |n| {
            got = n.take(a, c).into_iter().find_map(|m| match m {
                DaemonMsg::Invoke {
                    invocation,
                    caller,
                    peer,
                    ..
                } => Some((invocation, caller, peer)),
                _ => None,
            });
            got.is_some()
        });
        got.expect("run_until returned")
    }

    /// The resolver's answer to `a`'s latest lookup.
    fn resolve(&mut self, a: &str, results: Vec<Result<SocketAddr, String>>) {
        let now = self.now;
        let node = self.node(a);
        let lookup = node.lookups.pop().expect("a lookup is pending");
        node.router.handle_lookup(
            now,
            super::LookupAnswer {
                id: lookup.id,
                results: results
                    .into_iter()
                    .map(|r| r.map(super::Resolved::Addr))
                    .collect(),
            },
        );
        self.settle();
    }

    fn has_exited(&self, a: &str) -> bool {
        self.exited.contains(&addr(a))
    }

    fn stats(&mut self, a: &str) -> rpcd_client::ipc::Stats {
        let now = self.now;
        self.node(a).router.stats(now)
    }
}

/// A serves calls through B's app: the reply carries the app's bytes, and
/// the outcome is counted once.
#[test]
fn call_and_reply() {
    let (mut net, caller, server) = Net::served(1, |_| {});
    net.call(A, caller, 7, B, "kv.get", 5_000);
    let inv = net.wait_invocation(B, server);
    net.answer(B, server, inv, b"\xa3abc".to_vec());
    assert_eq!(net.wait_outcome(A, caller, 7), Ok(b"\xa3abc".to_vec()));
    assert_eq!(net.stats(A).calls.get("ok"), Some(&1));
    assert_eq!(net.stats(B).late_results, 0);
}

/// A large request's arguments go to the serving app's `invoke` where they arrived, in the
/// delivered message (the shell writes them from there), neither moved to its front nor
/// copied; a small request's are copied out of it.
#[test]
fn a_large_requests_arguments_stay_in_the_delivered_message() {
    let (mut net, caller, server) = Net::served(1, |_| {});
    for (id, len) in [(7, POOLED_CAPACITY_MIN + 3), (8, 100)] {
        let args: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        net.send(
            A,
            caller,
            ClientMsg::Call {
                id,
                target: B.into(),
                function: "kv.get".into(),
                args: args.clone().into(),
                deadline_ms: Some(30_000),
                idempotent: false,
                trace: false,
            },
        );
        let mut got = None;
        net.run_until("an invocation", |n| {
            got = n.take(B, server).into_iter().find_map(|m| match m {
                DaemonMsg::Invoke { args, .. } => Some(args),
                _ => None,
            });
            got.is_some()
        });
        assert!(got == Some(args.into()), "the arguments of call {id}");
    }
    let offsets = &net.node(B).args_offsets;
    assert_eq!(offsets.len(), 2);
    assert!(
        offsets[0] > 0,
        "in place, behind the envelope's head: {offsets:?}"
    );
    assert_eq!(offsets[1], 0, "copied: {offsets:?}");
}

/// An idempotent call to a name whose first address is dead fails over to
/// the next; a non-idempotent one ends `peer_unreachable` and never runs.
#[test]
fn idempotent_call_fails_over_and_the_other_does_not() {
    let names = |s: &mut Settings| {
        s.names
            .insert("svc".into(), vec![DEAD.to_owned(), B.to_owned()]);
    };
    let (mut net, caller, server) = Net::served(2, names);

    net.call_how(A, caller, 1, ("svc", "kv.get"), true, 10_000);
    let inv = net.wait_invocation(B, server);
    net.answer(B, server, inv, vec![0xc0]);
    assert_eq!(net.wait_outcome(A, caller, 1), Ok(vec![0xc0]));

    // The dead address is now remembered as down and tried last: a second
    // idempotent call goes straight to B.
    let t0 = net.now;
    net.call_how(A, caller, 2, ("svc", "kv.get"), true, 10_000);
    let inv = net.wait_invocation(B, server);
    assert!(net.now - t0 < Duration::from_millis(100), "went to B first");
    net.answer(B, server, inv, vec![0xc0]);
    assert_eq!(net.wait_outcome(A, caller, 2), Ok(vec![0xc0]));

    // Not idempotent: the first candidate is the only one. Make DEAD the
    // first again by forgetting it was down (a fresh A).
    net.start(A, names);
    let caller = net.app(A, 1);
    net.call(A, caller, 3, "svc", "kv.get", 10_000);
    assert_eq!(
        net.wait_outcome(A, caller, 3),
        Err(ErrorCode::PeerUnreachable)
    );
    assert!(net.invocations(B, server).is_empty(), "never ran on B");
}

/// A call whose reply does not come in time ends `deadline_exceeded`, once.
#[test]
fn deadline_expiry() {
    let mut net = Net::new(3, |_| {});
    let caller = net.app(A, 1);
    let server = net.app(B, 2);
    net.register(B, server, "slow");
    let t0 = net.now;
    net.call(A, caller, 1, B, "slow", 300);
    let held = net.wait_invocation(B, server);
    assert_eq!(
        net.wait_outcome(A, caller, 1),
        Err(ErrorCode::DeadlineExceeded)
    );
    let took = net.now - t0;
    let mut frames = Vec::new();
    net.run_until("the cancel at B", |n| {
        frames.extend(n.take(B, server));
        !frames.is_empty()
    });
    assert_eq!(
        frames,
        vec![DaemonMsg::Cancel { invocation: held }],
        "B's app is told, once"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(310),
        "ended at {took:?}"
    );
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.outcome(A, caller, 1), None, "one outcome only");
}

/// A reply that arrives after the caller's deadline is dropped and counted,
/// and the app hears nothing more about the call.
#[test]
fn late_reply_is_dropped_and_counted() {
    let mut net = Net::new(4, |_| {});
    let caller = net.app(A, 1);
    let server = net.app(B, 2);
    net.register(B, server, "slow");
    // Warm the channel up so the request goes without a handshake.
    net.call(A, caller, 1, B, "rpcd.ping", 5_000);
    assert!(net.wait_outcome(A, caller, 1).is_ok());
    // The request takes LATENCY to arrive; B answers at once; the reply takes
    // LATENCY back — past a deadline of LATENCY + 1 ms.
    net.call(A, caller, 2, B, "slow", 3);
    let inv = net.wait_invocation(B, server);
    net.answer(B, server, inv, vec![0xc0]);
    assert_eq!(
        net.wait_outcome(A, caller, 2),
        Err(ErrorCode::DeadlineExceeded)
    );
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.stats(A).late_replies, 1);
    assert_eq!(net.outcome(A, caller, 2), None);
}

/// B restarts while A's call waits for its reply: the call ends
/// `peer_restarted` (it may or may not have run), and the next call works.
#[test]
fn peer_restart_fails_the_waiting_call() {
    let (mut net, caller, server) = Net::served(5, |_| {});
    net.call(A, caller, 1, B, "kv.get", 10_000);
    let _held = net.wait_invocation(B, server);
    net.run_for(Duration::from_millis(20)); // the request is acknowledged
    net.start(B, |_| {});
    assert_eq!(
        net.wait_outcome(A, caller, 1),
        Err(ErrorCode::PeerRestarted)
    );
    let server = net.app(B, 2);
    net.register(B, server, "kv.get");
    net.call(A, caller, 2, B, "kv.get", 10_000);
    let inv = net.wait_invocation(B, server);
    net.answer(B, server, inv, vec![0xc0]);
    assert_eq!(net.wait_outcome(A, caller, 2), Ok(vec![0xc0]));
}

/// The serving app disconnects mid-call: its caller gets `server_app_gone`
/// at once, and the name is free again.
#[test]
fn serving_app_gone_mid_call() {
    let (mut net, caller, server) = Net::served(6, |_| {});
    net.call(A, caller, 1, B, "kv.get", 10_000);
    let _held = net.wait_invocation(B, server);
    let now = net.now;
    net.node(B).router.handle_conn_closed(now, server);
    assert_eq!(
        net.wait_outcome(A, caller, 1),
        Err(ErrorCode::ServerAppGone)
    );
    let other = net.app(B, 3);
    net.register(B, other, "kv.get");
}

/// The calling app disconnects mid-call: the invocation at the serving
/// daemon is withdrawn at once (its slot freed, so a new caller is served
/// rather than refused `overloaded`), and a result sent anyway is counted
/// as late.
#[test]
fn caller_gone_mid_call_cancels_the_serving_side() {
    let one_slot = |s: &mut Settings| s.limits.invocations_per_app_max = 1;
    let (mut net, caller, server) = Net::served(7, one_slot);
    net.call(A, caller, 1, B, "kv.get", 3_600_000);
    let first = net.wait_invocation(B, server);
    let now = net.now;
    net.node(A).router.handle_conn_closed(now, caller);
    net.run_for(Duration::from_millis(50));
    assert!(
        net.take(B, server)
            .contains(&DaemonMsg::Cancel { invocation: first }),
        "the serving app is told"
    );
    // The slot is free: another caller's call is invoked, not refused.
    let caller2 = net.app(A, 3);
    net.call(A, caller2, 9, B, "kv.get", 10_000);
    let second = net.wait_invocation(B, server);
    assert_ne!(first, second);
    net.answer(B, server, first, vec![0xc0]);
    assert_eq!(net.stats(B).late_results, 1);
    net.answer(B, server, second, vec![0xc2]);
    assert_eq!(net.wait_outcome(A, caller2, 9), Ok(vec![0xc2]));
    assert!(
        net.take(A, caller).is_empty(),
        "nothing for the departed app"
    );
}

/// The same through the short-circuit: a local caller leaving withdraws
/// the local invocation.
#[test]
fn local_caller_gone_cancels_the_local_invocation() {
    let mut net = Net::new(8, |s| s.limits.invocations_per_app_max = 1);
    let caller = net.app(A, 1);
    let server = net.app(A, 2);
    net.register(A, server, "kv.get");
    net.call(A, caller, 1, A, "kv.get", 3_600_000);
    let first = net.invocations(A, server);
    assert_eq!(first.len(), 1);
    let now = net.now;
    net.node(A).router.handle_conn_closed(now, caller);
    net.settle();
    assert_eq!(
        net.take(A, server),
        vec![DaemonMsg::Cancel {
            invocation: first[0]
        }]
    );
    let caller2 = net.app(A, 3);
    net.call(A, caller2, 2, A, "kv.get", 10_000);
    assert_eq!(net.invocations(A, server).len(), 1, "slot freed");
}

/// An invocation says who called: `"local"` as both `caller` and `peer` for
/// an app of the same daemon; for a remote daemon over the plaintext
/// transport, which authenticates nothing, its address and an empty `peer`.
#[test]
fn invocations_say_who_called() {
    let (mut net, remote, server) = Net::served(13, |_| {});
    let local = net.app(B, 3);
    net.call(B, local, 1, B, "kv.get", 5_000);
    let (inv, caller, peer) = net.wait_invoke(B, server);
    assert_eq!((caller.as_str(), peer.as_str()), ("local", "local"));
    net.answer(B, server, inv, vec![0xc0]);
    assert_eq!(net.wait_outcome(B, local, 1), Ok(vec![0xc0]));

    net.call(A, remote, 2, B, "kv.get", 5_000);
    let (inv, caller, peer) = net.wait_invoke(B, server);
    assert_eq!((caller.as_str(), peer.as_str()), (A, ""));
    net.answer(B, server, inv, vec![0xc2]);
    assert_eq!(net.wait_outcome(A, remote, 2), Ok(vec![0xc2]));
}

/// SIGTERM at B while A's call is being served there: B keeps running until
/// the reply has reached A and been acknowledged, then finishes.
#[test]
fn shutdown_drains_a_remote_callers_call() {
    let (mut net, caller, server) = Net::served(9, |_| {});
    net.call(A, caller, 1, B, "kv.get", 10_000);
    let inv = net.wait_invocation(B, server);
    // A quiet spell longer than revalidate_after: the reply will wait behind
    // a revalidation probe, as in the bug this test pins.
    net.run_for(Duration::from_millis(400));
    let now = net.now;
    net.node(B).router.begin_shutdown(now);
    // New work is refused meanwhile.
    net.call(A, caller, 2, B, "kv.get", 10_000);
    assert_eq!(net.wait_outcome(A, caller, 2), Err(ErrorCode::ShuttingDown));
    assert!(!net.has_exited(B), "a call is still served");
    net.answer(B, server, inv, vec![0xc3]);
    let mut finished_before_reply = false;
    let mut got = None;
    net.run_until("the reply", |n| {
        finished_before_reply |= n.has_exited(B) && got.is_none();
        got = n.outcome(A, caller, 1);
        got.is_some()
    });
    assert_eq!(got, Some(Ok(vec![0xc3])));
    assert!(
        !finished_before_reply,
        "B exited before its reply reached A"
    );
    net.run_until("B to exit", |n| n.has_exited(B));
    // B waited for A's acknowledgement of the reply: nothing of A's is left
    // to retransmit to a daemon that is gone.
    let a_to_b = net
        .stats(A)
        .peers
        .into_iter()
        .find(|p| p.addr == B)
        .expect("peer B");
    assert_eq!(a_to_b.in_flight, 0);
}

/// SIGTERM with an invocation the app never answers: at the end of the
/// grace period the remote caller gets `shutting_down`, before B finishes.
#[test]
fn shutdown_grace_ends_with_shutting_down_for_the_remote_caller() {
    let mut net = Net::new(10, |s| {
        s.limits.shutdown_grace = Duration::from_millis(500);
    });
    let caller = net.app(A, 1);
    let server = net.app(B, 2);
    net.register(B, server, "kv.get");
    net.call(A, caller, 1, B, "kv.get", 10_000);
    let never = net.wait_invocation(B, server);
    let now = net.now;
    net.node(B).router.begin_shutdown(now);
    let mut got = None;
    let mut exited_first = false;
    let mut told = Vec::new();
    net.run_until("the outcome", |n| {
        exited_first |= n.has_exited(B) && got.is_none();
        if !n.has_exited(B) {
            told.extend(n.take(B, server));
        }
        got = n.outcome(A, caller, 1);
        got.is_some()
    });
    assert_eq!(got, Some(Err(ErrorCode::ShuttingDown)));
    assert!(!exited_first, "B exited before A had its answer");
    assert_eq!(
        told,
        vec![DaemonMsg::Cancel { invocation: never }],
        "at the end of the grace period the serving app is told to stop, once"
    );
    net.run_until("B to exit", |n| n.has_exited(B));
}

/// Every spelling of this daemon's own address is served locally, with no
/// datagram.
#[test]
fn own_address_in_any_spelling_short_circuits() {
    let mut net = Net::new(11, |_| {});
    let caller = net.app(A, 1);
    let server = net.app(A, 2);
    net.register(A, server, "kv.get");
    let spellings = [
        A,
        "0.0.0.0:7401",
        "[::ffff:127.0.0.1]:7401",
        "localhost:7401",
    ];
    for (i, target) in spellings.into_iter().enumerate() {
        let id = i as u64 + 1;
        net.call(A, caller, id, target, "kv.get", 5_000);
        let inv = net.invocations(A, server);
        assert_eq!(inv.len(), 1, "{target}: served locally at once");
        net.answer(A, server, inv[0], vec![0xc3]);
        assert_eq!(net.outcome(A, caller, id), Some(Ok(vec![0xc3])), "{target}");
    }
    assert_eq!(net.node(A).transmits, 0, "no datagram for a local call");
}

/// Under seeded loss every call ends exactly once, and each `ok` ran exactly
/// once at the server.
#[test]
fn calls_under_loss_end_exactly_once() {
    for seed in 1..=8u64 {
        let mut net = Net::new(seed, |_| {});
        net.loss = 20;
        let caller = net.app(A, 1);
        let server = net.app(B, 2);
        net.register(B, server, "kv.incr");
        let calls = 40u64;
        for id in 1..=calls {
            net.call(A, caller, id, B, "kv.incr", 20_000);
        }
        let mut runs: HashMap<u64, u32> = HashMap::new();
        let mut outcomes: HashMap<u64, Result<Vec<u8>, ErrorCode>> = HashMap::new();
        net.run_until("every outcome", |n| {
            for m in n.take(B, server) {
                if let DaemonMsg::Invoke {
                    invocation, args, ..
                } = m
                {
                    let id: u64 = rmp_serde::from_slice(&args).expect("the call's id");
                    *runs.entry(id).or_default() += 1;
                    n.answer(B, server, invocation, args.to_vec());
                }
            }
            for id in 1..=calls {
                if let Some(o) = n.outcome(A, caller, id) {
                    assert!(
                        outcomes.insert(id, o).is_none(),
                        "SEED={seed}: call {id} ended twice"
                    );
                }
            }
            outcomes.len() as u64 == calls
        });
        let oks: HashSet<u64> = outcomes
            .iter()
            .filter(|(_, o)| o.is_ok())
            .map(|(&id, _)| id)
            .collect();
        assert!(!oks.is_empty(), "SEED={seed}: some calls succeed");
        for id in 1..=calls {
            let ran = runs.get(&id).copied().unwrap_or(0);
            if oks.contains(&id) {
                assert_eq!(ran, 1, "SEED={seed}: ok call {id} ran {ran} times");
                let want = rmp_serde::to_vec(&id).expect("an id encodes");
                assert_eq!(
                    outcomes[&id],
                    Ok(want),
                    "SEED={seed}: call {id}'s own reply"
                );
            } else {
                assert!(ran <= 1, "SEED={seed}: failed call {id} ran {ran} times");
            }
        }
    }
}

/// A host-name target goes to the resolver; its answer sends the call. An
/// answer that comes after the call ended (here: its deadline) is ignored:
/// no second outcome, and the request is never sent.
#[test]
fn lookups_send_the_call_and_late_answers_are_ignored() {
    let (mut net, caller, server) = Net::served(12, |_| {});
    net.call(A, caller, 1, "b.example:7402", "kv.get", 5_000);
    let lookup = net
        .node(A)
        .lookups
        .pop()
        .expect("a lookup for the host name");
    assert_eq!(lookup.targets, vec!["b.example:7402".to_owned()]);
    let now = net.now;
    net.node(A).router.handle_lookup(
        now,
        super::LookupAnswer {
            id: lookup.id,
            results: vec![Ok(super::Resolved::Addr(addr(B)))],
        },
    );
    let inv = net.wait_invocation(B, server);
    net.answer(B, server, inv, vec![0xc3]);
    assert_eq!(net.wait_outcome(A, caller, 1), Ok(vec![0xc3]));

    net.call(A, caller, 2, "b.example:7402", "kv.get", 50);
    assert_eq!(
        net.wait_outcome(A, caller, 2),
        Err(ErrorCode::DeadlineExceeded)
    );
    net.resolve(A, vec![Ok(addr(B))]);
    net.run_for(Duration::from_millis(100));
    assert!(net.invocations(B, server).is_empty(), "never sent");
    assert_eq!(net.outcome(A, caller, 2), None, "one outcome only");

    // A name that resolves to nothing ends the call `peer_unreachable`.
    net.call(A, caller, 3, "nowhere.example:1", "kv.get", 5_000);
    net.resolve(A, vec![Err("no such host".into())]);
    assert_eq!(
        net.wait_outcome(A, caller, 3),
        Err(ErrorCode::PeerUnreachable)
    );
}

/// Beyond `connections_max` an app is told `overloaded` and closed; a
/// second `hello` or a wrong version is a fatal protocol error that closes
/// that connection only.
#[test]
fn connection_refusal_and_fatal_frames() {
    let mut net = Net::new(13, |s| s.limits.connections_max = 2);
    let one = net.app(A, 1);
    let _two = net.app(A, 2);
    let now = net.now;
    net.node(A)
        .router
        .handle_conn_opened(ConnId(3), PeerCred::default());
    net.settle();
    assert!(matches!(
        net.take(A, ConnId(3)).as_slice(),
        [DaemonMsg::Fatal {
            code: ErrorCode::Overloaded,
            ..
        }]
    ));
    assert_eq!(net.node(A).closed, vec![ConnId(3)]);
    net.send(
        A,
        one,
        ClientMsg::Hello {
            id: 9,
            version: PROTOCOL_VERSION,
            version_min: None,
            name: "again".into(),
        },
    );
    assert!(matches!(
        net.take(A, one).as_slice(),
        [DaemonMsg::Fatal {
            code: ErrorCode::ProtocolError,
            ..
        }]
    ));
    assert_eq!(net.node(A).closed, vec![ConnId(3), one]);
    // The slot is free again; a wrong version is refused the same way.
    net.node(A)
        .router
        .handle_conn_opened(ConnId(4), PeerCred::default());
    net.node(A).router.handle_client_msg(
        now,
        ConnId(4),
        ClientMsg::Hello {
            id: 1,
            version: PROTOCOL_VERSION + 1,
            version_min: None,
            name: "future".into(),
        },
    );
    net.settle();
    assert!(matches!(
        net.take(A, ConnId(4)).as_slice(),
        [DaemonMsg::Fatal {
            code: ErrorCode::VersionMismatch,
            ..
        }]
    ));
}

/// Strangers' datagrams fill B's peer table (plaintext: each is a valid
/// datagram); once they have been quiet for `peer_idle_timeout` they are
/// forgotten, while A, whose call B is still serving, is kept; the call
/// then completes.
#[test]
fn idle_peers_are_forgotten_and_a_peer_in_use_is_kept() {
    let small = |s: &mut Settings| {
        s.transport.peers_max = 4;
        s.transport.keepalive_interval = Duration::from_millis(200);
        s.transport.peer_timeout = Duration::from_secs(1);
        s.transport.revalidate_after = Duration::from_millis(200);
        s.transport.peer_idle_timeout = Duration::from_secs(3);
    };
    let (mut net, caller, server) = Net::served(41, small);
    net.call(A, caller, 1, B, "kv.get", 50_000);
    let inv = net.wait_invocation(B, server);
    let cfg = net.node(B).router.settings.transport;
    for port in 0..3u16 {
        let from = SocketAddr::from(([10, 9, 9, 9], 30_000 + port));
        let mut stranger = rpcd_transport::Endpoint::new(cfg, 900 + u64::from(port));
        let now = net.now;
        stranger.send(now, addr(B), vec![1]).expect("send");
        while let Some(t) = stranger.poll_transmit(now) {
            net.node(B).router.handle_datagram(now, from, &t.bytes);
        }
    }
    assert_eq!(
        net.node(B).router.endpoint.peer_count(),
        4,
        "the table is full"
    );
    net.run_for(Duration::from_secs(10));
    assert_eq!(
        net.node(B)
            .router
            .endpoint
            .peers()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![addr(A)],
        "the quiet strangers are forgotten; the caller in use is kept"
    );
    assert!(net.node(B).router.endpoint.stats().evicted_peers >= 3);
    net.answer(B, server, inv, vec![0xc0]);
    assert_eq!(net.wait_outcome(A, caller, 1), Ok(vec![0xc0]));
}

/// A reply queued for a caller daemon's old incarnation never reaches its
/// new one. A restarts while B's app holds A's call; B's channel to A goes
/// quiet (past `revalidate_after`), so B's reply waits for the channel to
/// confirm A's epoch — which finds A's new incarnation, itself calling B
/// with the same call id. The channel keeps what it never sent for a new
/// incarnation (right for requests), so the reply must be withdrawn by the
/// router, or A's new call ends `ok` with the old call's result (found by
/// the router simulator, seed 16 of an earlier draw).
#[test]
fn a_reply_for_a_callers_old_incarnation_never_answers_its_new_one() {
    let (mut net, caller, server) = Net::served(16, |_| {});
    net.call(A, caller, 1, B, "kv.get", 60_000);
    let old = net.wait_invocation(B, server);
    net.run_for(Duration::from_millis(20)); // the request is acknowledged
    net.start(A, |_| {});
    // B's channel to A goes quiet.
    net.run_for(Duration::from_millis(400));
    // At one instant: B's app answers the old call, and A's new app calls B.
    net.answer(B, server, old, rmp_serde::to_vec("old").expect("encodes"));
    let caller = net.app(A, 1);
    net.call(A, caller, 1, B, "kv.get", 60_000);
    let new = net.wait_invocation(B, server);
    net.answer(B, server, new, rmp_serde::to_vec("new").expect("encodes"));
    assert_eq!(
        net.wait_outcome(A, caller, 1),
        Ok(rmp_serde::to_vec("new").expect("encodes")),
        "the new call ends with its own result"
    );
}
