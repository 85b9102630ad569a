//! Client messages after a WebSocket upgrade: credential rewrite,
//! GraphQL-over-WebSocket operations, `WEBSOCKET_TEXT` rules for text and
//! `WEBSOCKET_BINARY` rules for binary messages, all under the decision's
//! pinned snapshot.

use std::sync::Arc;

use sluice_policy::request::{evaluate_rest, graphql, QueryParams, RestRequest};
use sluice_policy::{placeholder, EndpointId, Enforcement, Protocol};

use super::request::RequestHead;
use crate::audit::Audit;
use crate::egress::EgressDecision;
use crate::relay::credentials::resolve_message;
use crate::relay::websocket::{classify_graphql_ws, GraphqlWsMessage, MessageVerdict, TextPolicy};

/// The text policy for one upgraded session.
pub(crate) struct WsTextPolicy {
    decision: EgressDecision,
    /// The governing endpoint, or `None` for endpoints without request-level rules.
    endpoint: Option<EndpointId>,
    path: String,
    query: String,
    subprotocol: Option<String>,
    audit: Audit,
}

impl WsTextPolicy {
    pub(crate) fn new(
        decision: &EgressDecision,
        endpoint: Option<EndpointId>,
        req: &RequestHead,
        path: &str,
        query: Option<&str>,
        audit: &Audit,
    ) -> Self {
        let subprotocol = req
            .header("sec-websocket-protocol")
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| v.split(',').next().unwrap_or_default().trim().to_owned());
        Self {
            decision: decision.clone(),
            endpoint: endpoint
                .filter(|id| decision.snapshot.endpoint(*id).protocol == Protocol::Websocket),
            path: path.to_owned(),
            query: query.unwrap_or_default().to_owned(),
            subprotocol,
            audit: audit.clone(),
        }
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
        let rewrite = self
            .endpoint
            .or_else(|| self.decision.permit().map(|p| p.endpoint))
            .is_some_and(|id| snapshot.endpoint(id).websocket_credential_rewrite);
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
        let graphql_ws = matches!(
            self.subprotocol.as_deref(),
            Some("graphql-transport-ws" | "graphql-ws")
        );
        if has_graphql_rules && graphql_ws {
            let sub = self.subprotocol.clone().unwrap_or_default();
            return match classify_graphql_ws(&sub, &text) {
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
        let Some(id) = self.endpoint else {
            return Ok(());
        };
        let v = self.evaluate(id, BINARY);
        self.enforce(BINARY, v.allowed, false, v.reason)
    }

    fn on_denied(&mut self, reason: &str) {
        tracing::debug!(reason, "WebSocket session refused");
    }
}
