//! `sluice run -- CMD`: run CMD in a fresh network namespace whose only way out is
//! sluice (issue 6; facts §10, §11).
//!
//! 1. Preconditions: CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_NET_RAW, `ip` and `nft` in
//!    trusted paths.
//!    Anything missing aborts with a message naming it; there is no degraded mode.
//! 2. Namespace `sluice-<id>` with a veth pair on a free private /30
//!    (`SLUICE_RUN_SUBNET`, default 10.200.0.0/16), default route via the host side.
//! 3. The proxy listens on the host-side address (port from `--listen`, default 3128).
//! 4. One atomic nftables transaction inside the namespace (fail closed), and the
//!    bypass monitor bound to its NFLOG group. If either fails, CMD never starts.
//! 5. CMD runs through `ip netns exec` with proxy, CA-trust and placeholder variables;
//!    `/etc/netns/<name>/resolv.conf` points DNS at an address the ruleset refuses.
//! 6. SIGINT/SIGTERM are forwarded; SIGHUP reloads the policy. When CMD exits, the
//!    proxy drains for up to 2 s, then everything is torn down and sluice exits with
//!    CMD's status (128 + signal number when CMD was killed by a signal).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sluice_proxy::audit::Audit;
use sluice_proxy::policy_store::PolicyStore;
use sluice_sandbox::bypass::{BypassEvent, BypassMonitor, ChildIdentity, MonitorConfig};
use sluice_sandbox::netns::{SandboxNetns, SubnetPool};
use sluice_sandbox::nft::Ruleset;
use sluice_sandbox::tools::{check_capabilities, Tools};
use sluice_sandbox::{send_signal, Signal};
use sluice_telemetry::{
    Action, Activity, Disposition, EventClass, OcsfEvent, ProcessInfo, Severity, Status,
};
use tokio::signal::unix::{signal, SignalKind};

use super::serve::{self, ProcfsResolver};
use crate::cli::RunArgs;

/// How long the proxy may keep serving the namespace after CMD exits.
const DRAIN: Duration = Duration::from_secs(2);
/// After a forwarded SIGINT/SIGTERM, CMD gets this long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// CA-trust variables, all pointing at the bundle (system roots + sandbox CA).
const CA_VARS: [&str; 9] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
    "DENO_CERT",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
    "AWS_CA_BUNDLE",
];

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs { serve: sargs, cmd } = args;
    check_capabilities()?;
    let tools = Tools::find()?;
    let pool = match std::env::var("SLUICE_RUN_SUBNET") {
        Ok(v) => v
            .parse::<SubnetPool>()
            .map_err(|e| anyhow::anyhow!("SLUICE_RUN_SUBNET={v}: {e}"))?,
        Err(_) => SubnetPool::default(),
    };

    let child_identity = Arc::new(ChildIdentity::new());
    let prepared = serve::prepare(
        &sargs,
        Some(ProcfsResolver::Child(Arc::clone(&child_identity))),
    )?;
    let bundle = prepared.state_dir.join("ca-bundle.pem");
    write_bundle(&bundle, &prepared.ca.bundle_pem().context("CA bundle")?)?;
    let placeholders: Vec<(String, String)> = prepared
        .credential_names
        .iter()
        .map(|n| (n.clone(), sluice_policy::placeholder::canonical(n)))
        .collect();
    let (store, audit, identity_mode) = (
        Arc::clone(&prepared.store),
        prepared.audit.clone(),
        prepared.identity_mode,
    );

    let mut netns = SandboxNetns::create(&tools, pool).context("creating the sandbox namespace")?;
    tracing::info!(netns = %netns.name, host = %netns.host_ip, sandbox = %netns.ns_ip, "Sandbox namespace created");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listen = SocketAddr::new(netns.host_ip.into(), sargs.listen.port());
    let proxy_addr = runtime.block_on(serve::start(prepared, &sargs, listen))?;

    let monitor_config = MonitorConfig::default();
    Ruleset {
        id: netns.id.clone(),
        proxy_ip: netns.host_ip,
        proxy_port: proxy_addr.port(),
        log_group: monitor_config.log_group,
    }
    .install(&netns, &tools.nft)
    .context("installing the nftables ruleset (CMD was not started)")?;
    let mut monitor = {
        let (audit, store) = (audit.clone(), Arc::clone(&store));
        BypassMonitor::start(
            &netns,
            monitor_config,
            Arc::clone(&child_identity),
            move |e| bypass_events(&audit, &store, &e),
        )
        .context("starting the bypass monitor (CMD was not started)")?
    };

    let env = child_env(proxy_addr, &bundle, &placeholders);
    let status = runtime.block_on(supervise(
        &netns,
        &cmd,
        env,
        &child_identity,
        &store,
        &audit,
        identity_mode,
    ));

    // Drain: let what is left in the namespace finish for a bounded time.
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && !netns.pids().is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    netns.signal_all(Signal::Kill);
    std::thread::sleep(Duration::from_millis(50));
    monitor.stop();
    audit.sink().flush();
    let teardown = netns.teardown();
    runtime.shutdown_timeout(Duration::from_millis(200));
    teardown.context("tearing down the sandbox")?;
    let status = status?;
    Ok(ExitCode::from(exit_code(status)))
}

/// `ExitStatus` → sluice's exit code: CMD's code, or 128 + signal.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

fn write_bundle(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    // Readable by a workload running as another user; it holds certificates only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}

/// The child's extra environment (facts §10.4).
fn child_env(
    proxy: SocketAddr,
    bundle: &Path,
    placeholders: &[(String, String)],
) -> Vec<(String, OsString)> {
    let url = format!("http://{proxy}");
    let mut env: Vec<(String, OsString)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "grpc_proxy",
    ]
    .iter()
    .map(|k| ((*k).to_owned(), url.clone().into()))
    .collect();
    for k in ["NO_PROXY", "no_proxy"] {
        env.push((k.to_owned(), "127.0.0.1,localhost,::1".into()));
    }
    env.push(("NODE_USE_ENV_PROXY".to_owned(), "1".into()));
    for k in CA_VARS {
        env.push((k.to_owned(), bundle.as_os_str().to_owned()));
    }
    for (name, placeholder) in placeholders {
        env.push((name.clone(), placeholder.into()));
    }
    env
}

/// Spawns CMD in the namespace and waits for it, forwarding signals.
async fn supervise(
    netns: &SandboxNetns,
    cmd: &[String],
    env: Vec<(String, OsString)>,
    child_identity: &ChildIdentity,
    store: &Arc<PolicyStore>,
    audit: &Audit,
    identity_mode: sluice_proxy::egress::IdentityMode,
) -> anyhow::Result<ExitStatus> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let prefix = netns.exec_prefix();
    let (program, rest) = prefix.split_first().context("ip netns exec")?;
    let mut child = std::process::Command::new(program)
        .args(rest)
        .args(cmd)
        .envs(env)
        .spawn()
        .with_context(|| format!("starting {}", cmd.join(" ")))?;
    let pid = child.id();
    child_identity.set_child(pid, &netns.ns_path());
    eprintln!(
        "sluice: running {:?} in namespace {}",
        cmd.join(" "),
        netns.name
    );
    // tokio's process support is not enabled in this workspace: wait on a thread.
    let (tx, mut exited) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-child".into())
        .spawn(move || {
            let _ = tx.send(child.wait());
        })
        .context("child waiter thread")?;
    let mut kill_at: Option<tokio::time::Instant> = None;
    loop {
        let kill_timer = async {
            match kill_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = &mut exited => return status.context("child waiter")?.context("waiting for the command"),
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

/// The OCSF pair for one bypass attempt (facts §9.2): 4001 Refuse + 2004 finding.
fn bypass_events(audit: &Audit, store: &PolicyStore, e: &BypassEvent) {
    let generation = store.snapshot().generation();
    let proto = e.flow.proto.name();
    let dst = e.flow.dst;
    let (binary, pid, ancestors) = match &e.process {
        Ok(p) => (p.exe.clone(), p.pid.to_string(), p.ancestors.clone()),
        Err(_) => ("-".to_owned(), "-".to_owned(), Vec::new()),
    };
    tracing::warn!(
        binary = %binary, dst = %dst, proto = %proto, hint = e.hint,
        "Blocked a connection that bypassed the proxy"
    );
    let with_actor = |ev: OcsfEvent| match &e.process {
        Ok(p) => ev.actor_process(ProcessInfo {
            path: p.exe.clone(),
            pid: p.pid,
            ancestors: p.ancestors.clone(),
        }),
        Err(_) => ev,
    };
    let mut refuse = with_actor(
        OcsfEvent::new(EventClass::NetworkActivity, Activity::Refuse)
            .action(Action::Denied)
            .disposition(Disposition::Blocked)
            .severity(Severity::Medium)
            .src_endpoint(e.flow.src.ip(), e.flow.src.port())
            .dst_endpoint(&dst.ip().to_string(), dst.port())
            .firewall_rule("bypass-detect", "nftables")
            .observation_point(3)
            .message(format!(
                "BYPASS_DETECT {dst} proto={proto} binary={binary} action=reject reason=direct connection bypassed HTTP CONNECT proxy"
            ))
            .policy_generation(generation)
            .unmapped("hint", e.hint.into()),
    );
    if let Err(why) = &e.process {
        refuse = refuse.status_detail(format!("process not identified: {why}"));
    }
    if e.suppressed > 0 {
        refuse = refuse.unmapped("suppressed_since_last", e.suppressed.into());
    }
    audit.sink().emit(&refuse);
    audit.sink().emit(
        &with_actor(
            OcsfEvent::new(EventClass::DetectionFinding, Activity::Create)
                .action(Action::Denied)
                .disposition(Disposition::Blocked)
                .severity(Severity::Medium)
                .status(Status::Failure)
                .alert(true)
                .src_endpoint(e.flow.src.ip(), e.flow.src.port())
                .dst_endpoint(&dst.ip().to_string(), dst.port())
                .message(format!(
                    "Proxy bypass detected: {binary} -> {dst} ({proto})"
                ))
                .policy_generation(generation)
                .unmapped("confidence", "High".into()),
        )
        .finding(
            "bypass-detect",
            "Proxy Bypass Detected",
            e.hint,
            [
                ("dst_addr", dst.ip().to_string()),
                ("dst_port", dst.port().to_string()),
                ("proto", proto.clone()),
                ("binary", binary),
                ("binary_pid", pid),
                ("ancestors", ancestors.join(",")),
            ],
        ),
    );
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

    #[test]
    fn env_has_proxy_trust_and_placeholders() {
        let env = child_env(
            "10.200.0.1:3128".parse().unwrap(),
            Path::new("/s/ca-bundle.pem"),
            &[(
                "GITHUB_TOKEN".into(),
                "sluice:resolve:env:GITHUB_TOKEN".into(),
            )],
        );
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(
            get("https_proxy").as_deref(),
            Some("http://10.200.0.1:3128")
        );
        assert_eq!(get("NO_PROXY").as_deref(), Some("127.0.0.1,localhost,::1"));
        assert_eq!(get("NODE_USE_ENV_PROXY").as_deref(), Some("1"));
        for k in CA_VARS {
            assert_eq!(get(k).as_deref(), Some("/s/ca-bundle.pem"), "{k}");
        }
        assert_eq!(
            get("GITHUB_TOKEN").as_deref(),
            Some("sluice:resolve:env:GITHUB_TOKEN")
        );
    }
}
