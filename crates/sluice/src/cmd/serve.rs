//! `sluice serve`: load the policy, bind, accept; SIGHUP and file changes
//! reload; SIGINT/SIGTERM flush the audit log and exit. As a Kubernetes
//! sidecar it also serves policy DNS and the transparent listener in the pod's
//! namespace (`--dns-listen`, `--transparent-listen`; see `super::capture`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_policy::{Capabilities, MetadataKind, RuntimeMode};
use sluice_proposals::StoreSpec;
use sluice_proxy::adapter::policy_dns::eligible::TransparentMode;
use sluice_proxy::audit::Audit;
use sluice_proxy::denials::DenialLog;
use sluice_proxy::destination::Resolver;
use sluice_proxy::egress::{IdentityMode, IdentityResolver, ProcessIdentity};
use sluice_proxy::metrics::Metrics;
use sluice_proxy::policy_store::PolicyStore;
use sluice_proxy::proposals::ProposalService;
use sluice_proxy::relay::middleware::{available_middleware, MiddlewareRuntime};
use sluice_proxy::relay::tls::{LeafCache, SandboxCa, UpstreamTls, DEFAULT_LEAF_CACHE_CAPACITY};
use sluice_proxy::server::{reload_and_audit, watch_policy_file, Limits, Proxy, ProxyConfig};
use sluice_telemetry::{AuditFormat, AuditSink};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{IdentityArg, LogFormat, ServeArgs, ServeCmdArgs};

/// Process identity over `/proc` (the sandbox crate), behind the proxy's trait.
/// `serve` anchors at sluice's own view; `run` at the sandboxed child, once it exists.
pub(crate) enum ProcfsResolver {
    /// `/proc/self/net`, ancestry to PID 1.
    Host(sluice_sandbox::ProcfsIdentity),
    /// The child of `sluice run` (denies until it is spawned).
    Child(Arc<sluice_sandbox::bypass::ChildIdentity>),
}

impl ProcfsResolver {
    fn procfs(&self) -> Option<&sluice_sandbox::ProcfsIdentity> {
        match self {
            Self::Host(p) => Some(p),
            Self::Child(c) => c.get(),
        }
    }
}

/// The proxy's view of a `/proc` identity.
fn proxy_identity(p: sluice_sandbox::ProcessIdentity) -> ProcessIdentity {
    ProcessIdentity {
        pid: p.pid,
        exe: p.exe,
        exe_sha256: p.exe_sha256,
        ancestors: p.ancestors,
        cmdline_paths: p.cmdline_paths,
        sandbox_pid: p.sandbox_pid,
    }
}

impl IdentityResolver for ProcfsResolver {
    fn resolve(&self, peer: SocketAddr, local: SocketAddr) -> Result<ProcessIdentity, String> {
        self.procfs()
            .ok_or_else(|| "entrypoint process not yet spawned".to_owned())?
            .resolve(peer, local)
            .map(proxy_identity)
            .map_err(|e| e.to_string())
    }

    fn resolve_cached(&self, peer: SocketAddr, local: SocketAddr) -> Option<ProcessIdentity> {
        self.procfs()?
            .resolve_cached(peer, local)
            .map(proxy_identity)
    }
}

/// Everything `serve` and `run` share before the listener is bound.
pub(crate) struct Prepared {
    pub(crate) store: Arc<PolicyStore>,
    pub(crate) audit: Audit,
    pub(crate) config: ProxyConfig,
    pub(crate) generation: u64,
    pub(crate) identity_mode: IdentityMode,
    pub(crate) ca: Arc<SandboxCa>,
    /// Credential names of the loaded policy's providers (for `run`'s placeholders).
    pub(crate) credential_names: Vec<String>,
    /// Every secret source the loaded policy names (kept from `run`'s CMD).
    pub(crate) secret_sources: sluice_policy::SecretSources,
    /// The audit file, when the log goes to one.
    pub(crate) audit_path: Option<PathBuf>,
    /// The most recent denials (for `policy.local` and the console).
    pub(crate) denials: DenialLog,
    /// Where proposals are queued (`--store`, else SQLite in the state dir).
    pub(crate) store_spec: StoreSpec,
    /// Counters for `--metrics` (disabled without it).
    pub(crate) metrics: Metrics,
}

/// Where the audit log goes when `--audit-log` is not given, and who else sees
/// every event.
#[derive(Default)]
pub(crate) struct AuditOptions {
    /// `run`: default to `<state-dir>/audit.jsonl` (size-bounded) instead of stdout.
    pub(crate) file_by_default: bool,
    /// Called with every event (`run`'s terminal reporter).
    pub(crate) observer: Option<sluice_telemetry::EventObserver>,
}

/// The runtime mode `prepare` builds for, and what it adds to `serve`'s own
/// capabilities (the capability contract: a policy that needs more is refused).
pub(crate) struct ModeOptions {
    pub(crate) mode: RuntimeMode,
    /// Policy DNS and a transparent listener receive native TCP.
    pub(crate) transparent_capture: bool,
    /// The metadata loopback is served to the workload: the kinds the
    /// policy names at start (`run` starts those services then).
    pub(crate) metadata_loopback: bool,
}

impl ModeOptions {
    /// Plain `sluice serve`: an explicit proxy only.
    pub(crate) fn serve() -> Self {
        Self {
            mode: RuntimeMode::Serve,
            transparent_capture: false,
            metadata_loopback: false,
        }
    }
}

/// Size bound of `run`'s default audit file (one older file is kept beside it).
const RUN_AUDIT_MAX_BYTES: u64 = 64 << 20;

/// The audit format: `--log-format`, else pretty on a terminal and JSON elsewhere;
/// colours only on a terminal and without `NO_COLOR`.
fn audit_format(args: &ServeArgs, to_stdout: bool) -> AuditFormat {
    use std::io::IsTerminal as _;
    let tty = to_stdout && std::io::stdout().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    match args.log_format {
        Some(LogFormat::Json) => AuditFormat::Json,
        Some(LogFormat::Pretty) => AuditFormat::Pretty {
            color: tty && !no_color,
        },
        None if tty => AuditFormat::Pretty { color: !no_color },
        None => AuditFormat::Json,
    }
}

/// Loads the policy, opens the audit log and the CA, and builds the proxy config.
/// `identity` replaces the default host-view resolver (used by `run`).
pub(crate) fn prepare(
    args: &ServeArgs,
    identity: Option<ProcfsResolver>,
    audit_options: AuditOptions,
    mode: ModeOptions,
) -> anyhow::Result<Prepared> {
    let loaded = match args
        .profiles
        .load(args.policy.as_deref(), &sluice_policy::ProcessEnv)
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            anyhow::bail!("policy {} is invalid", args.policy_name());
        }
    };
    for n in &loaded.notices {
        tracing::info!(notice = %n, "Policy notice");
    }
    let max_connections = args
        .max_connections
        .unwrap_or(crate::cli::DEFAULT_MAX_CONNECTIONS)
        .max(1);
    super::fd_limit::raise(max_connections, args.max_connections.is_some());
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::cli::default_state_dir);
    let ca = Arc::new(
        SandboxCa::load_or_create(&state_dir)
            .with_context(|| format!("sandbox CA in {}", state_dir.display()))?,
    );
    let (sink, audit_path) = match (args.audit_log.as_deref(), audit_options.file_by_default) {
        (Some("-"), _) | (None, false) => (
            AuditSink::stdout().with_format(audit_format(args, true)),
            None,
        ),
        (Some(path), _) => (
            AuditSink::file(path)
                .with_context(|| format!("opening audit log {path}"))?
                .with_format(audit_format(args, false)),
            Some(PathBuf::from(path)),
        ),
        (None, true) => {
            let path = state_dir.join("audit.jsonl");
            let sink = AuditSink::file_bounded(&path, RUN_AUDIT_MAX_BYTES)
                .with_context(|| format!("opening audit log {}", path.display()))?
                .with_format(audit_format(args, false));
            (sink, Some(path))
        }
    };
    // Every event goes to the denial log too (and to `run`'s reporter).
    let denials = DenialLog::new();
    let observer: sluice_telemetry::EventObserver = {
        let (log, also) = (denials.clone(), audit_options.observer);
        Arc::new(move |e: &sluice_telemetry::OcsfEvent| {
            log.observe(e);
            if let Some(also) = &also {
                also(e);
            }
        })
    };
    let sink = sink.with_observer(observer);
    let store_spec = StoreSpec::parse(args.store.as_deref(), &state_dir)
        .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    let metrics = if args.metrics.is_some() {
        Metrics::enabled()
    } else {
        Metrics::disabled()
    };
    let audit = Audit::new(sink).with_metrics(metrics.clone());
    let identity_mode = match args.identity {
        IdentityArg::Required => IdentityMode::Required,
        IdentityArg::EndpointOnly => IdentityMode::EndpointOnly,
    };
    let mut pinned: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for h in &args.add_host {
        pinned.entry(h.name.clone()).or_default().push(h.ip);
    }
    let mut limits = Limits {
        dial_timeout: Duration::from_secs(args.dial_timeout.max(1)),
        tunnel_idle: Duration::from_secs(args.tunnel_idle_timeout.max(1)),
        max_connections,
        ..Limits::default()
    };
    if let Some(secs) = args.head_timeout {
        let head = Duration::from_secs(secs.max(1));
        limits.initial_head.timeout = head;
        limits.request_head.timeout = head;
    }
    if let Some(secs) = args.body_idle_timeout {
        limits.body_idle = Duration::from_secs(secs.max(1));
    }
    let identity: Option<Arc<dyn IdentityResolver>> = match identity_mode {
        IdentityMode::Required => Some(Arc::new(identity.unwrap_or_else(|| {
            ProcfsResolver::Host(
                sluice_sandbox::ProcfsIdentity::new("/proc", None)
                    .with_socket_diag()
                    .with_connect_map(sluice_sandbox::ebpf::ConnectMap::shared()),
            )
        }))),
        IdentityMode::EndpointOnly => None,
    };
    let leaf_cache = Arc::new(LeafCache::new(Arc::clone(&ca), DEFAULT_LEAF_CACHE_CAPACITY));
    let upstream_tls = Arc::new(UpstreamTls::new(&args.upstream_ca).context("upstream TLS trust")?);
    let config = ProxyConfig {
        identity_mode,
        identity,
        trusted_gateway: detect_trusted_gateway(),
        resolver: Resolver::new(
            pinned,
            Duration::from_secs(args.dns_timeout.max(1)),
            !args.no_system_dns,
        )
        .with_dns_server(args.dns_server),
        limits,
        audit: audit.clone(),
        leaf_cache,
        upstream_tls,
        // Replaced in `start` once the registered services are described.
        middleware: Arc::new(MiddlewareRuntime::builtin_only()),
        // Set in `start` once the store is open.
        proposals: None,
    };
    let generation = loaded.snapshot.generation();
    // A provider served by the metadata loopback hands its placeholders out
    // there, as a cloud instance does: its names are not exported as
    // variables (SDKs would read those first and never ask the loopback).
    let credential_names = loaded
        .snapshot
        .providers()
        .iter()
        .filter(|p| p.metadata.is_none())
        .flat_map(|p| p.credentials.iter().map(|c| c.name.to_string()))
        .collect();
    let secret_sources = loaded.secret_sources;
    let store = PolicyStore::new(loaded.snapshot, args.policy.clone());
    store.set_profiles(args.profiles.options());
    let capabilities = Capabilities {
        mode: mode.mode,
        process_identity: identity_mode == IdentityMode::Required,
        transparent_capture: mode.transparent_capture,
        metadata_loopback: if mode.metadata_loopback {
            [MetadataKind::Gce, MetadataKind::Aws]
                .into_iter()
                .filter(|k| store.snapshot().metadata(*k).is_some())
                .collect()
        } else {
            Vec::new()
        },
        middleware: available_middleware(args.middleware.iter().map(|r| r.name.as_str())),
        ..Capabilities::new(mode.mode)
    };
    if let Err(e) = store.set_capabilities(capabilities) {
        eprintln!("{e}");
        anyhow::bail!(
            "policy {} needs what `sluice {}` cannot enforce",
            args.policy_name(),
            mode.mode.as_str()
        );
    }
    Ok(Prepared {
        store,
        audit,
        config,
        generation,
        identity_mode,
        ca,
        credential_names,
        secret_sources,
        audit_path,
        denials,
        store_spec,
        metrics,
    })
}

/// The registered middleware services (`--middleware`, described now), the
/// plan of the policy in force, and a reload check that prepares (and so
/// validates) the plan of every later policy before it is published.
async fn middleware_runtime(
    args: &ServeArgs,
    store: &Arc<PolicyStore>,
) -> anyhow::Result<Arc<MiddlewareRuntime>> {
    let ca = match &args.middleware_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --middleware-ca {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = Arc::new(
        MiddlewareRuntime::connect(&args.middleware, ca.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("middleware: {e}"))?,
    );
    runtime
        .prepare(&store.snapshot())
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.policy_name()))?;
    let (check_runtime, handle) = (Arc::clone(&runtime), tokio::runtime::Handle::current());
    store.add_reload_check(Box::new(move |loaded| {
        // Reload checks are synchronous; the services are asked on the
        // runtime from a scoped thread (the caller may be a runtime thread).
        std::thread::scope(|s| {
            s.spawn(|| handle.block_on(check_runtime.prepare(&loaded.snapshot)))
                .join()
                .unwrap_or_else(|_| Err("middleware check failed".into()))
        })
    }));
    Ok(runtime)
}

/// Binds the listener on `listen`, records the load, prints the `listening on` line
/// and spawns the accept loop and the policy-file watcher. Returns the bound address.
/// `announce`: print the `listening on` line (`run` prints its own start line);
/// `extra`: another surface the proxy serves (`run`'s policy DNS).
pub(crate) async fn start(
    prepared: Prepared,
    args: &ServeArgs,
    listen: SocketAddr,
    announce: bool,
    extra: Vec<Box<dyn sluice_proxy::adapter::Listener>>,
) -> anyhow::Result<SocketAddr> {
    let Prepared {
        store,
        audit,
        mut config,
        generation,
        identity_mode,
        denials,
        store_spec,
        metrics,
        ..
    } = prepared;
    // First, so that probes get an answer (503 on /readyz) while the
    // middleware services are described and the listener is bound.
    if let Some(listen) = args.metrics {
        let listener = sluice_proxy::metrics::server::bind(listen)
            .await
            .with_context(|| format!("binding --metrics {listen}"))?;
        let addr = listener.local_addr()?;
        eprintln!("metrics: http://{addr}/metrics");
        tokio::spawn(sluice_proxy::metrics::server::serve(
            listener,
            metrics.clone(),
        ));
    }
    config.middleware = middleware_runtime(args, &store).await?;
    let proposals = proposal_service(args, &store_spec, &store, &audit, denials).await?;
    config.proposals = Some(Arc::clone(&proposals));
    let mut proxy = Proxy::bind(listen, Arc::clone(&store), config)
        .await
        .with_context(|| format!("binding {listen}"))?;
    for listener in extra {
        proxy = proxy.with_listener(listener);
    }
    let addr = proxy.local_addr()?;
    let capabilities = store.capabilities();
    audit.policy_loaded(
        generation,
        &args.policy_name(),
        identity_mode.as_str(),
        capabilities.as_ref(),
    );
    metrics.set_ready();
    if announce {
        let enforces = capabilities.as_ref().map_or_else(String::new, |c| {
            format!(
                "; {} mode enforces {}",
                c.mode.as_str(),
                c.names().join(", ")
            )
        });
        eprintln!(
            "sluice: listening on {addr} (policy generation {generation}, identity {}{enforces})",
            identity_mode.as_str()
        );
    }
    if let Some(listen) = args.console {
        let console = sluice_console::start(
            sluice_console::ConsoleConfig {
                listen,
                token_file: args.console_token_file.clone(),
            },
            Arc::clone(&proposals),
        )
        .await?;
        eprintln!("console: {}", console.url);
    }
    tokio::spawn(Arc::clone(&proposals).sync_forever());
    tokio::spawn(proxy.run());
    tokio::spawn(watch_policy_file(
        store,
        audit,
        identity_mode,
        Duration::from_millis(args.policy_poll_ms.max(50)),
    ));
    Ok(addr)
}

/// The proposal store (`--store`, else SQLite in the state dir) and this
/// gateway's proposal loop. A store that cannot be opened stops the start.
async fn proposal_service(
    args: &ServeArgs,
    spec: &StoreSpec,
    policy: &Arc<PolicyStore>,
    audit: &Audit,
    denials: DenialLog,
) -> anyhow::Result<Arc<ProposalService>> {
    if args.console.is_some_and(|a| !a.ip().is_loopback()) && !args.console_public {
        anyhow::bail!(
            "--console {}: not a loopback address (add --console-public to serve it there)",
            args.console.map_or_else(String::new, |a| a.to_string())
        );
    }
    let store = sluice_proposals::open(spec)
        .await
        .map_err(|e| anyhow::anyhow!("proposal store: {e}"))?;
    let gateway = args.gateway_name.clone().unwrap_or_else(host_name);
    Ok(ProposalService::new(
        store,
        Arc::clone(policy),
        audit.clone(),
        denials,
        gateway,
    ))
}

/// The machine's host name, or `sluice`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".into())
}

/// SIGHUP: reload the policy and record the outcome.
pub(crate) async fn reload(store: &Arc<PolicyStore>, audit: &Audit, identity_mode: IdentityMode) {
    let (store, audit) = (Arc::clone(store), audit.clone());
    let _ =
        tokio::task::spawn_blocking(move || reload_and_audit(&store, &audit, identity_mode)).await;
}

pub(crate) fn run(cmd: ServeCmdArgs) -> anyhow::Result<ExitCode> {
    let ServeCmdArgs {
        serve: args,
        sidecar,
    } = cmd;
    let mode = if sidecar.dns_listen.is_some() || sidecar.transparent_listen.is_some() {
        ModeOptions {
            mode: RuntimeMode::Sidecar,
            transparent_capture: sidecar.transparent_listen.is_some()
                && sidecar.capture.transparent != TransparentMode::Off,
            metadata_loopback: false,
        }
    } else {
        ModeOptions::serve()
    };
    let prepared = prepare(&args, None, AuditOptions::default(), mode)?;
    let (store, audit, identity_mode) = (
        Arc::clone(&prepared.store),
        prepared.audit.clone(),
        prepared.identity_mode,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Handlers first: a SIGTERM that arrives just after the "listening"
        // line must still flush the audit log, not kill the process.
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (extra, lines) = super::capture::sidecar_listeners(&sidecar, &audit, &store).await?;
        start(prepared, &args, args.listen, true, extra).await?;
        for line in lines {
            eprintln!("{line}");
        }
        loop {
            tokio::select! {
                _ = hup.recv() => reload(&store, &audit, identity_mode).await,
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("Shutting down");
        audit.sink().flush();
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The host-gateway alias address, trusted only when it is link-local and
/// not a metadata address (rootless container networking).
fn detect_trusted_gateway() -> Option<IpAddr> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    let ip = hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let ip: IpAddr = words.next()?.parse().ok()?;
        words
            .any(|w| w.eq_ignore_ascii_case("host.openshell.internal"))
            .then_some(ip)
    })?;
    let link_local = match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    (link_local && !sluice_proxy::destination::addr_class::is_cloud_metadata(ip)).then_some(ip)
}
