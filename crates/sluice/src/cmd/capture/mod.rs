//! Policy DNS and transparent capture (design §6.1), shared by `sluice run`
//! (sockets inside the sandbox namespace it creates) and `sluice serve` as a
//! Kubernetes sidecar (sockets in the pod's namespace, which it shares with the
//! workload; `docs/kubernetes.md`): the synthetic mapping table both surfaces
//! share, policy DNS naming the sender of every refused query, and the
//! transparent listener over sockets bound where the redirect happens.

pub(crate) mod events;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_proxy::adapter::policy_dns::eligible::TransparentMode;
use sluice_proxy::adapter::policy_dns::synthetic::{MappingTable, DEFAULT_CAPACITY};
use sluice_proxy::adapter::policy_dns::{PolicyDns, QueryObserver, RefusedQuery, Synthetic};
use sluice_proxy::adapter::{Listener, OriginalDst, PolicyDnsListener, TransparentListener};
use sluice_proxy::audit::Audit;
use sluice_proxy::policy_store::PolicyStore;
use sluice_sandbox::bypass::{ChildIdentity, FlowReporter, MonitorConfig};
use sluice_sandbox::netfilter::{Flow, L4};

use crate::cli::{CaptureArgs, SidecarListenArgs};

/// The synthetic half of policy DNS (`None` with `--transparent off`): which
/// names get addresses, and the mapping table the transparent listener reads.
pub(crate) fn synthetic(args: &CaptureArgs) -> Option<Synthetic> {
    (args.transparent != TransparentMode::Off).then(|| Synthetic {
        mode: args.transparent,
        table: Arc::new(MappingTable::new(
            args.synthetic_v4,
            args.synthetic_v6,
            Duration::from_secs(args.synthetic_ttl),
            DEFAULT_CAPACITY,
        )),
    })
}

/// Policy DNS on `addr` (UDP and TCP): eligible names answered from
/// `synthetic`, every other query refused at once with its sender named (by
/// `reporter`, while the resolver's socket is still open) in a bypass event.
/// The listener is served by the proxy with its other surfaces.
///
/// # Errors
/// The bind error.
pub(crate) async fn policy_dns(
    addr: SocketAddr,
    reporter: Arc<FlowReporter>,
    audit: &Audit,
    store: &Arc<PolicyStore>,
    synthetic: Option<Synthetic>,
) -> std::io::Result<Box<dyn Listener>> {
    let dns = PolicyDns::bind(addr).await?;
    let (audit, store) = (audit.clone(), Arc::clone(store));
    let observer: QueryObserver = Arc::new(move |q: RefusedQuery| {
        // Over the rate limit: no attribution, the answer goes out at once.
        if !reporter.admit() {
            return Box::pin(async {});
        }
        let (reporter, audit, store) = (Arc::clone(&reporter), audit.clone(), Arc::clone(&store));
        let flow = Flow {
            proto: if q.tcp { L4::Tcp } else { L4::Udp },
            src: q.peer,
            dst: q.local,
        };
        // Attribution reads /proc: off the async workers. The answer waits for
        // it, so the resolver's socket is still there to be found.
        let lookup = tokio::task::spawn_blocking(move || {
            let event = reporter.attribute(flow);
            events::bypass_events(&audit, &store, &event, Some(&q.name));
        });
        Box::pin(async move {
            let _ = lookup.await;
        })
    });
    let listener = PolicyDnsListener::new(dns, observer);
    Ok(Box::new(match synthetic {
        Some(s) => listener.with_synthetic(s),
        None => listener,
    }))
}

/// The transparent listener over `sockets` (bound where the firewall's
/// redirect happens, so `SO_ORIGINAL_DST` finds the connection in that
/// namespace's conntrack table), against `synthetic`'s mappings. Call it
/// inside the runtime (the sockets are registered with it).
///
/// # Errors
/// Registering a socket with the runtime.
pub(crate) fn transparent_listener(
    sockets: Vec<std::net::TcpListener>,
    synthetic: Synthetic,
) -> std::io::Result<Box<dyn Listener>> {
    let sockets = sockets
        .into_iter()
        .map(tokio::net::TcpListener::from_std)
        .collect::<std::io::Result<Vec<_>>>()?;
    let original_dst: OriginalDst =
        Arc::new(|s: &tokio::net::TcpStream| sluice_sandbox::transparent::original_dst(s));
    Ok(Box::new(TransparentListener::new(
        sockets,
        synthetic,
        original_dst,
    )))
}

/// A synthetic pool must not cover an address the workload needs (`ours`:
/// loopback, the proxy's) and must have at least 16 addresses.
pub(crate) fn check_pool(pool: ipnet::IpNet, ours: &[IpAddr]) -> anyhow::Result<()> {
    if let Some(ip) = ours.iter().find(|ip| pool.contains(*ip)) {
        anyhow::bail!("synthetic pool {pool} contains {ip}, an address the sandbox needs");
    }
    if pool.prefix_len() > pool.max_prefix_len().saturating_sub(4) {
        anyhow::bail!("synthetic pool {pool} is too small (at least 16 addresses)");
    }
    Ok(())
}

/// The other family's loopback on `port`, for a loopback `addr`: the fence
/// redirects IPv4 to `127.0.0.1` and IPv6 to `[::1]`.
fn companion(addr: SocketAddr, port: u16) -> Option<SocketAddr> {
    match addr.ip() {
        IpAddr::V4(a) if a.is_loopback() => Some(SocketAddr::from((Ipv6Addr::LOCALHOST, port))),
        IpAddr::V6(a) if a.is_loopback() => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        _ => None,
    }
}

/// `serve`'s sidecar listeners (`--dns-listen`, `--transparent-listen`), bound
/// in this process's namespace (the pod's), with what to print about each.
/// Synthetic answers only when the transparent listener runs (an answer
/// nobody captures would be a dead address). Empty without `--dns-listen`.
///
/// # Errors
/// A pool that covers loopback, or a listener that cannot be bound on the
/// address given (its other-family companion only warns).
pub(crate) async fn sidecar_listeners(
    args: &SidecarListenArgs,
    audit: &Audit,
    store: &Arc<PolicyStore>,
) -> anyhow::Result<(Vec<Box<dyn Listener>>, Vec<String>)> {
    let (mut listeners, mut lines) = (Vec::new(), Vec::new());
    let Some(dns_addr) = args.dns_listen else {
        return Ok((listeners, lines));
    };
    let synthetic = args
        .transparent_listen
        .and_then(|_| synthetic(&args.capture));
    if let Some(s) = &synthetic {
        let (v4, v6) = s.table.pools();
        let mut ours = vec![
            IpAddr::from(Ipv4Addr::LOCALHOST),
            IpAddr::from(Ipv6Addr::LOCALHOST),
            dns_addr.ip(),
        ];
        ours.extend(args.transparent_listen.map(|a| a.ip()));
        check_pool(v4.into(), &ours)?;
        check_pool(v6.into(), &ours)?;
    }
    // Refused queries are attributed in this process's own view: the workload
    // shares the pod's network namespace (and, with shareProcessNamespace,
    // its PID namespace).
    let reporter = Arc::new(FlowReporter::new(
        Arc::new(ChildIdentity::own_view()),
        MonitorConfig::default().max_per_sec,
    ));
    let dns = policy_dns(
        dns_addr,
        Arc::clone(&reporter),
        audit,
        store,
        synthetic.clone(),
    )
    .await
    .with_context(|| format!("binding policy DNS on {dns_addr}"))?;
    let bound = dns.local_addr()?;
    let mut dns_addrs = vec![bound.to_string()];
    listeners.push(dns);
    if let Some(other) = companion(dns_addr, bound.port()) {
        match policy_dns(other, reporter, audit, store, synthetic.clone()).await {
            Ok(l) => {
                dns_addrs.push(other.to_string());
                listeners.push(l);
            }
            Err(e) => {
                tracing::warn!(addr = %other, error = %e, "Policy DNS not served on the other loopback");
            }
        }
    }
    let answers = match (&synthetic, args.capture.transparent) {
        (Some(_), TransparentMode::All) => "synthetic answers for every endpoint name",
        (Some(_), _) => "synthetic answers for tcp, redis and postgres endpoints",
        (None, _) => "every query refused",
    };
    lines.push(format!(
        "sluice: policy DNS on {} ({answers})",
        dns_addrs.join(" and ")
    ));
    if let (Some(addr), Some(s)) = (args.transparent_listen, synthetic) {
        let first = sluice_sandbox::transparent::bind(addr)
            .with_context(|| format!("binding the transparent listener on {addr}"))?;
        let port = first.local_addr()?.port();
        let mut bound = vec![SocketAddr::new(addr.ip(), port).to_string()];
        let mut sockets = vec![first];
        if let Some(other) = companion(addr, port) {
            match sluice_sandbox::transparent::bind(other) {
                Ok(l) => {
                    bound.push(other.to_string());
                    sockets.push(l);
                }
                Err(e) => {
                    tracing::warn!(addr = %other, error = %e, "Transparent listener not on the other loopback: synthetic addresses of that family will not be reachable");
                }
            }
        }
        listeners.push(transparent_listener(sockets, s)?);
        lines.push(format!(
            "sluice: transparent capture on {}",
            bound.join(" and ")
        ));
    }
    Ok((listeners, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_must_miss_our_addresses_and_be_big_enough() {
        let lo = [IpAddr::from(Ipv4Addr::LOCALHOST)];
        assert!(check_pool("198.18.0.0/15".parse().unwrap(), &lo).is_ok());
        let err = check_pool("127.0.0.0/8".parse().unwrap(), &lo).unwrap_err();
        assert!(err.to_string().contains("contains 127.0.0.1"), "{err}");
        let err = check_pool("198.18.0.0/29".parse().unwrap(), &lo).unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }

    #[test]
    fn loopback_companions() {
        let v4: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert_eq!(companion(v4, 5353), Some("[::1]:5353".parse().unwrap()));
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        assert_eq!(companion(v6, 7), Some("127.0.0.1:7".parse().unwrap()));
        assert_eq!(companion("0.0.0.0:53".parse().unwrap(), 53), None);
    }
}
