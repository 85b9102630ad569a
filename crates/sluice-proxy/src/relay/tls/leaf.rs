//! A bounded LRU of per-host rustls server configurations, each carrying a
//! leaf minted by the [`SandboxCa`] for the CONNECT host (not the SNI).
//!
//! The reference clears its 256-entry cache wholesale on overflow; this one
//! evicts the least recently used host, so a busy host never pays a burst
//! of re-minting because of unrelated traffic.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;

use super::ca::{CaError, SandboxCa};
use crate::egress::Host;

/// Default number of hosts whose server configuration is kept.
pub const DEFAULT_LEAF_CACHE_CAPACITY: usize = 256;

/// The ALPN protocol offered to workloads on every terminated tunnel.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// HTTP/2, offered first on tunnels to inspected HTTP endpoints
/// ([`LeafCache::server_config_h2`]).
pub const ALPN_H2: &[u8] = b"h2";

/// Thread-safe LRU of client-facing TLS server configurations by host.
pub struct LeafCache {
    ca: Arc<SandboxCa>,
    provider: Arc<CryptoProvider>,
    capacity: usize,
    inner: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish_non_exhaustive()
    }
}

/// Map plus recency index: `tick` grows on every touch, the smallest tick in
/// `order` is the least recently used host.
#[derive(Default)]
struct Lru {
    tick: u64,
    entries: HashMap<Host, (Arc<ServerConfig>, u64)>,
    order: BTreeMap<u64, Host>,
}

impl Lru {
    fn get(&mut self, host: &Host) -> Option<Arc<ServerConfig>> {
        self.tick += 1;
        let tick = self.tick;
        let (config, last) = self.entries.get_mut(host)?;
        self.order.remove(last);
        *last = tick;
        self.order.insert(tick, host.clone());
        Some(Arc::clone(config))
    }

    /// Insert unless present (a concurrent miss may have won the race; its
    /// configuration is kept so all callers share one). Returns the entry.
    fn insert(
        &mut self,
        host: &Host,
        config: Arc<ServerConfig>,
        capacity: usize,
    ) -> Arc<ServerConfig> {
        if let Some(existing) = self.get(host) {
            return existing;
        }
        while self.entries.len() >= capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.order.insert(self.tick, host.clone());
        self.entries
            .insert(host.clone(), (Arc::clone(&config), self.tick));
        config
    }
}

impl LeafCache {
    /// A cache over `ca` holding at most `capacity` hosts (at least one).
    #[must_use]
    pub fn new(ca: Arc<SandboxCa>, capacity: usize) -> Self {
        Self {
            ca,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            capacity: capacity.max(1),
            inner: Mutex::new(Lru::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The CA leaves are minted from.
    #[must_use]
    pub fn ca(&self) -> &Arc<SandboxCa> {
        &self.ca
    }

    /// The server configuration presenting a leaf for `host`: no client
    /// auth, ALPN exactly `http/1.1`, chain `[leaf, ca]`. Minted on a miss
    /// (outside the lock) and cached.
    ///
    /// # Errors
    /// [`CaError`] when the leaf cannot be minted or rustls refuses it.
    pub fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, CaError> {
        if let Some(config) = self.lock().get(host) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(config);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let config = Arc::new(self.mint(host)?);
        Ok(self.lock().insert(host, config, self.capacity))
    }

    /// [`Self::server_config`] offering `h2` then `http/1.1` (inspected
    /// HTTP tunnels: each HTTP/2 stream is admitted like an HTTP/1.1 request).
    ///
    /// # Errors
    /// As [`Self::server_config`].
    pub fn server_config_h2(&self, host: &Host) -> Result<Arc<ServerConfig>, CaError> {
        let mut config = (*self.server_config(host)?).clone();
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }

    fn mint(&self, host: &Host) -> Result<ServerConfig, CaError> {
        let (chain, key) = self.ca.issue_leaf(host)?;
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(config)
    }

    /// Lookups answered from the cache.
    #[must_use]
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that minted a leaf.
    #[must_use]
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Hosts currently cached.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `host` is cached (does not touch recency or counters).
    #[must_use]
    pub fn contains(&self, host: &Host) -> bool {
        self.lock().entries.contains_key(host)
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // The map is consistent after every statement that can panic, so a
        // poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
