//! Agents ask, operators decide: the proposal loop behind `policy.local`
//! (`POST /v1/proposals`, `.../wait`) and the operator console. A proposal
//! adds `network_policies` entries; it is validated like a policy file
//! before it is queued in the store (`sluice-proposals`), and an approval
//! rewrites this gateway's policy file and publishes a new generation.

pub mod ops;
mod service;

pub use ops::{parse, AddRule, OpsError, ProposalBody};
pub use service::{policy_hash, DecideError, ProposalService, SubmitError, Waited};
