//! Embedding sluice in another program: a [`Gateway`] built from a policy
//! source, an audit sink and (optionally) an identity provider.
//!
//! The gateway is the same pipeline `sluice serve` runs — adapters, one
//! authorization step, destination validation, relays — behind an explicit
//! proxy listener (CONNECT and forward HTTP). It declares the library's
//! [`Capabilities`]: process identity only when an [`IdentityResolver`] is
//! given, no transparent capture, no metadata loopback, the built-in
//! middleware. A policy that needs more is refused by [`GatewayBuilder::build`]
//! and by every later [`Gateway::reload`] / [`Gateway::replace_policy`], with
//! located errors, instead of being loaded and silently not enforced.
//!
//! ```
//! use std::sync::Arc;
//! use sluice_proxy::egress::{IdentityResolver, ProcessIdentity};
//! use sluice_proxy::gateway::{Gateway, PolicySource};
//! use sluice_telemetry::AuditSink;
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//!
//! /// The supervisor knows which tool opened each connection.
//! struct Supervisor;
//! impl IdentityResolver for Supervisor {
//!     fn resolve(
//!         &self,
//!         _peer: std::net::SocketAddr,
//!         _local: std::net::SocketAddr,
//!     ) -> Result<ProcessIdentity, String> {
//!         Ok(ProcessIdentity {
//!             pid: 42,
//!             exe: "/usr/bin/git".into(),
//!             exe_sha256: String::new(),
//!             ancestors: vec!["/usr/bin/bash".into()],
//!             cmdline_paths: Vec::new(),
//!             sandbox_pid: None,
//!         })
//!     }
//! }
//!
//! const POLICY: &str = "version: 1
//! network_policies:
//!   github:
//!     endpoints:
//!       - { host: github.com, port: 443 }
//!     binaries:
//!       - { path: /usr/bin/curl }
//! ";
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let state = std::env::temp_dir().join(format!("sluice-doc-{}", std::process::id()));
//! let (audit, events) = AuditSink::memory();
//!
//! // `binaries` rules need process identity: without a provider, refused.
//! let refused = Gateway::builder(PolicySource::text(POLICY, "agent.yaml"), &state)
//!     .build()
//!     .await
//!     .expect_err("binaries without identity");
//! assert!(refused.to_string().contains(
//!     "agent.yaml:6:5: network_policies.github.binaries: needs process identity"
//! ));
//!
//! let gateway = Gateway::builder(PolicySource::text(POLICY, "agent.yaml"), &state)
//!     .listen("127.0.0.1:0".parse()?)
//!     .audit(audit)
//!     .identity(Arc::new(Supervisor))
//!     .build()
//!     .await?;
//! let proxy = gateway.local_addr();
//! tokio::spawn(gateway.serve());
//!
//! // git is not curl: the tunnel is refused before anything is dialled.
//! let mut client = tokio::net::TcpStream::connect(proxy).await?;
//! client
//!     .write_all(b"CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\n\r\n")
//!     .await?;
//! let mut answer = Vec::new();
//! client.read_to_end(&mut answer).await?;
//! let answer = String::from_utf8_lossy(&answer);
//! assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
//!
//! // The audit sink saw the decision, with the supervisor's identity.
//! let denied = events
//!     .events()
//!     .into_iter()
//!     .find(|e| e["message"].as_str().is_some_and(|m| m.contains("github.com:443")))
//!     .expect("a denial event");
//! assert_eq!(denied["actor"]["process"]["name"], "/usr/bin/git");
//! # let _ = std::fs::remove_dir_all(&state);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_policy::{Capabilities, LoadError, RuntimeMode};
use sluice_telemetry::AuditSink;

use crate::audit::Audit;
use crate::destination::Resolver;
use crate::egress::{IdentityMode, IdentityResolver};
use crate::metrics::Metrics;
use crate::policy_store::{PolicyStore, ReloadError};
use crate::relay::middleware::{available_middleware, MiddlewareRuntime};
use crate::relay::tls::{
    CaError, LeafCache, SandboxCa, TlsConfigError, UpstreamTls, DEFAULT_LEAF_CACHE_CAPACITY,
};
use crate::server::{watch_policy_file, Limits, Proxy, ProxyConfig};

/// Where the gateway's policy comes from.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// A policy file: [`GatewayHandle::reload`] reads it again, and
    /// [`Gateway::serve`] reloads it when it changes.
    File(PathBuf),
    /// Policy YAML held by the embedding program; `origin` names it in
    /// located errors. Replace it with [`GatewayHandle::replace_policy`].
    Text {
        /// The YAML.
        yaml: String,
        /// The name used in `FILE:LINE:COL` messages.
        origin: String,
    },
}

impl PolicySource {
    /// Policy YAML from memory, named `origin` in messages.
    #[must_use]
    pub fn text(yaml: impl Into<String>, origin: impl Into<String>) -> Self {
        Self::Text {
            yaml: yaml.into(),
            origin: origin.into(),
        }
    }
}

/// Why a gateway could not be built, or a policy not replaced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The policy does not load (located diagnostics).
    #[error("{0}")]
    Policy(LoadError),
    /// The policy needs what an embedded gateway cannot enforce (located).
    #[error("{0}")]
    Capability(LoadError),
    /// The sandbox CA could not be loaded or created in the state directory.
    #[error("sandbox CA: {0}")]
    Ca(#[from] CaError),
    /// Upstream TLS trust could not be set up.
    #[error("upstream TLS trust: {0}")]
    UpstreamTls(#[from] TlsConfigError),
    /// The listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// A replacement policy was refused; the one in force stays.
    #[error("{0}")]
    Reload(#[from] ReloadError),
}

/// Builds a [`Gateway`]; see the [module documentation](self).
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct GatewayBuilder {
    policy: PolicySource,
    state_dir: PathBuf,
    listen: SocketAddr,
    audit: AuditSink,
    identity: Option<Arc<dyn IdentityResolver>>,
    pinned: HashMap<String, Vec<IpAddr>>,
    system_dns: bool,
    upstream_ca: Vec<PathBuf>,
    limits: Limits,
    metrics: Metrics,
}

impl GatewayBuilder {
    /// The explicit proxy's address (default `127.0.0.1:3128`; port 0 picks
    /// a free port, see [`Gateway::local_addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Where every OCSF event goes (default: nowhere). Any
    /// [`AuditSink`] works: stdout, a file, memory, or an observer callback
    /// ([`AuditSink::with_observer`]).
    pub fn audit(mut self, sink: AuditSink) -> Self {
        self.audit = sink;
        self
    }

    /// The provider of process identity: every connection's process is
    /// resolved through it (the policy's `binaries` are enforced; a failed
    /// lookup denies). Without one, the gateway decides by endpoint only and
    /// refuses policies with `binaries`.
    pub fn identity(mut self, resolver: Arc<dyn IdentityResolver>) -> Self {
        self.identity = Some(resolver);
        self
    }

    /// Resolves `name` to `ip` before DNS (like `--add-host`).
    pub fn add_host(mut self, name: impl Into<String>, ip: IpAddr) -> Self {
        self.pinned.entry(name.into()).or_default().push(ip);
        self
    }

    /// Whether names not pinned with [`Self::add_host`] are resolved by the
    /// system's DNS (default true).
    pub fn system_dns(mut self, enabled: bool) -> Self {
        self.system_dns = enabled;
        self
    }

    /// Adds trust roots (a PEM file) for upstream TLS.
    pub fn upstream_ca(mut self, pem: impl Into<PathBuf>) -> Self {
        self.upstream_ca.push(pem.into());
        self
    }

    /// Counters every stage updates (default: disabled). Pass
    /// [`Metrics::enabled`] and keep a clone to export them
    /// ([`Metrics::encode`] renders Prometheus text); the gateway marks
    /// them ready once it is bound.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Size, time and connection limits (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Loads the policy, checks it against the library's capabilities,
    /// opens (or creates) the sandbox CA in the state directory and binds
    /// the listener. Nothing is served until [`Gateway::serve`].
    ///
    /// # Errors
    /// [`GatewayError`] naming what failed; policy problems are located.
    pub async fn build(self) -> Result<Gateway, GatewayError> {
        let loaded = match &self.policy {
            PolicySource::File(path) => sluice_policy::load_file(path, 1),
            PolicySource::Text { yaml, origin } => sluice_policy::load_str(yaml, origin, 1),
        }
        .map_err(GatewayError::Policy)?;
        let path = match &self.policy {
            PolicySource::File(path) => Some(path.clone()),
            PolicySource::Text { .. } => None,
        };
        let store = PolicyStore::new(loaded.snapshot, path);
        let identity_mode = if self.identity.is_some() {
            IdentityMode::Required
        } else {
            IdentityMode::EndpointOnly
        };
        let capabilities = Capabilities {
            process_identity: self.identity.is_some(),
            middleware: available_middleware(std::iter::empty()),
            ..Capabilities::new(RuntimeMode::Library)
        };
        store
            .set_capabilities(capabilities)
            .map_err(GatewayError::Capability)?;
        let ca = Arc::new(SandboxCa::load_or_create(&self.state_dir)?);
        let audit = Audit::new(self.audit).with_metrics(self.metrics.clone());
        let config = ProxyConfig {
            identity_mode,
            identity: self.identity,
            trusted_gateway: None,
            resolver: Resolver::new(self.pinned, Duration::from_secs(5), self.system_dns),
            limits: self.limits,
            audit: audit.clone(),
            leaf_cache: Arc::new(LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_CACHE_CAPACITY)),
            upstream_tls: Arc::new(UpstreamTls::new(&self.upstream_ca)?),
            middleware: Arc::new(MiddlewareRuntime::builtin_only()),
            proposals: None,
        };
        let prepare = config.middleware.prepare(&store.snapshot()).await;
        if let Err(e) = prepare {
            return Err(GatewayError::Policy(LoadError {
                diagnostics: vec![sluice_policy::Diagnostic {
                    file: Arc::from(store.snapshot().source()),
                    line: 0,
                    col: 0,
                    message: e,
                }],
            }));
        }
        let proxy = Proxy::bind(self.listen, Arc::clone(&store), config)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: self.listen,
                source,
            })?;
        let addr = proxy.local_addr().map_err(|source| GatewayError::Bind {
            addr: self.listen,
            source,
        })?;
        self.metrics.set_ready();
        let capabilities = store.capabilities();
        audit.policy_loaded(
            store.generation(),
            store.snapshot().source(),
            identity_mode.as_str(),
            capabilities.as_ref(),
        );
        Ok(Gateway {
            proxy,
            addr,
            handle: GatewayHandle {
                store,
                audit,
                identity_mode,
            },
            ca,
        })
    }
}

/// An embedded sluice gateway: bound, not yet serving.
pub struct Gateway {
    proxy: Proxy,
    addr: SocketAddr,
    handle: GatewayHandle,
    ca: Arc<SandboxCa>,
}

/// Controls a gateway's policy while it serves (cheap to clone): the
/// snapshot in force, reloads and replacements.
#[derive(Clone)]
pub struct GatewayHandle {
    store: Arc<PolicyStore>,
    audit: Audit,
    identity_mode: IdentityMode,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.addr)
            .field("generation", &self.handle.store.generation())
            .field("identity_mode", &self.handle.identity_mode)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("generation", &self.store.generation())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A builder for a gateway enforcing `policy`; the sandbox CA (used to
    /// terminate TLS where the policy inspects it) lives in `state_dir`.
    pub fn builder(policy: PolicySource, state_dir: impl AsRef<Path>) -> GatewayBuilder {
        GatewayBuilder {
            policy,
            state_dir: state_dir.as_ref().to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            audit: AuditSink::disabled(),
            identity: None,
            pinned: HashMap::new(),
            system_dns: true,
            upstream_ca: Vec::new(),
            limits: Limits::default(),
            metrics: Metrics::disabled(),
        }
    }

    /// The explicit proxy's bound address (`HTTP(S)_PROXY` for the workload).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle on the gateway's policy that stays usable while it serves.
    #[must_use]
    pub fn handle(&self) -> GatewayHandle {
        self.handle.clone()
    }

    /// The sandbox CA's certificate (PEM) the workload must trust for
    /// inspected TLS.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Serves until the task is dropped; with a [`PolicySource::File`], the
    /// file is also watched and reloaded when it changes.
    pub async fn serve(self) {
        let h = &self.handle;
        if h.store.path().is_some() {
            tokio::spawn(watch_policy_file(
                Arc::clone(&h.store),
                h.audit.clone(),
                h.identity_mode,
                Duration::from_millis(500),
            ));
        }
        self.proxy.run().await;
    }
}

impl GatewayHandle {
    /// The policy store: the snapshot in force, its generation, and a
    /// receiver for new generations.
    #[must_use]
    pub fn policy(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    /// Reads the policy file again and publishes it as the next generation
    /// if it loads and needs nothing the gateway cannot enforce.
    ///
    /// # Errors
    /// [`GatewayError::Reload`]; the policy in force stays.
    pub fn reload(&self) -> Result<u64, GatewayError> {
        let (generation, _) = self.store.reload()?;
        self.loaded(generation);
        Ok(generation)
    }

    /// Replaces the policy with `yaml` (named `origin` in messages) under the
    /// same checks as a reload. Open tunnels whose decision changes are
    /// revoked as on any reload.
    ///
    /// # Errors
    /// [`GatewayError::Reload`] with located diagnostics; the policy in
    /// force stays.
    pub fn replace_policy(&self, yaml: &str, origin: &str) -> Result<u64, GatewayError> {
        let generation = self.store.replace_text(yaml, origin)?;
        self.loaded(generation);
        Ok(generation)
    }

    fn loaded(&self, generation: u64) {
        self.audit.policy_loaded(
            generation,
            self.store.snapshot().source(),
            self.identity_mode.as_str(),
            self.store.capabilities().as_ref(),
        );
    }
}
