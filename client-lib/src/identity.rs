//! Who called a served function, as the serving daemon knows it: the typed view of an
//! invocation's `peer` and `caller` (`docs/ipc-protocol.md` §6).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ipc::LOCAL_CALLER;

/// The kernel's word on which local process called (`SO_PEERCRED` of its connection to
/// the daemon), as an `invoke` frame's `credentials` carries it for a call from an app on
/// the same daemon. [`Request::credentials`](crate::Request::credentials) gives it. Keys a
/// reader does not know are ignored (a newer daemon may add some).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Credentials {
    /// User id of the calling process.
    pub uid: u32,
    /// Group id of the calling process (its primary group at connect time).
    pub gid: u32,
    /// Process id of the calling process when it connected.
    pub pid: u32,
}

impl Credentials {
    /// The credentials of a process running as `uid` and `gid` with id `pid`.
    pub fn new(uid: u32, gid: u32, pid: u32) -> Credentials {
        Credentials { uid, gid, pid }
    }
}

/// Who called a served function. [`Request::identity`](crate::Request::identity) and
/// [`Invocation::identity`](crate::Invocation::identity) give it.
///
/// Only [`Identity::Local`] and [`Identity::Peer`] are vouched for by the daemon; an
/// [`Identity::Unauthenticated`] caller is an address anyone able to send UDP datagrams
/// could have used, so access decisions should not rest on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Identity<'a> {
    /// An app on this same daemon: the call came over the daemon's own Unix socket and
    /// never crossed the network (wire: `peer` = `"local"`).
    Local,
    /// A remote daemon whose transport session is authenticated: the name this daemon's
    /// configuration gives to its key (wire: `peer` = that name).
    Peer(&'a str),
    /// A remote daemon over the plaintext transport, which authenticates nothing: the
    /// `host:port` its datagrams came from, for logs only (wire: `peer` = `""`, the address
    /// in `caller`).
    Unauthenticated(&'a str),
}

impl<'a> Identity<'a> {
    /// The identity an `invoke` frame's `peer` and `caller` fields describe: `peer` =
    /// `"local"` is [`Identity::Local`], an empty `peer` is [`Identity::Unauthenticated`] at
    /// `caller`, any other `peer` is [`Identity::Peer`].
    pub fn from_wire(peer: &'a str, caller: &'a str) -> Identity<'a> {
        match peer {
            LOCAL_CALLER => Identity::Local,
            "" => Identity::Unauthenticated(caller),
            name => Identity::Peer(name),
        }
    }

    /// The authenticated peer's configured name; `None` for a local or an unauthenticated
    /// caller.
    pub fn peer_name(&self) -> Option<&'a str> {
        match *self {
            Identity::Peer(name) => Some(name),
            Identity::Local | Identity::Unauthenticated(_) => None,
        }
    }
}

impl fmt::Display for Identity<'_> {
    /// `local`, `peer <name>`, or `unauthenticated <host:port>`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Local => f.write_str("local"),
            Identity::Peer(name) => write!(f, "peer {name}"),
            Identity::Unauthenticated(addr) => write!(f, "unauthenticated {addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_fields_map_to_one_identity_each() {
        assert_eq!(Identity::from_wire("local", "local"), Identity::Local);
        assert_eq!(
            Identity::from_wire("", "10.0.0.1:7000"),
            Identity::Unauthenticated("10.0.0.1:7000")
        );
        assert_eq!(
            Identity::from_wire("db-1", "10.0.0.1:7000"),
            Identity::Peer("db-1")
        );
        assert_eq!(Identity::Peer("db-1").peer_name(), Some("db-1"));
        assert_eq!(Identity::Local.peer_name(), None);
        assert_eq!(Identity::Unauthenticated("h:1").peer_name(), None);
    }

    #[test]
    fn display_says_how_much_is_known() {
        assert_eq!(Identity::Local.to_string(), "local");
        assert_eq!(Identity::Peer("db-1").to_string(), "peer db-1");
        assert_eq!(
            Identity::Unauthenticated("10.0.0.1:7000").to_string(),
            "unauthenticated 10.0.0.1:7000"
        );
    }
}
