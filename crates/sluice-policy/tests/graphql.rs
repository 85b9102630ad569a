//! GraphQL request policy (facts §1.4, §1.5, §1.6, §2.4): items from HTTP,
//! classification, and evaluation against endpoints built from YAML.

use sluice_policy::request::graphql::{
    classify, evaluate, evaluate_operation, items_from_http, ClassifiedOperation, GraphqlError,
    GraphqlItem, OperationType,
};
use sluice_policy::request::ProtocolVerdict;
use sluice_policy::{load_str, Endpoint, PolicySnapshot};

const POLICY: &str = r#"
version: 1
network_policies:
  github:
    endpoints:
      - host: api.github.com
        port: 443
        path: /graphql
        protocol: graphql
        enforcement: enforce
        persisted_queries: allow_registered
        graphql_persisted_queries:
          5f2c9a: { operation_type: query, operation_name: Viewer, fields: [viewer] }
          dd00ee: { operation_type: mutation, operation_name: Nuke, fields: [deleteRepository] }
          ab12cd: { operation_type: mutation, operation_name: Other, fields: [updateUser] }
        graphql_max_body_bytes: 131072
        rules:
          - allow: { operation_type: query, fields: [viewer, "repository*"] }
          - allow: { operation_type: mutation, operation_name: "Issue*", fields: [createIssue] }
        deny_rules:
          - { operation_type: mutation, fields: [deleteRepository] }
    binaries: [ { path: /usr/bin/gh } ]
  presets:
    endpoints:
      - { host: ro.example.com, port: 443, protocol: graphql, enforcement: enforce, access: read-only }
      - { host: rw.example.com, port: 443, protocol: graphql, enforcement: enforce, access: read-write }
      - { host: full.example.com, port: 443, protocol: graphql, enforcement: enforce, access: full }
      - host: subs.example.com
        port: 443
        protocol: graphql
        enforcement: audit
        rules:
          - allow: { operation_type: subscription, operation_name: "On*", fields: ["issue*"] }
          - allow: { operation_type: query }
        deny_rules:
          - { operation_type: "*", operation_name: "Admin*" }
      - host: typename.example.com
        port: 443
        protocol: graphql
        enforcement: enforce
        rules:
          - allow: { operation_type: query, fields: [viewer] }
          - allow: { operation_type: mutation, fields: [viewer, __typename] }
    binaries: [ { path: /usr/bin/curl } ]
"#;

fn snapshot() -> PolicySnapshot {
    match load_str(POLICY, "graphql.yaml", 1) {
        Ok(l) => l.snapshot,
        Err(e) => panic!("policy must load: {e}"),
    }
}

fn endpoint<'a>(snap: &'a PolicySnapshot, host: &str) -> &'a Endpoint {
    snap.endpoints()
        .iter()
        .find(|e| matches!(&e.host, sluice_policy::HostPattern::Exact(h) if &**h == host))
        .expect("endpoint exists")
}

fn post(doc: &str, name: Option<&str>) -> GraphqlItem {
    GraphqlItem {
        query: Some(doc.to_owned()),
        operation_name: name.map(str::to_owned),
        persisted_id: None,
    }
}

fn hash(id: &str) -> GraphqlItem {
    GraphqlItem {
        persisted_id: Some(id.to_owned()),
        ..GraphqlItem::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Allow,
    /// Deny rule matched: soft.
    Blocked,
    /// No allow rule: soft.
    NotPermitted,
    /// Persisted query not usable: hard.
    Unregistered,
    /// Error: hard.
    Rejected,
}

const BLOCKED: &str = "GraphQL operation blocked by endpoint policy";
const NOT_PERMITTED: &str = "GraphQL operation not permitted by policy";
const UNREGISTERED: &str = "GraphQL persisted query is not registered";

fn check(case: &str, v: &ProtocolVerdict, want: Want) {
    let ok = match want {
        Want::Allow => v.allowed && !v.hard && v.reason.is_empty(),
        Want::Blocked => !v.allowed && !v.hard && v.reason == BLOCKED && v.rule.is_some(),
        Want::NotPermitted => !v.allowed && !v.hard && v.reason == NOT_PERMITTED,
        Want::Unregistered => !v.allowed && v.hard && v.reason == UNREGISTERED,
        Want::Rejected => {
            !v.allowed && v.hard && v.reason.starts_with("GraphQL request rejected: ")
        }
    };
    assert!(ok, "{case}: want {want:?}, got {v:?}");
    assert!(v.summary.len() <= 512, "{case}: summary bounded");
}

#[test]
fn graphql_github_endpoint_table() {
    use Want::*;
    let snap = snapshot();
    let ep = endpoint(&snap, "api.github.com");
    let cases: &[(&str, Vec<GraphqlItem>, Want)] = &[
        ("shorthand query", vec![post("{ viewer { login } }", None)], Allow),
        (
            "named query, glob field",
            vec![post(
                "query Q { viewer { login } repositoryOwner(login: \"o\") { id } }",
                None,
            )],
            Allow,
        ),
        (
            "query field outside allow list",
            vec![post("query { viewer { id } organization(login: \"o\") { id } }", None)],
            NotPermitted,
        ),
        (
            "mutation with matching name glob",
            vec![post("mutation IssueOpen { createIssue(input: {}) { issue { id } } }", None)],
            Allow,
        ),
        (
            "mutation with other name",
            vec![post("mutation Open { createIssue(input: {}) { issue { id } } }", None)],
            NotPermitted,
        ),
        (
            "anonymous mutation vs name glob",
            vec![post("mutation { createIssue(input: {}) { issue { id } } }", None)],
            NotPermitted,
        ),
        (
            "operation_name glob does not cross '.'-free names only",
            vec![post("mutation IssueX { createIssue { id } addComment { id } }", None)],
            NotPermitted,
        ),
        (
            "denied mutation field",
            vec![post("mutation IssueX { deleteRepository(input: {}) { id } }", None)],
            Blocked,
        ),
        (
            "alias of a denied field",
            vec![post("mutation IssueX { x: deleteRepository(input: {}) { id } }", None)],
            Blocked,
        ),
        (
            "alias named like an allowed field",
            vec![post("mutation IssueX { createIssue: deleteRepository { id } }", None)],
            Blocked,
        ),
        (
            "fragment spread at root hides denied field",
            vec![post(
                "mutation IssueX { createIssue { id } ...F } fragment F on Mutation { deleteRepository { id } }",
                None,
            )],
            Blocked,
        ),
        (
            "inline fragment at root",
            vec![post(
                "mutation IssueX { ... on Mutation { deleteRepository { id } } }",
                None,
            )],
            Blocked,
        ),
        (
            "nested fragment spreads",
            vec![post(
                "mutation IssueX { ...A } fragment A on Mutation { ... @include(if: true) { ...B } } fragment B on Mutation { d: deleteRepository { id } }",
                None,
            )],
            Blocked,
        ),
        (
            "fragment expansion of an allowed query",
            vec![post(
                "query { ...V } fragment V on Query { viewer { login } repository(name: \"r\") { id } }",
                None,
            )],
            Allow,
        ),
        (
            "nested field under an allowed root is not a root field",
            vec![post("{ viewer { deleteRepository } }", None)],
            Allow,
        ),
        (
            "cyclic fragments",
            vec![post(
                "query { ...A } fragment A on Query { viewer { id } ...B } fragment B on Query { ...A }",
                None,
            )],
            Rejected,
        ),
        (
            "unknown fragment",
            vec![post("query { ...Missing }", None)],
            Rejected,
        ),
        (
            "batch all allowed",
            vec![
                post("{ viewer { id } }", None),
                post("mutation IssueA { createIssue { id } }", None),
            ],
            Allow,
        ),
        (
            "batch with one denied op",
            vec![
                post("{ viewer { id } }", None),
                post("mutation IssueA { deleteRepository { id } }", None),
            ],
            Blocked,
        ),
        (
            "batch with one unpermitted op",
            vec![
                post("{ viewer { id } }", None),
                post("subscription { viewer { id } }", None),
            ],
            NotPermitted,
        ),
        ("empty batch", vec![], Rejected),
        (
            "several operations without operationName",
            vec![post(
                "query A { viewer { id } } mutation B { deleteRepository { id } }",
                None,
            )],
            Rejected,
        ),
        (
            "operationName selects the query",
            vec![post(
                "query A { viewer { id } } mutation B { deleteRepository { id } }",
                Some("A"),
            )],
            Allow,
        ),
        (
            "operationName selects the mutation",
            vec![post(
                "query A { viewer { id } } mutation B { deleteRepository { id } }",
                Some("B"),
            )],
            Blocked,
        ),
        (
            "operationName names no operation",
            vec![post("query A { viewer { id } }", Some("Z"))],
            Rejected,
        ),
        (
            "duplicate operation names",
            vec![post("query A { viewer { id } } query A { organization { id } }", Some("A"))],
            Rejected,
        ),
        ("unparseable document", vec![post("query { viewer { ", None)], Rejected),
        ("not graphql at all", vec![post("DROP TABLE x", None)], Rejected),
        (
            "schema definitions",
            vec![post("type Query { viewer: String } { viewer }", None)],
            Rejected,
        ),
        ("missing query and id", vec![GraphqlItem::default()], Rejected),
        (
            "one bad item rejects the batch",
            vec![post("{ viewer { id } }", None), post("{", None)],
            Rejected,
        ),
        ("registered hash-only query", vec![hash("5f2c9a")], Allow),
        ("registered hash-only denied mutation", vec![hash("dd00ee")], Blocked),
        ("registered hash-only unpermitted", vec![hash("ab12cd")], NotPermitted),
        ("unregistered hash", vec![hash("ffffff")], Unregistered),
        (
            "unregistered hash in a batch",
            vec![post("{ viewer { id } }", None), hash("ffffff")],
            Unregistered,
        ),
        (
            "apq hash with its query is classified from the query",
            vec![GraphqlItem {
                persisted_id: Some("ffffff".into()),
                ..post("{ viewer { id } }", None)
            }],
            Allow,
        ),
        ("__typename at root is a field", vec![post("{ __typename viewer { id } }", None)], NotPermitted),
    ];
    for (name, items, want) in cases {
        check(name, &evaluate(ep, items), *want);
    }
}

#[test]
fn graphql_verdict_details() {
    let snap = snapshot();
    let ep = endpoint(&snap, "api.github.com");
    let v = evaluate(
        ep,
        &[post(
            "query Viewer { viewer { id } r: repository(name: \"x\") { id } viewer { login } }",
            None,
        )],
    );
    assert!(v.allowed);
    assert_eq!(v.summary, "query Viewer fields=repository,viewer");
    assert_eq!(
        v.rule.as_deref(),
        Some("allow query fields=viewer,repository*")
    );

    let v = evaluate(
        ep,
        &[post("mutation IssueX { x: deleteRepository { id } }", None)],
    );
    assert_eq!(
        v.rule.as_deref(),
        Some("deny mutation fields=deleteRepository")
    );
    assert_eq!(v.summary, "mutation IssueX fields=deleteRepository");

    let v = evaluate(ep, &[post("query A { viewer } query B { viewer }", None)]);
    assert_eq!(
        v.reason,
        "GraphQL request rejected: operationName is required when the document has several operations"
    );
    let v = evaluate(ep, &[]);
    assert_eq!(v.reason, "GraphQL request rejected: empty batch");
    let secret = "query { viewer(token: \"s3cr3t-value\") { ";
    let v = evaluate(ep, &[post(secret, None)]);
    assert_eq!(
        v.reason,
        "GraphQL request rejected: document does not parse"
    );
    assert!(!v.summary.contains("s3cr3t"));

    let v = evaluate(ep, &[hash("ffffff")]);
    assert_eq!(v.summary, "persisted id=ffffff");
    let v = evaluate(ep, &[hash("bad id\r\n")]);
    assert_eq!(v.summary, "persisted");
    let v = evaluate(ep, &[hash("5f2c9a")]);
    assert_eq!(v.summary, "query Viewer fields=viewer");
}

#[test]
fn graphql_persisted_queries_deny_mode() {
    // `persisted_queries` defaults to deny: even a registered-looking id is unusable.
    let snap = snapshot();
    for host in ["ro.example.com", "full.example.com"] {
        let ep = endpoint(&snap, host);
        check(host, &evaluate(ep, &[hash("5f2c9a")]), Want::Unregistered);
    }
}

#[test]
fn graphql_access_presets() {
    use Want::*;
    let snap = snapshot();
    let q = post("{ anything { id } }", None);
    let m = post("mutation { deleteEverything { id } }", None);
    let s = post("subscription { events { id } }", None);
    let table = [
        ("ro.example.com", [Allow, NotPermitted, NotPermitted]),
        ("rw.example.com", [Allow, Allow, NotPermitted]),
        ("full.example.com", [Allow, Allow, Allow]),
    ];
    for (host, wants) in table {
        let ep = endpoint(&snap, host);
        for (item, want) in [&q, &m, &s].into_iter().zip(wants) {
            check(
                &format!("{host} {:?}", item.query),
                &evaluate(ep, std::slice::from_ref(item)),
                want,
            );
        }
    }
}

#[test]
fn graphql_subscriptions_and_websocket_operations() {
    use Want::*;
    let snap = snapshot();
    let ep = endpoint(&snap, "subs.example.com");
    let cases = [
        ("subscription OnIssue { issueCreated { id } }", Allow),
        (
            "subscription OnIssue { issueCreated { id } pullRequest { id } }",
            NotPermitted,
        ),
        ("subscription Watch { issueCreated { id } }", NotPermitted),
        ("subscription { issueCreated { id } }", NotPermitted),
        ("query { anything }", Allow),
        ("query AdminStuff { anything }", Blocked),
        ("mutation { anything }", NotPermitted),
    ];
    for (doc, want) in cases {
        check(doc, &evaluate(ep, &[post(doc, None)]), want);
        let op = classify(doc, None).expect("classifies");
        check(doc, &evaluate_operation(ep, &op), want);
    }
    let op = ClassifiedOperation {
        op_type: OperationType::Subscription,
        name: Some("OnComment".into()),
        root_fields: vec!["issueComment".into()],
    };
    check("classified", &evaluate_operation(ep, &op), Allow);
}

#[test]
fn graphql_typename_counts_as_a_root_field() {
    use Want::*;
    let snap = snapshot();
    let ep = endpoint(&snap, "typename.example.com");
    let cases = [
        ("{ viewer }", Allow),
        ("{ __typename }", NotPermitted),
        ("{ __typename viewer }", NotPermitted),
        ("mutation { __typename viewer }", Allow),
        ("mutation { __typename }", Allow),
    ];
    for (doc, want) in cases {
        check(doc, &evaluate(ep, &[post(doc, None)]), want);
    }
    let op = classify("{ __typename b: viewer a: viewer }", None).unwrap();
    assert_eq!(op.root_fields, ["__typename", "viewer"]);
}

#[test]
fn graphql_classification() {
    type OkCase<'a> = (
        &'a str,
        Option<&'a str>,
        OperationType,
        Option<&'a str>,
        &'a [&'a str],
    );
    let ok: &[OkCase<'_>] = &[
        ("{ b a c a }", None, OperationType::Query, None, &["a", "b", "c"]),
        ("query Q($x: ID) { n: node(id: $x) { id } }", None, OperationType::Query, Some("Q"), &["node"]),
        ("mutation M { x: y }", Some("M"), OperationType::Mutation, Some("M"), &["y"]),
        ("subscription S { s }", Some(""), OperationType::Subscription, Some("S"), &["s"]),
        (
            "query A { a } query B { ...F ... on Query { c } } fragment F on Query { b ...G } fragment G on Query { d ...F2 } fragment F2 on Query { e }",
            Some("B"),
            OperationType::Query,
            Some("B"),
            &["b", "c", "d", "e"],
        ),
        // The same fragment twice is expanded once and is not a cycle.
        ("{ ...F ...F } fragment F on Query { a }", None, OperationType::Query, None, &["a"]),
        // Unknown fragments below the root are the server's business.
        ("{ a { ...Nope } }", None, OperationType::Query, None, &["a"]),
    ];
    for (doc, name, t, n, fields) in ok {
        let op = classify(doc, *name).unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert_eq!(op.op_type, *t, "{doc}");
        assert_eq!(op.name.as_deref(), *n, "{doc}");
        assert_eq!(op.root_fields, *fields, "{doc}");
    }

    let bad: &[(&str, Option<&str>, GraphqlError)] = &[
        ("", None, GraphqlError::Syntax),
        ("{", None, GraphqlError::Syntax),
        ("fragment F on Query { a }", None, GraphqlError::NoOperation),
        (
            "query A { a } query B { b }",
            None,
            GraphqlError::OperationNameRequired,
        ),
        (
            "query A { a } query B { b }",
            Some("C"),
            GraphqlError::UnknownOperation,
        ),
        (
            "{ a } query B { b }",
            Some("B"),
            GraphqlError::AnonymousOperationNotAlone,
        ),
        (
            "query A { a } query A { b }",
            Some("A"),
            GraphqlError::DuplicateOperation,
        ),
        (
            "{ ...F } fragment F on Q { a } fragment F on Q { b }",
            None,
            GraphqlError::DuplicateFragment,
        ),
        (
            "{ ...F } fragment F on Q { ...F }",
            None,
            GraphqlError::FragmentCycle,
        ),
        ("{ ...Nope }", None, GraphqlError::UnknownFragment),
        ("scalar Date", None, GraphqlError::NonExecutable),
        (
            "extend type Query { a: Int } { a }",
            None,
            GraphqlError::NonExecutable,
        ),
    ];
    for (doc, name, want) in bad {
        assert_eq!(classify(doc, *name).unwrap_err(), *want, "{doc}");
    }
}

#[test]
fn graphql_bounds_are_errors_not_hangs() {
    // A long chain of fragments exceeds the depth bound.
    let mut doc = String::from("{ ...F0 }");
    for i in 0..200 {
        doc.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
    }
    doc.push_str(" fragment F200 on Query { a }");
    assert_eq!(classify(&doc, None).unwrap_err(), GraphqlError::TooComplex);

    // A "billion laughs" fan-out is linear thanks to memoized fragments.
    let mut doc = String::from("{ ...L0 ...L0 }");
    for i in 0..20 {
        doc.push_str(&format!(
            " fragment L{i} on Query {{ ...L{} ...L{} f{i} }}",
            i + 1,
            i + 1
        ));
    }
    doc.push_str(" fragment L20 on Query { z }");
    let op = classify(&doc, None).expect("bounded fan-out classifies");
    assert_eq!(op.root_fields.len(), 21);

    // Too many root selections.
    let doc = format!("{{ {} }}", "a ".repeat(2000));
    assert_eq!(classify(&doc, None).unwrap_err(), GraphqlError::TooComplex);

    // Deeply nested inline fragments.
    let doc = format!("{{ {} a {} }}", "... { ".repeat(100), "} ".repeat(100));
    assert!(classify(&doc, None).is_err());

    // Deep selection nesting is caught by the parser's recursion limit.
    let doc = format!("{{ {} }}", "a { ".repeat(5000) + &"}".repeat(5000));
    assert_eq!(classify(&doc, None).unwrap_err(), GraphqlError::Syntax);

    // Documents over the endpoint cap are rejected before parsing.
    let snap = snapshot();
    let ep = endpoint(&snap, "api.github.com");
    let big = format!("{{ viewer {} }}", " ".repeat(131_072));
    check(
        "oversized",
        &evaluate(ep, &[post(&big, None)]),
        Want::Rejected,
    );

    let many: Vec<_> = (0..65).map(|_| post("{ viewer }", None)).collect();
    check("batch of 65", &evaluate(ep, &many), Want::Rejected);
}

fn items(
    method: &str,
    ct: Option<&str>,
    q: Option<&str>,
    body: &str,
) -> Result<Vec<GraphqlItem>, GraphqlError> {
    items_from_http(method, ct, q, body.as_bytes())
}

#[test]
fn graphql_http_extraction() {
    let json = Some("application/json; charset=utf-8");
    // POST JSON object.
    let got = items(
        "POST",
        json,
        None,
        r#"{"query":"{ viewer }","operationName":null,"variables":{"a":[1,{"b":"c"}]}}"#,
    )
    .unwrap();
    assert_eq!(got, [post("{ viewer }", None)]);
    // POST JSON batch.
    let got = items(
        "POST",
        Some("application/json"),
        None,
        r#"[{"query":"query A { a }","operationName":"A"},{"query":"{ b }"}]"#,
    )
    .unwrap();
    assert_eq!(got, [post("query A { a }", Some("A")), post("{ b }", None)]);
    // APQ hash-only, and the `id`/`documentId`/`queryId` spellings.
    let got = items(
        "POST",
        json,
        None,
        r#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"5f2c9a"}}}"#,
    )
    .unwrap();
    assert_eq!(got, [hash("5f2c9a")]);
    for key in ["id", "documentId", "queryId"] {
        let got = items(
            "POST",
            json,
            None,
            &format!(r#"{{"{key}":"abc","operationName":"X"}}"#),
        )
        .unwrap();
        assert_eq!(got[0].persisted_id.as_deref(), Some("abc"), "{key}");
        assert_eq!(got[0].query, None);
    }
    // application/graphql body, operationName from the URL.
    let got = items(
        "POST",
        Some("Application/GraphQL"),
        Some("operationName=B"),
        "query B { b }",
    )
    .unwrap();
    assert_eq!(got, [post("query B { b }", Some("B"))]);
    // Form body.
    let got = items(
        "POST",
        Some("application/x-www-form-urlencoded"),
        None,
        "query=%7B+viewer+%7D&variables=%7B%7D",
    )
    .unwrap();
    assert_eq!(got, [post("{ viewer }", None)]);
    // GET with percent and '+' decoding.
    let got = items(
        "GET",
        None,
        Some("query=query+Q%28%24a%3A+ID%29+%7B+node%28id%3A+%24a%29+%7B+id+%7D+%7D&operationName=Q&variables=%7B%7D"),
        "",
    )
    .unwrap();
    assert_eq!(
        got,
        [post("query Q($a: ID) { node(id: $a) { id } }", Some("Q"))]
    );
    // GET persisted via `extensions`.
    let got = items(
        "GET",
        None,
        Some("operationName=Viewer&extensions=%7B%22persistedQuery%22%3A%7B%22version%22%3A1%2C%22sha256Hash%22%3A%225f2c9a%22%7D%7D"),
        "",
    )
    .unwrap();
    assert_eq!(got[0].persisted_id.as_deref(), Some("5f2c9a"));
    assert_eq!(got[0].operation_name.as_deref(), Some("Viewer"));

    type BadCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
        GraphqlError,
    );
    let bad: &[BadCase<'_>] = &[
        (
            "GET",
            None,
            Some("query=%7Ba%7D&query=%7Bb%7D"),
            "",
            GraphqlError::DuplicateParameter("query"),
        ),
        (
            "GET",
            None,
            Some("query=%7Ba%7D&operationName=A&operationName=B"),
            "",
            GraphqlError::DuplicateParameter("operationName"),
        ),
        (
            "GET",
            None,
            Some("query=%7Ba%7D&qu%65ry=%7Bb%7D"),
            "",
            GraphqlError::DuplicateParameter("query"),
        ),
        (
            "GET",
            None,
            Some("query=%zz"),
            "",
            GraphqlError::InvalidEncoding,
        ),
        (
            "GET",
            None,
            Some("query=%FF"),
            "",
            GraphqlError::InvalidEncoding,
        ),
        ("GET", None, Some("x=1"), "", GraphqlError::MissingQuery),
        ("GET", None, None, "", GraphqlError::MissingQuery),
        (
            "GET",
            None,
            Some("query=%7Ba%7D"),
            "{}",
            GraphqlError::GetWithBody,
        ),
        (
            "PUT",
            json,
            None,
            r#"{"query":"{a}"}"#,
            GraphqlError::UnsupportedMethod,
        ),
        (
            "POST",
            None,
            None,
            r#"{"query":"{a}"}"#,
            GraphqlError::UnsupportedContentType,
        ),
        (
            "POST",
            Some("text/plain"),
            None,
            r#"{"query":"{a}"}"#,
            GraphqlError::UnsupportedContentType,
        ),
        ("POST", json, None, "[]", GraphqlError::EmptyBatch),
        ("POST", json, None, "{\"query\":", GraphqlError::InvalidJson),
        ("POST", json, None, "\"{ a }\"", GraphqlError::NotAnObject),
        ("POST", json, None, "[1]", GraphqlError::NotAnObject),
        (
            "POST",
            json,
            None,
            r#"{"query":1}"#,
            GraphqlError::WrongType("query"),
        ),
        (
            "POST",
            json,
            None,
            r#"{"query":"{a}","query":"{b}"}"#,
            GraphqlError::DuplicateParameter("query"),
        ),
        (
            "POST",
            json,
            None,
            r#"{"query":"{a}","operationName":"A","operationName":"B"}"#,
            GraphqlError::DuplicateParameter("operationName"),
        ),
        (
            "POST",
            json,
            None,
            r#"{"variables":{}}"#,
            GraphqlError::MissingQuery,
        ),
        (
            "POST",
            json,
            Some("query=%7Bb%7D"),
            r#"{"query":"{a}"}"#,
            GraphqlError::ParametersInUrlAndBody,
        ),
        (
            "POST",
            Some("application/graphql"),
            Some("query=%7Bb%7D"),
            "{a}",
            GraphqlError::ParametersInUrlAndBody,
        ),
        (
            "POST",
            json,
            None,
            r#"{"query":"{a}","documentId":"x"}"#,
            GraphqlError::QueryAndDocumentId,
        ),
        (
            "POST",
            json,
            None,
            r#"{"id":"x","documentId":"y"}"#,
            GraphqlError::ConflictingPersistedIds,
        ),
        (
            "POST",
            json,
            None,
            r#"{"extensions":{"persistedQuery":{"sha256Hash":"a"}},"id":"b"}"#,
            GraphqlError::ConflictingPersistedIds,
        ),
        (
            "POST",
            json,
            None,
            r#"{"extensions":{"persistedQuery":{"sha256Hash":1}}}"#,
            GraphqlError::WrongType("sha256Hash"),
        ),
    ];
    for (method, ct, q, body, want) in bad {
        assert_eq!(
            items(method, *ct, *q, body).unwrap_err(),
            *want,
            "{method} {ct:?} {q:?} {body}"
        );
    }
    let batch = format!("[{}]", vec![r#"{"query":"{a}"}"#; 65].join(","));
    assert_eq!(
        items("POST", json, None, &batch).unwrap_err(),
        GraphqlError::BatchTooLarge
    );
}

#[test]
fn graphql_end_to_end_http() {
    use Want::*;
    let snap = snapshot();
    let ep = endpoint(&snap, "api.github.com");
    let json = Some("application/json");
    let run = |method: &str, ct: Option<&str>, q: Option<&str>, body: &str| match items(
        method, ct, q, body,
    ) {
        Ok(items) => evaluate(ep, &items),
        Err(e) => {
            ProtocolVerdict::hard_deny(format!("GraphQL request rejected: {e}"), String::new())
        }
    };
    let cases = [
        (
            "GET",
            None,
            Some("query=%7B+viewer+%7B+login+%7D+%7D"),
            "",
            Allow,
        ),
        (
            "GET",
            None,
            Some("query=%7Bviewer%7D&query=mutation%7BdeleteRepository%7D"),
            "",
            Rejected,
        ),
        (
            "POST",
            Some("application/graphql"),
            None,
            "{ viewer { id } }",
            Allow,
        ),
        (
            "POST",
            Some("application/graphql"),
            None,
            "mutation IssueA { deleteRepository { id } }",
            Blocked,
        ),
        (
            "POST",
            json,
            None,
            r#"{"query":"mutation IssueA { createIssue { id } }"}"#,
            Allow,
        ),
        (
            "POST",
            json,
            None,
            r#"[{"query":"{ viewer }"},{"query":"mutation IssueA { deleteRepository { id } }"}]"#,
            Blocked,
        ),
        ("POST", json, None, "[]", Rejected),
        (
            "POST",
            json,
            None,
            r#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"5f2c9a"}}}"#,
            Allow,
        ),
        (
            "POST",
            json,
            None,
            r#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"0000"}}}"#,
            Unregistered,
        ),
        (
            "POST",
            json,
            None,
            r#"{"query":"query A { viewer } mutation B { deleteRepository }"}"#,
            Rejected,
        ),
        (
            "POST",
            json,
            None,
            r#"{"query":"query A { viewer } mutation B { deleteRepository }","operationName":"A"}"#,
            Allow,
        ),
    ];
    for (method, ct, q, body, want) in cases {
        check(
            &format!("{method} {q:?} {body}"),
            &run(method, ct, q, body),
            want,
        );
    }
}

#[test]
fn graphql_realistic_nesting_parses() {
    let doc = format!(
        "{{ {} }}",
        "a(x: [{y: 1}]) @d(if: true) { ".repeat(100) + "b " + &"}".repeat(100)
    );
    let op = classify(&doc, None).expect("100 levels of nesting parse");
    assert_eq!(op.root_fields, ["a"]);
}
