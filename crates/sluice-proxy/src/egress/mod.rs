//! Authorization: an [`EgressIntent`] goes in, one deterministic
//! [`EgressDecision`] pinned to one policy generation comes out.

mod authorize;
mod authorizer;
mod decision;
mod identity;
mod intent;
mod target;

pub use authorize::{authorize, AuthorizeContext};
pub use authorizer::Authorizer;
pub use decision::{
    Allowed, Denied, DenyReason, DestinationMode, DestinationPlan, EgressDecision, Permit, Verdict,
};
pub use identity::{
    IdentityEvidence, IdentityFieldsUsed, IdentityMode, IdentityResolver, ProcessIdentity,
};
pub use intent::{EgressIntent, Surface};
pub use target::{canonical_ip, Host, Target, TargetError};
