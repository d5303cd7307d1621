//! `rpcctl`: the operator's command line for rpcd.
//!
//! A thin binary over `rpcd-client`'s blocking [`Connection`]: parse the command line, turn
//! JSON arguments into MessagePack, make requests, print what comes back. `try_main` does the
//! work and returns an error with context; `main` maps it to a documented exit status
//! ([`exit`]) and treats a broken pipe on standard output as a clean end. `keys` needs no
//! daemon: it makes and reads key files.

mod bench;
mod cli;
mod exit;
mod keys;
mod ping;
mod show;
mod value;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use rpcd_client::conn::{CallOptions, Connection};
use rpcd_client::ipc::{NameEntry, Stats};
use serde_json::Value;

use crate::cli::{CallArgs, Cli, Command, KeysCommand, Payload};

/// The name rpcctl announces to the daemon in its handshake.
const CLIENT_NAME: &str = "rpcctl";

fn main() -> ExitCode {
    match try_main() {
        Ok(status) => ExitCode::from(status),
        Err(err) if exit::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // If stderr is gone too there is no one left to tell.
            let _ = writeln!(std::io::stderr(), "rpcctl: {}", exit::describe(&err));
            ExitCode::from(exit::status(&err))
        }
    }
}

fn try_main() -> anyhow::Result<u8> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` land here too, with status 0. A failed print (closed
            // pipe) changes nothing about the status.
            let _ = err.print();
            return Ok(if err.exit_code() == 0 {
                exit::SUCCESS
            } else {
                exit::USAGE
            });
        }
    };
    let socket = cli
        .socket
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_default();
    match cli.command {
        Command::Call(args) => call(&socket, args),
        Command::List { target, json } => list(&socket, target.as_deref(), json),
        Command::Ping(args) => ping::run(&connect(&socket)?, &args),
        Command::Stats { target, json } => stats(&socket, target.as_deref(), json),
        Command::Names { json } => names(&socket, json),
        Command::Completions { shell } => completions(shell),
        Command::Bench(args) => {
            let payload = encode_payload(&args.payload)?;
            bench::run(&connect(&socket)?, &args, payload)
        }
        Command::Keys(KeysCommand::Generate { out }) => keys::generate(out.as_deref()),
        Command::Keys(KeysCommand::Public { file }) => keys::public(&file),
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
    let args = match &payload.args_file {
        Some(path) => value::read_args_file(path)?,
        None => value::parse_args(&payload.args)?,
    };
    value::encode_args(&args)
}

fn call(socket: &Path, args: CallArgs) -> anyhow::Result<u8> {
    let payload = encode_payload(&args.payload)?;
    let conn = connect(socket)?;
    let opts = CallOptions {
        deadline: args.opts.deadline,
        idempotent: args.opts.idempotent,
    };
    let reply = conn
        .call(&args.target, &args.function, payload, opts)
        .with_context(|| format!("{} on {} failed", args.function, args.target))?;
    let reply = value::decode_reply(&reply)
        .with_context(|| format!("{} on {} replied", args.function, args.target))?;
    exit::print(&value::render(&reply, args.json))?;
    Ok(exit::SUCCESS)
}

fn list(socket: &Path, target: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let conn = connect(socket)?;
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

fn stats(socket: &Path, target: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let conn = connect(socket)?;
    let stats: Stats = match target {
        None => conn.stats().context("stats on the local rpcd failed")?,
        Some(target) => call_builtin(&conn, target, "rpcd.stats")?,
    };
    let text = if json {
        let value = serde_json::to_value(&stats).context("cannot show the counters as JSON")?;
        value::render(&value, true)
    } else {
        show::stats(&stats)
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

fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    // Generated into memory first: clap_complete panics on a failed write, and a closed
    // pipe must end quietly.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rpcctl", &mut script);
    let script = String::from_utf8(script).context("completion script is not UTF-8")?;
    exit::print(&script)?;
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
    rmp_serde::from_slice(&reply)
        .with_context(|| format!("{function} on {target} returned an unexpected reply"))
}
