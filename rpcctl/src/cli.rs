//! The command line: every verb, its arguments and their parsers.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit;

/// The operator's command line for rpcd: call functions on any daemon, list them, ping,
/// show counters and naming, and benchmark.
#[derive(Debug, Parser)]
#[command(name = "rpcctl", version, after_help = exit::HELP)]
pub struct Cli {
    /// Path of the local rpcd socket [default: the first that answers of $RPCD_SOCKET,
    /// /run/rpcd/rpcd.sock and the per-user socket]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print JSON for scripts: each verb's output as one JSON document on standard output
    /// (`ping`: one JSON object per line), and an error as one JSON object on standard
    /// error, `{"error":{"code":..,"message":..,"exit_status":..}}`
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call FN on TARGET with JSON arguments and print the reply as JSON
    #[command(after_help = exit::HELP)]
    Call(CallArgs),
    /// List the functions registered on the local daemon, or on TARGET
    #[command(after_help = exit::HELP)]
    List {
        /// A daemon (`host:port` or a configured name); without it, the local daemon
        target: Option<String>,
        /// One line per function with its signature and attributes (from `rpcd.describe`)
        #[arg(short = 'l', long = "long")]
        long: bool,
    },
    /// Show the signature, doc and attributes of FN on TARGET, or of every function there
    #[command(after_help = exit::HELP)]
    Describe {
        /// A daemon (`host:port` or a configured name)
        target: String,
        /// One function [default: every function]
        #[arg(value_name = "FN")]
        function: Option<String>,
    },
    /// Probe TARGET's daemon with `rpcd.ping` and report round-trip times
    #[command(after_help = exit::HELP)]
    Ping(PingArgs),
    /// Show the counters of the local daemon, or of TARGET
    #[command(after_help = exit::HELP)]
    Stats {
        /// A daemon (`host:port` or a configured name); without it, the local daemon
        target: Option<String>,
        /// Show only the peer daemons, one row (or JSON object) per peer
        #[arg(long)]
        peers: bool,
    },
    /// Show the calls passing through the local daemon, live, until interrupted
    #[command(after_help = exit::HELP)]
    Monitor(MonitorArgs),
    /// Show the local daemon's naming table as resolved now
    #[command(after_help = exit::HELP)]
    Names,
    /// Show the local daemon at a glance: versions, uptime, addresses, peers and calls
    #[command(after_help = exit::HELP)]
    Status,
    /// Show rpcctl's version, and the local daemon's when one answers
    #[command(after_help = exit::HELP)]
    Version,
    /// Print a shell completion script to standard output
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Call FN on TARGET many times from several threads; report calls/s and latency
    #[command(after_help = exit::HELP)]
    Bench(BenchArgs),
    /// Make a daemon's private key, or show the public key of one (no daemon needed)
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `rpcctl keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a private key from the OS's randomness. With --out, write it to FILE (created with
    /// mode 0600, never overwritten) and print the public key; without, print the private key
    /// on standard output and the public key on standard error
    #[command(after_help = exit::HELP)]
    Generate {
        /// The key file to create (for the daemon's `security.private_key_file`)
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the public key of the private key in FILE (`-`: standard input), for the
    /// `[peers.NAME]` entry of the other daemons
    #[command(after_help = exit::HELP)]
    Public {
        /// The private key file, or `-` for standard input
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// The arguments of a call, given on the command line or in a file.
#[derive(Debug, Args)]
pub struct Payload {
    /// The arguments, each one JSON value (a string needs its quotes: '"k"'); they are sent
    /// as one MessagePack array
    #[arg(value_name = "ARG", allow_negative_numbers = true)]
    pub args: Vec<String>,

    /// Read the arguments from FILE (`-`: standard input), one JSON array of them
    #[arg(long, value_name = "FILE", conflicts_with = "args")]
    pub args_file: Option<PathBuf>,
}

/// Per-call options.
#[derive(Debug, Args)]
pub struct CallOpts {
    /// Time budget of each call: `5s`, `300ms`, or a number of milliseconds [default: the
    /// daemon's]
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub deadline: Option<Duration>,

    /// The call may be retried on another daemon of a service
    #[arg(long)]
    pub idempotent: bool,
}

/// `rpcctl call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The daemon to call: `host:port`, a configured service name, or the local address
    pub target: String,
    /// The function name
    #[arg(value_name = "FN")]
    pub function: String,
    #[command(flatten)]
    pub payload: Payload,
    #[command(flatten)]
    pub opts: CallOpts,
    /// Send without asking TARGET for FN's signature and attributes first (no argument
    /// check, no declared deadline or idempotency)
    #[arg(long)]
    pub no_check: bool,
    /// After the reply, show the call's timeline across both daemons: name resolution,
    /// failover, time queued, datagrams and retransmissions, RTT, time at the serving
    /// daemon and in its handler
    #[arg(long)]
    pub trace: bool,
}

/// `rpcctl monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Only calls of functions matching GLOB (`*` matches any run of characters)
    #[arg(long, value_name = "GLOB")]
    pub function: Option<String>,
    /// Only calls to or from TARGET (a target as the app named it, or a `host:port`)
    #[arg(long, value_name = "TARGET")]
    pub peer: Option<String>,
}

/// `rpcctl ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// The daemon to probe: `host:port` or a configured name
    pub target: String,
    /// Stop after N probes [default: until interrupted]
    #[arg(short = 'c', long = "count", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Time between probes: `1s`, `200ms`, or a number of milliseconds
    #[arg(short = 'i', long, value_name = "TIME", default_value = "1s",
          value_parser = parse_duration_or_zero)]
    pub interval: Duration,
    /// How long to wait for each reply
    #[arg(short = 'W', long, value_name = "TIME", default_value = "1s",
          value_parser = parse_duration)]
    pub deadline: Duration,
}

/// Most threads a bench may run.
pub const CONCURRENCY_MAX: u16 = 1024;

/// `rpcctl bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The daemon to call: `host:port`, a configured service name, or the local address
    pub target: String,
    /// The function name
    #[arg(value_name = "FN")]
    pub function: String,
    #[command(flatten)]
    pub payload: Payload,
    /// Calls in total
    #[arg(short = 'n', long = "calls", value_name = "CALLS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub calls: u64,
    /// Threads calling at once, sharing one connection
    #[arg(short = 'c', long, value_name = "CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=CONCURRENCY_MAX as i64))]
    pub concurrency: u16,
    #[command(flatten)]
    pub opts: CallOpts,
}

/// Whether `--json` is among the options of `args` (the program name first), for reporting
/// a command line that clap refused: the flag is global, so it counts anywhere before `--`.
pub fn json_requested<I, T>(args: I) -> bool
where
    I: IntoIterator<Item = T>,
    T: AsRef<std::ffi::OsStr>,
{
    args.into_iter()
        .skip(1)
        .map_while(|arg| (arg.as_ref() != "--").then_some(arg))
        .any(|arg| arg.as_ref() == "--json")
}

/// A positive duration: `humantime` syntax (`5s`, `300ms`, `1m 30s`) or bare milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

/// Like [`parse_duration`], allowing zero.
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if let Ok(ms) = text.trim().parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(text)
        .map_err(|err| format!("{err} (expected e.g. `5s`, `300ms`, or a number of milliseconds)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_take_units_or_milliseconds() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn negative_numbers_are_arguments_not_flags() {
        let cli = Cli::try_parse_from(["rpcctl", "call", "h:1", "f", "-1", "--json"]).unwrap();
        let Command::Call(call) = cli.command else {
            panic!("expected call");
        };
        assert_eq!(call.payload.args, ["-1"]);
        assert!(cli.json, "--json after the verb is the global flag");
    }

    #[test]
    fn json_is_global_before_or_after_the_verb() {
        for args in [
            &["rpcctl", "--json", "stats", "--peers"][..],
            &["rpcctl", "stats", "--json", "--peers"],
            &["rpcctl", "keys", "public", "-", "--json"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(cli.json, "{args:?}");
        }
        assert!(!Cli::try_parse_from(["rpcctl", "status"]).unwrap().json);
    }

    #[test]
    fn json_is_found_in_a_refused_command_line_before_the_end_of_options() {
        assert!(json_requested(["rpcctl", "call", "--json", "--bogus"]));
        assert!(json_requested(["rpcctl", "--json"]));
        assert!(!json_requested([
            "rpcctl", "call", "h:1", "f", "--", "--json"
        ]));
        assert!(!json_requested(["--json", "stats"]), "the program name");
        assert!(!json_requested([
            "rpcctl",
            "call",
            "h:1",
            "f",
            r#""--json""#
        ]));
    }

    #[test]
    fn keys_verbs_parse() {
        let cli = Cli::try_parse_from(["rpcctl", "keys", "generate", "--out", "k"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keys(KeysCommand::Generate { out: Some(_) })
        ));
        let cli = Cli::try_parse_from(["rpcctl", "keys", "public", "-"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keys(KeysCommand::Public { .. })
        ));
        let err = Cli::try_parse_from(["rpcctl", "keys", "public"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn args_and_args_file_conflict() {
        let err = Cli::try_parse_from(["rpcctl", "call", "h:1", "f", "1", "--args-file", "x"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
