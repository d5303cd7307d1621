//! Function name → the app that serves it, with the naming rules and the
//! daemon-wide limit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rpcd_client::ipc::ErrorCode;

use super::types::{ConnId, Failure};

/// Longest function name, in bytes.
pub const FUNCTION_NAME_MAX: usize = 256;

/// Functions every daemon serves itself.
pub const BUILTINS: [&str; 5] = [
    "rpcd.echo",
    "rpcd.list",
    "rpcd.names",
    "rpcd.ping",
    "rpcd.stats",
];

/// Registered functions and their owners.
#[derive(Debug, Default)]
pub struct Registry {
    owners: HashMap<String, ConnId>,
    /// Names whose owner disconnected, held for the owner's user until the
    /// instant given (the name grace). At most `functions_max` entries.
    released: HashMap<String, Released>,
}

/// A name released by a disconnected owner.
#[derive(Debug, Clone, Copy)]
struct Released {
    uid: u32,
    until: Instant,
}

impl Registry {
    /// Register `function` for `app`, whose process runs as `uid`;
    /// registering one's own name again is a no-op. A name released less
    /// than the grace ago (see [`Registry::release`]) is refused to other
    /// users with `name_taken`. `functions_max` bounds the table.
    pub fn register(
        &mut self,
        now: Instant,
        app: ConnId,
        uid: u32,
        function: &str,
        functions_max: usize,
    ) -> Result<(), Failure> {
        if function.is_empty()
            || function.len() > FUNCTION_NAME_MAX
            || function.chars().any(char::is_control)
        {
            return Err(Failure::new(
                ErrorCode::BadRequest,
                "a function name is 1 to 256 printable characters",
            ));
        }
        if function.starts_with("rpcd.") {
            return Err(Failure::new(
                ErrorCode::NameTaken,
                format!("{function}: the rpcd. prefix is reserved for built-in functions"),
            ));
        }
        match self.owners.get(function) {
            Some(&owner) if owner == app => return Ok(()),
            Some(_) => {
                return Err(Failure::new(
                    ErrorCode::NameTaken,
                    format!("{function} is registered by another live connection"),
                ))
            }
            None => {}
        }
        if let Some(r) = self.released.get(function) {
            if r.uid != uid && now < r.until {
                let left = r.until.saturating_duration_since(now).as_millis();
                return Err(Failure::new(
                    ErrorCode::NameTaken,
                    format!(
                        "{function} is held for its previous owner's user for {left} ms more \
                         (limits.name_grace_ms)"
                    ),
                ));
            }
        }
        if self.owners.len() >= functions_max {
            return Err(Failure::new(
                ErrorCode::Overloaded,
                format!("too many registered functions (limit {functions_max})"),
            ));
        }
        self.released.remove(function);
        self.owners.insert(function.to_owned(), app);
        Ok(())
    }

    /// Remove `function` if `app` owns it.
    pub fn unregister(&mut self, app: ConnId, function: &str) -> Result<(), Failure> {
        if self.owners.get(function) != Some(&app) {
            return Err(Failure::new(
                ErrorCode::NotOwner,
                format!("{function} is not registered by this connection"),
            ));
        }
        self.owners.remove(function);
        Ok(())
    }

    /// Forget `function` whoever owns it (its owner, running as `uid`, is
    /// gone) and hold the name for `uid` for `grace` from `now`. A zero
    /// grace holds nothing. The held names are at most `cap`: expired ones
    /// are dropped first, and when all are live the name is not held.
    pub fn release(&mut self, function: &str, uid: u32, now: Instant, grace: Duration, cap: usize) {
        if self.owners.remove(function).is_none() || grace.is_zero() {
            return;
        }
        if self.released.len() >= cap && !self.released.contains_key(function) {
            self.expire(now);
            if self.released.len() >= cap {
                return;
            }
        }
        let until = now + grace;
        self.released
            .insert(function.to_owned(), Released { uid, until });
    }

    /// Drop the held names whose grace ended by `now`.
    pub fn expire(&mut self, now: Instant) {
        self.released.retain(|_, r| now < r.until);
    }

    /// Names held for a disconnected owner's user (expired ones included
    /// until the next [`Registry::expire`]).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.released.len()
    }

    /// The app serving `function`.
    pub fn owner(&self, function: &str) -> Option<ConnId> {
        self.owners.get(function).copied()
    }

    /// Registered functions.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Built-ins and registered functions, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = BUILTINS.iter().map(|s| (*s).to_owned()).collect();
        v.extend(self.owners.keys().cloned());
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_owned_checked_and_bounded() {
        let mut r = Registry::default();
        let t = Instant::now();
        let (a, b) = (ConnId(1), ConnId(2));
        assert!(r.register(t, a, 0, "kv.get", 2).is_ok());
        assert!(
            r.register(t, a, 0, "kv.get", 2).is_ok(),
            "again by its owner"
        );
        assert_eq!(
            r.register(t, b, 1, "kv.get", 2).map_err(|f| f.code),
            Err(ErrorCode::NameTaken)
        );
        assert_eq!(
            r.register(t, a, 0, "rpcd.x", 2).map_err(|f| f.code),
            Err(ErrorCode::NameTaken)
        );
        assert_eq!(
            r.register(t, a, 0, "", 2).map_err(|f| f.code),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            r.register(t, a, 0, "a\nb", 2).map_err(|f| f.code),
            Err(ErrorCode::BadRequest)
        );
        assert!(r.register(t, b, 1, "kv.put", 2).is_ok());
        assert_eq!(
            r.register(t, b, 1, "kv.del", 2).map_err(|f| f.code),
            Err(ErrorCode::Overloaded)
        );
        assert_eq!(
            r.unregister(b, "kv.get").map_err(|f| f.code),
            Err(ErrorCode::NotOwner)
        );
        assert!(r.unregister(a, "kv.get").is_ok());
        assert_eq!(r.owner("kv.put"), Some(b));
        assert!(r.list().contains(&"rpcd.ping".to_owned()));
    }
}
