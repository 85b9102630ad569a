//! The `WEBSOCKET_MESSAGE/PRE_CREDENTIALS` stage of a registered service:
//! one bidirectional `EvaluateWebSocketSession` stream per upgrade attempt
//! (middleware-contract §10). `preflight` first, answered by
//! `preflight_decision` within 1 s; for `INSPECT`, `session_start` after
//! the upstream's 101, one `message` at a time answered by the
//! `message_result` carrying its `sequence`, and one best-effort
//! `session_end`. Any failure leaves the session broken: later messages
//! fail at once, since the stream's answers can no longer be matched.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::super::proto::{
    self, web_socket_message, web_socket_session_event::Event,
    web_socket_session_event_result::Result as Answer, WebSocketPreflightAction,
};
use super::super::stage::{StageError, StageFuture, WsSession, WsStage};
use super::manifest::Limits;
use super::{stage_error, Client};

/// The contract's bound on a preflight answer.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(1);
/// Open sessions per service; beyond it, `open` fails at once.
const SESSIONS: usize = 32;
/// Events queued towards the service (one message is in flight at a time,
/// so this only absorbs `session_start`/`session_end`).
const EVENT_QUEUE: usize = 4;

pub(super) struct GrpcWsStage {
    name: Arc<str>,
    client: Client,
    limits: Limits,
    sessions: Arc<Semaphore>,
}

impl GrpcWsStage {
    pub(super) fn new(name: Arc<str>, client: Client, limits: Limits) -> Self {
        Self {
            name,
            client,
            limits,
            sessions: Arc::new(Semaphore::new(SESSIONS)),
        }
    }
}

fn event(event: Event) -> proto::WebSocketSessionEvent {
    proto::WebSocketSessionEvent { event: Some(event) }
}

impl WsStage for GrpcWsStage {
    fn max_payload(&self) -> usize {
        self.limits.max_payload
    }

    fn open(
        &self,
        preflight: proto::WebSocketPreflight,
    ) -> StageFuture<
        '_,
        (
            proto::WebSocketPreflightDecision,
            Option<Box<dyn WsSession>>,
        ),
    > {
        Box::pin(async move {
            let permit = Arc::clone(&self.sessions)
                .try_acquire_owned()
                .map_err(|_| StageError::Unavailable(format!("{SESSIONS} sessions open")))?;
            let wait = self.limits.timeout.min(PREFLIGHT_TIMEOUT);
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            tx.try_send(event(Event::Preflight(preflight)))
                .map_err(|_| StageError::Unavailable("session queue closed".into()))?;
            let started = Instant::now();
            let mut client = self.client.clone();
            let first = async {
                let mut answers = client
                    .evaluate_web_socket_session(ReceiverStream::new(rx))
                    .await
                    .map_err(|s| stage_error(&s, wait, started.elapsed()))?
                    .into_inner();
                let first = answers
                    .message()
                    .await
                    .map_err(|s| stage_error(&s, wait, started.elapsed()))?;
                Ok::<_, StageError>((answers, first))
            };
            let (answers, first) = tokio::time::timeout(wait, first)
                .await
                .unwrap_or(Err(StageError::Timeout(wait)))?;
            let decision = match first.and_then(|a| a.result) {
                Some(Answer::PreflightDecision(d)) => d,
                Some(Answer::MessageResult(_)) => {
                    return Err(StageError::Invalid(
                        "a message_result before the preflight_decision".into(),
                    ))
                }
                None => {
                    return Err(StageError::Unavailable(
                        "the session ended without a preflight_decision".into(),
                    ))
                }
            };
            if decision.action != WebSocketPreflightAction::Inspect as i32 {
                // SKIP, DENY or invalid: no session; dropping both ends
                // closes the stream.
                return Ok((decision, None));
            }
            tracing::debug!(middleware.name = %self.name, "Middleware session open");
            let session = GrpcWsSession {
                tx,
                answers,
                limits: self.limits,
                broken: None,
                _permit: permit,
            };
            Ok((decision, Some(Box::new(session) as Box<dyn WsSession>)))
        })
    }
}

struct GrpcWsSession {
    tx: mpsc::Sender<proto::WebSocketSessionEvent>,
    answers: tonic::Streaming<proto::WebSocketSessionEventResult>,
    limits: Limits,
    /// Why the session can no longer be used, once it cannot.
    broken: Option<String>,
    _permit: OwnedSemaphorePermit,
}

impl GrpcWsSession {
    async fn exchange(
        &mut self,
        message: proto::WebSocketMessage,
    ) -> Result<proto::WebSocketMessageResult, StageError> {
        let timeout = self.limits.timeout;
        let sequence = message.sequence;
        let started = Instant::now();
        let round_trip = async {
            self.tx
                .send(event(Event::Message(message)))
                .await
                .map_err(|_| StageError::Unavailable("the session stream is closed".into()))?;
            match self.answers.message().await {
                Ok(Some(proto::WebSocketSessionEventResult {
                    result: Some(Answer::MessageResult(r)),
                })) => Ok(r),
                Ok(Some(_)) => Err(StageError::Invalid("expected a message_result".into())),
                Ok(None) => Err(StageError::Unavailable(
                    "the session ended before the message_result".into(),
                )),
                Err(s) => Err(stage_error(&s, timeout, started.elapsed())),
            }
        };
        let result = tokio::time::timeout(timeout, round_trip)
            .await
            .unwrap_or(Err(StageError::Timeout(timeout)))?;
        if result.sequence != sequence {
            return Err(StageError::Invalid(format!(
                "message_result for sequence {} answers message {sequence}",
                result.sequence
            )));
        }
        Ok(result)
    }
}

impl WsSession for GrpcWsSession {
    fn start(&mut self, selected_subprotocol: String) {
        let start = Event::SessionStart(proto::WebSocketSessionStart {
            selected_subprotocol,
        });
        if self.broken.is_none() && self.tx.try_send(event(start)).is_err() {
            self.broken = Some("session_start could not be queued".into());
        }
    }

    fn message(
        &mut self,
        message: proto::WebSocketMessage,
    ) -> StageFuture<'_, proto::WebSocketMessageResult> {
        Box::pin(async move {
            if let Some(why) = &self.broken {
                return Err(StageError::Unavailable(format!(
                    "session unusable after an earlier failure ({why})"
                )));
            }
            let size = match &message.payload {
                Some(web_socket_message::Payload::Text(t)) => t.len(),
                Some(web_socket_message::Payload::Binary(b)) => b.len(),
                None => 0,
            };
            let limit = self.limits.max_payload;
            if size > limit {
                return Err(StageError::TooLarge { size, limit });
            }
            let result = self.exchange(message).await;
            if let Err(e) = &result {
                self.broken = Some(e.kind().to_owned());
            }
            result
        })
    }

    fn end(self: Box<Self>, reason: proto::MiddlewareSessionEndReason) {
        let Self {
            tx,
            mut answers,
            limits,
            _permit,
            ..
        } = *self;
        let end = Event::SessionEnd(proto::MiddlewareSessionEnd {
            reason: reason as i32,
        });
        let _ = tx.try_send(event(end));
        // Closing our side after session_end ends the request stream;
        // reading the answers until the service closes its side (bounded)
        // lets session_end arrive instead of cancelling the call under it.
        drop(tx);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _permit = _permit;
                let drain = async { while let Ok(Some(_)) = answers.message().await {} };
                let _ = tokio::time::timeout(limits.timeout, drain).await;
            });
        }
    }
}
