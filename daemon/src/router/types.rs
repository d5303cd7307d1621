//! The router's vocabulary: ids as newtypes, where a piece of work came
//! from, how it failed, and what the router asks the shell to do.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use rpcd_client::ipc::{Credentials, DaemonMsg, ErrorCode};

use crate::payload::Payload;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// One local connection (an app), chosen by the shell.
    ConnId
);
id!(
    /// One outgoing call, chosen by this router; it is also the `call_id`
    /// of the request envelope sent to a peer.
    CallId
);
id!(
    /// A peer daemon's `call_id`: unique only together with the peer.
    RemoteCallId
);
id!(
    /// One invocation handed to a serving app (`invoke` / `result`).
    InvId
);
id!(
    /// One name lookup handed to the shell's resolver.
    LookupId
);

/// Who asked for a piece of work served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A peer daemon's call.
    Remote {
        /// The calling daemon.
        peer: SocketAddr,
        /// Its id for the call.
        call: RemoteCallId,
    },
    /// A call from an app of this daemon (short-circuit, no UDP).
    Local {
        /// The call.
        call: CallId,
    },
}

/// Hashed in two or three integer writes (see [`rpcd_transport::hash_addr`]): a peer
/// chooses its call ids, so maps keyed by an origin keep the seeded SipHash, which
/// `derive(Hash)` would feed in five or more.
impl Hash for Origin {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Origin::Remote { peer, call } => {
                rpcd_transport::hash_addr(peer, h);
                h.write_u64(call.0);
            }
            // Equal to some remote origin's hash at times: a collision, not an error.
            Origin::Local { call } => h.write_u64(call.0),
        }
    }
}

/// A reply sent to `peer` as message `msg`, until acknowledged or failed: hashed as
/// [`Origin`] is, for the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentReply {
    /// The peer the reply went to.
    pub peer: SocketAddr,
    /// Its message id there.
    pub msg: rpcd_transport::MsgId,
}

impl Hash for SentReply {
    fn hash<H: Hasher>(&self, h: &mut H) {
        rpcd_transport::hash_addr(&self.peer, h);
        self.msg.hash(h);
    }
}

/// A call's or an invocation's typed failure: a stable code and a message
/// for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The kernel's word on who opened a local connection (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerCred {
    /// Process id at connect time.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// What the router asks of the shell besides datagrams.
// Frames are nearly every output: boxing them would allocate once per frame
// to shrink the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    /// Write this message to the connection.
    Frame(ConnId, DaemonMsg),
    /// Write this `invoke` to the connection: a [`DaemonMsg::Invoke`] whose arguments are
    /// still where they arrived (a request's in its delivered message), for the shell to
    /// write from there.
    Invoke(ConnId, Invoke),
    /// Write what is queued (best effort), then close the connection. The
    /// router has already forgotten it: do not report it closed.
    Close(ConnId),
    /// Resolve these `host:port` (or `srv:NAME`) strings off the event loop and answer with
    /// [`Router::handle_lookup`](super::Router::handle_lookup).
    Lookup(LookupRequest),
}

/// A [`DaemonMsg::Invoke`] with its arguments as a [`Payload`]: the same fields, the same
/// frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoke {
    /// Daemon-chosen id to echo in the `Result`.
    pub invocation: u64,
    /// The registered function to run.
    pub function: String,
    /// The arguments, where they arrived.
    pub args: Payload,
    /// Where the call came from.
    pub caller: String,
    /// Who called.
    pub peer: String,
    /// Milliseconds left before the caller gives up.
    pub deadline_ms: u64,
    /// A local caller's credentials.
    pub credentials: Option<Credentials>,
}

impl From<Invoke> for DaemonMsg {
    /// The message, its arguments where they are.
    fn from(i: Invoke) -> DaemonMsg {
        DaemonMsg::Invoke {
            invocation: i.invocation,
            function: i.function,
            args: i.args,
            caller: i.caller,
            peer: i.peer,
            deadline_ms: i.deadline_ms,
            credentials: i.credentials,
        }
    }
}

/// A name lookup for the shell's resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// Returned with the answer.
    pub id: LookupId,
    /// `host:port` or `srv:NAME` (a DNS SRV name) strings, resolved in order.
    pub targets: Vec<String>,
}

/// The resolver's answer to a [`LookupRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupAnswer {
    /// The request's id.
    pub id: LookupId,
    /// Per target, in order: what it resolved to, or the resolver's error.
    pub results: Vec<Result<Resolved, String>>,
}

/// What one target of a [`LookupRequest`] resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A `host:port`: its first address (IPv4 preferred).
    Addr(SocketAddr),
    /// An `srv:` name: its records and their TTL.
    Srv(super::srv::SrvAnswer),
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn origins_and_sent_replies_hash_every_part_under_the_seeded_hash() {
        let s = RandomState::new();
        let (p, q): (SocketAddr, SocketAddr) = (
            "10.0.0.1:7000".parse().expect("addr"),
            "[fe80::1%2]:7000".parse().expect("addr"),
        );
        let remote = |peer, call| Origin::Remote {
            peer,
            call: RemoteCallId(call),
        };
        assert_eq!(s.hash_one(remote(p, 5)), s.hash_one(remote(p, 5)));
        assert_ne!(s.hash_one(remote(p, 5)), s.hash_one(remote(p, 6)));
        assert_ne!(s.hash_one(remote(p, 5)), s.hash_one(remote(q, 5)));
        let other: SocketAddr = "10.0.0.1:7001".parse().expect("addr");
        assert_ne!(s.hash_one(remote(p, 5)), s.hash_one(remote(other, 5)));
        assert_ne!(
            s.hash_one(remote(p, 5)),
            RandomState::new().hash_one(remote(p, 5)),
            "keyed per map"
        );
        let reply = |peer, msg: u64| SentReply {
            peer,
            msg: msg.into(),
        };
        let msgs = [reply(p, 1), reply(q, 1), reply(p, 2)];
        assert_eq!(s.hash_one(msgs[0]), s.hash_one(msgs[0]));
        assert_ne!(s.hash_one(msgs[0]), s.hash_one(msgs[1]));
        assert_ne!(s.hash_one(msgs[0]), s.hash_one(msgs[2]));
    }
}
