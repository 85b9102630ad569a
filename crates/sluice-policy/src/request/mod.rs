//! Request-level (L7) policy for HTTP requests: path canonicalization,
//! query parsing and REST rule evaluation. Pure functions; every input is
//! bounded and no input panics.
//!
//! Typical use per request, after the connection decision produced its
//! matched endpoint ids (`routes`):
//!
//! ```
//! use sluice_policy::request::{canonicalize_path, evaluate_rest, QueryParams, RestRequest};
//! # let snapshot = sluice_policy::PolicySnapshot::empty(0);
//! # let routes = [];
//! let target = "/repos/o/r/issues?state=open";
//! let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
//! let path = canonicalize_path(raw_path, false).expect("valid path");
//! let query = QueryParams::parse(raw_query).expect("valid query");
//! let req = RestRequest { method: "GET", path: &path, query: &query };
//! let verdict = evaluate_rest(&snapshot, &routes, &req);
//! assert!(!verdict.allowed);
//! assert_eq!(verdict.reason, "no L7 endpoint path matched request");
//! ```
//!
//! `allow_encoded_slash` is a per-endpoint setting; callers canonicalize
//! with the governing endpoint's value (or `false` when unsure, which only
//! rejects more).

mod eval;
pub mod graphql;
pub mod json;
pub mod jsonrpc;
pub mod mcp;
pub mod native;
mod path;
mod query;
mod verdict;

pub use eval::{evaluate_rest, has_l7_routes, L7Verdict, RestRequest, RuleRef, MAX_METHOD_LEN};
pub use path::{canonicalize_path, PathError, MAX_PATH_LEN};
pub use query::{QueryError, QueryParams, MAX_QUERY_LEN, MAX_QUERY_PARAMS};
pub use verdict::ProtocolVerdict;
