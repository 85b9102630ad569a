//! `sluice run -- CMD`: run CMD in a fresh network namespace whose only way out is
//! sluice, as an unprivileged user that cannot see sluice or its secret sources
//! (issues 6 and 11; facts §10, §11).
//!
//! 1. Preconditions: CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_NET_RAW, `ip` and `nft` in
//!    trusted paths; CMD's user decided (`--user`, else the sudo caller, never
//!    root by accident). Anything missing aborts with a message naming it.
//! 2. The policy is loaded; every secret source it names is kept from CMD: the
//!    variables leave CMD's environment, a `{file:}` source CMD's user could read
//!    refuses the start (and the same check guards every reload).
//! 3. Namespace `sluice-<id>` with a veth pair on a free private /30
//!    (`SLUICE_RUN_SUBNET`, default 10.200.0.0/16), default route via the host side.
//!    The proxy listens on the host-side address (port from `--listen`, default 3128).
//! 4. One atomic nftables transaction inside the namespace (fail closed), and the
//!    bypass monitor bound to its NFLOG group. If either fails, CMD never starts.
//! 5. CMD starts under sluice's init (`sluice_sandbox::confine`): PID 1 of its own
//!    PID namespace, its own mount namespace with a fresh `/proc` and the run's
//!    `resolv.conf`, CMD's uid/gid, no capability in any set, `no_new_privs`.
//! 6. SIGINT/SIGTERM are forwarded; SIGHUP reloads the policy. When CMD exits, the
//!    init drains its leftovers for up to 2 s, everything is torn down and sluice
//!    exits with CMD's status (128 + signal number when CMD was killed by a signal).

mod env;
mod report;
mod secrets;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sluice_policy::MetadataKind;
use sluice_proxy::adapter::policy_dns::Synthetic;
use sluice_proxy::adapter::{Listener, MetadataListener};
use sluice_proxy::audit::Audit;
use sluice_proxy::policy_store::PolicyStore;
use sluice_proxy::relay::tls::{write_trust_files, TrustFiles};
use sluice_sandbox::bypass::{BypassMonitor, ChildIdentity, FlowReporter, MonitorConfig};
use sluice_sandbox::confine::{self, BindMount, InitSpec, SandboxUser};
use sluice_sandbox::netns::{SandboxNetns, SubnetPool};
use sluice_sandbox::nft::{Capture, Ruleset};
use sluice_sandbox::tools::{check_capabilities, Tools};
use sluice_sandbox::{send_signal, Signal};
use tokio::signal::unix::{signal, SignalKind};

use super::capture::{self, events};
use super::serve;
use crate::cli::RunArgs;
use report::{Reporter, Verbosity};
use secrets::SecretGuard;

/// How long CMD's leftovers may keep running after CMD exits.
const DRAIN: Duration = Duration::from_secs(2);
/// After a forwarded SIGINT/SIGTERM, CMD gets this long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
        serve: mut sargs,
        user,
        allow_readable_secret_files,
        suggest_policy,
        capture: capture_args,
        cmd,
    } = args;
    let verbosity = match (sargs.quiet, sargs.verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        (false, _) => Verbosity::Verbose,
    };
    let reporter = Arc::new(Reporter::new(verbosity));
    check_capabilities()?;
    let tools = Tools::find()?;
    let env_var = |k: &str| std::env::var(k).ok();
    let user = SandboxUser::resolve(
        user.as_deref(),
        env_var("SUDO_UID").as_deref(),
        env_var("SUDO_GID").as_deref(),
    )?;
    let pool = match std::env::var("SLUICE_RUN_SUBNET") {
        Ok(v) => v
            .parse::<SubnetPool>()
            .map_err(|e| anyhow::anyhow!("SLUICE_RUN_SUBNET={v}: {e}"))?,
        Err(_) => SubnetPool::default(),
    };

    // The connect-time map is loaded now, before the child exists: it may
    // connect as soon as it runs.
    let connect_map = match sargs.identity {
        crate::cli::IdentityArg::Required => sluice_sandbox::ebpf::ConnectMap::shared(),
        crate::cli::IdentityArg::EndpointOnly => None,
    };
    let child_identity = Arc::new(ChildIdentity::with_connect_map(connect_map));
    let observer = {
        let reporter = Arc::clone(&reporter);
        Arc::new(move |e: &sluice_telemetry::OcsfEvent| reporter.observe(e))
    };
    let prepared = serve::prepare(
        &sargs,
        Some(serve::ProcfsResolver::Child(Arc::clone(&child_identity))),
        serve::AuditOptions {
            file_by_default: true,
            observer: Some(observer),
        },
        serve::ModeOptions {
            mode: sluice_policy::RuntimeMode::Run,
            transparent_capture: capture_args.transparent
                != sluice_proxy::adapter::policy_dns::eligible::TransparentMode::Off,
            metadata_loopback: true,
        },
    )?;
    let audit_where = prepared
        .audit_path
        .as_ref()
        .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    let (inherited, removed) = env::inherited(std::env::vars_os(), &prepared.secret_sources);
    let guard = SecretGuard {
        user: user.clone(),
        allow_readable_files: allow_readable_secret_files,
        visible: inherited.clone(),
    };
    guard
        .check(&prepared.secret_sources)
        .map_err(|e| anyhow::anyhow!("{e} (CMD was not started)"))?;
    prepared
        .store
        .add_reload_check(Box::new(move |loaded| guard.check(&loaded.secret_sources)));
    let removed_note = if removed.is_empty() {
        String::new()
    } else {
        format!("; kept from CMD: {}", removed.join(", "))
    };
    let placeholders: Vec<(String, String)> = prepared
        .credential_names
        .iter()
        .map(|n| (n.clone(), sluice_policy::placeholder::canonical(n)))
        .collect();
    let ca_pem = prepared.ca.bundle_pem().context("CA bundle")?;
    let (store, audit, identity_mode) = (
        Arc::clone(&prepared.store),
        prepared.audit.clone(),
        prepared.identity_mode,
    );

    let mut netns = SandboxNetns::create(&tools, pool).context("creating the sandbox namespace")?;
    tracing::info!(netns = %netns.name, host = %netns.host_ip, sandbox = %netns.ns_ip, "Sandbox namespace created");
    let run_dir = RunDir::create(&netns.name)?;
    let trust =
        write_trust_files(&run_dir.0, &ca_pem).context("writing the sandbox's trust files")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listen = SocketAddr::new(netns.host_ip.into(), sargs.listen.port());
    let monitor_config = MonitorConfig::default();
    let dns_addr = SocketAddr::new(netns.host_ip.into(), 53);
    let synthetic = capture::synthetic(&capture_args);
    let mut listeners: Vec<Box<dyn Listener>> = Vec::new();
    let capture_rules = match &synthetic {
        Some(s) => {
            let (listener, rules) = transparent_capture(&runtime, &netns, s.clone())
                .context("starting the transparent listener (CMD was not started)")?;
            listeners.push(listener);
            Some(rules)
        }
        None => None,
    };
    let metadata_kinds = metadata_kinds(&store);
    for kind in &metadata_kinds {
        let listener = metadata_listener(&runtime, &netns, *kind, &store, &audit)
            .context("starting the metadata loopback (CMD was not started)")?;
        listeners.push(listener);
    }
    // If the resolver address cannot be bound, the ruleset refuses DNS like
    // any other UDP.
    let dns = runtime
        .block_on(capture::policy_dns(
            dns_addr,
            Arc::new(FlowReporter::new(
                Arc::clone(&child_identity),
                monitor_config.max_per_sec,
            )),
            &audit,
            &store,
            synthetic,
        ))
        .inspect_err(|e| {
            tracing::warn!(addr = %dns_addr, error = %e, "Policy DNS not started; DNS queries are refused by the firewall");
        })
        .ok();
    let dns_port = dns.is_some().then_some(dns_addr.port());
    listeners.extend(dns);
    // Proposals from this sandbox carry its namespace name unless told otherwise.
    if sargs.gateway_name.is_none() {
        sargs.gateway_name = Some(netns.name.clone());
    }
    let proxy_addr = runtime.block_on(serve::start(prepared, &sargs, listen, false, listeners))?;

    Ruleset {
        id: netns.id.clone(),
        proxy_ip: netns.host_ip,
        proxy_port: proxy_addr.port(),
        log_group: monitor_config.log_group,
        dns_port,
        capture: capture_rules,
    }
    .install(&netns, &tools.nft)
    .context("installing the nftables ruleset (CMD was not started)")?;
    let mut monitor = {
        let (audit, store) = (audit.clone(), Arc::clone(&store));
        BypassMonitor::start(
            &netns,
            monitor_config,
            Arc::clone(&child_identity),
            move |e| events::bypass_events(&audit, &store, &e, None),
        )
        .context("starting the bypass monitor (CMD was not started)")?
    };

    let env = env::complete(
        inherited,
        proxy_addr,
        &trust,
        &placeholders,
        &env::metadata_vars(&metadata_kinds),
        &user,
    );
    let env = env::with_inference(env, !store.snapshot().inference_routes().is_empty());
    let spec = InitSpec {
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.clone(),
        binds: sandbox_binds(&netns, &trust),
        drain: DRAIN,
    };
    let start_line = format!(
        "sluice: running {:?} in namespace {} as {}; audit log: {audit_where}{removed_note}",
        cmd.join(" "),
        netns.name,
        user.describe(),
    );
    let status = runtime.block_on(supervise(
        &netns,
        &spec,
        &cmd,
        env,
        &start_line,
        &child_identity,
        &store,
        &audit,
        identity_mode,
    ));

    // What is left in the namespace (entered from outside, e.g. `ip netns exec`)
    // gets a bounded drain too; CMD's own leftovers died with its init.
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && !netns.pids().is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    netns.signal_all(Signal::Kill);
    std::thread::sleep(Duration::from_millis(50));
    monitor.stop();
    audit.sink().flush();
    let teardown = netns.teardown();
    drop(run_dir);
    runtime.shutdown_timeout(Duration::from_millis(200));
    teardown.context("tearing down the sandbox")?;
    eprint!("{}", reporter.summary(Path::new(&sargs.policy_name())));
    if let Some(out) = &suggest_policy {
        match &sargs.policy {
            Some(policy) => write_suggestions(policy, out, &reporter.suggestions()),
            None => eprintln!("sluice: --suggest-policy needs --policy (a file to merge into)"),
        }
    }
    let status = status?;
    Ok(ExitCode::from(exit_code(status)))
}

/// The transparent listener: sockets inside the sandbox namespace (so the
/// firewall's redirect and `SO_ORIGINAL_DST` meet in one conntrack table) on
/// `127.0.0.1` and, when the namespace has IPv6, `[::1]`, one port; and the
/// capture rules that send the synthetic pools there.
fn transparent_capture(
    runtime: &tokio::runtime::Runtime,
    netns: &SandboxNetns,
    synthetic: Synthetic,
) -> anyhow::Result<(Box<dyn Listener>, Capture)> {
    use sluice_sandbox::transparent::bind_in_netns;
    let (v4_pool, v6_pool) = synthetic.table.pools();
    capture::check_pool(
        v4_pool.into(),
        &[
            netns.host_ip.into(),
            netns.ns_ip.into(),
            std::net::Ipv4Addr::LOCALHOST.into(),
        ],
    )?;
    let ns = netns.ns_path();
    let v4 = bind_in_netns(&ns, SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let port = v4.local_addr()?.port();
    let v6 = netns
        .route_local_v6(v6_pool)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            Ok(bind_in_netns(
                &ns,
                SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
            )?)
        });
    let v6 = match v6 {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "No IPv6 in the sandbox: AAAA answers will not be reachable");
            None
        }
    };
    let rules = Capture {
        v4: v4_pool,
        v6: v6.is_some().then_some(v6_pool),
        port,
    };
    let _enter = runtime.enter();
    let sockets = std::iter::once(v4).chain(v6).collect();
    Ok((capture::transparent_listener(sockets, synthetic)?, rules))
}

/// The metadata services the loaded policy asks for (`providers.*.metadata`),
/// started with the run; a reload can change their values or remove them (then
/// they answer 404/503), not add a service.
fn metadata_kinds(store: &PolicyStore) -> Vec<MetadataKind> {
    let snapshot = store.snapshot();
    [MetadataKind::Gce, MetadataKind::Aws]
        .into_iter()
        .filter(|k| snapshot.metadata(*k).is_some())
        .collect()
}

/// The metadata loopback of `kind` on the sandbox namespace's loopback
/// (`127.0.0.1:8174` for gce, `127.0.0.1:8175` for aws), never on the host.
fn metadata_listener(
    runtime: &tokio::runtime::Runtime,
    netns: &SandboxNetns,
    kind: MetadataKind,
    store: &Arc<PolicyStore>,
    audit: &Audit,
) -> anyhow::Result<Box<dyn Listener>> {
    use sluice_proxy::adapter::metadata::{GCE_ADDR, IMDS_ADDR};
    let addr = match kind {
        MetadataKind::Gce => GCE_ADDR,
        MetadataKind::Aws => IMDS_ADDR,
    };
    let socket =
        sluice_sandbox::transparent::bind_in_netns(&netns.ns_path(), addr).with_context(|| {
            format!(
                "binding {addr} for `metadata: {}` in the sandbox",
                kind.as_str()
            )
        })?;
    let _enter = runtime.enter();
    let socket = tokio::net::TcpListener::from_std(socket)?;
    tracing::info!(%addr, service = kind.as_str(), "Metadata loopback listening in the sandbox");
    Ok(Box::new(MetadataListener::new(
        kind,
        socket,
        Arc::clone(store),
        audit.clone(),
    )))
}

/// `--suggest-policy FILE`: the policy with every suggestion applied, checked by
/// loading it, then written. Problems are reported, never fatal (CMD's status wins).
fn write_suggestions(policy: &Path, out: &Path, suggestions: &[sluice_policy::suggest::Denied]) {
    if suggestions.is_empty() {
        eprintln!("sluice: nothing was denied; {} not written", out.display());
        return;
    }
    let merged = std::fs::read_to_string(policy)
        .map_err(|e| format!("reading {}: {e}", policy.display()))
        .and_then(|src| sluice_policy::suggest::merge(&src, suggestions).map_err(|e| e.to_string()))
        .and_then(|merged| {
            let header = format!(
                "# {} with sluice run's suggestions ({} change(s)); review before use.\n",
                policy.display(),
                suggestions.len()
            );
            let text = header + &merged;
            sluice_policy::load_str(&text, &out.display().to_string(), 1)
                .map(|_| text)
                .map_err(|e| format!("the merged policy does not load:\n{e}"))
        });
    match merged.and_then(|text| {
        std::fs::write(out, text).map_err(|e| format!("writing {}: {e}", out.display()))
    }) {
        Ok(()) => eprintln!(
            "sluice: wrote the policy with {} suggestion(s) to {}",
            suggestions.len(),
            out.display()
        ),
        Err(e) => eprintln!("sluice: --suggest-policy: {e}"),
    }
}

/// `ExitStatus` → sluice's exit code: CMD's code, or 128 + signal.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

/// Where system-store clients look for trust roots: each existing one shows the
/// run's bundle (or Java trust store) in CMD's mount namespace.
const SYSTEM_BUNDLE_TARGETS: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];
const SYSTEM_JAVA_TARGETS: [&str; 3] = [
    "/etc/ssl/certs/java/cacerts",
    "/etc/pki/java/cacerts",
    "/etc/pki/ca-trust/extracted/java/cacerts",
];

/// The read-only bind mounts of CMD's mount namespace: `resolv.conf` and the
/// trust files over the system stores that exist.
fn sandbox_binds(netns: &SandboxNetns, trust: &TrustFiles) -> Vec<BindMount> {
    let bind = |source: &Path, target: &str| BindMount {
        source: source.to_owned(),
        target: PathBuf::from(target),
        required: false,
    };
    let mut binds = vec![bind(&netns.resolv_conf(), "/etc/resolv.conf")];
    binds.extend(SYSTEM_BUNDLE_TARGETS.iter().map(|t| bind(&trust.bundle, t)));
    binds.extend(
        SYSTEM_JAVA_TARGETS
            .iter()
            .map(|t| bind(&trust.java_trust_store, t)),
    );
    binds
}

/// The run's files that CMD reads (trust files): `/run/sluice/<netns>/`, mode
/// 0755, files 0644, removed when the run ends. Certificates only; no secret.
struct RunDir(PathBuf);

impl RunDir {
    fn create(netns: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = Path::new("/run/sluice").join(netns);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for d in [Path::new("/run/sluice"), dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", d.display()))?;
        }
        Ok(Self(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "Run directory not removed");
        }
    }
}

/// Spawns CMD under the init in the namespace and waits for it, forwarding signals.
#[allow(clippy::too_many_arguments)]
async fn supervise(
    netns: &SandboxNetns,
    spec: &InitSpec,
    cmd: &[String],
    env: Vec<(OsString, OsString)>,
    start_line: &str,
    child_identity: &ChildIdentity,
    store: &Arc<PolicyStore>,
    audit: &Audit,
    identity_mode: sluice_proxy::egress::IdentityMode,
) -> anyhow::Result<ExitStatus> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, mut exited) = tokio::sync::oneshot::channel();
    eprintln!("{start_line}");
    let pid = confine::spawn(&netns.ns_path(), spec, cmd, env, move |status| {
        let _ = tx.send(status);
    })
    .with_context(|| format!("starting {}", cmd.join(" ")))?;
    child_identity.set_child(pid, &netns.ns_path());
    let mut kill_at: Option<tokio::time::Instant> = None;
    loop {
        let kill_timer = async {
            match kill_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = &mut exited => return status.context("sandbox waiter")?.context("waiting for the command"),
            _ = hup.recv() => serve::reload(store, audit, identity_mode).await,
            _ = term.recv() => {
                let _ = send_signal(pid, Signal::Term);
                kill_at.get_or_insert(tokio::time::Instant::now() + KILL_GRACE);
            }
            _ = int.recv() => {
                let _ = send_signal(pid, Signal::Int);
                kill_at.get_or_insert(tokio::time::Instant::now() + KILL_GRACE);
            }
            () = kill_timer => {
                let _ = send_signal(pid, Signal::Kill);
                kill_at = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(11)), 139);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
