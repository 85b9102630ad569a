//! Supervisor middleware (design §6.3, invariant 7): stages that see an
//! allowed request before credentials are injected. Wire-compatible with
//! OpenShell's `openshell.middleware.v1.SupervisorMiddleware` service.

pub mod proto;
