//! `rpcd` binary: parse flags, load settings, bind, maybe daemonize, serve.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rpcd::cli::Args;
use rpcd::settings::Settings;
use rpcd::shell::{logging, Bound, RunOptions};

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
    let (mut settings, config_path) = Settings::load(args.config.as_deref(), std::env::vars())?;
    let socket_override = args.socket.clone().or_else(|| {
        std::env::var_os("RPCD_SOCKET")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
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
    let bound = Bound::bind(settings)?;
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
