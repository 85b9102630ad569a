//! GraphQL-over-WebSocket message classification (client → server).
//!
//! Messages are read with the policy crate's strict JSON reader: a key
//! repeated in any object (`{"type":"ping",...,"type":"subscribe"}`) makes
//! the message invalid, as for HTTP bodies, because a first-key upstream
//! and a last-key policy would disagree on what it is.

use sluice_policy::request::json::{self, Value};

/// A client text message of a GraphQL WebSocket subprotocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphqlWsMessage {
    /// Control plane (`connection_init`, `ping`, `pong`, `complete`, `stop`,
    /// `connection_terminate`): passes without GraphQL evaluation.
    Control,
    /// `subscribe` (graphql-transport-ws) or `start` (legacy graphql-ws).
    Operation {
        query: String,
        operation_name: Option<String>,
    },
    /// Not JSON, a key repeated in any object, no string `type`, a type the
    /// subprotocol does not define, an operation message without a string
    /// `payload.query`, or an unknown subprotocol. Callers deny it.
    Invalid,
}

/// Control-plane message types of either subprotocol; they carry no
/// operation, so both sets pass under both.
const CONTROL: [&str; 6] = [
    "connection_init",
    "connection_terminate",
    "ping",
    "pong",
    "complete",
    "stop",
];

/// Classify `text` sent by the client under `subprotocol`
/// (`graphql-transport-ws` or `graphql-ws`, compared case-insensitively).
pub fn classify_graphql_ws(subprotocol: &str, text: &str) -> GraphqlWsMessage {
    let subprotocol = subprotocol.trim();
    let operation = if subprotocol.eq_ignore_ascii_case("graphql-transport-ws") {
        "subscribe"
    } else if subprotocol.eq_ignore_ascii_case("graphql-ws") {
        "start"
    } else {
        return GraphqlWsMessage::Invalid;
    };
    let Ok(msg @ Value::Object(_)) = json::parse_unique(text.as_bytes()) else {
        return GraphqlWsMessage::Invalid;
    };
    let Ok(Some(Value::String(kind))) = msg.get("type") else {
        return GraphqlWsMessage::Invalid;
    };
    if CONTROL.contains(&kind.as_str()) {
        return GraphqlWsMessage::Control;
    }
    if kind != operation {
        return GraphqlWsMessage::Invalid;
    }
    let Ok(Some(payload @ Value::Object(_))) = msg.get("payload") else {
        return GraphqlWsMessage::Invalid;
    };
    let Ok(Some(Value::String(query))) = payload.get("query") else {
        return GraphqlWsMessage::Invalid;
    };
    let operation_name = match payload.get("operationName") {
        Ok(None | Some(Value::Null)) => None,
        Ok(Some(Value::String(name))) => Some(name.clone()),
        _ => return GraphqlWsMessage::Invalid,
    };
    GraphqlWsMessage::Operation {
        query: query.clone(),
        operation_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(query: &str, name: Option<&str>) -> GraphqlWsMessage {
        GraphqlWsMessage::Operation {
            query: query.to_owned(),
            operation_name: name.map(str::to_owned),
        }
    }

    #[test]
    fn classification_table() {
        use GraphqlWsMessage::{Control, Invalid};
        let t = "graphql-transport-ws";
        let l = "graphql-ws";
        let cases: &[(&str, &str, GraphqlWsMessage)] = &[
            (t, r#"{"type":"connection_init","payload":{}}"#, Control),
            (t, r#"{"type":"ping"}"#, Control),
            (t, r#"{"type":"pong"}"#, Control),
            (t, r#"{"id":"1","type":"complete"}"#, Control),
            (
                t,
                r#"{"id":"1","type":"subscribe","payload":{"query":"subscription S { a }","operationName":"S"}}"#,
                op("subscription S { a }", Some("S")),
            ),
            (
                t,
                r#"{"id":"1","type":"subscribe","payload":{"query":"{ a }","operationName":null}}"#,
                op("{ a }", None),
            ),
            (
                t,
                r#"{"id":"1","type":"start","payload":{"query":"{ a }"}}"#,
                Invalid,
            ),
            (t, r#"{"id":"1","type":"subscribe","payload":{}}"#, Invalid),
            (
                t,
                r#"{"id":"1","type":"subscribe","payload":{"query":1}}"#,
                Invalid,
            ),
            (
                t,
                r#"{"id":"1","type":"subscribe","payload":{"query":"{a}","operationName":7}}"#,
                Invalid,
            ),
            (t, r#"{"id":"1","type":"subscribe"}"#, Invalid),
            (t, r#"{"type":"next"}"#, Invalid),
            (t, r#"{"type":1}"#, Invalid),
            (t, r#"["subscribe"]"#, Invalid),
            (t, "not json", Invalid),
            (l, r#"{"type":"connection_init"}"#, Control),
            (l, r#"{"id":"1","type":"stop"}"#, Control),
            (l, r#"{"type":"connection_terminate"}"#, Control),
            (
                l,
                r#"{"id":"1","type":"start","payload":{"query":"{ b }"}}"#,
                op("{ b }", None),
            ),
            (
                l,
                r#"{"id":"1","type":"subscribe","payload":{"query":"{ b }"}}"#,
                Invalid,
            ),
            (l, r#"{"type":"ping"}"#, Control),
            (t, r#"{"id":"1","type":"stop"}"#, Control),
            ("GraphQL-WS", r#"{"type":"connection_init"}"#, Control),
            ("chat", r#"{"type":"connection_init"}"#, Invalid),
            // Duplicate keys anywhere: invalid, whichever copy a parser keeps.
            (
                t,
                r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { secretFeed }"},"type":"ping"}"#,
                Invalid,
            ),
            (
                t,
                r#"{"type":"ping","id":"1","type":"subscribe","payload":{"query":"{ a }"}}"#,
                Invalid,
            ),
            (
                t,
                r#"{"id":"1","type":"subscribe","payload":{"query":"{ a }","query":"{ secret }"}}"#,
                Invalid,
            ),
            (
                l,
                r#"{"id":"1","type":"start","payload":{"query":"{ a }","operationName":"A","operationName":"B"}}"#,
                Invalid,
            ),
            (
                t,
                r#"{"id":"1","type":"subscribe","payload":{"query":"{ a }","variables":{"x":1,"x":2}}}"#,
                Invalid,
            ),
            (t, r#"{"type":"ping","type":"ping"}"#, Invalid),
        ];
        for (proto, text, want) in cases {
            assert_eq!(&classify_graphql_ws(proto, text), want, "{proto} {text}");
        }
    }
}
