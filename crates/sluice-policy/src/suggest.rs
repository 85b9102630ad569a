//! Policy suggestions: for a denied destination (or request), the smallest
//! policy change that would allow it, as a YAML snippet a person can paste and
//! as a complete merged policy (`sluice run --suggest-policy FILE`,
//! `sluice explain`). Pure text in, text out.

use serde_yaml::{Mapping, Value};

/// One denial to turn into an allow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Denied {
    /// Destination host (name or IP literal) as requested.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Executable of the client, when known (`None`: identity not resolved).
    pub binary: Option<String>,
    /// For a request-level denial: what to add to the endpoint that matched.
    pub request: Option<DeniedRequest>,
}

/// A request denied by an endpoint's rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeniedRequest {
    /// The policy entry whose endpoint matched.
    pub policy: String,
    /// HTTP method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
}

/// The key a new policy entry for `host:port` gets.
#[must_use]
pub fn policy_key(host: &str, port: u16) -> String {
    let mut key = String::from("allow_");
    for c in host.chars() {
        key.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        });
    }
    key.push('_');
    key.push_str(&port.to_string());
    key
}

/// YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The binaries line of a new entry: the client's executable, or every
/// executable when identity was not resolved (commented as such).
fn binary_path(binary: Option<&str>) -> &str {
    binary.unwrap_or("/**")
}

/// The text to paste: for a destination, a new entry indented to go under
/// `network_policies:`; for a request, the rule to add to the endpoint's
/// `rules` (the merged policy of [`merge`] does both for you).
#[must_use]
pub fn snippet(d: &Denied) -> String {
    match &d.request {
        None => format!(
            "  {}:\n    endpoints:\n      - {{ host: {}, port: {} }}\n    binaries:\n      - {{ path: {} }}{}\n",
            policy_key(&d.host, d.port),
            quoted(&d.host),
            d.port,
            quoted(binary_path(d.binary.as_deref())),
            if d.binary.is_some() { "" } else { "   # the client was not identified" },
        ),
        Some(r) => format!(
            "# network_policies.{}, endpoint {}:{}, under `rules:`{}\n- allow: {{ method: {}, path: {} }}\n",
            r.policy,
            d.host,
            d.port,
            " (an `access` preset becomes its rules)",
            r.method,
            quoted(&r.path),
        ),
    }
}

/// Why a merge could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergeError {
    /// The policy text is not a YAML mapping.
    #[error("the policy is not a YAML mapping: {0}")]
    NotAMapping(String),
    /// A request-level denial names an endpoint the policy does not have (or one
    /// that is not `protocol: rest`).
    #[error("no rest endpoint {host}:{port} in network_policies.{policy}")]
    NoEndpoint {
        /// Policy key.
        policy: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
}

fn key(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// The rules an `access` preset stands for on a `rest` endpoint.
fn preset_rules(preset: &str) -> Vec<(&'static str, &'static str)> {
    let read = [("GET", "/**"), ("HEAD", "/**"), ("OPTIONS", "/**")];
    match preset {
        "read-only" => read.to_vec(),
        "read-write" => read
            .into_iter()
            .chain([("POST", "/**"), ("PUT", "/**"), ("PATCH", "/**")])
            .collect(),
        _ => vec![("*", "/**")],
    }
}

fn allow_rule(method: &str, path: &str) -> Value {
    let mut allow = Mapping::new();
    allow.insert(key("method"), key(method));
    allow.insert(key("path"), key(path));
    let mut rule = Mapping::new();
    rule.insert(key("allow"), Value::Mapping(allow));
    Value::Mapping(rule)
}

fn endpoint_matches(e: &Value, host: &str, port: u16) -> bool {
    let host_ok = e
        .get("host")
        .and_then(Value::as_str)
        .is_some_and(|h| h.trim_end_matches('.').eq_ignore_ascii_case(host));
    let port_ok = match e.get("ports").and_then(Value::as_sequence) {
        Some(ports) => ports.iter().any(|p| p.as_u64() == Some(u64::from(port))),
        None => e.get("port").and_then(Value::as_u64) == Some(u64::from(port)),
    };
    host_ok && port_ok
}

/// `src` with every suggestion applied: a new entry per denied destination
/// (binaries of every client denied there), and for request-level denials an
/// allow rule on the endpoint that matched (an `access` preset is expanded into
/// its rules first). Comments of `src` are not kept.
///
/// # Errors
/// [`MergeError`] when `src` is not a mapping or a named endpoint is missing.
pub fn merge(src: &str, denied: &[Denied]) -> Result<String, MergeError> {
    let mut doc: Value =
        serde_yaml::from_str(src).map_err(|e| MergeError::NotAMapping(e.to_string()))?;
    let root = doc
        .as_mapping_mut()
        .ok_or_else(|| MergeError::NotAMapping("top level".into()))?;
    let policies = root
        .entry(key("network_policies"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let policies = policies
        .as_mapping_mut()
        .ok_or_else(|| MergeError::NotAMapping("network_policies".into()))?;
    let mut sorted = denied.to_vec();
    sorted.sort();
    sorted.dedup();
    for d in &sorted {
        match &d.request {
            None => {
                let entry = policies
                    .entry(key(&policy_key(&d.host, d.port)))
                    .or_insert_with(|| {
                        let mut endpoint = Mapping::new();
                        endpoint.insert(key("host"), key(&d.host));
                        endpoint.insert(key("port"), Value::Number(d.port.into()));
                        let mut p = Mapping::new();
                        p.insert(
                            key("endpoints"),
                            Value::Sequence(vec![Value::Mapping(endpoint)]),
                        );
                        p.insert(key("binaries"), Value::Sequence(Vec::new()));
                        Value::Mapping(p)
                    });
                if let Some(bins) = entry.get_mut("binaries").and_then(Value::as_sequence_mut) {
                    let path = binary_path(d.binary.as_deref());
                    if !bins
                        .iter()
                        .any(|b| b.get("path").and_then(Value::as_str) == Some(path))
                    {
                        let mut b = Mapping::new();
                        b.insert(key("path"), key(path));
                        bins.push(Value::Mapping(b));
                    }
                }
            }
            Some(r) => {
                let missing = || MergeError::NoEndpoint {
                    policy: r.policy.clone(),
                    host: d.host.clone(),
                    port: d.port,
                };
                let endpoint = policies
                    .get_mut(r.policy.as_str())
                    .and_then(|p| p.get_mut("endpoints"))
                    .and_then(Value::as_sequence_mut)
                    .and_then(|eps| {
                        eps.iter_mut()
                            .find(|e| endpoint_matches(e, &d.host, d.port))
                    })
                    .filter(|e| e.get("protocol").and_then(Value::as_str) == Some("rest"))
                    .and_then(Value::as_mapping_mut)
                    .ok_or_else(missing)?;
                if let Some(preset) = endpoint.remove("access") {
                    let rules = preset_rules(preset.as_str().unwrap_or("full"))
                        .into_iter()
                        .map(|(m, p)| allow_rule(m, p))
                        .collect();
                    endpoint.insert(key("rules"), Value::Sequence(rules));
                }
                let rules = endpoint
                    .entry(key("rules"))
                    .or_insert_with(|| Value::Sequence(Vec::new()));
                if let Some(rules) = rules.as_sequence_mut() {
                    rules.push(allow_rule(&r.method, &r.path));
                }
            }
        }
    }
    serde_yaml::to_string(&doc).map_err(|e| MergeError::NotAMapping(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"version: 1
network_policies:
  demo:
    endpoints:
      - { host: api.demo.internal, port: 8080 }
      - { host: secure.demo.internal, port: 8443, protocol: rest, enforcement: enforce, access: read-only }
    binaries:
      - { path: /usr/bin/curl }
"#;

    fn host(h: &str, port: u16, bin: Option<&str>) -> Denied {
        Denied {
            host: h.into(),
            port,
            binary: bin.map(Into::into),
            request: None,
        }
    }

    fn loads(src: &str) -> crate::PolicySnapshot {
        match crate::load_str(src, "merged.yaml", 1) {
            Ok(l) => l.snapshot,
            Err(e) => panic!("{e}\n{src}"),
        }
    }

    #[test]
    fn appended_snippet_is_a_valid_policy_entry() {
        let d = host("Example.COM", 443, Some("/usr/bin/curl"));
        let text = format!("{POLICY}{}", snippet(&d));
        let s = loads(&text);
        assert!(s
            .policies()
            .iter()
            .any(|p| &*p.key == "allow_example_com_443"));
        let unknown = host("10.1.2.3", 80, None);
        assert!(snippet(&unknown).contains("path: \"/**\""));
        loads(&format!("{POLICY}{}", snippet(&unknown)));
    }

    #[test]
    fn merge_adds_entries_and_rules() {
        let denied = [
            host("example.com", 443, Some("/usr/bin/curl")),
            host("example.com", 443, Some("/usr/bin/wget")),
            host("example.com", 443, Some("/usr/bin/curl")),
            Denied {
                host: "secure.demo.internal".into(),
                port: 8443,
                binary: Some("/usr/bin/curl".into()),
                request: Some(DeniedRequest {
                    policy: "demo".into(),
                    method: "DELETE".into(),
                    path: "/repos/x".into(),
                }),
            },
        ];
        let merged = merge(POLICY, &denied).unwrap();
        let s = loads(&merged);
        let entry = s
            .policies()
            .iter()
            .find(|p| &*p.key == "allow_example_com_443")
            .expect("new entry");
        assert_eq!(entry.binaries.len(), 2, "{merged}");
        assert!(!merged.contains("access"), "preset expanded: {merged}");
        assert!(
            merged.contains("DELETE") && merged.contains("/repos/x"),
            "{merged}"
        );
        assert!(merged.matches("OPTIONS").count() == 1, "{merged}");
        let missing = Denied {
            host: "nowhere".into(),
            port: 1,
            binary: None,
            request: Some(DeniedRequest {
                policy: "demo".into(),
                method: "GET".into(),
                path: "/".into(),
            }),
        };
        assert!(matches!(
            merge(POLICY, &[missing]),
            Err(MergeError::NoEndpoint { .. })
        ));
        assert!(merge("- a\n- b\n", &[]).is_err());
    }

    #[test]
    fn quoting_and_keys() {
        assert_eq!(policy_key("a-b.c", 80), "allow_a_b_c_80");
        assert_eq!(quoted("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
