//! Placeholder recognition (pure functions, no policy needed).
//!
//! The sandbox sees placeholders instead of real credentials:
//! `sluice:resolve:env:NAME` (canonical) or `openshell:resolve:env:NAME`
//! (accepted for OpenShell compatibility). `NAME` is `[A-Za-z0-9_]+`, at
//! most [`MAX_NAME_LEN`] bytes; the name ends at the first other byte, so
//! `sluice:resolve:env:A/x` names `A`. [`find`] is exact and case-sensitive
//! and is what a rewriter replaces; [`contains_marker`] is the broader
//! fail-closed backstop (any reserved prefix, any case, also
//! percent-encoded, also with an empty or invalid name).

use std::ops::Range;

/// The canonical placeholder prefix.
pub const CANONICAL_PREFIX: &str = "sluice:resolve:env:";
/// The OpenShell placeholder prefix (accepted).
pub const OPENSHELL_PREFIX: &str = "openshell:resolve:env:";
/// Longest credential name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest marker prefix [`contains_marker`] looks for
/// (`openshell%3Aresolve%3Aenv%3A`). A streaming scanner that keeps the
/// last `MAX_MARKER_LEN - 1` bytes of each chunk cannot miss a split marker.
pub const MAX_MARKER_LEN: usize = 28;
/// Longest placeholder [`find`] can return (prefix + name). A streaming
/// rewriter that keeps this many trailing bytes cannot miss a split placeholder.
pub const MAX_PLACEHOLDER_LEN: usize = OPENSHELL_PREFIX.len() + MAX_NAME_LEN;

const PREFIXES: [&[u8]; 2] = [CANONICAL_PREFIX.as_bytes(), OPENSHELL_PREFIX.as_bytes()];

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `name` is a valid credential/placeholder name: `[A-Za-z0-9_]+`,
/// at most [`MAX_NAME_LEN`] bytes.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(is_name_byte)
}

/// The placeholder text for a credential name (`sluice:resolve:env:NAME`).
#[must_use]
pub fn canonical(name: &str) -> String {
    format!("{CANONICAL_PREFIX}{name}")
}

/// Iterator returned by [`find`].
#[derive(Clone, Debug)]
pub struct Find<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Find<'a> {
    type Item = (Range<usize>, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.text;
        while self.pos < t.len() {
            let i = self.pos;
            let Some(prefix) = PREFIXES.iter().find(|p| t[i..].starts_with(p)) else {
                self.pos += 1;
                continue;
            };
            let start = i + prefix.len();
            let n = t[start..].iter().take_while(|b| is_name_byte(**b)).count();
            if n == 0 {
                self.pos = start;
                continue;
            }
            let end = start + n;
            self.pos = end;
            if n > MAX_NAME_LEN {
                continue;
            }
            if let Ok(name) = std::str::from_utf8(&t[start..end]) {
                return Some((i..end, name));
            }
        }
        None
    }
}

/// Every placeholder occurrence in `text`, left to right, non-overlapping:
/// the byte range of the whole placeholder (prefix + name) and the name.
/// Both prefixes, case-sensitive. The name is the longest run of
/// `[A-Za-z0-9_]` after the prefix; an empty run or one longer than
/// [`MAX_NAME_LEN`] is not a placeholder (but is a marker).
#[must_use]
pub fn find(text: &[u8]) -> Find<'_> {
    Find { text, pos: 0 }
}

fn strip_ci<'a>(s: &'a [u8], lit: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= lit.len() && s[..lit.len()].eq_ignore_ascii_case(lit)).then(|| &s[lit.len()..])
}

fn sep(s: &[u8]) -> Option<&[u8]> {
    match s.first() {
        Some(b':') => Some(&s[1..]),
        _ => strip_ci(s, b"%3a"),
    }
}

fn marker_at(s: &[u8]) -> bool {
    for head in [&b"sluice"[..], b"openshell"] {
        let hit = strip_ci(s, head)
            .and_then(sep)
            .and_then(|r| strip_ci(r, b"resolve"))
            .and_then(sep)
            .and_then(|r| strip_ci(r, b"env"))
            .and_then(sep);
        if hit.is_some() {
            return true;
        }
    }
    strip_ci(s, b"openshell-resolve-env-").is_some()
}

/// Whether any reserved marker occurs in `text`, whether or not a valid
/// name follows: `sluice:resolve:env:` / `openshell:resolve:env:` in any
/// ASCII case, with any `:` also written `%3A`/`%3a`, and OpenShell's
/// provider-alias marker `OPENSHELL-RESOLVE-ENV-`. Used as the
/// leftover-marker backstop: text that still contains a marker after
/// rewriting must not reach upstream.
#[must_use]
pub fn contains_marker(text: &[u8]) -> bool {
    (0..text.len()).any(|i| matches!(text[i] | 0x20, b's' | b'o') && marker_at(&text[i..]))
}

/// Replace every placeholder in text meant for logs or error bodies with
/// `[CREDENTIAL]` (names of credentials are not secrets, but the rule is
/// simple: nothing placeholder-shaped is echoed). A text that still holds a
/// marker afterwards (an encoded form [`find`] does not match) becomes
/// `[CREDENTIAL]` whole.
#[must_use]
pub fn scrub(text: &str) -> String {
    if !contains_marker(text.as_bytes()) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, _) in find(text.as_bytes()) {
        out.push_str(&text[last..range.start]);
        out.push_str("[CREDENTIAL]");
        last = range.end;
    }
    out.push_str(&text[last..]);
    if contains_marker(out.as_bytes()) {
        return "[CREDENTIAL]".to_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_table() {
        let cases = [
            ("/plain/path", "/plain/path"),
            ("/x/sluice:resolve:env:TOKEN/y", "/x/[CREDENTIAL]/y"),
            (
                "a=openshell:resolve:env:A&b=sluice:resolve:env:B",
                "a=[CREDENTIAL]&b=[CREDENTIAL]",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(input), want, "{input}");
        }
        // Whatever still carries a marker after the pass is dropped whole.
        for input in ["sluice:resolve:env:", "x sluice:resolve:env:%41"] {
            let out = scrub(input);
            assert!(!contains_marker(out.as_bytes()), "{input} -> {out}");
        }
    }

    fn found(t: &str) -> Vec<(Range<usize>, String)> {
        find(t.as_bytes()).map(|(r, n)| (r, n.to_owned())).collect()
    }

    #[test]
    fn max_marker_len_is_longest_marker() {
        assert_eq!(MAX_MARKER_LEN, "openshell%3Aresolve%3Aenv%3A".len());
        assert_eq!(MAX_PLACEHOLDER_LEN, 150);
        assert_eq!(canonical("X"), "sluice:resolve:env:X");
    }

    #[test]
    fn find_table() {
        let long = "A".repeat(MAX_NAME_LEN);
        let too_long = "A".repeat(MAX_NAME_LEN + 1);
        let at_max = format!("sluice:resolve:env:{long}");
        let over = format!("sluice:resolve:env:{too_long} sluice:resolve:env:B");
        type Case<'a> = (&'a str, Vec<(Range<usize>, &'a str)>);
        let cases: Vec<Case<'_>> = vec![
            ("", vec![]),
            ("no placeholders here", vec![]),
            (
                "sluice:resolve:env:GITHUB_TOKEN",
                vec![(0..31, "GITHUB_TOKEN")],
            ),
            ("openshell:resolve:env:API_KEY", vec![(0..29, "API_KEY")]),
            ("Bearer sluice:resolve:env:T1", vec![(7..28, "T1")]),
            // both prefixes, separated
            (
                "sluice:resolve:env:A,openshell:resolve:env:B",
                vec![(0..20, "A"), (21..44, "B")],
            ),
            // adjacent: the name is greedy, so the second prefix is part of the name
            (
                "sluice:resolve:env:Asluice:resolve:env:B",
                vec![(0..26, "Asluice")],
            ),
            // adjacent with a non-name byte in between
            (
                "sluice:resolve:env:A/sluice:resolve:env:B",
                vec![(0..20, "A"), (21..41, "B")],
            ),
            // invalid characters end the name
            ("sluice:resolve:env:AB-CD", vec![(0..21, "AB")]),
            ("sluice:resolve:env:A.B", vec![(0..20, "A")]),
            ("sluice:resolve:env:A%20", vec![(0..20, "A")]),
            ("x=sluice:resolve:env:Ü", vec![]),
            // empty name is not a placeholder
            ("sluice:resolve:env:", vec![]),
            ("sluice:resolve:env:-X", vec![]),
            (
                "sluice:resolve:env: sluice:resolve:env:Z",
                vec![(20..40, "Z")],
            ),
            // case-sensitive prefix
            ("SLUICE:RESOLVE:ENV:X", vec![]),
            ("Sluice:resolve:env:X", vec![]),
            // percent-encoded is not found (decode first)
            ("sluice%3Aresolve%3Aenv%3AX", vec![]),
            // embedded in a word
            ("xsluice:resolve:env:K", vec![(1..21, "K")]),
            (at_max.as_str(), vec![(0..19 + MAX_NAME_LEN, long.as_str())]),
            (over.as_str(), vec![(149..169, "B")]),
        ];
        for (text, want) in cases {
            let want: Vec<(Range<usize>, String)> =
                want.into_iter().map(|(r, n)| (r, n.to_owned())).collect();
            assert_eq!(found(text), want, "{text:?}");
        }
    }

    #[test]
    fn find_ranges_slice_back_to_placeholder() {
        let t = "a=openshell:resolve:env:X1&b=sluice:resolve:env:Y_2";
        for (r, name) in find(t.as_bytes()) {
            let s = &t[r];
            assert!(s.ends_with(name), "{s}");
            assert!(s.starts_with(CANONICAL_PREFIX) || s.starts_with(OPENSHELL_PREFIX));
        }
        assert_eq!(find(t.as_bytes()).count(), 2);
    }

    #[test]
    fn contains_marker_table() {
        let cases: &[(&str, bool)] = &[
            ("", false),
            ("hello world", false),
            ("sluice:resolve:env:X", true),
            ("openshell:resolve:env:X", true),
            ("sluice:resolve:env:", true),
            ("openshell:resolve:env:", true),
            ("sluice:resolve:env:-", true),
            ("SLUICE:RESOLVE:ENV:X", true),
            ("OpenShell:Resolve:Env:", true),
            ("sluice%3Aresolve%3Aenv%3AX", true),
            ("sluice%3aresolve%3aenv%3a", true),
            ("openshell%3Aresolve%3Aenv%3AX", true),
            ("openshell%3aresolve:env%3A", true),
            ("SLUICE%3ARESOLVE%3AENV%3A", true),
            ("provider-OPENSHELL-RESOLVE-ENV-API_TOKEN", true),
            ("{\"k\":\"xx sluice:resolve:env:\"}", true),
            ("sluice:resolve:env", false),
            ("sluice:resolve:", false),
            ("sluice-resolve-env-X", false),
            ("sluice%3resolve%3env%3", false),
            ("sluice%253Aresolve%253Aenv%253A", false),
            ("sluice:resolve:environment", false),
            ("openshell:resolve:env", false),
        ];
        for (text, want) in cases {
            assert_eq!(contains_marker(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn marker_split_across_chunks_is_caught_with_tail() {
        let text = b"aaaa openshell%3Aresolve%3Aenv%3AKEY bbbb";
        for cut in 0..text.len() {
            let (a, b) = text.split_at(cut);
            let keep = a.len().saturating_sub(MAX_MARKER_LEN - 1);
            let mut joined = a[keep..].to_vec();
            joined.extend_from_slice(b);
            assert!(
                contains_marker(a) || contains_marker(&joined),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn valid_name_table() {
        assert!(valid_name("GITHUB_TOKEN"));
        assert!(valid_name("a1_B2"));
        assert!(valid_name(&"A".repeat(MAX_NAME_LEN)));
        assert!(!valid_name(&"A".repeat(MAX_NAME_LEN + 1)));
        assert!(!valid_name(""));
        assert!(!valid_name("A-B"));
        assert!(!valid_name("A.B"));
        assert!(!valid_name("Ä"));
    }
}
