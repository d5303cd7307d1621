//! The simulated world of one seed: the daemons (a [`Router`] each, or none
//! while crashed), their apps, the network and a virtual clock that jumps
//! from one event to the next.
//!
//! The loop is the shell's, with no I/O: deliver the datagrams due, run the
//! app actions due, fire the routers' due timers, then drain every router
//! (`poll_transmit` onto the network, `poll_output` to the apps) before the
//! clock moves. Apps react through actions scheduled at or after `now`,
//! never from inside a router call.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{ClientMsg, DaemonMsg, Outcome, PROTOCOL_VERSION};

use super::net::{node_addr, node_of, Net, Rng};
use super::oracle::{result_bytes, CallRec, Exec, Kind, Oracle, Plan};
use crate::router::{ConnId, Incarnation, Output, PeerCred, Router};
use crate::settings::Settings;

/// Router steps at one instant before the clock must move: more means a
/// router keeps asking to be woken now and never gets done.
const STEPS_AT_ONE_INSTANT_MAX: u32 = 100_000;

/// Functions every serving app registers.
pub const PUT: &str = "kv.put";
pub const GET: &str = "kv.get";
/// The name whose addresses are a dead one and the other nodes.
pub const SVC: &str = "svc";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Caller,
}

/// A simulated app: it lives across its daemon's restarts and reconnects.
#[derive(Debug)]
pub struct App {
    pub node: usize,
    pub role: Role,
    pub conn: Option<ConnId>,
    /// A caller's pending calls (their nonces are their request ids).
    pub pending: Vec<u64>,
}

/// One call an app will try to make.
#[derive(Debug, Clone)]
pub struct CallPlan {
    pub kind: Kind,
    pub target: String,
    pub function: &'static str,
    pub idempotent: bool,
    pub deadline_ms: Option<u64>,
    /// Cancel it this long after it starts.
    pub cancel_after: Option<Duration>,
}

#[derive(Debug, Clone)]
pub enum Action {
    Connect(usize),
    Disconnect(usize),
    Call(usize, CallPlan),
    Cancel(usize, ConnId, u64),
    /// A serving app's result, on the connection that got the invocation.
    Answer(usize, ConnId, u64, Outcome),
    Crash(usize),
    Restart(usize),
}

#[derive(Debug)]
pub struct Node {
    pub router: Option<Router>,
    pub settings: Settings,
}

/// What was injected, for the seed's report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Injected {
    pub crashes: u64,
    pub app_disconnects: u64,
    pub cancels: u64,
    pub holds: u64,
    pub app_errors: u64,
}

pub struct World {
    pub seed: u64,
    pub start: Instant,
    pub now: Instant,
    pub net: Net,
    pub nodes: Vec<Node>,
    pub apps: Vec<App>,
    actions: BTreeMap<(Instant, u64), Action>,
    actions_seq: u64,
    pub oracle: Oracle,
    next_conn: u64,
    next_nonce: u64,
    epoch: u64,
    pub injected: Injected,
}

impl World {
    pub fn new(seed: u64, net: Net, settings: Vec<Settings>) -> World {
        let start = Instant::now();
        let mut w = World {
            seed,
            start,
            now: start,
            net,
            nodes: Vec::new(),
            apps: Vec::new(),
            actions: BTreeMap::new(),
            actions_seq: 0,
            oracle: Oracle::default(),
            next_conn: 0,
            next_nonce: 0,
            epoch: 0,
            injected: Injected::default(),
        };
        for s in settings {
            w.nodes.push(Node {
                router: None,
                settings: s,
            });
        }
        for i in 0..w.nodes.len() {
            w.boot(i);
            for role in [Role::Server, Role::Caller] {
                w.apps.push(App {
                    node: i,
                    role,
                    conn: None,
                    pending: Vec::new(),
                });
                let app = w.apps.len() - 1;
                w.connect(app);
            }
        }
        w.flush();
        w
    }

    pub fn at(&mut self, at: Instant, action: Action) {
        self.actions_seq += 1;
        self.actions
            .insert((at.max(self.now), self.actions_seq), action);
    }

    /// Run until `until`, or until nothing is left to happen.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps_now = 0u32;
        loop {
            self.flush();
            let timers = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.router.as_mut().and_then(Router::poll_timeout))
                .min();
            let action = self.actions.keys().next().map(|&(t, _)| t);
            let next = [timers, action, self.net.next_delivery()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|&t| t <= until) else {
                self.now = self.now.max(until);
                return;
            };
            if next <= self.now {
                steps_now += 1;
                assert!(
                    steps_now < STEPS_AT_ONE_INSTANT_MAX,
                    "SEED={}: the clock cannot move past {:?}",
                    self.seed,
                    self.now - self.start
                );
            } else {
                steps_now = 0;
                self.now = next;
                tracing::debug!("sim: t = {:?}", next - self.start);
            }
            let now = self.now;
            while let Some((from, to, bytes)) = self.net.pop_due(now) {
                let router =
                    node_of(to, self.nodes.len()).and_then(|i| self.nodes[i].router.as_mut());
                match router {
                    Some(r) => {
                        self.net.counts.delivered += 1;
                        r.handle_datagram(now, from, &bytes);
                    }
                    None => self.net.counts.unheard += 1,
                }
            }
            // The apps see what the datagrams brought before they act.
            self.flush();
            while let Some(entry) = self.actions.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let action = entry.remove();
                self.perform(action);
                self.flush();
            }
            for n in &mut self.nodes {
                if let Some(r) = n.router.as_mut() {
                    if r.poll_timeout().is_some_and(|t| t <= now) {
                        r.handle_timeout(now);
                    }
                }
            }
        }
    }

    /// Move everything the routers produced to the network and the apps.
    fn flush(&mut self) {
        let now = self.now;
        let count = self.nodes.len();
        for i in 0..count {
            let Some(r) = self.nodes[i].router.as_mut() else {
                continue;
            };
            let mut outputs = Vec::new();
            loop {
                let mut any = false;
                while let Some(t) = r.poll_transmit(now) {
                    any = true;
                    self.net.send(now, node_addr(i), t.to, t.bytes, count);
                }
                while let Some(o) = r.poll_output() {
                    any = true;
                    outputs.push(o);
                }
                if !any {
                    break;
                }
            }
            r.check_invariants();
            for o in outputs {
                match o {
                    Output::Frame(conn, msg) => self.on_frame(i, conn, msg),
                    Output::Invoke(conn, invoke) => self.on_frame(i, conn, invoke.into()),
                    Output::Close(conn) => self.oracle.violations.push(format!(
                        "node {i} closed connection {conn}: the apps here break no rule"
                    )),
                    Output::Lookup(_) => self
                        .oracle
                        .violations
                        .push(format!("node {i} asked for a lookup: every target is an address or a configured name")),
                }
            }
        }
    }

    fn app_of(&self, node: usize, conn: ConnId) -> Option<usize> {
        self.apps
            .iter()
            .position(|a| a.node == node && a.conn == Some(conn))
    }

    /// A frame for `conn` at `node`: the app's reaction, and what it saw.
    fn on_frame(&mut self, node: usize, conn: ConnId, msg: DaemonMsg) {
        let now = self.now;
        let Some(app) = self.app_of(node, conn) else {
            self.oracle.frames_after_close += 1;
            return;
        };
        match msg {
            DaemonMsg::HelloOk { .. } | DaemonMsg::Done { .. } | DaemonMsg::Cancel { .. } => {}
            DaemonMsg::CallOk { id, data, .. } => {
                self.apps[app].pending.retain(|&n| n != id);
                self.oracle.ended(id, now, Ok(data));
            }
            DaemonMsg::Failed {
                id, code, message, ..
            } => {
                if self.apps[app].role == Role::Server {
                    self.oracle.violations.push(format!(
                        "node {node} refused a registration: {} {message}",
                        code.as_str()
                    ));
                    return;
                }
                self.apps[app].pending.retain(|&n| n != id);
                self.oracle.ended(id, now, Err(code));
            }
            DaemonMsg::Invoke {
                invocation,
                function,
                args,
                ..
            } => {
                let Ok(nonce) = rmp_serde::from_slice::<u64>(&args) else {
                    self.oracle.violations.push(format!(
                        "node {node} invoked {function} with foreign arguments"
                    ));
                    return;
                };
                // The app's answer depends on the call and the node only.
                let mut rng = Rng::keyed(self.seed, &[nonce, node as u64, 0x1a9]);
                // After healing the apps are healthy: a probe is answered.
                let probe = self
                    .oracle
                    .calls
                    .get(&nonce)
                    .is_some_and(|c| c.kind == Kind::Probe);
                let r = if probe { 0 } else { rng.below(100) };
                let (plan, delay) = match r {
                    0..=59 => (Plan::Ok, rng.ms(0, 30)),
                    60..=69 => (Plan::Ok, Duration::ZERO),
                    70..=79 => (Plan::Ok, rng.ms(100, 2_000)),
                    80..=89 => (Plan::AppError, rng.ms(0, 30)),
                    _ => (Plan::Hold, Duration::ZERO),
                };
                self.oracle.executed(
                    nonce,
                    Exec {
                        node,
                        at: now,
                        plan,
                    },
                );
                let outcome = match plan {
                    Plan::Ok => Outcome::Ok(result_bytes(nonce, node, &function)),
                    Plan::AppError => {
                        self.injected.app_errors += 1;
                        Outcome::Error(format!("no {nonce}"))
                    }
                    Plan::Hold => {
                        self.injected.holds += 1;
                        return;
                    }
                };
                self.at(now + delay, Action::Answer(app, conn, invocation, outcome));
            }
            other => self
                .oracle
                .violations
                .push(format!("node {node} sent an unexpected {other:?}")),
        }
    }

    fn perform(&mut self, action: Action) {
        let now = self.now;
        tracing::debug!("sim: {action:?}");
        match action {
            Action::Connect(app) => {
                if self.apps[app].conn.is_none() && self.nodes[self.apps[app].node].router.is_some()
                {
                    self.connect(app);
                }
            }
            Action::Disconnect(app) => {
                let node = self.apps[app].node;
                if let (Some(conn), Some(r)) =
                    (self.apps[app].conn, self.nodes[node].router.as_mut())
                {
                    self.injected.app_disconnects += 1;
                    r.handle_conn_closed(now, conn);
                    self.conn_gone(app);
                }
            }
            Action::Call(app, plan) => self.call(app, plan),
            Action::Cancel(app, conn, nonce) => {
                let node = self.apps[app].node;
                if self.apps[app].conn != Some(conn) || !self.oracle.is_pending(nonce) {
                    return;
                }
                if let Some(r) = self.nodes[node].router.as_mut() {
                    self.injected.cancels += 1;
                    if let Some(c) = self.oracle.calls.get_mut(&nonce) {
                        c.cancelled = Some(now);
                    }
                    r.handle_client_msg(now, conn, ClientMsg::CancelCall { id: nonce });
                }
            }
            Action::Answer(app, conn, invocation, outcome) => {
                let node = self.apps[app].node;
                if self.apps[app].conn != Some(conn) {
                    return;
                }
                if let Some(r) = self.nodes[node].router.as_mut() {
                    r.handle_client_msg(
                        now,
                        conn,
                        ClientMsg::Result {
                            invocation,
                            outcome,
                        },
                    );
                }
            }
            Action::Crash(node) => {
                if self.nodes[node].router.take().is_some() {
                    self.injected.crashes += 1;
                    for app in 0..self.apps.len() {
                        if self.apps[app].node == node && self.apps[app].conn.is_some() {
                            self.conn_gone(app);
                        }
                    }
                }
            }
            Action::Restart(node) => {
                if self.nodes[node].router.is_none() {
                    self.boot(node);
                    for app in 0..self.apps.len() {
                        if self.apps[app].node == node {
                            let mut rng = Rng::keyed(self.seed, &[app as u64, self.epoch, 0x7e]);
                            let at = now + rng.ms(0, 200);
                            self.at(at, Action::Connect(app));
                        }
                    }
                }
            }
        }
    }

    /// A new incarnation of `node`'s daemon, with no state.
    fn boot(&mut self, node: usize) {
        self.epoch += 1;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(self.seed ^ self.epoch).to_le_bytes());
        let incarnation = Incarnation {
            epoch: self.epoch,
            seed,
            wall_clock: Duration::from_secs(1_000_000) + (self.now - self.start),
        };
        let s = self.nodes[node].settings.clone();
        self.nodes[node].router = Some(Router::new(
            s,
            node_addr(node),
            Vec::new(),
            incarnation,
            self.now,
        ));
    }

    /// Open a connection for `app`, say hello and (a server) register.
    fn connect(&mut self, app: usize) {
        let now = self.now;
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let a = &mut self.apps[app];
        let Some(r) = self.nodes[a.node].router.as_mut() else {
            return;
        };
        a.conn = Some(conn);
        r.handle_conn_opened(conn, PeerCred::default());
        let hello = ClientMsg::Hello {
            id: 0,
            version: PROTOCOL_VERSION,
            version_min: None,
            name: format!("app{app}"),
        };
        r.handle_client_msg(now, conn, hello);
        if a.role == Role::Server {
            for (id, function) in [(1, PUT), (2, GET)] {
                let register = ClientMsg::Register {
                    id,
                    function: function.into(),
                    idempotent: None,
                    deadline_ms: None,
                    signature: None,
                };
                r.handle_client_msg(now, conn, register);
            }
        }
    }

    /// `app`'s connection ended: what it waited for is owed no more.
    fn conn_gone(&mut self, app: usize) {
        let now = self.now;
        self.apps[app].conn = None;
        for nonce in std::mem::take(&mut self.apps[app].pending) {
            self.oracle.lost(nonce, now);
        }
    }

    fn call(&mut self, app: usize, plan: CallPlan) {
        let now = self.now;
        let node = self.apps[app].node;
        let Some(conn) = self.apps[app].conn else {
            return;
        };
        let wait = plan
            .deadline_ms
            .map(Duration::from_millis)
            .unwrap_or(self.nodes[node].settings.limits.deadline_default);
        let Some(r) = self.nodes[node].router.as_mut() else {
            return;
        };
        self.next_nonce += 1;
        let nonce = self.next_nonce;
        self.oracle.issue(
            nonce,
            CallRec {
                kind: plan.kind,
                caller_node: node,
                target: plan.target.clone(),
                function: plan.function.into(),
                idempotent: plan.idempotent,
                issued: now,
                deadline: now + wait,
                cancelled: None,
                outcome: None,
                lost: None,
            },
        );
        self.apps[app].pending.push(nonce);
        let msg = ClientMsg::Call {
            id: nonce,
            target: plan.target,
            function: plan.function.into(),
            args: rmp_serde::to_vec(&nonce).expect("a nonce encodes").into(),
            deadline_ms: plan.deadline_ms,
            idempotent: plan.idempotent,
            trace: false,
        };
        r.handle_client_msg(now, conn, msg);
        if let Some(after) = plan.cancel_after {
            self.at(now + after, Action::Cancel(app, conn, nonce));
        }
    }

    /// The address string of node `i`, as apps write targets.
    pub fn addr(i: usize) -> String {
        node_addr(i).to_string()
    }

    /// Every node is up and every app connected.
    pub fn all_up(&self) -> bool {
        self.nodes.iter().all(|n| n.router.is_some()) && self.apps.iter().all(|a| a.conn.is_some())
    }

    pub fn callers(&self) -> Vec<usize> {
        (0..self.apps.len())
            .filter(|&a| self.apps[a].role == Role::Caller)
            .collect()
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// How many app and fault actions are still scheduled.
    pub fn actions_left(&self) -> usize {
        self.actions.len()
    }
}
