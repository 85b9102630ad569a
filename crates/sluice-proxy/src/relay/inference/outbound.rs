//! The request sluice sends to a route's backend: an allowlist of the
//! caller's headers (its `Authorization` and `x-api-key` always dropped),
//! the route's credential, and the body with `model` rewritten when the
//! route says so. A JSON body with a duplicate top-level key is refused:
//! sluice and the backend could read different values from it.

use std::fmt;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sluice_policy::{AuthStyle, InferenceRoute};

use crate::relay::http::RequestHead;

/// Request headers forwarded to every backend (lower case); a route adds
/// its `passthrough_headers`.
const FORWARDED: [&str; 10] = [
    "accept",
    "content-type",
    "user-agent",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "anthropic-version",
    "anthropic-beta",
    "idempotency-key",
    "x-model-id",
];

/// Why a request body cannot be forwarded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BodyRefused {
    #[error("request body is not a JSON object")]
    NotObject,
    #[error("request body has a duplicate top-level key `{0}`")]
    DuplicateKey(String),
}

/// What the call carries that events and the relay need.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outbound {
    /// Header fields for the backend (no framing, no `Host`).
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Bytes,
    /// The model named in the body as sent (after any rewrite).
    pub(crate) model: Option<String>,
}

/// Builds the backend request from the caller's `head` and `body`.
///
/// # Errors
/// [`BodyRefused`] when a JSON body is needed (POST calls) but is not one
/// object with unique top-level keys.
pub(crate) fn build(
    route: &InferenceRoute,
    head: &RequestHead,
    body: Vec<u8>,
) -> Result<Outbound, BodyRefused> {
    let mut headers: Vec<(String, Vec<u8>)> = head
        .headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            FORWARDED.contains(&lower.as_str())
                || route.passthrough_headers.iter().any(|p| **p == *lower)
        })
        .cloned()
        .collect();
    let key = route.api_key.expose();
    let (name, value) = match &route.auth_style {
        AuthStyle::Bearer => ("authorization", format!("Bearer {key}")),
        AuthStyle::XApiKey => ("x-api-key", key.to_owned()),
        AuthStyle::Header(h) => (&**h, key.to_owned()),
        // A future style: never send the caller's credential instead.
        _ => ("authorization", format!("Bearer {key}")),
    };
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.into_bytes()));
    if head.method == "GET" && body.is_empty() {
        return Ok(Outbound {
            headers,
            body: Bytes::new(),
            model: None,
        });
    }
    let TopLevel(mut fields) = serde_json::from_slice(&body).map_err(|_| BodyRefused::NotObject)?;
    for (i, (k, _)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(o, _)| o == k) {
            return Err(BodyRefused::DuplicateKey(k.clone()));
        }
    }
    let rewritten = match &route.model {
        Some(m) => {
            let value = Value::String(m.to_string());
            match fields.iter_mut().find(|(k, _)| k == "model") {
                Some((_, v)) => *v = value,
                None => fields.push(("model".into(), value)),
            }
            true
        }
        None => false,
    };
    let model = fields
        .iter()
        .find(|(k, _)| k == "model")
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned);
    let body = if rewritten {
        let map: serde_json::Map<String, Value> = fields.into_iter().collect();
        Bytes::from(serde_json::to_vec(&map).map_err(|_| BodyRefused::NotObject)?)
    } else {
        Bytes::from(body)
    };
    Ok(Outbound {
        headers,
        body,
        model,
    })
}

/// A top-level JSON object as its fields in order, duplicates kept (the
/// caller refuses them).
struct TopLevel(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_policy::{InferenceEndpoint, InferenceProtocol, Secret};

    use super::*;

    fn route(model: Option<&str>, auth: AuthStyle) -> InferenceRoute {
        InferenceRoute {
            name: Arc::from("default"),
            endpoint: InferenceEndpoint {
                https: true,
                host: Arc::from("llm.internal"),
                port: 443,
                base_path: Arc::from("/v1"),
            },
            protocols: Arc::from([InferenceProtocol::OpenAiChatCompletions]),
            model: model.map(Arc::from),
            api_key: Secret::new("real-key"),
            auth_style: auth,
            timeout: Duration::from_secs(5),
            passthrough_headers: Arc::from([Arc::from("x-trace")]),
        }
    }

    fn head(method: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut raw =
            format!("{method} /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        RequestHead::parse(raw.as_bytes()).expect("head")
    }

    fn get<'a>(o: &'a Outbound, name: &str) -> Vec<&'a str> {
        o.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| std::str::from_utf8(v).expect("utf-8"))
            .collect()
    }

    #[test]
    fn caller_credentials_dropped_and_route_key_set() {
        let h = head(
            "POST",
            &[
                ("Authorization", "Bearer sandbox-key"),
                ("X-Api-Key", "sandbox-key"),
                ("Cookie", "a=b"),
                ("Content-Type", "application/json"),
                ("anthropic-version", "2023-06-01"),
                ("X-Trace", "t1"),
                ("X-Other", "dropped"),
            ],
        );
        let o = build(
            &route(None, AuthStyle::Bearer),
            &h,
            b"{\"model\":\"m\"}".to_vec(),
        )
        .expect("built");
        assert_eq!(get(&o, "authorization"), ["Bearer real-key"]);
        assert!(get(&o, "x-api-key").is_empty());
        assert!(get(&o, "cookie").is_empty());
        assert!(get(&o, "x-other").is_empty());
        assert!(get(&o, "host").is_empty());
        assert_eq!(get(&o, "x-trace"), ["t1"]);
        assert_eq!(get(&o, "anthropic-version"), ["2023-06-01"]);
        assert_eq!(
            o.body,
            &b"{\"model\":\"m\"}"[..],
            "body untouched without a rewrite"
        );
        assert_eq!(o.model.as_deref(), Some("m"));

        let o = build(&route(None, AuthStyle::XApiKey), &h, b"{}".to_vec()).expect("built");
        assert_eq!(get(&o, "x-api-key"), ["real-key"]);
        assert!(get(&o, "authorization").is_empty());
        let o = build(
            &route(None, AuthStyle::Header(Arc::from("api-key"))),
            &h,
            b"{}".to_vec(),
        )
        .expect("built");
        assert_eq!(get(&o, "api-key"), ["real-key"]);
        assert!(get(&o, "authorization").is_empty() && get(&o, "x-api-key").is_empty());
    }

    #[test]
    fn model_rewrite_and_ambiguity() {
        let h = head("POST", &[]);
        let r = route(Some("served"), AuthStyle::Bearer);
        let o = build(&r, &h, br#"{"model":"gpt-x","stream":true}"#.to_vec()).expect("built");
        let v: Value = serde_json::from_slice(&o.body).expect("json");
        assert_eq!(v["model"], "served");
        assert_eq!(v["stream"], true);
        assert_eq!(o.model.as_deref(), Some("served"));
        let o = build(&r, &h, b"{}".to_vec()).expect("built");
        assert_eq!(o.model.as_deref(), Some("served"));
        assert_eq!(
            build(&r, &h, br#"{"model":"a","model":"b"}"#.to_vec()),
            Err(BodyRefused::DuplicateKey("model".into()))
        );
        for bad in [&b"[1]"[..], b"nope", b"", b"{\"a\":1} trailing"] {
            assert_eq!(
                build(&r, &h, bad.to_vec()),
                Err(BodyRefused::NotObject),
                "{bad:?}"
            );
        }
        let g = head("GET", &[]);
        let o = build(&r, &g, Vec::new()).expect("a GET has no body");
        assert!(o.body.is_empty());
    }
}
