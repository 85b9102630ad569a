//! Which API call a request to `inference.local` is (method + canonical
//! path, query ignored), and which route serves it.

use sluice_policy::{InferenceProtocol, InferenceRoute};

/// Longest model id accepted in `GET /v1/models/{id}`.
const MAX_MODEL_ID: usize = 256;

/// A recognised call: its protocol and the path to send to the backend,
/// relative to the route's base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) protocol: InferenceProtocol,
    /// The request path as the SDK's base-URL convention expects it below
    /// the route's `endpoint`: OpenAI clients put `/v1` in the base URL
    /// (`/chat/completions`), Anthropic clients do not (`/v1/messages`).
    pub(crate) backend_path: String,
}

/// Classifies a canonical path. `None`: not an inference API call.
pub(crate) fn classify(method: &str, path: &str) -> Option<Call> {
    let protocol = match (method, path) {
        ("POST", "/v1/chat/completions") => InferenceProtocol::OpenAiChatCompletions,
        ("POST", "/v1/completions") => InferenceProtocol::OpenAiCompletions,
        ("POST", "/v1/responses") => InferenceProtocol::OpenAiResponses,
        ("POST", "/v1/embeddings") => InferenceProtocol::OpenAiEmbeddings,
        ("POST", "/v1/messages") => InferenceProtocol::AnthropicMessages,
        ("GET", "/v1/models") => InferenceProtocol::ModelDiscovery,
        ("GET", p) => {
            let id = p.strip_prefix("/v1/models/")?;
            if !valid_model_id(id) {
                return None;
            }
            InferenceProtocol::ModelDiscovery
        }
        _ => return None,
    };
    let backend_path = match protocol {
        InferenceProtocol::AnthropicMessages => path.to_owned(),
        _ => path["/v1".len()..].to_owned(),
    };
    Some(Call {
        protocol,
        backend_path,
    })
}

/// One non-empty path segment of unreserved characters (plus `:` and `@`,
/// which model ids use), never `.` or `..`.
fn valid_model_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MODEL_ID
        && id != "."
        && id != ".."
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@')
        })
}

/// The route for `protocol`: the first in policy order that serves it.
pub(crate) fn route_for(
    routes: &[InferenceRoute],
    protocol: InferenceProtocol,
) -> Option<&InferenceRoute> {
    routes.iter().find(|r| r.serves(protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls() {
        use InferenceProtocol as P;
        let cases = [
            (
                "POST",
                "/v1/chat/completions",
                Some((P::OpenAiChatCompletions, "/chat/completions")),
            ),
            (
                "POST",
                "/v1/completions",
                Some((P::OpenAiCompletions, "/completions")),
            ),
            (
                "POST",
                "/v1/responses",
                Some((P::OpenAiResponses, "/responses")),
            ),
            (
                "POST",
                "/v1/embeddings",
                Some((P::OpenAiEmbeddings, "/embeddings")),
            ),
            (
                "POST",
                "/v1/messages",
                Some((P::AnthropicMessages, "/v1/messages")),
            ),
            ("GET", "/v1/models", Some((P::ModelDiscovery, "/models"))),
            (
                "GET",
                "/v1/models/gpt-4o-mini",
                Some((P::ModelDiscovery, "/models/gpt-4o-mini")),
            ),
            (
                "GET",
                "/v1/models/org@model:1",
                Some((P::ModelDiscovery, "/models/org@model:1")),
            ),
            ("GET", "/v1/models/a/b", None),
            ("GET", "/v1/models/..", None),
            ("GET", "/v1/models/", None),
            ("GET", "/v1/chat/completions", None),
            ("POST", "/v1/models", None),
            ("DELETE", "/v1/models/x", None),
            ("POST", "/v2/chat/completions", None),
            ("POST", "/v1/chat/completions/", None),
            ("POST", "/v1/files", None),
            ("post", "/v1/messages", None),
        ];
        for (method, path, want) in cases {
            let got = classify(method, path).map(|c| (c.protocol, c.backend_path));
            assert_eq!(got, want.map(|(p, b)| (p, b.to_owned())), "{method} {path}");
        }
    }
}
