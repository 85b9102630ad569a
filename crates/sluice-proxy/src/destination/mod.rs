//! The destination validator: the only place that resolves names and the
//! only place that dials. It turns an allowed decision into an unopened
//! [`UpstreamConnector`] that can reach only validated, pinned addresses.

/// Address classes, re-exported where they were (a leaf module now).
pub use crate::addr_class;
mod connector;
mod resolve;
mod validate;

pub use connector::UpstreamConnector;
pub use resolve::{ResolveError, Resolver};
pub use validate::{check_pinned, validate, DenialKind, DestinationDenial};
