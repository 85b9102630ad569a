//! Strict host normalization. Every host string from the network passes
//! through [`Target::parse_authority`] or [`Host::parse`] before policy sees
//! it, so that spellings cannot smuggle an address past the rules:
//! case and one trailing dot are normalized, numeric IPv4 spellings
//! (`2130706433`, `0x7f.1`, `0177.0.0.1`) are judged as the address they
//! denote, and anything else unusual (percent-encoding, userinfo, empty
//! labels, non-ASCII, IPv6 zone ids) is refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use sluice_policy::HostRef;

/// Longest DNS name accepted (RFC 1035, without the trailing dot).
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A normalized destination host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// Lowercase ASCII DNS name without trailing dot.
    Name(Arc<str>),
    /// An IP literal (IPv4-mapped IPv6 kept as written; the destination
    /// validator judges the embedded IPv4).
    Ip(IpAddr),
}

/// A normalized `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

/// Why a host or authority was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("empty host")]
    Empty,
    #[error("host is longer than 253 bytes")]
    TooLong,
    #[error("host contains a forbidden character")]
    ForbiddenChar,
    #[error("host has an empty or over-long label")]
    BadLabel,
    #[error("numeric host is not a valid IPv4 address")]
    BadNumericHost,
    #[error("invalid IPv6 literal")]
    BadIpv6,
    #[error("missing or invalid port")]
    BadPort,
}

impl Host {
    /// Normalize a host as it appears in an authority (IPv6 in brackets).
    ///
    /// # Errors
    /// [`TargetError`] for anything that is not a plain DNS name or IP literal.
    pub fn parse(raw: &str) -> Result<Self, TargetError> {
        if raw.is_empty() {
            return Err(TargetError::Empty);
        }
        if let Some(inner) = raw.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(TargetError::BadIpv6)?;
            // Zone ids (`%eth0`) and anything else non-literal are refused.
            return inner
                .parse::<Ipv6Addr>()
                .map(|a| Self::Ip(IpAddr::V6(a)))
                .map_err(|_| TargetError::BadIpv6);
        }
        if raw.contains(':') {
            // An unbracketed IPv6 literal (CONNECT targets are split before this).
            return raw
                .parse::<Ipv6Addr>()
                .map(|a| Self::Ip(IpAddr::V6(a)))
                .map_err(|_| TargetError::BadIpv6);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(TargetError::ForbiddenChar);
        }
        let trimmed = raw.strip_suffix('.').unwrap_or(raw);
        if trimmed.is_empty() {
            return Err(TargetError::Empty);
        }
        if trimmed.len() > MAX_NAME_LEN {
            return Err(TargetError::TooLong);
        }
        if trimmed
            .split('.')
            .any(|l| l.is_empty() || l.len() > MAX_LABEL_LEN)
        {
            return Err(TargetError::BadLabel);
        }
        let lower = trimmed.to_ascii_lowercase();
        // WHATWG rule: a name whose last label is numeric is an IPv4 attempt.
        let last = lower.rsplit('.').next().unwrap_or_default();
        if is_numeric_label(last) {
            return parse_ipv4_loose(&lower)
                .map(|a| Self::Ip(IpAddr::V4(a)))
                .ok_or(TargetError::BadNumericHost);
        }
        Ok(Self::Name(lower.into()))
    }

    /// The form the policy index is queried with.
    #[must_use]
    pub fn as_host_ref(&self) -> HostRef<'_> {
        match self {
            Self::Name(n) => HostRef::Name(n),
            Self::Ip(ip) => HostRef::Ip(canonical_ip(*ip)),
        }
    }

    #[must_use]
    pub fn is_ip(&self) -> bool {
        matches!(self, Self::Ip(_))
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address for policy matching.
#[must_use]
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl Target {
    /// Parse `host:port` / `[v6]:port` (CONNECT authority-form).
    ///
    /// # Errors
    /// [`TargetError`] on a missing port or an unacceptable host.
    pub fn parse_authority(raw: &str) -> Result<Self, TargetError> {
        let (host, port) = split_host_port(raw).ok_or(TargetError::BadPort)?;
        let port = parse_port(port).ok_or(TargetError::BadPort)?;
        Ok(Self {
            host: Host::parse(host)?,
            port,
        })
    }

    /// Parse an authority with an optional port (`default_port` when absent).
    ///
    /// # Errors
    /// [`TargetError`] on an unacceptable host or port.
    pub fn parse_authority_with_default(raw: &str, default_port: u16) -> Result<Self, TargetError> {
        if raw.contains('@') {
            return Err(TargetError::ForbiddenChar);
        }
        match split_host_port(raw) {
            Some((host, port)) => Ok(Self {
                host: Host::parse(host)?,
                port: parse_port(port).ok_or(TargetError::BadPort)?,
            }),
            None => Ok(Self {
                host: Host::parse(raw)?,
                port: default_port,
            }),
        }
    }
}

/// Split `host:port` or `[v6]:port`; `None` when no port separator is present.
fn split_host_port(raw: &str) -> Option<(&str, &str)> {
    if raw.starts_with('[') {
        let end = raw.find(']')?;
        let rest = &raw[end + 1..];
        let port = rest.strip_prefix(':')?;
        return Some((&raw[..=end], port));
    }
    let (host, port) = raw.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// Decimal port 1..=65535, digits only (no sign, no whitespace, no leading `+`).
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

fn is_numeric_label(label: &str) -> bool {
    if let Some(hex) = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
}

/// `inet_aton`-style IPv4: 1-4 parts, each decimal, `0x` hex or `0` octal;
/// the last part fills the remaining bytes. Exactly what a C resolver would
/// dial for these spellings, so policy judges the same address.
fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = [0u64; 4];
    for (i, p) in parts.iter().enumerate() {
        nums[i] = parse_ipv4_part(p)?;
    }
    let n = parts.len();
    let mut value: u64 = 0;
    for (i, num) in nums.iter().take(n - 1).enumerate() {
        if *num > 255 {
            return None;
        }
        value |= num << (24 - 8 * i);
    }
    let last_bits = 8 * (5 - n) as u32;
    let last = nums[n - 1];
    if last_bits < 64 && last >= (1u64 << last_bits) {
        return None;
    }
    value |= last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() || p.len() > 12 {
        return None;
    }
    if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        if hex.is_empty() {
            return Some(0);
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if p.len() > 1 && p.starts_with('0') {
        return u64::from_str_radix(&p[1..], 8).ok();
    }
    p.parse::<u64>().ok()
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Self::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization_table() {
        let v4 = |s: &str| Ok(Host::Ip(s.parse().unwrap()));
        let name = |s: &str| Ok(Host::Name(s.into()));
        let cases: &[(&str, Result<Host, TargetError>)] = &[
            ("Example.COM", name("example.com")),
            ("example.com.", name("example.com")),
            ("api.example.com", name("api.example.com")),
            ("127.0.0.1", v4("127.0.0.1")),
            ("2130706433", v4("127.0.0.1")),
            ("0x7f000001", v4("127.0.0.1")),
            ("0177.0.0.1", v4("127.0.0.1")),
            ("0x7f.0.0.1", v4("127.0.0.1")),
            ("127.1", v4("127.0.0.1")),
            ("127.0.1", v4("127.0.0.1")),
            ("0", v4("0.0.0.0")),
            ("169.254.169.254.", v4("169.254.169.254")),
            ("0251.0376.0251.0376", v4("169.254.169.254")),
            ("0xa9fea9fe", v4("169.254.169.254")),
            ("2852039166", v4("169.254.169.254")),
            ("10.0.0.0x1", v4("10.0.0.1")),
            ("256.0.0.1", Err(TargetError::BadNumericHost)),
            ("1.2.3.4.5", Err(TargetError::BadNumericHost)),
            ("4294967296", Err(TargetError::BadNumericHost)),
            ("08.0.0.1", Err(TargetError::BadNumericHost)),
            ("foo.123", Err(TargetError::BadNumericHost)),
            ("123.foo", name("123.foo")),
            ("[::1]", Ok(Host::Ip("::1".parse().unwrap()))),
            (
                "[::ffff:127.0.0.1]",
                Ok(Host::Ip("::ffff:127.0.0.1".parse().unwrap())),
            ),
            ("[fe80::1%eth0]", Err(TargetError::BadIpv6)),
            ("[::1", Err(TargetError::BadIpv6)),
            ("exa%6dple.com", Err(TargetError::ForbiddenChar)),
            ("user@example.com", Err(TargetError::ForbiddenChar)),
            ("exa mple.com", Err(TargetError::ForbiddenChar)),
            ("ex\u{e4}mple.com", Err(TargetError::ForbiddenChar)),
            ("a..b", Err(TargetError::BadLabel)),
            (".", Err(TargetError::Empty)),
            ("", Err(TargetError::Empty)),
            ("example.com..", Err(TargetError::BadLabel)),
        ];
        for (raw, want) in cases {
            assert_eq!(&Host::parse(raw), want, "host {raw:?}");
        }
    }

    #[test]
    fn authority_table() {
        let ok = |h: &str, p: u16| {
            Ok(Target {
                host: Host::parse(h).unwrap(),
                port: p,
            })
        };
        let cases: &[(&str, Result<Target, TargetError>)] = &[
            ("example.com:443", ok("example.com", 443)),
            ("[::1]:8080", ok("[::1]", 8080)),
            ("example.com", Err(TargetError::BadPort)),
            ("example.com:", Err(TargetError::BadPort)),
            ("example.com:0", Err(TargetError::BadPort)),
            ("example.com:65536", Err(TargetError::BadPort)),
            ("example.com:+80", Err(TargetError::BadPort)),
            ("example.com: 80", Err(TargetError::BadPort)),
            ("::1:80", Err(TargetError::BadPort)),
        ];
        for (raw, want) in cases {
            assert_eq!(&Target::parse_authority(raw), want, "authority {raw:?}");
        }
        assert_eq!(
            Target::parse_authority_with_default("Example.com", 80),
            ok("example.com", 80)
        );
        assert_eq!(
            Target::parse_authority_with_default("u:p@example.com", 80),
            Err(TargetError::ForbiddenChar)
        );
    }
}
