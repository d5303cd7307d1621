//! `rpcd` binary: parse flags, load settings, run the event loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rpcd::server::Daemon;
use rpcd::settings::Settings;
use tracing_subscriber::EnvFilter;

/// rpcd: reliable RPC over UDP for local applications.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML settings file (see etc/rpcd.toml). Without it, built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to listen on (overrides the file).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Local socket path (overrides RPCD_SOCKET and the file).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpcd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    if let Some(p) = std::env::var_os("RPCD_SOCKET").filter(|p| !p.is_empty()) {
        settings.socket = PathBuf::from(p);
    }
    if let Some(l) = args.listen {
        settings.listen = l;
    }
    if let Some(s) = args.socket {
        settings.socket = s;
    }
    settings.validate("command line")?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .context("log level")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Daemon::bind(settings)?.run()
}
