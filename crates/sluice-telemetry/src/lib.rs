//! OCSF 1.8 audit events and JSON-lines audit sinks for sluice.
//!
//! sluice records every policy decision as an [OCSF](https://schema.ocsf.io)
//! 1.8 event, one JSON object per line, on the `--audit-log` sink:
//!
//! | class | uid | used for |
//! |---|---|---|
//! | Network Activity | 4001 | CONNECT tunnels, bypass attempts, listener start |
//! | HTTP Activity | 4002 | forward-proxy and in-tunnel HTTP requests |
//! | Detection Finding | 2004 | bypass, credential misuse and similar findings |
//! | API Activity | 6003 | inference calls |
//! | Device Config State Change | 5019 | policy loads and reloads |
//!
//! Field names, ids and messages follow OpenShell's catalogue so that existing
//! tooling keeps working; `metadata.product.name` is `sluice` and the policy
//! generation is in `unmapped.policy_generation`.
//!
//! This crate is independent of proxy types: an [`OcsfEvent`] owns plain
//! strings and numbers and is built with chained setters, then handed to an
//! [`AuditSink`], which serializes it and writes it from a dedicated thread.
//!
//! **Events must never receive secrets**: no credential values, no
//! placeholders, no header values, no query strings. HTTP paths are stripped
//! of query and fragment by [`redact_path`]; everything else is the caller's
//! responsibility.
//!
//! ```
//! use sluice_telemetry::{Action, Activity, AuditSink, Disposition, EventClass, OcsfEvent,
//!     Severity, Status};
//!
//! let (sink, handle) = AuditSink::memory();
//! sink.emit(
//!     &OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
//!         .severity(Severity::Informational)
//!         .status(Status::Success)
//!         .action(Action::Allowed)
//!         .disposition(Disposition::Allowed)
//!         .dst_endpoint("example.com", 443)
//!         .firewall_rule("github", "opa")
//!         .message("CONNECT allowed example.com:443")
//!         .policy_generation(3),
//! );
//! let events = handle.events();
//! assert_eq!(events[0]["type_name"], "Network Activity: Open");
//! assert_eq!(events[0]["unmapped"]["policy_generation"], 3);
//! ```
#![forbid(unsafe_code)]

mod enums;
mod event;
mod json;
mod pretty;
mod redact;
mod shorthand;
mod sink;
mod time;
mod view;

pub use enums::{Action, Activity, Disposition, EventClass, Severity, Status};
pub use event::{OcsfEvent, ProcessInfo};
pub use json::{OCSF_VERSION, PRODUCT_NAME};
pub use pretty::denial_line;
pub use redact::redact_path;
pub use sink::{AuditFormat, AuditSink, EventObserver, MemorySinkHandle, QUEUE_CAPACITY};
