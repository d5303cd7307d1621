//! Authenticated transport: static keys, Noise IK sessions, per-datagram
//! AEAD with a replay window, and the rules for unauthenticated input
//! (silence, no state, no amplification).

mod crypto;
mod keys;
mod replay;
pub(crate) mod sessions;
pub mod wire;

pub use keys::{KeyError, PeerKey, PrivateKey, PublicKey, Security, KEY_LEN};
pub use sessions::SecurityStats;
