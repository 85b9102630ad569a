//! Policy for sluice: load an OpenShell-format policy file (version 1), validate
//! it, and compile it into an immutable [`PolicySnapshot`] with a host index.
//! Pure data and functions: no tokio, no sockets.
#![forbid(unsafe_code)]

mod model;

pub use model::*;
