//! The package-assets generator (`src/bin/package_assets.rs`) as `.ci/run` runs it before
//! `cargo deb`: a man page for rpcd, rpcctl and every rpcctl verb, each naming every flag of
//! the clap definition it was made from and rendering without a warning from `man`; shell
//! completions for bash, zsh and fish that name every verb (and, for bash, parse).

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory;
use rpcd_tests::{output_within, tempdir};

/// How long the generator or `man` may run before the test fails.
const EXIT_MAX: Duration = Duration::from_secs(60);

/// Runs the generator into a fresh directory.
fn generate() -> tempfile::TempDir {
    let dir = tempdir();
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_package_assets")).arg(dir.path()),
        EXIT_MAX,
    );
    assert!(
        out.status.success(),
        "package_assets failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// rpcctl's command as the generator renders it: built, so every verb has its page name.
fn rpcctl_command() -> clap::Command {
    let mut cmd = rpcctl::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Every (page file, command) pair the generator must write.
fn expected_pages() -> Vec<(String, clap::Command)> {
    fn walk(cmd: &clap::Command, pages: &mut Vec<(String, clap::Command)>) {
        let name = cmd.get_display_name().unwrap_or(cmd.get_name());
        pages.push((format!("{name}.1"), cmd.clone()));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, pages);
        }
    }
    let mut pages = vec![("rpcd.8".to_owned(), rpcd::cli::Args::command())];
    walk(&rpcctl_command(), &mut pages);
    pages
}

/// Every flag of `cmd` as roff spells it (`\-\-config`, `\-c`), hidden ones and `--help`
/// excepted.
fn flags(cmd: &clap::Command) -> Vec<String> {
    let mut flags = Vec::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            flags.push(format!("\\-\\-{}", long.replace('-', "\\-")));
        }
        if let Some(short) = arg.get_short() {
            flags.push(format!("\\-{short}"));
        }
    }
    flags
}

/// rpcctl's verbs, the first level (what a completion offers after `rpcctl `).
fn verbs() -> Vec<String> {
    rpcctl_command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect()
}

#[test]
fn man_pages_cover_every_command_and_flag() {
    let dir = generate();
    let man = dir.path().join("man");
    let pages = expected_pages();
    let written: BTreeSet<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let wanted: BTreeSet<String> = pages.iter().map(|(file, _)| file.clone()).collect();
    assert_eq!(written, wanted, "the man pages written");
    assert!(wanted.contains("rpcctl-call.1") && wanted.contains("rpcctl-keys-generate.1"));

    for (file, cmd) in &pages {
        let page = std::fs::read_to_string(man.join(file)).unwrap();
        let (name, section) = file.rsplit_once('.').unwrap();
        let title = page
            .lines()
            .find(|l| l.starts_with(".TH "))
            .unwrap_or_default();
        assert!(
            title.starts_with(&format!(".TH {name} {section} ")),
            "{file}'s title is {title:?}"
        );
        assert!(page.contains("\n.SH NAME\n") && page.contains("\n.SH SYNOPSIS\n"));
        assert!(
            page.contains("\n.SH \"SEE ALSO\"\n"),
            "{file} has no SEE ALSO"
        );
        for flag in flags(cmd) {
            assert!(page.contains(&flag), "{file} does not mention {flag}");
        }
    }
    let rpcd = std::fs::read_to_string(man.join("rpcd.8")).unwrap();
    assert!(rpcd.contains("\\-\\-check\\-config") && rpcd.contains("/etc/rpcd/rpcd.toml"));
}

#[test]
fn man_renders_the_pages_without_warnings() {
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("skipped: `man` is not installed (apt-get install man-db); the roff is checked by man_pages_cover_every_command_and_flag");
        return;
    }
    let dir = generate();
    for (file, cmd) in expected_pages() {
        let path = dir.path().join("man").join(&file);
        let out = output_within(
            Command::new("man")
                .args(["--warnings", "--local-file"])
                .arg(&path)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100")
                .env("LC_ALL", "C"),
            EXIT_MAX,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "man {file}: {stderr}");
        assert!(
            stderr.trim().is_empty(),
            "man warns about {file}:\n{stderr}"
        );
        // Justified text: compare words, not spaces.
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = words(&String::from_utf8_lossy(&out.stdout));
        let about = words(&cmd.get_about().map(|a| a.to_string()).unwrap_or_default());
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "man {file}:\n{text}"
        );
        assert!(text.contains(&about), "man {file} lacks {about:?}:\n{text}");
    }
}

#[test]
fn completions_for_each_shell_name_every_verb() {
    let dir = generate();
    let completions = dir.path().join("completions");
    let scripts = [
        ("bash/rpcctl", "rpcctl"),
        ("zsh/_rpcctl", "#compdef rpcctl"),
        ("fish/rpcctl.fish", "complete -c rpcctl"),
        ("bash/rpcd", "rpcd"),
        ("zsh/_rpcd", "#compdef rpcd"),
        ("fish/rpcd.fish", "complete -c rpcd"),
    ];
    for (file, marker) in scripts {
        let script = std::fs::read_to_string(completions.join(file)).unwrap();
        assert!(script.contains(marker), "{file} lacks {marker:?}");
        if file.ends_with("rpcctl") || file.ends_with("rpcctl.fish") {
            for verb in verbs() {
                assert!(script.contains(&verb), "{file} does not offer {verb}");
            }
        } else {
            assert!(
                script.contains("check-config"),
                "{file} lacks --check-config"
            );
        }
    }
    for file in ["bash/rpcctl", "bash/rpcd"] {
        bash_parses(&completions.join(file));
    }
}

/// `bash -n`: the script parses.
fn bash_parses(path: &Path) {
    let out = output_within(Command::new("bash").arg("-n").arg(path), EXIT_MAX);
    assert!(
        out.status.success(),
        "bash -n {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
