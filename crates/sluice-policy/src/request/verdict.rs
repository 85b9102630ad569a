//! The verdict shape shared by the body-inspecting protocols (GraphQL,
//! JSON-RPC, MCP, WebSocket messages).

/// A request-level verdict for one message, before enforce/audit is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtocolVerdict {
    /// Whether policy permits the message.
    pub allowed: bool,
    /// A denial that `enforcement: audit` must NOT soften: unparseable
    /// input, GraphQL errors, JSON-RPC response frames from the client...
    pub hard: bool,
    /// Why it was denied (empty when allowed); no secrets, bounded length.
    pub reason: String,
    /// The deciding rule as text, when one decided.
    pub rule: Option<String>,
    /// A short classification for events, e.g. `query Viewer fields=viewer`
    /// or `methods=tools/call tools=search`; bounded length.
    pub summary: String,
}

impl ProtocolVerdict {
    /// An allowed message with its event summary.
    #[must_use]
    pub fn allow(summary: String) -> Self {
        Self {
            allowed: true,
            summary,
            ..Self::default()
        }
    }

    /// A policy denial (softened by audit mode).
    #[must_use]
    pub fn deny(reason: String, rule: Option<String>, summary: String) -> Self {
        Self {
            allowed: false,
            hard: false,
            reason,
            rule,
            summary,
        }
    }

    /// A denial audit mode cannot soften.
    #[must_use]
    pub fn hard_deny(reason: String, summary: String) -> Self {
        Self {
            allowed: false,
            hard: true,
            reason,
            rule: None,
            summary,
        }
    }
}
