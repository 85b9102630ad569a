//! Credential injection: the sandbox only ever sends placeholders
//! (`sluice:resolve:env:NAME`); the relay swaps in the real secret right
//! before the upstream write, only where the secret's provider is bound.

mod body;
mod inject;
mod prepare;
pub(crate) mod token_grant;

pub(crate) use inject::scrub;
pub(crate) use prepare::prepare;
