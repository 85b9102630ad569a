//! `sluice/secrets`: credential-shaped strings in the body, visible header
//! values and the target; deny or redact.
//!
//! ```yaml
//! config:
//!   kinds: [aws_access_key, github_token]   # default: every kind
//!   action: deny              # deny (default) | redact
//!   replacement: '[REDACTED]'
//!   reason_code: secret_detected
//!   allow: ['^AKIAIOSFODNN7EXAMPLE$']        # exceptions (regexes over the matched text)
//!   headers: true             # scan visible header values (default true)
//!   target: true              # scan path?query (default true)
//! ```
//!
//! sluice's own placeholders (`sluice:resolve:env:NAME`,
//! `openshell:resolve:env:NAME`) are never secrets, so the sandbox can send
//! them for sluice to resolve after the chain: a match that lies within a
//! placeholder and covers part of its prefix is placeholder text and is
//! ignored. A secret-shaped *name* (`sluice:resolve:env:AKIA...`) is still
//! reported: no policy names a credential like that, and exempting it would
//! let any `[A-Za-z0-9_]` secret out behind the prefix. Findings: type
//! `secret_detected`, label the kind, the number of matches; never the
//! matched text.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::LazyLock;

use ::regex::bytes::Regex;
use base64::Engine as _;

use super::scan::{Content, Hit, Scanner};
use super::Config;

pub(super) const NAME: &str = "sluice/secrets";

const FIELDS: &[&str] = &[
    "kinds",
    "action",
    "replacement",
    "reason_code",
    "allow",
    "headers",
    "target",
];

/// Every kind, in priority order: where matches of two kinds overlap
/// (`Bearer eyJ...`), the earlier kind reports it.
pub(super) const KINDS: &[&str] = &[
    "private_key",
    "jwt",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "slack_token",
    "slack_webhook",
    "google_api_key",
    "stripe_key",
    "bearer_token",
];

/// Builds the stage from its policy `config`.
pub(super) fn build(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<Content, String> {
    let c = Config::new(config, FIELDS)?;
    let kinds = match c.strings("kinds")? {
        None => (0..KINDS.len()).collect(),
        Some(names) if names.is_empty() => return Err("`kinds`: must not be empty".into()),
        Some(names) => {
            let mut kinds = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let Some(k) = KINDS.iter().position(|k| k == name) else {
                    return Err(format!(
                        "`kinds[{i}]`: unknown kind `{}` (expected one of: {})",
                        name.escape_debug(),
                        KINDS.join(", ")
                    ));
                };
                kinds.push(k);
            }
            kinds.sort_unstable();
            kinds.dedup();
            kinds
        }
    };
    Ok(Content {
        name: NAME,
        finding_type: "secret_detected",
        scanner: Box::new(Secrets {
            kinds,
            allow: c.patterns("allow")?.unwrap_or_default(),
        }),
        action: c.action()?,
        replacement: c.replacement()?,
        reason_code: c.reason_code("secret_detected")?,
        headers: c.bool("headers", true)?,
        target: c.bool("target", true)?,
    })
}

/// The enabled kinds (indexes into [`KINDS`], ascending) and the exceptions.
struct Secrets {
    kinds: Vec<usize>,
    allow: Vec<Regex>,
}

impl Scanner for Secrets {
    fn labels(&self) -> usize {
        KINDS.len()
    }

    fn label(&self, index: usize) -> String {
        KINDS.get(index).copied().unwrap_or("unknown").to_owned()
    }

    /// Always complete: every detector settles a match within the token it
    /// matched (bounded look-ahead), so iterating is linear.
    fn scan(&self, text: &[u8], hits: &mut Vec<Hit>, _budget: &mut usize) -> bool {
        let placeholders = Placeholders::find(text);
        let mut taken = Taken::default();
        for &kind in &self.kinds {
            for range in candidates(KINDS[kind], text) {
                let allowed = self
                    .allow
                    .iter()
                    .any(|re| re.is_match(&text[range.clone()]));
                if allowed || placeholders.exempt(&range) || taken.overlaps(&range) {
                    continue;
                }
                taken.insert(range.clone());
                hits.push(Hit { range, label: kind });
            }
        }
        true
    }
}

/// The placeholders in a text: (whole range, where the name starts), in
/// order, disjoint.
struct Placeholders(Vec<(Range<usize>, usize)>);

impl Placeholders {
    fn find(text: &[u8]) -> Self {
        Self(
            sluice_policy::placeholder::find(text)
                .map(|(range, name)| {
                    let name_start = range.end - name.len();
                    (range, name_start)
                })
                .collect(),
        )
    }

    /// Whether `r` is placeholder text: inside one placeholder and covering
    /// part of its prefix (not only its name).
    fn exempt(&self, r: &Range<usize>) -> bool {
        let i = self.0.partition_point(|(p, _)| p.start <= r.start);
        i.checked_sub(1)
            .map(|i| &self.0[i])
            .is_some_and(|(p, name_start)| r.end <= p.end && r.start < *name_start)
    }
}

/// Disjoint byte ranges already reported (by an earlier kind).
#[derive(Default)]
struct Taken(BTreeMap<usize, usize>);

impl Taken {
    /// Whether `r` overlaps a taken range. The ranges are disjoint, so only
    /// the last one starting before `r.end` can.
    fn overlaps(&self, r: &Range<usize>) -> bool {
        self.0
            .range(..r.end)
            .next_back()
            .is_some_and(|(_, end)| *end > r.start)
    }

    /// Takes `r` (the caller checked it overlaps nothing).
    fn insert(&mut self, r: Range<usize>) {
        self.0.insert(r.start, r.end);
    }
}

// === detectors ===

/// A regex-shaped kind.
struct Detector {
    kind: &'static str,
    /// The match, or its `s` group when it has one (the secret itself,
    /// without the keyword around it).
    pattern: &'static str,
    /// The token's alphabet: a match touching one of these bytes on either
    /// side is part of a longer token, not this secret.
    alphabet: fn(u8) -> bool,
    /// A last check of the secret's bytes.
    check: fn(&[u8]) -> bool,
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}
fn base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}
fn slack(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}
fn url_path(b: u8) -> bool {
    base64url(b) || b == b'/'
}
fn b64token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)
}
fn any(_: &[u8]) -> bool {
    true
}

/// A JWT's header (the first part) is base64url JSON with an `alg`.
fn jwt_header(token: &[u8]) -> bool {
    use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let header = token.split(|b| *b == b'.').next().unwrap_or_default();
    LENIENT
        .decode(header)
        .ok()
        .and_then(|json| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).ok()
        })
        .is_some_and(|h| h.get("alg").is_some_and(serde_json::Value::is_string))
}

/// A generic bearer token has letters and digits (so `Bearer YOUR_TOKEN_HERE`
/// and prose are not secrets).
fn mixed(token: &[u8]) -> bool {
    token.iter().any(u8::is_ascii_digit) && token.iter().any(u8::is_ascii_alphabetic)
}

const DETECTORS: &[Detector] = &[
    Detector {
        kind: "jwt",
        pattern: r"(?-u)eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        alphabet: base64url,
        check: jwt_header,
    },
    Detector {
        kind: "aws_access_key",
        pattern: r"(?-u)(?:AKIA|ASIA)[A-Z0-9]{16}",
        alphabet: alnum,
        check: any,
    },
    Detector {
        kind: "aws_secret_key",
        pattern: r#"(?i-u)(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)["']?[ \t]*[:=][ \t]*["']?(?P<s>[A-Za-z0-9/+]{40})"#,
        alphabet: base64,
        check: any,
    },
    Detector {
        kind: "github_token",
        pattern: r"(?-u)(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{59,240})",
        alphabet: word,
        check: any,
    },
    Detector {
        kind: "slack_token",
        pattern: r"(?-u)xox[abprs]-[0-9]+-[A-Za-z0-9-]{8,250}",
        alphabet: slack,
        check: any,
    },
    Detector {
        kind: "slack_webhook",
        pattern: r"(?-u)https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,250}",
        alphabet: url_path,
        check: any,
    },
    Detector {
        kind: "google_api_key",
        pattern: r"(?-u)AIza[0-9A-Za-z_-]{35}",
        alphabet: base64url,
        check: any,
    },
    Detector {
        kind: "stripe_key",
        pattern: r"(?-u)(?:sk|rk)_live_[0-9A-Za-z]{24,247}",
        alphabet: word,
        check: any,
    },
    Detector {
        kind: "bearer_token",
        pattern: r"(?i-u)\bbearer[ \t]+(?P<s>[A-Za-z0-9._~+/-]{20,}=*)",
        alphabet: b64token,
        check: mixed,
    },
];

/// `DETECTORS`, compiled once. The patterns are constants covered by the
/// tests (`every_detector_compiles`), so compiling cannot fail at run time.
static COMPILED: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    DETECTORS
        .iter()
        .map(|d| Regex::new(d.pattern).expect("built-in secret pattern compiles"))
        .collect()
});

/// A PEM private-key block: from its BEGIN line to the next END line (or
/// the BEGIN line alone when none follows), so redaction removes the key
/// material, not only the header.
static PEM_BEGIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----").expect("constant pattern")
});
static PEM_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----").expect("constant pattern")
});

/// Every match of `kind` in `text`, left to right.
fn candidates(kind: &str, text: &[u8]) -> Vec<Range<usize>> {
    if kind == "private_key" {
        return private_keys(text);
    }
    let Some(i) = DETECTORS.iter().position(|d| d.kind == kind) else {
        return Vec::new();
    };
    let (d, re) = (&DETECTORS[i], &COMPILED[i]);
    let secret = |r: &Range<usize>| {
        let before = r.start.checked_sub(1).map(|j| text[j]);
        let after = text.get(r.end).copied();
        !before.is_some_and(d.alphabet)
            && !after.is_some_and(d.alphabet)
            && (d.check)(&text[r.clone()])
    };
    let ranges: Vec<Range<usize>> = if re.capture_names().any(|n| n == Some("s")) {
        re.captures_iter(text)
            .filter_map(|c| c.name("s").map(|m| m.range()))
            .collect()
    } else {
        re.find_iter(text).map(|m| m.range()).collect()
    };
    ranges
        .into_iter()
        .filter(|r| !r.is_empty() && secret(r))
        .collect()
}

fn private_keys(text: &[u8]) -> Vec<Range<usize>> {
    let ends: Vec<Range<usize>> = PEM_END.find_iter(text).map(|m| m.range()).collect();
    PEM_BEGIN
        .find_iter(text)
        .map(|m| {
            let next = ends.partition_point(|e| e.start < m.end());
            ends.get(next).map_or(m.range(), |e| m.start()..e.end)
        })
        .collect()
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
