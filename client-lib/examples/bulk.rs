//! Moves multi-megabyte arguments and replies through rpcd and checks them end to end with
//! CRC32C computed independently on both sides.
//!
//! ```text
//! bulk --socket PATH                     # serve and call through the same daemon
//! bulk --socket PATH --serve             # serve only, until SIGINT/SIGTERM
//! bulk --socket PATH --target HOST:PORT  # call a daemon where `bulk --serve` runs
//! ```
//!
//! Each round sends `--mib` MiB to `bulk.digest` (the server's CRC must match ours), asks
//! `bulk.generate` for as many bytes (ours must match the server's pattern), and round-trips
//! them through `bulk.echo`. Exit status 0 when every check passed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use rpcd_client::{CallOptions, Client, ClientOptions, Server, ServerOptions};
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The largest payload `bulk.generate` produces: the daemon's default message limit.
const GENERATE_MAX: u64 = 16 * 1024 * 1024;

/// Length and checksum of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Bytes.
    pub len: u64,
    /// CRC32C of the bytes.
    pub crc32c: u32,
}

impl Digest {
    fn of(data: &[u8]) -> Digest {
        Digest {
            len: data.len() as u64,
            crc32c: crc32c::crc32c(data),
        }
    }
}

/// Bulk data in both directions.
#[rpcd_client::service]
pub trait Bulk {
    /// The digest of `data`, computed by the server (which reads `data` where its reader
    /// put it: a borrowed argument is not copied).
    fn digest(&self, data: &Bytes) -> Digest;
    /// `len` bytes of the pattern seeded with `seed` (at most 16 MiB).
    fn generate(&self, len: u64, seed: u64) -> Result<ByteBuf, String>;
    /// `data`, back.
    fn echo(&self, data: ByteBuf) -> ByteBuf;
}

struct BulkServer;

impl Bulk for BulkServer {
    fn digest(&self, data: &Bytes) -> Digest {
        Digest::of(data)
    }

    fn generate(&self, len: u64, seed: u64) -> Result<ByteBuf, String> {
        if len > GENERATE_MAX {
            return Err(format!("{len} bytes asked, at most {GENERATE_MAX}"));
        }
        let len = usize::try_from(len).map_err(|e| e.to_string())?;
        Ok(ByteBuf::from(pattern(len, seed)))
    }

    fn echo(&self, data: ByteBuf) -> ByteBuf {
        data
    }
}

/// A deterministic pseudo-random payload (xorshift64*), the same on both sides.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Debug, Parser)]
#[command(about = "Move multi-megabyte payloads through rpcd and check them end to end")]
struct Args {
    /// rpcd's socket (default: RPCD_SOCKET, the system socket, then the per-user one).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Serve `bulk.*` only, until SIGINT/SIGTERM.
    #[arg(long)]
    serve: bool,
    /// Call this daemon (default: the local daemon, served by this process).
    #[arg(long)]
    target: Option<String>,
    /// Payload size in MiB.
    #[arg(long, default_value_t = 8)]
    mib: u64,
    /// Rounds of digest + generate + echo.
    #[arg(long, default_value_t = 2)]
    rounds: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bulk: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let options = ClientOptions::named("bulk")
        .with_call(CallOptions::new(Some(Duration::from_secs(60)), false));
    let client = match &args.socket {
        Some(socket) => Client::connect_with(socket, options)?,
        None => Client::connect_default_with(options)?,
    };
    let serving = if args.serve || args.target.is_none() {
        let server = Server::with_options(&client, ServerOptions::default())?;
        BulkServer.serve(&server)?;
        Some(server)
    } else {
        None
    };
    if args.serve {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        println!("bulk: serving {}", BulkClient::FUNCTIONS.join(", "));
        signals.forever().next();
        return Ok(());
    }
    let target = args.target.unwrap_or_else(|| client.daemon().listen);
    let bulk = BulkClient::new(&client, target.as_str());
    let len = args.mib * 1024 * 1024;
    let size = usize::try_from(len)?;
    for round in 0..args.rounds {
        let started = Instant::now();
        let sent = pattern(size, round.wrapping_add(0x5eed));
        let ours = Digest::of(&sent);
        let theirs = bulk.digest(Bytes::new(&sent))?;
        check("digest", ours, theirs)?;

        let got = bulk.generate(len, round)?;
        check(
            "generate",
            Digest::of(&pattern(size, round)),
            Digest::of(&got),
        )?;

        let back = bulk.echo(ByteBuf::from(sent))?;
        check("echo", ours, Digest::of(&back))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "round {round}: {} MiB x3 to {target}: crc32c {:08x} ok ({:.1} MiB/s)",
            args.mib,
            ours.crc32c,
            (3 * args.mib) as f64 / secs.max(1e-9)
        );
    }
    if let Some(server) = serving {
        server.stop();
    }
    println!("bulk: all checks passed");
    Ok(())
}

fn check(what: &str, expected: Digest, got: Digest) -> Result<(), String> {
    if expected == got {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected:?}, got {got:?}"))
    }
}
