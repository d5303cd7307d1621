//! Every bound and timer of the transport, as one value with defaults.

use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

use crate::wire::{BUNDLE_HEADER_LEN, HEADER_LEN, PAYLOAD_MAX, TAG_MAX};

/// IPv6 and UDP headers, which a received datagram's buffer holds too.
const IP_UDP_HEADERS: usize = 48;

/// What Linux charges a receive buffer for one datagram of `len` bytes, or
/// a little more: its allocation, rounded up to a power of two up to
/// 16 KiB and to whole pages above, plus the `sk_buff`. (Measured on
/// loopback with a 4 MiB `SO_RCVBUF`, read back as 8 MiB: 100 bytes take
/// 832, 1,330 take 2,304, 9,000 take 16,644, 20,000 take 20,867, 60,128
/// take 61,230, 65,000 take 66,052.) A NIC's driver may charge a small
/// datagram a whole page; the default window (1,024) stays well inside
/// the default buffer even then.
fn socket_charge(len: usize) -> usize {
    let allocated = if len <= 16 * 1024 {
        len.next_power_of_two()
    } else {
        len.next_multiple_of(4096)
    };
    allocated + 1024
}

/// The default of [`Config::transmit_spare_bytes_max`]: some 70 full bundles on
/// loopback (60,000-byte fragments), enough for what the owner's sends take from one
/// flight at a time (a `sendmmsg` of 64), and a bound on what an idle endpoint holds.
pub const TRANSMIT_SPARE_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// Transport settings. Every field is a bound or a timer with a default;
/// [`Config::validate`] checks the relations between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bytes of message data per datagram (the fragment size). 1200 fits any
    /// path MTU of 1280 or more after the 96-byte header and UDP/IP headers.
    /// Also the bound of a bundle (one UDP datagram carrying several
    /// datagrams for a peer): `BUNDLE_HEADER_LEN + HEADER_LEN + payload_max`.
    pub payload_max: usize,
    /// `payload_max` for a peer at a loopback address (127.0.0.0/8, `::1`):
    /// datagrams to it never leave the host, whose loopback device takes
    /// 64 KiB, so a large message goes in a few large datagrams rather than
    /// thousands of small ones. 0: `payload_max` for every peer.
    pub payload_max_loopback: usize,
    /// Largest message accepted for sending or reassembled on receipt.
    pub message_max: usize,
    /// Messages accepted for sending per peer and not yet acknowledged or failed.
    pub send_queue_max: usize,
    /// Bytes of those messages, per peer.
    pub send_queue_bytes_max: usize,
    /// Receive window, in datagrams beyond the cumulative acknowledgement.
    pub recv_window: u32,
    /// Bytes the UDP socket that receives the peer's datagrams holds: the
    /// kernel's `SO_RCVBUF` as read back, which counts each datagram's
    /// buffer (see [`Config::socket_window`]). The advertised window never
    /// exceeds the datagrams of the channel's size that fit in it, so a
    /// peer's flight cannot overrun the socket while the receiver is busy
    /// elsewhere. Set by whoever owns the socket; 0: no such bound.
    pub socket_recv_buffer: usize,
    /// Bytes held in partially reassembled messages, per peer: payload plus a
    /// per-fragment and per-message overhead (see `channel::recv::charge`).
    pub reassembly_bytes_max: usize,
    /// The same, for all peers together.
    pub reassembly_total_max: usize,
    /// Congestion window at the start, in datagrams (RFC 6928: 10).
    pub cwnd_initial: u32,
    /// Floor of the congestion window, in datagrams: what persistent
    /// congestion collapses it to (RFC 9002: 2).
    pub cwnd_min: u32,
    /// Ceiling of the congestion window, in datagrams.
    pub cwnd_max: u32,
    /// A datagram declared lost that carries a whole message goes twice
    /// (back to back) while the sender is application-limited (nothing
    /// waits for the window) with fewer than this many datagrams in flight: a light RPC load then recovers a loss
    /// in one round trip even when the repair is lost too, as thin-stream
    /// TCP's redundant bundling does. 0 never sends a second copy.
    pub redundant_flight_max: u32,
    /// On a thin flight (fewer than `redundant_flight_max` in flight, the
    /// window not limiting), each new datagram carrying a whole message is
    /// sent again with the next new datagram at a later instant, while
    /// unacknowledged: a light RPC load then recovers a single loss at its
    /// next message, not a round trip later. false never sends one.
    pub forward_copies: bool,
    /// Pacing rate, in percent of the congestion window per smoothed RTT
    /// (RFC 9002 §7.7 suggests 125: a little above the window, so pacing
    /// does not itself limit the sender).
    pub pacing_gain_percent: u32,
    /// Datagrams the pacer lets go at once (its bucket's size): the initial
    /// window goes in one burst, and a lone message never waits. The bucket
    /// holds 2 ms at the pacing rate if that is more (see `channel::pacing`).
    pub pacing_burst: u32,
    /// The minimum RTT is the smallest sample of about this long (BBR's
    /// min_rtt filter: 10 s), so a path whose RTT rises is followed.
    pub min_rtt_window: Duration,
    /// Retransmission timeout before any RTT sample.
    pub rto_initial: Duration,
    /// Floor of the retransmission timeout (RFC 6298 says 1 s; LANs want ms).
    pub rto_min: Duration,
    /// Ceiling of the retransmission timeout, backoff included.
    pub rto_max: Duration,
    /// Transmissions of one datagram after the first before its message fails
    /// with "peer unreachable".
    pub retransmits_max: u32,
    /// How long an acknowledgement may wait for a datagram to ride on.
    pub ack_delay: Duration,
    /// Acknowledge at once after this many data datagrams.
    pub ack_every: u32,
    /// Probe a silent peer this often while anything is outstanding to it.
    pub keepalive_interval: Duration,
    /// Declare a peer unreachable after this long without hearing from it
    /// while anything is outstanding to it.
    pub peer_timeout: Duration,
    /// After this long without hearing from a peer, and with nothing
    /// outstanding to it, the next message waits for a probe to confirm the
    /// peer's epoch (one round trip) so that a peer restart in between never
    /// fails it as "peer restarted".
    pub revalidate_after: Duration,
    /// Peers (channels) an endpoint keeps; datagrams from further new peers
    /// are dropped and counted.
    pub peers_max: usize,
    /// A peer quiet this long (nothing heard, nothing sent) that no call
    /// uses is forgotten with all its state (see `Endpoint::evict_idle`).
    pub peer_idle_timeout: Duration,
    /// With keys: start a new handshake once a session is this old (the old
    /// one keeps working meanwhile).
    pub rekey_after: Duration,
    /// With keys: a session this old is never used again, in either
    /// direction.
    pub reject_after: Duration,
    /// With keys: start a new handshake after sending this many datagrams
    /// in one session.
    pub rekey_after_datagrams: u64,
    /// With keys: a session that sent this many datagrams sends no more.
    pub reject_after_datagrams: u64,
    /// With keys: handshakes per second, daemon-wide, above which an
    /// initiator must first prove its address with a cookie.
    pub handshake_load_max: u32,
    /// With keys: handshakes per second accepted from one source IP.
    pub handshake_rate_per_source: u32,
    /// Bytes of capacity of sent bundles' buffers the endpoint keeps, once the owner
    /// gives them back (`Endpoint::recycle`), to write its next bundles into instead of
    /// new memory; a buffer past it is dropped. 0 keeps none. Memory an idle endpoint
    /// holds, not a protocol bound.
    pub transmit_spare_bytes_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            payload_max: 1200,
            payload_max_loopback: 60_000,
            message_max: 16 * 1024 * 1024,
            send_queue_max: 4096,
            send_queue_bytes_max: 64 * 1024 * 1024,
            recv_window: 1024,
            socket_recv_buffer: 0,
            reassembly_bytes_max: 20 * 1024 * 1024,
            reassembly_total_max: 256 * 1024 * 1024,
            cwnd_initial: 10,
            cwnd_min: 2,
            cwnd_max: 1024,
            redundant_flight_max: 16,
            forward_copies: true,
            pacing_gain_percent: 125,
            pacing_burst: 10,
            min_rtt_window: Duration::from_secs(10),
            rto_initial: Duration::from_millis(100),
            rto_min: Duration::from_millis(4),
            rto_max: Duration::from_secs(1),
            retransmits_max: 20,
            ack_delay: Duration::from_millis(1),
            ack_every: 2,
            keepalive_interval: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(5),
            revalidate_after: Duration::from_millis(250),
            peers_max: 1024,
            peer_idle_timeout: Duration::from_secs(600),
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            rekey_after_datagrams: 1 << 48,
            reject_after_datagrams: 1 << 60,
            handshake_load_max: 100,
            handshake_rate_per_source: 20,
            transmit_spare_bytes_max: TRANSMIT_SPARE_BYTES_MAX_DEFAULT,
        }
    }
}

/// A setting out of range, or two settings that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("transport setting `{key}`: {problem}")]
pub struct ConfigError {
    /// The setting at fault.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        problem: problem.into(),
    }
}

impl Config {
    /// The least `reassembly_bytes_max` that lets a largest message complete
    /// with 64 datagrams of other messages in flight.
    /// (Whichever fragment size a peer gets, `payload_max` or
    /// `payload_max_loopback`: the larger one's floor.)
    pub fn reassembly_floor(&self) -> usize {
        use crate::channel::recv::{charge, PARTIAL_OVERHEAD};
        let floor = |payload: usize| {
            let fragments = self.message_max.div_ceil(payload.max(1));
            self.message_max + fragments * charge(0) + PARTIAL_OVERHEAD + 64 * charge(payload)
        };
        match self.payload_max_loopback {
            0 => floor(self.payload_max),
            loopback => floor(self.payload_max).max(floor(loopback)),
        }
    }

    /// The settings of the channel to `peer`: `payload_max` is
    /// `payload_max_loopback` when `peer` is a loopback address (an
    /// IPv4-mapped one too) and that is set.
    pub fn for_peer(&self, peer: SocketAddr) -> Config {
        let loopback = peer.ip().to_canonical().is_loopback();
        if loopback && self.payload_max_loopback != 0 {
            Config {
                payload_max: self.payload_max_loopback,
                ..*self
            }
        } else {
            *self
        }
    }

    /// Check every range and relation; the channel relies on them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(64..=PAYLOAD_MAX).contains(&self.payload_max) {
            return Err(bad("payload_max", format!("must be 64..={PAYLOAD_MAX}")));
        }
        if self.payload_max_loopback != 0
            && !(64..=PAYLOAD_MAX).contains(&self.payload_max_loopback)
        {
            return Err(bad(
                "payload_max_loopback",
                format!("must be 0 or 64..={PAYLOAD_MAX}"),
            ));
        }
        if self.message_max == 0 {
            return Err(bad("message_max", "must be at least 1"));
        }
        if self.message_max.div_ceil(self.payload_max) > u32::MAX as usize {
            return Err(bad("message_max", "needs more than 2^32 fragments"));
        }
        if self.send_queue_max == 0 {
            return Err(bad("send_queue_max", "must be at least 1"));
        }
        if self.send_queue_bytes_max < self.message_max {
            return Err(bad(
                "send_queue_bytes_max",
                "must be at least message_max, or a largest message could never be sent",
            ));
        }
        if !(16..=1 << 20).contains(&self.recv_window) {
            return Err(bad("recv_window", "must be 16..=1048576 datagrams"));
        }
        let floor = self.reassembly_floor();
        if self.reassembly_bytes_max < floor {
            return Err(bad(
                "reassembly_bytes_max",
                format!(
                    "must be at least message_max + 64 datagrams, with each fragment's overhead ({floor}; datagrams of payload_max_loopback count when it is set), or a largest message could stall"
                ),
            ));
        }
        if self.reassembly_total_max < self.reassembly_bytes_max {
            return Err(bad(
                "reassembly_total_max",
                "must be at least reassembly_bytes_max, or a largest message could stall",
            ));
        }
        if self.cwnd_min == 0 || self.cwnd_min > self.cwnd_initial {
            return Err(bad("cwnd_min", "must be 1..=cwnd_initial"));
        }
        if self.cwnd_initial > self.cwnd_max {
            return Err(bad("cwnd_initial", "must be cwnd_min..=cwnd_max"));
        }
        if !(100..=1000).contains(&self.pacing_gain_percent) {
            return Err(bad("pacing_gain_percent", "must be 100..=1000"));
        }
        if self.pacing_burst == 0 {
            return Err(bad("pacing_burst", "must be at least 1"));
        }
        if self.min_rtt_window < Duration::from_millis(100) {
            return Err(bad("min_rtt_window", "must be at least 100 ms"));
        }
        if self.rto_min.is_zero() || self.rto_min > self.rto_max {
            return Err(bad("rto_min", "must be above zero and at most rto_max"));
        }
        if self.rto_initial < self.rto_min || self.rto_initial > self.rto_max {
            return Err(bad("rto_initial", "must lie between rto_min and rto_max"));
        }
        if self.retransmits_max == 0 || self.retransmits_max > 64 {
            return Err(bad("retransmits_max", "must be 1..=64"));
        }
        if self.ack_delay >= self.rto_min {
            return Err(bad(
                "ack_delay",
                "must be below rto_min, or every lone datagram is retransmitted",
            ));
        }
        if self.ack_every == 0 {
            return Err(bad("ack_every", "must be at least 1"));
        }
        if self.keepalive_interval.is_zero() || self.keepalive_interval >= self.peer_timeout {
            return Err(bad(
                "keepalive_interval",
                "must be above zero and below peer_timeout",
            ));
        }
        if self.revalidate_after.is_zero() || self.revalidate_after > self.peer_timeout {
            return Err(bad(
                "revalidate_after",
                "must be above zero and at most peer_timeout",
            ));
        }
        if self.peers_max == 0 {
            return Err(bad("peers_max", "must be at least 1"));
        }
        if self.peer_idle_timeout <= self.peer_timeout {
            return Err(bad(
                "peer_idle_timeout",
                "must be above peer_timeout, or a peer could be forgotten while it is probed",
            ));
        }
        if self.rekey_after.is_zero() || self.rekey_after >= self.reject_after {
            return Err(bad(
                "rekey_after",
                "must be above zero and below reject_after",
            ));
        }
        if self.rekey_after_datagrams == 0
            || self.rekey_after_datagrams >= self.reject_after_datagrams
            || self.reject_after_datagrams > 1 << 62
        {
            return Err(bad(
                "rekey_after_datagrams",
                "must be above zero and below reject_after_datagrams (at most 2^62)",
            ));
        }
        if self.handshake_load_max == 0 {
            return Err(bad("handshake_load_max", "must be at least 1"));
        }
        if self.handshake_rate_per_source == 0 {
            return Err(bad("handshake_rate_per_source", "must be at least 1"));
        }
        Ok(())
    }

    /// Datagrams of this configuration's full size (`payload_max`, with
    /// keys' overhead and IPv6/UDP headers) that `socket_recv_buffer` holds,
    /// at least 2 so that a tiny buffer still lets data through; `u32::MAX`
    /// when it is 0.
    pub fn socket_window(&self) -> u32 {
        if self.socket_recv_buffer == 0 {
            return u32::MAX;
        }
        let len = BUNDLE_HEADER_LEN + HEADER_LEN + self.payload_max + TAG_MAX + IP_UDP_HEADERS;
        (self.socket_recv_buffer / socket_charge(len)).clamp(2, u32::MAX as usize) as u32
    }

    /// Fragments a message of `len` bytes takes (at least one).
    pub fn fragments_for(&self, len: usize) -> u32 {
        // Bounded by validate(): message_max / payload_max fits in u32.
        len.div_ceil(self.payload_max).max(1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_window_counts_what_the_kernel_charges() {
        let c = Config {
            socket_recv_buffer: 8 * 1024 * 1024,
            ..Config::default()
        };
        // Loopback fragments: 60,000 + headers, charged about 62,464 each;
        // the kernel held 137 datagrams of 60,128 bytes in this buffer.
        assert_eq!(
            c.for_peer("127.0.0.1:1".parse().expect("addr"))
                .socket_window(),
            134
        );
        // 1,200-byte fragments: more than the default window.
        assert_eq!(c.socket_window(), 2730);
        assert!(c.socket_window() > c.recv_window);
        let tiny = Config {
            socket_recv_buffer: 1000,
            ..c
        };
        assert_eq!(tiny.socket_window(), 2);
        assert_eq!(Config::default().socket_window(), u32::MAX);
        // Never below what the kernel was measured to charge.
        for (len, measured) in [(100, 832), (1330, 2304), (9000, 16_644), (60_128, 61_230)] {
            assert!(socket_charge(len) >= measured, "{len}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn contradictions_name_the_key() {
        let c = Config {
            ack_delay: Duration::from_millis(10),
            ..Config::default()
        };
        assert_eq!(c.validate().map_err(|e| e.key), Err("ack_delay"));
        let c = Config {
            reassembly_bytes_max: 1000,
            ..Config::default()
        };
        assert_eq!(c.validate().map_err(|e| e.key), Err("reassembly_bytes_max"));
        let c = Config {
            payload_max: 10,
            ..Config::default()
        };
        assert_eq!(c.validate().map_err(|e| e.key), Err("payload_max"));
        let c = Config {
            payload_max_loopback: 65_001,
            ..Config::default()
        };
        assert_eq!(c.validate().map_err(|e| e.key), Err("payload_max_loopback"));
        // The reassembly budget must hold a largest message in the larger fragments too.
        let c = Config {
            payload_max_loopback: 65_000,
            reassembly_bytes_max: Config::default().reassembly_floor(),
            ..Config::default()
        };
        assert_eq!(c.validate().map_err(|e| e.key), Err("reassembly_bytes_max"));
    }

    #[test]
    fn loopback_peers_get_the_loopback_payload() {
        let c = Config::default();
        let payload = |addr: &str| c.for_peer(addr.parse().expect("an address")).payload_max;
        assert_eq!(payload("127.0.0.1:7"), 60_000);
        assert_eq!(payload("127.9.0.1:7"), 60_000);
        assert_eq!(payload("[::1]:7"), 60_000);
        assert_eq!(payload("[::ffff:127.0.0.1]:7"), 60_000);
        assert_eq!(payload("192.0.2.1:7"), 1200);
        assert_eq!(payload("[2001:db8::1]:7"), 1200);
        let off = Config {
            payload_max_loopback: 0,
            ..c
        };
        assert_eq!(
            off.for_peer("127.0.0.1:7".parse().expect("addr"))
                .payload_max,
            1200
        );
        // Everything else is the endpoint's.
        let lo = c.for_peer("127.0.0.1:7".parse().expect("addr"));
        assert_eq!(
            Config {
                payload_max: 1200,
                ..lo
            },
            c
        );
    }
}
