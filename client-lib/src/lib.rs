//! `rpcd-client`: what a local application links to talk to `rpcd`.
//!
//! Layer: the app side of the local Unix socket. Nothing here touches UDP or the transport:
//! the daemon does that.
//! - [`ipc`]: the message types and the framing, shared with the daemon (which depends on
//!   this crate for exactly that).
//! - [`conn`]: the low-level blocking connection ([`conn::Connection`]): one socket, many
//!   concurrent requests matched by id.
//! - [`Client`]: the run-time library apps use: typed calls (rmp-serde), per-call options,
//!   a shared connection that reconnects with bounded backoff after a daemon restart.
//! - [`Server`]: registered functions served on a pool of worker threads behind a bounded
//!   queue (full → the caller gets `overloaded`), re-registered after a reconnect. A
//!   handler made with [`Handler::with_request`] sees its [`Request`], and through it who
//!   called ([`Identity`]: an app on the same daemon, an authenticated peer daemon by its
//!   configured name, or an unauthenticated one).
//! - [`service`]: the stub generator, `#[rpcd_client::service]` on a trait.
//! - [`PendingCall`]: a call sent with [`Client::submit`], to wait on or cancel.
//! - `tokio` (cargo feature `tokio`): the async client, async handlers and the async stubs
//!   `#[service]` then also emits (`KvAsyncClient`), on the same protocol code.
//! - [`service`]: the stub generator, `#[rpcd_client::service]` on a trait; it registers
//!   each method's attributes and signature, built from the [`Describe`] schemas of its
//!   types (derivable: `#[derive(rpcd_client::Describe)]`).
//!
//! Call order: [`Client::connect`] (or [`Client::connect_to`]), then any number of
//! concurrent [`Client::call`]s or generated stub calls from any thread. A serving app
//! makes a [`Server::new`] on its client, registers functions (`MyTrait::serve(value,
//! &server)` or [`Server::register`]), and finally [`Server::stop`]s it.
//!
//! ```no_run
//! #[rpcd_client::service]
//! pub trait Kv {
//!     fn get(&self, key: String) -> Option<String>;
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = rpcd_client::Client::connect()?;
//! let kv = KvClient::new(&client, "127.0.0.1:7400");
//! let value: Option<String> = kv.get("k")?;
//! # Ok(()) }
//! ```

// Generated code names this crate `::rpcd_client`, also inside its own tests.
extern crate self as rpcd_client;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
mod client;
pub mod conn;
mod describe;
mod error;
mod identity;
pub mod ipc;
mod pending;
mod server;
mod target;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use client::{
    Client, ClientOptions, APP_NAME_DEFAULT, RECONNECT_ATTEMPTS_MAX, RECONNECT_BACKOFF_INITIAL,
    RECONNECT_BACKOFF_MAX,
};
pub use conn::{CallOptions, ConnectError, Connection, DaemonInfo, Invocation};
pub use describe::Describe;
pub use error::CallError;
pub use identity::{Credentials, Identity};
pub use ipc::{default_socket_path, ErrorCode, Outcome, Stats};
pub use pending::PendingCall;
pub use rpcd_macros::{service, Describe};
pub use server::cancel::CANCEL_POLL_MAX;
pub use server::{
    workers_default, Handler, Request, Server, ServerOptions, ServerStats, INLINE_BELOW_SHORT,
    QUEUE_MAX_DEFAULT, SERVER_RECONNECT_BACKOFF_INITIAL, SERVER_RECONNECT_BACKOFF_MAX, WORKERS_MAX,
};
// Kept for apps that name it; deprecated, as the dispatcher no longer polls.
#[allow(deprecated)]
pub use server::DISPATCH_POLL;
pub use target::Target;
