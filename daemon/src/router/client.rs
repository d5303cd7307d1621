//! The app side of the socket protocol: the handshake, registration, calls,
//! results and the daemon queries (`docs/ipc-protocol.md`).

use std::time::Instant;

use rpcd_client::ipc::{ClientMsg, DaemonMsg, ErrorCode, PROTOCOL_VERSION};
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
            ClientMsg::Register { id, function } => {
                let max = self.settings.limits.functions_max;
                let uid = self.apps.get(conn).map_or(u32::MAX, |a| a.cred.uid);
                let result = self
                    .check_local(now, conn, Want::Register(&function))
                    .and_then(|()| self.registry.register(now, conn, uid, &function, max));
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
            } => {
                if let Some(want) = Want::of_call(&function) {
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
        }
    }

    /// Before the handshake only `hello` is allowed.
    fn on_first_msg(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        let ClientMsg::Hello { id, version, name } = msg else {
            return self.fatal(
                now,
                conn,
                ErrorCode::ProtocolError,
                "the first frame must be hello".into(),
            );
        };
        if version != PROTOCOL_VERSION {
            return self.fatal(
                now,
                conn,
                ErrorCode::VersionMismatch,
                format!(
                    "protocol version {version} is not supported; this daemon speaks {PROTOCOL_VERSION}"
                ),
            );
        }
        if let Some(a) = self.apps.get_mut(conn) {
            debug!(conn = %conn, %name, pid = a.cred.pid, uid = a.cred.uid, "app connected");
            a.name = Some(name);
        }
        let reply = DaemonMsg::HelloOk {
            id,
            version: PROTOCOL_VERSION,
            daemon: format!("rpcd {}", env!("CARGO_PKG_VERSION")),
            listen: self.me.to_string(),
            epoch: self.endpoint.epoch(),
        };
        self.frame(conn, reply);
    }
}

/// The answer to a request that either succeeds with nothing to say or fails.
fn done_or_failed(id: u64, result: Result<(), super::Failure>) -> DaemonMsg {
    match result {
        Ok(()) => DaemonMsg::Done { id },
        Err(f) => DaemonMsg::Failed {
            id,
            code: f.code,
            message: f.message,
        },
    }
}
