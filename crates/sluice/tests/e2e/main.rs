//! End-to-end tests: the real `sluice` binary, real upstream servers in a
//! network namespace each test creates, real curl and Python clients.
//! One test binary (hickory style) to save link time.

// The tests are clients of the proxy: they dial it directly on loopback.
#![allow(clippy::disallowed_methods)]

mod adapters;
mod attacks;
mod bulk;
mod check;
mod clients;
mod console;
mod credentials;
mod deploy;
mod h2;
mod harness;
mod identity;
mod inference;
mod l7;
mod metadata;
mod metrics;
mod middleware;
mod pipelining;
mod policy_local;
mod policy_test;
mod postgres;
mod profiles;
mod protocols;
mod protocols_tls;
mod redis;
mod reload;
mod run;
mod run_confine;
mod run_terminal;
mod run_transparent;
mod sidecar;
mod sigv4;
mod ssrf;
