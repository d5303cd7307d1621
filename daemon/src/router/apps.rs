//! Per-app state: one entry per local connection, without the socket (the
//! shell owns that). "Session" is kept for the transport's peer sessions.

use std::collections::HashSet;

use rustc_hash::{FxHashMap, FxHashSet};

use super::types::{CallId, ConnId, InvId, PeerCred};

/// One local app, as the router sees it.
#[derive(Debug, Default)]
pub struct App {
    /// The kernel's credentials of the connecting process.
    pub cred: PeerCred,
    /// The app name from its `hello`; `None` until the handshake.
    pub name: Option<String>,
    /// Functions it registered.
    pub functions: HashSet<String>,
    /// Its calls in flight.
    pub calls: FxHashSet<CallId>,
    /// Invocations it was handed and has not answered.
    pub invocations: FxHashSet<InvId>,
}

impl App {
    /// True once the app's `hello` was accepted.
    pub fn greeted(&self) -> bool {
        self.name.is_some()
    }
}

/// Every connected app.
#[derive(Debug, Default)]
pub struct Apps {
    apps: FxHashMap<ConnId, App>,
}

impl Apps {
    /// A new connection.
    pub fn open(&mut self, conn: ConnId, cred: PeerCred) {
        self.apps.insert(
            conn,
            App {
                cred,
                ..App::default()
            },
        );
    }

    /// Forget a connection and return what it held.
    pub fn close(&mut self, conn: ConnId) -> Option<App> {
        self.apps.remove(&conn)
    }

    /// The app on `conn`.
    pub fn get(&self, conn: ConnId) -> Option<&App> {
        self.apps.get(&conn)
    }

    /// The app on `conn`, to change.
    pub fn get_mut(&mut self, conn: ConnId) -> Option<&mut App> {
        self.apps.get_mut(&conn)
    }

    /// Connected apps.
    pub fn len(&self) -> usize {
        self.apps.len()
    }
}

#[cfg(test)]
impl Apps {
    /// Every app.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &App)> + '_ {
        self.apps.iter().map(|(&c, a)| (c, a))
    }
}
