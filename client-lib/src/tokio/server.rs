//! Async handlers: functions served by futures on the tokio runtime.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::conn::{Conn, Work};
use super::Client;
use crate::client::{lock, read, write};
use crate::ipc::{recycle, ErrorCode, Outcome};
use crate::{CallError, Credentials, Identity};
use crate::{SERVER_RECONNECT_BACKOFF_INITIAL, SERVER_RECONNECT_BACKOFF_MAX};

/// Default of the most handlers an async [`Server`] runs at once; an invocation beyond it
/// is refused as `overloaded`.
pub const CONCURRENCY_MAX_DEFAULT: usize = 1024;

/// One invocation as an async handler sees it (owned, so the handler's future is
/// `'static`).
#[derive(Debug, Clone)]
pub struct Request {
    /// The function called.
    pub function: String,
    /// The argument bytes: where the frame reader read them for a large frame
    /// ([`Payload`](crate::ipc::Payload), read as `&[u8]`).
    pub args: crate::ipc::Payload,
    /// The calling daemon's `host:port`, or `"local"`; see [`Request::identity`].
    pub caller: String,
    /// The authenticated calling daemon's name, `"local"`, or empty (plaintext).
    pub peer: String,
    /// When the caller gives up; a result after this is dropped by the daemon.
    pub deadline: Instant,
    /// For a local caller, its uid, gid and pid (`SO_PEERCRED`).
    pub credentials: Option<Credentials>,
    cancelled: watch::Receiver<bool>,
}

impl Request {
    /// Who called, as [`crate::Request::identity`] says it.
    pub fn identity(&self) -> Identity<'_> {
        Identity::from_wire(&self.peer, &self.caller)
    }

    /// True once the invocation is cancelled (the caller cancelled or went away). The
    /// server then drops the handler's future at its next `.await`; this is for a handler
    /// doing blocking work between awaits.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Completes when the invocation is cancelled. (The server drops the handler's future
    /// then, so a handler awaiting this inside `select!` sees it as its other branch
    /// being dropped; code that must run on cancellation belongs in a `Drop` guard.)
    pub async fn cancelled(&self) {
        let mut rx = self.cancelled.clone();
        // An error: the invocation is over (answered, or its connection gone).
        let _ = rx.wait_for(|cancelled| *cancelled).await;
    }
}

/// The future an async handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

type HandlerFn = dyn Fn(Request) -> HandlerFuture + Send + Sync;

/// An async function body: turns a [`Request`] into a future of its [`Outcome`].
#[derive(Clone)]
pub struct Handler(Arc<HandlerFn>);

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

impl Handler {
    /// A handler of the whole request: `|req: Request| async move { ... }`.
    pub fn new<F, Fut>(f: F) -> Handler
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Handler(Arc::new(move |req| Box::pin(f(req))))
    }

    /// A typed handler: the arguments decoded from MessagePack as `A` (undecodable ones
    /// are refused as `bad_request`), `Ok` encoded as the reply, `Err` sent as an
    /// application error, as with [`crate::Handler::typed`].
    pub fn typed<A, R, E, F, Fut>(f: F) -> Handler
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let f = Arc::new(f);
        Handler::new(move |req: Request| {
            let f = Arc::clone(&f);
            async move {
                let decoded = crate::__private::decode_args::<A>(&req.function, &req.args);
                // Decoded (or refused), the arguments are no longer read: their buffer (a
                // large invoke's is the frame reader's) serves the next large frame, not
                // kept until the handler's future ends and then freed.
                recycle(req.args.into_buffer());
                match decoded {
                    Ok(args) => crate::__private::reply_result(f(args).await),
                    Err(refused) => refused,
                }
            }
        })
    }
}

/// Serves async handlers on the tokio runtime, through an async [`Client`]'s connection.
/// Functions are re-registered after a reconnect; each invocation runs as its own task
/// (at most the concurrency bound at once), and a cancelled invocation's future is dropped.
#[derive(Debug)]
pub struct Server {
    inner: Arc<Inner>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    handlers: RwLock<BTreeMap<String, Handler>>,
    /// The client generation the functions were last registered on.
    registered_on: Mutex<u64>,
    stopping: AtomicBool,
    stop: Notify,
    slots: Arc<Semaphore>,
    concurrency_max: usize,
    cancelled: AtomicU64,
}

impl Server {
    /// A server on `client`'s connection running up to [`CONCURRENCY_MAX_DEFAULT`]
    /// handlers at once. Must be called within a tokio runtime.
    pub fn new(client: &Client) -> Server {
        Server::with_concurrency(client, CONCURRENCY_MAX_DEFAULT)
    }

    /// A server running up to `concurrency_max` (at least 1) handlers at once.
    pub fn with_concurrency(client: &Client, concurrency_max: usize) -> Server {
        let concurrency_max = concurrency_max.clamp(1, Semaphore::MAX_PERMITS);
        let inner = Arc::new(Inner {
            client: client.clone(),
            handlers: RwLock::new(BTreeMap::new()),
            registered_on: Mutex::new(client.generation()),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            slots: Arc::new(Semaphore::new(concurrency_max)),
            concurrency_max,
            cancelled: AtomicU64::new(0),
        });
        let dispatcher = tokio::spawn(dispatch(Arc::clone(&inner)));
        Server {
            inner,
            dispatcher: Mutex::new(Some(dispatcher)),
        }
    }

    /// Registers `function` with `handler` on the daemon.
    pub async fn register(&self, function: &str, handler: Handler) -> Result<(), CallError> {
        let (conn, generation) = self.inner.client.connection().await?;
        conn.register(function).await?;
        write(&self.inner.handlers).insert(function.to_owned(), handler);
        // On a connection newer than the last registration, the dispatcher registers every
        // function again (registering a name twice on one connection is allowed).
        let _ = generation;
        Ok(())
    }

    /// Registers `function` with a typed async closure ([`Handler::typed`]).
    pub async fn register_fn<A, R, E, F, Fut>(&self, function: &str, f: F) -> Result<(), CallError>
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.register(function, Handler::typed(f)).await
    }

    /// Invocations dropped because their caller cancelled or went away.
    pub fn cancelled(&self) -> u64 {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    /// Graceful stop: no new invocations are taken, every function is unregistered, and the
    /// handlers running finish and are answered. Idempotent.
    pub async fn stop(&self) {
        let Some(dispatcher) = lock(&self.dispatcher).take() else {
            return;
        };
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.notify_one();
        let _ = dispatcher.await;
        let all = u32::try_from(self.inner.concurrency_max).unwrap_or(u32::MAX);
        let _ = self.inner.slots.acquire_many(all).await;
    }
}

impl Drop for Server {
    /// Without [`Server::stop`]: the dispatcher stops taking invocations and unregisters
    /// the functions on its own; running handlers finish.
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.notify_one();
    }
}

/// The dispatcher task: keeps a connection, keeps the functions registered on it, and
/// starts a task per invocation.
async fn dispatch(inner: Arc<Inner>) {
    let mut delay = SERVER_RECONNECT_BACKOFF_INITIAL;
    while !inner.stopping.load(Ordering::SeqCst) {
        let (conn, generation) = match inner.client.connection_within(1).await {
            Ok(open) => {
                delay = SERVER_RECONNECT_BACKOFF_INITIAL;
                open
            }
            Err(_) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = inner.stop.notified() => break,
                }
                delay = delay.saturating_mul(2).min(SERVER_RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        reregister(&inner, &conn, generation).await;
        tokio::select! {
            work = conn.next_invocation() => match work {
                Some(work) => start(&inner, &conn, work),
                // Closed: reconnect (bounded by the backoff above).
                None => tokio::time::sleep(delay).await,
            },
            () = inner.stop.notified() => break,
        }
    }
    if let Some((conn, _)) = inner.client.open_connection() {
        let names: Vec<String> = read(&inner.handlers).keys().cloned().collect();
        for name in names {
            let _ = conn.unregister(&name).await;
        }
    }
}

/// Registers every function again when the connection is newer than the registration.
async fn reregister(inner: &Inner, conn: &Conn, generation: u64) {
    if *lock(&inner.registered_on) >= generation {
        return;
    }
    let names: Vec<String> = read(&inner.handlers).keys().cloned().collect();
    for name in &names {
        // A failure (a name taken meanwhile) is retried at the next reconnect only.
        let _ = conn.register(name).await;
    }
    *lock(&inner.registered_on) = generation;
}

/// Runs one invocation as its own task, or refuses it when the server is at its bound.
fn start(inner: &Arc<Inner>, conn: &Arc<Conn>, work: Work) {
    // An invocation answered without a handler gives its arguments' buffer back before the
    // answer, which may bring the next large invoke: that one is read into it.
    let Ok(slot) = Arc::clone(&inner.slots).try_acquire_owned() else {
        let message = format!("{} handlers already running", inner.concurrency_max);
        let outcome = Outcome::Refused {
            code: ErrorCode::Overloaded,
            message,
        };
        recycle(work.args.into_buffer());
        return conn.send_result(work.invocation, outcome);
    };
    let handler = read(&inner.handlers).get(&work.function).cloned();
    let (inner, conn) = (Arc::clone(inner), Arc::clone(conn));
    tokio::spawn(async move {
        let _slot = slot;
        let Some(handler) = handler else {
            let outcome = Outcome::Error(format!("{} is not served by this app", work.function));
            recycle(work.args.into_buffer());
            return conn.send_result(work.invocation, outcome);
        };
        if Instant::now() >= work.deadline {
            // The caller has given up already.
            recycle(work.args.into_buffer());
            return;
        }
        let req = Request {
            function: work.function,
            args: work.args,
            caller: work.caller,
            peer: work.peer,
            deadline: work.deadline,
            credentials: work.credentials,
            cancelled: work.cancelled.clone(),
        };
        let function = req.function.clone();
        // Its own task, so that a panic is an error reply, not a lost invocation.
        let mut running = tokio::spawn((handler.0)(req));
        let mut cancelled = work.cancelled;
        let outcome = tokio::select! {
            // A cancel first: a handler that returns because it saw the cancel must not
            // look like one that finished.
            biased;
            Ok(_) = cancelled.wait_for(|c| *c) => None,
            joined = &mut running => Some(match joined {
                Ok(outcome) => outcome,
                Err(err) => Outcome::Error(format!("handler of {function} panicked: {err}")),
            }),
        };
        let outcome = match outcome {
            Some(outcome) if !*cancelled.borrow() => outcome,
            _ => {
                // Nobody waits for the result (the daemon would drop it as late): drop the
                // handler's future.
                running.abort();
                inner.cancelled.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        conn.send_result(work.invocation, outcome);
    });
}
