//! One middleware stage as the chain drives it, whatever implements it: a
//! registered gRPC service (`grpc`) or a built-in (`builtin`). Both speak
//! the wire messages of [`super::proto`], so the chain validates every
//! result the same way.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::proto;

/// A stage call in flight.
pub(crate) type StageFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, StageError>> + Send + 'a>>;

/// The platform's cap on one payload (request body, WebSocket message).
pub(crate) const PLATFORM_MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// Why a stage produced no usable result. Every variant is a *failure*:
/// the policy's `on_error` decides (fail_closed refuses, fail_open skips
/// the stage). A stage's own DENY is a result, not an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StageError {
    /// Connection refused, reset, TLS failure, gRPC status other than OK.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No answer within the stage's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// An answer that breaks the contract (UNSPECIFIED decision, bad
    /// `reason_code`, too many findings, a protected header, ...).
    #[error("invalid result: {0}")]
    Invalid(String),
    /// The payload is over the stage's limit.
    #[error("payload of {size} bytes is over the stage limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

impl StageError {
    /// The short word events carry (`unavailable`, `timeout`, `invalid_result`,
    /// `payload_too_large`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Invalid(_) => "invalid_result",
            Self::TooLarge { .. } => "payload_too_large",
        }
    }
}

/// An `HTTP_REQUEST` / `PRE_CREDENTIALS` implementation.
pub(crate) trait HttpStage: Send + Sync {
    /// The largest body it is given (platform cap, registration and
    /// binding limits, whichever is smallest).
    fn max_payload(&self) -> usize;

    /// Evaluates one buffered request. The chain has already filled
    /// `middleware_name`, `config`, `phase`, `context`, `target`, the
    /// visible headers and the body, and bounds the call with its own
    /// deadline too.
    fn evaluate(
        &self,
        eval: proto::HttpRequestEvaluation,
    ) -> StageFuture<'_, proto::HttpRequestResult>;
}

/// A `WEBSOCKET_MESSAGE` / `PRE_CREDENTIALS` implementation.
pub(crate) trait WsStage: Send + Sync {
    /// The largest message it is given.
    fn max_payload(&self) -> usize;

    /// Opens the stage's session with its preflight (before the upstream is
    /// contacted): the decision, and for `INSPECT` the session that gets
    /// `session_start`, each client text message and the end.
    fn open(
        &self,
        preflight: proto::WebSocketPreflight,
    ) -> StageFuture<
        '_,
        (
            proto::WebSocketPreflightDecision,
            Option<Box<dyn WsSession>>,
        ),
    >;
}

/// One open WebSocket stage session.
pub(crate) trait WsSession: Send {
    /// The upstream accepted the upgrade (no result).
    fn start(&mut self, selected_subprotocol: String);

    /// One complete client message; the result must carry its sequence.
    fn message(
        &mut self,
        message: proto::WebSocketMessage,
    ) -> StageFuture<'_, proto::WebSocketMessageResult>;

    /// The session is over (best effort, no result).
    fn end(self: Box<Self>, reason: proto::MiddlewareSessionEndReason);
}
