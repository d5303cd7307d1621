//! Monitors (`rpcctl monitor`, `docs/ipc-protocol.md` §8): connections that
//! asked to see every call passing through the daemon as `event` frames.
//!
//! Each monitor has a bounded queue (`limits.monitor_buffer` events). Frames
//! go to the shell one batch at a time, the next batch only once the shell
//! reports the connection's output written (`handle_conn_drained`), so a
//! monitor that does not read holds at most its queue plus one batch in the
//! daemon. An event that finds the queue full is dropped and counted; once
//! the queue has drained, a `missed` event reports the count, and nothing is
//! queued in between (so the stream's order stays true).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rpcd_client::ipc::{DaemonMsg, ErrorCode, MonitorEvent};

use super::policy::Want;
use super::types::{ConnId, Failure};
use super::Router;
use crate::settings::policy::glob_match;

/// Event frames handed to the shell at once per monitor.
pub const MONITOR_BATCH: usize = 64;

/// The monitors, by connection.
#[derive(Debug, Default)]
pub(super) struct Monitors {
    map: HashMap<ConnId, Monitor>,
}

#[derive(Debug)]
struct Monitor {
    /// The `monitor` request's id, echoed in every event.
    id: u64,
    function: Option<String>,
    peer: Option<String>,
    queue: VecDeque<MonitorEvent>,
    /// Events dropped since the last one queued.
    missed: u64,
    /// Frames handed to the shell and not reported written yet.
    in_shell: bool,
}

impl Monitors {
    pub(super) fn is_active(&self) -> bool {
        !self.map.is_empty()
    }

    pub(super) fn remove(&mut self, conn: ConnId) {
        self.map.remove(&conn);
    }

    /// Events held for `conn`, queued and dropped (for tests and stats).
    #[cfg(test)]
    pub(super) fn held(&self, conn: ConnId) -> Option<(usize, u64)> {
        self.map.get(&conn).map(|m| (m.queue.len(), m.missed))
    }
}

impl Monitor {
    fn wants(&self, function: &str, peers: &[&str]) -> bool {
        self.function
            .as_deref()
            .is_none_or(|g| glob_match(g, function))
            && self.peer.as_deref().is_none_or(|p| peers.contains(&p))
    }
}

impl Router {
    /// A `monitor` request: allowed to whoever may read stats, up to
    /// `limits.monitors_max` at once; answered `done`, then events.
    pub(super) fn start_monitor(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: u64,
        function: Option<String>,
        peer: Option<String>,
    ) -> Result<(), Failure> {
        self.check_local(now, conn, Want::Stats)?;
        let max = self.settings.limits.monitors_max;
        let m = &mut self.monitors.map;
        if m.len() >= max && !m.contains_key(&conn) {
            return Err(Failure::new(
                ErrorCode::Overloaded,
                format!("too many monitors (limit {max})"),
            ));
        }
        m.insert(
            conn,
            Monitor {
                id,
                function,
                peer,
                queue: VecDeque::new(),
                missed: 0,
                in_shell: false,
            },
        );
        Ok(())
    }

    /// The shell wrote all it held for `conn`: hand over the next batch if
    /// it is a monitor. True if anything was queued for the shell.
    pub fn handle_conn_drained(&mut self, conn: ConnId) -> bool {
        let Some(m) = self.monitors.map.get_mut(&conn) else {
            return false;
        };
        m.in_shell = false;
        self.pump(conn)
    }

    /// Offer an event to every monitor whose filters it passes; `peers` are
    /// the strings a `peer` filter may equal.
    pub(super) fn monitor_event(&mut self, event: MonitorEvent, peers: &[&str]) {
        let cap = self.settings.limits.monitor_buffer;
        let mut ready = Vec::new();
        for (&conn, m) in &mut self.monitors.map {
            if !m.wants(&event.function, peers) {
                continue;
            }
            if m.missed > 0 || m.queue.len() >= cap {
                m.missed += 1;
            } else {
                m.queue.push_back(event.clone());
            }
            if !m.in_shell {
                ready.push(conn);
            }
        }
        for conn in ready {
            self.pump(conn);
        }
    }

    /// Hand `conn`'s next batch to the shell unless one is still there.
    fn pump(&mut self, conn: ConnId) -> bool {
        let Some(m) = self.monitors.map.get_mut(&conn) else {
            return false;
        };
        if m.in_shell {
            return false;
        }
        let mut frames = Vec::new();
        while frames.len() < MONITOR_BATCH {
            let Some(event) = m.queue.pop_front() else {
                break;
            };
            frames.push(DaemonMsg::Event { id: m.id, event });
        }
        if m.queue.is_empty() && m.missed > 0 && frames.len() < MONITOR_BATCH {
            let mut event = MonitorEvent::default();
            event.kind = "missed".to_owned();
            event.missed = std::mem::take(&mut m.missed);
            frames.push(DaemonMsg::Event { id: m.id, event });
        }
        if frames.is_empty() {
            return false;
        }
        m.in_shell = true;
        for f in frames {
            self.frame(conn, f);
        }
        true
    }
}
