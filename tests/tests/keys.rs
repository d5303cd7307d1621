//! A daemon's identity and its trusted peers through the real binaries: `rpcctl keys` makes
//! and reads key files, `rpcd` refuses a key file others may read or that holds no key, starts
//! with a good one, and takes a configured peer's name as a call target.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rpcd_client::conn::CallOptions;
use rpcd_tests::{bin, isolate, output_within, rpcd_command, tempdir, Daemon, ProcessGuard};
use rpcd_transport::secure::{PrivateKey, PublicKey};

/// How long a command that must exit by itself may run before the test fails.
const EXIT_MAX: Duration = Duration::from_secs(20);

/// rpcctl with `args`, isolated from the test's environment; standard input from `stdin`.
fn rpcctl(args: &[&str], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(bin("rpcctl"));
    isolate(&mut cmd).args(args);
    match stdin {
        None => output_within(&mut cmd, EXIT_MAX),
        Some(path) => {
            // output_within reads nothing from standard input; this one does.
            let dir = tempdir();
            let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
            cmd.stdin(File::open(path).unwrap())
                .stdout(File::create(&out).unwrap())
                .stderr(File::create(&err).unwrap());
            let mut guard = ProcessGuard::new("rpcctl", cmd.spawn().unwrap());
            let status = guard.wait_timeout(EXIT_MAX).expect("rpcctl exits");
            Output {
                status,
                stdout: std::fs::read(out).unwrap(),
                stderr: std::fs::read(err).unwrap(),
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `keys generate --out FILE` writes a private key to a new file of mode 0600 and prints its
/// public key; `keys public` shows the same public key from the file or standard input.
#[test]
fn generate_writes_a_private_file_and_public_shows_its_key() {
    let dir = tempdir();
    let key = dir.path().join("rpcd.key");
    let out = rpcctl(&["keys", "generate", "--out", key.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert_eq!(mode(&key), 0o600);
    let content = std::fs::read_to_string(&key).unwrap();
    assert_eq!(content.len(), 45, "one line of base64: {content:?}");
    assert!(content.ends_with('\n'));
    let public = PrivateKey::parse(&content).unwrap().public();
    assert_eq!(text(&out.stdout), format!("{public}\n"));

    let out = rpcctl(&["keys", "public", key.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{public}\n"));
    let out = rpcctl(&["keys", "public", "-"], Some(&key));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{public}\n"));

    // Two keys are never the same.
    let other = dir.path().join("other.key");
    let out = rpcctl(
        &["keys", "generate", "--out", other.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_ne!(text(&out.stdout), format!("{public}\n"));
}

/// An existing file is never overwritten: status 2, the path named, the key kept.
#[test]
fn generate_refuses_to_overwrite() {
    let dir = tempdir();
    let key = dir.path().join("rpcd.key");
    std::fs::write(&key, "precious\n").unwrap();
    let out = rpcctl(&["keys", "generate", "--out", key.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&key.display().to_string()) && err.contains("refusing to overwrite"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "precious\n");
}

/// Without `--out`: the private key on standard output, its public key on standard error.
#[test]
fn generate_without_out_prints_both_keys() {
    let out = rpcctl(&["keys", "generate"], None);
    assert_eq!(out.status.code(), Some(0));
    let private = PrivateKey::parse(&text(&out.stdout)).unwrap();
    let public = PublicKey::parse(&text(&out.stderr)).unwrap();
    assert_eq!(private.public(), public);
}

/// A file that is not a key, or no file at all: status 2 and why.
#[test]
fn public_of_a_bad_key_file_is_a_usage_error() {
    let dir = tempdir();
    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, "this is not a key\n").unwrap();
    let missing = dir.path().join("missing.key");
    for (file, why) in [
        (&junk, "does not hold a private key"),
        (&missing, "cannot read"),
    ] {
        let out = rpcctl(&["keys", "public", file.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        let err = text(&out.stderr);
        assert!(
            err.contains(&file.display().to_string()) && err.contains(why),
            "{err}"
        );
        assert_eq!(text(&out.stdout), "");
    }
    let out = rpcctl(&["keys", "public", "-"], Some(&junk));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("standard input"));
}

/// A key file with `text` and permission bits `mode` in `dir`.
fn key_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn key_config(key: &Path) -> String {
    format!(
        "[security]\nprivate_key_file = {:?}\n",
        key.display().to_string()
    )
}

/// rpcd started with `config` on loopback: it must exit at once; its status and stderr.
fn refused_start(dir: &Path, config: &str) -> (Option<i32>, String) {
    let cfg = dir.join("refused.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = output_within(
        rpcd_command(dir, Some(&cfg))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--socket")
            .arg(dir.join("refused.sock")),
        EXIT_MAX,
    );
    (out.status.code(), text(&out.stderr))
}

/// rpcd refuses a private key file that group or others may read, or that holds no key,
/// naming the file and why; it starts with a good one (0600) on loopback and logs its
/// public key.
#[test]
fn rpcd_uses_only_a_private_key_file_that_is_private_and_a_key() {
    let dir = tempdir();
    let secret = PrivateKey::from_bytes([7; 32]);
    let line = format!("{}\n", secret.to_base64());

    let exposed = key_file(dir.path(), "exposed.key", &line, 0o644);
    let (code, err) = refused_start(dir.path(), &key_config(&exposed));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("security.private_key_file"), "{err}");
    assert!(err.contains(&exposed.display().to_string()), "{err}");
    assert!(err.contains("0644"), "{err}");

    let bad = key_file(dir.path(), "bad.key", "not a key\n", 0o600);
    let (code, err) = refused_start(dir.path(), &key_config(&bad));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("does not hold a private key"), "{err}");

    let missing = dir.path().join("missing.key");
    let (code, err) = refused_start(dir.path(), &key_config(&missing));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let good = key_file(dir.path(), "good.key", &line, 0o600);
    let d = Daemon::start(dir.path(), "keyed", "127.0.0.1:0", Some(&key_config(&good)));
    d.connect("test").ping().unwrap();
    let log = d.log_text();
    assert!(
        log.contains(&secret.public().to_string()) && log.contains("authenticated transport"),
        "{log}"
    );
}

/// A peer with a bad public key is refused, naming `peers.NAME.public_key`; a plaintext
/// daemon on loopback warns what that exposes.
#[test]
fn rpcd_refuses_a_bad_peer_key_and_warns_in_plaintext() {
    let dir = tempdir();
    let (code, err) = refused_start(dir.path(), "[peers.x]\npublic_key = \"bad\"\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("`peers.x.public_key`"), "{err}");
    let (code, err) = refused_start(
        dir.path(),
        &format!(
            "[peers.x]\npublic_key = \"{}\"\naddresses = [\"peer.example:7400\"]\n",
            PrivateKey::from_bytes([1; 32]).public()
        ),
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("`peers.x.addresses`"), "{err}");
    let d = Daemon::start(dir.path(), "plain", "127.0.0.1:0", None);
    let log = d.log_text();
    assert!(log.contains("any local user can call"), "{log}");
}

/// Two daemons with keys that trust each other: a call names the peer, not its address.
#[test]
fn a_peer_name_is_a_call_target() {
    let dir = tempdir();
    let (ka, kb) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let a_key = key_file(dir.path(), "a.key", &ka.to_base64(), 0o600);
    let b_key = key_file(dir.path(), "b.key", &kb.to_base64(), 0o600);
    // b knows a by key only: a reaches it first.
    let b_config = format!(
        "{}[peers.a]\npublic_key = \"{}\"\n",
        key_config(&b_key),
        ka.public()
    );
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", Some(&b_config));
    let a_config = format!(
        "{}[peers.b]\npublic_key = \"{}\"\naddresses = [\"{}\"]\n",
        key_config(&a_key),
        kb.public(),
        b.udp
    );
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&a_config));
    let opts = CallOptions::new(Some(Duration::from_secs(5)), false);
    let conn = a.connect("test");
    let echoed = conn
        .call("b", "rpcd.echo", rmp_serde::to_vec(&["hi"]).unwrap(), opts)
        .unwrap();
    let echoed: Vec<String> = rmp_serde::from_slice(&echoed).unwrap();
    assert_eq!(echoed, ["hi"]);
    // b's peer a has no addresses: no target.
    let err = b
        .connect("test")
        .call("a", "rpcd.ping", Vec::new(), opts)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("peer a has no addresses configured"),
        "{err}"
    );
    let err = conn
        .call("nobody", "rpcd.ping", Vec::new(), opts)
        .unwrap_err();
    assert!(err.to_string().contains("[peers]"), "{err}");
}

/// The systemd credential is the key when the settings name none.
#[test]
fn rpcd_takes_its_key_from_the_systemd_credential() {
    let dir = tempdir();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let secret = PrivateKey::from_bytes([9; 32]);
    key_file(&creds, "rpcd.key", &secret.to_base64(), 0o400);
    let out = output_within(
        rpcd_command(dir.path(), None)
            .arg("--check-config")
            .env("CREDENTIALS_DIRECTORY", &creds),
        EXIT_MAX,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.contains(&secret.public().to_string()) && summary.contains("rpcd.key"),
        "{summary}"
    );
}
