//! `rpcd-client`: what a local application links to talk to `rpcd`.
//!
//! Layer: the app side of the local Unix socket. [`ipc`] holds the message types and the
//! framing, shared with the daemon (which depends on this crate for exactly that). Nothing
//! here touches UDP or the transport: the daemon does that.

pub mod ipc;

pub use ipc::{default_socket_path, ErrorCode, Outcome, Stats};
