//! `rpcctl call --trace`: the call made with `trace: true` on a raw session, then its
//! reply and its timeline across both daemons (`docs/cli.md`, "call --trace").

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rpcd_client::conn::RequestError;
use rpcd_client::ipc::{CallTrace, ClientMsg, DaemonMsg};
use serde_json::{json, Value};

use crate::session::Session;
use crate::value;

/// What to call.
#[derive(Debug)]
pub struct TracedCall<'a> {
    pub target: &'a str,
    pub function: &'a str,
    pub args: Vec<u8>,
    pub deadline: Option<Duration>,
    pub idempotent: bool,
}

/// Make the call on the daemon at `path`; print the reply (if any) and the trace. A failed
/// call prints its trace, then returns the daemon's error (exit status by its code).
pub fn run(path: &Path, call: TracedCall<'_>, json: bool) -> anyhow::Result<u8> {
    let mut s = Session::open(path, crate::CLIENT_NAME)?;
    let id = 1;
    s.send(&ClientMsg::Call {
        id,
        target: call.target.to_owned(),
        function: call.function.to_owned(),
        args: call.args.into(),
        deadline_ms: call
            .deadline
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        idempotent: call.idempotent,
        trace: true,
    })
    .context("sending the call to rpcd")?;
    let (outcome, trace) = loop {
        match s.recv()? {
            Some(DaemonMsg::CallOk { id: i, data, trace }) if i == id => break (Ok(data), trace),
            Some(DaemonMsg::Failed {
                id: i,
                code,
                message,
                trace,
            }) if i == id => break (Err(RequestError::Remote { code, message }), trace),
            Some(DaemonMsg::Fatal { code, message }) => {
                return Err(RequestError::Fatal { code, message }.into())
            }
            Some(_) => {}
            None => return Err(RequestError::Disconnected.into()),
        }
    };
    let what = || format!("{} on {} failed", call.function, call.target);
    let reply = match &outcome {
        Ok(data) => Some(
            value::decode_reply(data)
                .with_context(|| format!("{} on {} replied", call.function, call.target))?,
        ),
        Err(_) => None,
    };
    let trace = trace.map(|t| *t);
    let text = if json {
        let mut o = json!({ "trace": trace_json(trace.as_ref()) });
        if let Some(r) = &reply {
            o["reply"] = r.clone();
        }
        value::render(&o, true)
    } else {
        let mut t = reply
            .as_ref()
            .map(|r| value::render(r, false))
            .unwrap_or_default();
        t.push_str(&render(trace.as_ref(), call.function));
        t
    };
    crate::exit::print(&text)?;
    match outcome {
        Ok(_) => Ok(crate::exit::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context(what())),
    }
}

/// The trace as JSON: the IPC object as it came (`null` when the daemon sent none).
fn trace_json(trace: Option<&CallTrace>) -> Value {
    trace.map_or(Value::Null, |t| {
        serde_json::to_value(t).unwrap_or(Value::Null)
    })
}

/// The timeline for a human.
pub fn render(trace: Option<&CallTrace>, function: &str) -> String {
    let Some(t) = trace else {
        return "trace: the daemon sent none (a daemon older than traces?)\n".to_owned();
    };
    let mut o = String::new();
    let _ = writeln!(o, "trace of {function} on {}:", t.target);
    let _ = writeln!(
        o,
        "  {:>10}  resolve: {}",
        ms(t.resolve_us),
        if t.addresses.is_empty() {
            "-".to_owned()
        } else {
            t.addresses.join(", ")
        }
    );
    for (n, a) in t.attempts.iter().enumerate() {
        let sent = if a.address == "local" {
            "served by this daemon, no datagram".to_owned()
        } else if a.datagrams == 0 {
            "no datagram left this daemon (no answer to its handshake)".to_owned()
        } else {
            format!(
                "waited {} at this daemon, {} datagram(s), {} retransmitted",
                ms(a.queued_us),
                a.datagrams,
                a.retransmissions
            )
        };
        let _ = writeln!(
            o,
            "  {:>10}  attempt {} to {}: {sent}",
            ms(a.start_us),
            n + 1,
            a.address
        );
        if a.acked_us > 0 {
            let rtt: Vec<String> = a.rtt_us.iter().map(|r| ms(*r)).collect();
            let rtt = if rtt.is_empty() {
                "no RTT sample (retransmitted)".to_owned()
            } else {
                format!("RTT {}", rtt.join(", "))
            };
            let _ = writeln!(o, "  {:>10}  request acknowledged, {rtt}", ms(a.acked_us));
        }
        let _ = writeln!(
            o,
            "  {:>10}  attempt {} ended: {}",
            ms(a.end_us),
            n + 1,
            a.outcome
        );
    }
    match &t.serving {
        Some(s) => {
            let _ = writeln!(
                o,
                "  {:>10}  at the serving daemon: queued {}, handler {}, {} in all",
                "",
                ms(s.queued_us),
                ms(s.handler_us),
                ms(s.total_us)
            );
        }
        None => {
            let _ = writeln!(o, "  {:>10}  the serving daemon sent no times", "");
        }
    }
    let _ = writeln!(o, "  {:>10}  total", ms(t.total_us));
    o
}

/// Microseconds as milliseconds with three decimals.
fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}
