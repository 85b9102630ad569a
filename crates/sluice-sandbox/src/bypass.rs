//! The bypass monitor: attributes every packet the sandbox tries to send around the
//! proxy to a process, and makes the sender fail at once.
//!
//! The ruleset ([`crate::nft`]) logs such packets to an NFLOG group. IPv4 TCP SYNs and
//! UDP datagrams are dropped rather than rejected in the kernel, because a rejected
//! SYN takes its socket with it before anyone could read `/proc/net/tcp`. The monitor
//! reads each logged packet from a netlink socket opened inside the namespace, parses
//! its addresses, looks the flow up in the child's `/proc/<pid>/net/{tcp,udp}{,6}` view
//! ([`ProcfsIdentity::resolve_flow`]) while the socket still exists, and then injects
//! the refusal the kernel would have sent (a TCP RST|ACK, or an ICMP port unreachable)
//! through a raw socket in the namespace, so `connect()` fails with ECONNREFUSED within
//! milliseconds. IPv6 and stray segments are rejected by the kernel directly (their
//! attribution is best effort). Attribution and events are rate-limited; refusals are
//! always injected. Over the limit the next event reports how many were skipped.
//!
//! If the monitor is not running, dropped packets are never answered: bypass attempts
//! then time out instead of failing fast, but nothing leaves the namespace.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ebpf::ConnectMap;
use crate::identity::{FlowProto, ProcessIdentity, ProcfsIdentity};
use crate::netfilter::{self, Flow, Incoming, L4};
use crate::netns::SandboxNetns;
use crate::sys;
use crate::tools::SandboxError;

/// Default NFLOG group (log instances are per network namespace).
pub const DEFAULT_LOG_GROUP: u16 = 4001;
/// Default attribution rate limit, events per second.
pub const DEFAULT_MAX_PER_SEC: u32 = 10;

/// Process identity anchored at the sandbox's child, set once the child exists.
/// Shared by the proxy (connections arriving from the namespace) and the monitor.
#[derive(Debug, Default)]
pub struct ChildIdentity {
    cell: OnceLock<ProcfsIdentity>,
    /// Loaded before the child exists, so that [`Self::set_child`] is quick
    /// (the child may connect at once).
    connect_map: Option<Arc<ConnectMap>>,
}

impl ChildIdentity {
    /// An identity with no child yet: every lookup fails (deny).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// [`new`](Self::new), with the connect-time map the child's lookups
    /// will use ([`ProcfsIdentity::with_connect_map`]).
    #[must_use]
    pub fn with_connect_map(map: Option<Arc<ConnectMap>>) -> Self {
        Self {
            cell: OnceLock::new(),
            connect_map: map,
        }
    }

    /// An identity anchored at this process's own view from the start
    /// (`/proc/self/net`, ancestry to PID 1): `sluice serve` as a Kubernetes
    /// sidecar, whose workload shares its network namespace (and, with
    /// `shareProcessNamespace`, its PID namespace).
    #[must_use]
    pub fn own_view() -> Self {
        // No connect-time map: this view attributes refused flows
        // (`resolve_flow`, found in the socket tables, which carry no
        // cookie); the sidecar's proxy connections go through `serve`'s own
        // resolver, which has the map.
        let cell = OnceLock::new();
        let _ = cell.set(
            ProcfsIdentity::new("/proc", None)
                .with_socket_diag()
                .skip_process(std::process::id()),
        );
        Self {
            cell,
            connect_map: None,
        }
    }

    /// Anchors lookups at `pid`, the init of the sandbox's PID namespace
    /// (its `/proc/<pid>/net` view; ancestry stops there; owners are looked
    /// for in its tree first, see [`ProcfsIdentity::namespace_init`]);
    /// sockets are looked up by sock_diag in the namespace at `ns_path` (the child's,
    /// which it may not have joined yet). Only the first call has an effect.
    pub fn set_child(&self, pid: u32, ns_path: &std::path::Path) {
        let identity = ProcfsIdentity::new("/proc", Some(pid))
            .with_socket_diag_at(Some(ns_path))
            .with_connect_map(self.connect_map.clone())
            .skip_process(std::process::id())
            .namespace_init();
        identity.prehash_anchor();
        let _ = self.cell.set(identity);
    }

    /// The anchored resolver, if the child has been spawned.
    #[must_use]
    pub fn get(&self) -> Option<&ProcfsIdentity> {
        self.cell.get()
    }
}

/// One attributed bypass attempt.
#[derive(Debug, Clone)]
pub struct BypassEvent {
    /// Protocol and addresses of the refused packet.
    pub flow: Flow,
    /// The process that sent it, or why it could not be determined.
    pub process: Result<ProcessIdentity, String>,
    /// What the workload should do instead.
    pub hint: &'static str,
    /// Packets refused without an event (rate limit) since the previous event.
    pub suppressed: u64,
}

/// The remediation hint for a refused flow (DNS, UDP, or "honor the proxy").
#[must_use]
pub fn hint(flow: &Flow) -> &'static str {
    match flow.proto {
        L4::Udp if flow.dst.port() == 53 => {
            "DNS is not reachable from the sandbox: let the proxy resolve names (use HTTP_PROXY/HTTPS_PROXY)"
        }
        L4::Udp => "UDP cannot leave the sandbox: only HTTP(S) through the proxy is allowed",
        _ => "ensure the process honors HTTP_PROXY/HTTPS_PROXY; for Node.js set NODE_USE_ENV_PROXY=1",
    }
}

/// Token bucket: `rate` per second, burst `rate`.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Attribution of flows that reach sluice itself instead of the firewall (the
/// DNS queries policy DNS refuses), rate-limited like the monitor's events.
#[derive(Debug)]
pub struct FlowReporter {
    identity: Arc<ChildIdentity>,
    limit: std::sync::Mutex<RateLimit>,
    suppressed: std::sync::atomic::AtomicU64,
}

impl FlowReporter {
    /// At most `max_per_sec` attributed events per second.
    #[must_use]
    pub fn new(identity: Arc<ChildIdentity>, max_per_sec: u32) -> Self {
        Self {
            identity,
            limit: std::sync::Mutex::new(RateLimit::new(max_per_sec)),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes a slot under the rate limit: `false` over it (counted in the
    /// next event's `suppressed`). Quick; call it before [`Self::attribute`]
    /// so flows over the limit cost no blocking work at all.
    #[must_use]
    pub fn admit(&self) -> bool {
        let allowed = self
            .limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow(Instant::now());
        if !allowed {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// The event for an admitted `flow` with its sender named. Blocking:
    /// reads /proc.
    #[must_use]
    pub fn attribute(&self, flow: Flow) -> BypassEvent {
        BypassEvent {
            flow,
            process: attribute(&self.identity, &flow),
            hint: hint(&flow),
            suppressed: self.suppressed.swap(0, Ordering::Relaxed),
        }
    }
}

/// Monitor settings.
#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    /// NFLOG group (must match the ruleset).
    pub log_group: u16,
    /// Attributed events per second at most.
    pub max_per_sec: u32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            log_group: DEFAULT_LOG_GROUP,
            max_per_sec: DEFAULT_MAX_PER_SEC,
        }
    }
}

/// A running monitor thread; stopped on drop.
#[derive(Debug)]
pub struct BypassMonitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn expect_ack(fd: &OwnedFd, seq: u32) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let n = sys::recv(fd, &mut buf)?;
        for msg in netfilter::parse(&buf[..n]) {
            if let Incoming::Ack { seq: s, errno } = msg {
                if s == seq {
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::from_raw_os_error(errno))
                    };
                }
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no netlink acknowledgement",
    ))
}

impl BypassMonitor {
    /// Binds the log group inside `netns` and starts reading it. Must succeed before
    /// the sandboxed command starts (otherwise bypass attempts would hang, not fail fast).
    ///
    /// # Errors
    /// The netlink error (e.g. `nfnetlink_log` unavailable, or the group taken).
    pub fn start(
        netns: &SandboxNetns,
        config: MonitorConfig,
        identity: Arc<ChildIdentity>,
        mut on_event: impl FnMut(BypassEvent) + Send + 'static,
    ) -> Result<Self, SandboxError> {
        let group = config.log_group;
        let (fd, raw) = sys::in_netns(&netns.ns_path(), move || {
            let fd = sys::netfilter_socket()?;
            sys::set_recv_timeout(&fd, Duration::from_secs(2))?;
            sys::send(&fd, &netfilter::log_bind(group, 1))?;
            expect_ack(&fd, 1)?;
            sys::send(&fd, &netfilter::log_mode(group, 2))?;
            expect_ack(&fd, 2)?;
            sys::set_recv_timeout(&fd, Duration::from_millis(200))?;
            let raw = sys::raw_ipv4_socket()?;
            Ok((fd, raw))
        })
        .map_err(|e| {
            SandboxError::Other(format!(
                "bypass monitor: binding NFLOG group {group} in {}: {e} (needs CAP_NET_ADMIN, CAP_NET_RAW and nfnetlink_log)",
                netns.name
            ))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-bypass".into())
            .spawn(move || {
                let mut limit = RateLimit::new(config.max_per_sec);
                let mut suppressed = 0u64;
                let mut buf = vec![0u8; 65536];
                while !stop_flag.load(Ordering::Relaxed) {
                    let n = match sys::recv(&fd, &mut buf) {
                        Ok(n) => n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) || e.raw_os_error() == Some(libc::ENOBUFS) =>
                        {
                            continue
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "Bypass monitor stopped reading");
                            return;
                        }
                    };
                    for msg in netfilter::parse(&buf[..n]) {
                        let Incoming::Packet { payload } = msg else {
                            continue;
                        };
                        let event = match netfilter::parse_flow(payload) {
                            Some(flow) if limit.allow(Instant::now()) => Some(BypassEvent {
                                flow,
                                process: attribute(&identity, &flow),
                                hint: hint(&flow),
                                suppressed: std::mem::take(&mut suppressed),
                            }),
                            _ => {
                                suppressed += 1;
                                None
                            }
                        };
                        if let Some((to, refusal)) = netfilter::refusal_v4(payload) {
                            if let Err(e) = sys::send_ipv4(&raw, &refusal, to) {
                                tracing::warn!(error = %e, "Injecting a bypass refusal failed");
                            }
                        }
                        if let Some(event) = event {
                            on_event(event);
                        }
                    }
                }
            })
            .map_err(|e| SandboxError::Other(format!("bypass monitor thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops reading and waits for the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BypassMonitor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn attribute(identity: &ChildIdentity, flow: &Flow) -> Result<ProcessIdentity, String> {
    let proto = match flow.proto {
        L4::Tcp => FlowProto::Tcp,
        L4::Udp => FlowProto::Udp,
        L4::Other(n) => return Err(format!("protocol {n} has no socket table")),
    };
    let resolver = identity
        .get()
        .ok_or_else(|| "sandbox process not spawned yet".to_owned())?;
    let src: SocketAddr = flow.src;
    resolver
        .resolve_flow(proto, src, flow.dst)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_burst_then_refills() {
        let mut r = RateLimit::new(10);
        let t0 = r.last;
        assert_eq!((0..20).filter(|_| r.allow(t0)).count(), 10);
        assert!(r.allow(t0 + Duration::from_millis(150)));
        assert!(!r.allow(t0 + Duration::from_millis(160)));
    }

    #[test]
    fn hints_by_protocol() {
        let f = |proto, port| Flow {
            proto,
            src: "10.0.0.2:1".parse().unwrap(),
            dst: SocketAddr::new("10.0.0.1".parse().unwrap(), port),
        };
        assert!(hint(&f(L4::Udp, 53)).contains("DNS"));
        assert!(hint(&f(L4::Udp, 123)).contains("UDP"));
        assert!(hint(&f(L4::Tcp, 443)).contains("NODE_USE_ENV_PROXY=1"));
    }
}
