//! Writes the generated files of the Debian package: man pages and shell completions, made
//! from the clap definitions that `rpcd` and `rpcctl` parse (`rpcd::cli::Args`,
//! `rpcctl::cli::Cli`), so they cannot drift from the binaries.
//!
//! `package_assets [DIR]` (default `target/assets`) writes
//! - `DIR/man/rpcd.8`, `DIR/man/rpcctl.1` and one page per rpcctl verb (`rpcctl-call.1`, ...);
//! - `DIR/completions/{bash,zsh,fish}/` with a script for each binary, under the file name
//!   each shell looks for (`rpcctl`, `_rpcctl`, `rpcctl.fish`).
//!
//! `daemon/Cargo.toml` (`[package.metadata.deb]`) packages them from there; `.ci/run` runs this
//! before `cargo deb`. The `package_assets` test checks the output.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

/// Where the files go without an argument (relative to the working directory: the
/// workspace root, where `cargo deb` looks for them).
const DEFAULT_DIR: &str = "target/assets";

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("package_assets: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let dir = args
        .next()
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
    anyhow::ensure!(
        args.next().is_none(),
        "usage: package_assets [DIR] (default {DEFAULT_DIR})"
    );
    let man = dir.join("man");
    fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;

    let rpcd = rpcd::cli::Args::command();
    write_page(&man, rpcd.clone(), "8", RPCD_EXTRA)?;
    write_pages(
        &man,
        rpcctl::cli::Cli::command().disable_help_subcommand(true),
    )?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let out = dir.join("completions").join(shell.to_string());
        fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
        for mut cmd in [rpcd.clone(), rpcctl::cli::Cli::command()] {
            let name = cmd.get_name().to_owned();
            // Files named as each shell's completion loader expects (bash-completion loads
            // `completions/NAME` for the command NAME).
            let file = match shell {
                Shell::Bash => name.clone(),
                Shell::Zsh => format!("_{name}"),
                _ => format!("{name}.fish"),
            };
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut script);
            write(&out.join(file), &script)?;
        }
    }
    println!("package_assets: wrote {}", dir.display());
    Ok(())
}

/// The sections clap knows nothing of, for rpcd(8).
const RPCD_EXTRA: &str = r#".SH FILES
.TP
/etc/rpcd/rpcd.toml
The settings file: every key at its default, with comments.
.TP
/run/rpcd/rpcd.sock
The local socket of the system daemon (systemd's rpcd.socket); members of the group
\fBrpcd\fR may connect.
.TP
/usr/share/doc/rpcd/
The documentation: operations.md, config.md, ipc-protocol.md and the rest.
.SH "SEE ALSO"
\fBrpcctl\fR(1), \fBsystemctl\fR(1), \fBsystemd.socket\fR(5)
"#;

/// The closing section of every rpcctl page.
const RPCCTL_EXTRA: &str = r#".SH "SEE ALSO"
\fBrpcd\fR(8), \fBrpcctl\fR(1)
"#;

/// rpcctl's page and one per verb (section 1), recursively, named `rpcctl-VERB.1`.
fn write_pages(dir: &Path, mut cmd: clap::Command) -> anyhow::Result<()> {
    // Built first so subcommands carry their display names (`rpcctl-keys-generate`).
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(dir, sub.clone())?;
    }
    write_page(dir, cmd, "1", RPCCTL_EXTRA)
}

/// Renders one page with clap_mangen and appends `extra` (raw roff).
fn write_page(dir: &Path, cmd: clap::Command, section: &str, extra: &str) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd).section(section);
    let mut page = Vec::new();
    man.render(&mut page).context("cannot render a man page")?;
    page.extend_from_slice(extra.as_bytes());
    write(&dir.join(man.get_filename()), &page)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}
