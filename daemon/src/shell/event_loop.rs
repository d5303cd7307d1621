//! The loop itself: each turn runs the router's timers, moves what it produced to the
//! sockets and the resolver, sleeps until the next deadline (or not at all while a source
//! has input waiting), then takes one batch from each ready source (see the parent
//! module's doc).

use std::io;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::Events;
use rpcd_client::ipc::{DaemonMsg, ErrorCode};

use super::local::{ConnInput, Local};
use super::notify::Watchdog;
use super::udp::{Received, Sent};
use super::{Shell, LISTENER, SIGNALS, UDP, WAKER};
use crate::router::{LookupAnswer, Output};

impl Shell {
    pub(super) fn run(mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(w) = &mut self.watchdog {
                w.tick(now);
            }
            self.local.retry_due(now);
            self.router.handle_timeout(now);
            self.drive(now);
            self.flush();
            if self.router.is_finished() {
                self.finish();
                return Ok(());
            }
            let busy = self.udp.ready || self.local.listener_ready || !self.local.ready.is_empty();
            let polled = if busy {
                self.poll.poll(&mut events, Some(Duration::ZERO))
            } else {
                let watchdog = self.watchdog.as_ref().map(Watchdog::next_at);
                let next = [self.router.poll_timeout(), self.local.retry_at, watchdog]
                    .into_iter()
                    .flatten()
                    .min();
                self.wait(&mut events, next)
            };
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("polling");
            }
            if !events.is_empty() {
                let busy_poll = self.router.settings().busy_poll;
                self.busy_until = (!busy_poll.is_zero()).then(|| Instant::now() + busy_poll);
            }
            for ev in events.iter() {
                match ev.token() {
                    UDP => {
                        if ev.is_readable() {
                            self.udp.ready = true;
                        }
                        if ev.is_writable() {
                            self.udp.flush(self.poll.registry());
                            self.recycle_sent();
                        }
                    }
                    LISTENER => self.local.listener_ready = true,
                    SIGNALS => self.on_signals(),
                    WAKER => {
                        self.on_resolved();
                        self.answer_scrapes();
                    }
                    token => {
                        let Some(id) = Local::conn_of(token) else {
                            continue;
                        };
                        if ev.is_readable() || ev.is_read_closed() {
                            self.local.ready.insert(id);
                        }
                        if ev.is_writable() && !self.local.write(self.poll.registry(), id) {
                            self.conn_failed(Instant::now(), id);
                        }
                    }
                }
            }
            self.serve_ready(Instant::now());
        }
    }

    /// Waits for events until `next` (`None`: for ever). While input came less than
    /// `daemon.busy_poll_us` ago (`busy_until`), the loop polls without sleeping, yielding
    /// the CPU to whatever else is runnable between polls: the next datagram or frame of a
    /// steady exchange then finds it awake, which spares the sender waking it (an
    /// inter-processor interrupt, on a virtual machine an exit to the hypervisor) and the
    /// call the time the wake-up takes. Past that, it sleeps in `epoll_wait`.
    fn wait(&mut self, events: &mut Events, next: Option<Instant>) -> io::Result<()> {
        if let Some(busy_until) = self.busy_until {
            // A timer due first ends this round of polling, not the window.
            let until = next.map_or(busy_until, |t| t.min(busy_until));
            loop {
                self.poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= until {
                    if now >= busy_until {
                        // Nothing came: sleep until input comes again.
                        self.busy_until = None;
                    }
                    break;
                }
                std::thread::yield_now();
            }
        }
        let timeout = next.map(|t| {
            // epoll has millisecond resolution: round up so a timer is never
            // polled early and spun on.
            let d = t.saturating_duration_since(Instant::now());
            Duration::from_millis(d.as_micros().div_ceil(1000) as u64)
        });
        self.poll.poll(events, timeout)
    }

    /// One batch from each ready source.
    fn serve_ready(&mut self, now: Instant) {
        if self.udp.ready {
            let router = &mut self.router;
            self.udp.receive(|r| match r {
                Received::Datagram(from, bytes) => router.handle_datagram(now, from, bytes),
                Received::Oversize => router.handle_oversize_datagram(),
            });
        }
        if self.local.listener_ready {
            let router = &mut self.router;
            self.local.accept(self.poll.registry(), |id, cred| {
                router.handle_conn_opened(id, cred)
            });
        }
        let mut ready = std::mem::take(&mut self.ready_scratch);
        ready.clear();
        ready.extend(self.local.ready.iter().copied());
        for &id in &ready {
            let router = &mut self.router;
            let mut over_budget = false;
            let open = self.local.read(id, |input| match input {
                ConnInput::Msg(msg) => router.handle_client_msg(now, id, msg),
                ConnInput::BadFrame(e) => router.handle_bad_frame(now, id, &e),
                ConnInput::OverBudget => over_budget = true,
            });
            if over_budget {
                let fatal = DaemonMsg::Fatal {
                    code: ErrorCode::Overloaded,
                    message: "the daemon's buffers for local connections are full \
                              (limits.local_buffer_total_max)"
                        .into(),
                };
                self.local.fail(self.poll.registry(), id, &fatal);
                self.router.handle_conn_closed(now, id);
                continue;
            }
            if !open {
                self.conn_failed(now, id);
            }
        }
        self.ready_scratch = ready;
    }

    /// Move what the router produced to the sockets and the resolver, until
    /// it produces nothing more.
    fn drive(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.router.poll_transmit(now) {
                progressed = true;
                if self.udp.send(t) == Sent::Dropped {
                    self.router.handle_transmit_dropped();
                }
                self.recycle_sent();
            }
            while let Some(out) = self.router.poll_output() {
                progressed = true;
                match out {
                    Output::Frame(id, msg) => {
                        if self.local.queue(id, msg).is_err() {
                            self.local.drop_conn(self.poll.registry(), id);
                            self.router.handle_conn_closed(now, id);
                        }
                    }
                    Output::Invoke(id, invoke) => {
                        if self.local.queue_invoke(id, invoke).is_err() {
                            self.local.drop_conn(self.poll.registry(), id);
                            self.router.handle_conn_closed(now, id);
                        }
                    }
                    Output::Close(id) => self.local.close(self.poll.registry(), id),
                    Output::Lookup(req) => {
                        let id = req.id;
                        let n = req.targets.len();
                        if !self.resolver.submit(req) {
                            let results = vec![Err("the resolver is not running".to_owned()); n];
                            self.router.handle_lookup(now, LookupAnswer { id, results });
                        }
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// The buffers of the datagrams the kernel took go back to the transport,
    /// which writes its next bundles into them.
    fn recycle_sent(&mut self) {
        for bytes in self.udp.take_sent() {
            self.router.recycle_transmit(bytes);
        }
    }

    /// Write what this iteration queued.
    fn flush(&mut self) {
        // A connection failing while written makes the router answer for
        // it (e.g. `server_app_gone` to its callers): write those too before
        // sleeping. Each round closes at least one connection or hands a
        // monitor the next batch of its bounded queue, so this ends.
        loop {
            self.udp.flush(self.poll.registry());
            self.recycle_sent();
            let failed = self.local.flush(self.poll.registry());
            let mut more = false;
            let mut drained = std::mem::take(&mut self.drained_scratch);
            self.local.take_drained(&mut drained);
            for id in drained.drain(..) {
                more |= self.router.handle_conn_drained(id);
            }
            self.drained_scratch = drained;
            if failed.is_empty() && !more {
                return;
            }
            let now = Instant::now();
            for id in failed {
                self.conn_failed(now, id);
            }
            self.drive(now);
        }
    }

    /// A connection ended or its socket failed.
    fn conn_failed(&mut self, now: Instant, id: crate::router::ConnId) {
        self.local.drop_conn(self.poll.registry(), id);
        self.router.handle_conn_closed(now, id);
    }

    /// Answer the metrics thread's snapshot requests (each reply channel has
    /// room for its one answer: this never blocks).
    fn answer_scrapes(&mut self) {
        let Some(requests) = &self.metrics else {
            return;
        };
        let now = Instant::now();
        while let Ok(reply) = requests.try_recv() {
            let _ = reply.try_send(self.router.stats(now));
        }
    }

    fn on_resolved(&mut self) {
        let now = Instant::now();
        while let Some(answer) = self.resolver.poll() {
            self.router.handle_lookup(now, answer);
        }
    }

    /// The router finished its shutdown: last writes, then remove our files.
    fn finish(&mut self) {
        for id in self.local.ids() {
            self.local.close(self.poll.registry(), id);
        }
        // An inherited socket's file belongs to the .socket unit, which keeps
        // listening (and starts rpcd again on the next connection).
        if !self.inherited {
            let _ = std::fs::remove_file(&self.socket_path);
        }
        if let Some(p) = &self.opts.pid_file {
            let _ = std::fs::remove_file(p);
        }
    }
}
