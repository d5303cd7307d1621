//! Misuse of `#[rpcd_client::service]` is a compile error pointing at the offending
//! tokens. Each case in `ui/` starts with a line `// expect: <phrase>`: a phrase of the
//! message rpcd itself writes (the macro's `compile_error!`, or the `on_unimplemented`
//! text of `WireType`), never of rustc's own wording.
//!
//! Two checks, chosen by the compiler that runs them:
//! - on the toolchain named in `ui/TOOLCHAIN` (the one the `.stderr` files were written
//!   with) and with the `tokio` feature on (as `cargo test --workspace` builds this crate),
//!   trybuild compares the whole compiler output with the `.stderr` beside each case
//!   (regenerate them with `TRYBUILD=overwrite cargo test -p rpcd-client --features tokio
//!   --test compile_fail` after a deliberate change, and update `ui/TOOLCHAIN`);
//! - on any other toolchain or feature set, whose wording and spans may differ, each case is built on its
//!   own and must fail with its phrase in the output (`RPCD_UI_PHRASES=1` forces this mode).
//!
//! Either way a case that compiles fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn service_misuse_is_a_spanned_compile_error() {
    let pinned = include_str!("ui/TOOLCHAIN").trim();
    let running = rustc_version();
    let forced = std::env::var_os("RPCD_UI_PHRASES").is_some_and(|v| v == "1");
    // The `.stderr` files were written with the `tokio` feature on, as `cargo test
    // --workspace` builds this crate (rpcd-tests asks for it): the async stubs add errors.
    if !forced && running.starts_with(pinned) && cfg!(feature = "tokio") {
        let t = trybuild::TestCases::new();
        t.compile_fail("tests/ui/*.rs");
    } else {
        eprintln!(
            "compile_fail: {running:?} is not the pinned {pinned:?} (or RPCD_UI_PHRASES=1): \
             checking each case's key phrase, not the whole .stderr"
        );
        check_phrases();
    }
}

/// `rustc --version` of the compiler cargo uses.
fn rustc_version() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Builds every case as a binary of a scratch package depending on this crate (offline,
/// with the workspace's lock file) and checks it fails with its phrase.
fn check_phrases() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-phrases");
    std::fs::create_dir_all(scratch.join("src/bin")).expect("scratch dir");
    let toml = format!(
        "[package]\nname = \"rpcd-ui-phrases\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         publish = false\n\n[workspace]\n\n[dependencies]\n\
         rpcd-client = {{ path = {:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n",
        manifest.display().to_string()
    );
    std::fs::write(scratch.join("Cargo.toml"), toml).expect("write Cargo.toml");
    let lock = manifest.join("../Cargo.lock");
    std::fs::copy(&lock, scratch.join("Cargo.lock")).expect("copy Cargo.lock");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(manifest.join("tests/ui"))
        .expect("tests/ui")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in tests/ui");
    let mut failures = Vec::new();
    for case in &cases {
        let source = std::fs::read_to_string(case).expect("read case");
        let phrase = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .unwrap_or_else(|| panic!("{} lacks its `// expect: ` line", case.display()))
            .trim()
            .to_owned();
        let name = case
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a case name")
            .replace('_', "-");
        let bin = scratch.join("src/bin").join(format!("{name}.rs"));
        // One case at a time in src/bin: cargo builds every bin target it finds.
        for old in std::fs::read_dir(scratch.join("src/bin"))
            .expect("bin dir")
            .flatten()
        {
            let _ = std::fs::remove_file(old.path());
        }
        std::fs::write(&bin, &source).expect("write case");
        let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--offline", "--quiet", "--bin", &name])
            .current_dir(&scratch)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("run cargo");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: compiled, but must not", case.display()));
        } else if !stderr.contains(&phrase) {
            failures.push(format!(
                "{}: the error lacks {phrase:?}:\n{stderr}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
