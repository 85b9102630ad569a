//! A policy as the sandbox or a console may see it: every secret source
//! (`env:` variable names, `file:` paths) replaced by `[redacted]`. Values
//! of secrets are never in a policy file; where they come from is still
//! not the agent's business.

use serde_yaml::Value;

const REDACTED: &str = "[redacted]";

/// Keys whose values are secret sources wherever they appear
/// (`credentials` maps names to sources: the names stay).
const SECRET_KEYS: &[&str] = &[
    "api_key",
    "client_id",
    "client_secret",
    "assertion",
    "password",
    "secret",
    "token",
];

/// `src` re-serialized with secret sources redacted: every value under a
/// `credentials` mapping (names kept), and every value of a key that names
/// a secret (`api_key`, `client_id`, `client_secret`, `assertion`,
/// `password`, `secret`, `token`), wherever they are. Comments are lost.
///
/// # Errors
/// The YAML error when `src` does not parse.
pub fn redact_secret_sources(src: &str) -> Result<String, String> {
    let mut doc: Value = serde_yaml::from_str(src).map_err(|e| e.to_string())?;
    redact(&mut doc);
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

fn redact(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                match k.as_str() {
                    Some("credentials") => {
                        if let Value::Mapping(creds) = val {
                            for (_, source) in creds.iter_mut() {
                                *source = Value::String(REDACTED.into());
                            }
                        } else {
                            *val = Value::String(REDACTED.into());
                        }
                    }
                    Some(key) if SECRET_KEYS.contains(&key) => {
                        *val = Value::String(REDACTED.into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_redacted_and_the_rest_kept() {
        let src = r#"version: 1
network_policies:
  gh: { endpoints: [ { host: api.github.com, port: 443 } ] }
providers:
  github:
    credentials:
      GITHUB_TOKEN: { env: HOST_GH_TOKEN }
      OTHER: { file: /etc/secret/other }
    token_grant: { token_endpoint: "https://t.test/token", grant: client_credentials, client_id: { env: CID }, client_secret: { file: /s } }
    endpoints: [ { host: api.github.com, port: 443 } ]
inference:
  routes:
    - { name: default, endpoint: "https://llm.test/v1", protocols: [openai_chat_completions], api_key: { env: LLM_KEY } }
profiles:
  - github
  - { file: ./mine.yaml, credentials: { MINE_TOKEN: { env: HOST_MINE }, OTHER_KEY: { file: /run/mine-key } } }
"#;
        let out = redact_secret_sources(src).expect("redacted");
        for secret_source in [
            "HOST_GH_TOKEN",
            "/etc/secret/other",
            "CID",
            "LLM_KEY",
            "/s\n",
            "HOST_MINE",
            "/run/mine-key",
        ] {
            assert!(!out.contains(secret_source), "{secret_source} in:\n{out}");
        }
        assert!(out.contains("GITHUB_TOKEN: '[redacted]'"), "{out}");
        assert!(
            out.contains("MINE_TOKEN: '[redacted]'") && out.contains("file: ./mine.yaml"),
            "{out}"
        );
        assert!(out.contains("api.github.com"));
        assert!(out.contains("token_endpoint: https://t.test/token"));
        assert!(redact_secret_sources("a: [").is_err());
    }
}
