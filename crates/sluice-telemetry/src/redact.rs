//! Redaction helpers applied before values reach an event.
//!
//! Events must never receive secrets: no credential values, no credential
//! placeholders, no request bodies or headers and no query strings. Callers
//! pass only policy-relevant, already-sanitised values; [`redact_path`] is
//! additionally applied to every HTTP path given to
//! [`OcsfEvent::http_request`](crate::OcsfEvent::http_request).

/// Returns `path` without its query string and fragment.
///
/// Everything from the first `?` or `#` on is dropped, so
/// `/v1/items?token=abc#top` becomes `/v1/items`. An empty result becomes `/`
/// when the input was non-empty (e.g. `?a=b` → `/`), and stays empty for empty
/// input.
pub fn redact_path(path: &str) -> String {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let kept = &path[..end];
    if kept.is_empty() && !path.is_empty() {
        "/".to_owned()
    } else {
        kept.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::redact_path;

    #[test]
    fn table() {
        let cases = [
            ("", ""),
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a?x=1", "/a"),
            ("/a?x=1&token=secret", "/a"),
            ("/a#frag", "/a"),
            ("/a#frag?x=1", "/a"),
            ("/a?x=1#frag", "/a"),
            ("?token=abc", "/"),
            ("#x", "/"),
            ("/p%3Fq", "/p%3Fq"),
            ("/a/?", "/a/"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_path(input), want, "input {input:?}");
        }
    }
}
