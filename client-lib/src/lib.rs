//! `rpcd-client`: what a local application links to talk to `rpcd`.
//!
//! Layer: the app side of the local Unix socket. [`ipc`] holds the message types and the
//! framing, shared with the daemon (which depends on this crate for exactly that);
//! [`Connection`] is the blocking client on top of it. Nothing here touches UDP or the
//! transport: the daemon does that.
//!
//! Call order: [`Connection::connect`] (does the `Hello` handshake), then any number of
//! concurrent [`Connection::call`]s from any thread; a serving app also
//! [`Connection::register`]s functions, takes work with [`Connection::next_invocation`] and
//! answers each with [`Connection::send_result`].

pub mod conn;
pub mod ipc;

pub use conn::{CallError, CallOptions, ConnectError, Connection, DaemonInfo, Invocation};
pub use ipc::{default_socket_path, ErrorCode, Outcome, Stats};
