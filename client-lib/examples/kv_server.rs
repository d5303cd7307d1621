//! Serves the `kv` key-value service (`kv.put`, `kv.get`, `kv.delete`, `kv.incr`) through
//! the local rpcd until SIGINT or SIGTERM.
//!
//! ```text
//! cargo run -p rpcd-client --example kv_server -- --socket /tmp/rpcd-1000/rpcd.sock
//! ```
//!
//! Without `--socket` it tries `RPCD_SOCKET`, the system socket, then the per-user one. Once serving
//! it prints one line starting `kv_server: serving` on stdout. If rpcd restarts, the server
//! reconnects and registers the functions again; the store itself lives in this process.

mod kv_service;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kv_service::{Kv, KvClient, MemKv};
use rpcd_client::{Client, ClientOptions, Server, ServerOptions};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Debug, Parser)]
#[command(about = "Serve the kv service through rpcd until SIGINT/SIGTERM")]
struct Args {
    /// rpcd's socket (default: RPCD_SOCKET, the system socket, then the per-user one).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Invocations queued for a free worker before callers get `overloaded`.
    #[arg(long, default_value_t = rpcd_client::QUEUE_MAX_DEFAULT)]
    queue: usize,
    /// Run a function on the thread that read it while its recent runs took less than this
    /// (µs; 0: never; `ServerOptions::inline_below`). The kv handlers only touch memory,
    /// never the connection, so they may run there.
    #[arg(long, default_value_t = rpcd_client::INLINE_BELOW_SHORT.as_micros() as u64)]
    inline_below_us: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kv_server: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Register the handlers before anything can call them.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let options = ClientOptions::named("kv_server");
    let client = match &args.socket {
        Some(socket) => Client::connect_with(socket, options)?,
        None => Client::connect_default_with(options)?,
    };
    let mut server_options = ServerOptions::new(
        args.workers.unwrap_or_else(rpcd_client::workers_default),
        args.queue,
    );
    server_options.inline_below = Duration::from_micros(args.inline_below_us);
    let server = Server::with_options(&client, server_options)?;
    MemKv::default().serve(&server)?;
    println!(
        "kv_server: serving {} through {} (rpcd at {}, {} workers)",
        KvClient::FUNCTIONS.join(", "),
        client.path().display(),
        client.daemon().listen,
        server.options().workers,
    );
    let signal = signals.forever().next();
    server.stop();
    println!("kv_server: stopped by signal {}", signal.unwrap_or(0));
    Ok(())
}
