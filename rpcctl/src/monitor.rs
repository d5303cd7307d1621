//! `rpcctl monitor`: the calls passing through the local daemon, live, like
//! `busctl monitor` (`docs/cli.md`, "monitor"). One line per event, or one JSON object
//! per line with `--json`; it runs until the daemon closes the connection or the user
//! interrupts it.

use std::path::Path;

use anyhow::Context;
use rpcd_client::conn::RequestError;
use rpcd_client::ipc::{ClientMsg, DaemonMsg, MonitorEvent};

use crate::session::Session;

/// What to watch.
#[derive(Debug)]
pub struct Filters {
    pub function: Option<String>,
    pub peer: Option<String>,
}

/// Watch until the stream ends.
pub fn run(path: &Path, filters: Filters, json: bool) -> anyhow::Result<u8> {
    let mut s = Session::open(path, crate::CLIENT_NAME)?;
    let id = 1;
    s.send(&ClientMsg::Monitor {
        id,
        function: filters.function,
        peer: filters.peer,
    })
    .context("sending monitor to rpcd")?;
    loop {
        match s.recv()? {
            Some(DaemonMsg::Done { id: i }) if i == id => break,
            Some(DaemonMsg::Failed {
                id: i,
                code,
                message,
                ..
            }) if i == id => {
                return Err(anyhow::Error::new(RequestError::Remote { code, message })
                    .context("monitor on the local rpcd failed"))
            }
            Some(DaemonMsg::Fatal { code, message }) => {
                return Err(RequestError::Fatal { code, message }.into())
            }
            Some(_) => {}
            None => return Err(RequestError::Disconnected.into()),
        }
    }
    while let Some(msg) = s.recv()? {
        if let DaemonMsg::Event { id: i, event } = msg {
            if i != id {
                continue;
            }
            let line = if json {
                let mut l = serde_json::to_string(&event).context("encoding an event")?;
                l.push('\n');
                l
            } else {
                render(&event)
            };
            crate::exit::print(&line)?;
        }
    }
    Ok(crate::exit::SUCCESS)
}

/// One event for a human.
pub fn render(e: &MonitorEvent) -> String {
    let t = format!("{}.{:06}", e.time_us / 1_000_000, e.time_us % 1_000_000);
    let arrow = match e.direction.as_str() {
        "out" => "->",
        "in" => "<-",
        _ => "  ",
    };
    match e.kind.as_str() {
        "start" => format!(
            "{t:>14} {arrow} start {} {} peer={} args={}B\n",
            e.call, e.function, e.peer, e.args_bytes
        ),
        "end" => format!(
            "{t:>14} {arrow} end   {} {} peer={} {} in {}.{:03} ms args={}B reply={}B\n",
            e.call,
            e.function,
            e.peer,
            e.code,
            e.duration_us / 1000,
            e.duration_us % 1000,
            e.args_bytes,
            e.reply_bytes
        ),
        "missed" => format!(
            "{t:>14}    missed {} events (this monitor read too slowly)\n",
            e.missed
        ),
        other => format!("{t:>14}    {other}\n"),
    }
}
