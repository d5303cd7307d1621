//! `rpcd-transport`: the sans-IO reliable channel that rpcd runs over UDP.
//!
//! Layer: below the daemon's event loop, above nothing. This crate owns no
//! socket, reads no clock, starts no thread and draws no OS randomness: time
//! is a parameter (`now: Instant`) of every input, and the daemon's epoch and
//! the seeds of every random choice (a channel's challenges) are handed in.
//! That is what lets the test suite run it in a simulated network with a
//! virtual clock and a seed.
//!
//! Modules, in the direction data flows:
//! - [`wire`]: bytes ⇄ [`wire::Bundle`] of [`wire::Datagram`]s (parse once,
//!   typed errors; one bundle per UDP datagram);
//! - [`channel`]: the per-peer state machine (sequence counters, duplicate
//!   detection, cumulative + selective acks, RTT and RTO per RFC 6298 in
//!   [`rtt`], loss detection and recovery per RFC 9002 / RACK-TLP, the
//!   congestion window, fragmentation, epochs, keepalive);
//! - [`endpoint`]: demultiplexes datagrams to channels, owns the epoch, and
//!   keeps the channels' timers in a heap.
//!
//! Call order, for the endpoint as for a channel: feed inputs
//! (`handle_datagram`, `send`, `handle_timeout`), then drain `poll_transmit`
//! and `poll_event`, then wait until `poll_timeout` or the next input.

pub mod channel;
pub mod config;
pub mod endpoint;
pub mod outgoing;
mod peer_map;
pub mod rtt;
pub mod secure;
pub mod seq;
pub mod wire;

pub use channel::{
    Buffers, Channel, Event as ChannelEvent, FailReason, MessageTrace, MsgId,
    SendError as ChannelSendError, Snapshot, Stats,
};
pub use config::{Config, ConfigError};
pub use endpoint::{Endpoint, EndpointStats, Event, SendError, Transmit};
pub use outgoing::Outgoing;
pub use peer_map::hash_addr;
pub use seq::Seq;
