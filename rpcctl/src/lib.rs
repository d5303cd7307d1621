//! `rpcctl`: the operator's command line for rpcd.
//!
//! The binary (`src/main.rs`) does the work. The library holds what exists apart from a
//! running command: the command-line definition ([`cli::Cli`]) and the exit statuses
//! ([`exit`]), so that man pages and shell completions are generated from the same clap
//! definition the binary parses (the package-assets generator in `rpcd-tests`).

pub mod cli;
pub mod exit;
