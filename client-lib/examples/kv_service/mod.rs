//! The key-value service shared by the `kv_server` and `kv_client` examples.

use std::collections::HashMap;
use std::sync::Mutex;

/// A key-value store over rpcd. Functions: `kv.put`, `kv.get`, `kv.delete`, `kv.incr`.
///
/// Each method's doc comment, argument names and types travel with its registration:
/// `rpcctl describe HOST:PORT kv.get` shows them. `get` only reads, so it is declared
/// idempotent (a call to a service of several kv daemons fails over) with a short default
/// deadline; the others change the store and run at most once.
#[rpcd_client::service]
pub trait Kv {
    /// Sets `key` to `value`; returns the previous value.
    fn put(&self, key: String, value: String) -> Option<String>;
    /// The value of `key`, if any.
    #[rpcd(idempotent, deadline = "2s")]
    fn get(&self, key: String) -> Option<String>;
    /// Removes `key`; returns whether it was there.
    fn delete(&self, key: String) -> bool;
    /// Adds 1 to the integer value of `key` (a missing key counts as 0), stores it, and
    /// returns the new value. A value that is not an integer is an application error.
    fn incr(&self, key: String) -> Result<i64, KvError>;
}

/// Why a `kv` call failed in the handler.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// `incr` on a value that is not a decimal `i64`.
    #[error("the value of {0:?} is not an integer")]
    NotAnInteger(String),
    /// `incr` past `i64::MAX`.
    #[error("incrementing {0:?} overflows i64")]
    Overflow(String),
}

/// The in-memory store: one map under a mutex, so concurrent workers see every update.
#[derive(Debug, Default)]
pub struct MemKv {
    map: Mutex<HashMap<String, String>>,
}

impl MemKv {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Kv for MemKv {
    fn put(&self, key: String, value: String) -> Option<String> {
        self.map().insert(key, value)
    }

    fn get(&self, key: String) -> Option<String> {
        self.map().get(&key).cloned()
    }

    fn delete(&self, key: String) -> bool {
        self.map().remove(&key).is_some()
    }

    fn incr(&self, key: String) -> Result<i64, KvError> {
        let mut map = self.map();
        let current = match map.get(&key) {
            None => 0,
            Some(text) => text
                .parse::<i64>()
                .map_err(|_| KvError::NotAnInteger(key.clone()))?,
        };
        let next = current
            .checked_add(1)
            .ok_or_else(|| KvError::Overflow(key.clone()))?;
        map.insert(key, next.to_string());
        Ok(next)
    }
}
