//! Amending a policy file with an approved proposal: a new entry under
//! `network_policies`, written into the operator's text so that it stays a
//! file a person reads. The entry goes in as a clearly marked block at the
//! end of the `network_policies` mapping, and every other byte of the file
//! (comments included) is kept. When the text cannot be amended in place
//! (an unusual layout), the whole document is re-serialized instead (then
//! comments are lost) — and either way the result is checked to mean
//! exactly the old policy plus the new entry. Pure text in, text out.

use serde_yaml::{Mapping, Value};

/// Why a proposal cannot be written into a policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AmendError {
    /// The policy text is not a YAML mapping (or its `network_policies` is not one).
    #[error("the policy is not a YAML mapping: {0}")]
    NotAMapping(String),
    /// `network_policies` already has an entry of this name.
    #[error("network_policies already has an entry `{0}`")]
    Exists(String),
    /// The rule name is not usable as a policy key.
    #[error("invalid rule name `{0}`: 1-64 characters of [A-Za-z0-9_.-]")]
    BadName(String),
    /// The rule is not a mapping.
    #[error("the rule must be a mapping")]
    BadRule,
}

/// Whether `name` is usable as a `network_policies` key in a proposal.
#[must_use]
pub fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with("_provider_")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `src` with `network_policies.<name>` = `rule` added. `marker` labels the
/// block (e.g. `proposal p-1a2b approved by alice`; one line, no newlines).
///
/// # Errors
/// [`AmendError`] when `src` is not a mapping, the name is taken or invalid,
/// or `rule` is not a mapping.
pub fn add_rule(
    src: &str,
    name: &str,
    rule: &serde_json::Value,
    marker: &str,
) -> Result<String, AmendError> {
    if !valid_rule_name(name) {
        return Err(AmendError::BadName(name.to_owned()));
    }
    let rule: Value = serde_yaml::to_value(rule).map_err(|_| AmendError::BadRule)?;
    if !rule.is_mapping() {
        return Err(AmendError::BadRule);
    }
    let before: Value =
        serde_yaml::from_str(src).map_err(|e| AmendError::NotAMapping(e.to_string()))?;
    let mut expected = before.clone();
    let root = expected
        .as_mapping_mut()
        .ok_or_else(|| AmendError::NotAMapping("top level".into()))?;
    let policies = root
        .entry(Value::String("network_policies".into()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let policies = policies
        .as_mapping_mut()
        .ok_or_else(|| AmendError::NotAMapping("network_policies".into()))?;
    if policies.contains_key(name) {
        return Err(AmendError::Exists(name.to_owned()));
    }
    policies.insert(Value::String(name.to_owned()), rule.clone());
    let marker: String = marker.chars().filter(|c| !c.is_control()).collect();
    if let Some(text) = in_place(src, name, &rule, &marker) {
        if serde_yaml::from_str::<Value>(&text).ok().as_ref() == Some(&expected) {
            return Ok(text);
        }
    }
    let mut out = format!("# policy re-written by sluice: {marker}\n");
    out.push_str(
        &serde_yaml::to_string(&expected).map_err(|e| AmendError::NotAMapping(e.to_string()))?,
    );
    Ok(out)
}

/// The block-style insertion, or `None` when the layout is not the plain
/// one (`network_policies:` at column 0 with block children, `{}`, or absent).
fn in_place(src: &str, name: &str, rule: &Value, marker: &str) -> Option<String> {
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("network_policies:"))?;
    let rest = lines[start]["network_policies:".len()..].trim();
    let rest = rest.split('#').next().unwrap_or("").trim();
    let mut out = String::with_capacity(src.len() + 512);
    let ensure_newline = |out: &mut String| {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    };
    match rest {
        "" => {
            // Block children: the indent of the first child; the block ends
            // before the next line at column 0 that is not a comment or blank.
            let indent = lines[start + 1..]
                .iter()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map(|l| l.len() - l.trim_start().len())
                .filter(|n| *n > 0)
                .unwrap_or(2);
            let mut end = lines.len();
            for (i, l) in lines.iter().enumerate().skip(start + 1) {
                let top_level =
                    !l.starts_with([' ', '\t', '#', '\n', '\r']) && !l.trim().is_empty();
                if top_level {
                    end = i;
                    break;
                }
            }
            // Keep trailing blank lines and comments of the block after ours.
            while end > start + 1 && {
                let t = lines[end - 1].trim();
                t.is_empty() || (t.starts_with('#') && !lines[end - 1].starts_with(' '))
            } {
                end -= 1;
            }
            for l in &lines[..end] {
                out.push_str(l);
            }
            ensure_newline(&mut out);
            out.push_str(&block(name, rule, marker, indent)?);
            for l in &lines[end..] {
                out.push_str(l);
            }
        }
        "{}" => {
            for l in &lines[..start] {
                out.push_str(l);
            }
            out.push_str("network_policies:\n");
            out.push_str(&block(name, rule, marker, 2)?);
            for l in &lines[start + 1..] {
                out.push_str(l);
            }
        }
        _ => return None,
    }
    Some(out)
}

/// The marked entry, indented by `indent` under `network_policies:`.
fn block(name: &str, rule: &Value, marker: &str, indent: usize) -> Option<String> {
    let pad = " ".repeat(indent);
    let body = serde_yaml::to_string(rule).ok()?;
    let mut out = format!("{pad}# --- added by sluice: {marker}\n{pad}{name}:\n");
    for l in body.lines() {
        out.push_str(&pad);
        out.push_str("  ");
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&format!("{pad}# --- end of the addition\n"));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> serde_json::Value {
        serde_json::json!({
            "endpoints": [{"host": "api.example.test", "port": 443}],
            "binaries": [{"path": "/usr/bin/curl"}],
        })
    }

    fn parsed(s: &str) -> Value {
        serde_yaml::from_str(s).expect("yaml")
    }

    #[test]
    fn comments_and_order_are_kept() {
        let src = "# the team's policy\nversion: 1\nnetwork_policies:\n  # github first\n  github:\n    endpoints:\n      - { host: api.github.com, port: 443 }\n    binaries: [ { path: /usr/bin/gh } ]\n\n# providers below\nproviders: {}\n";
        let out =
            add_rule(src, "example", &rule(), "proposal p-1 approved by alice").expect("amended");
        assert!(
            out.starts_with(
                "# the team's policy\nversion: 1\nnetwork_policies:\n  # github first\n"
            ),
            "{out}"
        );
        assert!(out.contains("  # --- added by sluice: proposal p-1 approved by alice\n  example:\n    binaries:\n"), "{out}");
        assert!(
            out.contains("  # --- end of the addition\n\n# providers below"),
            "{out}"
        );
        assert!(out.contains("# providers below\nproviders: {}\n"), "{out}");
        let v = parsed(&out);
        assert_eq!(
            v["network_policies"]["example"]["endpoints"][0]["host"],
            "api.example.test"
        );
        assert_eq!(
            v["network_policies"]["github"]["binaries"][0]["path"],
            "/usr/bin/gh"
        );
    }

    #[test]
    fn other_layouts() {
        let cases = [
            ("version: 1\nnetwork_policies: {}\n", true),
            ("version: 1\n", false),
            (
                "version: 1\nnetwork_policies:\n    deep:\n        endpoints: []\n",
                true,
            ),
            (
                "version: 1\nnetwork_policies: { a: { endpoints: [] } }\n",
                false,
            ),
        ];
        for (src, kept) in cases {
            let out = add_rule(src, "new", &rule(), "m").expect(src);
            let v = parsed(&out);
            assert_eq!(
                v["network_policies"]["new"]["binaries"][0]["path"], "/usr/bin/curl",
                "{src}"
            );
            assert_eq!(
                out.starts_with("# policy re-written by sluice"),
                !kept,
                "{src}:\n{out}"
            );
            assert_eq!(v["version"], 1);
        }
    }

    #[test]
    fn refusals() {
        let src = "version: 1\nnetwork_policies:\n  taken:\n    endpoints: []\n";
        assert_eq!(
            add_rule(src, "taken", &rule(), "m"),
            Err(AmendError::Exists("taken".into()))
        );
        for bad in ["", "a b", "_provider_x", "x/y"] {
            assert_eq!(
                add_rule(src, bad, &rule(), "m"),
                Err(AmendError::BadName(bad.into()))
            );
        }
        assert_eq!(
            add_rule(src, "n", &serde_json::json!([1]), "m"),
            Err(AmendError::BadRule)
        );
        assert!(matches!(
            add_rule("- a\n", "n", &rule(), "m"),
            Err(AmendError::NotAMapping(_))
        ));
        // A marker cannot break out of its comment line.
        let out = add_rule(src, "n", &rule(), "evil\nversion: 2").expect("amended");
        assert_eq!(parsed(&out)["version"], 1, "no injected key");
    }
}
