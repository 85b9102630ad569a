//! The request policy for HTTP inside an allowed CONNECT tunnel, plaintext
//! or TLS-terminated. The upstream is opened only for the first admitted
//! request, and never for a refused one.

use tokio::net::TcpStream;

use super::exchange::{Admission, BodyPlan, DialFailure, RejectCause, RequestPolicy, UpstreamKey};
use super::l7::{self, canonical_target, L7Outcome};
use super::request::RequestHead;
use super::HeadError;
use crate::adapter::response::{
    destination_refused, json_error, BAD_REQUEST, HEAD_TOO_LARGE, REQUEST_TIMEOUT,
};
use crate::destination::{self, UpstreamConnector};
use crate::egress::{authorize, EgressDecision, Target};
use crate::relay::stream::UpstreamStream;
use crate::server::Shared;

/// HTTP admission for one tunnel.
pub(crate) struct TunnelPolicy<'a> {
    pub(crate) shared: &'a Shared,
    /// The decision in force for this tunnel (refreshed when the generation moves).
    pub(crate) decision: EgressDecision,
    pub(crate) connector: UpstreamConnector,
    /// A connection opened before `200` (L4 routes only), used by the first dial.
    pub(crate) predialed: Option<TcpStream>,
    /// The client spoke TLS to us, so the upstream gets TLS too.
    pub(crate) tls: bool,
    pub(crate) request_num: u64,
    /// The outcome of the request in flight, for its completion event.
    pub(crate) current: Option<(String, L7Outcome, Vec<std::sync::Arc<str>>)>,
}

fn authority_mismatch(found: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": "request_authority_mismatch",
        "message": "HTTP request authority does not match the authorized tunnel endpoint",
        "detail": format!("request named {found}"),
    })
    .to_string();
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl TunnelPolicy<'_> {
    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }

    /// The authority a request names (absolute-form wins over `Host`), if any.
    fn named_authority<'r>(&self, req: &'r RequestHead) -> Result<(Option<&'r str>, &'r str), ()> {
        let target = req.target.as_str();
        if target.starts_with('/') {
            let host = req
                .header("host")
                .map(std::str::from_utf8)
                .transpose()
                .map_err(|_| ())?;
            return Ok((host, target));
        }
        let (scheme, rest) = target.split_once("://").ok_or(())?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(());
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        Ok((Some(authority), if tail.is_empty() { "/" } else { tail }))
    }

    /// Re-authorize from scratch when the generation moved since the last request.
    async fn refresh(&mut self) -> Result<(), Vec<u8>> {
        let shared = self.shared;
        if shared.store.generation() == self.decision.generation() {
            return Ok(());
        }
        let redo = authorize(
            &shared.store.snapshot(),
            self.decision.intent.clone(),
            &shared.authorize_ctx(),
        );
        let Some(permit) = redo.permit() else {
            shared
                .audit
                .tunnel_revoked(&self.decision, redo.generation(), &redo.deny_reason());
            let detail = format!(
                "CONNECT {} not permitted because policy changed",
                redo.intent.target
            );
            return Err(json_error(
                403,
                "policy_denied",
                &detail,
                Some(&redo.deny_reason()),
                None,
            ));
        };
        match destination::validate(&permit.destination, &redo.intent.target, &shared.resolver)
            .await
        {
            Ok(c) => {
                self.connector = c;
                self.predialed = None;
                self.decision = redo;
                Ok(())
            }
            Err(denial) => {
                shared.audit.destination_denied(&redo, &denial, None);
                let what = format!("CONNECT {}", redo.intent.target);
                Err(destination_refused(
                    &denial,
                    &what,
                    &redo.intent.target,
                    redo.policy_key(),
                ))
            }
        }
    }
}

impl RequestPolicy for TunnelPolicy<'_> {
    fn failed(&mut self, req: &RequestHead, detail: &str) {
        if let Some((path, _, _)) = self.current.take() {
            self.shared
                .audit
                .exchange_failed(&self.decision, &req.method, &path, detail);
        }
    }

    async fn admit(&mut self, req: &RequestHead) -> Admission {
        self.current = None;
        self.request_num += 1;
        if let Err(response) = self.refresh().await {
            return Admission::Respond { response };
        }
        let shared = self.shared;
        let tunnel_target = self.decision.intent.target.clone();
        let Ok((authority, path_and_query)) = self.named_authority(req) else {
            shared.audit.tunnel_rejected(
                &self.decision,
                format!("HTTP request rejected before policy evaluation for {tunnel_target}"),
                "request-target must be origin-form or absolute-form".into(),
            );
            return Admission::Respond {
                response: BAD_REQUEST.to_vec(),
            };
        };
        match authority {
            Some(a) => {
                let named = Target::parse_authority_with_default(a, self.default_port());
                if named.as_ref().ok() != Some(&tunnel_target) {
                    shared.audit.authority_mismatch(&self.decision, a);
                    return Admission::Respond {
                        response: authority_mismatch(a),
                    };
                }
            }
            None if req.version == 1 => {
                shared
                    .audit
                    .authority_mismatch(&self.decision, "(no Host header)");
                return Admission::Respond {
                    response: authority_mismatch("(no Host header)"),
                };
            }
            None => {}
        }
        let target = match canonical_target(&self.decision, path_and_query) {
            Ok(t) => t,
            Err(detail) => {
                shared.audit.tunnel_rejected(
                    &self.decision,
                    format!("HTTP request rejected before policy evaluation for {tunnel_target}"),
                    detail.clone(),
                );
                let response = json_error(
                    400,
                    "invalid_request_target",
                    &format!("request-target must be canonical: {detail}"),
                    None,
                    None,
                );
                return Admission::Respond { response };
            }
        };
        let outcome = l7::evaluate(&self.decision, req, &target);
        if let Some(response) = l7::refusal(
            &shared.audit,
            &self.decision,
            &req.method,
            &target.path,
            &outcome,
        ) {
            return Admission::Respond { response };
        }
        let endpoint = self
            .decision
            .permit()
            .map_or(sluice_policy::EndpointId(0), |p| p.endpoint);
        let key = UpstreamKey {
            generation: self.decision.generation(),
            endpoint,
            target: tunnel_target,
        };
        let (outbound, upgrade) =
            match l7::admitted(shared, &self.decision, req, &target, &outcome).await {
                Ok(v) => v,
                Err(response) => return Admission::Respond { response },
            };
        let buffered = matches!(outbound.body, BodyPlan::Buffer { .. });
        let head = build_head(
            &req.method,
            &outbound.origin,
            req.version,
            &outbound.headers,
            buffered,
        );
        self.current = Some((target.path, outcome, outbound.providers));
        Admission::Forward {
            key,
            connector: self.connector.clone(),
            head,
            body: outbound.body,
            upgrade,
        }
    }

    async fn dial(&mut self, connector: &UpstreamConnector) -> Result<UpstreamStream, DialFailure> {
        let target = connector.target().clone();
        let tcp = match self.predialed.take() {
            Some(s) => s,
            None => connector
                .connect(self.shared.limits.dial_timeout)
                .await
                .map_err(|error| DialFailure::Connect {
                    target: target.clone(),
                    error,
                })?,
        };
        if !self.tls {
            return Ok(UpstreamStream::Plain(tcp));
        }
        self.shared
            .upstream_tls
            .connect(&target.host, tcp, self.shared.limits.dial_timeout)
            .await
            .map(|s| UpstreamStream::Tls(Box::new(s)))
            .map_err(|e| DialFailure::Tls {
                target,
                detail: e.to_string(),
            })
    }

    fn unreachable(&mut self, _req: &RequestHead, failure: &DialFailure) -> Vec<u8> {
        let (target, detail) = match failure {
            DialFailure::Connect { target, error } => {
                (target, format!("connection to {target} failed: {error}"))
            }
            DialFailure::Tls { target, detail } => (target, detail.clone()),
        };
        self.shared
            .audit
            .upstream_unreachable(&self.decision, &detail);
        let client_detail = match failure {
            DialFailure::Connect { .. } => format!("connection to {target} failed"),
            DialFailure::Tls { .. } => detail.clone(),
        };
        json_error(
            502,
            "upstream_unreachable",
            &client_detail,
            None,
            Some(self.decision.policy_key()),
        )
    }

    fn rejected(&mut self, cause: &RejectCause) -> Option<Vec<u8>> {
        let (response, detail) = match cause {
            RejectCause::Head(HeadError::Closed) => return None,
            RejectCause::Head(HeadError::TooLarge(n)) => (
                Some(HEAD_TOO_LARGE),
                format!("request head exceeds {n} bytes"),
            ),
            RejectCause::Head(HeadError::Timeout) => {
                (Some(REQUEST_TIMEOUT), "request head timed out".to_owned())
            }
            RejectCause::Head(e) => (Some(BAD_REQUEST), e.to_string()),
            RejectCause::Parse(e) => (Some(BAD_REQUEST), e.to_string()),
            RejectCause::Body(e) => (Some(BAD_REQUEST), e.clone()),
        };
        self.shared.audit.tunnel_rejected(
            &self.decision,
            format!(
                "HTTP request rejected before policy evaluation for {}",
                self.decision.intent.target
            ),
            detail,
        );
        response.map(<[u8]>::to_vec)
    }

    fn completed(&mut self, req: &RequestHead, status: u16) {
        let Some((path, outcome, creds)) = self.current.take() else {
            return;
        };
        let audit = &self.shared.audit;
        match &outcome {
            L7Outcome::Pass => audit.tunnel_http_request(
                &self.decision,
                &req.method,
                &path,
                status,
                self.request_num,
                &creds,
            ),
            L7Outcome::Audit { reason, .. } => {
                audit.l7_request_with(&self.decision, "audit", &req.method, &path, reason, &creds);
            }
            // The body evaluation already recorded its decision.
            L7Outcome::Inspect { .. } => {}
            _ => audit.l7_request_with(
                &self.decision,
                outcome.word(),
                &req.method,
                &path,
                "",
                &creds,
            ),
        }
    }
}

/// The request head for the upstream: origin-form canonical target, the
/// client's header fields unchanged.
pub(crate) fn build_head(
    method: &str,
    origin: &str,
    version: u8,
    headers: &[(String, Vec<u8>)],
    buffered: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + origin.len() + headers.len() * 40);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(if version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in headers {
        // A buffered body is re-framed by the loop (Content-Length), and the
        // 100-continue was already answered.
        if buffered && FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !buffered {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Fields a re-framed (buffered) body replaces.
pub(crate) const FRAMING: [&str; 4] = ["content-length", "transfer-encoding", "trailer", "expect"];
