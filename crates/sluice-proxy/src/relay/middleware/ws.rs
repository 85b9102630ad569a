//! WebSocket message stages (`WEBSOCKET_MESSAGE` / `PRE_CREDENTIALS`): a
//! preflight per selected stage before the upstream is contacted (INSPECT
//! keeps the stage, SKIP drops it, DENY refuses the upgrade), `session_start`
//! after the `101`, each complete client text message in order (allow,
//! allow with a replacement, deny → close 1008), and one best-effort
//! `session_end`. Binary messages are not given to stages but use up a
//! sequence number, as the contract says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_policy::placeholder;

use super::chain::{valid_reason_code, StageReport, MAX_FINDINGS};
use super::proto;
use super::stage::{StageError, WsSession};
use crate::audit::Audit;
use crate::egress::Allowed;
use crate::refusal::Refusal;
use crate::relay::websocket::{MessageVerdict, WsEnd};
use crate::relay::RelayContext;

/// A preflight may take this long, whatever the stage's own timeout.
const PREFLIGHT_DEADLINE: Duration = Duration::from_secs(1);
/// One message through one stage.
const MESSAGE_DEADLINE: Duration = Duration::from_secs(30);

/// One stage that chose to inspect this session.
struct OpenStage {
    key: Arc<str>,
    middleware: Arc<str>,
    fail_open: bool,
    max_payload: usize,
    /// `None` after it failed under fail_open (the stream is not trusted again).
    session: Option<Box<dyn WsSession>>,
}

/// The stages of one WebSocket session.
pub(crate) struct WsMiddleware {
    stages: Vec<OpenStage>,
    /// Session-wide message sequence (text and binary), from 1.
    sequence: u64,
    decision: Allowed,
    audit: Audit,
    path: String,
    /// The session ends because a stage denied or failed.
    ended_by_middleware: Option<proto::MiddlewareSessionEndReason>,
}

fn report(
    key: &Arc<str>,
    middleware: &Arc<str>,
    outcome: &'static str,
    started: Instant,
) -> StageReport {
    StageReport {
        key: Arc::clone(key),
        middleware: Arc::clone(middleware),
        outcome,
        reason_code: None,
        failure: None,
        latency: started.elapsed(),
        findings: Vec::new(),
    }
}

/// Preflights the WebSocket stages selected for this upgrade. `Ok(None)`:
/// none selected or none inspects. `Err`: the refusal of the upgrade (a
/// DENY, or a fail_closed stage that failed).
pub(crate) async fn preflight(
    ctx: &RelayContext,
    decision: &Allowed,
    path: &str,
    subprotocols: Vec<String>,
    context: proto::RequestContext,
) -> Result<Option<WsMiddleware>, Refusal> {
    let snapshot = &decision.snapshot;
    if snapshot.middlewares().is_empty() {
        return Ok(None);
    }
    let Some(plan) = ctx.middleware.plan(snapshot) else {
        return Ok(None);
    };
    let target = &decision.intent.target;
    let host = target.host.as_host_ref();
    let mut stages = Vec::new();
    for stage in plan
        .stages
        .iter()
        .filter(|s| snapshot.middlewares()[s.index].selects(host))
    {
        let Some(ws) = &stage.ws else { continue };
        let started = Instant::now();
        let pre = proto::WebSocketPreflight {
            session_id: format!("{}-{}", context.request_id, stage.key),
            phase: proto::SupervisorMiddlewarePhase::PreCredentials.into(),
            context: Some(context.clone()),
            target: Some(proto::HttpRequestTarget {
                scheme: "wss".into(),
                host: target.host.to_string(),
                port: u32::from(target.port),
                method: "GET".into(),
                path: path.to_owned(),
                query: String::new(),
            }),
            requested_subprotocols: subprotocols.clone(),
            middleware_name: stage.middleware.to_string(),
            config: Some((*stage.config).clone()),
        };
        let opened = match tokio::time::timeout(PREFLIGHT_DEADLINE, ws.open(pre)).await {
            Ok(r) => r,
            Err(_) => Err(StageError::Timeout(PREFLIGHT_DEADLINE)),
        };
        let checked = opened.and_then(|(decision, session)| {
            let code = match decision.reason_code.as_str() {
                "" => None,
                c if valid_reason_code(c) => Some(c.to_owned()),
                _ => return Err(StageError::Invalid("reason_code".into())),
            };
            if decision.findings.len() > MAX_FINDINGS {
                return Err(StageError::Invalid("more than 32 findings".into()));
            }
            match proto::WebSocketPreflightAction::try_from(decision.action) {
                Ok(proto::WebSocketPreflightAction::Inspect) => match session {
                    Some(s) => Ok((Some(s), None)),
                    None => Err(StageError::Invalid("INSPECT without a session".into())),
                },
                Ok(proto::WebSocketPreflightAction::Skip) => Ok((None, None)),
                Ok(proto::WebSocketPreflightAction::Deny) => Ok((None, Some(code))),
                _ => Err(StageError::Invalid("preflight action UNSPECIFIED".into())),
            }
        });
        match checked {
            Ok((_, Some(code))) => {
                let mut r = report(&stage.key, &stage.middleware, "deny", started);
                r.reason_code.clone_from(&code);
                ctx.audit.middleware_stage(decision, "GET", path, &r);
                let refusal = super::denied_refusal(decision, &stage.key, code.as_deref());
                end_all(stages, proto::MiddlewareSessionEndReason::MiddlewareDenial);
                return Err(refusal);
            }
            Ok((Some(session), None)) => stages.push(OpenStage {
                key: Arc::clone(&stage.key),
                middleware: Arc::clone(&stage.middleware),
                fail_open: stage.fail_open,
                max_payload: ws.max_payload(),
                session: Some(session),
            }),
            Ok((None, None)) => {}
            Err(e) => {
                let mut r = report(&stage.key, &stage.middleware, "skipped", started);
                r.failure = Some(e.kind());
                if !stage.fail_open {
                    r.outcome = "failed";
                    ctx.audit.middleware_stage(decision, "GET", path, &r);
                    end_all(stages, proto::MiddlewareSessionEndReason::MiddlewareFailure);
                    return Err(super::failed_refusal(decision, &stage.key));
                }
                ctx.audit.middleware_stage(decision, "GET", path, &r);
            }
        }
    }
    if stages.is_empty() {
        return Ok(None);
    }
    Ok(Some(WsMiddleware {
        stages,
        sequence: 0,
        decision: decision.clone(),
        audit: ctx.audit.clone(),
        path: path.to_owned(),
        ended_by_middleware: None,
    }))
}

fn end_all(stages: Vec<OpenStage>, reason: proto::MiddlewareSessionEndReason) {
    for s in stages {
        if let Some(session) = s.session {
            session.end(reason);
        }
    }
}

impl WsMiddleware {
    /// The upstream accepted the upgrade.
    pub(crate) fn start(&mut self, subprotocol: Option<&str>) {
        for s in &mut self.stages {
            if let Some(session) = s.session.as_mut() {
                session.start(subprotocol.unwrap_or_default().to_owned());
            }
        }
    }

    /// A binary message passed: it uses up a sequence number.
    pub(crate) fn binary(&mut self) {
        self.sequence += 1;
    }

    /// One client text message through every inspecting stage, in order.
    pub(crate) async fn screen(&mut self, text: String) -> MessageVerdict {
        self.sequence += 1;
        let sequence = self.sequence;
        let mut text = text;
        for s in &mut self.stages {
            let Some(session) = s.session.as_mut() else {
                continue;
            };
            let started = Instant::now();
            let result = if text.len() > s.max_payload {
                Err(StageError::TooLarge {
                    size: text.len(),
                    limit: s.max_payload,
                })
            } else {
                let message = proto::WebSocketMessage {
                    sequence,
                    payload: Some(proto::web_socket_message::Payload::Text(text.clone())),
                };
                match tokio::time::timeout(MESSAGE_DEADLINE, session.message(message)).await {
                    Ok(r) => r,
                    Err(_) => Err(StageError::Timeout(MESSAGE_DEADLINE)),
                }
            };
            let checked = result.and_then(|r| check(r, sequence, &text, s.max_payload));
            match checked {
                Ok(Screened::Deny(code)) => {
                    let mut r = report(&s.key, &s.middleware, "deny", started);
                    r.reason_code = code;
                    self.audit
                        .middleware_stage(&self.decision, "WEBSOCKET_TEXT", &self.path, &r);
                    self.ended_by_middleware =
                        Some(proto::MiddlewareSessionEndReason::MiddlewareDenial);
                    return MessageVerdict::Deny {
                        reason: format!("message rejected by middleware {}", s.key),
                    };
                }
                Ok(Screened::Allow(replacement)) => {
                    if let Some(t) = replacement {
                        let r = report(&s.key, &s.middleware, "mutate", started);
                        self.audit.middleware_stage(
                            &self.decision,
                            "WEBSOCKET_TEXT",
                            &self.path,
                            &r,
                        );
                        text = t;
                    }
                }
                Err(e) => {
                    let mut r = report(&s.key, &s.middleware, "skipped", started);
                    r.failure = Some(e.kind());
                    if let Some(session) = s.session.take() {
                        session.end(proto::MiddlewareSessionEndReason::MiddlewareFailure);
                    }
                    if !s.fail_open {
                        r.outcome = "failed";
                        self.audit.middleware_stage(
                            &self.decision,
                            "WEBSOCKET_TEXT",
                            &self.path,
                            &r,
                        );
                        self.ended_by_middleware =
                            Some(proto::MiddlewareSessionEndReason::MiddlewareFailure);
                        return MessageVerdict::Deny {
                            reason: format!("middleware {} failed", s.key),
                        };
                    }
                    self.audit
                        .middleware_stage(&self.decision, "WEBSOCKET_TEXT", &self.path, &r);
                }
            }
        }
        MessageVerdict::Forward(text)
    }

    /// The session is over: one `session_end` per stage.
    pub(crate) fn end(&mut self, end: &WsEnd) {
        let reason = self.ended_by_middleware.unwrap_or(match end {
            WsEnd::Closed => proto::MiddlewareSessionEndReason::Normal,
            WsEnd::PolicyDenied => proto::MiddlewareSessionEndReason::PolicyDenial,
            WsEnd::Protocol(1012) => proto::MiddlewareSessionEndReason::PolicyReload,
            WsEnd::Protocol(_) | WsEnd::TooBig => proto::MiddlewareSessionEndReason::ProtocolError,
            WsEnd::Io => proto::MiddlewareSessionEndReason::DownstreamDisconnect,
        });
        end_all(std::mem::take(&mut self.stages), reason);
    }
}

impl Drop for WsMiddleware {
    fn drop(&mut self) {
        // A session that never started (the upgrade failed upstream).
        end_all(
            std::mem::take(&mut self.stages),
            proto::MiddlewareSessionEndReason::UpstreamFailure,
        );
    }
}

enum Screened {
    /// With the replacement text, if any.
    Allow(Option<String>),
    Deny(Option<String>),
}

fn check(
    r: proto::WebSocketMessageResult,
    sequence: u64,
    input: &str,
    max_payload: usize,
) -> Result<Screened, StageError> {
    if r.sequence != sequence {
        return Err(StageError::Invalid(format!(
            "result for message {} when {sequence} was asked",
            r.sequence
        )));
    }
    let code = match r.reason_code.as_str() {
        "" => None,
        c if valid_reason_code(c) => Some(c.to_owned()),
        _ => return Err(StageError::Invalid("reason_code".into())),
    };
    if r.findings.len() > MAX_FINDINGS {
        return Err(StageError::Invalid("more than 32 findings".into()));
    }
    match proto::Decision::try_from(r.decision) {
        Ok(proto::Decision::Deny) => Ok(Screened::Deny(code)),
        Ok(proto::Decision::Allow) => match r.replacement {
            None => Ok(Screened::Allow(None)),
            Some(proto::web_socket_message_result::Replacement::Text(t)) => {
                if t.len() > max_payload {
                    return Err(StageError::Invalid(
                        "replacement over the stage limit".into(),
                    ));
                }
                if placeholder::find(t.as_bytes()).count()
                    > placeholder::find(input.as_bytes()).count()
                {
                    return Err(StageError::Invalid(
                        "replacement introduces a credential placeholder".into(),
                    ));
                }
                Ok(Screened::Allow(Some(t)))
            }
            Some(proto::web_socket_message_result::Replacement::Binary(_)) => Err(
                StageError::Invalid("binary replacement for a text message".into()),
            ),
        },
        _ => Err(StageError::Invalid(
            "decision is neither ALLOW nor DENY".into(),
        )),
    }
}
