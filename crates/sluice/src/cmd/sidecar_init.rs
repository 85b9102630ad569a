//! `sluice sidecar-init`: the init step of the Kubernetes sidecar shape. Installs
//! the pod's egress fence (`sluice_sandbox::sidecar`) in the current network
//! namespace, which every container of the pod shares; the `sluice serve`
//! sidecar then answers what the fence redirects. See `docs/kubernetes.md`.

use std::process::ExitCode;

use anyhow::Context as _;
use sluice_sandbox::sidecar::{self, Fenced, SidecarCapture, SidecarRuleset};

use crate::cli::SidecarInitArgs;

/// The ruleset `args` ask for.
fn ruleset(args: &SidecarInitArgs) -> SidecarRuleset {
    let fenced = if args.exclude_uid.is_empty() {
        Fenced::Uids(args.workload_uid.clone())
    } else {
        Fenced::AllBut(args.exclude_uid.clone())
    };
    let (dns_port, capture) = if args.proxy_only {
        (None, None)
    } else {
        (
            Some(args.dns_port),
            Some(SidecarCapture {
                v4: args.synthetic_v4,
                v6: Some(args.synthetic_v6),
                port: args.transparent_port,
            }),
        )
    };
    SidecarRuleset {
        fenced,
        proxy_port: args.proxy_port,
        dns_port,
        capture,
        loopback_ports: args.allow_loopback_port.clone(),
    }
}

pub(crate) fn run(args: &SidecarInitArgs) -> anyhow::Result<ExitCode> {
    let rules = ruleset(args);
    rules
        .check()
        .map_err(|e| anyhow::anyhow!("sidecar-init: {e}"))?;
    if args.dry_run {
        print!("{}", rules.script());
        if let Some(v6) = rules.capture.and_then(|c| c.v6) {
            println!("# and, where IPv6 is up: ip -6 route replace local {v6} dev lo");
        }
        return Ok(ExitCode::SUCCESS);
    }
    sluice_sandbox::tools::check_sidecar_capabilities()?;
    let nft = sidecar::find_nft()?;
    rules.install(&nft).with_context(|| {
        format!(
            "installing table inet {} (nothing was changed)",
            sidecar::TABLE
        )
    })?;
    // A pod without an IPv6 default route still reaches the synthetic IPv6
    // pool (then captured); without IPv6 at all, AAAA answers stay unused.
    if let Some(v6) = rules.capture.and_then(|c| c.v6) {
        if let Err(e) = sidecar::route_local_v6(v6) {
            eprintln!("sluice: note: {e}; IPv4 capture is unaffected");
        }
    }
    let redirects = match (rules.dns_port, rules.capture) {
        (Some(dns), Some(c)) => format!(
            "DNS to 127.0.0.1:{dns}, synthetic pools {} and {} to port {}, ",
            c.v4.trunc(),
            c.v6.map_or_else(|| "-".to_owned(), |v| v.trunc().to_string()),
            c.port
        ),
        _ => String::new(),
    };
    eprintln!(
        "sluice: installed table inet {} for {}: {redirects}proxy 127.0.0.1:{}, everything else refused",
        sidecar::TABLE,
        rules.fenced.describe(),
        rules.proxy_port
    );
    Ok(ExitCode::SUCCESS)
}
