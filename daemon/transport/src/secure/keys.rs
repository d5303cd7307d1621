//! Static keys: a daemon's private key, peers' public keys, their text form.
//!
//! Keys are X25519, written as standard base64 of their 32 bytes (44
//! characters, WireGuard's form). The private key never appears in `Debug`.

use std::fmt;
use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use blake2::{Blake2s256, Digest};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use thiserror::Error;

/// Bytes in a key.
pub const KEY_LEN: usize = 32;

/// Why text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// Not base64.
    #[error("a key is 44 characters of base64; this is not base64")]
    NotBase64,
    /// Base64 of the wrong number of bytes.
    #[error("a key is 32 bytes; this decodes to {0}")]
    WrongLength(usize),
    /// The all-zero key (a placeholder, never a real key).
    #[error("the all-zero key is not a key")]
    Zero,
}

fn decode(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64)?;
    let key: [u8; KEY_LEN] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength(bytes.len()))?;
    if key == [0; KEY_LEN] {
        return Err(KeyError::Zero);
    }
    Ok(key)
}

/// A public key: a daemon's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parse the base64 form.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode(text).map(PublicKey)
    }

    /// A short, stable name for logs and stats: the first 8 bytes of the
    /// key's BLAKE2s-256 hash, in hex.
    pub fn fingerprint(&self) -> String {
        let hash = Blake2s256::digest(self.0);
        hash[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A private key, with its public key computed once.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey {
    secret: [u8; KEY_LEN],
    public: PublicKey,
}

impl PrivateKey {
    /// The key with these 32 bytes (any 32 bytes are a valid X25519 private
    /// key; the owner draws them from the OS's randomness).
    pub fn from_bytes(secret: [u8; KEY_LEN]) -> Self {
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("snow is built with use-curve25519");
        dh.set(&secret);
        let mut public = [0; KEY_LEN];
        public.copy_from_slice(dh.pubkey());
        PrivateKey {
            secret,
            public: PublicKey(public),
        }
    }

    /// Parse the base64 form (a key file's content).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode(text).map(Self::from_bytes)
    }

    /// The base64 form, for writing a key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.secret)
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    #[allow(dead_code)] // read by the session layer, next
    pub(crate) fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public)
    }
}

/// A peer this daemon trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKey {
    /// Its name in the configuration (shown to apps as the caller).
    pub name: String,
    /// Its public key.
    pub public: PublicKey,
    /// Where it may be reached and come from. Empty: anywhere (it is reached
    /// only after it connects first).
    pub addresses: Vec<SocketAddr>,
}

/// How the endpoint protects its datagrams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// No authentication, no encryption (the CRC32C only). Explicit consent
    /// in the daemon's configuration beyond loopback.
    Plaintext,
    /// Noise IK sessions with the listed peers; everything else is dropped.
    Keys {
        /// This daemon's key.
        local: PrivateKey,
        /// The peers it trusts.
        peers: Vec<PeerKey>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_text_and_the_public_key_is_derived() {
        let k = PrivateKey::from_bytes([7; 32]);
        let again = PrivateKey::parse(&k.to_base64()).expect("parses");
        assert_eq!(again, k);
        assert_eq!(PublicKey::parse(&k.public().to_string()), Ok(k.public()));
        assert_ne!(k.public().0, [7; 32]);
        assert_ne!(k.public(), PrivateKey::from_bytes([8; 32]).public());
        assert_eq!(k.public().fingerprint().len(), 16);
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }

    #[test]
    fn bad_key_text_is_refused_with_a_reason() {
        assert_eq!(PublicKey::parse("not base64!"), Err(KeyError::NotBase64));
        assert_eq!(PublicKey::parse("AAAA"), Err(KeyError::WrongLength(3)));
        let zero = STANDARD.encode([0u8; 32]);
        assert_eq!(PublicKey::parse(&zero), Err(KeyError::Zero));
    }
}
