//! The egress fence of a Kubernetes pod (`sluice sidecar-init`): one nftables table
//! in the *current* network namespace (the pod's, shared by all its containers),
//! installed in one atomic `nft -f -` transaction, that sends the workload's sockets
//! to the `sluice serve` sidecar next to it and rejects everything else they send.
//! Sockets of other users (sluice itself, other sidecars) are not touched.
//!
//! ```text
//! table inet sluice_sidecar {
//!   chain nat_output {                       # only with policy DNS or capture
//!     type nat hook output priority -100; policy accept;
//!     meta skuid { <uids> } jump capture     # `!= { <uids> }` with --exclude-uid
//!   }
//!   chain capture {
//!     udp dport 53 redirect to :<dns>        # any resolver address, v4 and v6
//!     tcp dport 53 redirect to :<dns>
//!     ip daddr <v4-pool> tcp dport != 0 redirect to :<tport>
//!     ip6 daddr <v6-pool> tcp dport != 0 redirect to :<tport>
//!   }
//!   chain output {
//!     type filter hook output priority 0; policy accept;
//!     meta skuid { <uids> } jump fence
//!   }
//!   chain fence {
//!     ct state established,related accept                        # replies, accepted flows
//!     ct status dnat ip daddr 127.0.0.1 udp dport <dns> accept    # redirected above
//!     ct status dnat ip daddr 127.0.0.1 tcp dport { <dns>, <tport> } accept
//!     ct status dnat ip6 daddr ::1 udp dport <dns> accept
//!     ct status dnat ip6 daddr ::1 tcp dport { <dns>, <tport> } accept
//!     ip daddr 127.0.0.1 tcp dport <proxy> accept                 # HTTP(S)_PROXY
//!     ip6 daddr ::1 tcp dport <proxy> accept
//!     ip daddr 127.0.0.0/8 tcp dport { <allowed> } accept         # --allow-loopback-port
//!     ip6 daddr ::1 tcp dport { <allowed> } accept
//!     meta l4proto tcp counter reject with tcp reset              # everything else
//!     counter reject with icmpx admin-prohibited
//!   }
//! }
//! ```
//!
//! Differences from `sluice run`'s ruleset ([`crate::nft`]), and why:
//! - The fence matches the socket's owner (`meta skuid`), not a namespace: the pod's
//!   namespace is shared by the workload, sluice and the kubelet's probes. Packets
//!   without a socket (TCP resets, ICMP errors, neighbour discovery) match no owner
//!   and pass.
//! - DNS is redirected whatever the resolver address, loopback included: the
//!   listener is on the pod's own loopback, so there is no veth to route through.
//! - Refusals happen in the kernel (reset / ICMP admin-prohibited) and are counted
//!   (`nft list chain inet sluice_sidecar fence`), with no NFLOG monitor: the
//!   sidecar runs without CAP_NET_ADMIN, so nothing in the pod could read the log.
//!   Attempts are still audited when they reach sluice (DNS queries, captured
//!   connections, proxy requests).
//! - Loopback is fenced too: other containers' loopback listeners (sluice's metrics
//!   or console, a database proxy sidecar) would otherwise be a way around sluice.
//!
//! The script starts with `table` + `delete table`, so a second run replaces the
//! table in the same transaction (idempotent, and never a moment without a fence).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::netns::run_cmd;
use crate::tools::{trusted_tool, SandboxError};

/// The table's name (family `inet`).
pub const TABLE: &str = "sluice_sidecar";

/// Whose sockets are fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced {
    /// Sockets owned by these UIDs (the workload's).
    Uids(Vec<u32>),
    /// Sockets owned by any UID except these (sluice's, other trusted sidecars').
    AllBut(Vec<u32>),
}

impl Fenced {
    /// The nft match, e.g. `meta skuid { 1000 }`.
    fn matcher(&self) -> String {
        let (op, uids) = match self {
            Self::Uids(u) => ("", u),
            Self::AllBut(u) => ("!= ", u),
        };
        let list: Vec<String> = uids.iter().map(u32::to_string).collect();
        format!("meta skuid {op}{{ {} }}", list.join(", "))
    }

    /// In words, for the summary line.
    #[must_use]
    pub fn describe(&self) -> String {
        let list = |u: &[u32]| u.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        match self {
            Self::Uids(u) => format!("sockets of uid {}", list(u)),
            Self::AllBut(u) => format!("sockets of every uid but {}", list(u)),
        }
    }
}

/// Transparent capture: TCP to the synthetic pools goes to sluice's transparent
/// listener on `127.0.0.1:port` (and `[::1]:port` for the IPv6 pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarCapture {
    /// IPv4 pool of policy DNS's synthetic addresses.
    pub v4: Ipv4Net,
    /// IPv6 pool, when captured.
    pub v6: Option<Ipv6Net>,
    /// Port of the transparent listener.
    pub port: u16,
}

/// Parameters of the pod's fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarRuleset {
    /// Whose sockets are fenced (must not be empty).
    pub fenced: Fenced,
    /// Port of sluice's explicit proxy on the pod's loopback.
    pub proxy_port: u16,
    /// Port of policy DNS on the pod's loopback (UDP and TCP); `None`: DNS is
    /// fenced like everything else.
    pub dns_port: Option<u16>,
    /// Transparent capture of the synthetic pools.
    pub capture: Option<SidecarCapture>,
    /// Further loopback TCP ports the fenced sockets may reach (their own servers).
    pub loopback_ports: Vec<u16>,
}

/// `{ a, b }` for several ports, `a` for one.
fn port_set(ports: &[u16]) -> String {
    match ports {
        [one] => one.to_string(),
        many => format!(
            "{{ {} }}",
            many.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl SidecarRuleset {
    /// Whether the ruleset can be installed: someone is fenced and every port is set.
    ///
    /// # Errors
    /// What is wrong, as a message.
    pub fn check(&self) -> Result<(), String> {
        let empty = match &self.fenced {
            Fenced::Uids(u) | Fenced::AllBut(u) => u.is_empty(),
        };
        if empty {
            return Err("no uid given (--workload-uid or --exclude-uid)".into());
        }
        let mut ports = vec![("proxy", self.proxy_port)];
        ports.extend(self.dns_port.map(|p| ("DNS", p)));
        ports.extend(self.capture.map(|c| ("transparent", c.port)));
        if let Some((what, _)) = ports.iter().find(|(_, p)| *p == 0) {
            return Err(format!("the {what} port must not be 0"));
        }
        for (i, (a, pa)) in ports.iter().enumerate() {
            if let Some((b, _)) = ports[i + 1..].iter().find(|(_, pb)| pb == pa) {
                return Err(format!("the {a} and {b} ports are both {pa}"));
            }
        }
        Ok(())
    }

    /// The `nft -f` script (replaces any previous table of the same name).
    #[must_use]
    pub fn script(&self) -> String {
        let who = self.fenced.matcher();
        let mut out = format!(
            "# sluice sidecar-init: the egress fence of the pod ({}).\n\
             table inet {TABLE}\n\
             delete table inet {TABLE}\n\
             table inet {TABLE} {{\n",
            self.fenced.describe()
        );
        let mut capture = String::new();
        if let Some(p) = self.dns_port {
            for proto in ["udp", "tcp"] {
                let _ = writeln!(capture, "\t\t{proto} dport 53 redirect to :{p}");
            }
        }
        if let Some(c) = self.capture {
            let _ = writeln!(
                capture,
                "\t\tip daddr {} tcp dport != 0 redirect to :{}",
                c.v4.trunc(),
                c.port
            );
            if let Some(v6) = c.v6 {
                let _ = writeln!(
                    capture,
                    "\t\tip6 daddr {} tcp dport != 0 redirect to :{}",
                    v6.trunc(),
                    c.port
                );
            }
        }
        if !capture.is_empty() {
            let _ = write!(
                out,
                "\tchain nat_output {{\n\
                 \t\ttype nat hook output priority -100; policy accept;\n\
                 \t\t{who} jump capture\n\
                 \t}}\n\
                 \tchain capture {{\n\
                 {capture}\
                 \t}}\n"
            );
        }
        let mut fence = String::from("\t\tct state established,related accept\n");
        let mut redirected_tcp: Vec<u16> = self.dns_port.into_iter().collect();
        redirected_tcp.extend(self.capture.map(|c| c.port));
        for (family, lo) in [("ip", "127.0.0.1"), ("ip6", "::1")] {
            if let Some(p) = self.dns_port {
                let _ = writeln!(
                    fence,
                    "\t\tct status dnat {family} daddr {lo} udp dport {p} accept"
                );
            }
            if !redirected_tcp.is_empty() {
                let _ = writeln!(
                    fence,
                    "\t\tct status dnat {family} daddr {lo} tcp dport {} accept",
                    port_set(&redirected_tcp)
                );
            }
        }
        let _ = writeln!(
            fence,
            "\t\tip daddr 127.0.0.1 tcp dport {p} accept\n\
             \t\tip6 daddr ::1 tcp dport {p} accept",
            p = self.proxy_port
        );
        if !self.loopback_ports.is_empty() {
            let ports = port_set(&self.loopback_ports);
            let _ = writeln!(
                fence,
                "\t\tip daddr 127.0.0.0/8 tcp dport {ports} accept\n\
                 \t\tip6 daddr ::1 tcp dport {ports} accept"
            );
        }
        fence.push_str(
            "\t\tmeta l4proto tcp counter reject with tcp reset\n\
             \t\tcounter reject with icmpx admin-prohibited\n",
        );
        let _ = write!(
            out,
            "\tchain output {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\t{who} jump fence\n\
             \t}}\n\
             \tchain fence {{\n\
             {fence}\
             \t}}\n\
             }}\n"
        );
        out
    }

    /// Installs the table in the current network namespace (`nft -f -`).
    ///
    /// # Errors
    /// nft's error output (e.g. `Operation not permitted` without CAP_NET_ADMIN).
    pub fn install(&self, nft: &Path) -> Result<(), SandboxError> {
        self.check().map_err(SandboxError::Other)?;
        run_cmd(nft, &["-f", "-"], Some(&self.script())).map(drop)
    }
}

/// `nft`, from the trusted system directories.
///
/// # Errors
/// [`SandboxError::MissingTool`] naming the package.
pub fn find_nft() -> Result<PathBuf, SandboxError> {
    trusted_tool("nft").ok_or(SandboxError::MissingTool {
        command: "sidecar-init",
        tool: "nft",
        package: "nftables",
    })
}

/// Routes the synthetic IPv6 pool to loopback in the current namespace
/// (`ip -6 route replace local POOL dev lo`), so a connect to a synthetic address
/// gets past the route lookup in a pod without an IPv6 default route and reaches
/// the capture rule. Idempotent.
///
/// # Errors
/// `ip` missing, IPv6 disabled (no `::1` on `lo`), or the failing command.
pub fn route_local_v6(net: Ipv6Net) -> Result<(), SandboxError> {
    let ip = trusted_tool("ip").ok_or(SandboxError::MissingTool {
        command: "sidecar-init",
        tool: "ip",
        package: "iproute2",
    })?;
    let lo = run_cmd(&ip, &["-6", "addr", "show", "dev", "lo"], None).unwrap_or_default();
    if !lo.split_whitespace().any(|w| w == "::1/128") {
        return Err(SandboxError::Other(format!(
            "IPv6 is disabled in this network namespace (no ::1 on lo): \
             the synthetic IPv6 pool {net} is not routed"
        )));
    }
    let net = net.trunc().to_string();
    run_cmd(
        &ip,
        &["-6", "route", "replace", "local", &net, "dev", "lo"],
        None,
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::assert_in_order;

    fn base() -> SidecarRuleset {
        SidecarRuleset {
            fenced: Fenced::Uids(vec![1000]),
            proxy_port: 3128,
            dns_port: Some(5353),
            capture: Some(SidecarCapture {
                v4: "198.18.0.0/15".parse().unwrap(),
                v6: Some("fd23:6f70:656e::/48".parse().unwrap()),
                port: 15001,
            }),
            loopback_ports: Vec::new(),
        }
    }

    #[test]
    fn script_has_every_rule_in_order() {
        let s = base().script();
        assert_in_order(
            &s,
            &[
                "table inet sluice_sidecar\n",
                "delete table inet sluice_sidecar\n",
                "table inet sluice_sidecar {",
                "chain nat_output {",
                "type nat hook output priority -100; policy accept;",
                "meta skuid { 1000 } jump capture",
                "chain capture {",
                "udp dport 53 redirect to :5353",
                "tcp dport 53 redirect to :5353",
                "ip daddr 198.18.0.0/15 tcp dport != 0 redirect to :15001",
                "ip6 daddr fd23:6f70:656e::/48 tcp dport != 0 redirect to :15001",
                "chain output {",
                "type filter hook output priority 0; policy accept;",
                "meta skuid { 1000 } jump fence",
                "chain fence {",
                "ct state established,related accept",
                "ct status dnat ip daddr 127.0.0.1 udp dport 5353 accept",
                "ct status dnat ip daddr 127.0.0.1 tcp dport { 5353, 15001 } accept",
                "ct status dnat ip6 daddr ::1 udp dport 5353 accept",
                "ct status dnat ip6 daddr ::1 tcp dport { 5353, 15001 } accept",
                "ip daddr 127.0.0.1 tcp dport 3128 accept",
                "ip6 daddr ::1 tcp dport 3128 accept",
                "meta l4proto tcp counter reject with tcp reset",
                "counter reject with icmpx admin-prohibited",
            ],
        );
        assert_eq!(s.matches("chain ").count(), 4, "{s}");
        assert_eq!(s.matches('{').count(), s.matches('}').count(), "{s}");
        assert!(!s.contains("127.0.0.0/8"), "no extra loopback port: {s}");
    }

    #[test]
    fn exclude_mode_fences_every_other_uid() {
        let s = SidecarRuleset {
            fenced: Fenced::AllBut(vec![1337, 0]),
            ..base()
        }
        .script();
        assert!(s.contains("meta skuid != { 1337, 0 } jump capture"), "{s}");
        assert!(s.contains("meta skuid != { 1337, 0 } jump fence"), "{s}");
    }

    #[test]
    fn without_dns_or_capture_there_is_no_nat_chain() {
        let s = SidecarRuleset {
            dns_port: None,
            capture: None,
            loopback_ports: vec![8080, 8081],
            ..base()
        }
        .script();
        assert!(!s.contains("nat"), "{s}");
        assert!(!s.contains("redirect"), "{s}");
        assert!(!s.contains("ct status dnat"), "{s}");
        assert_in_order(
            &s,
            &[
                "chain fence {",
                "ct state established,related accept",
                "ip daddr 127.0.0.1 tcp dport 3128 accept",
                "ip daddr 127.0.0.0/8 tcp dport { 8080, 8081 } accept",
                "ip6 daddr ::1 tcp dport { 8080, 8081 } accept",
                "meta l4proto tcp counter reject with tcp reset",
            ],
        );
    }

    #[test]
    fn dns_alone_and_capture_without_v6() {
        let s = SidecarRuleset {
            capture: None,
            ..base()
        }
        .script();
        assert!(s.contains("ct status dnat ip daddr 127.0.0.1 tcp dport 5353 accept"));
        assert!(!s.contains("15001"), "{s}");
        let s = SidecarRuleset {
            capture: Some(SidecarCapture {
                // Host bits are cut: nft needs the network address.
                v4: "198.18.3.4/15".parse().unwrap(),
                v6: None,
                port: 15001,
            }),
            ..base()
        }
        .script();
        assert!(s.contains("ip daddr 198.18.0.0/15 tcp dport != 0 redirect to :15001"));
        assert!(!s.contains("fd23"), "{s}");
    }

    #[test]
    fn check_refuses_nobody_and_clashing_ports() {
        assert!(base().check().is_ok());
        let none = SidecarRuleset {
            fenced: Fenced::Uids(Vec::new()),
            ..base()
        };
        assert!(none.check().unwrap_err().contains("no uid"));
        let clash = SidecarRuleset {
            dns_port: Some(3128),
            ..base()
        };
        assert!(clash.check().unwrap_err().contains("both 3128"));
        let zero = SidecarRuleset {
            proxy_port: 0,
            ..base()
        };
        assert!(zero.check().unwrap_err().contains("must not be 0"));
    }
}
