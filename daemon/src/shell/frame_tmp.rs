//! TEMPORARY until client-lib's FrameReader lands (same API).
use rpcd_client::ipc::{self, FrameError};
use std::io::Read;

#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    frame_max: usize,
}

impl FrameReader {
    pub fn new(frame_max: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            frame_max,
        }
    }
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> std::io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 65536];
        let n = r.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
    pub fn next_frame<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match ipc::decode_frame::<T>(&self.buf[self.start..], self.frame_max)? {
            None => Ok(None),
            Some((m, used)) => {
                self.start += used;
                Ok(Some(m))
            }
        }
    }
}
