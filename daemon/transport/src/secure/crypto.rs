//! The primitives, from well-kept crates: Noise IK (snow) for the handshake,
//! ChaCha20-Poly1305 for datagrams (ring's, BoringSSL's assembly: on a
//! datagram of a few hundred bytes it costs a third of a microsecond where
//! the chacha20poly1305 crate's costs three), XChaCha20-Poly1305 for
//! cookies, keyed BLAKE2s for MACs. Nothing here draws OS randomness: snow's RNG is a
//! ChaCha20 stream seeded by the owner.

use blake2::digest::Mac as _;
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::consts::U16;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use ring::aead;
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};

use super::keys::{PrivateKey, PublicKey, KEY_LEN};
use super::wire::{MAC_LEN, NOISE_INIT_LEN, NOISE_RESP_LEN, TAG_LEN};

/// WireGuard's pattern and primitives, under rpcd's own prologue.
const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"rpcd authenticated transport v1";
const LABEL_MAC1: &[u8] = b"rpcd mac1";
const LABEL_COOKIE: &[u8] = b"rpcd cookie";

/// Payload of handshake message 1: the initiator's epoch, then its
/// handshake timestamp (nanoseconds, growing; replays carry an old one).
pub(crate) const INIT_PAYLOAD_LEN: usize = 16;
/// Payload of handshake message 2: the responder's epoch.
pub(crate) const RESP_PAYLOAD_LEN: usize = 8;

/// The keyed BLAKE2s MAC, 16 bytes out.
pub(crate) fn mac(key: &[u8], data: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut m = <Blake2sMac<U16> as blake2::digest::KeyInit>::new_from_slice(key)
        .expect("BLAKE2s takes keys of 1..=32 bytes");
    for d in data {
        m.update(d);
    }
    m.finalize().into_bytes().into()
}

/// BLAKE2s-256 of a label and a public key: the mac1 and cookie keys a
/// responder's public key determines.
pub(crate) fn derive(label: &[u8], key: &PublicKey) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label);
    h.update(key.0);
    h.finalize().into()
}

/// The mac1 key of the daemon with `key`.
pub(crate) fn mac1_key(key: &PublicKey) -> [u8; 32] {
    derive(LABEL_MAC1, key)
}

/// The cookie-sealing key of the daemon with `key`.
pub(crate) fn cookie_key(key: &PublicKey) -> [u8; 32] {
    derive(LABEL_COOKIE, key)
}

/// Seal a cookie for an initiator (XChaCha20-Poly1305, its mac1 as AD).
pub(crate) fn seal_cookie(
    key: &[u8; 32],
    nonce: &[u8; 24],
    cookie: &[u8; MAC_LEN],
    mac1: &[u8],
) -> Vec<u8> {
    XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: cookie,
                aad: mac1,
            },
        )
        .expect("sealing a 16-byte cookie cannot fail")
}

/// Open a cookie reply.
pub(crate) fn open_cookie(
    key: &[u8; 32],
    nonce: &[u8; 24],
    sealed: &[u8],
    mac1: &[u8],
) -> Option<[u8; MAC_LEN]> {
    let plain = XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: mac1,
            },
        )
        .ok()?;
    plain.as_slice().try_into().ok()
}

/// The owner-seeded randomness every random choice comes from.
#[derive(Debug)]
pub(crate) struct Rng(ChaCha20Rng);

impl Rng {
    pub(crate) fn from_seed(seed: [u8; 32]) -> Self {
        Rng(ChaCha20Rng::from_seed(seed))
    }

    pub(crate) fn u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0; N];
        self.0.fill_bytes(&mut b);
        b
    }
}

/// snow's RNG: a ChaCha20 stream with a seed from [`Rng`].
struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// snow's default primitives, with the seeded RNG.
struct Resolver([u8; 32]);

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.0))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn builder<'a>(seed: [u8; 32], local: &'a PrivateKey) -> Result<Builder<'a>, snow::Error> {
    let params: NoiseParams = NOISE_PARAMS.parse()?;
    Builder::with_resolver(params, Box::new(Resolver(seed)))
        .prologue(PROLOGUE)?
        .local_private_key(local.secret())
}

/// The two directions' keys of a finished handshake.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    pub(crate) send: DataKey,
    pub(crate) recv: DataKey,
}

/// One direction's ChaCha20-Poly1305 key (RFC 8439) for transport datagrams,
/// whose nonce is 4 zero bytes and the datagram's counter, little-endian.
#[derive(Clone)]
pub(crate) struct DataKey(aead::LessSafeKey);

/// A datagram that does not open: wrong key, nonce, header or bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotAuthentic;

impl DataKey {
    fn new(key: &[u8; KEY_LEN]) -> DataKey {
        let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key)
            .expect("a 32-byte key is a ChaCha20-Poly1305 key");
        DataKey(aead::LessSafeKey::new(key))
    }

    fn nonce(counter: u64) -> aead::Nonce {
        let mut n = [0; aead::NONCE_LEN];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        aead::Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `buf` in place under `counter`, authenticating `header` too;
    /// returns the tag. Each counter is used once: the sender's grows.
    pub(crate) fn seal(&self, counter: u64, header: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(Self::nonce(counter), aead::Aad::from(header), buf)
            .expect("a datagram is far below ChaCha20-Poly1305's message limit");
        let mut out = [0; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `buf` in place when `tag` authenticates it and `header`
    /// under `counter`; on failure `buf`'s bytes mean nothing.
    pub(crate) fn open(
        &self,
        counter: u64,
        header: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), NotAuthentic> {
        let tag = aead::Tag::from(*tag);
        self.0
            .open_in_place_separate_tag(
                Self::nonce(counter),
                aead::Aad::from(header),
                tag,
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| NotAuthentic)
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys")
    }
}

fn split(hs: &mut HandshakeState, initiator: bool) -> SessionKeys {
    let (i2r, r2i) = hs.dangerously_get_raw_split();
    let (send, recv) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
    SessionKeys {
        send: DataKey::new(&send),
        recv: DataKey::new(&recv),
    }
}

/// An initiator waiting for message 2.
pub(crate) struct Initiator(HandshakeState);

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator")
    }
}

/// Message 1 to `remote`, carrying `payload`; `seed` makes the ephemeral
/// key. The same arguments give the same initiator again: a caller whose
/// initiator was consumed by a forged message 2 rebuilds it.
pub(crate) fn initiate(
    seed: [u8; 32],
    local: &PrivateKey,
    remote: &PublicKey,
    payload: &[u8; INIT_PAYLOAD_LEN],
) -> Result<(Initiator, [u8; NOISE_INIT_LEN]), snow::Error> {
    let mut hs = builder(seed, local)?
        .remote_public_key(&remote.0)?
        .build_initiator()?;
    let mut msg = [0; NOISE_INIT_LEN];
    let n = hs.write_message(payload, &mut msg)?;
    debug_assert_eq!(n, NOISE_INIT_LEN);
    Ok((Initiator(hs), msg))
}

impl Initiator {
    /// Read message 2: the responder's payload and the session keys.
    pub(crate) fn finish(
        mut self,
        msg: &[u8],
    ) -> Result<([u8; RESP_PAYLOAD_LEN], SessionKeys), snow::Error> {
        let mut payload = [0; 64];
        let n = self.0.read_message(msg, &mut payload)?;
        let payload: [u8; RESP_PAYLOAD_LEN] =
            payload[..n].try_into().map_err(|_| snow::Error::Input)?;
        Ok((payload, split(&mut self.0, true)))
    }
}

/// What a valid message 1 told the responder.
#[derive(Debug)]
pub(crate) struct Initiation {
    /// The initiator's static key (authenticated).
    pub(crate) remote: PublicKey,
    /// Its payload.
    pub(crate) payload: [u8; INIT_PAYLOAD_LEN],
    state: Responder,
}

struct Responder(HandshakeState);

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

/// Read message 1 (two Diffie-Hellman operations: the costly step that
/// mac1, the rate limit and cookies stand in front of).
pub(crate) fn read_initiation(
    rng: &mut Rng,
    local: &PrivateKey,
    msg: &[u8],
) -> Result<Initiation, snow::Error> {
    let mut hs = builder(rng.bytes(), local)?.build_responder()?;
    let mut payload = [0; 64];
    let n = hs.read_message(msg, &mut payload)?;
    let payload: [u8; INIT_PAYLOAD_LEN] =
        payload[..n].try_into().map_err(|_| snow::Error::Input)?;
    let remote: [u8; KEY_LEN] = hs
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(snow::Error::Input)?;
    Ok(Initiation {
        remote: PublicKey(remote),
        payload,
        state: Responder(hs),
    })
}

impl Initiation {
    /// Message 2 with `payload`, and the session keys.
    pub(crate) fn respond(
        self,
        payload: &[u8; RESP_PAYLOAD_LEN],
    ) -> Result<([u8; NOISE_RESP_LEN], SessionKeys), snow::Error> {
        let mut hs = self.state.0;
        let mut msg = [0; NOISE_RESP_LEN];
        let n = hs.write_message(payload, &mut msg)?;
        debug_assert_eq!(n, NOISE_RESP_LEN);
        Ok((msg, split(&mut hs, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_gives_both_sides_matching_keys_and_authenticates_the_initiator() {
        let mut rng = Rng::from_seed([1; 32]);
        let a = PrivateKey::from_bytes([2; 32]);
        let b = PrivateKey::from_bytes([3; 32]);
        let (init, m1) = initiate(rng.bytes(), &a, &b.public(), &[9; 16]).expect("initiate");
        let got = read_initiation(&mut rng, &b, &m1).expect("read");
        assert_eq!(got.remote, a.public());
        assert_eq!(got.payload, [9; 16]);
        let (m2, kb) = got.respond(&[7; 8]).expect("respond");
        let (p, ka) = init.finish(&m2).expect("finish");
        assert_eq!(p, [7; 8]);
        let mut m = *b"hello";
        let tag = ka.send.seal(7, b"h", &mut m);
        assert_ne!(&m, b"hello");
        assert_eq!(kb.recv.open(7, b"h", &mut m, &tag), Ok(()));
        assert_eq!(&m, b"hello");
        let mut m = *b"back";
        let tag = kb.send.seal(0, b"", &mut m);
        assert_eq!(ka.recv.open(0, b"", &mut m, &tag), Ok(()));
        assert_eq!(&m, b"back");
        // Another counter, another header or a flipped bit opens nothing.
        let mut m = *b"hello";
        let tag = ka.send.seal(1, b"h", &mut m);
        assert_eq!(
            kb.recv.open(2, b"h", &mut m.clone(), &tag),
            Err(NotAuthentic)
        );
        assert_eq!(
            kb.recv.open(1, b"i", &mut m.clone(), &tag),
            Err(NotAuthentic)
        );
        let mut flipped = m;
        flipped[0] ^= 1;
        assert_eq!(kb.recv.open(1, b"h", &mut flipped, &tag), Err(NotAuthentic));
        // A key seals to itself, not to the other direction's key.
        assert_eq!(
            ka.recv.open(1, b"h", &mut m.clone(), &tag),
            Err(NotAuthentic)
        );
        assert_eq!(kb.recv.open(1, b"h", &mut m, &tag), Ok(()));
        // Someone else's key reads nothing.
        let c = PrivateKey::from_bytes([4; 32]);
        let (_, m1) = initiate(rng.bytes(), &a, &b.public(), &[9; 16]).expect("initiate");
        assert!(read_initiation(&mut rng, &c, &m1).is_err());
    }

    /// The datagrams' bytes are RFC 8439's, as the chacha20poly1305 crate (which
    /// sealed them before stop 34) makes them: daemons of either kind talk.
    #[test]
    fn a_data_key_seals_the_bytes_the_chacha20poly1305_crate_seals() {
        use chacha20poly1305::aead::AeadInPlace;
        use chacha20poly1305::{ChaCha20Poly1305, Nonce};
        let key = [0x42; KEY_LEN];
        let theirs = ChaCha20Poly1305::new(&key.into());
        let ours = DataKey::new(&key);
        for (counter, len) in [(0u64, 0usize), (1, 1), (300, 200), (u64::MAX >> 1, 1400)] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let header = counter.to_be_bytes();
            let mut nonce = Nonce::default();
            nonce[4..].copy_from_slice(&counter.to_le_bytes());
            let mut a = plain.clone();
            let tag_a = ours.seal(counter, &header, &mut a);
            let mut b = plain.clone();
            let tag_b = theirs
                .encrypt_in_place_detached(&nonce, &header, &mut b)
                .expect("seal");
            assert_eq!(
                (&a, &tag_a[..]),
                (&b, &tag_b[..]),
                "counter {counter}, {len} bytes"
            );
            assert_eq!(ours.open(counter, &header, &mut b, &tag_a), Ok(()));
            assert_eq!(b, plain);
        }
    }

    #[test]
    fn cookies_open_only_with_the_same_mac1() {
        let k = [5; 32];
        let sealed = seal_cookie(&k, &[1; 24], &[8; 16], b"mac1");
        assert_eq!(open_cookie(&k, &[1; 24], &sealed, b"mac1"), Some([8; 16]));
        assert_eq!(open_cookie(&k, &[1; 24], &sealed, b"mac2"), None);
        assert_ne!(mac(&k, &[b"x"]), mac(&[6; 32], &[b"x"]));
    }
}
