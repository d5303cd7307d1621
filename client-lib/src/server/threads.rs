//! The server's threads: the dispatcher, which keeps the connection and its registrations
//! and installs the sink through which the connection's reader queues invocations, and the
//! workers, which run the handlers.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{
    Handler, Inner, Job, Request, DISPATCH_POLL, SERVER_RECONNECT_BACKOFF_INITIAL,
    SERVER_RECONNECT_BACKOFF_MAX,
};
use crate::client::{lock, read};
use crate::conn::{Connection, Invocation, InvocationSink};
use crate::error::CallError;
use crate::ipc::{ErrorCode, Outcome};

/// The dispatcher thread: keeps a connection, keeps the functions registered on it, and
/// has its reader offer invocations straight to the queue.
pub(super) fn feed_workers(inner: &Arc<Inner>, queue: SyncSender<Job>) {
    let mut delay = SERVER_RECONNECT_BACKOFF_INITIAL;
    // The connection generation the sink is installed on (0: none yet).
    let mut sunk = 0;
    while !inner.stopping.load(Ordering::SeqCst) {
        let (conn, generation) = match inner.client.connection_within(1) {
            Ok(open) => {
                delay = SERVER_RECONNECT_BACKOFF_INITIAL;
                open
            }
            Err(err) => {
                *lock(&inner.last_error) = Some(err);
                sleep_unless_stopping(inner, delay);
                delay = delay.saturating_mul(2).min(SERVER_RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        reregister(inner, &conn, generation);
        if sunk != generation {
            let sink = sink(Arc::downgrade(inner), Arc::downgrade(&conn), queue.clone());
            // Failing means the connection closed: the next turn reconnects.
            if conn.set_invocation_sink(Some(sink)).is_ok() {
                sunk = generation;
            }
        }
        drop(conn);
        sleep_unless_stopping(inner, DISPATCH_POLL);
    }
    // Stopping: release the names, take the sink back, then hand what arrived meanwhile to
    // the workers (a blocking send: these were accepted and must be answered).
    if let Some((conn, _)) = inner.client.open_connection() {
        let names: Vec<String> = read(&inner.handlers).keys().cloned().collect();
        for name in names {
            let _ = conn.unregister(&name);
        }
        let _ = conn.set_invocation_sink(None);
        while let Some(work) = conn.next_invocation(Some(Duration::ZERO)) {
            inner.counters.queued.fetch_add(1, Ordering::Relaxed);
            let job = Job {
                work,
                conn: Arc::clone(&conn),
            };
            if queue.send(job).is_err() {
                break;
            }
        }
    }
}

/// Registers every function again when the connection is newer than the registration.
fn reregister(inner: &Inner, conn: &Connection, generation: u64) {
    let mut registered_on = lock(&inner.registered_on);
    if *registered_on == generation {
        return;
    }
    let functions: Vec<(String, Handler)> = read(&inner.handlers)
        .iter()
        .map(|(n, h)| (n.clone(), h.clone()))
        .collect();
    for (name, handler) in &functions {
        if let Err(err) = conn.register_declared(name, handler.declaration()) {
            *lock(&inner.last_error) = Some(CallError::from(err));
        }
    }
    *registered_on = generation;
    if !functions.is_empty() {
        inner
            .counters
            .reregistrations
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// What the connection's reader calls with each invocation: [`offer`] it to the queue.
/// Weak references, so that the connection holding the sink keeps neither itself nor the
/// server alive.
fn sink(inner: Weak<Inner>, conn: Weak<Connection>, queue: SyncSender<Job>) -> Arc<InvocationSink> {
    Arc::new(move |work: Invocation| {
        let (Some(inner), Some(conn)) = (inner.upgrade(), conn.upgrade()) else {
            return Err(Outcome::Refused {
                code: ErrorCode::ServerAppGone,
                message: "the serving app is closing".to_owned(),
            });
        };
        offer(&inner, &queue, Job { work, conn })
    })
}

/// Queues a job, or returns the refusal to answer with at once (`overloaded` when the queue
/// is full).
fn offer(inner: &Inner, queue: &SyncSender<Job>, job: Job) -> Result<(), Outcome> {
    // Counted before the send so a worker's decrement never sees it below zero.
    inner.counters.queued.fetch_add(1, Ordering::Relaxed);
    let (job, outcome) = match queue.try_send(job) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Full(job)) => {
            inner
                .counters
                .refused_overloaded
                .fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "{}: all {} workers busy and {} invocations queued",
                job.work.function, inner.options.workers, inner.options.queue_max
            );
            (
                job,
                Outcome::Refused {
                    code: ErrorCode::Overloaded,
                    message,
                },
            )
        }
        Err(TrySendError::Disconnected(job)) => (
            job,
            Outcome::Refused {
                code: ErrorCode::Overloaded,
                message: "the serving app is stopping".into(),
            },
        ),
    };
    inner.counters.queued.fetch_sub(1, Ordering::Relaxed);
    drop(job);
    Err(outcome)
}

/// A worker thread: runs jobs until the queue's sender is gone and the queue is empty.
pub(super) fn work(inner: &Inner, queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match lock(queue).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        inner.counters.queued.fetch_sub(1, Ordering::Relaxed);
        let Job { work, conn } = job;
        if work.is_cancelled() {
            // The daemon has forgotten it: nobody waits for the result.
            inner.counters.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if Instant::now() >= work.deadline {
            // The caller has given up; running it now would only waste a worker. The
            // caller was told `deadline_exceeded` (outcome unknown), which stays true.
            inner.counters.expired.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let handler = read(&inner.handlers).get(&work.function).cloned();
        let outcome = match handler {
            Some(handler) => {
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
                inner.counters.running.fetch_sub(1, Ordering::Relaxed);
                inner.counters.completed.fetch_add(1, Ordering::Relaxed);
                outcome
            }
            None => Outcome::Error(format!("{} is not served by this app", work.function)),
        };
        if work.is_cancelled() {
            // Cancelled while it ran: the daemon would drop the result as late.
            inner.counters.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A failed send means the connection is gone; the daemon answers the caller.
        let _ = conn.send_result(work.invocation, outcome);
    }
}

pub(super) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_owned()
    }
}

fn sleep_unless_stopping(inner: &Inner, total: Duration) {
    let until = Instant::now() + total;
    while !inner.stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(DISPATCH_POLL));
    }
}
