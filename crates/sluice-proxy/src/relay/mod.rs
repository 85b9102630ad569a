//! Relays own the bytes after a decision: `tcp` for raw tunnels, `http`
//! for the per-request loop. A relay is built from an allowed decision's
//! [`crate::destination::UpstreamConnector`]; none exists without one.

mod context;
pub(crate) mod credentials;
pub mod http;
mod idle;
pub mod middleware;
pub mod processor;
pub(crate) mod revoke;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod websocket;

pub(crate) use context::RelayContext;
