//! The async client: the blocking [`crate::Client`]'s API and behaviour as futures.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::conn::{Conn, ASYNC_WRITE_QUEUE_MAX};
use crate::client::{read, write};
use crate::conn::{CallOptions, ConnectError, DaemonInfo, TriedSocket};
use crate::ipc::Stats;
use crate::{CallError, ClientOptions, Target};

/// An async client of the local `rpcd`, on tokio. Clones share one connection; any number
/// of tasks call through it at once.
///
/// Its errors and its reconnect behaviour are the blocking [`crate::Client`]'s: calls in
/// flight when the daemon goes away fail with [`CallError::ConnectionLost`]; the next call
/// reconnects with bounded exponential backoff ([`ClientOptions`]) or fails with
/// [`CallError::DaemonUnavailable`]. Nothing is retried behind the caller's back.
///
/// Dropping a call's future before it completes cancels the call: the daemon ends it with
/// `cancelled`, frees its slot and tells the serving app.
///
/// The frames queued on its connection and not yet written are bounded in bytes
/// ([`ASYNC_WRITE_QUEUE_MAX`], or [`Client::connect_with_write_queue_max`]): a call (or
/// ping, list, ...) whose frame does not fit waits for room, within its deadline (then
/// `DeadlineExceeded`); it fails with `ConnectionLost` if the connection closes meanwhile.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    options: ClientOptions,
    /// The write queue's bound in bytes, for every connection this client makes.
    write_queue_max: usize,
    current: RwLock<Current>,
    /// Held while reconnecting, so one task reconnects and the others wait for it.
    reconnecting: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Current {
    conn: Arc<Conn>,
    generation: u64,
}

impl Client {
    /// Connects to the local daemon wherever it listens, like [`crate::Client::connect`]:
    /// the first of `RPCD_SOCKET`, the system socket and this user's own where a daemon
    /// accepts.
    pub async fn connect() -> Result<Client, ConnectError> {
        Client::connect_default_with(ClientOptions::default()).await
    }

    /// [`Client::connect`] with `options`.
    pub async fn connect_default_with(options: ClientOptions) -> Result<Client, ConnectError> {
        let mut tried = Vec::new();
        for (source, path) in crate::ipc::socket_candidates() {
            match Conn::open(&path, &options.name, ASYNC_WRITE_QUEUE_MAX).await {
                Ok(conn) => {
                    return Ok(Client::with_conn(
                        path,
                        options,
                        ASYNC_WRITE_QUEUE_MAX,
                        conn,
                    ))
                }
                Err(failure) => tried.push(TriedSocket::from_failure(source, failure)?),
            }
        }
        Err(ConnectError::NoDaemon { tried })
    }

    /// Connects to the daemon's socket at `path`.
    pub async fn connect_to(path: impl AsRef<Path>) -> Result<Client, ConnectError> {
        Client::connect_with(path, ClientOptions::default()).await
    }

    /// Connects to the daemon's socket at `path` with `options` (one attempt).
    pub async fn connect_with(
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Client, ConnectError> {
        Client::connect_with_write_queue_max(path, options, ASYNC_WRITE_QUEUE_MAX).await
    }

    /// [`Client::connect_with`], with a write queue of `write_queue_max` bytes on this
    /// connection and every reconnect instead of [`ASYNC_WRITE_QUEUE_MAX`]: at most that many
    /// bytes of frames wait to be written, and requests beyond it wait for room. A frame
    /// larger than the queue waits until it is empty and is then written alone, so a small
    /// bound slows large calls down but fails none. Taken as 1 if 0, and as `u32::MAX` if
    /// larger.
    pub async fn connect_with_write_queue_max(
        path: impl AsRef<Path>,
        options: ClientOptions,
        write_queue_max: usize,
    ) -> Result<Client, ConnectError> {
        let path = path.as_ref().to_owned();
        let conn = Conn::open(&path, &options.name, write_queue_max).await?;
        Ok(Client::with_conn(path, options, write_queue_max, conn))
    }

    fn with_conn(
        path: PathBuf,
        options: ClientOptions,
        write_queue_max: usize,
        conn: Conn,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                path,
                options,
                write_queue_max,
                current: RwLock::new(Current {
                    conn: Arc::new(conn),
                    generation: 1,
                }),
                reconnecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Calls `function` on `target` with `args` (rmp-serde) and decodes the reply as `R`,
    /// with the client's default options.
    pub async fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: &A,
    ) -> Result<R, CallError> {
        self.call_with(target, function, args, self.inner.options.call)
            .await
    }

    /// [`Client::call`] with explicit per-call options.
    pub async fn call_with<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: &A,
        options: CallOptions,
    ) -> Result<R, CallError> {
        let args = rmp_serde::to_vec_named(args).map_err(|e| CallError::Encode(e.to_string()))?;
        let reply = self.call_raw_with(target, function, args, options).await?;
        rmp_serde::from_slice(&reply)
            .map_err(|e| CallError::Decode(format!("{function} replied: {e}")))
    }

    /// Calls `function` with raw argument bytes and returns the raw reply bytes.
    pub async fn call_raw_with(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: Vec<u8>,
        options: CallOptions,
    ) -> Result<Vec<u8>, CallError> {
        let target = target.into().to_wire();
        let (conn, _) = self.connection().await?;
        Ok(conn.call(&target, function, args, options).await?)
    }

    /// Checks that the daemon answers (reconnecting if needed).
    pub async fn ping(&self) -> Result<(), CallError> {
        Ok(self.connection().await?.0.ping().await?)
    }

    /// The functions registered on the local daemon, built-ins included.
    pub async fn list(&self) -> Result<Vec<String>, CallError> {
        Ok(self.connection().await?.0.list().await?)
    }

    /// The local daemon's counters.
    pub async fn stats(&self) -> Result<Stats, CallError> {
        Ok(self.connection().await?.0.stats().await?)
    }

    /// What the daemon said about itself when this client last connected.
    pub fn daemon(&self) -> DaemonInfo {
        read(&self.inner.current).conn.daemon().clone()
    }

    /// The socket path this client connects to.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options calls take when they name none.
    pub fn default_options(&self) -> CallOptions {
        self.inner.options.call
    }

    /// Bytes of the frames queued on the current connection and not yet written to the
    /// daemon: at most the write queue's bound (or one frame larger than it), plus the
    /// results and cancels sent while it was full (they never wait).
    pub fn write_queue_bytes(&self) -> usize {
        read(&self.inner.current).conn.write_queue_bytes()
    }

    /// How many connections this client has made: 1, plus one per reconnect.
    pub fn generation(&self) -> u64 {
        read(&self.inner.current).generation
    }

    /// The open connection and its generation, reconnecting with backoff if it is closed.
    pub(super) async fn connection(&self) -> Result<(Arc<Conn>, u64), CallError> {
        self.connection_within(self.inner.options.reconnect_attempts_max)
            .await
    }

    /// The open connection, making at most `attempts` connect attempts if it is closed.
    pub(super) async fn connection_within(
        &self,
        attempts: u32,
    ) -> Result<(Arc<Conn>, u64), CallError> {
        if let Some(open) = self.open_connection() {
            return Ok(open);
        }
        let _one_at_a_time = self.inner.reconnecting.lock().await;
        if let Some(open) = self.open_connection() {
            return Ok(open);
        }
        let opts = &self.inner.options;
        let mut delay = opts.reconnect_backoff_initial;
        let attempts = attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match Conn::open(&self.inner.path, &opts.name, self.inner.write_queue_max).await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    let mut current = write(&self.inner.current);
                    current.conn = Arc::clone(&conn);
                    current.generation += 1;
                    return Ok((conn, current.generation));
                }
                Err(ConnectError::NotRunning { source, .. } | ConnectError::Io { source, .. }) => {
                    last = source.to_string();
                }
                Err(other) => last = other.to_string(),
            }
            if attempt < attempts {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(opts.reconnect_backoff_max);
            }
        }
        Err(CallError::DaemonUnavailable {
            path: self.inner.path.clone(),
            message: last,
        })
    }

    /// The current connection if it is open; never reconnects.
    pub(super) fn open_connection(&self) -> Option<(Arc<Conn>, u64)> {
        let current = read(&self.inner.current);
        (!current.conn.is_closed()).then(|| (Arc::clone(&current.conn), current.generation))
    }
}
