//! What the benchmark (`tests/tests/perf_bench.rs`) and its helper processes
//! (`perf_helper`) share: the tarpc service of the baseline and the frame format of the
//! plain relays of the floor.

use std::io::{self, Read, Write};

/// The baseline's service: `kv.get`, like the `kv` example's.
#[tarpc::service]
pub trait Kv {
    /// The value of `key`, if any.
    async fn get(key: String) -> Option<String>;
}

/// A frame of the floor: a 4-byte little-endian length, then that many bytes.
pub fn write_frame(w: &mut impl Write, scratch: &mut Vec<u8>, body: &[u8]) -> io::Result<()> {
    scratch.clear();
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too long"))?;
    scratch.extend_from_slice(&len.to_le_bytes());
    scratch.extend_from_slice(body);
    // One write per frame: the floor is a plain relay, not a batching one.
    w.write_all(scratch)
}

/// Reads one frame into `body`; `Ok(false)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read, body: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    body.resize(u32::from_le_bytes(len) as usize, 0);
    r.read_exact(body)?;
    Ok(true)
}

/// The key every `kv.get` of the benchmark asks for: 30 characters, so its MessagePack
/// argument array is 32 bytes.
pub const KEY: &str = "bench-key-0123456789abcdefghij";

/// Its value (30 characters).
pub const VALUE: &str = "bench-val-0123456789abcdefghij";
