//! `[security]` and `[peers]`: this daemon's private key and the peers it
//! trusts, parsed into the transport's key types.
//!
//! The private key is read once per load (at start and on each reload) from
//! `security.private_key_file`, else from the systemd credential
//! `$CREDENTIALS_DIRECTORY/rpcd.key`; a file that others may read is
//! refused, like ssh refuses an exposed identity.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rpcd_transport::secure::{KeyError, PeerKey, PrivateKey, PublicKey, Security};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use thiserror::Error;

/// Peers `[peers]` may list.
pub const PEERS_CONFIGURED_MAX: usize = 1024;
/// Addresses one peer may list.
pub const PEER_ADDRESSES_MAX: usize = 16;
/// The systemd credential holding the private key (`LoadCredential=rpcd.key:PATH`).
pub const CREDENTIAL_NAME: &str = "rpcd.key";
/// The peer name kept for this daemon's own apps (policy will name them so).
pub const RESERVED_PEER_NAME: &str = "local";
/// Largest key file read: a key is 44 characters; anything much longer is
/// not a key file, and is not read whole.
pub const KEY_FILE_MAX: u64 = 1024;

/// `[security]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecuritySettings {
    /// `security.private_key_file`: where the private key is read from.
    pub private_key_file: Option<PathBuf>,
    /// The key read when the settings were loaded, from `private_key_file`,
    /// else from the systemd credential. None: plaintext.
    pub key: Option<LoadedKey>,
}

/// A private key and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedKey {
    /// The key.
    pub key: PrivateKey,
    /// The file it was read from (for logs).
    pub path: PathBuf,
}

/// `[peers.NAME]`: a daemon this one trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// Its public key.
    pub public_key: PublicKey,
    /// Where it is reached, in order of preference. Empty: it is reached
    /// only after it reaches this daemon, and its name is no target.
    pub addresses: Vec<SocketAddr>,
}

/// Where a private key came from, for the error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `security.private_key_file`.
    Setting,
    /// `$CREDENTIALS_DIRECTORY/rpcd.key`.
    Credential,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Setting => f.write_str("setting `security.private_key_file`"),
            KeySource::Credential => write!(f, "systemd credential {CREDENTIAL_NAME}"),
        }
    }
}

/// Why a private key file cannot be used.
#[derive(Debug, Error)]
pub enum KeyFileError {
    /// The setting is a relative path (the daemon's working directory
    /// changes when it daemonizes, so it would not name one file).
    #[error("must be an absolute path")]
    Relative,
    /// It cannot be opened (missing, or no permission).
    #[error("cannot open it: {0}")]
    Open(std::io::Error),
    /// It is a directory, a device, a socket...
    #[error("it is not a regular file")]
    NotAFile,
    /// Its group or others have some access to it.
    #[error("its mode is {mode:04o}: group and others must have no access to a private key (chmod 600 it)")]
    Exposed {
        /// The permission bits.
        mode: u32,
    },
    /// It could not be read.
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    /// It is too long to be a key file.
    #[error("it is larger than {KEY_FILE_MAX} bytes, so it is not a key file")]
    TooLarge,
    /// It is not text.
    #[error("it is not text, so it is not a key file (rpcctl keys generate writes one)")]
    NotText,
    /// Its text is not a key.
    #[error("it does not hold a private key: {0}")]
    NotAKey(KeyError),
}

/// Read and check the private key file at `path`: a regular file that only
/// its owner may access, holding one base64 key.
pub fn read_key_file(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let file = std::fs::File::open(path).map_err(KeyFileError::Open)?;
    // The checks are on the open file, so they hold for what is read.
    let meta = file.metadata().map_err(KeyFileError::Read)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile);
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed { mode });
    }
    let mut bytes = Vec::new();
    file.take(KEY_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(KeyFileError::Read)?;
    if bytes.len() as u64 > KEY_FILE_MAX {
        return Err(KeyFileError::TooLarge);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyFileError::NotText)?;
    PrivateKey::parse(text).map_err(KeyFileError::NotAKey)
}

/// The private key this configuration names: `private_key_file`, else the
/// credential in `credentials_dir` if it exists there; None for plaintext.
pub(super) fn load_key(
    private_key_file: Option<&Path>,
    credentials_dir: Option<&Path>,
) -> Result<Option<LoadedKey>, (KeySource, PathBuf, KeyFileError)> {
    let (source, path) = match (private_key_file, credentials_dir) {
        (Some(p), _) => {
            if !p.is_absolute() {
                return Err((KeySource::Setting, p.to_owned(), KeyFileError::Relative));
            }
            (KeySource::Setting, p.to_owned())
        }
        (None, Some(dir)) => {
            let p = dir.join(CREDENTIAL_NAME);
            if std::fs::symlink_metadata(&p).is_err() {
                return Ok(None);
            }
            (KeySource::Credential, p)
        }
        (None, None) => return Ok(None),
    };
    match read_key_file(&path) {
        Ok(key) => Ok(Some(LoadedKey { key, path })),
        Err(e) => Err((source, path, e)),
    }
}

/// `[peers.NAME]` as written: each key optional, so that an environment
/// override can change one key of a peer the file defines.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePeer {
    #[serde(default, deserialize_with = "public_key")]
    public_key: Option<PublicKey>,
    #[serde(default, deserialize_with = "addresses")]
    addresses: Option<Vec<SocketAddr>>,
}

impl FilePeer {
    /// Overlay this on `old` (the same peer from a lower source, if any).
    pub(super) fn overlay(
        self,
        name: &str,
        old: Option<&PeerSettings>,
    ) -> Result<PeerSettings, String> {
        let public_key = self
            .public_key
            .or(old.map(|p| p.public_key))
            .ok_or_else(|| {
                format!("`peers.{name}.public_key`: missing (a peer is trusted by its public key)")
            })?;
        let addresses = self
            .addresses
            .or_else(|| old.map(|p| p.addresses.clone()))
            .unwrap_or_default();
        Ok(PeerSettings {
            public_key,
            addresses,
        })
    }
}

fn public_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PublicKey>, D::Error> {
    let text = String::deserialize(d)?;
    PublicKey::parse(&text).map(Some).map_err(de::Error::custom)
}

/// `"ip:port"` or a list of them.
fn addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<SocketAddr>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let texts = match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    };
    if texts.len() > PEER_ADDRESSES_MAX {
        return Err(de::Error::custom(format!(
            "at most {PEER_ADDRESSES_MAX} addresses per peer"
        )));
    }
    texts
        .iter()
        .map(|t| {
            t.parse().map_err(|_| {
                de::Error::custom(format!(
                    "{t:?} is not an ip:port address (a peer's addresses are literal; \
                     host names are not supported here)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Check `[peers]` against itself and this daemon's key; the error is the
/// key and the problem.
pub(super) fn validate_peers(
    peers: &BTreeMap<String, PeerSettings>,
    own: Option<&PublicKey>,
) -> Result<(), (String, String)> {
    if peers.len() > PEERS_CONFIGURED_MAX {
        return Err((
            "peers".into(),
            format!("at most {PEERS_CONFIGURED_MAX} peers"),
        ));
    }
    let mut by_key: BTreeMap<PublicKey, &str> = BTreeMap::new();
    for (name, peer) in peers {
        if !super::valid_name(name) {
            return Err((
                format!("peers.{name}"),
                "a peer name is 1 to 255 of A-Z a-z 0-9 . _ - (like a service name)".into(),
            ));
        }
        if name == RESERVED_PEER_NAME {
            return Err((
                format!("peers.{name}"),
                format!("{RESERVED_PEER_NAME:?} is reserved for this daemon's own apps"),
            ));
        }
        let key = format!("peers.{name}.public_key");
        if Some(&peer.public_key) == own {
            return Err((
                key,
                "is this daemon's own public key; a daemon is not its own peer".into(),
            ));
        }
        if let Some(other) = by_key.insert(peer.public_key, name) {
            return Err((key, format!("is also the key of peers.{other}")));
        }
        if peer.addresses.len() > PEER_ADDRESSES_MAX {
            return Err((
                format!("peers.{name}.addresses"),
                format!("at most {PEER_ADDRESSES_MAX} addresses per peer"),
            ));
        }
    }
    Ok(())
}

/// What the transport is given: the key and the peers, or plaintext.
pub(super) fn transport_security(
    security: &SecuritySettings,
    peers: &BTreeMap<String, PeerSettings>,
) -> Security {
    match &security.key {
        Some(k) => Security::Keys {
            local: k.key.clone(),
            peers: peer_keys(peers),
        },
        None => Security::Plaintext,
    }
}

/// `[peers]` as the transport's peer list.
pub(super) fn peer_keys(peers: &BTreeMap<String, PeerSettings>) -> Vec<PeerKey> {
    peers
        .iter()
        .map(|(name, p)| PeerKey {
            name: name.clone(),
            public: p.public_key,
            addresses: p.addresses.clone(),
        })
        .collect()
}
