//! A payload where it lies: [`rpcd_client::ipc::Payload`], shared with the client library,
//! whose frame reader leaves a large frame's arguments where they arrived too.

pub use rpcd_client::ipc::Payload;
