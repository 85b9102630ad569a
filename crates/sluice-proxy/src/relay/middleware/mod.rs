//! Supervisor middleware (design §6.3, invariant 7): stages that see an
//! allowed request before credentials are injected, in the policy's
//! `order`, each allowing, denying or rewriting it. Wire-compatible with
//! OpenShell's `openshell.middleware.v1.SupervisorMiddleware` service.
//!
//! - [`proto`]: the wire types, generated from our `.proto`;
//! - `stage`: the interface the chain drives (an HTTP stage, a WebSocket
//!   stage and its session), implemented by `grpc` (registered services)
//!   and `builtin` (`sluice/regex`, `sluice/secrets`, `sluice/size`);
//! - [`MiddlewareRuntime`]: the registrations and the per-generation plan.

pub(crate) mod builtin;
pub(crate) mod chain;
pub mod grpc;
pub mod proto;
pub(crate) mod runtime;
pub(crate) mod stage;

pub use runtime::MiddlewareRuntime;
