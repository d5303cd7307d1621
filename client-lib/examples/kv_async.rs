//! The `kv` service on the async API (cargo feature `tokio`): `serve` serves it with async
//! handlers until SIGINT or SIGTERM; the other modes call it with the async stub
//! `KvAsyncClient`, which `#[service]` emits beside `KvClient`.
//!
//! ```text
//! kv_async --socket PATH serve                     # serve kv.put/get/delete/incr
//! kv_async --socket PATH call TARGET               # a short demo of every function
//! kv_async --socket PATH call TARGET get KEY       # one call; prints the result
//! kv_async --socket PATH fan TARGET N              # N concurrent tasks, each incr + get
//! ```
//!
//! It speaks the same functions as `kv_server` and `kv_client`: either side can be
//! swapped for the blocking one. Once serving it prints one line starting
//! `kv_async: serving`. Exit status: 0 on success, 1 when a call failed.

mod kv_service;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kv_service::{Kv, KvAsyncClient, KvClient, MemKv};
use rpcd_client::tokio::{Client, Server};
use rpcd_client::{CallError, ClientOptions};

#[derive(Debug, Parser)]
#[command(about = "The kv service through rpcd, on the async (tokio) API")]
struct Args {
    /// rpcd's socket (default: RPCD_SOCKET, the system socket, then the per-user one).
    #[arg(long)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve kv.* with async handlers until SIGINT/SIGTERM.
    Serve,
    /// Call kv on TARGET: a demo of every function, or one VERB.
    Call {
        /// The serving daemon: `host:port` or a configured service name.
        target: String,
        #[command(subcommand)]
        verb: Option<Verb>,
    },
    /// Run N concurrent tasks against TARGET, each `incr fan.<i>` then `get fan.<i>`.
    Fan { target: String, tasks: usize },
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

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kv_async: {err}");
            ExitCode::FAILURE
        }
    }
}

fn show(value: Option<String>) -> String {
    value.unwrap_or_else(|| "(none)".into())
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let options = ClientOptions::named("kv_async");
    let client = match &args.socket {
        Some(socket) => Client::connect_with(socket, options).await?,
        None => Client::connect_default_with(options).await?,
    };
    match args.mode {
        Mode::Serve => serve(&client).await?,
        Mode::Call { target, verb } => {
            let kv = KvAsyncClient::new(&client, target.as_str());
            match verb {
                Some(Verb::Put { key, value }) => println!("{}", show(kv.put(key, value).await?)),
                Some(Verb::Get { key }) => println!("{}", show(kv.get(key).await?)),
                Some(Verb::Delete { key }) => println!("{}", kv.delete(key).await?),
                Some(Verb::Incr { key }) => println!("{}", kv.incr(key).await?),
                None => demo(&kv).await?,
            }
        }
        Mode::Fan { target, tasks } => {
            fan(KvAsyncClient::new(&client, target.as_str()), tasks).await?
        }
    }
    Ok(())
}

/// Serves the store with async handlers (the store is in memory, so each handler is
/// quick; a real one would await its I/O).
async fn serve(client: &Client) -> Result<(), Box<dyn std::error::Error>> {
    let mut signals = Signals::new()?;
    let store = Arc::new(MemKv::default());
    let server = Server::new(client);
    let kv = Arc::clone(&store);
    server
        .register_fn("kv.put", move |(key, value): (String, String)| {
            let kv = Arc::clone(&kv);
            async move { Ok::<_, CallError>(kv.put(key, value)) }
        })
        .await?;
    let kv = Arc::clone(&store);
    server
        .register_fn("kv.get", move |(key,): (String,)| {
            let kv = Arc::clone(&kv);
            async move { Ok::<_, CallError>(kv.get(key)) }
        })
        .await?;
    let kv = Arc::clone(&store);
    server
        .register_fn("kv.delete", move |(key,): (String,)| {
            let kv = Arc::clone(&kv);
            async move { Ok::<_, CallError>(kv.delete(key)) }
        })
        .await?;
    let kv = Arc::clone(&store);
    server
        .register_fn("kv.incr", move |(key,): (String,)| {
            let kv = Arc::clone(&kv);
            async move { kv.incr(key) }
        })
        .await?;
    println!(
        "kv_async: serving {} through {} (rpcd at {})",
        KvClient::FUNCTIONS.join(", "),
        client.path().display(),
        client.daemon().listen,
    );
    let signal = signals.next().await;
    server.stop().await;
    println!("kv_async: stopped by {signal}");
    Ok(())
}

/// Every function once, printing what it does.
async fn demo(kv: &KvAsyncClient) -> Result<(), CallError> {
    println!(
        "put greeting=hello -> {}",
        show(kv.put("greeting", "hello").await?)
    );
    println!("get greeting -> {}", show(kv.get("greeting").await?));
    let first = kv.incr("demo.counter").await?;
    let second = kv.incr("demo.counter").await?;
    println!("incr demo.counter -> {first}, then {second}");
    match kv.incr("greeting").await {
        Err(err) => println!("incr greeting -> {err}"),
        Ok(n) => println!("incr greeting -> {n} (unexpected)"),
    }
    println!("delete greeting -> {}", kv.delete("greeting").await?);
    println!("get greeting -> {}", show(kv.get("greeting").await?));
    Ok(())
}

/// `tasks` concurrent tasks, each incrementing its own key and reading it back; prints
/// `fan: N tasks ok` when every task saw its own increment.
async fn fan(kv: KvAsyncClient, tasks: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..tasks {
        let kv = kv.clone();
        set.spawn(async move {
            let key = format!("fan.{i}");
            let n = kv.incr(key.as_str()).await?;
            let read = kv.get(key).await?;
            Ok::<_, CallError>((n, read))
        });
    }
    let mut ok = 0;
    while let Some(joined) = set.join_next().await {
        let (n, read) = joined??;
        if read != Some(n.to_string()) {
            return Err(format!("read {read:?} after incr returned {n}").into());
        }
        ok += 1;
    }
    println!("fan: {ok} tasks ok");
    Ok(())
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
