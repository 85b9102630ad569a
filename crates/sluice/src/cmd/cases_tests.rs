use super::*;

const ONE: &str = "cases:\n  - name: a\n    host: api.test\n    port: 443\n    expect: allow\n";

/// A file with one case whose body is `fields` (each line indented under `- `).
fn with(fields: &str) -> String {
    let mut s = String::from("cases:\n");
    for (i, line) in fields.lines().enumerate() {
        s.push_str(if i == 0 { "  - " } else { "    " });
        s.push_str(line);
        s.push('\n');
    }
    s
}

#[test]
fn parses_every_field() {
    let src = with(
        "name: curl reads a repo\nhost: API.github.com\nport: 443\nbinary: /usr/bin/curl\nancestors: [/bin/bash]\nmethod: GET\npath: /repos/o/r?x=1\nbody: '{\"query\": \"{ viewer { login } }\"}'\ncontent_type: application/graphql+json\nexpect: deny\npolicy: github",
    );
    let cases = parse(&src, "t.yaml").expect("parses");
    assert_eq!(
        cases,
        vec![Case {
            name: "curl reads a repo".into(),
            host: "API.github.com".into(),
            port: 443,
            binary: Some("/usr/bin/curl".into()),
            ancestors: vec!["/bin/bash".into()],
            request: Some(CaseRequest {
                method: Some("GET".into()),
                path: Some("/repos/o/r?x=1".into()),
                body: Some(r#"{"query": "{ viewer { login } }"}"#.into()),
                content_type: "application/graphql+json".into(),
            }),
            expect: Expect::Deny,
            policy: Some(Located {
                value: "github".into(),
                line: 12,
                col: 13
            }),
        }]
    );
}

#[test]
fn request_is_present_only_with_method_path_or_body() {
    let cases = parse(ONE, "t.yaml").expect("parses");
    assert_eq!(cases[0].request, None);
    assert_eq!(cases[0].binary, None);
    for extra in ["method: POST", "path: /", "body: '{}'"] {
        let src = with(&format!(
            "name: a\nhost: h.test\nport: 1\nexpect: deny\n{extra}"
        ));
        let c = parse(&src, "t.yaml").expect(extra);
        let r = c[0].request.as_ref().expect(extra);
        assert_eq!(r.content_type, "application/json", "{extra}");
    }
}

/// Invalid files: every one is refused with `FILE:LINE:COL: message`.
#[test]
fn rejects_with_locations() {
    let table: &[(&str, String, (usize, usize), &str)] = &[
        (
            "unknown case field",
            with("name: a\nhost: h.test\nport: 1\nexpect: allow\nexpected: deny"),
            (6, 5),
            "unknown field `expected`",
        ),
        (
            "unknown top-level field",
            format!("{ONE}extra: 1\n"),
            (6, 1),
            "unknown field `extra`",
        ),
        (
            "missing expect",
            with("name: a\nhost: h.test\nport: 1"),
            (2, 5),
            "case `a`: missing `expect`",
        ),
        (
            "missing name",
            with("host: h.test\nport: 1\nexpect: allow"),
            (2, 5),
            "cases[0]: missing `name`",
        ),
        (
            "missing host and port",
            with("name: a\nexpect: allow"),
            (2, 5),
            "case `a`: missing `host`",
        ),
        (
            "port out of range",
            with("name: a\nhost: h.test\nport: 70000\nexpect: allow"),
            (4, 11),
            "70000",
        ),
        (
            "port not a number",
            with("name: a\nhost: h.test\nport: https\nexpect: allow"),
            (4, 11),
            "invalid type",
        ),
        (
            "port zero",
            with("name: a\nhost: h.test\nport: 0\nexpect: allow"),
            (4, 11),
            "port must be 1-65535",
        ),
        (
            "bad expect",
            with("name: a\nhost: h.test\nport: 1\nexpect: allowed"),
            (5, 13),
            "unknown variant `allowed`",
        ),
        (
            "bad host",
            with("name: a\nhost: 'h test'\nport: 1\nexpect: allow"),
            (3, 11),
            "invalid host",
        ),
        (
            "relative binary",
            with("name: a\nhost: h.test\nport: 1\nbinary: curl\nexpect: allow"),
            (5, 13),
            "absolute path",
        ),
        (
            "ancestors without binary",
            with("name: a\nhost: h.test\nport: 1\nancestors: [/bin/sh]\nexpect: allow"),
            (5, 16),
            "`ancestors` needs `binary`",
        ),
        (
            "path injection",
            with("name: a\nhost: h.test\nport: 1\npath: \"/x\\r\\nEvil: 1\"\nexpect: allow"),
            (5, 11),
            "invalid path",
        ),
        (
            "relative path",
            with("name: a\nhost: h.test\nport: 1\npath: repos\nexpect: allow"),
            (5, 11),
            "invalid path",
        ),
        (
            "bad method",
            with("name: a\nhost: h.test\nport: 1\nmethod: 'GE T'\nexpect: allow"),
            (5, 13),
            "invalid method",
        ),
        (
            "content type without body",
            with("name: a\nhost: h.test\nport: 1\ncontent_type: text/plain\nexpect: allow"),
            (5, 19),
            "`content_type` needs `body`",
        ),
        (
            "duplicate name",
            format!("{ONE}  - name: a\n    host: b.test\n    port: 1\n    expect: deny\n"),
            (6, 11),
            "duplicate case name `a`; the first is on line 2",
        ),
        (
            "name with a newline",
            with("name: \"a\\nFAIL b\"\nhost: h.test\nport: 1\nexpect: allow"),
            (2, 11),
            "control character",
        ),
        ("no cases key", "{}\n".to_owned(), (1, 1), "missing `cases`"),
        (
            "empty cases",
            "cases: []\n".to_owned(),
            (1, 8),
            "`cases` is empty",
        ),
        (
            "syntax error",
            "cases:\n  - name: a\n   host: [\n".to_owned(),
            (3, 0),
            "",
        ),
    ];
    for (what, src, (line, col), needle) in table {
        let errors = parse(src, "t.yaml").expect_err(what);
        let first = &errors[0];
        let text = first.to_string();
        assert!(text.starts_with("t.yaml:"), "{what}: {text}");
        assert_eq!(first.line, *line, "{what}: {text}");
        if *col != 0 {
            assert_eq!(first.col, *col, "{what}: {text}");
        }
        assert!(first.message.contains(needle), "{what}: {text}");
        assert!(!first.message.contains(" at line "), "{what}: {text}");
    }
}

#[test]
fn reports_every_problem_not_only_the_first() {
    let src = format!(
        "{}{}",
        with("name: a\nhost: h.test\nport: 0\nexpect: allow"),
        "  - name: b\n    host: h.test\n    port: 1\n"
    );
    let errors = parse(&src, "t.yaml").expect_err("two problems");
    let messages: Vec<&str> = errors.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("port must be"), "{messages:?}");
    assert!(
        messages[1].contains("case `b`: missing `expect`"),
        "{messages:?}"
    );
}

#[test]
fn bounds_case_count_and_file_size() {
    let mut src = String::from("cases:\n");
    for i in 0..=MAX_CASES {
        src.push_str(&format!(
            "  - {{ name: c{i}, host: h.test, port: 1, expect: deny }}\n"
        ));
    }
    let errors = parse(&src, "t.yaml").expect_err("too many");
    assert!(
        errors[0].message.contains("more than 10000 cases"),
        "{:?}",
        errors[0]
    );

    let dir = sluice_test_support::TempDir::new("cases-size");
    let big = dir.path("big.yaml");
    let pad = "#".repeat(usize::try_from(MAX_FILE_BYTES).unwrap_or(usize::MAX));
    std::fs::write(&big, format!("{ONE}{pad}\n")).expect("write");
    let errors = load(&big).expect_err("too large");
    assert!(
        errors[0].to_string().ends_with(": larger than 4 MiB"),
        "{:?}",
        errors[0]
    );

    let missing = load(&dir.path("nope.yaml")).expect_err("missing");
    assert!(
        missing[0].message.starts_with("cannot read:"),
        "{:?}",
        missing[0]
    );
}
