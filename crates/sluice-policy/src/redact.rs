//! A policy as the sandbox or a console may see it: every secret source
//! (`env:` variable names, `file:` paths) replaced by `[redacted]`. Values
//! of secrets are never in a policy file; where they come from is still
//! not the agent's business.

use serde_yaml::Value;

const REDACTED: &str = "[redacted]";

/// `src` re-serialized with secret sources redacted: provider credentials,
/// token-grant client ids/secrets/assertions, and inference route keys.
///
/// # Errors
/// The YAML error when `src` does not parse.
pub fn redact_secret_sources(src: &str) -> Result<String, String> {
    let mut doc: Value = serde_yaml::from_str(src).map_err(|e| e.to_string())?;
    if let Some(providers) = doc.get_mut("providers").and_then(Value::as_mapping_mut) {
        for (_, provider) in providers.iter_mut() {
            if let Some(creds) = provider
                .get_mut("credentials")
                .and_then(Value::as_mapping_mut)
            {
                for (_, source) in creds.iter_mut() {
                    *source = Value::String(REDACTED.into());
                }
            }
            if let Some(grant) = provider
                .get_mut("token_grant")
                .and_then(Value::as_mapping_mut)
            {
                for key in ["client_id", "client_secret", "assertion"] {
                    if let Some(v) = grant.get_mut(key) {
                        *v = Value::String(REDACTED.into());
                    }
                }
            }
        }
    }
    if let Some(routes) = doc
        .get_mut("inference")
        .and_then(|i| i.get_mut("routes"))
        .and_then(Value::as_sequence_mut)
    {
        for route in routes {
            if let Some(k) = route.get_mut("api_key") {
                *k = Value::String(REDACTED.into());
            }
        }
    }
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
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
"#;
        let out = redact_secret_sources(src).expect("redacted");
        for secret_source in [
            "HOST_GH_TOKEN",
            "/etc/secret/other",
            "CID",
            "LLM_KEY",
            "/s\n",
        ] {
            assert!(!out.contains(secret_source), "{secret_source} in:\n{out}");
        }
        assert!(out.contains("GITHUB_TOKEN: '[redacted]'"), "{out}");
        assert!(out.contains("api.github.com"));
        assert!(out.contains("token_endpoint: https://t.test/token"));
        assert!(redact_secret_sources("a: [").is_err());
    }
}
