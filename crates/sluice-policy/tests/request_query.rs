//! Query-string parsing for request-level rules.

use sluice_policy::request::{QueryError, QueryParams};

type Pairs = &'static [(&'static str, &'static str)];

#[test]
fn query_parsing_table() {
    let cases: &[(&str, Result<Pairs, QueryError>)] = &[
        ("", Ok(&[])),
        ("&&", Ok(&[])),
        ("a=1", Ok(&[("a", "1")])),
        ("a=1&b=2", Ok(&[("a", "1"), ("b", "2")])),
        ("a=1&a=2", Ok(&[("a", "1"), ("a", "2")])),
        ("flag", Ok(&[("flag", "")])),
        ("flag=", Ok(&[("flag", "")])),
        ("=v", Ok(&[("", "v")])),
        ("a=b=c", Ok(&[("a", "b=c")])),
        ("a+b=c+d", Ok(&[("a+b", "c+d")])),
        ("ref=refs%2Fheads%2Fmain", Ok(&[("ref", "refs/heads/main")])),
        ("%72ef=main", Ok(&[("ref", "main")])),
        ("q=%26%3D", Ok(&[("q", "&=")])),
        ("q=caf%C3%A9", Ok(&[("q", "caf\u{e9}")])),
        ("q=caf\u{e9}", Ok(&[("q", "caf\u{e9}")])),
        ("&a=1&&b&", Ok(&[("a", "1"), ("b", "")])),
        ("q=%zz", Err(QueryError::BadEscape)),
        ("q=%4", Err(QueryError::BadEscape)),
        ("%=1", Err(QueryError::BadEscape)),
        ("q=%C3", Err(QueryError::InvalidUtf8)),
        ("q=%FF", Err(QueryError::InvalidUtf8)),
        // a multi-byte char split between name and value is invalid too
        ("%C3=%A9", Err(QueryError::InvalidUtf8)),
    ];
    for (raw, want) in cases {
        let got = QueryParams::parse(raw);
        match (want, &got) {
            (Ok(pairs), Ok(q)) => {
                let have: Vec<(&str, &str)> = q.iter().collect();
                assert_eq!(have, pairs.to_vec(), "{raw:?}");
                assert_eq!(q.len(), pairs.len());
                assert_eq!(q.is_empty(), pairs.is_empty());
            }
            (Err(e), Err(g)) => assert_eq!(e, g, "{raw:?}"),
            _ => panic!("{raw:?}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn values_returns_every_value_of_a_name_in_order() {
    let q = QueryParams::parse("ref=a&x=1&ref=b&REF=c").expect("parses");
    assert_eq!(q.values("ref").collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(q.values("REF").collect::<Vec<_>>(), ["c"]);
    assert_eq!(q.values("missing").count(), 0);
    assert!(q.contains("x"));
    assert!(!q.contains("y"));
}

#[test]
fn limits() {
    let cases: &[(String, Result<usize, QueryError>)] = &[
        (vec!["a=1"; 256].join("&"), Ok(256)),
        (vec!["a=1"; 257].join("&"), Err(QueryError::TooManyParams)),
        // empty pieces do not count
        (format!("{}&&&", vec!["a"; 256].join("&")), Ok(256)),
        (format!("q={}", "x".repeat(8190)), Ok(1)),
        (format!("q={}", "x".repeat(8191)), Err(QueryError::TooLong)),
    ];
    for (raw, want) in cases {
        assert_eq!(
            QueryParams::parse(raw).map(|q| q.len()),
            *want,
            "len {}",
            raw.len()
        );
    }
    for e in [
        QueryError::TooLong,
        QueryError::TooManyParams,
        QueryError::BadEscape,
        QueryError::InvalidUtf8,
    ] {
        let m = e.to_string();
        assert!(m.starts_with(|c: char| c.is_ascii_lowercase()), "{m}");
    }
}
