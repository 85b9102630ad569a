//! Client messages after a WebSocket upgrade: credential rewrite,
//! GraphQL-over-WebSocket operations, `WEBSOCKET_TEXT` rules for text and
//! `WEBSOCKET_BINARY` rules for binary messages, all under the decision's
//! pinned snapshot.

use std::sync::Arc;

use sluice_policy::request::{evaluate_rest, graphql, QueryParams, RestRequest};
use sluice_policy::{placeholder, EndpointId, Enforcement, Protocol};

use super::request::RequestHead;
use crate::audit::Audit;
use crate::egress::Allowed;
use crate::relay::credentials::resolve_message;
use crate::relay::middleware::ws::WsMiddleware;
use crate::relay::websocket::{classify_graphql_ws, GraphqlWsMessage, MessageVerdict, TextPolicy};

/// The text policy for one upgraded session.
pub(crate) struct WsTextPolicy {
    decision: Allowed,
    /// The governing endpoint, or `None` for endpoints without request-level rules.
    endpoint: Option<EndpointId>,
    path: String,
    query: String,
    subprotocol: Subprotocol,
    audit: Audit,
    /// Middleware stages inspecting this session's text messages.
    middleware: Option<WsMiddleware>,
}

/// What the client's `Sec-WebSocket-Protocol` offer means for GraphQL rules.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subprotocol {
    /// No GraphQL subprotocol offered.
    Plain,
    /// Exactly one protocol offered, a GraphQL one (lower-cased).
    Graphql(String),
    /// A GraphQL subprotocol among others: the upstream picks, and sluice cannot
    /// know which reading of the messages it will use, so it refuses them.
    Ambiguous,
}

impl Subprotocol {
    /// From the header's raw value (a value that is not UTF-8 is ambiguous).
    fn of(offer: Option<&[u8]>) -> Self {
        let Ok(offer) = std::str::from_utf8(offer.unwrap_or_default()) else {
            return Self::Ambiguous;
        };
        let offered: Vec<&str> = offer
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let graphql = |p: &str| {
            p.eq_ignore_ascii_case("graphql-transport-ws") || p.eq_ignore_ascii_case("graphql-ws")
        };
        match (
            offered.iter().filter(|p| graphql(p)).count(),
            offered.as_slice(),
        ) {
            (0, _) => Self::Plain,
            (1, [only]) => Self::Graphql(only.to_ascii_lowercase()),
            _ => Self::Ambiguous,
        }
    }
}

impl WsTextPolicy {
    pub(crate) fn new(
        decision: &Allowed,
        endpoint: Option<EndpointId>,
        req: &RequestHead,
        path: &str,
        query: Option<&str>,
        audit: &Audit,
    ) -> Self {
        let subprotocol = Subprotocol::of(req.header("sec-websocket-protocol"));
        Self {
            decision: decision.clone(),
            endpoint: endpoint
                .filter(|id| decision.snapshot.endpoint(*id).protocol == Protocol::Websocket),
            path: path.to_owned(),
            query: query.unwrap_or_default().to_owned(),
            subprotocol,
            audit: audit.clone(),
            middleware: None,
        }
    }

    /// With these middleware stages (from their preflight).
    pub(crate) fn with_middleware(mut self, middleware: Option<WsMiddleware>) -> Self {
        self.middleware = middleware;
        self
    }

    fn deny(&self, reason: String) -> MessageVerdict {
        self.refuse(TEXT, reason.clone());
        MessageVerdict::Deny { reason }
    }

    fn refuse(&self, method: &str, reason: String) -> String {
        self.audit
            .l7_request(&self.decision, "deny", method, &self.path, &reason);
        reason
    }

    /// A verdict softened by the endpoint's enforcement: `Ok` forwards
    /// (recording an audit-mode would-be denial), `Err` refuses.
    fn enforce(
        &self,
        method: &str,
        allowed: bool,
        hard: bool,
        reason: String,
    ) -> Result<(), String> {
        let audit_mode = self.endpoint.is_some_and(|id| {
            self.decision.snapshot.endpoint(id).enforcement == Enforcement::Audit
        });
        match (allowed, hard, audit_mode) {
            (true, _, _) => Ok(()),
            (false, false, true) => {
                self.audit
                    .l7_request(&self.decision, "audit", method, &self.path, &reason);
                Ok(())
            }
            _ => Err(self.refuse(method, reason)),
        }
    }

    fn judge(&self, allowed: bool, hard: bool, reason: String, text: String) -> MessageVerdict {
        match self.enforce(TEXT, allowed, hard, reason) {
            Ok(()) => MessageVerdict::Forward(text),
            Err(reason) => MessageVerdict::Deny { reason },
        }
    }

    /// The upgrade's path and query evaluated with a message method.
    fn evaluate(&self, id: EndpointId, method: &str) -> sluice_policy::request::L7Verdict {
        let query = QueryParams::parse(&self.query).unwrap_or_default();
        evaluate_rest(
            &self.decision.snapshot,
            &[id],
            &RestRequest {
                method,
                path: &self.path,
                query: &query,
            },
        )
    }
}

const TEXT: &str = "WEBSOCKET_TEXT";

const BINARY: &str = "WEBSOCKET_BINARY";

impl TextPolicy for WsTextPolicy {
    fn on_text(&mut self, text: &str) -> MessageVerdict {
        let snapshot = Arc::clone(&self.decision.snapshot);
        // Credentials first: the rest of policy sees what the upstream will see.
        let governing = self.endpoint.unwrap_or(self.decision.permit().endpoint);
        let rewrite = snapshot.endpoint(governing).websocket_credential_rewrite;
        let text = if placeholder::contains_marker(text.as_bytes()) {
            if !rewrite {
                return self.deny("credential placeholder in a WebSocket message that is not opted in to rewriting".into());
            }
            match resolve_message(&snapshot, &self.decision.intent.target, &self.path, text) {
                Ok(t) => t,
                Err(reason) => return self.deny(reason),
            }
        } else {
            text.to_owned()
        };
        let Some(id) = self.endpoint else {
            return MessageVerdict::Forward(text);
        };
        let endpoint = snapshot.endpoint(id);
        let has_graphql_rules = endpoint
            .rules
            .iter()
            .chain(endpoint.deny_rules.iter())
            .any(|r| r.operation_type.is_some());
        if has_graphql_rules && self.subprotocol == Subprotocol::Ambiguous {
            return self.deny(
                "ambiguous Sec-WebSocket-Protocol offer: a GraphQL subprotocol among others".into(),
            );
        }
        if let (true, Subprotocol::Graphql(sub)) = (has_graphql_rules, &self.subprotocol) {
            return match classify_graphql_ws(sub, &text) {
                GraphqlWsMessage::Control => MessageVerdict::Forward(text),
                GraphqlWsMessage::Invalid => {
                    self.deny("invalid GraphQL-over-WebSocket message".into())
                }
                GraphqlWsMessage::Operation {
                    query,
                    operation_name,
                } => match graphql::classify(&query, operation_name.as_deref()) {
                    Ok(op) => {
                        let v = graphql::evaluate_operation(endpoint, &op);
                        self.judge(v.allowed, v.hard, v.reason, text)
                    }
                    Err(e) => self.deny(format!("GraphQL request rejected: {e}")),
                },
            };
        }
        let v = self.evaluate(id, TEXT);
        self.judge(v.allowed, false, v.reason, text)
    }

    /// A binary message on a `protocol: websocket` endpoint is evaluated
    /// like a text one, with the method `WEBSOCKET_BINARY`: it passes only
    /// where a rule allows `WEBSOCKET_BINARY` (or `*`) on the upgrade path
    /// and no deny rule matches. Binary messages are not inspected or
    /// rewritten. Endpoints without request-level rules pass them as before.
    fn allow_binary(&mut self) -> Result<(), String> {
        if let Some(m) = self.middleware.as_mut() {
            m.binary();
        }
        let Some(id) = self.endpoint else {
            return Ok(());
        };
        let v = self.evaluate(id, BINARY);
        self.enforce(BINARY, v.allowed, false, v.reason)
    }

    fn screens(&self) -> bool {
        self.middleware.is_some()
    }

    fn screen(
        &mut self,
        text: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = MessageVerdict> + Send + '_>> {
        match self.middleware.as_mut() {
            Some(m) => Box::pin(m.screen(text)),
            None => Box::pin(std::future::ready(MessageVerdict::Forward(text))),
        }
    }

    fn on_start(&mut self, subprotocol: Option<&str>) {
        if let Some(m) = self.middleware.as_mut() {
            m.start(subprotocol);
        }
    }

    fn on_end(&mut self, end: &crate::relay::websocket::WsEnd) {
        if let Some(m) = self.middleware.as_mut() {
            m.end(end);
        }
    }

    fn on_denied(&mut self, reason: &str) {
        tracing::debug!(reason, "WebSocket session refused");
    }
}

#[cfg(test)]
mod tests {
    use super::Subprotocol;

    #[test]
    fn subprotocol_offers() {
        let cases: [(Option<&[u8]>, Subprotocol); 8] = [
            (None, Subprotocol::Plain),
            (Some(b"chat, superchat"), Subprotocol::Plain),
            (
                Some(b"graphql-transport-ws"),
                Subprotocol::Graphql("graphql-transport-ws".into()),
            ),
            (
                Some(b" GraphQL-WS "),
                Subprotocol::Graphql("graphql-ws".into()),
            ),
            (Some(b"chat, graphql-transport-ws"), Subprotocol::Ambiguous),
            (
                Some(b"graphql-ws,graphql-transport-ws"),
                Subprotocol::Ambiguous,
            ),
            (Some(b"graphql-ws, graphql-ws"), Subprotocol::Ambiguous),
            (Some(b"graphql-ws, \xff"), Subprotocol::Ambiguous),
        ];
        for (offer, want) in cases {
            assert_eq!(Subprotocol::of(offer), want, "{offer:?}");
        }
    }
}
