//! `rpcctl`: the operator's command line for rpcd.
//!
//! A thin binary over `rpcd-client`'s blocking [`Connection`]: parse the command line, turn
//! JSON arguments into MessagePack, make requests, print what comes back. `run` does the
//! work and returns an error with context; `main` maps it to a documented exit status and
//! error code ([`exit`]), reported as text or, with the global `--json`, as one JSON object
//! on standard error, and treats a broken pipe on standard output as a clean end. `keys`
//! needs no daemon: it makes and reads key files.

mod bench;
mod describe;
mod json;
mod keys;
mod monitor;
mod ping;
mod session;
mod show;
mod status;
mod trace;
mod value;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use rpcd_client::conn::{CallOptions, Connection};
use rpcd_client::ipc::{NameEntry, Stats};
use serde_json::Value;

use rpcctl::{cli, exit};

use crate::cli::{CallArgs, Cli, Command, KeysCommand, Payload};

/// The name rpcctl announces to the daemon in its handshake.
const CLIENT_NAME: &str = "rpcctl";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return refused(&err),
    };
    let json = cli.json;
    match run(cli) {
        Ok(status) => ExitCode::from(status),
        Err(err) if exit::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            exit::report(&err, json);
            ExitCode::from(exit::status(&err))
        }
    }
}

/// A command line clap did not run: `--help` and `--version` (status 0, always text), or a
/// usage error, reported as JSON when `--json` is among the options.
fn refused(err: &clap::Error) -> ExitCode {
    if err.exit_code() == 0 || !cli::json_requested(std::env::args_os()) {
        // A failed print (closed pipe) changes nothing about the status.
        let _ = err.print();
        return ExitCode::from(if err.exit_code() == 0 {
            exit::SUCCESS
        } else {
            exit::USAGE
        });
    }
    // clap's text: `error: what`, indented details, then a usage section after a blank
    // line. The message is the part before the blank line, on one line.
    let text = err.render().to_string();
    let message = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    exit::report_parts(exit::CODE_USAGE, message, exit::USAGE, true);
    ExitCode::from(exit::USAGE)
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let json = cli.json;
    let socket = cli
        .socket
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_default();
    match cli.command {
        Command::Call(args) => call(&socket, args, json),
        Command::List { target, long } => list(&socket, target.as_deref(), long, json),
        Command::Describe { target, function } => {
            describe_cmd(&socket, &target, function.as_deref(), json)
        }
        Command::Ping(args) => ping::run(&connect(&socket)?, &args, json),
        Command::Stats { target, peers } => stats(&socket, target.as_deref(), peers, json),
        Command::Names => names(&socket, json),
        Command::Monitor(args) => {
            let path = connect(&socket)?.path().to_owned();
            let filters = monitor::Filters {
                function: args.function,
                peer: args.peer,
            };
            monitor::run(&path, filters, json)
        }
        Command::Status => status::status(&connect(&socket)?, json),
        Command::Version => status::version(connect(&socket).ok().as_ref(), json),
        Command::Completions { shell } => completions(shell, json),
        Command::Bench(args) => {
            let payload = encode_payload(&args.payload)?;
            bench::run(&connect(&socket)?, &args, payload, json)
        }
        Command::Keys(KeysCommand::Generate { out }) => keys::generate(out.as_deref(), json),
        Command::Keys(KeysCommand::Public { file }) => keys::public(&file, json),
    }
}

fn connect(socket: &Path) -> anyhow::Result<Connection> {
    // No --socket (an empty path): look where a daemon may listen.
    if socket.as_os_str().is_empty() {
        return Ok(Connection::connect_default(CLIENT_NAME)?);
    }
    Ok(Connection::connect(socket, CLIENT_NAME)?)
}

/// Parses and encodes the arguments of a call, before any connection is made, so bad input
/// is reported the same whether a daemon runs or not.
fn encode_payload(payload: &Payload) -> anyhow::Result<Vec<u8>> {
    value::encode_args(&parse_payload(payload)?)
}

fn parse_payload(payload: &Payload) -> anyhow::Result<Vec<Value>> {
    Ok(match &payload.args_file {
        Some(path) => value::read_args_file(path)?,
        None => value::parse_args(&payload.args)?,
    })
}

/// Asks the target what the function declares (unless `--no-check`), checks the arguments
/// against its signature — a mismatch is a usage error and nothing is sent — and takes its
/// declared deadline (when `--deadline` is not given) and idempotency
/// (`docs/rpc-layer.md`, declarations).
fn call(socket: &Path, args: CallArgs, json: bool) -> anyhow::Result<u8> {
    let values = parse_payload(&args.payload)?;
    let payload = value::encode_args(&values)?;
    let conn = connect(socket)?;
    if args.trace {
        // The blocking client has no traced call: a raw session on the same socket.
        let path = conn.path().to_owned();
        drop(conn);
        let call = trace::TracedCall {
            target: &args.target,
            function: &args.function,
            args: payload,
            deadline: args.opts.deadline,
            idempotent: args.opts.idempotent,
        };
        return trace::run(&path, call, json);
    }
    let mut opts = CallOptions::default();
    opts.deadline = args.opts.deadline;
    opts.idempotent = args.opts.idempotent;
    // The built-ins declare nothing: no lookup for them.
    if !args.no_check && !args.function.starts_with("rpcd.") {
        let looked_up = describe::fetch(
            &conn,
            &args.target,
            Some(&args.function),
            args.opts.deadline,
        );
        match looked_up {
            Ok(infos) => {
                if let Some(info) = infos.iter().find(|i| i.function == args.function) {
                    if let Some(sig) = &info.signature {
                        describe::check_args(&args.function, sig, &values)?;
                    }
                    if let Some(idempotent) = info.idempotent {
                        if args.opts.idempotent && !idempotent {
                            eprintln!(
                                "rpcctl: note: {} is declared not idempotent: it is not \
                                 retried on another daemon",
                                args.function
                            );
                        }
                        opts.idempotent = idempotent;
                    }
                    opts.deadline = opts
                        .deadline
                        .or(info.deadline_ms.map(std::time::Duration::from_millis));
                }
            }
            Err(err) if describe::lookup_failure_is_benign(&err) => {}
            Err(err) => {
                return Err(err.context(format!(
                    "{} on {} failed (looking up its signature; nothing was sent)",
                    args.function, args.target
                )))
            }
        }
    }
    let reply = conn
        .call(&args.target, &args.function, payload, opts)
        .with_context(|| format!("{} on {} failed", args.function, args.target))?;
    let reply = value::decode_reply(&reply)
        .with_context(|| format!("{} on {} replied", args.function, args.target))?;
    exit::print(&value::render(&reply, json))?;
    Ok(exit::SUCCESS)
}

fn list(socket: &Path, target: Option<&str>, long: bool, json: bool) -> anyhow::Result<u8> {
    let conn = connect(socket)?;
    if long {
        let local = conn.daemon().listen.clone();
        let target = target.unwrap_or(&local);
        let infos = describe::fetch(&conn, target, None, None)
            .with_context(|| format!("rpcd.describe on {target} failed"))?;
        let text = if json {
            let value = serde_json::to_value(&infos).context("cannot show the list as JSON")?;
            value::render(&value, true)
        } else {
            describe::long_list(&infos)
        };
        exit::print(&text)?;
        return Ok(exit::SUCCESS);
    }
    let functions = match target {
        None => conn.list().context("list on the local rpcd failed")?,
        Some(target) => call_builtin(&conn, target, "rpcd.list")?,
    };
    let text = if json {
        value::render(&Value::from(functions), true)
    } else {
        functions.iter().map(|f| format!("{f}\n")).collect()
    };
    exit::print(&text)?;
    Ok(exit::SUCCESS)
}

fn describe_cmd(
    socket: &Path,
    target: &str,
    function: Option<&str>,
    json: bool,
) -> anyhow::Result<u8> {
    let conn = connect(socket)?;
    let infos = describe::fetch(&conn, target, function, None)
        .with_context(|| format!("rpcd.describe on {target} failed"))?;
    let text = if json {
        let value = serde_json::to_value(&infos).context("cannot show the functions as JSON")?;
        value::render(&value, true)
    } else {
        describe::text(&infos)
    };
    exit::print(&text)?;
    Ok(exit::SUCCESS)
}

fn stats(socket: &Path, target: Option<&str>, peers: bool, json: bool) -> anyhow::Result<u8> {
    let conn = connect(socket)?;
    let stats: Stats = match target {
        None => conn.stats().context("stats on the local rpcd failed")?,
        Some(target) => call_builtin(&conn, target, "rpcd.stats")?,
    };
    let text = match (peers, json) {
        (false, false) => show::stats(&stats),
        (true, false) => show::peers(&stats),
        (false, true) => value::render(&json::stats(&stats), true),
        (true, true) => {
            let rows = stats.peers.iter().map(json::peer).collect();
            value::render(&Value::Array(rows), true)
        }
    };
    exit::print(&text)?;
    Ok(exit::SUCCESS)
}

fn names(socket: &Path, json: bool) -> anyhow::Result<u8> {
    let conn = connect(socket)?;
    let local = conn.daemon().listen.clone();
    let names: Vec<NameEntry> = call_builtin(&conn, &local, "rpcd.names")?;
    let text = if json {
        let value = serde_json::to_value(&names).context("cannot show the names as JSON")?;
        value::render(&value, true)
    } else {
        show::names(&names)
    };
    exit::print(&text)?;
    Ok(exit::SUCCESS)
}

fn completions(shell: clap_complete::Shell, json: bool) -> anyhow::Result<u8> {
    // Generated into memory first: clap_complete panics on a failed write, and a closed
    // pipe must end quietly.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rpcctl", &mut script);
    let script = String::from_utf8(script).context("completion script is not UTF-8")?;
    if json {
        let doc = serde_json::json!({"shell": shell.to_string(), "script": script});
        exit::print(&value::render(&doc, true))?;
    } else {
        exit::print(&script)?;
    }
    Ok(exit::SUCCESS)
}

/// Calls a built-in function (no arguments) on `target` and decodes its MessagePack reply.
fn call_builtin<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    target: &str,
    function: &str,
) -> anyhow::Result<T> {
    let reply = conn
        .call(
            target,
            function,
            value::encode_args(&[])?,
            CallOptions::default(),
        )
        .with_context(|| format!("{function} on {target} failed"))?;
    rmp_serde::from_slice(&reply).map_err(|err| {
        exit::BadReply(format!(
            "{function} on {target} returned an unexpected reply: {err}"
        ))
        .into()
    })
}
