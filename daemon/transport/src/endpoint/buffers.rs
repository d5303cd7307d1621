//! Large buffers the endpoint is lent and given back: the owner's [`Buffers`], which
//! every channel takes reassembly buffers from and gives sent messages' buffers back to,
//! and the buffers of bundles the owner has sent, kept (up to
//! `Config::transmit_spare_bytes_max`) for the next bundles so that a bulk transfer does
//! not allocate one per datagram.

use std::sync::Arc;

use super::Endpoint;
use crate::channel::Buffers;

impl Endpoint {
    /// Every channel, now and later, takes reassembly buffers from `buffers` and gives
    /// sent messages' buffers back to it (see [`Channel::set_buffers`]).
    ///
    /// [`Channel::set_buffers`]: crate::channel::Channel::set_buffers
    pub fn set_buffers(&mut self, buffers: Option<Arc<dyn Buffers>>) {
        for slot in self.channels.values_mut() {
            slot.channel.set_buffers(buffers.clone());
        }
        self.buffers = buffers;
    }

    /// The buffer of a [`Transmit`] the owner has sent: the next bundle is
    /// written into it rather than into new memory. Kept up to
    /// [`Config::transmit_spare_bytes_max`] bytes of capacity in all; beyond, dropped.
    ///
    /// [`Transmit`]: super::Transmit
    /// [`Config::transmit_spare_bytes_max`]: crate::Config::transmit_spare_bytes_max
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        self.spare.keep(bytes, self.cfg.transmit_spare_bytes_max);
    }

    /// A sent bundle's buffer to write the next one into, if one was given back.
    pub(super) fn spare_bundle(&mut self) -> Option<Vec<u8>> {
        self.spare.take()
    }
}

/// Buffers of sent bundles given back by the owner, emptied, and their capacity in all.
#[derive(Debug, Default)]
pub(super) struct SpareBundles {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl SpareBundles {
    /// Keep `bytes` unless that would take the capacity kept past `max`.
    fn keep(&mut self, mut bytes: Vec<u8>, max: usize) {
        let cap = bytes.capacity();
        if cap == 0 || self.bytes + cap > max {
            return;
        }
        bytes.clear();
        self.bytes += cap;
        self.buffers.push(bytes);
    }

    /// The buffer kept last, if any.
    fn take(&mut self) -> Option<Vec<u8>> {
        let bytes = self.buffers.pop()?;
        self.bytes -= bytes.capacity();
        Some(bytes)
    }
}
