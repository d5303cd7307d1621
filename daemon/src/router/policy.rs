//! The `[access]` policy's decisions (`docs/security.md`, "Local access"):
//! who may register, call and read the daemon's tables. No rule at all is
//! no policy (today's behaviour for whoever reaches the socket); once a rule
//! exists, what no rule allows is denied, counted by reason and logged at
//! most once a second with the caller's credentials.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{ErrorCode, LOCAL_CALLER};
use tracing::warn;

use crate::settings::policy::glob_match;
use crate::settings::{AccessSettings, Rule};

use super::builtins::Builtin;
use super::types::{ConnId, Failure, PeerCred};
use super::Router;

/// Shortest time between two refusal log lines; the refusals in between
/// are counted and reported with the next line.
pub const DENIED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want<'a> {
    /// Register a function name.
    Register(&'a str),
    /// Call a function.
    Call(&'a str),
    /// Read stats, the function list or the naming table.
    Stats,
}

impl<'a> Want<'a> {
    /// What calling `function` with `args` asks for: the tables for the
    /// built-ins that report them, nothing for `rpcd.ping`, `rpcd.echo` and
    /// `rpcd.describe` of one function (always allowed: it tells no more
    /// than a call to that function would, and `rpcctl call` asks it first).
    pub(super) fn of_call(function: &'a str, args: &[u8]) -> Option<Want<'a>> {
        match Builtin::parse(function) {
            Some(Builtin::Ping | Builtin::Echo) => None,
            Some(Builtin::Describe)
                if matches!(super::builtins::describe_args(args), Ok(Some(_))) =>
            {
                None
            }
            Some(Builtin::List | Builtin::Stats | Builtin::Names | Builtin::Describe) => {
                Some(Want::Stats)
            }
            None => Some(Want::Call(function)),
        }
    }
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject<'a> {
    /// An app on the local socket, by the kernel's credentials.
    Local(PeerCred),
    /// A remote daemon by its `[peers]` name; `""` when not authenticated.
    Remote(&'a str),
}

/// Whether `access` lets `who` do `want`.
pub(super) fn allows(access: &AccessSettings, who: Subject<'_>, want: Want<'_>) -> bool {
    access.rules.is_empty()
        || access
            .rules
            .iter()
            .any(|r| covers(r, who) && grants(r, want))
}

fn covers(rule: &Rule, who: Subject<'_>) -> bool {
    match who {
        Subject::Local(cred) => {
            rule.any_user
                || rule.users.contains(&cred.uid)
                || rule
                    .groups
                    .iter()
                    .any(|g| g.gid == cred.gid || g.members.contains(&cred.uid))
        }
        Subject::Remote(name) => rule.peers.iter().any(|p| p == "*" || (p == name)),
    }
}

fn grants(rule: &Rule, want: Want<'_>) -> bool {
    match want {
        Want::Register(f) => rule.register.iter().any(|g| glob_match(g, f)),
        Want::Call(f) => rule.call.iter().any(|g| glob_match(g, f)),
        Want::Stats => rule.stats,
    }
}

/// Refusals by reason, and the log limiter.
#[derive(Debug, Default)]
pub(super) struct Denials {
    /// Refusals by reason: `register`, `call`, `stats`, `remote_call`,
    /// `remote_stats`.
    pub counts: BTreeMap<String, u64>,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl Router {
    /// Whether the app on `conn` may do `want`. A refusal is counted, logged
    /// (rate-limited) and returned as the `access_denied` failure to send.
    pub(super) fn check_local(
        &mut self,
        now: Instant,
        conn: ConnId,
        want: Want<'_>,
    ) -> Result<(), Failure> {
        let cred = self.apps.get(conn).map(|a| a.cred).unwrap_or_default();
        if allows(&self.settings.access, Subject::Local(cred), want) {
            return Ok(());
        }
        let (reason, what) = match want {
            Want::Register(f) => ("register", format!("register {f}")),
            Want::Call(f) => ("call", format!("call {f}")),
            Want::Stats => ("stats", "read the daemon's stats and tables".to_owned()),
        };
        self.count_denied(now, reason, || {
            warn!(
                conn = %conn, uid = cred.uid, gid = cred.gid, pid = cred.pid, %what,
                "access denied by the [access] policy"
            )
        });
        Err(Failure::new(
            ErrorCode::AccessDenied,
            format!("uid {} may not {what} on this daemon", cred.uid),
        ))
    }

    /// Whether the remote daemon at `addr` may do `want` here.
    pub(super) fn check_remote(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        want: Want<'_>,
    ) -> Result<(), Failure> {
        // As in `who_called`: a configured name never passes for "local".
        let name = match self.endpoint.peer_name(addr) {
            Some(name) if name != LOCAL_CALLER => name.to_owned(),
            _ => String::new(),
        };
        if allows(&self.settings.access, Subject::Remote(&name), want) {
            return Ok(());
        }
        let (reason, what) = match want {
            Want::Register(f) | Want::Call(f) => ("remote_call", format!("call {f}")),
            Want::Stats => (
                "remote_stats",
                "read the daemon's stats and tables".to_owned(),
            ),
        };
        let who = if name.is_empty() {
            format!("unauthenticated {addr}")
        } else {
            format!("peer {name}")
        };
        self.count_denied(
            now,
            reason,
            || warn!(peer = %name, %addr, %what, "access denied by the [access] policy"),
        );
        Err(Failure::new(
            ErrorCode::AccessDenied,
            format!("{who} may not {what} on {}", self.me),
        ))
    }

    /// Count a refusal; log it unless a line went out less than
    /// [`DENIED_LOG_INTERVAL`] ago.
    fn count_denied(&mut self, now: Instant, reason: &str, log: impl FnOnce()) {
        let d = &mut self.denials;
        *d.counts.entry(reason.to_owned()).or_default() += 1;
        let due = d
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= DENIED_LOG_INTERVAL);
        if !due {
            d.unlogged += 1;
            return;
        }
        if d.unlogged > 0 {
            warn!(
                suppressed = d.unlogged,
                "access denied {} more times since the last such line", d.unlogged
            );
        }
        d.last_log = Some(now);
        d.unlogged = 0;
        log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::policy::Group;

    fn cred(uid: u32, gid: u32) -> PeerCred {
        PeerCred { pid: 1, uid, gid }
    }

    #[test]
    fn no_rule_allows_everything_and_a_rule_denies_the_rest() {
        let mut a = AccessSettings::default();
        let alice = Subject::Local(cred(1000, 1000));
        assert!(allows(&a, alice, Want::Register("kv.get")));
        assert!(allows(&a, Subject::Remote(""), Want::Stats));
        a.rules.push(Rule {
            users: vec![1000],
            register: vec!["kv.*".into()],
            call: vec!["kv.get".into()],
            ..Rule::default()
        });
        a.rules.push(Rule {
            groups: vec![Group {
                gid: 50,
                members: vec![2000],
            }],
            stats: true,
            ..Rule::default()
        });
        a.rules.push(Rule {
            peers: vec!["east".into()],
            call: vec!["kv.get".into()],
            ..Rule::default()
        });
        assert!(allows(&a, alice, Want::Register("kv.put")));
        assert!(!allows(&a, alice, Want::Register("db.put")));
        assert!(allows(&a, alice, Want::Call("kv.get")));
        assert!(!allows(&a, alice, Want::Call("kv.put")));
        assert!(!allows(&a, alice, Want::Stats));
        // In the group by primary gid, or as a listed member.
        assert!(allows(&a, Subject::Local(cred(3000, 50)), Want::Stats));
        assert!(allows(&a, Subject::Local(cred(2000, 2000)), Want::Stats));
        assert!(!allows(&a, Subject::Local(cred(3000, 3000)), Want::Stats));
        assert!(allows(&a, Subject::Remote("east"), Want::Call("kv.get")));
        assert!(!allows(&a, Subject::Remote("east"), Want::Call("kv.put")));
        assert!(!allows(&a, Subject::Remote("west"), Want::Call("kv.get")));
        assert!(!allows(&a, Subject::Remote(""), Want::Call("kv.get")));
        // A local rule never covers a remote caller, nor the reverse.
        assert!(!allows(
            &a,
            Subject::Local(cred(1000, 1000)),
            Want::Call("x")
        ));
        assert_eq!(Want::of_call("rpcd.ping", &[]), None);
        assert_eq!(Want::of_call("rpcd.names", &[]), Some(Want::Stats));
        assert_eq!(Want::of_call("kv.get", &[]), Some(Want::Call("kv.get")));
        assert_eq!(Want::of_call("rpcd.describe", &[0x90]), Some(Want::Stats));
        let one = rmp_serde::to_vec(&["kv.get"]).expect("encode");
        assert_eq!(Want::of_call("rpcd.describe", &one), None);
    }
}
