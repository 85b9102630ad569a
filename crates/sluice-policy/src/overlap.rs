//! Ambiguity rejection: endpoints (across all policies) whose hosts and
//! ports overlap must agree on connection metadata; L7 endpoints whose
//! paths also overlap with equal specificity must agree on request-pipeline
//! metadata. Candidate pairs come from hash buckets, not an all-pairs scan.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use crate::error::Ctx;
use crate::host::normalize_ip;
use crate::index::Suffixes;
use crate::model::{Endpoint, Glob, HostPattern};

pub(crate) fn ports_intersect(a: &[u16], b: &[u16]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// Candidate pairs `(lower, higher)` whose host patterns might overlap.
fn candidates(eps: &[Endpoint]) -> BTreeSet<(usize, usize)> {
    let mut exact: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut ips: HashMap<IpAddr, Vec<usize>> = HashMap::new();
    let mut globs: HashMap<String, Vec<usize>> = HashMap::new();
    let mut by_port: HashMap<u16, Vec<usize>> = HashMap::new();
    let mut hostless = Vec::new();
    for (i, e) in eps.iter().enumerate() {
        match &e.host {
            HostPattern::Exact(n) => exact.entry(n).or_default().push(i),
            HostPattern::Ip(ip) => ips.entry(normalize_ip(*ip)).or_default().push(i),
            HostPattern::Glob(g) => globs.entry(g.literal_suffix()).or_default().push(i),
            HostPattern::Any => hostless.push(i),
        }
        for p in e.ports.iter() {
            by_port.entry(*p).or_default().push(i);
        }
    }
    let mut out = BTreeSet::new();
    let mut add = |a: usize, b: usize| {
        if a != b {
            out.insert((a.min(b), a.max(b)));
        }
    };
    for group in exact.values().chain(ips.values()).chain(globs.values()) {
        for (k, &a) in group.iter().enumerate() {
            for &b in &group[k + 1..] {
                add(a, b);
            }
        }
    }
    for (name, group) in &exact {
        for s in Suffixes::new(name) {
            for &g in globs.get(s).into_iter().flatten() {
                for &a in group {
                    add(a, g);
                }
            }
        }
    }
    for (bucket, group) in &globs {
        for s in Suffixes::new(bucket) {
            for &g in globs.get(s).into_iter().flatten() {
                for &a in group {
                    add(a, g);
                }
            }
        }
    }
    for &h in &hostless {
        let mut seen = HashSet::new();
        for p in eps[h].ports.iter() {
            for &c in by_port.get(p).into_iter().flatten() {
                if seen.insert(c) {
                    add(h, c);
                }
            }
        }
    }
    out
}

fn describe(e: &Endpoint, names: &[String]) -> String {
    let ports: Vec<String> = e.ports.iter().map(u16::to_string).collect();
    format!(
        "{} ({}:{}",
        names[e.id.0 as usize],
        e.host.display(),
        ports.join(",")
    )
}

fn differences(a: &Endpoint, b: &Endpoint) -> Vec<&'static str> {
    let mut d = Vec::new();
    if a.tls != b.tls {
        d.push("tls");
    }
    if a.allowed_ips != b.allowed_ips {
        d.push("allowed_ips");
    }
    if (a.protocol == crate::model::Protocol::Tcp) != (b.protocol == crate::model::Protocol::Tcp) {
        d.push("tcp-ness (protocol: tcp)");
    }
    if !(d.is_empty() && a.protocol.is_l7() && b.protocol.is_l7()) {
        return d;
    }
    let any = Glob::new("**", b'/');
    let (pa, pb) = (
        a.path.as_ref().unwrap_or(&any),
        b.path.as_ref().unwrap_or(&any),
    );
    let pa_spec = a.path.as_ref().map_or(0, Glob::specificity);
    let pb_spec = b.path.as_ref().map_or(0, Glob::specificity);
    if pa_spec != pb_spec || !pa.intersects(pb) {
        return d;
    }
    let checks = [
        (a.protocol != b.protocol, "protocol"),
        (a.enforcement != b.enforcement, "enforcement"),
        (
            a.allow_encoded_slash != b.allow_encoded_slash,
            "allow_encoded_slash",
        ),
        (
            a.websocket_credential_rewrite != b.websocket_credential_rewrite,
            "websocket_credential_rewrite",
        ),
        (
            a.request_body_credential_rewrite != b.request_body_credential_rewrite,
            "request_body_credential_rewrite",
        ),
        (
            a.credential_signing != b.credential_signing,
            "credential_signing",
        ),
        (a.signing_service != b.signing_service, "signing_service"),
        (a.signing_region != b.signing_region, "signing_region"),
    ];
    d.extend(checks.iter().filter(|(on, _)| *on).map(|(_, n)| *n));
    d
}

/// Records one diagnostic per conflicting pair, at the earlier endpoint.
/// `names[i]` is the YAML path of endpoint `i`.
pub(crate) fn check_ambiguity(ctx: &mut Ctx, eps: &[Endpoint], names: &[String]) {
    for (i, j) in candidates(eps) {
        let (a, b) = (&eps[i], &eps[j]);
        if !ports_intersect(&a.ports, &b.ports) || !a.host.overlaps(&b.host) {
            continue;
        }
        let diff = differences(a, b);
        if diff.is_empty() {
            continue;
        }
        let (b_file, b_line, b_col) = ctx.locate(&names[b.id.0 as usize]);
        let msg = format!(
            "endpoint {}) overlaps {}, {b_file}:{b_line}:{b_col}) with different {}",
            describe(a, names),
            describe(b, names),
            diff.join(", ")
        );
        ctx.err(&names[a.id.0 as usize], msg);
    }
}
