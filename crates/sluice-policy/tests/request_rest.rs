//! REST request evaluation (facts §1.4, §1.5, §2.3, §2.4): tables built
//! from YAML policies.

use sluice_policy::request::{
    canonicalize_path, evaluate_rest, has_l7_routes, QueryParams, RestRequest,
};
use sluice_policy::{load_str, EndpointId, HostRef, PolicySnapshot};

const GITHUB: &str = r#"
version: 1
network_policies:
  github:
    endpoints:
      - host: api.github.com
        port: 443
        path: /graphql
        protocol: graphql
        enforcement: enforce
        rules:
          - allow: { operation_type: query }
      - host: api.github.com
        port: 443
        path: /repos/**
        protocol: rest
        enforcement: enforce
        access: read-write
        deny_rules:
          - { method: "*", path: "/repos/*/*/rulesets" }
          - method: GET
            path: /repos/*/*/tarball/**
            query: { ref: { any: ["refs/heads/main", "main"] } }
    binaries: [ { path: /usr/bin/gh } ]
  docs:
    endpoints:
      - { host: docs.example.com, port: 443, protocol: rest, enforcement: enforce, access: read-only }
      - { host: plain.example.com, port: 443 }
    binaries: [ { path: /usr/bin/curl } ]
"#;

const SHAPES: &str = r#"
version: 1
network_policies:
  a-full:
    endpoints:
      - { host: api.example.com, port: 443, protocol: rest, enforcement: enforce, access: full }
    binaries: [ { path: /usr/bin/a } ]
  b-guard:
    endpoints:
      - host: api.example.com
        port: 443
        protocol: rest
        enforcement: enforce
        rules:
          - allow: { method: GET, path: "/**" }
        deny_rules:
          - { method: DELETE, path: "/admin/**" }
    binaries: [ { path: /usr/bin/b } ]
  shapes:
    endpoints:
      - host: shapes.example.com
        port: 443
        protocol: rest
        enforcement: enforce
        rules:
          - allow: { method: GET, path: /files/* }
          - allow: { method: "*", path: "/api/**" }
          - allow: { method: post, path: /search, query: { state: { any: [open, closed] }, page: "*" } }
        deny_rules:
          - { method: POST, path: /search, query: { state: closed, page: "9*" } }
      - host: shapes.example.com
        port: 443
        path: /v1/**
        protocol: rest
        enforcement: enforce
        access: full
      - host: shapes.example.com
        port: 443
        path: /v1/admin/**
        protocol: rest
        enforcement: enforce
        access: read-only
    binaries: [ { path: /usr/bin/s } ]
"#;

fn load(src: &str) -> PolicySnapshot {
    match load_str(src, "test.yaml", 1) {
        Ok(l) => l.snapshot,
        Err(e) => panic!("policy failed to load:\n{e}"),
    }
}

/// The routes a connection decision would produce: every endpoint matching
/// host:port, in id (precedence) order.
fn routes(s: &PolicySnapshot, host: &str) -> Vec<EndpointId> {
    let mut v: Vec<EndpointId> = s
        .matching_endpoints(HostRef::Name(host), 443)
        .map(|e| e.id)
        .collect();
    v.sort();
    v
}

fn key_of(s: &PolicySnapshot, id: EndpointId) -> String {
    let e = s.endpoint(id);
    format!("{}[{}]", s.policy(e.policy).key, e.index_in_policy)
}

struct Case {
    host: &'static str,
    method: &'static str,
    target: &'static str,
    allowed: bool,
    /// `policy-key[index]` of the governing endpoint.
    endpoint: Option<&'static str>,
    reason: &'static str,
    /// `rule` for denials, the rendered `decided_by` for allows.
    rule: Option<&'static str>,
}

const fn c(
    host: &'static str,
    method: &'static str,
    target: &'static str,
    allowed: bool,
    endpoint: Option<&'static str>,
    reason: &'static str,
    rule: Option<&'static str>,
) -> Case {
    Case {
        host,
        method,
        target,
        allowed,
        endpoint,
        reason,
        rule,
    }
}

fn run(src: &str, cases: &[Case]) {
    let s = load(src);
    for k in cases {
        let (raw_path, raw_query) = k.target.split_once('?').unwrap_or((k.target, ""));
        let path = canonicalize_path(raw_path, false).expect("valid path");
        let query = QueryParams::parse(raw_query).expect("valid query");
        let req = RestRequest {
            method: k.method,
            path: &path,
            query: &query,
        };
        let r = routes(&s, k.host);
        let v = evaluate_rest(&s, &r, &req);
        let what = format!("{} {} {}", k.host, k.method, k.target);
        assert_eq!(v.allowed, k.allowed, "{what}: {v:?}");
        assert_eq!(
            v.endpoint.map(|id| key_of(&s, id)).as_deref(),
            k.endpoint,
            "{what}"
        );
        assert_eq!(v.reason, k.reason, "{what}");
        let rule = if v.allowed {
            assert_eq!(v.rule, None, "{what}: no allocation when allowed");
            v.decided_by.and_then(|d| d.describe(&s))
        } else {
            v.rule.clone()
        };
        assert_eq!(rule.as_deref(), k.rule, "{what}");
    }
}

#[test]
#[rustfmt::skip]
fn github_rest_and_graphql_endpoints() {
    const GQL: Option<&str> = Some("github[0]");
    const REST: Option<&str> = Some("github[1]");
    const RULESETS: Option<&str> = Some("deny * /repos/*/*/rulesets");
    const TARBALL: Option<&str> =
        Some("deny GET /repos/*/*/tarball/** query ref=any(refs/heads/main, main)");
    let h = "api.github.com";
    run(
        GITHUB,
        &[
            c(h, "GET", "/repos/o/r/issues", true, REST, "", Some("allow GET **")),
            c(h, "POST", "/repos/o/r/issues", true, REST, "", Some("allow POST **")),
            c(h, "PATCH", "/repos/o/r", true, REST, "", Some("allow PATCH **")),
            c(h, "DELETE", "/repos/o/r", false, REST, "DELETE /repos/o/r not permitted by policy", None),
            c(h, "GET", "/repos/o/r/rulesets", false, REST, "GET /repos/o/r/rulesets blocked by deny rule", RULESETS),
            c(h, "PUT", "/repos/o/r/rulesets", false, REST, "PUT /repos/o/r/rulesets blocked by deny rule", RULESETS),
            // canonicalization happens before policy: dot segments and ;params cannot dodge a deny rule
            c(h, "GET", "/repos/o/r/x/../rulesets;v=1", false, REST, "GET /repos/o/r/rulesets blocked by deny rule", RULESETS),
            c(h, "GET", "/repos/o/r/%72ulesets", false, REST, "GET /repos/o/r/rulesets blocked by deny rule", RULESETS),
            // deny query: any value of the key matching fires the rule
            c(h, "GET", "/repos/o/r/tarball/v1?ref=main", false, REST, "GET /repos/o/r/tarball/v1 blocked by deny rule", TARBALL),
            c(h, "GET", "/repos/o/r/tarball/v1?ref=dev&ref=refs%2Fheads%2Fmain", false, REST, "GET /repos/o/r/tarball/v1 blocked by deny rule", TARBALL),
            c(h, "GET", "/repos/o/r/tarball/v1?ref=dev", true, REST, "", Some("allow GET **")),
            // deny query: a missing key means the deny rule does not apply
            c(h, "GET", "/repos/o/r/tarball/v1", true, REST, "", Some("allow GET **")),
            c(h, "GET", "/repos/o/r/tarball/v1?other=main", true, REST, "", Some("allow GET **")),
            // endpoint path selection: /graphql governs POST /graphql, whose rules are GraphQL-shaped
            c(h, "POST", "/graphql", false, GQL, "POST /graphql not permitted by policy", None),
            // no L7 endpoint path matched
            c(h, "GET", "/user", false, None, "no L7 endpoint path matched request", None),
            c(h, "GET", "/repos", false, None, "no L7 endpoint path matched request", None),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn read_only_preset_and_get_matches_head() {
    const D: Option<&str> = Some("docs[0]");
    let h = "docs.example.com";
    run(
        GITHUB,
        &[
            c(h, "GET", "/guide", true, D, "", Some("allow GET **")),
            c(h, "HEAD", "/guide", true, D, "", Some("allow GET **")),
            c(h, "OPTIONS", "/", true, D, "", Some("allow OPTIONS **")),
            c(h, "get", "/guide", true, D, "", Some("allow GET **")),
            c(h, "POST", "/guide", false, D, "POST /guide not permitted by policy", None),
            c(h, "DELETE", "/guide", false, D, "DELETE /guide not permitted by policy", None),
            // an L4-only host has no L7 candidates
            c("plain.example.com", "GET", "/", false, None, "no L7 endpoint path matched request", None),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn rule_shapes_and_queries() {
    const S: Option<&str> = Some("shapes[0]");
    const V1: Option<&str> = Some("shapes[1]");
    const ADMIN: Option<&str> = Some("shapes[2]");
    const SEARCH: Option<&str> = Some("allow POST /search query page=*, state=any(open, closed)");
    const DENY_SEARCH: Option<&str> = Some("deny POST /search query page=9*, state=closed");
    let h = "shapes.example.com";
    run(
        SHAPES,
        &[
            // `*` does not cross '/'
            c(h, "GET", "/files/a", true, S, "", Some("allow GET /files/*")),
            c(h, "HEAD", "/files/a", true, S, "", Some("allow GET /files/*")),
            c(h, "GET", "/files/a/b", false, S, "GET /files/a/b not permitted by policy", None),
            // `/api/**` does not match `/api`; method `*`
            c(h, "DELETE", "/api/x/y", true, S, "", Some("allow * /api/**")),
            c(h, "PATCH", "/api/", true, S, "", Some("allow * /api/**")),
            c(h, "GET", "/api", false, S, "GET /api not permitted by policy", None),
            // allow query: every configured key present, every value matching
            c(h, "POST", "/search?state=open&page=1", true, S, "", SEARCH),
            c(h, "POST", "/search?state=open&state=closed&page=1", true, S, "", SEARCH),
            c(h, "POST", "/search?state=open&state=all&page=1", false, S, "POST /search not permitted by policy", None),
            c(h, "POST", "/search?state=open", false, S, "POST /search not permitted by policy", None),
            c(h, "POST", "/search?page=1", false, S, "POST /search not permitted by policy", None),
            // query globs use '.' as delimiter
            c(h, "POST", "/search?state=open&page=1.2", false, S, "POST /search not permitted by policy", None),
            // deny query: every key present with any matching value
            c(h, "POST", "/search?state=open&state=closed&page=1&page=99", false, S, "POST /search blocked by deny rule", DENY_SEARCH),
            c(h, "POST", "/search?state=closed&page=1", true, S, "", SEARCH),
            // endpoint path specificity: the most specific matching path governs
            c(h, "GET", "/v1/admin/x", true, ADMIN, "", Some("allow GET **")),
            c(h, "GET", "/v1/x", true, V1, "", Some("allow * **")),
            c(h, "GET", "/v1", false, S, "GET /v1 not permitted by policy", None),
            // any candidate may allow: the broader /v1/** full access still allows
            c(h, "DELETE", "/v1/admin/x", true, ADMIN, "", Some("allow * **")),
            c(h, "PUT", "/v1/admin/x?state=open", true, ADMIN, "", Some("allow * **")),
            c(h, "OPTIONS", "/v1/admin/x", true, ADMIN, "", Some("allow OPTIONS **")),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn deny_rules_win_across_policies() {
    const A: Option<&str> = Some("a-full[0]");
    const DENY: Option<&str> = Some("deny DELETE /admin/**");
    let h = "api.example.com";
    run(
        SHAPES,
        &[
            c(h, "DELETE", "/admin/users/1", false, A, "DELETE /admin/users/1 blocked by deny rule", DENY),
            c(h, "DELETE", "/users/1", true, A, "", Some("allow * **")),
            c(h, "GET", "/admin/users", true, A, "", Some("allow * **")),
        ],
    );
}

#[test]
fn has_l7_routes_and_foreign_ids() {
    let s = load(GITHUB);
    let q = QueryParams::default();
    let cases: &[(&[EndpointId], bool)] = &[
        (&[], false),
        (&routes(&s, "plain.example.com"), false),
        (&routes(&s, "docs.example.com"), true),
        (&routes(&s, "api.github.com"), true),
        (&[EndpointId(9999)], false),
    ];
    for (r, want) in cases {
        assert_eq!(has_l7_routes(&s, r), *want, "{r:?}");
        let req = RestRequest {
            method: "GET",
            path: "/",
            query: &q,
        };
        let v = evaluate_rest(&s, r, &req);
        assert_eq!(v.allowed, *want && r.len() == 1, "{r:?}");
    }
}

#[test]
fn out_of_bounds_requests_match_nothing_and_messages_stay_bounded() {
    let s = load(GITHUB);
    let r = routes(&s, "docs.example.com");
    let q = QueryParams::default();
    let long_method = "G".repeat(100);
    let long_path = format!("/{}", "p".repeat(10_000));
    let cases: &[(&str, &str)] = &[
        ("", "/x"),
        (&long_method, "/x"),
        ("GET", &long_path),
        ("GET", "relative"),
        ("G\u{e9}T", "/x"),
    ];
    for (method, path) in cases {
        let req = RestRequest {
            method,
            path,
            query: &q,
        };
        let v = evaluate_rest(&s, &r, &req);
        assert!(!v.allowed, "{method:?}");
        assert!(v.reason.len() < 4096 + 64, "{}", v.reason.len());
    }
}

/// WebSocket message methods: `WEBSOCKET_TEXT` and `WEBSOCKET_BINARY` are
/// evaluated like request methods on the upgrade path. Binary needs its
/// own allow (or `*`): a text rule never allows binary, so a read-only or
/// text-only channel refuses binary messages; `read-write` allows both.
#[test]
fn websocket_message_methods() {
    const WS: &str = r#"
version: 1
network_policies:
  ws:
    endpoints:
      - { host: ro.example.com, port: 443, protocol: websocket, enforcement: enforce, access: read-only }
      - { host: rw.example.com, port: 443, protocol: websocket, enforcement: enforce, access: read-write }
      - { host: full.example.com, port: 443, protocol: websocket, enforcement: enforce, access: full }
      - host: custom.example.com
        port: 443
        protocol: websocket
        enforcement: enforce
        rules:
          - allow: { method: GET, path: "/**" }
          - allow: { method: WEBSOCKET_TEXT, path: "/**" }
          - allow: { method: websocket_binary, path: "/bin/**" }
        deny_rules:
          - { method: WEBSOCKET_BINARY, path: /bin/secret }
    binaries: [ { path: /usr/bin/agent } ]
"#;
    let snap = load_str(WS, "ws.yaml", 1).expect("policy loads").snapshot;
    let q = QueryParams::default();
    let allowed = |id: u32, method: &str, path: &str| {
        evaluate_rest(
            &snap,
            &[EndpointId(id)],
            &RestRequest {
                method,
                path,
                query: &q,
            },
        )
        .allowed
    };
    // (endpoint, method, path, allowed)
    let cases: &[(u32, &str, &str, bool)] = &[
        (0, "GET", "/feed", true),
        (0, "WEBSOCKET_TEXT", "/feed", false),
        (0, "WEBSOCKET_BINARY", "/feed", false),
        (1, "WEBSOCKET_TEXT", "/feed", true),
        (1, "WEBSOCKET_BINARY", "/feed", true),
        (2, "WEBSOCKET_BINARY", "/feed", true),
        (3, "WEBSOCKET_TEXT", "/chat", true),
        (3, "WEBSOCKET_BINARY", "/chat", false),
        (3, "WEBSOCKET_BINARY", "/bin/upload", true),
        (3, "WEBSOCKET_BINARY", "/bin/secret", false),
        (3, "WEBSOCKET_TEXT", "/bin/secret", true),
    ];
    for (id, method, path, want) in cases {
        assert_eq!(allowed(*id, method, path), *want, "{id} {method} {path}");
    }
    let bad = WS.replace("websocket_binary", "WEBSOCKET_BYTES");
    let err = load_str(&bad, "ws.yaml", 1).unwrap_err().to_string();
    assert!(
        err.contains("websocket method `WEBSOCKET_BYTES` must be GET, WEBSOCKET_TEXT, WEBSOCKET_BINARY or `*`"),
        "{err}"
    );
}
