//! Authenticated transport: static keys, Noise IK sessions, per-datagram
//! AEAD with a replay window, and the rules for unauthenticated input
//! (silence, no state, no amplification).

mod keys;

pub use keys::{KeyError, PeerKey, PrivateKey, PublicKey, Security, KEY_LEN};
