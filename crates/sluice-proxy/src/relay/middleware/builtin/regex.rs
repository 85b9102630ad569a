//! `sluice/regex`: the operator's regular expressions over the body (and,
//! on request, visible header values and the target); deny or redact.
//!
//! ```yaml
//! config:
//!   patterns: ['(?i)internal[- ]only', '\bPRJ-[0-9]{4}\b']   # required, 1-64, each <= 1 KiB
//!   action: redact          # deny (default) | redact
//!   replacement: '[REDACTED]'
//!   reason_code: regex_match
//!   headers: false          # also scan visible header values
//!   target: false           # also scan path?query
//! ```
//!
//! Patterns use the `regex` crate's syntax (linear-time matching, no
//! backreferences or look-around), compiled over bytes so non-UTF-8 bodies
//! are scanned too. Findings: type `regex_match`, label `pattern N` (N is the
//! index in `patterns`), the number of matches.

use ::regex::bytes::Regex;

use super::scan::{Content, Hit, Scanner};
use super::Config;

pub(super) const NAME: &str = "sluice/regex";

const FIELDS: &[&str] = &[
    "patterns",
    "action",
    "replacement",
    "reason_code",
    "headers",
    "target",
];

/// Builds the stage from its policy `config`.
pub(super) fn build(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<Content, String> {
    let c = Config::new(config, FIELDS)?;
    let patterns = c
        .patterns("patterns")?
        .ok_or_else(|| "`patterns`: required (a list of regular expressions)".to_owned())?;
    if patterns.is_empty() {
        return Err("`patterns`: must not be empty".into());
    }
    Ok(Content {
        name: NAME,
        finding_type: "regex_match",
        scanner: Box::new(Patterns(patterns)),
        action: c.action()?,
        replacement: c.replacement()?,
        reason_code: c.reason_code("regex_match")?,
        headers: c.bool("headers", false)?,
        target: c.bool("target", false)?,
    })
}

/// The compiled `patterns`, in config order.
struct Patterns(Vec<Regex>);

impl Scanner for Patterns {
    fn labels(&self) -> usize {
        self.0.len()
    }

    fn label(&self, index: usize) -> String {
        format!("pattern {index}")
    }

    /// Every non-empty match of every pattern, within `budget`.
    ///
    /// One search is linear in the text, but iterating can be quadratic: a
    /// pattern like `a*b|a` scans to the end of a run of `a` before settling
    /// on each one-byte match. So every search after a pattern's first one
    /// is charged the bytes it may scan (from its start to the end of the
    /// text); when the charges exceed the budget (shared by the body, the
    /// headers and the target of one request), scanning stops, and
    /// `Content` denies (never a partial redaction) with the counts found so
    /// far. Each pattern's first search is free: a text is always scanned
    /// whole once per pattern until the budget runs out.
    fn scan(&self, text: &[u8], hits: &mut Vec<Hit>, budget: &mut usize) -> bool {
        for (label, re) in self.0.iter().enumerate() {
            let mut matches = re.find_iter(text);
            // Where the next search starts; `None` before the first.
            let mut next: Option<usize> = None;
            loop {
                if let Some(from) = next {
                    let cost = text.len().saturating_sub(from);
                    let Some(left) = budget.checked_sub(cost) else {
                        return false;
                    };
                    *budget = left;
                }
                let Some(m) = matches.next() else { break };
                next = Some(m.end());
                if !m.is_empty() {
                    hits.push(Hit {
                        range: m.range(),
                        label,
                    });
                }
            }
        }
        true
    }
}

#[cfg(test)]
#[path = "regex_tests.rs"]
mod tests;
