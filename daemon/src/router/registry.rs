//! Function name → the app that serves it, with the naming rules and the
//! daemon-wide limit.

use std::collections::HashMap;

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
}

impl Registry {
    /// Register `function` for `app`; registering one's own name again is
    /// a no-op. `functions_max` bounds the table.
    pub fn register(
        &mut self,
        app: ConnId,
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
        if self.owners.len() >= functions_max {
            return Err(Failure::new(
                ErrorCode::Overloaded,
                format!("too many registered functions (limit {functions_max})"),
            ));
        }
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

    /// Forget `function` whoever owns it (its owner is gone).
    pub fn remove(&mut self, function: &str) {
        self.owners.remove(function);
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
        let (a, b) = (ConnId(1), ConnId(2));
        assert!(r.register(a, "kv.get", 2).is_ok());
        assert!(r.register(a, "kv.get", 2).is_ok(), "again by its owner");
        assert_eq!(
            r.register(b, "kv.get", 2).map_err(|f| f.code),
            Err(ErrorCode::NameTaken)
        );
        assert_eq!(
            r.register(a, "rpcd.x", 2).map_err(|f| f.code),
            Err(ErrorCode::NameTaken)
        );
        assert_eq!(
            r.register(a, "", 2).map_err(|f| f.code),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            r.register(a, "a\nb", 2).map_err(|f| f.code),
            Err(ErrorCode::BadRequest)
        );
        assert!(r.register(b, "kv.put", 2).is_ok());
        assert_eq!(
            r.register(b, "kv.del", 2).map_err(|f| f.code),
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
