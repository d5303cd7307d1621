//! What the daemon tells about itself beyond the `stats` reply: the figures of
//! calls by function (kept by the router) and their rendering in the
//! Prometheus text exposition format (served by `shell::metrics`).
//!
//! Both are pure: [`latency`] takes `now` with every record and read, and
//! [`exposition`] turns a [`Stats`](rpcd_client::ipc::Stats) snapshot and
//! the process's figures into text. The shell owns the socket and `/proc`.

pub mod exposition;
pub mod latency;
