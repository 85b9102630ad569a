//! The fail-closed nftables ruleset of a sandbox namespace, installed in one atomic
//! `nft -f -` transaction (all rules or none) inside the namespace.
//!
//! ```text
//! table inet sluice_<id> {
//!   chain nat_output {                          # only with capture or policy DNS
//!     type nat hook output priority -100; policy accept;
//!     # capture: TCP to a synthetic pool goes to the transparent listener, which
//!     # listens on 127.0.0.1:<cport> and [::1]:<cport> inside the namespace
//!     ip daddr <v4-pool> tcp dport != 0 redirect to :<cport>
//!     ip6 daddr <v6-pool> tcp dport != 0 redirect to :<cport>   # when a v6 pool is set
//!     # policy DNS: resolvers the client hard-coded are answered by policy DNS too
//!     ip daddr != { <host-ip>, 127.0.0.0/8 } udp dport 53 dnat ip to <host-ip>:<dns>
//!     ip daddr != { <host-ip>, 127.0.0.0/8 } tcp dport 53 dnat ip to <host-ip>:<dns>
//!   }
//!   chain output {                              # every packet the sandbox sends
//!     type filter hook output priority 0; policy accept;
//!     oifname "lo" accept                       # loopback stays usable
//!     ct status dnat ip daddr 127.0.0.1 tcp dport <cport> accept  # captured (capture only)
//!     ct status dnat ip6 daddr ::1 tcp dport <cport> accept       # same, v6 pool set
//!     ct state established,related accept       # replies on accepted flows
//!     ip daddr <host-ip> tcp dport <port> accept  # the proxy: the only way out
//!     ip daddr <host-ip> udp dport <dns> accept   # policy DNS (when it runs)
//!     ip daddr <host-ip> tcp dport <dns> accept   # policy DNS over TCP
//!     # IPv4 TCP SYN and UDP: logged to NFLOG and dropped; the bypass monitor
//!     # attributes the still-live socket, then injects a TCP reset / ICMP port
//!     # unreachable, so the client fails at once.
//!     meta nfproto ipv4 tcp flags & (syn | ack) == syn log group <g> drop
//!     meta nfproto ipv4 meta l4proto udp log group <g> drop
//!     # Everything else (IPv6, stray TCP segments): logged and rejected in the kernel.
//!     meta l4proto tcp log group <g> reject with tcp reset
//!     meta l4proto udp log group <g> reject with icmpx port-unreachable
//!   }
//! }
//! ```
//!
//! Why drop-then-inject for IPv4: a SYN rejected in the kernel takes its socket with it
//! (reset, unhashed) before any reader of the log could look it up in
//! `/proc/<pid>/net/tcp`, so the process could never be named. If the monitor is not
//! running, the dropped packets are simply never answered: bypass attempts then time
//! out instead of failing fast, but nothing leaves the namespace (fail closed).
//!
//! NAT in the output hook (priority -100) runs before the filter chain (0), so the
//! filter sees the rewritten destination. It does *not* see the rewritten output
//! interface: the hook's `oifname` stays the one of the first route lookup, so a
//! connection to `198.18.0.7` (routed via the veth) still shows the veth after its
//! redirect to 127.0.0.1 and would fall to the bypass drop. Hence the explicit
//! `ct status dnat ... accept` for the listener; those packets go out `lo` and never
//! leave the namespace. (Synthetic IPv6 addresses are routed `local` to `lo` by
//! [`crate::netns::SandboxNetns::route_local_v6`], so their `oifname` is `lo` anyway.)
//! Loopback resolvers are left alone by the DNS rule: a DNAT from a 127/8 source to the
//! host address could not be routed out of the veth (the kernel drops it), and a
//! resolver inside the sandbox cannot leave the namespace except through policy DNS.

use ipnet::{Ipv4Net, Ipv6Net};

use crate::tools::SandboxError;

/// Transparent capture: TCP connections to the synthetic pools are redirected to the
/// transparent listener ([`crate::transparent`]) on `port` of the namespace's loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    /// IPv4 pool of synthetic addresses (default `198.18.0.0/15`).
    pub v4: Ipv4Net,
    /// IPv6 pool (default `fd23:6f70:656e::/48`), when policy DNS answers AAAA with
    /// synthetic addresses. Needs [`crate::netns::SandboxNetns::route_local_v6`].
    pub v6: Option<Ipv6Net>,
    /// Port of the transparent listener on `127.0.0.1` and `[::1]` in the namespace.
    pub port: u16,
}

/// Parameters of the ruleset.
#[derive(Debug, Clone)]
pub struct Ruleset {
    /// Table name suffix (the run id): the table is `inet sluice_<id>`.
    pub id: String,
    /// Proxy address (host side of the veth).
    pub proxy_ip: std::net::Ipv4Addr,
    /// Proxy port.
    pub proxy_port: u16,
    /// NFLOG group the bypass monitor reads.
    pub log_group: u16,
    /// Port of policy DNS (UDP and TCP) on the proxy address, when it runs. Every IPv4
    /// DNS packet (port 53) to another non-loopback address is redirected to it.
    pub dns_port: Option<u16>,
    /// Transparent capture of the synthetic pools, when it runs.
    pub capture: Option<Capture>,
}

impl Ruleset {
    /// The table name (`sluice_<id>`).
    #[must_use]
    pub fn table(&self) -> String {
        format!("sluice_{}", self.id)
    }

    /// The `nat_output` chain, when capture or policy DNS needs one.
    fn nat_chain(&self) -> String {
        let Self {
            proxy_ip,
            dns_port,
            capture,
            ..
        } = self;
        if capture.is_none() && dns_port.is_none() {
            return String::new();
        }
        let mut rules = String::new();
        if let Some(Capture { v4, v6, port }) = capture {
            let v4 = v4.trunc();
            rules.push_str(&format!(
                "\t\tip daddr {v4} tcp dport != 0 redirect to :{port}\n"
            ));
            if let Some(v6) = v6 {
                let v6 = v6.trunc();
                rules.push_str(&format!(
                    "\t\tip6 daddr {v6} tcp dport != 0 redirect to :{port}\n"
                ));
            }
        }
        if let Some(p) = dns_port {
            for proto in ["udp", "tcp"] {
                rules.push_str(&format!(
                    "\t\tip daddr != {{ {proxy_ip}, 127.0.0.0/8 }} {proto} dport 53 \
                     dnat ip to {proxy_ip}:{p}\n"
                ));
            }
        }
        format!(
            "\tchain nat_output {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             {rules}\
             \t}}\n"
        )
    }

    /// The `nft -f` script.
    #[must_use]
    pub fn script(&self) -> String {
        let Self {
            proxy_ip,
            proxy_port,
            log_group: g,
            dns_port,
            capture,
            ..
        } = self;
        let table = self.table();
        let nat = self.nat_chain();
        let captured = capture.map_or_else(String::new, |c| {
            let port = c.port;
            let mut s = format!("\t\tct status dnat ip daddr 127.0.0.1 tcp dport {port} accept\n");
            if c.v6.is_some() {
                s.push_str(&format!(
                    "\t\tct status dnat ip6 daddr ::1 tcp dport {port} accept\n"
                ));
            }
            s
        });
        let dns = dns_port.map_or_else(String::new, |p| {
            format!(
                "\t\tip daddr {proxy_ip} udp dport {p} accept\n\
                 \t\tip daddr {proxy_ip} tcp dport {p} accept\n"
            )
        });
        format!(
            "table inet {table} {{\n\
             {nat}\
             \tchain output {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\toifname \"lo\" accept\n\
             {captured}\
             \t\tct state established,related accept\n\
             \t\tip daddr {proxy_ip} tcp dport {proxy_port} accept\n\
             {dns}\
             \t\tmeta nfproto ipv4 tcp flags & (syn | ack) == syn log group {g} drop\n\
             \t\tmeta nfproto ipv4 meta l4proto udp log group {g} drop\n\
             \t\tmeta l4proto tcp log group {g} reject with tcp reset\n\
             \t\tmeta l4proto udp log group {g} reject with icmpx port-unreachable\n\
             \t}}\n\
             }}\n"
        )
    }

    /// Installs the ruleset inside `netns` with `ip netns exec <netns> nft -f -`.
    ///
    /// # Errors
    /// nft's error output: the run must abort before the command starts.
    pub fn install(
        &self,
        netns: &crate::netns::SandboxNetns,
        nft: &std::path::Path,
    ) -> Result<(), SandboxError> {
        let nft = nft.to_string_lossy();
        crate::netns::run_cmd(
            netns.ip_path(),
            &["netns", "exec", &netns.name, &nft, "-f", "-"],
            Some(&self.script()),
        )
        .map(drop)
    }
}

/// Asserts that `needles` occur in `script` in this order (the ruleset
/// tests of `sluice run` and of the pod fence).
#[cfg(test)]
pub(crate) fn assert_in_order(script: &str, needles: &[&str]) {
    let mut at = 0;
    for needle in needles {
        let pos = script[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} after byte {at} in\n{script}"));
        at += pos + needle.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Ruleset {
        Ruleset {
            id: "ab12".into(),
            proxy_ip: "10.200.0.1".parse().unwrap(),
            proxy_port: 3128,
            log_group: 7,
            dns_port: None,
            capture: None,
        }
    }

    fn capture() -> Capture {
        Capture {
            v4: "198.18.0.0/15".parse().unwrap(),
            v6: Some("fd23:6f70:656e::/48".parse().unwrap()),
            port: 15001,
        }
    }

    const FENCE: [&str; 4] = [
        "meta nfproto ipv4 tcp flags & (syn | ack) == syn log group 7 drop",
        "meta nfproto ipv4 meta l4proto udp log group 7 drop",
        "meta l4proto tcp log group 7 reject with tcp reset",
        "meta l4proto udp log group 7 reject with icmpx port-unreachable",
    ];

    #[test]
    fn script_has_every_rule_in_order() {
        let r = Ruleset {
            dns_port: Some(53),
            capture: Some(capture()),
            ..base()
        };
        let s = r.script();
        let mut order = vec![
            "table inet sluice_ab12 {",
            "chain nat_output {",
            "type nat hook output priority -100; policy accept;",
            "ip daddr 198.18.0.0/15 tcp dport != 0 redirect to :15001",
            "ip6 daddr fd23:6f70:656e::/48 tcp dport != 0 redirect to :15001",
            "ip daddr != { 10.200.0.1, 127.0.0.0/8 } udp dport 53 dnat ip to 10.200.0.1:53",
            "ip daddr != { 10.200.0.1, 127.0.0.0/8 } tcp dport 53 dnat ip to 10.200.0.1:53",
            "chain output {",
            "hook output priority 0; policy accept;",
            "oifname \"lo\" accept",
            "ct status dnat ip daddr 127.0.0.1 tcp dport 15001 accept",
            "ct status dnat ip6 daddr ::1 tcp dport 15001 accept",
            "ct state established,related accept",
            "ip daddr 10.200.0.1 tcp dport 3128 accept",
            "ip daddr 10.200.0.1 udp dport 53 accept",
            "ip daddr 10.200.0.1 tcp dport 53 accept",
        ];
        order.extend(FENCE);
        assert_in_order(&s, &order);
        assert_eq!(s.matches("chain ").count(), 2, "{s}");
        assert_eq!(s.matches('{').count(), s.matches('}').count(), "{s}");
    }

    #[test]
    fn without_capture_or_dns_there_is_no_nat_chain() {
        let s = base().script();
        assert!(!s.contains("nat"), "{s}");
        assert!(!s.contains("dport 53"), "{s}");
        assert!(!s.contains("ct status dnat"), "{s}");
        let mut order = vec![
            "oifname \"lo\" accept",
            "ct state established,related accept",
            "ip daddr 10.200.0.1 tcp dport 3128 accept",
        ];
        order.extend(FENCE);
        assert_in_order(&s, &order);
    }

    #[test]
    fn dns_alone_gets_a_nat_chain_without_capture() {
        let s = Ruleset {
            dns_port: Some(5353),
            ..base()
        }
        .script();
        assert_in_order(
            &s,
            &[
                "chain nat_output {",
                "udp dport 53 dnat ip to 10.200.0.1:5353",
                "tcp dport 53 dnat ip to 10.200.0.1:5353",
                "chain output {",
                "ip daddr 10.200.0.1 udp dport 5353 accept",
                "ip daddr 10.200.0.1 tcp dport 5353 accept",
            ],
        );
        assert!(!s.contains("redirect"), "{s}");
        assert!(!s.contains("ct status dnat"), "{s}");
    }

    #[test]
    fn capture_alone_and_without_v6() {
        let c = Capture {
            // Host bits are cut: nft needs the network address.
            v4: "198.18.3.4/15".parse().unwrap(),
            v6: None,
            port: 40000,
        };
        let s = Ruleset {
            capture: Some(c),
            ..base()
        }
        .script();
        assert_in_order(
            &s,
            &[
                "chain nat_output {",
                "ip daddr 198.18.0.0/15 tcp dport != 0 redirect to :40000",
                "chain output {",
                "oifname \"lo\" accept",
                "ct status dnat ip daddr 127.0.0.1 tcp dport 40000 accept",
                "ct state established,related accept",
            ],
        );
        assert!(!s.contains("ip6"), "{s}");
        assert!(!s.contains("::1"), "{s}");
        assert!(!s.contains("dport 53"), "{s}");
    }
}
