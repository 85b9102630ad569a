//! The immutable compiled policy and binary matching.

use std::fmt;
use std::sync::Arc;

use crate::index::HostIndex;
use crate::model::{Endpoint, EndpointId, HostRef, Middleware, NetworkPolicy, PolicyId};

/// One compiled policy generation: immutable, `Send + Sync`, and cheap to
/// clone (every part is behind an `Arc`).
#[derive(Clone)]
pub struct PolicySnapshot {
    generation: u64,
    source: Arc<str>,
    policies: Arc<[NetworkPolicy]>,
    endpoints: Arc<[Endpoint]>,
    middlewares: Arc<[Middleware]>,
    index: Arc<HostIndex>,
}

impl fmt::Debug for PolicySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySnapshot")
            .field("generation", &self.generation)
            .field("source", &self.source)
            .field("policies", &self.policies.len())
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl PolicySnapshot {
    /// A deny-all snapshot: no policies, no endpoints.
    #[must_use]
    pub fn empty(generation: u64) -> Self {
        Self::new(
            generation,
            Arc::from(""),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        )
    }

    pub(crate) fn new(
        generation: u64,
        source: Arc<str>,
        policies: Vec<NetworkPolicy>,
        endpoints: Vec<Endpoint>,
        middlewares: Vec<Middleware>,
    ) -> Self {
        let index = HostIndex::build(&endpoints);
        Self {
            generation,
            source,
            policies: policies.into(),
            endpoints: endpoints.into(),
            middlewares: middlewares.into(),
            index: Arc::new(index),
        }
    }

    /// The generation number given to the loader.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The origin name of the file (empty for [`PolicySnapshot::empty`]).
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// All policies sorted by key; `policies()[id.0]` has that id.
    #[must_use]
    pub fn policies(&self) -> &[NetworkPolicy] {
        &self.policies
    }

    /// The policy with this id. Panics on an id from another snapshot that is out of range.
    #[must_use]
    pub fn policy(&self, id: PolicyId) -> &NetworkPolicy {
        &self.policies[id.0 as usize]
    }

    /// All endpoints in (policy key, list position) order; `endpoints()[id.0]` has that id.
    #[must_use]
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoint with this id. Panics on an id from another snapshot that is out of range.
    #[must_use]
    pub fn endpoint(&self, id: EndpointId) -> &Endpoint {
        &self.endpoints[id.0 as usize]
    }

    /// The parsed `network_middlewares` (validated; not executed by this build).
    #[must_use]
    pub fn middlewares(&self) -> &[Middleware] {
        &self.middlewares
    }

    /// Every endpoint whose host pattern matches `host` and whose ports
    /// contain `port`: an index lookup (O(labels) hash probes), no heap
    /// allocation. Order unspecified; each endpoint at most once.
    pub fn matching_endpoints<'a>(
        &'a self,
        host: HostRef<'a>,
        port: u16,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.index.query(&self.endpoints, host, port)
    }
}

impl NetworkPolicy {
    /// True if the exe path or any ancestor path matches one of `binaries`
    /// (exact path or `/`-delimited glob). Empty strings never match; a
    /// policy without binaries never matches.
    #[must_use]
    pub fn binary_allows(&self, exe: &str, ancestors: &[&str]) -> bool {
        std::iter::once(exe)
            .chain(ancestors.iter().copied())
            .filter(|p| !p.is_empty())
            .any(|p| self.binaries.iter().any(|b| b.path.matches(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn snapshot_is_send_sync_and_empty_denies() {
        assert_send_sync::<PolicySnapshot>();
        let s = PolicySnapshot::empty(7);
        assert_eq!(s.generation(), 7);
        assert!(s.policies().is_empty());
        assert_eq!(
            s.matching_endpoints(HostRef::Name("example.com"), 443)
                .count(),
            0
        );
    }
}
