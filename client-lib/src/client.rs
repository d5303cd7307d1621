//! The high-level blocking client: typed calls over one shared, self-healing connection.
//!
//! A [`Client`] is a cheap handle (`Clone`, `Send`, `Sync`) on one [`Connection`] to the
//! local daemon. Any number of threads call through it at once; the connection multiplexes
//! their requests by id. When the daemon goes away, calls in flight fail at once with
//! [`CallError::ConnectionLost`] (they may have run), and the next call reconnects with
//! bounded exponential backoff ([`ClientOptions::reconnect_attempts_max`] attempts, delays
//! doubling from [`ClientOptions::reconnect_backoff_initial`] up to
//! [`ClientOptions::reconnect_backoff_max`]); if the daemon stays away it fails with
//! [`CallError::DaemonUnavailable`]. Calls are never retried behind the caller's back:
//! at-most-once is the daemon's promise, and a silent retry would break it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::conn::{CallOptions, ConnectError, Connection, DaemonInfo};
use crate::error::CallError;
use crate::ipc::Stats;
use crate::target::Target;

/// The app name announced to the daemon unless [`ClientOptions::name`] says otherwise.
pub const APP_NAME_DEFAULT: &str = "rpcd-client";

/// Default for [`ClientOptions::reconnect_backoff_initial`].
pub const RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(10);

/// Default for [`ClientOptions::reconnect_backoff_max`].
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Default for [`ClientOptions::reconnect_attempts_max`]: with the default delays, about
/// 6 s of trying before a call fails with `DaemonUnavailable`.
pub const RECONNECT_ATTEMPTS_MAX: u32 = 12;

/// How a [`Client`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The app's name, shown in the daemon's logs.
    pub name: String,
    /// Options of calls that name none ([`Client::call`], generated stubs).
    pub call: CallOptions,
    /// The first delay between reconnect attempts; it doubles after each failure.
    pub reconnect_backoff_initial: Duration,
    /// The longest delay between reconnect attempts.
    pub reconnect_backoff_max: Duration,
    /// Connect attempts per reconnect before the call fails with `DaemonUnavailable`
    /// (at least 1).
    pub reconnect_attempts_max: u32,
}

impl ClientOptions {
    /// The default options for an app called `name`.
    pub fn named(name: impl Into<String>) -> ClientOptions {
        ClientOptions {
            name: name.into(),
            ..ClientOptions::default()
        }
    }

    /// These options with `call` as the options of calls that name none.
    pub fn with_call(mut self, call: CallOptions) -> ClientOptions {
        self.call = call;
        self
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: APP_NAME_DEFAULT.to_owned(),
            call: CallOptions::default(),
            reconnect_backoff_initial: RECONNECT_BACKOFF_INITIAL,
            reconnect_backoff_max: RECONNECT_BACKOFF_MAX,
            reconnect_attempts_max: RECONNECT_ATTEMPTS_MAX,
        }
    }
}

/// A blocking, thread-safe client of the local `rpcd`. Clones share one connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    options: ClientOptions,
    current: RwLock<Current>,
    /// Held while reconnecting, so one thread reconnects and the others wait for it.
    reconnecting: Mutex<()>,
}

#[derive(Debug)]
struct Current {
    conn: Arc<Connection>,
    /// Counts connections made: 1 for the first, +1 per reconnect.
    generation: u64,
}

impl Client {
    /// Connects to the local daemon wherever it listens: the first of `RPCD_SOCKET`, the
    /// system socket and this user's own socket where a daemon accepts
    /// ([`Connection::connect_default`]). Reconnects go to the path found.
    pub fn connect() -> Result<Client, ConnectError> {
        Client::connect_default_with(ClientOptions::default())
    }

    /// [`Client::connect`] with `options`.
    pub fn connect_default_with(options: ClientOptions) -> Result<Client, ConnectError> {
        let conn = Connection::connect_default(&options.name)?;
        Ok(Client::with_connection(
            conn.path().to_owned(),
            options,
            conn,
        ))
    }

    /// Connects to the daemon's socket at `path`.
    pub fn connect_to(path: impl AsRef<Path>) -> Result<Client, ConnectError> {
        Client::connect_with(path, ClientOptions::default())
    }

    /// Connects to the daemon's socket at `path` with `options`. One attempt: an absent
    /// daemon is reported at once ("is rpcd running? tried PATH").
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Client, ConnectError> {
        let path = path.as_ref().to_owned();
        let conn = Connection::connect(&path, &options.name)?;
        Ok(Client::with_connection(path, options, conn))
    }

    fn with_connection(path: PathBuf, options: ClientOptions, conn: Connection) -> Client {
        Client {
            inner: Arc::new(Inner {
                path,
                options,
                current: RwLock::new(Current {
                    conn: Arc::new(conn),
                    generation: 1,
                }),
                reconnecting: Mutex::new(()),
            }),
        }
    }

    /// Calls `function` on `target` with `args` (encoded with rmp-serde) and decodes the
    /// reply as `R`, with the client's default options.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: &A,
    ) -> Result<R, CallError> {
        self.call_with(target, function, args, self.inner.options.call)
    }

    /// [`Client::call`] with explicit per-call options.
    pub fn call_with<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: &A,
        options: CallOptions,
    ) -> Result<R, CallError> {
        let args = rmp_serde::to_vec_named(args).map_err(|e| CallError::Encode(e.to_string()))?;
        let reply = self.call_raw_with(target, function, args, options)?;
        rmp_serde::from_slice(&reply)
            .map_err(|e| CallError::Decode(format!("{function} replied: {e}")))
    }

    /// Calls `function` with raw argument bytes and returns the raw reply bytes, with the
    /// client's default options.
    pub fn call_raw(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        self.call_raw_with(target, function, args, self.inner.options.call)
    }

    /// [`Client::call_raw`] with explicit per-call options.
    pub fn call_raw_with(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: Vec<u8>,
        options: CallOptions,
    ) -> Result<Vec<u8>, CallError> {
        let target = target.into().to_wire();
        let (conn, _) = self.connection()?;
        Ok(conn.call(&target, function, args, options)?)
    }

    /// Checks that the daemon answers (reconnecting if needed).
    pub fn ping(&self) -> Result<(), CallError> {
        Ok(self.connection()?.0.ping()?)
    }

    /// The functions registered on the local daemon, built-ins included.
    pub fn list(&self) -> Result<Vec<String>, CallError> {
        Ok(self.connection()?.0.list()?)
    }

    /// The local daemon's counters.
    pub fn stats(&self) -> Result<Stats, CallError> {
        Ok(self.connection()?.0.stats()?)
    }

    /// What the daemon said about itself when this client last connected (its UDP address
    /// is `listen`: the target for calls to this host's daemon).
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

    /// How many connections this client has made: 1, plus one per reconnect.
    pub fn generation(&self) -> u64 {
        read(&self.inner.current).generation
    }

    /// True while the current connection is open (no reconnect needed).
    pub fn is_connected(&self) -> bool {
        !read(&self.inner.current).conn.is_closed()
    }

    /// The open connection and its generation, reconnecting with backoff if it is closed.
    pub(crate) fn connection(&self) -> Result<(Arc<Connection>, u64), CallError> {
        self.connection_within(self.inner.options.reconnect_attempts_max)
    }

    /// The open connection, making at most `attempts` connect attempts (with backoff
    /// between them) if it is closed.
    pub(crate) fn connection_within(
        &self,
        attempts: u32,
    ) -> Result<(Arc<Connection>, u64), CallError> {
        if let Some(open) = self.open_connection() {
            return Ok(open);
        }
        let _one_at_a_time = lock(&self.inner.reconnecting);
        // Another thread may have reconnected while this one waited.
        if let Some(open) = self.open_connection() {
            return Ok(open);
        }
        let opts = &self.inner.options;
        let mut delay = opts.reconnect_backoff_initial;
        let attempts = attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match Connection::connect(&self.inner.path, &opts.name) {
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
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2).min(opts.reconnect_backoff_max);
            }
        }
        Err(CallError::DaemonUnavailable {
            path: self.inner.path.clone(),
            message: last,
        })
    }

    /// The current connection if it is open; never reconnects.
    pub(crate) fn open_connection(&self) -> Option<(Arc<Connection>, u64)> {
        let current = read(&self.inner.current);
        (!current.conn.is_closed()).then(|| (Arc::clone(&current.conn), current.generation))
    }
}

/// Locks a mutex; a poisoned one is still usable (its holders never leave it inconsistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks an `RwLock`; a poisoned one is still usable, as with [`lock`].
pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks an `RwLock`; a poisoned one is still usable, as with [`lock`].
pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Client>();
    }

    #[test]
    fn connecting_without_a_daemon_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let err = Client::connect_to(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("is rpcd running? tried {}", path.display())),
            "{err}"
        );
    }
}
