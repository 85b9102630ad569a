//! The fail-closed nftables ruleset of a sandbox namespace, installed in one atomic
//! `nft -f -` transaction (all rules or none) inside the namespace.
//!
//! ```text
//! table inet sluice_<id> {
//!   chain output {                              # every packet the sandbox sends
//!     type filter hook output priority 0; policy accept;
//!     oifname "lo" accept                       # loopback stays usable
//!     ct state established,related accept       # replies on accepted flows
//!     ip daddr <host-ip> tcp dport <port> accept  # the proxy: the only way out
//!     ip daddr <host-ip> udp dport 53 accept      # policy DNS (when it runs)
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

use crate::tools::SandboxError;

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
    /// UDP port of policy DNS on the proxy address, when it runs.
    pub dns_port: Option<u16>,
}

impl Ruleset {
    /// The table name (`sluice_<id>`).
    #[must_use]
    pub fn table(&self) -> String {
        format!("sluice_{}", self.id)
    }

    /// The `nft -f` script.
    #[must_use]
    pub fn script(&self) -> String {
        let Self {
            proxy_ip,
            proxy_port,
            log_group: g,
            dns_port,
            ..
        } = self;
        let table = self.table();
        let dns = dns_port.map_or_else(String::new, |p| {
            format!("\t\tip daddr {proxy_ip} udp dport {p} accept\n")
        });
        format!(
            "table inet {table} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\toifname \"lo\" accept\n\
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_has_every_rule_in_order() {
        let r = Ruleset {
            id: "ab12".into(),
            proxy_ip: "10.200.0.1".parse().unwrap(),
            proxy_port: 3128,
            log_group: 7,
            dns_port: Some(53),
        };
        let s = r.script();
        let order = [
            "table inet sluice_ab12",
            "hook output priority 0; policy accept;",
            "oifname \"lo\" accept",
            "ct state established,related accept",
            "ip daddr 10.200.0.1 tcp dport 3128 accept",
            "ip daddr 10.200.0.1 udp dport 53 accept",
            "meta nfproto ipv4 tcp flags & (syn | ack) == syn log group 7 drop",
            "meta nfproto ipv4 meta l4proto udp log group 7 drop",
            "meta l4proto tcp log group 7 reject with tcp reset",
            "meta l4proto udp log group 7 reject with icmpx port-unreachable",
        ];
        let mut at = 0;
        for needle in order {
            let pos = s[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} in {s}"));
            at += pos;
        }
        let without = Ruleset {
            dns_port: None,
            ..r
        }
        .script();
        assert!(!without.contains("udp dport"), "{without}");
    }
}
