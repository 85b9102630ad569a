//! `sluice/size`: denies requests and WebSocket messages over configured
//! sizes.
//!
//! ```yaml
//! config:
//!   max_body_bytes: 65536      # request body (at most 4 MiB)
//!   max_header_bytes: 8192     # sum of name + value bytes of the visible headers
//!   max_headers: 50            # number of visible header lines
//!   max_message_bytes: 16384   # WebSocket client message (at most 4 MiB)
//!   reason_code: size_limit
//! ```
//!
//! At least one limit; each a positive integer. Findings: type `size_limit`,
//! label the limit exceeded (`max_body_bytes`, ...; one finding per
//! exceeded limit), count 1.
//!
//! The chain gives a stage at most `max_payload()` bytes and treats a larger
//! payload as a *failure* of that stage (`on_error`), not a deny. So the stage
//! asks for one byte more than its limit, which lets it see and deny any
//! body up to the platform cap (4 MiB); a body over 4 MiB never reaches it
//! and is handled by `on_error` (`fail_closed` refuses it too, with
//! `middleware_failed`). Without `max_body_bytes` it asks for the platform
//! cap, so its body limit never fails a request it does not judge by body.
//! "Visible" headers are those the chain gives stages: credential and
//! hop-by-hop headers (`authorization`, `cookie`, `host`, ...) are not
//! counted.

use super::super::stage::{HttpStage, StageFuture, PLATFORM_MAX_PAYLOAD};
use super::{
    finding, http_allow, http_deny, proto, ready, ws_allow, ws_deny, Config, MessageCheck,
};

pub(super) const NAME: &str = "sluice/size";

const FIELDS: &[&str] = &[
    "max_body_bytes",
    "max_header_bytes",
    "max_headers",
    "max_message_bytes",
    "reason_code",
];

/// A configured `sluice/size`.
pub(super) struct Size {
    max_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_message_bytes: Option<usize>,
    reason_code: String,
}

/// Builds the stage from its policy `config`.
pub(super) fn build(config: &serde_json::Map<String, serde_json::Value>) -> Result<Size, String> {
    let c = Config::new(config, FIELDS)?;
    let payload = |key: &str| -> Result<Option<usize>, String> {
        match c.positive(key)? {
            Some(n) if n > PLATFORM_MAX_PAYLOAD as u64 => Err(format!(
                "`{key}`: {n} is over the platform payload cap of {PLATFORM_MAX_PAYLOAD} bytes (a larger payload is a stage failure, handled by on_error)"
            )),
            n => Ok(n.map(clamp)),
        }
    };
    let size = Size {
        max_body_bytes: payload("max_body_bytes")?,
        max_header_bytes: c.positive("max_header_bytes")?.map(clamp),
        max_headers: c.positive("max_headers")?.map(clamp),
        max_message_bytes: payload("max_message_bytes")?,
        reason_code: c.reason_code("size_limit")?,
    };
    if !size.has_http_limit() && !size.has_message_limit() {
        return Err(
            "at least one of `max_body_bytes`, `max_header_bytes`, `max_headers`, `max_message_bytes` is required"
                .into(),
        );
    }
    Ok(size)
}

fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Size {
    /// Whether any limit applies to HTTP requests.
    pub(super) fn has_http_limit(&self) -> bool {
        self.max_body_bytes.is_some()
            || self.max_header_bytes.is_some()
            || self.max_headers.is_some()
    }

    /// Whether a WebSocket message limit is set.
    pub(super) fn has_message_limit(&self) -> bool {
        self.max_message_bytes.is_some()
    }

    /// Every exceeded HTTP limit: its name and the size seen.
    fn exceeded(&self, eval: &proto::HttpRequestEvaluation) -> Vec<(&'static str, usize)> {
        let header_bytes = eval.headers.iter().fold(0usize, |a, h| {
            a.saturating_add(h.name.len() + h.value.len())
        });
        [
            ("max_body_bytes", self.max_body_bytes, eval.body.len()),
            ("max_header_bytes", self.max_header_bytes, header_bytes),
            ("max_headers", self.max_headers, eval.headers.len()),
        ]
        .into_iter()
        .filter(|(_, limit, seen)| limit.is_some_and(|l| *seen > l))
        .map(|(name, _, seen)| (name, seen))
        .collect()
    }
}

/// One more than `limit`, within the platform cap: enough to see a payload
/// over the limit.
fn payload_for(limit: Option<usize>) -> usize {
    limit.map_or(PLATFORM_MAX_PAYLOAD, |n| {
        n.saturating_add(1).min(PLATFORM_MAX_PAYLOAD)
    })
}

// === impl HttpStage / MessageCheck ===

impl HttpStage for Size {
    fn max_payload(&self) -> usize {
        payload_for(self.max_body_bytes)
    }

    fn evaluate(
        &self,
        eval: proto::HttpRequestEvaluation,
    ) -> StageFuture<'_, proto::HttpRequestResult> {
        let exceeded = self.exceeded(&eval);
        let result = if exceeded.is_empty() {
            http_allow()
        } else {
            let reason = exceeded
                .iter()
                .map(|(limit, seen)| format!("{seen} over {limit}"))
                .collect::<Vec<_>>()
                .join(", ");
            let findings = exceeded
                .iter()
                .map(|(limit, _)| finding("size_limit", (*limit).into(), 1))
                .collect();
            http_deny(&self.reason_code, format!("{NAME}: {reason}"), findings)
        };
        ready(Ok(result))
    }
}

impl MessageCheck for Size {
    fn max_message(&self) -> usize {
        payload_for(self.max_message_bytes)
    }

    fn preflight(
        &self,
        _preflight: &proto::WebSocketPreflight,
    ) -> Option<proto::WebSocketPreflightDecision> {
        None
    }

    fn message(
        &self,
        payload: Option<&proto::web_socket_message::Payload>,
    ) -> proto::WebSocketMessageResult {
        let seen = match payload {
            Some(proto::web_socket_message::Payload::Text(t)) => t.len(),
            Some(proto::web_socket_message::Payload::Binary(b)) => b.len(),
            None => 0,
        };
        match self.max_message_bytes {
            Some(limit) if seen > limit => ws_deny(
                &self.reason_code,
                format!("{NAME}: {seen} over max_message_bytes"),
                vec![finding("size_limit", "max_message_bytes".into(), 1)],
            ),
            _ => ws_allow(),
        }
    }
}

#[cfg(test)]
#[path = "size_tests.rs"]
mod tests;
