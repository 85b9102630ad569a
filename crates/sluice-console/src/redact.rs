//! The policy as the page shows it: every secret source replaced by
//! `"[redacted]"`. The text is parsed and written again (comments are
//! lost); text that does not parse is not shown at all.

use serde_yaml::Value;

/// What replaces a secret source.
pub(crate) const REDACTED: &str = "[redacted]";

/// Keys whose values are secret sources wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "credentials",
    "api_key",
    "client_id",
    "client_secret",
    "assertion",
    "password",
    "secret",
    "token",
];

/// The policy text with secret sources redacted, or a note saying why it
/// is not shown.
pub(crate) fn policy_text(text: &str) -> String {
    match serde_yaml::from_str::<Value>(text) {
        Ok(mut doc) => {
            redact(&mut doc);
            serde_yaml::to_string(&doc)
                .unwrap_or_else(|_| "# the policy cannot be shown\n".to_owned())
        }
        Err(_) => "# the policy file is not valid YAML now; it is not shown\n".to_owned(),
    }
}

fn redact(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                match k.as_str() {
                    Some("credentials") => redact_each(val),
                    Some(key) if SECRET_KEYS.contains(&key) => {
                        *val = Value::String(REDACTED.to_owned());
                    }
                    _ => redact(val),
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(redact),
        Value::Tagged(t) => redact(&mut t.value),
        _ => {}
    }
}

/// `credentials:` maps names to sources: keep the names, hide the sources.
fn redact_each(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            for (_, val) in m.iter_mut() {
                *val = Value::String(REDACTED.to_owned());
            }
        }
        other => *other = Value::String(REDACTED.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_sources_are_hidden() {
        let text = "version: 1\nproviders:\n  gh:\n    credentials:\n      GITHUB_TOKEN: { value: ghp_LITERAL }\n      OTHER: { env: SECRET_ENV }\n    token_grant:\n      client_id: { env: CID }\n      client_secret: { value: hunter2 }\n    endpoints: [ { host: api.github.com, port: 443 } ]\ninference:\n  routes:\n    - name: default\n      api_key: { file: /run/key }\n      endpoint: https://llm.internal/v1\n";
        let out = policy_text(text);
        for secret in ["ghp_LITERAL", "SECRET_ENV", "CID", "hunter2", "/run/key"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains("GITHUB_TOKEN"), "{out}");
        assert!(out.contains("api.github.com"), "{out}");
        assert!(out.contains("https://llm.internal/v1"), "{out}");
        assert!(!policy_text("a: [").contains('['));
    }
}
