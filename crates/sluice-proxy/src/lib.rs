//! The sluice egress pipeline, one module per boundary:
//!
//! `adapter` (parse a surface into an [`egress::EgressIntent`], render denials)
//! → `egress` (one [`egress::authorize`] call → one [`egress::EgressDecision`])
//! → `destination` (resolve, SSRF rules, pin → [`destination::UpstreamConnector`])
//! → `relay` (own the bytes).
//!
//! [`gateway`] embeds the whole pipeline in another program (a policy
//! source, an audit sink, an identity provider). `server` owns listeners
//! and the accept loop; `policy_store` publishes
//! policy generations; `audit` turns outcomes into OCSF events; `denials`
//! keeps the most recent denials for `policy.local` and the console;
//! `metrics` holds the counters every stage updates (`--metrics ADDR`).
#![forbid(unsafe_code)]

pub mod adapter;
pub mod addr_class;
pub mod audit;
pub mod denials;
pub mod destination;
pub mod egress;
pub mod gateway;
pub mod local_http;
pub mod metrics;
pub mod policy_store;
pub mod proposals;
pub mod refusal;
pub mod relay;
pub mod server;
