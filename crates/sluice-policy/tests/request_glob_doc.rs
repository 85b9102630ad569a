//! The glob example table in `docs/policy.md` ("Request-level (REST)
//! rules" → "Glob examples") is data for this test: every row is checked
//! through the public API the row's kind names.

use sluice_policy::request::{evaluate_rest, QueryParams, RestRequest};
use sluice_policy::{load_str, EndpointId, HostRef, PolicySnapshot};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/policy.md"));

/// (kind, pattern, input, match?) rows between the table markers.
fn rows() -> Vec<(String, String, String, bool)> {
    let begin = DOC
        .find("<!-- glob-examples:begin -->")
        .expect("begin marker");
    let end = DOC.find("<!-- glob-examples:end -->").expect("end marker");
    let mut out = Vec::new();
    for line in DOC[begin..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .collect();
        let [kind, pattern, input, want] = cells.as_slice() else {
            panic!("malformed row {line:?}");
        };
        if kind == "Kind" || kind.starts_with("---") {
            continue;
        }
        let want = match want.as_str() {
            "yes" => true,
            "no" => false,
            other => panic!("match column must be yes/no, got {other:?}"),
        };
        out.push((kind.clone(), pattern.clone(), input.clone(), want));
    }
    out
}

fn load(src: &str) -> PolicySnapshot {
    match load_str(src, "doc.yaml", 1) {
        Ok(l) => l.snapshot,
        Err(e) => panic!("{e}\n{src}"),
    }
}

fn rest_allows(rule: &str, method: &str, path: &str, query: &str) -> bool {
    let s = load(&format!(
        "version: 1\nnetwork_policies:\n  t:\n    endpoints:\n      - host: t.example.com\n        port: 443\n        protocol: rest\n        enforcement: enforce\n        rules:\n          - allow: {rule}\n    binaries: [ {{ path: /usr/bin/t }} ]\n"
    ));
    let q = QueryParams::parse(query).expect("query parses");
    let req = RestRequest {
        method,
        path,
        query: &q,
    };
    evaluate_rest(&s, &[EndpointId(0)], &req).allowed
}

fn check(kind: &str, pattern: &str, input: &str) -> bool {
    match kind {
        "path" => rest_allows(
            &format!("{{ method: GET, path: \"{pattern}\" }}"),
            "GET",
            input,
            "",
        ),
        "query" => rest_allows(
            &format!("{{ method: GET, path: /q, query: {{ v: \"{pattern}\" }} }}"),
            "GET",
            "/q",
            &format!("v={input}"),
        ),
        "host" => {
            let s = load(&format!(
                "version: 1\nnetwork_policies:\n  t:\n    endpoints:\n      - {{ host: \"{pattern}\", port: 443 }}\n    binaries: [ {{ path: /usr/bin/t }} ]\n"
            ));
            let by_pattern = s.endpoints()[0].host.matches(HostRef::Name(input));
            let lower = input.to_ascii_lowercase();
            let by_index = s.matching_endpoints(HostRef::Name(&lower), 443).count() == 1;
            assert_eq!(
                by_pattern, by_index,
                "index and pattern disagree on {pattern} vs {input}"
            );
            by_pattern
        }
        "binary" => {
            let s = load(&format!(
                "version: 1\nnetwork_policies:\n  t:\n    endpoints:\n      - {{ host: t.example.com, port: 443 }}\n    binaries: [ {{ path: \"{pattern}\" }} ]\n"
            ));
            s.policies()[0].binary_allows(input, &[])
        }
        other => panic!("unknown kind {other:?}"),
    }
}

#[test]
fn glob_examples_in_policy_doc_hold() {
    let rows = rows();
    assert!(rows.len() >= 20, "only {} rows", rows.len());
    for kind in ["path", "host", "query", "binary"] {
        assert!(rows.iter().any(|r| r.0 == kind), "no {kind} rows");
    }
    for (kind, pattern, input, want) in &rows {
        assert_eq!(
            check(kind, pattern, input),
            *want,
            "{kind}: `{pattern}` vs `{input}`"
        );
    }
}
