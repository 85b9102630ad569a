//! Registered middleware services: `--middleware NAME=URL[,timeout=DUR][,max_payload_bytes=N]`,
//! reached over gRPC (`openshell.middleware.v1.SupervisorMiddleware`).
//!
//! At start, [`Service::connect`] opens one channel per registration and
//! calls `Describe` (a service that is unreachable or whose manifest is
//! unusable stops the start); each policy load calls `ValidateConfig`; on
//! the request path the stages call `EvaluateHttpRequest` and
//! `EvaluateWebSocketSession` over clones of that channel.
//!
//! - `registration`: the flag value;
//! - `manifest`: what a `Describe` answer lets sluice run, and its limits;
//! - `transport`: the channel (plaintext or TLS);
//! - `http`, `ws`: the stages.

mod http;
mod manifest;
mod registration;
mod transport;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use super::proto;
use super::proto::supervisor_middleware_client::SupervisorMiddlewareClient;
use super::stage::{HttpStage, StageError, WsStage};

pub use registration::{Registration, RegistrationError};

/// The gRPC message cap both ways: a 4 MiB payload plus the rest of the
/// message (OpenShell asks for at least 4 MiB + ~293 KiB).
const MAX_MESSAGE: usize = 4 * 1024 * 1024 + 512 * 1024;

/// The longest service text (`ValidateConfig` reason, status message) kept.
const MAX_SERVICE_TEXT: usize = 256;

type Client = SupervisorMiddlewareClient<Channel>;

/// A described service: its channel and the stages its manifest binds.
pub(crate) struct Service {
    name: Arc<str>,
    client: Client,
    /// The operator's timeout (`Describe`, `ValidateConfig`).
    timeout: Duration,
    http: Option<Arc<http::GrpcHttpStage>>,
    ws: Option<Arc<ws::GrpcWsStage>>,
}

impl Service {
    /// Connects to `reg` and checks its `Describe` manifest, both within
    /// the registration's timeout. `ca_pem` (`--middleware-ca`) is the only
    /// trust for `https://` registrations when given.
    ///
    /// # Errors
    /// One line naming the service: unreachable, no answer in time, or a
    /// manifest sluice cannot run (middleware-contract §3-4).
    pub(crate) async fn connect(reg: &Registration, ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let whose = format!("middleware `{}` ({})", reg.name, reg.url());
        let timeout = reg.timeout();
        let channel = tokio::time::timeout(timeout, transport::connect(reg, ca_pem))
            .await
            .map_err(|_| format!("{whose}: no connection within {timeout:?}"))?
            .map_err(|e| format!("{whose}: cannot connect: {e}"))?;
        let client = SupervisorMiddlewareClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut request = tonic::Request::new(());
        request.set_timeout(timeout);
        let manifest = control_call(timeout, client.clone().describe(request))
            .await
            .map_err(|e| format!("{whose}: {}", control_error(&e, "Describe")))?;
        let bindings = manifest::check(&manifest, timeout, reg.max_payload_bytes())
            .map_err(|e| format!("{whose}: {e}"))?;
        let name: Arc<str> = Arc::from(reg.name.as_str());
        for ignored in &bindings.ignored {
            tracing::warn!(
                middleware.name = %name,
                binding = %ignored,
                "Middleware binding ignored"
            );
        }
        tracing::info!(
            middleware.name = %name,
            middleware.url = %reg.url(),
            service.name = %clean(&manifest.name),
            service.version = %clean(&manifest.service_version),
            http = ?bindings.http,
            websocket = ?bindings.ws,
            "Middleware service described"
        );
        Ok(Self {
            http: bindings.http.map(|limits| {
                Arc::new(http::GrpcHttpStage::new(
                    Arc::clone(&name),
                    client.clone(),
                    limits,
                ))
            }),
            ws: bindings.ws.map(|limits| {
                Arc::new(ws::GrpcWsStage::new(
                    Arc::clone(&name),
                    client.clone(),
                    limits,
                ))
            }),
            name,
            client,
            timeout,
        })
    }

    /// Has the service check one policy `config` (`ValidateConfig`, within
    /// the operator's timeout). `name` is the policy's `middleware` value.
    ///
    /// # Errors
    /// The service's reason for rejecting it (bounded, control characters
    /// removed), or why it gave no answer.
    pub(crate) async fn validate_config(
        &self,
        name: &str,
        config: &prost_types::Struct,
    ) -> Result<(), String> {
        let mut request = tonic::Request::new(proto::ValidateConfigRequest {
            config: Some(config.clone()),
            middleware_name: name.to_owned(),
        });
        request.set_timeout(self.timeout);
        let answer = control_call(self.timeout, self.client.clone().validate_config(request))
            .await
            .map_err(|e| {
                format!(
                    "middleware `{}`: {}",
                    self.name,
                    control_error(&e, "ValidateConfig")
                )
            })?;
        if answer.valid {
            return Ok(());
        }
        let reason = clean(&answer.reason);
        Err(format!(
            "middleware `{}` rejected its config: {}",
            self.name,
            if reason.is_empty() {
                "no reason given"
            } else {
                &reason
            }
        ))
    }

    /// The `HTTP_REQUEST/PRE_CREDENTIALS` stage, when the manifest binds it.
    pub(crate) fn http_stage(&self) -> Option<Arc<dyn HttpStage>> {
        self.http.clone().map(|s| s as Arc<dyn HttpStage>)
    }

    /// The `WEBSOCKET_MESSAGE/PRE_CREDENTIALS` stage, when the manifest binds it.
    pub(crate) fn ws_stage(&self) -> Option<Arc<dyn WsStage>> {
        self.ws.clone().map(|s| s as Arc<dyn WsStage>)
    }
}

/// A `Describe` or `ValidateConfig` call bounded by `timeout`.
async fn control_call<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, StageError> {
    let started = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(StageError::Timeout(timeout)),
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(stage_error(&status, timeout, started.elapsed())),
    }
}

/// A failed control call (`Describe`, `ValidateConfig`) in an error line.
fn control_error(e: &StageError, rpc: &str) -> String {
    match e {
        StageError::Timeout(d) => format!("no answer to {rpc} within {d:?}"),
        StageError::Unavailable(why) => format!("{rpc} failed: {why}"),
        other => format!("{rpc} failed: {other}"),
    }
}

/// Service-provided text fit for a log line or an error: control
/// characters become spaces, at most [`MAX_SERVICE_TEXT`] characters.
fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_SERVICE_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_SERVICE_TEXT).is_some() {
        out.push('…');
    }
    out
}

/// A gRPC status as `Code: message: causes`, cleaned.
fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    if let Some(source) = std::error::Error::source(status) {
        let causes = transport::error_chain(source);
        if !text.contains(&causes) {
            text.push_str(": ");
            text.push_str(&causes);
        }
    }
    clean(&text)
}

/// A failed call as the chain sees it: a deadline (the server's
/// `DEADLINE_EXCEEDED`, or tonic's own `CANCELLED` once the deadline has
/// passed) is a timeout, anything else leaves the service unavailable.
fn stage_error(status: &tonic::Status, timeout: Duration, elapsed: Duration) -> StageError {
    match status.code() {
        tonic::Code::DeadlineExceeded => StageError::Timeout(timeout),
        tonic::Code::Cancelled if elapsed >= timeout => StageError::Timeout(timeout),
        _ => StageError::Unavailable(status_text(status)),
    }
}

#[cfg(test)]
mod tests;
