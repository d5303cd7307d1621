//! The reader task of an async connection: reads the socket straight into its
//! [`FrameReader`] and routes each frame (a reply to the request waiting under its id, an
//! `invoke` to the bounded invocation queue, a `cancel` to the invocation it names).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::socket::ReadSide;
use super::{Closed, Shared, Work};
use crate::client::lock;
use crate::conn::LIVE_INVOCATIONS_MAX;
use crate::ipc::{try_encode_frame, ClientMsg, DaemonMsg, ErrorCode, FrameReader, Outcome};

/// The reader task: decodes frames until the connection closes, then wakes everyone.
pub(super) async fn read_loop(
    shared: Arc<Shared>,
    stream: ReadSide,
    mut frames: FrameReader,
    invocations: mpsc::Sender<Work>,
) {
    let reason = 'read: loop {
        loop {
            match frames.next_frame::<DaemonMsg>() {
                Ok(Some(msg)) => {
                    if let Some(reason) = route(&shared, msg, &invocations) {
                        break 'read reason;
                    }
                }
                Ok(None) => break,
                Err(err) => break 'read Closed::Protocol(format!("bad frame from rpcd: {err}")),
            }
        }
        if let Err(reason) = read_more(&stream, &mut frames).await {
            break reason;
        }
    };
    shared.close(reason);
    // Invocations not answered: nothing will; their handlers are told.
    for (_, cancel) in lock(&shared.live).drain() {
        let _ = cancel.send(true);
    }
}

/// One read from the socket straight into `frames` (no buffer of our own in between, so a
/// large frame is copied out of the socket once), waiting until the socket is readable;
/// `Err` is why the connection closes.
async fn read_more(stream: &ReadSide, frames: &mut FrameReader) -> Result<(), Closed> {
    loop {
        match stream.read_into(frames).await {
            Ok(0) => return Err(Closed::Disconnected),
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // The buffer is full of frames not taken (they are taken before each read).
            Err(err) if err.kind() == io::ErrorKind::OutOfMemory => {
                return Err(Closed::Protocol("frame buffer overflow".into()))
            }
            Err(_) => return Err(Closed::Disconnected),
        }
    }
}

/// Routes one frame from the daemon; returns why to close, if it says so.
fn route(shared: &Shared, msg: DaemonMsg, invocations: &mpsc::Sender<Work>) -> Option<Closed> {
    match msg {
        DaemonMsg::Invoke {
            invocation,
            function,
            args,
            caller,
            peer,
            deadline_ms,
            credentials,
        } => {
            let (cancel, cancelled) = watch::channel(false);
            let work = Work {
                invocation,
                function,
                args,
                caller,
                peer,
                deadline: Instant::now() + Duration::from_millis(deadline_ms.min(u32::MAX.into())),
                credentials,
                cancelled,
            };
            let refusal = {
                let mut live = lock(&shared.live);
                if live.len() >= LIVE_INVOCATIONS_MAX {
                    Some((ErrorCode::Overloaded, "too many invocations in progress"))
                } else {
                    live.insert(invocation, cancel);
                    match invocations.try_send(work) {
                        Ok(()) => None,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            live.remove(&invocation);
                            Some((ErrorCode::Overloaded, "invocation queue full"))
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            live.remove(&invocation);
                            Some((ErrorCode::ServerAppGone, "the serving app is closing"))
                        }
                    }
                }
            };
            if let Some((code, message)) = refusal {
                let answer = ClientMsg::Result {
                    invocation,
                    outcome: Outcome::Refused {
                        code,
                        message: message.to_owned(),
                    },
                };
                match try_encode_frame(&answer, shared.frame_max) {
                    Ok(frame) => return shared.send(frame).err().map(|_| Closed::Disconnected),
                    Err(err) => return Some(Closed::Protocol(err.to_string())),
                }
            }
            None
        }
        DaemonMsg::Cancel { invocation } => {
            if let Some(cancel) = lock(&shared.live).remove(&invocation) {
                let _ = cancel.send(true);
            }
            None
        }
        DaemonMsg::Fatal { code, message } => Some(Closed::Fatal { code, message }),
        other => {
            let id = match &other {
                DaemonMsg::HelloOk { id, .. }
                | DaemonMsg::Done { id }
                | DaemonMsg::CallOk { id, .. }
                | DaemonMsg::Failed { id, .. }
                | DaemonMsg::List { id, .. }
                | DaemonMsg::Stats { id, .. }
                | DaemonMsg::Pong { id } => *id,
                // A newer op this build does not know: not for a request of ours.
                _ => return None,
            };
            let waiter = lock(&shared.waiters).pending.remove(&id);
            // No waiter: it gave up before the reply came; drop the reply.
            if let Some(waiter) = waiter {
                let _ = waiter.send(other);
            }
            None
        }
    }
}
