//! What [`Net::start`](super::Net::start) checks and prepares: whether the machine can
//! run namespaces at all, the key mode, keys, and namespaces left by killed test
//! processes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::bin;

use super::{run, NS_PREFIX};

/// Whether this machine can run the namespace tests: `Err` names what is missing.
pub fn available() -> Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK.get_or_init(check).clone()
}

fn check() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("root (to create network namespaces)".into());
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("nft", "nftables"),
    ] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("`{tool}` (package {package})"));
        }
    }
    // A namespace with a statistic-match rule proves the kernel side works.
    let ns = format!("{NS_PREFIX}{}-probe", std::process::id());
    let add = run(Command::new("ip").args(["netns", "add", &ns]));
    if !add.status.success() {
        return Err(format!(
            "`ip netns add` to work: {}",
            String::from_utf8_lossy(&add.stderr).trim()
        ));
    }
    let rule = run(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "iptables",
        "-A",
        "INPUT",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.5",
        "-j",
        "DROP",
    ]));
    let _ = run(Command::new("ip").args(["netns", "del", &ns]));
    if !rule.status.success() {
        return Err(format!(
            "iptables' statistic match in a namespace: {}",
            String::from_utf8_lossy(&rule.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether the daemons get keys: yes unless `RPCD_TEST_PLAINTEXT=1`.
pub(super) fn keyed_mode() -> bool {
    match std::env::var("RPCD_TEST_PLAINTEXT").as_deref() {
        Err(_) | Ok("" | "0") => true,
        Ok("1") => false,
        Ok(other) => panic!("RPCD_TEST_PLAINTEXT={other:?}: set it to 1 (plaintext) or unset it"),
    }
}

/// A new private key in `file` (`rpcctl keys generate`: mode 0600); its public key.
pub(super) fn generate_key(file: &Path) -> String {
    let mut cmd = Command::new(bin("rpcctl"));
    crate::isolate(&mut cmd)
        .args(["keys", "generate", "--out"])
        .arg(file);
    let out = crate::output_within(&mut cmd, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "rpcctl keys generate --out {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Delete namespaces named by a test process that no longer runs.
pub(super) fn remove_stale_namespaces() {
    let out = run(Command::new("ip").args(["netns", "list"]));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
    }
}
