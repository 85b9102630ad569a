//! Host patterns: parsing with OpenShell's wildcard-shape rules, matching,
//! and overlap (unification) between two patterns.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::model::{GlobLabel, HostGlob, HostPattern, HostRef};

/// Maps an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to IPv4.
#[must_use]
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Parses an IP literal, also accepting the bracketed IPv6 form `[::1]`.
pub(crate) fn parse_ip_literal(s: &str) -> Option<IpAddr> {
    let inner = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    inner
        .parse::<IpAddr>()
        .ok()
        .or_else(|| inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
        .map(normalize_ip)
}

fn valid_label_chars(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses a non-empty, already lowercased host without trailing dot.
/// Returns a lower-case error message on invalid shapes.
pub(crate) fn parse_host(host: &str) -> Result<HostPattern, String> {
    if let Some(ip) = parse_ip_literal(host) {
        return Ok(HostPattern::Ip(ip));
    }
    if host == "*" || host == "**" {
        return Err(format!(
            "bare wildcard host `{host}` is not allowed; use `allowed_ips` without a host to match any name"
        ));
    }
    if let Some(c) = host
        .chars()
        .find(|c| matches!(c, '{' | '}' | '?' | '[' | ']'))
    {
        return Err(format!(
            "host pattern `{host}` uses `{c}`; only `*` and `**` wildcards are supported"
        ));
    }
    if host.len() > 253 {
        return Err(format!("host `{host}` is longer than 253 characters"));
    }
    let raw: Vec<&str> = host.split('.').collect();
    if raw.iter().any(|l| l.is_empty()) {
        return Err(format!("host `{host}` has an empty label"));
    }
    if !host.contains('*') {
        if let Some(bad) = raw.iter().find(|l| !valid_label_chars(l)) {
            return Err(format!("host `{host}` has an invalid label `{bad}`"));
        }
        return Ok(HostPattern::Exact(Arc::from(host)));
    }
    let mut labels = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().enumerate() {
        let label = if *l == "**" {
            if i != 0 {
                return Err(format!(
                    "host pattern `{host}`: `**` is only allowed as the entire first label"
                ));
            }
            GlobLabel::AnyMany
        } else if *l == "*" {
            GlobLabel::Any
        } else if l.contains('*') {
            if l.contains("**") {
                return Err(format!(
                    "host pattern `{host}`: `**` is only allowed as the entire first label"
                ));
            }
            if i != 0 {
                return Err(format!(
                    "host pattern `{host}`: wildcards after the first label must be a whole `*` label"
                ));
            }
            let (prefix, suffix) = l.split_once('*').unwrap_or((l, ""));
            if suffix.contains('*') {
                return Err(format!(
                    "host pattern `{host}`: at most one `*` is allowed inside a label"
                ));
            }
            check_partial(host, prefix, suffix)?;
            GlobLabel::Partial {
                prefix: Arc::from(prefix),
                suffix: Arc::from(suffix),
            }
        } else {
            if !valid_label_chars(l) {
                return Err(format!("host pattern `{host}` has an invalid label `{l}`"));
            }
            GlobLabel::Literal(Arc::from(*l))
        };
        labels.push(label);
    }
    if labels.len() <= 2 {
        return Err(format!(
            "host pattern `{host}` is a top-level-domain wildcard; wildcard patterns need at least three labels (e.g. `*.example.com`)"
        ));
    }
    Ok(HostPattern::Glob(HostGlob {
        pattern: Arc::from(host),
        labels: labels.into(),
    }))
}

fn check_partial(host: &str, prefix: &str, suffix: &str) -> Result<(), String> {
    let ok = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if ok(prefix) && ok(suffix) {
        Ok(())
    } else {
        Err(format!("host pattern `{host}` has an invalid first label"))
    }
}

fn label_matches(p: &GlobLabel, l: &str) -> bool {
    match p {
        GlobLabel::Literal(s) => **s == *l,
        GlobLabel::Any | GlobLabel::AnyMany => !l.is_empty(),
        GlobLabel::Partial { prefix, suffix } => {
            l.len() >= prefix.len() + suffix.len()
                && l.starts_with(&**prefix)
                && l.ends_with(&**suffix)
        }
    }
}

impl HostGlob {
    /// True if the lowercase DNS name `name` matches this glob.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        let labels = &self.labels;
        let Some(first) = labels.first() else {
            return false;
        };
        let n = name.split('.').count();
        if *first == GlobLabel::AnyMany {
            if n < labels.len() {
                return false;
            }
            let tail = name.rsplit('.').take(labels.len() - 1);
            return tail
                .zip(labels[1..].iter().rev())
                .all(|(l, p)| label_matches(p, l));
        }
        n == labels.len()
            && name
                .split('.')
                .zip(labels.iter())
                .all(|(l, p)| label_matches(p, l))
    }

    /// The literal labels right of the right-most wildcard label, joined by
    /// `.` (possibly empty): the index bucket key.
    #[must_use]
    pub fn literal_suffix(&self) -> String {
        let start = self
            .labels
            .iter()
            .rposition(|l| !matches!(l, GlobLabel::Literal(_)))
            .map_or(0, |i| i + 1);
        let lits: Vec<&str> = self.labels[start..]
            .iter()
            .filter_map(|l| match l {
                GlobLabel::Literal(s) => Some(&**s),
                _ => None,
            })
            .collect();
        lits.join(".")
    }
}

impl HostPattern {
    /// True if `host` matches. Name patterns never match IP hosts; an IP
    /// pattern matches only the same address (IPv4-mapped IPv6 normalized);
    /// a hostless pattern matches every host.
    #[must_use]
    pub fn matches(&self, host: HostRef<'_>) -> bool {
        match (self, host) {
            (Self::Any, _) => true,
            (Self::Exact(e), HostRef::Name(n)) => e.eq_ignore_ascii_case(n),
            (Self::Glob(g), HostRef::Name(n)) => {
                if n.bytes().any(|b| b.is_ascii_uppercase()) {
                    g.matches(&n.to_ascii_lowercase())
                } else {
                    g.matches(n)
                }
            }
            (Self::Ip(a), HostRef::Ip(b)) => normalize_ip(*a) == normalize_ip(b),
            _ => false,
        }
    }

    /// The pattern as written (lowercased), or `[any host]` when hostless.
    #[must_use]
    pub fn display(&self) -> String {
        match self {
            Self::Exact(e) => e.to_string(),
            Self::Ip(ip) => ip.to_string(),
            Self::Glob(g) => g.pattern.to_string(),
            Self::Any => "[any host]".to_owned(),
        }
    }

    /// True if some host could match both patterns.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) | (_, Self::Any) => true,
            (Self::Ip(a), Self::Ip(b)) => normalize_ip(*a) == normalize_ip(*b),
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(e), Self::Glob(g)) | (Self::Glob(g), Self::Exact(e)) => g.matches(e),
            (Self::Glob(a), Self::Glob(b)) => globs_overlap(&a.labels, &b.labels),
            _ => false,
        }
    }
}

fn labels_compatible(a: &GlobLabel, b: &GlobLabel) -> bool {
    use GlobLabel::{Any, AnyMany, Literal, Partial};
    match (a, b) {
        (Literal(x), Literal(y)) => x == y,
        (Literal(l), p) | (p, Literal(l)) => label_matches(p, l),
        (
            Partial {
                prefix: p1,
                suffix: s1,
            },
            Partial {
                prefix: p2,
                suffix: s2,
            },
        ) => {
            (p1.starts_with(&**p2) || p2.starts_with(&**p1))
                && (s1.ends_with(&**s2) || s2.ends_with(&**s1))
        }
        (Any | AnyMany | Partial { .. }, _) => true,
    }
}

fn globs_overlap(a: &[GlobLabel], b: &[GlobLabel]) -> bool {
    let a_many = a.first() == Some(&GlobLabel::AnyMany);
    let b_many = b.first() == Some(&GlobLabel::AnyMany);
    let tail = |x: &[GlobLabel], many: bool| -> usize { x.len() - usize::from(many) };
    let (ta, tb) = (tail(a, a_many), tail(b, b_many));
    // Right-aligned comparison of the fixed-width tails.
    let pairwise = |k: usize| {
        a.iter()
            .rev()
            .take(k)
            .zip(b.iter().rev().take(k))
            .all(|(x, y)| labels_compatible(x, y))
    };
    match (a_many, b_many) {
        (false, false) => a.len() == b.len() && pairwise(a.len()),
        // `**` absorbs one or more of the other's leading labels.
        (true, false) => b.len() > ta && pairwise(ta),
        (false, true) => a.len() > tb && pairwise(tb),
        (true, true) => pairwise(ta.min(tb)),
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
