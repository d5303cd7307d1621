//! The worker pool, leader/follower: `workers + 1` threads, at most `workers` of them running
//! handlers, so one is always free to read the connection.
//!
//! The thread holding the pool's read token (the leader) takes turns at reading the
//! connection ([`Connection::read_turn`]). When a turn brings an invocation and fewer than
//! `workers` handlers run, the leader puts the token back, wakes an idle thread to lead next
//! (that wake-up is off the invocation's path) and runs the handler itself, then writes the
//! result: the invocation never crosses threads. When `workers` handlers already run, the
//! leader queues the invocation (up to `queue_max`, else answers `overloaded` at once) and
//! reads on, so cancels keep arriving while every worker is busy; a thread that finishes a
//! handler takes the queue's head itself before it goes idle.
//!
//! With `inline_below` set (off by default), a function whose recent runs were all shorter
//! (the pool times each run: [`Handler`] keeps the slowest, decaying by an eighth per run)
//! skips the hand-off: the leader runs it, writes the result and reads on, keeping the token,
//! as waking a thread costs more than such a run (at 32 callers it took a third of a serving
//! app's CPU: futex wakes and context switches). Nothing is known of a function before its
//! first run, so that run is handed off; so is every run while a recent one took
//! `inline_below` or longer. Nothing reads the connection during an inlined run, hence the
//! setting is for servers whose handlers never wait on it (`ServerOptions::inline_below`).
//!
//! A connection that a reader thread reads already (it cannot be attached) gives invocations
//! to [`offer`] through a sink instead; they are queued and an idle thread is woken for them.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::threads::panic_message;
use super::{Handler, Inner, Job, Request};
use crate::client::{lock, read};
use crate::conn::{Connection, Invocation, Turn};
use crate::ipc::{ErrorCode, Outcome};

/// The pool's shared state and where its idle threads wait.
#[derive(Debug, Default)]
pub(super) struct Pool {
    state: Mutex<State>,
    /// Idle threads wait here for the read token, a queued job, or the stop.
    idle: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Accepted invocations waiting for a worker (at most `queue_max`, plus what a stop
    /// handed over).
    queue: VecDeque<Job>,
    /// The connection the pool reads in turns, while attached.
    conn: Option<Arc<Connection>>,
    /// The generation of the connection invocations come from (attached or through a
    /// sink); 0: none yet.
    generation: u64,
    /// A thread holds the read token: it reads `conn`, or is about to.
    reading: bool,
    /// Threads waiting in `idle`.
    waiting: usize,
    /// Handlers running (at most `workers`).
    running: usize,
    /// No new invocations: the threads drain the queue and end.
    stopping: bool,
}

impl Pool {
    /// Whether invocations from the connection of `generation` already reach the pool.
    pub(super) fn serves(&self, generation: u64) -> bool {
        lock(&self.state).generation == generation
    }

    /// The pool reads `conn` (of `generation`) in turns from now on.
    pub(super) fn attach(&self, conn: Arc<Connection>, generation: u64) {
        let wake = {
            let mut st = lock(&self.state);
            st.conn = Some(conn);
            st.generation = generation;
            st.waiting > 0
        };
        if wake {
            self.idle.notify_one();
        }
    }

    /// Invocations of the connection of `generation` come through a sink ([`offer`]).
    pub(super) fn sunk(&self, generation: u64) {
        lock(&self.state).generation = generation;
    }

    /// Whether the pool reads `conn` itself.
    pub(super) fn reads(&self, conn: &Arc<Connection>) -> bool {
        lock(&self.state)
            .conn
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, conn))
    }

    /// Queues a job that was accepted already (a stop hands over what waited in the
    /// connection's queue), whatever the bound.
    pub(super) fn push(&self, inner: &Inner, job: Job) {
        let wake = {
            let mut st = lock(&self.state);
            st.queue.push_back(job);
            inner.counters.queued.fetch_add(1, Ordering::Relaxed);
            st.waiting > 0
        };
        if wake {
            self.idle.notify_one();
        }
    }

    /// Stop: the leader gives the connection back at its next turn, the threads answer what
    /// is queued and end.
    pub(super) fn stop(&self) {
        lock(&self.state).stopping = true;
        self.idle.notify_all();
    }
}

/// What a sink calls with each invocation: queue it for an idle worker, or return the
/// refusal to answer with at once (`overloaded` when `workers` run and `queue_max` wait).
pub(super) fn offer(inner: &Inner, mut job: Job) -> Result<(), Outcome> {
    let pool = &inner.pool;
    let mut st = lock(&pool.state);
    if st.stopping {
        return Err(Outcome::Refused {
            code: ErrorCode::Overloaded,
            message: "the serving app is stopping".into(),
        });
    }
    if st.running + st.queue.len() >= inner.options.workers + inner.options.queue_max {
        drop(st);
        return Err(overloaded(inner, &mut job));
    }
    st.queue.push_back(job);
    inner.counters.queued.fetch_add(1, Ordering::Relaxed);
    let wake = st.waiting > 0;
    drop(st);
    if wake {
        pool.idle.notify_one();
    }
    Ok(())
}

/// A pool thread: runs queued jobs while a worker is free, leads when the read token is
/// free, waits otherwise; ends once the pool stops and nothing is left.
pub(super) fn serve(inner: &Inner) {
    let pool = &inner.pool;
    let mut st = lock(&pool.state);
    loop {
        if st.running < inner.options.workers {
            if let Some(job) = st.queue.pop_front() {
                inner.counters.queued.fetch_sub(1, Ordering::Relaxed);
                st.running += 1;
                drop(st);
                let handler = handler_of(inner, &job.work.function);
                run(inner, job, handler, false);
                st = lock(&pool.state);
                st.running -= 1;
                continue;
            }
        }
        if !st.reading {
            if let Some(conn) = st.conn.clone() {
                st.reading = true;
                st = lead(inner, conn, st);
                continue;
            }
        }
        if st.stopping && st.queue.is_empty() && st.conn.is_none() {
            return;
        }
        st.waiting += 1;
        st = pool
            .idle
            .wait(st)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.waiting -= 1;
    }
}

/// Reads `conn` turn after turn while this thread holds the read token (`st.reading`), until
/// it runs an invocation itself, the connection closes or is replaced, or the pool stops.
/// Returns with the token put back.
fn lead<'a>(
    inner: &'a Inner,
    conn: Arc<Connection>,
    mut st: MutexGuard<'a, State>,
) -> MutexGuard<'a, State> {
    let pool = &inner.pool;
    loop {
        let current = st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn));
        if st.stopping || !current {
            st.reading = false;
            if current {
                // Stopping: a reader thread of the connection takes over, so the client's
                // calls still get their replies. A closed connection has nothing to hand.
                st.conn = None;
                drop(st);
                let _ = conn.detach_readers();
                pool.idle.notify_all();
                return lock(&pool.state);
            }
            return st;
        }
        drop(st);
        let turn = conn.read_turn();
        // Looked up before the pool's lock is taken again, to keep it short.
        let handler = match &turn {
            Turn::Invocation(work) => handler_of(inner, &work.function),
            Turn::Idle | Turn::Closed => None,
        };
        st = lock(&pool.state);
        match turn {
            Turn::Invocation(work) => {
                let mut job = Job {
                    work,
                    conn: Arc::clone(&conn),
                };
                if st.running < inner.options.workers {
                    st.running += 1;
                    let inline = handler
                        .as_ref()
                        .is_some_and(|h| h.runs_within(inner.options.inline_below));
                    if inline {
                        // Short: this thread runs it and reads on, keeping the token; waking
                        // another to read would cost more than the run.
                        drop(st);
                        run(inner, job, handler, true);
                        st = lock(&pool.state);
                        st.running -= 1;
                        continue;
                    }
                    // Another thread reads on while this one runs the handler. Woken after
                    // the unlock, so that it does not wake only to wait for the lock.
                    st.reading = false;
                    let wake = st.waiting > 0;
                    drop(st);
                    if wake {
                        pool.idle.notify_one();
                    }
                    run(inner, job, handler, false);
                    st = lock(&pool.state);
                    st.running -= 1;
                    return st;
                }
                if st.queue.len() < inner.options.queue_max {
                    st.queue.push_back(job);
                    inner.counters.queued.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                drop(st);
                let refusal = overloaded(inner, &mut job);
                // A failed write means the connection is gone; the next turn says so.
                let _ = job.conn.send_result(job.work.invocation, refusal);
                st = lock(&pool.state);
            }
            Turn::Idle => {}
            Turn::Closed => {
                if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                    // The dispatcher attaches the next connection.
                    st.conn = None;
                }
                st.reading = false;
                // A stopping pool's idle threads wait for the connection to be let go: they
                // may end now (nothing else wakes them, the read having no timeout).
                pool.idle.notify_all();
                return st;
            }
        }
    }
}

/// Counts and words an `overloaded` refusal, and gives the refused invocation's arguments
/// back to the process's pool (a large one's buffer serves the next large frame).
fn overloaded(inner: &Inner, job: &mut Job) -> Outcome {
    crate::ipc::recycle(std::mem::take(&mut job.work.args).into_buffer());
    inner
        .counters
        .refused_overloaded
        .fetch_add(1, Ordering::Relaxed);
    Outcome::Refused {
        code: ErrorCode::Overloaded,
        message: format!(
            "{}: all {} workers busy and {} invocations queued",
            job.work.function, inner.options.workers, inner.options.queue_max
        ),
    }
}

/// The handler registered for `function`, if any.
fn handler_of(inner: &Inner, function: &str) -> Option<Handler> {
    read(&inner.handlers).get(function).cloned()
}

/// Runs one job's handler (`handler`: the one registered for its function, looked up by the
/// caller; unless the job was cancelled or its deadline passed meanwhile) and sends its
/// result, unless it was cancelled while it ran. `inline`: on the reading thread, counted.
fn run(inner: &Inner, job: Job, handler: Option<Handler>, inline: bool) {
    let Job { mut work, conn } = job;
    run_handler(inner, &work, &conn, handler, inline);
    // The handler only borrowed the arguments: a large buffer serves the next large frame.
    crate::ipc::recycle(std::mem::take(&mut work.args).into_buffer());
}

fn run_handler(
    inner: &Inner,
    work: &Invocation,
    conn: &Connection,
    handler: Option<Handler>,
    inline: bool,
) {
    if work.is_cancelled() {
        // The daemon has forgotten it: nobody waits for the result.
        inner.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let started = Instant::now();
    if started >= work.deadline {
        // The caller has given up; running it now would only waste a worker. The caller
        // was told `deadline_exceeded` (outcome unknown), which stays true.
        inner.counters.expired.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let outcome = match handler {
        Some(handler) => {
            if inline {
                inner.counters.inlined.fetch_add(1, Ordering::Relaxed);
            }
            inner.counters.running.fetch_add(1, Ordering::Relaxed);
            let req = Request {
                function: &work.function,
                args: &work.args,
                caller: &work.caller,
                peer: &work.peer,
                deadline: work.deadline,
                credentials: work.credentials,
                cancelled: work.cancelled(),
            };
            let outcome =
                catch_unwind(AssertUnwindSafe(|| handler.call(&req))).unwrap_or_else(|panic| {
                    inner.counters.panicked.fetch_add(1, Ordering::Relaxed);
                    Outcome::Error(format!(
                        "handler of {} panicked: {}",
                        work.function,
                        panic_message(panic.as_ref())
                    ))
                });
            handler.ran(started.elapsed());
            inner.counters.running.fetch_sub(1, Ordering::Relaxed);
            inner.counters.completed.fetch_add(1, Ordering::Relaxed);
            outcome
        }
        None => Outcome::Error(format!("{} is not served by this app", work.function)),
    };
    if work.is_cancelled() {
        // Cancelled while it ran: the daemon would drop the result as late.
        inner.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // A failed send means the connection is gone; the daemon answers the caller.
    let _ = conn.send_result(work.invocation, outcome);
}
