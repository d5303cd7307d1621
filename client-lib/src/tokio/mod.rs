//! The async API on tokio (cargo feature `tokio`): [`Client`], async handlers served by a
//! [`Server`], and the async stubs `#[service]` emits (`KvAsyncClient`).
//!
//! Layer: the same as the blocking API, on tokio's `UnixStream` with the same protocol
//! code (`crate::ipc`); nothing here wraps the blocking client. Errors are the blocking
//! API's ([`crate::CallError`]), and so is the reconnect behaviour.
//!
//! Cancellation: dropping a call's future before it completes sends `cancel_call` for it
//! (`docs/ipc-protocol.md` §5): the daemon ends the call with `cancelled`, frees its slot
//! and tells the serving app, whose handler is then cancelled too (an async handler's
//! future is dropped; [`Request::cancelled`] completes).
//!
//! Call order: [`Client::connect`] (within a tokio runtime), then any number of concurrent
//! calls from any task. A serving app makes a [`Server::new`] on its client, registers
//! functions ([`Server::register`], [`Server::register_fn`]) and finally awaits
//! [`Server::stop`].
//!
//! ```no_run
//! # async fn run() -> Result<(), rpcd_client::CallError> {
//! use rpcd_client::tokio::{Client, Server};
//!
//! let client = Client::connect().await?;
//! let server = Server::new(&client);
//! server
//!     .register_fn("demo.add", |(a, b): (i64, i64)| async move {
//!         Ok::<_, String>(a + b)
//!     })
//!     .await?;
//! let target = client.daemon().listen;
//! let sum: i64 = client.call(target.as_str(), "demo.add", &(2, 3)).await?;
//! assert_eq!(sum, 5);
//! server.stop().await;
//! # Ok(()) }
//! ```

mod client;
mod conn;
mod server;

pub use client::Client;
pub use conn::ASYNC_WRITE_QUEUE_MAX;
pub use server::{Handler, HandlerFuture, Request, Server, CONCURRENCY_MAX_DEFAULT};
