//! The authorization stage's handle: the published policy and how identity is
//! judged, so adapters and relays can (re-)authorize without reaching into the
//! rest of the proxy's state.

use std::sync::Arc;

use tokio::sync::watch;

use super::{authorize, Allowed, AuthorizeContext, Denied, EgressIntent};
use crate::policy_store::PolicyStore;

/// Authorizes intents against the generation in force.
#[derive(Clone, Debug)]
pub struct Authorizer {
    store: Arc<PolicyStore>,
    context: AuthorizeContext,
}

impl Authorizer {
    /// A handle over `store`, judging identity as `context` says.
    #[must_use]
    pub fn new(store: Arc<PolicyStore>, context: AuthorizeContext) -> Self {
        Self { store, context }
    }

    /// One decision for `intent`, pinned to the generation in force now.
    ///
    /// # Errors
    /// [`Denied`] when no policy allows the intent.
    pub fn authorize(&self, intent: EgressIntent) -> Result<Allowed, Denied> {
        authorize(&self.store.snapshot(), intent, &self.context)
    }

    /// The policy in force now (for surfaces that consult it before there
    /// is an intent, e.g. which names policy DNS answers).
    #[must_use]
    pub fn snapshot(&self) -> Arc<sluice_policy::PolicySnapshot> {
        self.store.snapshot()
    }

    /// The generation in force now.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.store.generation()
    }

    /// Wakes on every published generation.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.store.subscribe()
    }

    /// How identity is judged.
    #[must_use]
    pub fn context(&self) -> &AuthorizeContext {
        &self.context
    }
}
