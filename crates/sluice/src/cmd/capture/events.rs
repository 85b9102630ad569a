//! The audit events of bypass attempts: packets the NFLOG monitor saw refused
//! (`run`), and DNS queries policy DNS refused (`run`, and `serve` as a sidecar).

use sluice_proxy::audit::Audit;
use sluice_proxy::policy_store::PolicyStore;
use sluice_sandbox::bypass::BypassEvent;
use sluice_telemetry::{
    Action, Activity, Disposition, EventClass, OcsfEvent, ProcessInfo, Severity, Status,
};

/// The OCSF pair for one bypass attempt (facts §9.2): 4001 Refuse + 2004 finding.
/// `query`: the name of a DNS query that policy DNS refused (the flow is then
/// the query's), recorded as `unmapped.dns_query`.
pub(crate) fn bypass_events(
    audit: &Audit,
    store: &PolicyStore,
    e: &BypassEvent,
    query: Option<&str>,
) {
    let generation = store.snapshot().generation();
    let proto = e.flow.proto.name();
    let dst = e.flow.dst;
    let (binary, pid, ancestors) = match &e.process {
        Ok(p) => (p.exe.clone(), p.pid.to_string(), p.ancestors.clone()),
        Err(_) => ("-".to_owned(), "-".to_owned(), Vec::new()),
    };
    // The terminal line comes from the run's reporter (it sees the event below).
    tracing::debug!(
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
    if let Some(n) = e.process.as_ref().ok().and_then(|p| p.sandbox_pid) {
        refuse = refuse.unmapped("sandbox_pid", n.into());
    }
    if e.suppressed > 0 {
        refuse = refuse.unmapped("suppressed_since_last", e.suppressed.into());
    }
    if let Some(name) = query {
        refuse = refuse.unmapped("dns_query", name.into());
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
