//! `rpcd` binary: parse flags, take a socket-activated listener, load settings,
//! bind, maybe daemonize, serve. Exit status: 0, [`EX_CONFIG`] for settings
//! (or a socket activation) that cannot work, 1 for any other error, 2 for
//! bad flags (clap).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rpcd::cli::Args;
use rpcd::settings::{Settings, SettingsError};
use rpcd::shell::activation::{self, ActivationError};
use rpcd::shell::{logging, Bound, RunOptions};

/// `EX_CONFIG` (sysexits.h): the settings are wrong, so starting again cannot
/// help; the unit's `RestartPreventExitStatus=78` stops systemd retrying.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpcd: {e:#}");
            ExitCode::from(exit_status(&e))
        }
    }
}

/// [`EX_CONFIG`] for a settings file, environment override, flag value or
/// socket activation that cannot work; 1 for anything else (a bind failing,
/// the loop failing), which a restart may cure.
fn exit_status(e: &anyhow::Error) -> u8 {
    let config = e
        .chain()
        .any(|c| c.is::<SettingsError>() || c.is::<ActivationError>());
    if config {
        EX_CONFIG
    } else {
        1
    }
}

fn try_main() -> anyhow::Result<()> {
    let args = Args::parse();
    // First, while no thread runs: this unsets the LISTEN_* variables.
    let inherited = if args.check_config {
        None
    } else {
        activation::take_listener()?
    };
    let (mut settings, config_path) = Settings::load(args.config.as_deref(), std::env::vars())?;
    let mut socket_override = args.socket.clone().or_else(|| {
        std::env::var_os("RPCD_SOCKET")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    // With socket activation the socket is the one passed, wherever the
    // settings point; its path is only reported.
    if let Some(path) = inherited.as_ref().and_then(|i| i.path.clone()) {
        socket_override = Some(path);
    }
    if let Some(s) = &socket_override {
        settings.socket = s.clone();
    }
    if let Some(l) = args.listen {
        settings.listen = l;
    }
    // --daemonize changes directory to /: make paths absolute first.
    settings.socket = std::path::absolute(&settings.socket)
        .with_context(|| format!("socket path {}", settings.socket.display()))?;
    let pid_file = match &args.pid_file {
        Some(p) => Some(std::path::absolute(p).context("pid file path")?),
        None => None,
    };
    settings.validate("command line")?;
    if args.check_config {
        let security = match &settings.security.key {
            Some(k) => format!(
                "private key {} (public key {})",
                k.path.display(),
                k.key.public()
            ),
            None => "plaintext".to_owned(),
        };
        println!(
            "rpcd: settings OK ({}; listen {}, socket {}, {} service names, {security}, {} peers)",
            config_path
                .as_deref()
                .map_or("built-in defaults".into(), |p| p.display().to_string()),
            settings.listen,
            settings.socket.display(),
            settings.names.len(),
            settings.peers.len()
        );
        return Ok(());
    }
    // --daemonize redirects stderr (to --log-file or /dev/null) after this:
    // no colour and no journal's stream then.
    logging::init(
        &settings,
        args.log_format,
        &logging::Stderr::current(args.daemonize),
    )?;
    // Bind before detaching, so that bind errors reach the terminal.
    let bound = Bound::bind(settings, inherited)?;
    if args.daemonize {
        let pid_file = pid_file.clone().context("--daemonize needs --pid-file")?;
        let mut d = daemonize::Daemonize::new()
            .pid_file(&pid_file)
            .working_directory("/")
            .umask(0o027);
        if let Some(log) = &args.log_file {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening the log file {}", log.display()))?;
            d = d.stderr(f);
        }
        d.start().context("daemonizing")?;
    }
    bound.run(RunOptions {
        config_path,
        listen_flag: args.listen,
        socket_override,
        pid_file: if args.daemonize { pid_file } else { None },
    })
}
