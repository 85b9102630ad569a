//! Relays own the bytes after a decision: `tcp` for raw tunnels, `http`
//! for the per-request loop. A relay is built from an allowed decision's
//! [`crate::destination::UpstreamConnector`]; none exists without one, but
//! for `inference`, whose backends are operator configuration (a route's
//! `endpoint`), never a destination the sandbox named.

mod context;
pub(crate) mod credentials;
pub mod http;
mod idle;
pub(crate) mod inference;
pub mod middleware;
pub mod processor;
pub(crate) mod revoke;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod websocket;

pub(crate) use context::RelayContext;
