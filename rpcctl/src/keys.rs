//! `rpcctl keys`: make a daemon's private key and show public keys, with no daemon involved.
//!
//! A key file is what `rpcd` reads from `security.private_key_file`: one line of base64, mode
//! 0600. Keys come from the OS's randomness (getrandom) and never pass through the daemon.
//! With `--json` each verb prints one JSON object on standard output and nothing else.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rpcd_transport::secure::{PrivateKey, KEY_LEN};
use serde_json::json;

use crate::exit::{self, Usage};

/// Longest key file read: a key is 44 characters, and more than this is not a key file.
const KEY_FILE_MAX: u64 = 1024;

/// `rpcctl keys generate [--out FILE]`: with FILE, write the private key there (a new file,
/// mode 0600) and print the public key; without, print the private key on standard output and
/// the public key on standard error. With `json`, standard output gets one object instead:
/// `{"public_key", "private_key_file"}` with FILE, `{"private_key", "public_key"}` without.
pub fn generate(out: Option<&Path>, json: bool) -> anyhow::Result<u8> {
    let key = new_key()?;
    let line = format!("{}\n", key.to_base64());
    match out {
        Some(path) => {
            write_new(path, line.as_bytes())?;
            exit::print(&if json {
                crate::value::render(
                    &json!({
                        "public_key": key.public().to_string(),
                        "private_key_file": path.display().to_string(),
                    }),
                    true,
                )
            } else {
                format!("{}\n", key.public())
            })?;
        }
        None if json => {
            let doc = json!({
                "private_key": key.to_base64(),
                "public_key": key.public().to_string(),
            });
            exit::print(&crate::value::render(&doc, true))?;
        }
        None => {
            exit::print(&line)?;
            // The private key is out; a closed standard error loses only the public key,
            // which `rpcctl keys public` can show again.
            let _ = writeln!(io::stderr(), "{}", key.public());
        }
    }
    Ok(exit::SUCCESS)
}

/// `rpcctl keys public FILE`: print the public key of the private key in FILE (`-`: standard
/// input).
pub fn public(file: &Path, json: bool) -> anyhow::Result<u8> {
    let key = read_key(file)?;
    exit::print(&if json {
        crate::value::render(&json!({"public_key": key.public().to_string()}), true)
    } else {
        format!("{}\n", key.public())
    })?;
    Ok(exit::SUCCESS)
}

/// A private key from 32 bytes of the OS's randomness.
fn new_key() -> anyhow::Result<PrivateKey> {
    let mut secret = [0u8; KEY_LEN];
    getrandom::getrandom(&mut secret).context("reading the OS's randomness")?;
    // All zeros is no key (rpcd refuses it); from a working source it never comes.
    anyhow::ensure!(
        secret != [0; KEY_LEN],
        "the OS's randomness returned only zeros; no key written"
    );
    Ok(PrivateKey::from_bytes(secret))
}

/// Create `path` (never replacing a file) with mode 0600 and write `bytes` to disk.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Usage(format!(
                "{} exists; refusing to overwrite it (a key in use would be lost): remove it \
                 first or choose another --out",
                path.display()
            ))
            .into())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create the key file {}", path.display()))
        }
    };
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the key file {}", path.display()))
}

/// The private key in `file` (`-`: standard input). Anything wrong with it is the user's
/// input, so a usage error.
fn read_key(file: &Path) -> anyhow::Result<PrivateKey> {
    let (name, bytes) = if file == Path::new("-") {
        let bytes = read_bounded(io::stdin().lock())
            .map_err(|e| Usage(format!("cannot read standard input: {e}")))?;
        ("standard input".to_owned(), bytes)
    } else {
        let name = file.display().to_string();
        let bytes = std::fs::File::open(file)
            .and_then(read_bounded)
            .map_err(|e| Usage(format!("cannot read {name}: {e}")))?;
        (name, bytes)
    };
    if bytes.len() as u64 > KEY_FILE_MAX {
        return Err(Usage(format!(
            "{name} is larger than {KEY_FILE_MAX} bytes: not a key file"
        ))
        .into());
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Usage(format!("{name} is not text: not a key file")))?;
    PrivateKey::parse(text)
        .map_err(|e| Usage(format!("{name} does not hold a private key: {e}")).into())
}

/// Up to one byte more than [`KEY_FILE_MAX`], so that a longer input is seen to be longer.
fn read_bounded(reader: impl Read) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(KEY_FILE_MAX + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}
