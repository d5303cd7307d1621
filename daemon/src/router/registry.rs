//! Function name → the app that serves it and what it declared (attributes,
//! signature), with the naming rules and the daemon-wide limit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{Declaration, ErrorCode, FunctionInfo};

use super::types::{ConnId, Failure};

/// Longest function name, in bytes.
pub const FUNCTION_NAME_MAX: usize = 256;

/// Functions every daemon serves itself.
pub const BUILTINS: [&str; 6] = [
    "rpcd.describe",
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
    /// What registered functions declared; absent for a plain registration.
    declared: HashMap<String, Declaration>,
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
        self.declared.remove(function);
        Ok(())
    }

    /// Record what `function`, just registered, declares (replacing what it declared
    /// before; an empty declaration forgets it).
    pub fn declare(&mut self, function: &str, declaration: Declaration) {
        if !self.owners.contains_key(function) {
            return;
        }
        if declaration.is_empty() {
            self.declared.remove(function);
        } else {
            self.declared.insert(function.to_owned(), declaration);
        }
    }

    /// Every function served here with what it declared, sorted by name (built-ins
    /// declare nothing). With `only`, that function alone; `None` if it is not served.
    pub fn describe(&self, only: Option<&str>) -> Option<Vec<FunctionInfo>> {
        let info = |name: &str| {
            let d = self.declared.get(name);
            FunctionInfo {
                function: name.to_owned(),
                builtin: BUILTINS.contains(&name),
                idempotent: d.and_then(|d| d.idempotent),
                deadline_ms: d.and_then(|d| d.deadline_ms),
                signature: d.and_then(|d| d.signature.clone()),
            }
        };
        match only {
            Some(name) if BUILTINS.contains(&name) || self.owners.contains_key(name) => {
                Some(vec![info(name)])
            }
            Some(_) => None,
            None => Some(self.list().iter().map(|n| info(n)).collect()),
        }
    }

    /// Forget `function` whoever owns it (its owner, running as `uid`, is
    /// gone) and hold the name for `uid` for `grace` from `now`. A zero
    /// grace holds nothing. The held names are at most `cap`: expired ones
    /// are dropped first, and when all are live the name is not held.
    pub fn release(&mut self, function: &str, uid: u32, now: Instant, grace: Duration, cap: usize) {
        self.declared.remove(function);
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

    #[test]
    fn declarations_follow_their_registration() {
        let mut r = Registry::default();
        let t = Instant::now();
        let a = ConnId(1);
        let declared = Declaration {
            idempotent: Some(true),
            deadline_ms: Some(2000),
            signature: None,
        };
        r.declare("kv.get", declared.clone());
        assert_eq!(r.describe(Some("kv.get")), None, "not registered: ignored");
        r.register(t, a, 0, "kv.get", 4).expect("register");
        r.declare("kv.get", declared);
        let info = r.describe(Some("kv.get")).expect("served");
        assert_eq!(info[0].idempotent, Some(true));
        assert_eq!(info[0].deadline_ms, Some(2000));
        assert!(!info[0].builtin);
        let all = r.describe(None).expect("all");
        assert_eq!(all.len(), BUILTINS.len() + 1);
        assert!(all
            .iter()
            .any(|i| i.function == "rpcd.describe" && i.builtin));
        r.release("kv.get", 0, t, Duration::ZERO, 4);
        r.register(t, a, 0, "kv.get", 4).expect("register again");
        let info = r.describe(Some("kv.get")).expect("served");
        assert_eq!(info[0].idempotent, None, "a new registration declares anew");
    }
}
