//! Listeners, the accept loop, and policy-file watching.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpSocket};

pub use crate::adapter::Limits;
use crate::adapter::{HttpProxyListener, Listener, Shared};
use crate::audit::Audit;
use crate::destination::Resolver;
use crate::egress::{AuthorizeContext, Authorizer, IdentityMode, IdentityResolver};
use crate::metrics::ReloadOutcome;
use crate::policy_store::{PolicyStore, ReloadError};
use crate::relay::credentials::token_grant::TokenGrants;
use crate::relay::tls::{LeafCache, UpstreamTls};
use crate::relay::RelayContext;

/// Everything the proxy needs besides the policy.
pub struct ProxyConfig {
    pub identity_mode: IdentityMode,
    /// `None` when the platform cannot resolve identity.
    pub identity: Option<Arc<dyn IdentityResolver>>,
    pub trusted_gateway: Option<IpAddr>,
    pub resolver: Resolver,
    pub limits: Limits,
    pub audit: Audit,
    /// Leaf certificates for TLS termination (from the sandbox CA).
    pub leaf_cache: Arc<LeafCache>,
    /// Trust and settings for TLS to upstreams.
    pub upstream_tls: Arc<UpstreamTls>,
    /// Middleware services and plans (prepared for every policy that loads).
    pub middleware: Arc<crate::relay::middleware::MiddlewareRuntime>,
    /// The proposal loop behind `policy.local` (`None`: its proposal routes
    /// answer 503).
    pub proposals: Option<Arc<crate::proposals::ProposalService>>,
}

/// Accept-queue length asked of the kernel (capped by `net.core.somaxconn`,
/// 4096 by default). A burst of connects beyond the queue is not refused but
/// dropped by the kernel, and each dropped SYN costs its client a 1 s
/// retransmit; the default of 1024 overflowed under a burst of tunnels.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`
/// (a restarted sluice rebinds while old connections sit in TIME_WAIT).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The proxy: the stage handles and the surfaces they serve.
pub struct Proxy {
    listeners: Vec<Box<dyn Listener>>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Bind the explicit proxy listener (port 0 picks a free port; see
    /// [`Self::local_addr`]) and assemble the stage handles.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(
        addr: SocketAddr,
        store: Arc<PolicyStore>,
        config: ProxyConfig,
    ) -> std::io::Result<Self> {
        let listener = listen(addr)?;
        let tokens = TokenGrants::new(config.resolver.clone(), Arc::clone(&config.upstream_tls))
            .with_metrics(config.audit.metrics().clone());
        let authorizer = Authorizer::new(
            store,
            AuthorizeContext {
                identity_mode: config.identity_mode,
                trusted_gateway: config.trusted_gateway,
            },
        );
        let shared = Arc::new(Shared {
            relay: Arc::new(RelayContext {
                authorizer,
                resolver: config.resolver,
                audit: config.audit,
                dial_timeout: config.limits.dial_timeout,
                upstream_tls: config.upstream_tls,
                tokens,
                middleware: config.middleware,
            }),
            proposals: config.proposals,
            identity_mode: config.identity_mode,
            identity: config.identity,
            limits: config.limits,
            leaf_cache: config.leaf_cache,
        });
        Ok(Self {
            listeners: vec![Box::new(HttpProxyListener::new(listener))],
            shared,
        })
    }

    /// Another surface to serve with the same stage handles (e.g. policy DNS).
    #[must_use]
    pub fn with_listener(mut self, listener: Box<dyn Listener>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// The explicit proxy's bound address.
    ///
    /// # Errors
    /// The socket error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.first().map_or_else(
            || Err(std::io::ErrorKind::NotConnected.into()),
            |l| l.local_addr(),
        )
    }

    /// Serve every surface forever, each in its own task.
    pub async fn run(self) {
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.listeners {
            tracing::debug!(surface = listener.surface(), addr = ?listener.local_addr().ok(), "Serving");
            tasks.spawn(listener.serve(Arc::clone(&self.shared)));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Reload the policy and record the outcome (used by SIGHUP and the file watcher).
pub fn reload_and_audit(store: &PolicyStore, audit: &Audit, identity_mode: IdentityMode) {
    let source = store
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match store.reload() {
        Ok((generation, notices)) => {
            audit.metrics().policy_reload(ReloadOutcome::Applied);
            for n in &notices {
                tracing::info!(notice = %n, "Policy notice");
            }
            tracing::info!(generation, policy.source = %source, "Policy reloaded");
            audit.policy_loaded(
                generation,
                &source,
                identity_mode.as_str(),
                store.capabilities().as_ref(),
            );
        }
        Err(ReloadError::Invalid(e)) => {
            let kept = store.generation();
            tracing::warn!(generation = kept, errors = %e, "Policy reload rejected; keeping last good policy");
            audit.policy_rejected(kept, &source, &e.to_string());
        }
        Err(ReloadError::Refused(why)) => {
            let kept = store.generation();
            tracing::warn!(generation = kept, error = %why, "Policy reload refused; keeping last good policy");
            audit.policy_rejected(kept, &source, &why);
        }
        Err(ReloadError::Unchanged) => {}
        Err(e) => {
            audit.metrics().policy_reload(ReloadOutcome::Refused);
            tracing::warn!(error = %e, "Policy reload failed");
        }
    }
}

/// Poll the policy file and reload when its identity or content stamp
/// (inode, size, mtime) changes. Polling is portable and survives editors
/// that replace the file.
pub async fn watch_policy_file(
    store: Arc<PolicyStore>,
    audit: Audit,
    identity_mode: IdentityMode,
    every: Duration,
) {
    let Some(path) = store.path().map(std::path::Path::to_path_buf) else {
        return;
    };
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (
                m.ino(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.ctime_nsec(),
            )
        })
    };
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now != last && now.is_some() {
            last = now;
            let (store, audit) = (Arc::clone(&store), audit.clone());
            let _ = tokio::task::spawn_blocking(move || {
                reload_and_audit(&store, &audit, identity_mode)
            })
            .await;
        }
    }
}
