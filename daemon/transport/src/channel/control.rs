//! Control datagrams: a Probe or an Ack with our acknowledgement state, and
//! the epoch-only answer to an incarnation we do not know.

use super::{Channel, Kind};
use crate::seq::Seq;
use crate::wire::Datagram;

impl Channel {
    /// A Probe or an Ack to the peer's epoch, with our acknowledgement state
    /// and floors; `nonce` is an Ack's echo (a Probe's challenge is sent by
    /// `challenge_probe`).
    pub(super) fn control(&mut self, kind: Kind, ack_now: bool, nonce: u64) -> Vec<u8> {
        let d = Datagram {
            sender_epoch: self.local_epoch,
            receiver_epoch: self.peer_epoch.unwrap_or(0),
            kind,
            seq: Seq(0),
            send_floor: self.send.send_floor(),
            msg_floor: self.send.msg_floor().into(),
            ack: Some(self.ack_info()),
            ack_now,
            fragment: None,
            nonce,
            key_id: 0,
        };
        self.ack_sent();
        self.stats.datagrams_sent += 1;
        d.to_vec()
    }

    /// Our epoch and nothing else: no receiver epoch (we do not know which
    /// incarnation will read it), no acknowledgement, no floors (ours refer
    /// to a counter space the reader may not share).
    pub(super) fn epoch_only_answer(&mut self) -> Vec<u8> {
        let d = Datagram {
            sender_epoch: self.local_epoch,
            receiver_epoch: 0,
            kind: Kind::Ack,
            seq: Seq(0),
            send_floor: Seq(0),
            msg_floor: 0,
            ack: None,
            ack_now: false,
            fragment: None,
            nonce: 0,
            key_id: 0,
        };
        self.stats.datagrams_sent += 1;
        d.to_vec()
    }
}
