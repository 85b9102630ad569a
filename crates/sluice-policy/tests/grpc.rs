//! `protocol: grpc` (ARCHITECTURE §6.6): rules on `package.Service/Method`
//! globs, compiled to `POST /package.Service/Method` and evaluated like REST;
//! invalid method shapes fail with `LINE:COL`.

use sluice_policy::request::{canonicalize_path, evaluate_rest, QueryParams, RestRequest};
use sluice_policy::{load_str, EndpointId, HostRef, PolicySnapshot, Protocol};

const GRPC: &str = r#"
version: 1
network_policies:
  greeter:
    endpoints:
      - host: api.internal
        port: 443
        protocol: grpc
        enforcement: enforce
        rules:
          - allow: { method: "helloworld.Greeter/SayHello" }
          - allow: { method: "helloworld.Greeter/List*" }
          - allow: { method: "admin.*/*" }
        deny_rules:
          - { method: "admin.*/Delete*" }
      - host: full.internal
        port: 443
        protocol: grpc
        enforcement: enforce
        access: full
        deny_rules:
          - { method: "**" }
    binaries: [ { path: /usr/bin/python3 } ]
"#;

fn load(src: &str) -> PolicySnapshot {
    match load_str(src, "grpc.yaml", 1) {
        Ok(l) => l.snapshot,
        Err(e) => panic!("policy failed to load:\n{e}"),
    }
}

fn routes(s: &PolicySnapshot, host: &str) -> Vec<EndpointId> {
    let mut v: Vec<EndpointId> = s
        .matching_endpoints(HostRef::Name(host), 443)
        .map(|e| e.id)
        .collect();
    v.sort();
    v
}

#[test]
fn grpc_method_globs() {
    let s = load(GRPC);
    assert_eq!(
        s.endpoint(routes(&s, "api.internal")[0]).protocol,
        Protocol::Grpc
    );
    assert_eq!(Protocol::Grpc.as_str(), "grpc");
    // (host, http method, path, allowed, reason substring)
    let cases: &[(&str, &str, &str, bool, &str)] = &[
        (
            "api.internal",
            "POST",
            "/helloworld.Greeter/SayHello",
            true,
            "",
        ),
        (
            "api.internal",
            "POST",
            "/helloworld.Greeter/ListFeatures",
            true,
            "",
        ),
        (
            "api.internal",
            "POST",
            "/helloworld.Greeter/SayGoodbye",
            false,
            "not permitted",
        ),
        (
            "api.internal",
            "GET",
            "/helloworld.Greeter/SayHello",
            false,
            "not permitted",
        ),
        (
            "api.internal",
            "POST",
            "/helloworld.Greeter/SayHello/x",
            false,
            "not permitted",
        ),
        (
            "api.internal",
            "POST",
            "/other.Greeter/SayHello",
            false,
            "not permitted",
        ),
        ("api.internal", "POST", "/admin.Users/Get", true, ""),
        (
            "api.internal",
            "POST",
            "/admin.Users/DeleteAll",
            false,
            "deny rule",
        ),
        ("full.internal", "POST", "/a.B/C", false, "deny rule"),
    ];
    for (host, method, path, allowed, reason) in cases {
        let r = routes(&s, host);
        let path = canonicalize_path(path, false).unwrap();
        let q = QueryParams::parse("").unwrap();
        let v = evaluate_rest(
            &s,
            &r,
            &RestRequest {
                method,
                path: &path,
                query: &q,
            },
        );
        assert_eq!(v.allowed, *allowed, "{host} {method} {path}: {v:?}");
        assert!(v.reason.contains(reason), "{host} {method} {path}: {v:?}");
    }
}

#[test]
fn grpc_invalid_rules_are_located() {
    let base = |rule: &str| {
        format!(
            "version: 1\nnetwork_policies:\n  p:\n    endpoints:\n      - host: api.internal\n        port: 443\n        protocol: grpc\n        rules:\n          - allow: {rule}\n    binaries: [ {{ path: /usr/bin/x }} ]\n"
        )
    };
    let cases: &[(&str, &str)] = &[
        (
            "{ method: \"SayHello\" }",
            "9:30: grpc method `SayHello` must be `package.Service/Method`",
        ),
        ("{ method: \"a.B/\" }", "9:30: grpc method `a.B/` must be"),
        (
            "{ method: \"a.B/C/D\" }",
            "9:30: grpc method `a.B/C/D` must be",
        ),
        ("{ method: \"a B/C\" }", "9:30: grpc method `a B/C` must be"),
        (
            "{ method: \"a.B/c.d\" }",
            "9:30: grpc method `a.B/c.d` must be",
        ),
        ("{ path: \"/a.B/C\" }", "`path` is not valid in a grpc rule"),
        ("{ method: \"a.B/[C]\" }", "must be"),
    ];
    for (rule, want) in cases {
        let src = base(rule);
        let err = match load_str(&src, "g.yaml", 1) {
            Ok(_) => panic!("{rule} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{rule}: {err}");
    }
    let presets = "version: 1\nnetwork_policies:\n  p:\n    endpoints:\n      - { host: api.internal, port: 443, protocol: grpc, access: read-only }\n    binaries: [ { path: /usr/bin/x } ]\n";
    let err = load_str(presets, "g.yaml", 1).err().unwrap().to_string();
    assert!(
        err.contains("`access` presets are not defined for grpc"),
        "{err}"
    );
}
