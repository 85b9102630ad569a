//! `allowed_ips` parsing and safety checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::host::normalize_ip;

/// Outcome of parsing one `allowed_ips` entry.
pub(crate) enum IpEntry {
    /// Accepted; `broad` asks for a "very broad CIDR" warning.
    Ok { net: IpNet, broad: bool },
    /// Rejected with a lower-case message.
    Err(String),
}

/// Parses a CIDR or bare IP (bare = /32 or /128), maps IPv4-mapped IPv6
/// networks to IPv4, truncates host bits, and rejects dangerous ranges.
pub(crate) fn parse_allowed_ip(raw: &str) -> IpEntry {
    let s = raw.trim();
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return IpEntry::Err(format!("`{raw}` is not a valid CIDR or IP address")),
        },
    };
    let net = unmap(net).trunc();
    if let Some(why) = forbidden(&net) {
        return IpEntry::Err(format!("`{raw}` {why}"));
    }
    let broad = match net {
        IpNet::V4(n) => n.prefix_len() < 16,
        IpNet::V6(n) => n.prefix_len() < 32,
    };
    IpEntry::Ok { net, broad }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) → `a.b.c.d/(n-96)`.
fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let IpAddr::V4(v4) = normalize_ip(IpAddr::V6(v6.network())) {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn forbidden(net: &IpNet) -> Option<&'static str> {
    let v4 = |a: [u8; 4], p: u8| Ipv4Net::new(Ipv4Addr::from(a), p).map(IpNet::V4).ok();
    let v6 = |a: Ipv6Addr, p: u8| Ipv6Net::new(a, p).map(IpNet::V6).ok();
    let rules: [(Option<IpNet>, &'static str); 7] = [
        (v4([127, 0, 0, 0], 8), "overlaps loopback 127.0.0.0/8"),
        (
            v4([169, 254, 0, 0], 16),
            "overlaps link-local 169.254.0.0/16",
        ),
        (
            v4([0, 0, 0, 0], 32),
            "contains the unspecified address 0.0.0.0",
        ),
        (
            v6(Ipv6Addr::LOCALHOST, 128),
            "contains the loopback address ::1",
        ),
        (
            v6(Ipv6Addr::UNSPECIFIED, 128),
            "contains the unspecified address ::",
        ),
        (
            v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
            "overlaps link-local fe80::/10",
        ),
        // Any IPv6 range covering the whole IPv4-mapped space also covers the above.
        (
            v6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
            "contains IPv4-mapped addresses",
        ),
    ];
    rules.into_iter().find_map(|(bad, why)| {
        let bad = bad?;
        let hit = if bad.prefix_len() == bad.max_prefix_len() {
            net.contains(&bad.network())
        } else {
            overlaps(net, &bad)
        };
        hit.then_some(why)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_ips_table() {
        // (entry, Ok(broad) or Err(substring))
        let cases: &[(&str, Result<bool, &str>)] = &[
            ("10.20.0.0/16", Ok(false)),
            ("10.0.0.0/8", Ok(true)),
            ("203.0.113.10", Ok(false)),
            ("2001:db8::/48", Ok(false)),
            ("2001:db8::/16", Ok(true)),
            ("10.20.0.5/16", Ok(false)),
            ("127.0.0.1", Err("loopback")),
            ("126.0.0.0/7", Err("loopback")),
            ("169.254.169.254/32", Err("link-local")),
            ("0.0.0.0/0", Err("loopback")),
            ("0.0.0.0", Err("0.0.0.0")),
            ("::1", Err("::1")),
            ("::/0", Err("")),
            ("fe80::1", Err("fe80")),
            ("::ffff:127.0.0.1", Err("loopback")),
            ("::ffff:169.254.1.1/128", Err("link-local")),
            ("not-an-ip", Err("not a valid CIDR")),
            ("10.0.0.0/33", Err("not a valid CIDR")),
        ];
        for (raw, want) in cases {
            match (parse_allowed_ip(raw), want) {
                (IpEntry::Ok { broad, .. }, Ok(b)) => assert_eq!(broad, *b, "{raw}"),
                (IpEntry::Err(m), Err(sub)) => assert!(m.contains(sub), "{raw}: {m}"),
                (IpEntry::Ok { .. }, Err(_)) => panic!("{raw}: accepted"),
                (IpEntry::Err(m), Ok(_)) => panic!("{raw}: rejected: {m}"),
            }
        }
    }
}
