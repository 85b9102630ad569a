//! Delimited string globs (paths, binaries, query values, GraphQL names).
//!
//! Semantics follow OPA/regorus `glob.match` as verified for OpenShell:
//! `*` matches any run of characters except the delimiter, `**` matches any
//! run including the delimiter, `?` matches one non-delimiter character, and
//! everything else is literal. `/api/**` therefore does not match `/api`.

use std::collections::HashSet;
use std::sync::Arc;

use crate::model::Glob;

/// Strings up to this length minus one are matched with stack rows.
const STACK_ROW: usize = 256;

/// The glob DP over the pattern's tokens, read straight from its bytes.
/// `dp[j]`: the tokens consumed so far match `s[..j]`. Both rows are
/// `s.len() + 1` long.
fn match_rows<'r>(
    p: &[u8],
    s: &[u8],
    d: u8,
    mut dp: &'r mut [bool],
    mut next: &'r mut [bool],
) -> bool {
    dp.fill(false);
    dp[0] = true;
    let mut i = 0;
    while i < p.len() {
        let t = match p[i] {
            b'*' => {
                let run = p[i..].iter().take_while(|&&c| c == b'*').count();
                i += run;
                if run >= 2 {
                    Tok::StarStar
                } else {
                    Tok::Star
                }
            }
            b'?' => {
                i += 1;
                Tok::One
            }
            c => {
                i += 1;
                Tok::Lit(c)
            }
        };
        next.fill(false);
        match t {
            Tok::Lit(c) => {
                for j in 0..s.len() {
                    next[j + 1] = dp[j] && s[j] == c;
                }
            }
            Tok::One => {
                for j in 0..s.len() {
                    next[j + 1] = dp[j] && s[j] != d;
                }
            }
            Tok::Star | Tok::StarStar => {
                next[0] = dp[0];
                for j in 0..s.len() {
                    let extend = next[j] && (t == Tok::StarStar || s[j] != d);
                    next[j + 1] = dp[j + 1] || extend;
                }
            }
        }
        std::mem::swap(&mut dp, &mut next);
    }
    dp[s.len()]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    One,
    Star,
    StarStar,
}

fn tokens(pattern: &str) -> Vec<Tok> {
    let b = pattern.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' => {
                let mut j = i;
                while j < b.len() && b[j] == b'*' {
                    j += 1;
                }
                out.push(if j - i >= 2 { Tok::StarStar } else { Tok::Star });
                i = j;
            }
            b'?' => {
                out.push(Tok::One);
                i += 1;
            }
            c => {
                out.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    out
}

impl Glob {
    /// A glob over `pattern` where `*` does not cross `delimiter`.
    #[must_use]
    pub fn new(pattern: &str, delimiter: u8) -> Self {
        Self {
            pattern: Arc::from(pattern),
            delimiter,
        }
    }

    /// True if `s` matches the whole pattern.
    #[must_use]
    pub fn matches(&self, s: &str) -> bool {
        let p = &*self.pattern;
        if p == "**" {
            return true;
        }
        if !p.contains(['*', '?']) {
            return p == s;
        }
        // Fast path for the common `prefix/**` shape: no allocation.
        if let Some(prefix) = p.strip_suffix("**") {
            if !prefix.contains(['*', '?']) {
                return s.starts_with(prefix);
            }
        }
        // And for `prefix*` (Redis keys, command names): the rest of `s`
        // must not hold the delimiter.
        if let Some(prefix) = p.strip_suffix('*') {
            if !prefix.contains(['*', '?']) {
                return s.starts_with(prefix)
                    && !s.as_bytes()[prefix.len()..].contains(&self.delimiter);
            }
        }
        // Longer than any usual path or executable name: the DP rows go to
        // the heap. Otherwise they live on the stack (the decision path
        // does not allocate).
        let n = s.len() + 1;
        if n > STACK_ROW {
            return match_rows(
                p.as_bytes(),
                s.as_bytes(),
                self.delimiter,
                &mut vec![false; n],
                &mut vec![false; n],
            );
        }
        let (mut a, mut b) = ([false; STACK_ROW], [false; STACK_ROW]);
        match_rows(
            p.as_bytes(),
            s.as_bytes(),
            self.delimiter,
            &mut a[..n],
            &mut b[..n],
        )
    }

    /// Count of non-`*` characters: how specific an endpoint `path` is.
    #[must_use]
    pub fn specificity(&self) -> usize {
        self.pattern.bytes().filter(|&b| b != b'*').count()
    }

    /// True if some string matches both globs (same delimiter assumed).
    #[must_use]
    pub fn intersects(&self, other: &Self) -> bool {
        let a = tokens(&self.pattern);
        let b = tokens(&other.pattern);
        let d = self.delimiter;
        let mut seen = HashSet::new();
        let mut todo = vec![(0usize, 0usize)];
        while let Some((i, j)) = todo.pop() {
            if !seen.insert((i, j)) {
                continue;
            }
            if i == a.len() && j == b.len() {
                return true;
            }
            if matches!(a.get(i), Some(Tok::Star | Tok::StarStar)) {
                todo.push((i + 1, j));
            }
            if matches!(b.get(j), Some(Tok::Star | Tok::StarStar)) {
                todo.push((i, j + 1));
            }
            // Candidate characters: literals at either side, the delimiter,
            // and one character that appears in neither pattern.
            let mut cands = vec![d, 0u8];
            if let Some(Tok::Lit(c)) = a.get(i) {
                cands.push(*c);
            }
            if let Some(Tok::Lit(c)) = b.get(j) {
                cands.push(*c);
            }
            for c in cands {
                if let (Some(ni), Some(nj)) = (step(&a, i, c, d), step(&b, j, c, d)) {
                    todo.push((ni, nj));
                }
            }
        }
        false
    }
}

/// Consumes one character `c` at token `i`; the next token position.
fn step(t: &[Tok], i: usize, c: u8, d: u8) -> Option<usize> {
    match t.get(i)? {
        Tok::Lit(l) => (*l == c).then_some(i + 1),
        Tok::One => (c != d).then_some(i + 1),
        Tok::Star => (c != d).then_some(i),
        Tok::StarStar => Some(i),
    }
}

/// Rejects glob syntax sluice does not implement (character classes, braces).
pub(crate) fn unsupported_glob_syntax(pattern: &str) -> Option<char> {
    pattern.chars().find(|c| matches!(c, '[' | ']' | '{' | '}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "", true),
            ("**", "/anything/at/all", true),
            ("/repos/*", "/repos/a", true),
            ("/repos/*", "/repos/a/b", false),
            ("/repos/**", "/repos/a/b", true),
            ("/api/**", "/api", false),
            ("/api/**", "/api/", true),
            ("/api/**", "/api/x", true),
            ("/v1/models/**", "/v1/models/gpt/x", true),
            ("/repos/*/*/rulesets", "/repos/o/r/rulesets", true),
            ("/repos/*/*/rulesets", "/repos/o/rulesets", false),
            ("/exact", "/exact", true),
            ("/exact", "/exact/", false),
            ("/a?c", "/abc", true),
            ("/a?c", "/a/c", false),
            ("/usr/bin/python*", "/usr/bin/python3.12", true),
            (
                "/usr/lib/node_modules/**",
                "/usr/lib/node_modules/npm/bin/npm-cli.js",
                true,
            ),
            ("/usr/bin/*", "/usr/local/bin/x", false),
            ("**/bin/node", "/opt/x/bin/node", true),
            ("*/bin/node", "/opt/bin/node", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p, b'/').matches(s), *want, "{p} vs {s}");
        }
    }

    /// Reference matcher: the glob semantics written as plain recursion.
    fn reference(p: &[u8], s: &[u8], d: u8) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => {
                let run = p.iter().take_while(|&&c| c == b'*').count();
                let rest = &p[run..];
                (0..=s.len())
                    .take_while(|&k| run >= 2 || !s[..k].contains(&d))
                    .any(|k| reference(rest, &s[k..], d))
            }
            Some(b'?') => s.first().is_some_and(|&c| c != d) && reference(&p[1..], &s[1..], d),
            Some(&c) => s.first() == Some(&c) && reference(&p[1..], &s[1..], d),
        }
    }

    #[test]
    fn matcher_agrees_with_the_reference_on_short_and_long_strings() {
        // Every pattern over a small alphabet against strings built from it,
        // plus the same strings padded past the stack row (heap path).
        let alphabet = [b'a', b'/', b'*', b'?'];
        let mut patterns = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = patterns
                .iter()
                .flat_map(|p| alphabet.iter().map(move |&c| [p.clone(), vec![c]].concat()))
                .collect();
            patterns.extend(longer);
        }
        patterns.sort();
        patterns.dedup();
        let strings: Vec<Vec<u8>> = [
            "", "a", "/", "aa", "a/", "/a", "a/a", "aa/a/", "//a", "a/aa/a",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let mut checked = 0;
        for p in &patterns {
            let text = std::str::from_utf8(p).expect("ascii");
            let g = Glob::new(text, b'/');
            for s in &strings {
                for pad in [0usize, STACK_ROW + 7] {
                    let long = [vec![b'a'; pad], s.clone()].concat();
                    let lp = [vec![b'a'; pad], p.clone()].concat();
                    let (gs, gp) = if pad == 0 {
                        (s.clone(), g.clone())
                    } else {
                        (
                            long,
                            Glob::new(std::str::from_utf8(&lp).expect("ascii"), b'/'),
                        )
                    };
                    let want = reference(gp.pattern.as_bytes(), &gs, b'/');
                    let text_s = std::str::from_utf8(&gs).expect("ascii");
                    assert_eq!(gp.matches(text_s), want, "{:?} vs {text_s:?}", &*gp.pattern);
                    checked += 1;
                }
            }
        }
        assert!(checked > 6000, "{checked}");
    }

    #[test]
    fn dot_delimited_glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("v1.*", "v1.2", true),
            ("v1.*", "v1.2.3", false),
            ("foo-*", "foo-a.b", false),
            ("issue_*", "issue_create", true),
            ("*", "anything", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p, b'.').matches(s), *want, "{p} vs {s}");
        }
    }

    #[test]
    fn intersection_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "/graphql", true),
            ("/graphql", "/repos/**", false),
            ("/repos/*", "/repos/**", true),
            ("/a/*/c", "/a/b/*", true),
            ("/a/*", "/b/*", false),
            ("/x/*", "/x/a/b", false),
            ("/x/**", "/x/a/b", true),
            ("/api/**", "/api", false),
        ];
        for (a, b, want) in cases {
            let (ga, gb) = (Glob::new(a, b'/'), Glob::new(b, b'/'));
            assert_eq!(ga.intersects(&gb), *want, "{a} vs {b}");
            assert_eq!(gb.intersects(&ga), *want, "{b} vs {a}");
        }
    }
}
