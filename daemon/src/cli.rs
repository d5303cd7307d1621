//! The `rpcd` command line: its flags and help text, in the library so that man pages and
//! completions can be generated from the same definition the binary parses.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// rpcd: reliable RPC over UDP for local applications.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "rpcd: reliable RPC over UDP for local applications",
    after_help = "Settings: built-in defaults, then the file (--config, else /etc/rpcd/rpcd.toml \
                  if present), then RPCD_<SECTION>__<KEY> environment variables, then flags.\n\
                  Socket: --socket, else RPCD_SOCKET (if non-empty), else daemon.socket from the \
                  file, else /run/rpcd/rpcd.sock as root and $XDG_RUNTIME_DIR/rpcd/rpcd.sock \
                  (or /tmp/rpcd-$UID/rpcd.sock) otherwise. Under socket activation \
                  (LISTEN_PID/LISTEN_FDS, e.g. rpcd.socket) rpcd serves the socket passed as \
                  fd 3 instead and leaves its file alone.\n\
                  Signals: SIGTERM/SIGINT shut down gracefully; SIGHUP reloads names, peers, limits and the log level.\n\
                  Exit status: 0 after a clean shutdown or a valid --check-config; 78 (EX_CONFIG) \
                  when the settings (file, environment, flags) or the socket activation variables \
                  cannot work, --check-config included; 2 for a malformed command line; 1 on any \
                  other error (e.g. an address already in use)."
)]
pub struct Args {
    /// TOML settings file (see etc/rpcd.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on (overrides the file).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Local socket path (overrides RPCD_SOCKET and the file; informational under socket
    /// activation).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Validate the settings (file and environment) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Stay in the foreground (the default; for systemd).
    #[arg(long, conflicts_with = "daemonize")]
    pub foreground: bool,
    /// Detach into the background after binding; needs --pid-file.
    #[arg(long, requires = "pid_file")]
    pub daemonize: bool,
    /// Where --daemonize writes the daemon's pid (removed at shutdown).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// With --daemonize: append logs to this file (default: discarded).
    #[arg(long, value_name = "PATH", requires = "daemonize")]
    pub log_file: Option<PathBuf>,
    /// Log format: auto (journald on the journal's stream, else text), text, json or
    /// journald (overrides daemon.log_format).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<crate::settings::LogFormat>,
}
