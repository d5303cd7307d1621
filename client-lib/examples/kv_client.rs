//! Calls the `kv` service (see `kv_server`) on a target daemon.
//!
//! ```text
//! kv_client --socket PATH TARGET                 # a short demo of every function
//! kv_client --socket PATH TARGET put KEY VALUE   # one call; prints the result
//! kv_client --socket PATH TARGET get KEY
//! kv_client --socket PATH TARGET delete KEY
//! kv_client --socket PATH TARGET incr KEY
//! ```
//!
//! TARGET is the serving daemon's `host:port` (or a service name configured in rpcd).
//! Exit status: 0 on success, 1 when the call failed (the error is printed on stderr).

// The client uses only the generated stub, not the store.
#[allow(dead_code)]
mod kv_service;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kv_service::KvClient;
use rpcd_client::{CallOptions, Client, ClientOptions};

#[derive(Debug, Parser)]
#[command(about = "Call the kv service through rpcd")]
struct Args {
    /// rpcd's socket (default: RPCD_SOCKET, the system socket, then the per-user one).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Deadline of each call, in milliseconds (default: the daemon's).
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// The serving daemon: `host:port` or a configured service name.
    target: String,
    #[command(subcommand)]
    verb: Option<Verb>,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Set KEY to VALUE; prints the previous value or `(none)`.
    Put { key: String, value: String },
    /// Print the value of KEY or `(none)`.
    Get { key: String },
    /// Remove KEY; prints `true` if it was there.
    Delete { key: String },
    /// Add 1 to KEY; prints the new value.
    Incr { key: String },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kv_client: {err}");
            ExitCode::FAILURE
        }
    }
}

fn show(value: Option<String>) -> String {
    value.unwrap_or_else(|| "(none)".into())
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let options = ClientOptions::named("kv_client").with_call(CallOptions::new(
        args.deadline_ms.map(Duration::from_millis),
        false,
    ));
    let client = match &args.socket {
        Some(socket) => Client::connect_with(socket, options)?,
        None => Client::connect_default_with(options)?,
    };
    let kv = KvClient::new(&client, args.target.as_str());
    match args.verb {
        Some(Verb::Put { key, value }) => println!("{}", show(kv.put(key, value)?)),
        Some(Verb::Get { key }) => println!("{}", show(kv.get(key)?)),
        Some(Verb::Delete { key }) => println!("{}", kv.delete(key)?),
        Some(Verb::Incr { key }) => println!("{}", kv.incr(key)?),
        None => demo(&kv)?,
    }
    Ok(())
}

/// Every function once, printing what it does.
fn demo(kv: &KvClient) -> Result<(), rpcd_client::CallError> {
    println!("kv on {}", kv.target());
    println!(
        "put greeting=hello -> {}",
        show(kv.put("greeting", "hello")?)
    );
    println!("get greeting -> {}", show(kv.get("greeting")?));
    let first = kv.incr("demo.counter")?;
    let second = kv.incr("demo.counter")?;
    println!("incr demo.counter -> {first}, then {second}");
    match kv.incr("greeting") {
        Err(err) => println!("incr greeting -> {err}"),
        Ok(n) => println!("incr greeting -> {n} (unexpected)"),
    }
    println!("delete greeting -> {}", kv.delete("greeting")?);
    println!("get greeting -> {}", show(kv.get("greeting")?));
    Ok(())
}
