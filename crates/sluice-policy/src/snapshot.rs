//! The immutable compiled policy and binary matching.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::capability::Requirement;
use crate::index::HostIndex;
use crate::inference::InferenceRoute;
use crate::model::{
    Credential, Endpoint, EndpointId, HostRef, Middleware, NetworkPolicy, PolicyId, Provider,
    ProviderId,
};

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
    providers: Arc<[Provider]>,
    /// Credential name → (provider index, credential index).
    credentials: Arc<HashMap<Arc<str>, (usize, usize)>>,
    /// Routes of `inference.local`, in policy order.
    inference: Arc<[InferenceRoute]>,
    /// What the policy needs from the runtime, located in its source.
    requirements: Arc<[Requirement]>,
    /// Provider profiles attached to it, in attachment order.
    profiles: Arc<[AttachedProfile]>,
}

/// A provider profile attached to the policy: which entry it became and its
/// text (profiles hold no secret, only variable names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedProfile {
    pub id: Arc<str>,
    /// The `network_policies` key it became (`_provider_<id>`).
    pub policy_key: Arc<str>,
    /// `catalog:ID.yaml` or the file it was read from.
    pub origin: Arc<str>,
    /// The profile as written.
    pub yaml: Arc<str>,
}

impl fmt::Debug for PolicySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySnapshot")
            .field("generation", &self.generation)
            .field("source", &self.source)
            .field("policies", &self.policies.len())
            .field("endpoints", &self.endpoints.len())
            .field("providers", &self.providers.len())
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
            providers: Arc::from(Vec::new()),
            credentials: Arc::new(HashMap::new()),
            inference: Arc::from(Vec::new()),
            requirements: Arc::from(Vec::new()),
            profiles: Arc::from(Vec::new()),
        }
    }

    /// Records the profiles composition attached.
    pub(crate) fn with_profiles(mut self, profiles: Vec<AttachedProfile>) -> Self {
        self.profiles = profiles.into();
        self
    }

    /// The provider profiles attached to this policy, in attachment order.
    #[must_use]
    pub fn attached_profiles(&self) -> &[AttachedProfile] {
        &self.profiles
    }

    /// Attaches the located requirements found by the loader.
    pub(crate) fn with_requirements(mut self, requirements: Vec<Requirement>) -> Self {
        self.requirements = requirements.into();
        self
    }

    /// What this policy needs from the runtime that enforces it (process
    /// identity for `binaries`, transparent capture for `protocol: tcp`, ...),
    /// each with the location of the node that needs it. Check them with
    /// [`Capabilities::check`](crate::capability::Capabilities::check).
    #[must_use]
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Attaches the compiled `inference` routes.
    pub(crate) fn with_inference(mut self, routes: Vec<InferenceRoute>) -> Self {
        self.inference = routes.into();
        self
    }

    /// The routes of `inference.local`, in policy order (empty: not configured).
    #[must_use]
    pub fn inference_routes(&self) -> &[InferenceRoute] {
        &self.inference
    }

    /// Attaches compiled providers (sorted by key, ids = positions).
    pub(crate) fn with_providers(mut self, providers: Vec<Provider>) -> Self {
        let mut credentials = HashMap::new();
        for (pi, p) in providers.iter().enumerate() {
            for (ci, c) in p.credentials.iter().enumerate() {
                credentials.entry(Arc::clone(&c.name)).or_insert((pi, ci));
            }
        }
        self.providers = providers.into();
        self.credentials = Arc::new(credentials);
        self
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

    /// All providers sorted by key; `providers()[id.0]` has that id.
    #[must_use]
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The provider with this id. Panics on an id from another snapshot that is out of range.
    #[must_use]
    pub fn provider(&self, id: ProviderId) -> &Provider {
        &self.providers[id.0 as usize]
    }

    /// The credential for a placeholder name, if any provider defines it.
    #[must_use]
    pub fn credential(&self, name: &str) -> Option<&Credential> {
        let &(p, c) = self.credentials.get(name)?;
        self.providers.get(p)?.credentials.get(c)
    }

    /// Whether `provider`'s endpoints cover this request: host pattern,
    /// port and optional `/`-delimited path glob (`path` is the request
    /// path; anything from `?` on is ignored). False for an unknown id.
    #[must_use]
    pub fn provider_binds(
        &self,
        provider: ProviderId,
        host: HostRef<'_>,
        port: u16,
        path: &str,
    ) -> bool {
        self.providers
            .get(provider.0 as usize)
            .is_some_and(|p| p.binds(host, port, path))
    }

    /// Providers with a token grant whose endpoints cover this request, in
    /// provider-key order.
    pub fn token_grants_for<'a>(
        &'a self,
        host: HostRef<'a>,
        port: u16,
        path: &'a str,
    ) -> impl Iterator<Item = &'a Provider> + 'a {
        self.providers
            .iter()
            .filter(move |p| p.token_grant.is_some() && p.binds(host, port, path))
    }

    /// The provider served through the `kind` metadata service, if any (at
    /// most one per kind; validation guarantees it).
    #[must_use]
    pub fn metadata(
        &self,
        kind: crate::model::MetadataKind,
    ) -> Option<(&Provider, &crate::model::Metadata)> {
        self.providers.iter().find_map(|p| {
            p.metadata
                .as_ref()
                .filter(|m| m.kind() == kind)
                .map(|m| (p, m))
        })
    }

    /// True when any provider defines credentials (placeholders can be
    /// resolved, so the leftover-marker body backstop applies).
    #[must_use]
    pub fn has_credentials(&self) -> bool {
        !self.credentials.is_empty()
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
