//! Address classes for SSRF decisions. IPv6 forms that carry an IPv4
//! address (mapped, compatible, NAT64, 6to4, Teredo) are judged as the IPv4
//! they carry, so an embedding can never be more permissive than the
//! address itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Cloud metadata service addresses (never reachable, in every mode).
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure IMDS, OpenStack, DigitalOcean...
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(168, 63, 129, 16),   // Azure WireServer
    Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud
];

/// IPv6 metadata addresses.
const METADATA_V6: [Ipv6Addr; 4] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), // AWS IMDS (IPv6)
    Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254),  // GCP
    Ipv6Addr::new(0xfd00, 0x42, 0, 0, 0, 0, 0, 0x42),   // other providers' metadata
    Ipv6Addr::new(0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe), // metadata at fd00:c1::169.254.169.254
];

/// Host names that name a metadata service (refused before resolution).
pub const METADATA_NAMES: [&str; 6] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
];

/// Kubernetes and etcd control-plane ports, refused in every mode.
pub const CONTROL_PLANE_PORTS: [u16; 7] = [2379, 2380, 6443, 10250, 10255, 10257, 10259];

/// The IPv4 address an IPv6 address carries, if any: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`), 6to4 (`2002::/16`), and
/// Teredo (`2001::/32`, the obfuscated client address).
#[must_use]
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new(
        (s[6] >> 8) as u8,
        (s[6] & 0xff) as u8,
        (s[7] >> 8) as u8,
        (s[7] & 0xff) as u8,
    );
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        // IPv4-compatible (deprecated); `::` and `::1` are IPv6 themselves.
        [0, 0, 0, 0, 0, 0, _, _] if u32::from(low) > 1 => Some(low),
        // IPv4-translated ::ffff:0:a.b.c.d
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // NAT64 well-known prefix
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            (hi & 0xff) as u8,
            (lo >> 8) as u8,
            (lo & 0xff) as u8,
        )),
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(low))),
        _ => None,
    }
}

/// The Teredo server address (bits 32..64), judged too.
fn teredo_server(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[0] == 0x2001 && s[1] == 0).then(|| {
        Ipv4Addr::new(
            (s[2] >> 8) as u8,
            (s[2] & 0xff) as u8,
            (s[3] >> 8) as u8,
            (s[3] & 0xff) as u8,
        )
    })
}

/// Judge `ip` and every IPv4 it carries with `pred`.
fn any_form(ip: IpAddr, v4: fn(Ipv4Addr) -> bool, v6: fn(Ipv6Addr) -> bool) -> bool {
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => {
            v6(a) || embedded_ipv4(a).is_some_and(v4) || teredo_server(a).is_some_and(v4)
        }
    }
}

/// Loopback, link-local, unspecified (and `0.0.0.0/8`): blocked in every
/// mode, because no policy can mean them through the proxy.
#[must_use]
pub fn is_always_blocked(ip: IpAddr) -> bool {
    any_form(
        ip,
        |a| a.is_loopback() || a.is_link_local() || a.octets()[0] == 0,
        |a| a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80,
    )
}

/// Cloud metadata service address (any embedding).
#[must_use]
pub fn is_cloud_metadata(ip: IpAddr) -> bool {
    any_form(
        ip,
        |a| METADATA_V4.contains(&a),
        |a| METADATA_V6.contains(&a) || a.segments()[..2] == [0xfd00, 0x0ec2],
    )
}

/// Not a public unicast address: always-blocked plus private, shared,
/// documentation, benchmarking, reserved, multicast and broadcast ranges.
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    is_always_blocked(ip) || any_form(ip, internal_v4, internal_v6)
}

fn internal_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_private()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
        || a.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
        || o[0] >= 224 // multicast, reserved, broadcast
}

fn internal_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    (s[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 (cannot decode)
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn class_table() {
        // (address, always_blocked, internal, metadata)
        let cases = [
            ("127.0.0.1", true, true, false),
            ("127.255.0.9", true, true, false),
            ("0.0.0.0", true, true, false),
            ("0.1.2.3", true, true, false),
            ("169.254.1.1", true, true, false),
            ("169.254.169.254", true, true, true),
            ("169.254.170.2", true, true, true),
            ("100.100.100.200", false, true, true),
            ("168.63.129.16", false, false, true),
            ("192.0.0.192", false, true, true),
            ("10.1.2.3", false, true, false),
            ("172.16.0.1", false, true, false),
            ("172.32.0.1", false, false, false),
            ("192.168.1.1", false, true, false),
            ("100.64.0.1", false, true, false),
            ("100.128.0.1", false, false, false),
            ("198.18.0.1", false, true, false),
            ("203.0.113.9", false, true, false),
            ("255.255.255.255", false, true, false),
            ("224.0.0.1", false, true, false),
            ("8.8.8.8", false, false, false),
            ("::1", true, true, false),
            ("::", true, true, false),
            ("fe80::1", true, true, false),
            ("fc00::1", false, true, false),
            ("fd00:ec2::254", false, true, true),
            ("fd00:ec2::1", false, true, true),
            ("fd20:ce::254", false, true, true),
            ("fd00:c1::a9fe:a9fe", false, true, true),
            ("::ffff:127.0.0.1", true, true, false),
            ("::ffff:169.254.169.254", true, true, true),
            ("::ffff:10.0.0.1", false, true, false),
            ("::ffff:8.8.8.8", false, false, false),
            ("::127.0.0.1", true, true, false),
            ("::ffff:0:127.0.0.1", true, true, false),
            ("64:ff9b::7f00:1", true, true, false),
            ("64:ff9b::a9fe:a9fe", true, true, true),
            ("64:ff9b::808:808", false, false, false),
            ("64:ff9b:1::1", false, true, false),
            ("2002:7f00:1::", true, true, false),
            ("2002:a00:1::", false, true, false),
            ("2002:808:808::", false, false, false),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", true, true, false), // Teredo client 127.0.0.1
            ("2001:0:7f00:1::", true, true, false),                      // Teredo server 127.0.0.1
            ("2001:db8::1", false, true, false),
            ("2606:4700::1111", false, false, false),
        ];
        for (a, blocked, internal, metadata) in cases {
            assert_eq!(is_always_blocked(ip(a)), blocked, "always_blocked {a}");
            assert_eq!(is_internal(ip(a)), internal, "internal {a}");
            assert_eq!(is_cloud_metadata(ip(a)), metadata, "metadata {a}");
        }
    }
}
