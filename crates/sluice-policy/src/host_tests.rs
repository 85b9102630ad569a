//! Host pattern tables: parsing, matching, overlap, index suffixes.

use super::*;
use std::net::IpAddr;

fn pat(s: &str) -> HostPattern {
    parse_host(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn overlap_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("api.example.com", "api.example.com", true),
        ("api.example.com", "www.example.com", false),
        ("*.example.com", "api.example.com", true),
        ("*.example.com", "a.b.example.com", false),
        ("**.example.com", "a.b.example.com", true),
        ("**.example.com", "*.example.com", true),
        ("**.example.com", "*.other.com", false),
        ("*.s3.*.amazonaws.com", "*.s3.us-east-1.amazonaws.com", true),
        ("*.s3.*.amazonaws.com", "**.amazonaws.com", true),
        ("*-ai.googleapis.com", "x-*.googleapis.com", true),
        ("*-ai.googleapis.com", "*-ml.googleapis.com", false),
        ("ab*.example.com", "ac*.example.com", false),
        ("**.a.example.com", "**.b.example.com", false),
        ("**.x.a.example.com", "**.a.example.com", true),
        ("10.0.0.1", "10.0.0.1", true),
        ("10.0.0.1", "*.0.0.1", false),
    ];
    for (a, b, want) in cases {
        assert_eq!(pat(a).overlaps(&pat(b)), *want, "{a} vs {b}");
        assert_eq!(pat(b).overlaps(&pat(a)), *want, "{b} vs {a}");
    }
    assert!(HostPattern::Any.overlaps(&pat("x.example.com")));
}

#[test]
fn literal_suffixes() {
    for (p, want) in [
        ("*.example.com", "example.com"),
        ("*.s3.*.amazonaws.com", "amazonaws.com"),
        ("**.example.com", "example.com"),
        ("*-aiplatform.googleapis.com", "googleapis.com"),
        ("www.example.*", ""),
    ] {
        match pat(p) {
            HostPattern::Glob(g) => assert_eq!(g.literal_suffix(), want, "{p}"),
            other => panic!("{p}: {other:?}"),
        }
    }
}

fn m(p: &str, host: &str) -> bool {
    let h = match parse_ip_literal(host) {
        Some(ip) => HostRef::Ip(ip),
        None => HostRef::Name(host),
    };
    pat(p).matches(h)
}

#[test]
fn host_match_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("api.example.com", "api.example.com", true),
        ("API.Example.com", "api.example.com", true),
        ("api.example.com", "API.EXAMPLE.COM", true),
        ("api.example.com", "www.example.com", false),
        ("*.example.com", "api.example.com", true),
        ("*.example.com", "API.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "a.b.example.com", false),
        ("**.example.com", "a.example.com", true),
        ("**.example.com", "a.b.c.example.com", true),
        ("**.example.com", "example.com", false),
        (
            "*-aiplatform.googleapis.com",
            "us-central1-aiplatform.googleapis.com",
            true,
        ),
        (
            "*-aiplatform.googleapis.com",
            "aiplatform.googleapis.com",
            false,
        ),
        (
            "*-aiplatform.googleapis.com",
            "x.us-aiplatform.googleapis.com",
            false,
        ),
        ("api-*.example.com", "api-v2.example.com", true),
        ("*.s3.*.amazonaws.com", "b.s3.us-east-1.amazonaws.com", true),
        ("*.s3.*.amazonaws.com", "b.s3.amazonaws.com", false),
        ("*.0.0.10.example", "1.0.0.10.example", true),
        ("*.example.com", "10.0.0.1", false),
        ("10.0.0.1", "10.0.0.1", true),
        ("10.0.0.1", "::ffff:10.0.0.1", true),
        ("::ffff:10.0.0.1", "10.0.0.1", true),
        ("[2001:db8::1]", "2001:db8::1", true),
        ("10.0.0.1", "10.0.0.2", false),
    ];
    for (p, h, want) in cases {
        assert_eq!(m(p, h), *want, "{p} vs {h}");
    }
    assert!(HostPattern::Any.matches(HostRef::Name("x.y")));
    assert!(HostPattern::Any.matches(HostRef::Ip(IpAddr::from([10, 0, 0, 1]))));
    assert!(matches!(pat("10.0.0.1"), HostPattern::Ip(_)));
}

#[test]
fn host_shape_rejections() {
    let cases: &[(&str, &str)] = &[
        ("*", "bare wildcard"),
        ("**", "bare wildcard"),
        ("*.com", "top-level-domain"),
        ("**.com", "top-level-domain"),
        ("example.*", "top-level-domain"),
        ("a.**.example.com", "entire first label"),
        ("**x.example.com", "entire first label"),
        ("*.s3.us-*.amazonaws.com", "whole `*` label"),
        ("a*b*c.example.com", "at most one"),
        ("{a,b}.example.com", "only `*` and `**`"),
        ("a?.example.com", "only `*` and `**`"),
        ("[ab].example.com", "only `*` and `**`"),
        ("a..example.com", "empty label"),
        ("bad host.example.com", "invalid label"),
        ("exa/mple.com", "invalid label"),
    ];
    for (p, want) in cases {
        match parse_host(p) {
            Ok(h) => panic!("{p}: accepted as {h:?}"),
            Err(e) => assert!(e.contains(want), "{p}: {e}"),
        }
    }
}
