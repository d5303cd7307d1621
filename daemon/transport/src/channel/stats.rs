//! Per-channel counters and the snapshot an operator reads.

use std::time::Duration;

use super::Channel;

/// Counters an operator needs, per channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to `poll_transmit`'s caller.
    pub datagrams_sent: u64,
    /// Datagrams accepted from the peer (any kind).
    pub datagrams_received: u64,
    /// Data datagrams sent again with their original counter.
    pub retransmissions: u64,
    /// Of those, sent because loss detection declared them lost (a
    /// selective-ack gap or RACK's time threshold) rather than as a probe.
    pub fast_retransmissions: u64,
    /// Of those, sent as probes after a probe timeout (tail-loss probes).
    pub probes: u64,
    /// Of the retransmissions, second copies of a datagram declared lost,
    /// sent while the flight was thin (`Config::redundant_flight_max`).
    pub redundant_copies: u64,
    /// Copies of a datagram sent once and not yet acknowledged, sent with
    /// the next new datagram on a thin flight (not retransmissions: the
    /// original's state is untouched; `Config::redundant_flight_max`).
    pub forward_copies: u64,
    /// Times data waited for the pacer (its bucket ran dry while the window
    /// had room).
    pub paced_delays: u64,
    /// Losses that reduced the congestion window (one per recovery period).
    pub congestion_events: u64,
    /// Times persistent congestion collapsed the window to its minimum.
    pub persistent_congestion: u64,
    /// Data datagrams received again (acknowledged, not delivered).
    pub duplicates: u64,
    /// Datagrams from an old epoch of the peer, or addressed to an old epoch of ours.
    pub stale_epoch: u64,
    /// Data datagrams beyond the receive window or the reassembly budget.
    pub out_of_window: u64,
    /// Data datagrams inconsistent with earlier fragments of their message.
    pub inconsistent: u64,
    /// Messages accepted by `send`.
    pub messages_sent: u64,
    /// Messages delivered to the owner.
    pub messages_delivered: u64,
    /// Messages fully acknowledged by the peer.
    pub messages_acked: u64,
    /// Messages failed.
    pub messages_failed: u64,
    /// Times the peer's epoch changed (each change confirmed by a challenge).
    pub peer_restarts: u64,
    /// Datagrams dropped because they came from a new epoch of the peer not
    /// (yet) confirmed: a restart being checked, or a forgery.
    pub unconfirmed_epoch: u64,
    /// Probes sent to challenge a claimed new epoch of the peer.
    pub epoch_challenges: u64,
    /// Window fillers sent: the peer's window was closed by counters we
    /// abandoned and it never saw (after a long partition).
    pub window_fillers: u64,
}

/// A snapshot of the channel's estimators and windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Counters.
    pub stats: Stats,
    /// Smoothed RTT, once measured.
    pub srtt: Option<Duration>,
    /// The current retransmission timeout (before backoff).
    pub rto: Duration,
    /// Datagrams sent and not yet acknowledged.
    pub in_flight: usize,
    /// Messages accepted and not yet acknowledged or failed.
    pub queued_messages: usize,
    /// Congestion window, in datagrams.
    pub cwnd: u32,
    /// The peer's advertised receive window.
    pub peer_window: u32,
    /// Bytes held in partial reassemblies.
    pub reassembly_bytes: usize,
    /// The peer's epoch, once known.
    pub peer_epoch: Option<u64>,
}

impl Channel {
    /// Counters and estimators.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            stats: self.stats,
            srtt: self.rtt.srtt(),
            rto: self.rtt.rto(),
            in_flight: self.send.in_flight.len(),
            queued_messages: self.send.messages.len(),
            cwnd: self.send.cc.window(),
            peer_window: self.send.peer_window,
            reassembly_bytes: self.recv.partial_bytes,
            peer_epoch: self.peer_epoch,
        }
    }
}
