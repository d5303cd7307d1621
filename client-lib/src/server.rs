//! Serving functions: registration, a pool of worker threads behind a bounded queue, and
//! re-registration after the daemon restarts.
//!
//! The workers read the connection themselves, leader/follower (`pool.rs`): the one that
//! reads an invocation runs its handler, while another reads on. With every worker busy,
//! invocations wait in the queue; a full queue answers at once with
//! `Outcome::Refused { code: Overloaded }`, so the caller sees `overloaded` instead of
//! waiting. Workers run handlers under `catch_unwind`: a panic becomes an application error
//! for that call and the worker lives on. The dispatcher thread keeps the connection: when it
//! breaks, it reconnects (with backoff), attaches the pool to the new connection and
//! registers every function again there.
//!
//! Idle, the server's threads all sleep until an event wakes them, with no timer: the
//! dispatcher until the connection closes or a stop, the worker leading the pool in a read
//! of the connection (which the daemon's next frame or the connection's close ends), the
//! others until the pool has work for them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::{lock, read, write, Client};
use crate::conn::{Connection, Invocation, Wakeup};
use crate::error::CallError;
use crate::identity::{Credentials, Identity};
use crate::ipc::{Declaration, Outcome};

/// Default for [`ServerOptions::queue_max`]: invocations waiting for a free worker.
pub const QUEUE_MAX_DEFAULT: usize = 256;

/// A bound for [`ServerOptions::inline_below`] for a server whose handlers never wait on its
/// connection (see there): shorter than waking another thread to read (a futex wake and a
/// context switch, 5-20 µs on a virtual machine). The `kv_server` example uses it.
pub const INLINE_BELOW_SHORT: Duration = Duration::from_micros(20);

/// The most worker threads a server runs, whatever [`ServerOptions::workers`] asks.
pub const WORKERS_MAX: usize = 1024;

/// How often the dispatcher used to look at its connection and check for a stop. Unused: the
/// dispatcher now sleeps until the connection closes or the server stops, each of which
/// wakes it, so an idle server makes no wake-ups at all.
#[deprecated(
    note = "unused: a Server's dispatcher is woken by the connection's close and by \
                     `stop`, it does not poll"
)]
pub const DISPATCH_POLL: Duration = Duration::from_millis(50);

/// First delay between reconnect attempts of a serving app; doubles up to
/// [`SERVER_RECONNECT_BACKOFF_MAX`]. A server keeps trying until it is stopped.
pub const SERVER_RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(10);

/// Longest delay between reconnect attempts of a serving app.
pub const SERVER_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The number of worker threads a server runs by default: one per core.
pub fn workers_default() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How a [`Server`] runs its handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Worker threads running handlers (1 to [`WORKERS_MAX`]; default: one per core).
    pub workers: usize,
    /// Invocations waiting for a free worker; one more is refused as `overloaded`.
    /// Zero means an invocation is accepted only when a worker is idle.
    pub queue_max: usize,
    /// Off by default (zero). A function whose recent runs each took less than this runs
    /// on the thread that read its invocation, and that thread reads the next one after it,
    /// with no other thread woken: for handlers of a few microseconds that hand-off costs
    /// more than the handler ([`INLINE_BELOW_SHORT`] is a bound for those). A function not
    /// yet run, or with a run as long as this among its recent ones (the slowest decays by
    /// an eighth per run), is run by the reading thread while another thread, woken for it,
    /// reads on, so slow handlers run side by side.
    ///
    /// Set it only for a server whose handlers never wait on this connection: while an
    /// inlined run lasts, nothing reads it. A handler that calls through the serving app's
    /// own `Client` (its reply comes on this connection), waits for its cancel, or waits
    /// for another invocation of this server would wait, inlined, until its own deadline or
    /// timeout, and every invocation and cancel behind it with it. Short functions also run
    /// one after another on the reading thread rather than side by side on the workers.
    pub inline_below: Duration,
}

impl ServerOptions {
    /// `workers` threads behind a queue of `queue_max` invocations.
    pub fn new(workers: usize, queue_max: usize) -> ServerOptions {
        ServerOptions {
            workers,
            queue_max,
            inline_below: Duration::ZERO,
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: workers_default(),
            queue_max: QUEUE_MAX_DEFAULT,
            inline_below: Duration::ZERO,
        }
    }
}

/// One invocation as a handler sees it. A handler registered with
/// [`Handler::with_request`] gets it; [`Request::identity`] says who called. Handlers
/// made by [`Handler::new`], [`Handler::typed`] and the `#[service]` stubs see only their
/// arguments: register a function that needs its caller with [`Handler::with_request`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The function called.
    pub function: &'a str,
    /// The argument bytes.
    pub args: &'a [u8],
    /// Where the call came from: the calling daemon's `host:port`, or `"local"` for an app
    /// on this daemon. An address, not an identity: see [`Request::identity`].
    pub caller: &'a str,
    /// Who called, as the daemon sent it: the authenticated calling daemon's configured
    /// name, `"local"` for an app on this daemon, or empty for a remote daemon that is not
    /// authenticated (plaintext transport). [`Request::identity`] is the typed view.
    pub peer: &'a str,
    /// When the caller gives up; a result after this is dropped by the daemon.
    pub deadline: Instant,
    /// For a call from an app on this daemon ([`Identity::Local`]): the calling process's
    /// uid, gid and pid, from the kernel (`SO_PEERCRED`). `None` for a remote caller.
    pub credentials: Option<Credentials>,
    /// Set by the connection's reader thread when the daemon cancels the invocation.
    cancelled: &'a AtomicBool,
}

impl<'a> Request<'a> {
    /// Who called: [`Identity::Local`], [`Identity::Peer`] with the authenticated daemon's
    /// configured name, or [`Identity::Unauthenticated`] with a plaintext caller's address.
    ///
    /// ```
    /// use rpcd_client::{Handler, Identity, Outcome};
    ///
    /// let whoami = Handler::with_request(|req| match req.identity() {
    ///     Identity::Local => Outcome::Ok(b"an app on this host".to_vec()),
    ///     Identity::Peer(name) => Outcome::Ok(name.as_bytes().to_vec()),
    ///     other => Outcome::Error(format!("{other:?} is not authenticated")),
    /// });
    /// # let _ = whoami;
    /// ```
    pub fn identity(&self) -> Identity<'a> {
        Identity::from_wire(self.peer, self.caller)
    }

    /// True once the caller is gone (it disconnected, or its call was cancelled): the
    /// daemon has forgotten this invocation and will drop its result, so a long handler
    /// should check this now and then and return early. Whatever it returns then is not
    /// sent.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

type HandlerFn = dyn Fn(&Request<'_>) -> Outcome + Send + Sync;

/// A function body: turns a request into an [`Outcome`], with what the function declares
/// at registration ([`Handler::declared`]). Cheap to clone.
#[derive(Clone)]
pub struct Handler(Arc<HandlerFn>, Arc<Declaration>, Arc<RunTimes>);

/// How long a handler's recent runs took: the slowest, in nanoseconds, decaying by an eighth
/// at each run; `u64::MAX` until it first ran.
#[derive(Debug)]
struct RunTimes(AtomicU64);

impl Default for RunTimes {
    fn default() -> Self {
        RunTimes(AtomicU64::new(u64::MAX))
    }
}

impl RunTimes {
    /// Counts a run that took `took` into the recent runs' slowest.
    fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |slowest| {
                Some(if slowest == u64::MAX {
                    took
                } else {
                    took.max(slowest - slowest / 8)
                })
            });
    }

    /// Whether each recent run took less than `limit` (false before the first run).
    fn all_below(&self, limit: Duration) -> bool {
        let slowest = self.0.load(Ordering::Relaxed);
        slowest != u64::MAX && u128::from(slowest) < limit.as_nanos()
    }
}

impl Handler {
    /// A handler of the raw argument bytes.
    pub fn new(f: impl Fn(&[u8]) -> Outcome + Send + Sync + 'static) -> Handler {
        Handler(
            Arc::new(move |req: &Request<'_>| f(req.args)),
            Arc::default(),
            Arc::default(),
        )
    }

    /// A handler that also sees who called and the deadline.
    pub fn with_request(f: impl Fn(&Request<'_>) -> Outcome + Send + Sync + 'static) -> Handler {
        Handler(Arc::new(f), Arc::default(), Arc::default())
    }

    /// This handler, registered with `declaration`: its attributes (idempotent, default
    /// deadline) and signature, stored by the daemon and served by `rpcd.describe`. The
    /// `#[service]` stubs declare every method this way.
    pub fn declared(self, declaration: Declaration) -> Handler {
        Handler(self.0, Arc::new(declaration), self.2)
    }

    /// What the function declares at registration (empty unless [`Handler::declared`]).
    pub fn declaration(&self) -> &Declaration {
        &self.1
    }

    /// A typed handler: arguments decoded from MessagePack as `A` (a decode failure is
    /// refused as `bad_request`), `Ok` encoded as the reply, `Err` sent as an application
    /// error with its `Display` text.
    pub fn typed<A, R, E, F>(function: &str, f: F) -> Handler
    where
        A: DeserializeOwned,
        R: Serialize,
        E: fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        let function = function.to_owned();
        Handler::new(
            move |args| match crate::__private::decode_args::<A>(&function, args) {
                Ok(args) => crate::__private::reply_result(f(args)),
                Err(refused) => refused,
            },
        )
    }

    fn call(&self, req: &Request<'_>) -> Outcome {
        (self.0)(req)
    }

    /// Counts a run that took `took` into the recent runs' slowest.
    fn ran(&self, took: Duration) {
        self.2.record(took);
    }

    /// Whether each recent run took less than `limit` (false before the first run).
    fn runs_within(&self, limit: Duration) -> bool {
        self.2.all_below(limit)
    }
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler")
    }
}

/// Counters of a [`Server`], for tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Worker threads.
    pub workers: usize,
    /// The queue bound.
    pub queue_max: usize,
    /// Invocations waiting in the queue now.
    pub queued: u64,
    /// Handlers running now.
    pub running: u64,
    /// Handlers finished (panics included).
    pub completed: u64,
    /// Handlers that panicked.
    pub panicked: u64,
    /// Invocations refused as `overloaded` because the queue was full.
    pub refused_overloaded: u64,
    /// Invocations skipped because their deadline passed while they waited.
    pub expired: u64,
    /// Invocations whose caller went away (a `cancel` from the daemon) before they were
    /// answered: dropped unrun if they had not started, their result not sent if they had.
    pub cancelled: u64,
    /// Times the functions were registered again on a new connection.
    pub reregistrations: u64,
    /// Invocations run by the thread that read them, which then read on with no other
    /// thread woken: their function's recent runs were short
    /// ([`ServerOptions::inline_below`]).
    pub inlined: u64,
}

/// Serves registered functions on a pool of worker threads. Stop it with
/// [`Server::stop`] (dropping it does the same).
#[derive(Debug)]
pub struct Server {
    inner: Arc<Inner>,
    threads: Mutex<Option<Threads>>,
}

#[derive(Debug)]
struct Threads {
    dispatcher: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    options: ServerOptions,
    handlers: RwLock<BTreeMap<String, Handler>>,
    /// The connection generation every handler is registered on (0: none yet). Held while
    /// registering, so the dispatcher's re-registration and `register` do not interleave.
    registered_on: Mutex<u64>,
    stopping: AtomicBool,
    /// Wakes the dispatcher: sent by `stop` and by the close of the connection it keeps.
    wake: Arc<Wakeup>,
    counters: Counters,
    last_error: Mutex<Option<CallError>>,
    pool: pool::Pool,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    running: AtomicU64,
    completed: AtomicU64,
    panicked: AtomicU64,
    refused_overloaded: AtomicU64,
    expired: AtomicU64,
    cancelled: AtomicU64,
    inlined: AtomicU64,
    reregistrations: AtomicU64,
}

/// One accepted invocation and the connection to answer it on.
#[derive(Debug)]
struct Job {
    work: Invocation,
    conn: Arc<Connection>,
}

impl Server {
    /// A server on `client`'s connection with the default options (a worker per core,
    /// [`QUEUE_MAX_DEFAULT`] queued).
    pub fn new(client: &Client) -> std::io::Result<Server> {
        Server::with_options(client, ServerOptions::default())
    }

    /// A server on `client`'s connection. Its threads start now; functions are served as
    /// soon as they are registered.
    pub fn with_options(client: &Client, options: ServerOptions) -> std::io::Result<Server> {
        let options = ServerOptions {
            workers: options.workers.clamp(1, WORKERS_MAX),
            ..options
        };
        let inner = Arc::new(Inner {
            client: client.clone(),
            options,
            handlers: RwLock::new(BTreeMap::new()),
            registered_on: Mutex::new(client.generation()),
            stopping: AtomicBool::new(false),
            wake: Arc::default(),
            counters: Counters::default(),
            last_error: Mutex::new(None),
            pool: pool::Pool::default(),
        });
        // One thread more than can run handlers: one is always free to read (`pool.rs`).
        let mut workers = Vec::with_capacity(options.workers + 1);
        for i in 0..=options.workers {
            let worker = Arc::clone(&inner);
            let spawned = std::thread::Builder::new()
                .name(format!("rpcd-worker-{i}"))
                .spawn(move || pool::serve(&worker));
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(err) => {
                    inner.pool.stop();
                    return Err(err);
                }
            }
        }
        let dispatcher = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("rpcd-dispatcher".into())
                .spawn(move || threads::keep_connected(&inner))
        };
        let dispatcher = match dispatcher {
            Ok(dispatcher) => dispatcher,
            Err(err) => {
                inner.pool.stop();
                return Err(err);
            }
        };
        Ok(Server {
            inner,
            threads: Mutex::new(Some(Threads {
                dispatcher,
                workers,
            })),
        })
    }

    /// Registers `function` with a raw handler.
    pub fn register(&self, function: &str, handler: Handler) -> Result<(), CallError> {
        self.register_service(vec![(function, handler)])
    }

    /// Registers `function` with a typed handler (see [`Handler::typed`]).
    pub fn register_fn<A, R, E, F>(&self, function: &str, f: F) -> Result<(), CallError>
    where
        A: DeserializeOwned,
        R: Serialize,
        E: fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.register(function, Handler::typed(function, f))
    }

    /// Registers several functions, all or none: if the daemon refuses one (say,
    /// `name_taken`), those registered by this call are released again.
    pub fn register_service<S: AsRef<str>>(
        &self,
        functions: Vec<(S, Handler)>,
    ) -> Result<(), CallError> {
        let _registering = lock(&self.inner.registered_on);
        {
            let mut handlers = write(&self.inner.handlers);
            for (name, handler) in &functions {
                handlers.insert(name.as_ref().to_owned(), handler.clone());
            }
        }
        let result = self
            .inner
            .client
            .connection()
            .and_then(|(conn, generation)| {
                // The pool reads the connection before anything registers on it.
                threads::attach(&self.inner, &conn, generation);
                let mut done: Vec<&str> = Vec::new();
                for (name, handler) in &functions {
                    if let Err(err) = conn.register_declared(name.as_ref(), handler.declaration()) {
                        for name in done {
                            let _ = conn.unregister(name);
                        }
                        return Err(CallError::from(err));
                    }
                    done.push(name.as_ref());
                }
                Ok(())
            });
        if result.is_err() {
            let mut handlers = write(&self.inner.handlers);
            for (name, _) in &functions {
                handlers.remove(name.as_ref());
            }
        }
        result
    }

    /// Stops serving `function` and releases its name on the daemon (`not_owner` if this
    /// app does not serve it).
    pub fn unregister(&self, function: &str) -> Result<(), CallError> {
        let _registering = lock(&self.inner.registered_on);
        write(&self.inner.handlers).remove(function);
        let (conn, _) = self.inner.client.connection()?;
        Ok(conn.unregister(function)?)
    }

    /// The functions this server serves.
    pub fn functions(&self) -> Vec<String> {
        read(&self.inner.handlers).keys().cloned().collect()
    }

    /// The client this server answers through.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The options in force (after clamping).
    pub fn options(&self) -> ServerOptions {
        self.inner.options
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        ServerStats {
            workers: self.inner.options.workers,
            queue_max: self.inner.options.queue_max,
            queued: c.queued.load(Ordering::Relaxed),
            running: c.running.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            refused_overloaded: c.refused_overloaded.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            reregistrations: c.reregistrations.load(Ordering::Relaxed),
            inlined: c.inlined.load(Ordering::Relaxed),
        }
    }

    /// The last error re-registering after a reconnect, if any (a name taken meanwhile by
    /// another app, say).
    pub fn last_error(&self) -> Option<CallError> {
        lock(&self.inner.last_error).clone()
    }

    /// Graceful stop: no new invocations are taken, every function is unregistered, the
    /// invocations already accepted run to completion and are answered, then the threads
    /// end. Idempotent. An idle server stops at once: the stop wakes its threads, which
    /// wait for nothing else.
    pub fn stop(&self) {
        let Some(threads) = lock(&self.threads).take() else {
            return;
        };
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.wake.notify();
        // The dispatcher unregisters, hands over what is left and stops the pool, whose
        // threads give the connection back, drain the queue and end. A thread that
        // panicked has nothing left to report.
        let _ = threads.dispatcher.join();
        for worker in threads.workers {
            let _ = worker.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

mod pool;
mod threads;

pub(crate) mod cancel;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pool;
