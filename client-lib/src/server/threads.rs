//! The server's dispatcher thread, which keeps the connection and its registrations and
//! attaches the worker pool (`pool.rs`) to each new connection.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{
    pool, Handler, Inner, Job, DISPATCH_POLL, SERVER_RECONNECT_BACKOFF_INITIAL,
    SERVER_RECONNECT_BACKOFF_MAX,
};
use crate::client::{lock, read};
use crate::conn::{Connection, Invocation, InvocationSink};
use crate::error::CallError;
use crate::ipc::{ErrorCode, Outcome};

/// The dispatcher thread: keeps a connection, has the pool read it, and keeps the functions
/// registered on it.
pub(super) fn keep_connected(inner: &Arc<Inner>) {
    let mut delay = SERVER_RECONNECT_BACKOFF_INITIAL;
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
        attach(inner, &conn, generation);
        reregister(inner, &conn, generation);
        drop(conn);
        sleep_unless_stopping(inner, DISPATCH_POLL);
    }
    // Stopping: release the names (the pool reads their answers), hand over what waits in
    // the connection's queue or came through a sink (these were accepted and must be
    // answered), then stop the pool.
    let Some((conn, _)) = inner.client.open_connection() else {
        inner.pool.stop();
        return;
    };
    let names: Vec<String> = read(&inner.handlers).keys().cloned().collect();
    for name in names {
        let _ = conn.unregister(&name);
    }
    let _ = conn.set_invocation_sink(None);
    let pooled = inner.pool.reads(&conn);
    if !pooled {
        while let Some(work) = conn.next_invocation(Some(Duration::ZERO)) {
            let conn = Arc::clone(&conn);
            inner.pool.push(inner, Job { work, conn });
        }
    }
    inner.pool.stop();
    if pooled {
        // The answer wakes the leader from its read, so it gives the connection back now
        // rather than at the end of its read slice. Failing means the connection is closed:
        // nothing to give back.
        let _ = conn.ping();
    }
}

/// Makes the invocations of the connection of `generation` reach the pool, once per
/// connection and before anything registers on it: the pool reads the connection itself,
/// or, when a reader thread reads it already, takes them through a sink.
pub(super) fn attach(inner: &Arc<Inner>, conn: &Arc<Connection>, generation: u64) {
    if inner.pool.serves(generation) {
        return;
    }
    match conn.attach_readers() {
        Ok(true) => inner.pool.attach(Arc::clone(conn), generation),
        Ok(false) => {
            let sink = sink(Arc::downgrade(inner), Arc::downgrade(conn));
            if conn.set_invocation_sink(Some(sink)).is_ok() {
                inner.pool.sunk(generation);
            }
        }
        // Closed: the next turn reconnects.
        Err(_) => {}
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

/// What a connection's reader thread calls with each invocation: offer it to the pool.
/// Weak references, so that the connection holding the sink keeps neither itself nor the
/// server alive.
fn sink(inner: Weak<Inner>, conn: Weak<Connection>) -> Arc<InvocationSink> {
    Arc::new(move |work: Invocation| {
        let (Some(inner), Some(conn)) = (inner.upgrade(), conn.upgrade()) else {
            return Err(Outcome::Refused {
                code: ErrorCode::ServerAppGone,
                message: "the serving app is closing".to_owned(),
            });
        };
        pool::offer(&inner, Job { work, conn })
    })
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
