//! Path canonicalization (facts §4.8): a table of accepted and rejected
//! paths, and idempotence over every accepted case.

use sluice_policy::request::{canonicalize_path, PathError};

use PathError::*;

/// (raw, allow_encoded_slash, expected).
fn cases() -> Vec<(String, bool, Result<&'static str, PathError>)> {
    let t: &[(&str, bool, Result<&str, PathError>)] = &[
        ("/", false, Ok("/")),
        ("/repos/o/r", false, Ok("/repos/o/r")),
        ("/repos/o/r/", false, Ok("/repos/o/r/")),
        // dot segments
        ("/a/./b", false, Ok("/a/b")),
        ("/a/../b", false, Ok("/b")),
        ("/a/b/..", false, Ok("/a/")),
        ("/a/b/.", false, Ok("/a/b/")),
        ("/a/b/../../c", false, Ok("/c")),
        ("/a/..", false, Ok("/")),
        ("/./", false, Ok("/")),
        ("/a/.../b", false, Ok("/a/.../b")),
        ("/a/..b/.c", false, Ok("/a/..b/.c")),
        // decoded dots are dots
        ("/a/%2e%2e/b", false, Ok("/b")),
        ("/a/%2E/b", false, Ok("/a/b")),
        ("/a/.%2e/b", false, Ok("/b")),
        ("/repos/x/%2e%2e/%2e%2e/admin", false, Ok("/admin")),
        ("/repos/%2e%2e/%2e%2e/admin", false, Err(EscapesRoot)),
        // empty segments
        ("//a//b//", false, Ok("/a/b/")),
        ("//", false, Ok("/")),
        ("/a///..//b", false, Ok("/b")),
        // ;params, stripped before dot resolution
        ("/a;v=1/b", false, Ok("/a/b")),
        ("/a/b;jsessionid=x", false, Ok("/a/b")),
        ("/a/..;x/b", false, Ok("/b")),
        ("/a/;x/b", false, Ok("/a/b")),
        ("/a%3Bx/b", false, Ok("/a%3Bx/b")),
        // escapes
        ("/%41%62c", false, Ok("/Abc")),
        ("/%7e%2D%5f%30", false, Ok("/~-_0")),
        ("/a%3ab", false, Ok("/a%3Ab")),
        ("/%20x", false, Ok("/%20x")),
        ("/%c3%a9", false, Ok("/%C3%A9")),
        ("/%00", false, Ok("/%00")),
        ("/%25", false, Ok("/%25")),
        ("/%2541", false, Ok("/%2541")),
        ("/a+b", false, Ok("/a+b")),
        ("/@scope%2Fname", false, Err(EncodedSlash)),
        ("/@scope%2fname", false, Err(EncodedSlash)),
        ("/@scope%2Fname", true, Ok("/@scope%2Fname")),
        ("/@scope%2fname", true, Ok("/@scope%2Fname")),
        ("/a/..%2F..%2Fetc", true, Ok("/a/..%2F..%2Fetc")),
        ("/%zz", false, Err(BadEscape)),
        ("/%4", false, Err(BadEscape)),
        ("/a%", false, Err(BadEscape)),
        ("/%%41", false, Err(BadEscape)),
        // escaping the root
        ("/..", false, Err(EscapesRoot)),
        ("/../a", false, Err(EscapesRoot)),
        ("/a/../../b", false, Err(EscapesRoot)),
        ("/%2e%2e", false, Err(EscapesRoot)),
        // bytes
        ("/a\0b", false, Err(ControlByte)),
        ("/a\tb", false, Err(ControlByte)),
        ("/a\rb", false, Err(ControlByte)),
        ("/a\nb", false, Err(ControlByte)),
        ("/a\u{7f}", false, Err(ControlByte)),
        ("/caf\u{e9}", false, Err(NonAscii)),
        ("/a#frag", false, Err(Fragment)),
        ("/a?b=c", false, Err(QueryDelimiter)),
        // form
        ("", false, Err(NotAbsolute)),
        ("a/b", false, Err(NotAbsolute)),
        ("http://h/a", false, Err(NotAbsolute)),
        ("*", false, Err(AsteriskForm)),
        ("/*", false, Ok("/*")),
    ];
    let mut v: Vec<_> = t.iter().map(|&(r, s, e)| (r.to_owned(), s, e)).collect();
    let at_limit = format!("/{}", "a".repeat(4095));
    v.push((at_limit, false, Ok("LIMIT")));
    v.push((format!("/{}", "a".repeat(4096)), false, Err(TooLong)));
    v
}

#[test]
fn canonicalization_table() {
    let cases = cases();
    assert!(cases.len() >= 30);
    for (raw, slash, want) in &cases {
        let got = canonicalize_path(raw, *slash);
        match want {
            Ok("LIMIT") => assert_eq!(got.as_deref(), Ok(raw.as_str())),
            _ => assert_eq!(got.as_deref(), want.as_deref(), "{raw:?} slash={slash}"),
        }
    }
}

#[test]
fn canonicalization_is_idempotent_and_never_grows() {
    for (raw, slash, _) in cases() {
        if let Ok(once) = canonicalize_path(&raw, slash) {
            assert!(once.len() <= raw.len(), "{raw:?} grew to {once:?}");
            assert_eq!(
                canonicalize_path(&once, slash).as_deref(),
                Ok(once.as_str()),
                "{raw:?}"
            );
        }
    }
}

#[test]
fn exhaustive_short_inputs_never_panic_and_are_idempotent() {
    // Every string of length <= 4 over an alphabet of the interesting bytes.
    let alphabet = ["/", ".", "%", "2", "e", "F", ";", "a", "\u{0}", "#"];
    let mut frontier = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for s in &frontier {
            for c in alphabet {
                next.push(format!("{s}{c}"));
            }
        }
        for s in &next {
            for slash in [false, true] {
                if let Ok(once) = canonicalize_path(s, slash) {
                    assert!(once.starts_with('/'));
                    assert!(!once.contains("//"), "{s:?} -> {once:?}");
                    assert_eq!(canonicalize_path(&once, slash), Ok(once.clone()), "{s:?}");
                }
            }
        }
        frontier = next;
    }
}

#[test]
fn messages_are_lower_case_and_encoded_slash_hints_the_option() {
    let all = [
        NotAbsolute,
        ControlByte,
        NonAscii,
        Fragment,
        QueryDelimiter,
        BadEscape,
        EncodedSlash,
        EscapesRoot,
        TooLong,
        AsteriskForm,
    ];
    for e in all {
        let m = e.to_string();
        assert!(
            m.chars().next().is_some_and(|c| !c.is_ascii_uppercase()),
            "{m}"
        );
    }
    assert!(EncodedSlash.to_string().contains("allow_encoded_slash"));
}
