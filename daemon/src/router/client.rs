//! The app side of the socket protocol: the handshake, registration, calls,
//! results and the daemon queries (`docs/ipc-protocol.md`).

use std::time::Instant;

use rpcd_client::ipc::{
    session_version, ClientMsg, DaemonMsg, Declaration, ErrorCode, Limits, Signature,
    CLIENT_MSG_VALUES_MAX, NESTING_MAX, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};
use tracing::debug;

use super::calls::CallRequest;
use super::policy::Want;
use super::types::{ConnId, InvId};
use super::Router;

impl Router {
    pub(super) fn on_client_msg(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        let greeted = self.apps.get(conn).is_some_and(|a| a.greeted());
        if !greeted {
            return self.on_first_msg(now, conn, msg);
        }
        match msg {
            ClientMsg::Hello { .. } => self.fatal(
                now,
                conn,
                ErrorCode::ProtocolError,
                "hello sent twice".into(),
            ),
            ClientMsg::Register {
                id,
                function,
                idempotent,
                deadline_ms,
                signature,
            } => {
                let max = self.settings.limits.functions_max;
                let uid = self.apps.get(conn).map_or(u32::MAX, |a| a.cred.uid);
                let declaration = declaration(idempotent, deadline_ms, signature.as_deref());
                let result = declaration.and_then(|declaration| {
                    self.check_local(now, conn, Want::Register(&function))
                        .and_then(|()| self.registry.register(now, conn, uid, &function, max))?;
                    self.registry.declare(&function, declaration);
                    Ok(())
                });
                if result.is_ok() {
                    if let Some(a) = self.apps.get_mut(conn) {
                        a.functions.insert(function);
                    }
                }
                self.frame(conn, done_or_failed(id, result));
            }
            ClientMsg::Unregister { id, function } => {
                let result = self.registry.unregister(conn, &function);
                if result.is_ok() {
                    if let Some(a) = self.apps.get_mut(conn) {
                        a.functions.remove(&function);
                    }
                }
                self.frame(conn, done_or_failed(id, result));
            }
            ClientMsg::Call {
                id,
                target,
                function,
                args,
                deadline_ms,
                idempotent,
                trace,
            } => {
                if let Some(want) = Want::of_call(&function, &args) {
                    if let Err(f) = self.check_local(now, conn, want) {
                        return self.frame(conn, done_or_failed(id, Err(f)));
                    }
                }
                self.start_call(
                    now,
                    conn,
                    CallRequest {
                        client_id: id,
                        target,
                        function,
                        args,
                        deadline_ms,
                        idempotent,
                        trace,
                    },
                )
            }
            ClientMsg::Result {
                invocation,
                outcome,
            } => self.on_result(now, conn, InvId(invocation), outcome),
            ClientMsg::List { id } => {
                if let Err(f) = self.check_local(now, conn, Want::Stats) {
                    return self.frame(conn, done_or_failed(id, Err(f)));
                }
                let functions = self.registry.list();
                self.frame(conn, DaemonMsg::List { id, functions });
            }
            ClientMsg::Stats { id } => {
                if let Err(f) = self.check_local(now, conn, Want::Stats) {
                    return self.frame(conn, done_or_failed(id, Err(f)));
                }
                let stats = self.stats(now);
                self.frame(conn, DaemonMsg::Stats { id, stats });
            }
            ClientMsg::Ping { id } => self.frame(conn, DaemonMsg::Pong { id }),
            ClientMsg::CancelCall { id } => self.cancel_call(now, conn, id),
            ClientMsg::Monitor { id, function, peer } => {
                let result = self.start_monitor(now, conn, id, function, peer);
                self.frame(conn, done_or_failed(id, result));
            }
        }
    }

    /// Before the handshake only `hello` is allowed.
    fn on_first_msg(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        let ClientMsg::Hello {
            id,
            version: app_max,
            version_min,
            name,
        } = msg
        else {
            return self.fatal(
                now,
                conn,
                ErrorCode::ProtocolError,
                "the first frame must be hello".into(),
            );
        };
        let app_min = version_min.unwrap_or(app_max);
        let ours = protocol_version_max();
        let Some(version) = session_version(app_min, app_max, PROTOCOL_VERSION_MIN, ours) else {
            let theirs = if app_min == app_max {
                format!("protocol version {app_max} is")
            } else {
                format!("protocol versions {app_min} to {app_max} are")
            };
            return self.fatal(
                now,
                conn,
                ErrorCode::VersionMismatch,
                format!(
                    "{theirs} not supported; this daemon speaks {PROTOCOL_VERSION_MIN} to {ours}"
                ),
            );
        };
        if let Some(a) = self.apps.get_mut(conn) {
            debug!(conn = %conn, %name, version, pid = a.cred.pid, uid = a.cred.uid, "app connected");
            a.name = Some(name);
        }
        let reply = DaemonMsg::HelloOk {
            id,
            version,
            daemon: format!("rpcd {}", env!("CARGO_PKG_VERSION")),
            listen: self.me.to_string(),
            epoch: self.endpoint.epoch(),
            // Version 1 had no limits in hello_ok, and its readers refuse unknown keys.
            limits: (version >= 2).then(|| self.limits()),
        };
        self.frame(conn, reply);
    }

    /// The bounds an app must respect, as `hello_ok` reports them.
    fn limits(&self) -> Limits {
        let l = &self.settings.limits;
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let mut limits = Limits::default();
        limits.frame_max = wide(l.frame_max);
        limits.payload_max = wide(self.settings.payload_max());
        limits.name_max = wide(super::FUNCTION_NAME_MAX);
        limits.values_max = wide(CLIENT_MSG_VALUES_MAX);
        limits.nesting_max = wide(NESTING_MAX);
        limits.calls_max = wide(l.calls_per_connection_max);
        limits.invocations_max = wide(l.invocations_per_app_max);
        limits.functions_max = wide(l.functions_max);
        limits.deadline_default_ms = millis(l.deadline_default);
        limits.deadline_max_ms = millis(l.deadline_max);
        limits
    }
}

/// The highest protocol version this daemon accepts in a `hello`: [`PROTOCOL_VERSION`],
/// or one more under the test hook `RPCD_TEST_WIRE_EXTRA=1` (`docs/ipc-protocol.md` §4),
/// which lets a test check that the negotiation picks the highest common version.
fn protocol_version_max() -> u32 {
    if crate::envelope::test_wire_extra() {
        PROTOCOL_VERSION + 1
    } else {
        PROTOCOL_VERSION
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The optional keys of `register`, read: a signature that does not decode, or a
/// deadline of zero, refuses the registration with `bad_request`.
fn declaration(
    idempotent: Option<bool>,
    deadline_ms: Option<u64>,
    signature: Option<&[u8]>,
) -> Result<Declaration, super::Failure> {
    let bad = |m: String| super::Failure::new(ErrorCode::BadRequest, m);
    if deadline_ms == Some(0) {
        return Err(bad("a declared deadline_ms is above 0".into()));
    }
    let signature = signature
        .map(Signature::decode)
        .transpose()
        .map_err(|e| bad(format!("register: {e}")))?;
    Ok(Declaration {
        idempotent,
        deadline_ms,
        signature,
    })
}

/// The answer to a request that either succeeds with nothing to say or fails.
fn done_or_failed(id: u64, result: Result<(), super::Failure>) -> DaemonMsg {
    match result {
        Ok(()) => DaemonMsg::Done { id },
        Err(f) => DaemonMsg::Failed {
            id,
            code: f.code,
            message: f.message,
            trace: None,
        },
    }
}
