//! Valid fixtures load; notices and compiled shapes are as documented.

use std::path::PathBuf;

use sluice_policy::{load_file, HostRef, NoticeLevel, PolicySnapshot, Protocol, TlsMode};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_ok(name: &str) -> sluice_policy::Loaded {
    match load_file(&fixture(name), 1) {
        Ok(l) => l,
        Err(e) => panic!("{name} failed to load:\n{e}"),
    }
}

fn matched(s: &PolicySnapshot, host: &str, port: u16) -> Vec<(String, usize)> {
    let h = match host.parse() {
        Ok(ip) => HostRef::Ip(ip),
        Err(_) => HostRef::Name(host),
    };
    let mut v: Vec<(String, usize)> = s
        .matching_endpoints(h, port)
        .map(|e| (s.policy(e.policy).key.to_string(), e.index_in_policy))
        .collect();
    v.sort();
    v
}

#[test]
fn openshell_example_loads_with_notices() {
    let l = load_ok("openshell-example.yaml");
    for n in &l.notices {
        eprintln!("{n}");
    }
    let infos: Vec<&str> = l
        .notices
        .iter()
        .filter(|n| n.level == NoticeLevel::Info)
        .map(|n| n.message.as_str())
        .collect();
    for s in ["filesystem_policy", "landlock", "process"] {
        assert!(
            infos.contains(
                &format!("static section `{s}` is accepted and ignored by sluice").as_str()
            ),
            "{infos:?}"
        );
    }
    let warn = |sub: &str| {
        l.notices
            .iter()
            .any(|n| n.level == NoticeLevel::Warning && n.message.contains(sub))
    };
    // The s3 endpoint signs (credential_signing) but the file has no providers.
    assert!(warn("`credential_signing` has no provider in this file"));
    assert!(
        !warn("is not executed"),
        "middlewares run; the loader no longer says otherwise"
    );
    let s = &l.snapshot;
    let keys: Vec<&str> = s.policies().iter().map(|p| &*p.key).collect();
    assert_eq!(
        keys,
        ["github", "internal", "model_api", "npm", "s3", "tools"]
    );
    for (i, p) in s.policies().iter().enumerate() {
        assert_eq!(p.id.0 as usize, i);
        for eid in p.endpoints.iter() {
            assert_eq!(s.endpoint(*eid).policy, p.id);
        }
    }
    for (i, e) in s.endpoints().iter().enumerate() {
        assert_eq!(e.id.0 as usize, i);
    }
    assert_eq!(
        matched(s, "api.github.com", 443),
        [("github".into(), 0), ("github".into(), 1)]
    );
    assert_eq!(
        matched(s, "bucket.s3.us-east-1.amazonaws.com", 443),
        [("s3".into(), 0)]
    );
    assert!(matched(s, "s3.us-east-1.amazonaws.com", 443).is_empty());
    assert_eq!(
        matched(s, "anything.example", 6432),
        [("internal".into(), 3)]
    );
    assert_eq!(matched(s, "203.0.113.10", 9000), [("internal".into(), 2)]);
    assert_eq!(
        matched(s, "::ffff:203.0.113.10", 9000),
        [("internal".into(), 2)]
    );
    let gh = s.policy(s.policies()[0].id);
    assert!(gh.binary_allows("/usr/bin/gh", &[]));
    assert!(gh.binary_allows("/bin/sh", &["/usr/bin/node"]));
    assert!(!gh.binary_allows("/usr/bin/ghx", &[""]));
    let graphql = s.endpoint(gh.endpoints[0]);
    assert_eq!(graphql.protocol, Protocol::Graphql);
    assert_eq!(graphql.graphql_max_body_bytes, 131_072);
    assert_eq!(graphql.graphql_persisted_queries.len(), 1);
    let rest = s.endpoint(gh.endpoints[1]);
    // read-write preset: GET HEAD OPTIONS POST PUT PATCH, no DELETE.
    let methods: Vec<&str> = rest
        .rules
        .iter()
        .filter_map(|r| r.method.as_deref())
        .collect();
    assert_eq!(methods, ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"]);
    assert_eq!(rest.deny_rules.len(), 2);
    let sftp = s
        .endpoints()
        .iter()
        .find(|e| e.host.display() == "sftp.partner.example")
        .map(|e| e.tls);
    assert_eq!(sftp, Some(TlsMode::Skip));
    assert_eq!(s.middlewares().len(), 1);
    assert!(s.middlewares()[0].fail_open);
}

#[test]
fn all_valid_fixtures_load() {
    for name in [
        "valid-openshell-typical.yaml",
        "valid-globs.yaml",
        "valid-mcp-jsonrpc.yaml",
        "valid-l4-mixed.yaml",
    ] {
        let l = load_ok(name);
        assert_eq!(l.snapshot.source(), fixture(name).display().to_string());
        for n in &l.notices {
            eprintln!("{n}");
        }
    }
}

#[test]
fn typical_fixture_shapes() {
    let s = load_ok("valid-openshell-typical.yaml").snapshot;
    assert_eq!(matched(&s, "api.github.com", 443).len(), 2);
    assert_eq!(
        matched(&s, "files.pythonhosted.org", 443),
        [("pypi".into(), 1)]
    );
    let pypi = &s.policies()[2];
    assert!(pypi.binary_allows("/sandbox/.venv/bin/python3", &[]));
    assert!(!pypi.binary_allows("/sandbox/.venv/bin/sub/python3", &[]));
    assert!(!pypi.binary_allows("", &[]));
}

#[test]
fn glob_fixture_shapes() {
    let l = load_ok("valid-globs.yaml");
    let s = &l.snapshot;
    assert_eq!(
        matched(s, "api.example.com", 8443).len(),
        1,
        "host is lowercased and the trailing dot stripped"
    );
    assert_eq!(
        matched(s, "us-central1-aiplatform.googleapis.com", 443).len(),
        1
    );
    assert_eq!(matched(s, "a.b.cdn.example.net", 80).len(), 1);
    assert!(matched(s, "cdn.example.net", 80).is_empty());
    assert!(s.policies()[0].binary_allows("/opt/x/bin/curl", &[]));
}

#[test]
fn l4_fixture_shapes() {
    let l = load_ok("valid-l4-mixed.yaml");
    assert!(l
        .notices
        .iter()
        .any(|n| n.message.contains("very broad CIDR")));
    let s = &l.snapshot;
    assert_eq!(
        matched(s, "10.1.2.4", 9001).len(),
        1,
        "ipv4-mapped host normalized"
    );
    assert_eq!(
        matched(s, "10.30.1.9", 6432).len(),
        1,
        "hostless matches ip hosts too"
    );
    let tcp = s.endpoints().iter().find(|e| e.protocol == Protocol::Tcp);
    assert!(tcp.is_some());
}
