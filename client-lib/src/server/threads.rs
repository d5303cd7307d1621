//! The server's dispatcher thread, which keeps the connection and its registrations and
//! attaches the worker pool (`pool.rs`) to each new connection.
//!
//! It sleeps on the server's wake-up (`Inner::wake`) until the connection closes (the
//! connection notifies it: [`Connection::notify_on_close`]) or the server stops
//! ([`super::Server::stop`] notifies it): no timer, so an idle server's dispatcher does not
//! wake. Only while the daemon is away does it wake on its own, to try to reconnect.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{
    pool, Handler, Inner, Job, SERVER_RECONNECT_BACKOFF_INITIAL, SERVER_RECONNECT_BACKOFF_MAX,
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
                // A stop ends the wait early; so may the close of a connection the app's
                // own calls made meanwhile, which only makes the next attempt sooner.
                inner.wake.wait(Instant::now().checked_add(delay));
                delay = delay.saturating_mul(2).min(SERVER_RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        attach(inner, &conn, generation);
        reregister(inner, &conn, generation);
        // Asked after attaching: if the connection closed meanwhile, the wake-up is sent at
        // once and the next turn reconnects.
        conn.notify_on_close(&inner.wake);
        drop(conn);
        // Until the connection closes or the server stops. Every other change comes with
        // one of these: the app's own calls reconnect only once this connection is closed.
        inner.wake.wait(None);
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
        // The answer wakes the leader from its read (which has no timeout), so it sees the
        // stop and gives the connection back. Failing means the connection is closed:
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
