//! Linux substrate for `sluice run`, and peer process identity.
//!
//! This crate will hold everything that touches the Linux kernel directly on behalf of
//! `sluice run`: the workload network namespace, the nftables bypass ruleset, the bypass
//! monitor and `SO_ORIGINAL_DST` lookups for transparent capture. Those parts come later.
//!
//! What exists **now** is process identity ([`identity`]): given an accepted proxy
//! connection, find the process that owns the client side of it by reading `/proc`
//! (see `openshell-facts.md` §11), so policy can match on the calling binary.
//!
//! This is the only crate in the workspace that may ever contain `unsafe` (for the
//! namespace and socket-option work that is still to come). Until then it forbids
//! `unsafe` outright: reading `/proc` needs none.

#![forbid(unsafe_code)]

pub mod identity;

pub use identity::{IdentityError, ProcessIdentity, ProcfsIdentity};
