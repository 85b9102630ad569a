//! Forward HTTP: absolute-form `http://` requests. Every request on the
//! client connection is parsed and authorized on its own; the request loop
//! in `relay::http` owns the bytes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sluice_telemetry::{redact_path, Activity, EventClass};
use tokio::net::TcpStream;

use super::{policy_local, Shared};
use crate::destination::{self, UpstreamConnector};
use crate::egress::{Allowed, EgressIntent, IdentityEvidence, Surface, Target};
use crate::metrics::Outcome;
use crate::refusal::{
    destination_refused, json_error, Refusal, BAD_REQUEST, HEAD_TOO_LARGE, REQUEST_TIMEOUT,
    USE_CONNECT,
};
use crate::relay::credentials::Outbound;
use crate::relay::http::admission::{self, AdmissionSurface, PendingMiddleware, Step};
use crate::relay::http::l7::L7Outcome;
use crate::relay::http::tunnel::FRAMING;
use crate::relay::http::Upgrade;
use crate::relay::http::{
    request_loop, Admission, DialFailure, HeadError, RejectCause, RequestHead, RequestPolicy,
    UpstreamKey,
};
use crate::relay::stream::UpstreamStream;
use crate::relay::RelayContext;

/// Longest request path accepted.
const MAX_PATH: usize = 4096;
const MAX_REAUTHORIZE: usize = 4;

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "host",
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "keep-alive",
    "upgrade",
    "te",
];

pub(super) async fn handle(
    shared: &Arc<Shared>,
    mut client: TcpStream,
    mut buf: BytesMut,
    first: RequestHead,
    peer: SocketAddr,
    identity: IdentityEvidence,
) {
    let mut policy = ForwardPolicy {
        shared,
        peer,
        identity,
        current: None,
        cached: None,
        upgraded: None,
        pending: None,
        local: None,
    };
    let limits = shared.limits.loop_limits();
    request_loop(&mut client, &mut buf, first, &mut policy, &limits).await;
}

/// The forward proxy's part of [`admission::admit`]: the destination is
/// validated per request (the last connector is reused while its key and the
/// generation hold), and the head is regenerated for origin-form.
struct ForwardStep<'s> {
    ctx: &'s RelayContext,
    cached: &'s mut Option<(UpstreamKey, UpstreamConnector)>,
    target: &'s Target,
    /// The request's path for events (query-free).
    path: &'s str,
    /// Time spent validating the destination (metrics; `None` when not
    /// validated or not timed).
    validation: Option<Duration>,
    /// The destination was refused (the decision is a deny).
    destination_denied: bool,
}

impl ForwardStep<'_> {
    /// Destination validation, timed for the decision latency metric.
    async fn validate(
        &mut self,
        decision: &Allowed,
    ) -> Result<UpstreamConnector, destination::DestinationDenial> {
        let clock = self.ctx.audit.metrics().stopwatch();
        let permit = decision.permit();
        let result = destination::validate(
            &permit.destination,
            &decision.intent.target,
            &self.ctx.resolver,
        )
        .await;
        self.validation = clock.elapsed();
        result
    }
}

impl AdmissionSurface for ForwardStep<'_> {
    fn bad_target(&self, decision: &Allowed, req: &RequestHead, detail: &str) -> Refusal {
        self.ctx
            .audit
            .l7_request(decision, "deny", &req.method, self.path, detail);
        let detail = format!("request-target must be canonical: {detail}");
        json_error(400, "invalid_request_target", &detail, None, None)
    }

    async fn upstream(
        &mut self,
        decision: &Allowed,
        req: &RequestHead,
    ) -> Result<Option<(UpstreamKey, UpstreamConnector)>, Refusal> {
        let target = &decision.intent.target;
        let permit = decision.permit();
        let key = UpstreamKey {
            generation: decision.generation(),
            endpoint: permit.endpoint,
            target: target.clone(),
        };
        let connector = match self.cached.take() {
            Some((k, c)) if k == key => c,
            _ => match self.validate(decision).await {
                Ok(c) => c,
                Err(denial) => {
                    self.destination_denied = true;
                    self.ctx.audit.destination_denied(
                        decision,
                        &denial,
                        Some((&req.method, self.path)),
                    );
                    let what = format!("{} {target}", req.method);
                    return Err(destination_refused(
                        &denial,
                        &what,
                        target,
                        decision.policy_key(),
                    ));
                }
            },
        };
        if self.ctx.authorizer.generation() != decision.generation() {
            return Ok(None);
        }
        *self.cached = Some((key.clone(), connector.clone()));
        Ok(Some((key, connector)))
    }

    fn head(&self, req: &RequestHead, outbound: &Outbound, upgrade: &Upgrade) -> Vec<u8> {
        let buffered = outbound.body.buffers();
        rewrite(
            req,
            self.target,
            &outbound.origin,
            &outbound.headers,
            (buffered, outbound.body.answers_continue()),
            matches!(upgrade, Upgrade::WebSocket(_)),
        )
    }
}

/// The forward adapter's per-request admission.
struct ForwardPolicy<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    identity: IdentityEvidence,
    /// The decision for the request in flight (for its completion event).
    current: Option<(Allowed, String, L7Outcome, Vec<Arc<str>>)>,
    /// The last validated connector, reused while key and generation hold
    /// (no DNS per request on a keep-alive connection).
    cached: Option<(UpstreamKey, UpstreamConnector)>,
    /// The decision of a request that switched protocols (`101`), for
    /// revoking the session on reload.
    upgraded: Option<Allowed>,
    /// The admitted request's middleware stages, with its target and
    /// event path, until the body is read.
    pending: Option<(Box<PendingMiddleware>, Target, String)>,
    /// The path and query of a request to `policy.local`, until its body is read.
    local: Option<String>,
}

/// `http://authority/path?query` split into its parts.
struct AbsoluteTarget {
    target: Target,
    /// Path and query as sent (origin-form for the upstream).
    path_and_query: String,
}

enum TargetRefusal {
    Https,
    OtherScheme,
    Malformed(&'static str),
}

fn parse_absolute(raw: &str) -> Result<AbsoluteTarget, TargetRefusal> {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(TargetRefusal::Malformed(
            "request-target is not absolute-form",
        ));
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err(TargetRefusal::Https);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(TargetRefusal::OtherScheme);
    }
    if rest.contains('#') {
        return Err(TargetRefusal::Malformed("fragment in request-target"));
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let target = Target::parse_authority_with_default(authority, 80)
        .map_err(|_| TargetRefusal::Malformed("invalid authority"))?;
    let path_and_query = if tail.starts_with('/') {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    if path_and_query.len() > MAX_PATH {
        return Err(TargetRefusal::Malformed("request-target too long"));
    }
    Ok(AbsoluteTarget {
        target,
        path_and_query,
    })
}

/// Origin-form head for the upstream: one generated `Host`, hop-by-hop
/// fields and everything `Connection` nominated removed, `Via` added.
fn rewrite(
    req: &RequestHead,
    target: &Target,
    origin: &str,
    headers: &[(String, Vec<u8>)],
    (buffered, answers_continue): (bool, bool),
    websocket: bool,
) -> Vec<u8> {
    let mut out = String::with_capacity(256 + req.headers.len() * 48);
    let _ = write!(
        out,
        "{} {} HTTP/1.{}\r\nHost: ",
        req.method, origin, req.version
    );
    let _ = write!(out, "{}", target.host);
    if target.port != 80 {
        let _ = write!(out, ":{}", target.port);
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || req.connection_tokens.contains(&lower)
            || (buffered && FRAMING.contains(&lower.as_str()))
            || (answers_continue && lower == "expect")
        {
            continue;
        }
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("Via: 1.{} sluice\r\n", req.version).as_bytes());
    if websocket {
        // A valid WebSocket upgrade keeps its hop-by-hop pair (the frame relay takes over after 101).
        bytes.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\n");
    } else if req.close {
        bytes.extend_from_slice(b"Connection: close\r\n");
    }
    if !buffered {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

impl ForwardPolicy<'_> {
    fn refuse(&self, req: &RequestHead, refusal: &TargetRefusal) -> Admission {
        let (activity, message, response) = match refusal {
            TargetRefusal::Https => (
                Activity::Refuse,
                "FORWARD rejected: unsupported scheme https".to_owned(),
                USE_CONNECT,
            ),
            TargetRefusal::OtherScheme => (
                Activity::Refuse,
                "FORWARD rejected: unsupported scheme".to_owned(),
                json_error(
                    400,
                    "unsupported_proxy_scheme",
                    "Forward proxy requests must use http",
                    None,
                    None,
                ),
            ),
            TargetRefusal::Malformed(why) => (
                Activity::Fail,
                format!("FORWARD parse error for {}", redact_path(&req.target)),
                {
                    let _ = why;
                    BAD_REQUEST
                },
            ),
        };
        let detail = match refusal {
            TargetRefusal::Malformed(why) => (*why).to_owned(),
            _ => String::new(),
        };
        self.shared.relay.audit.request_rejected(
            EventClass::HttpActivity,
            self.peer,
            activity,
            message,
            detail,
        );
        Admission::Respond { response }
    }

    async fn decide(&mut self, req: &RequestHead, t: AbsoluteTarget) -> Admission {
        let shared = self.shared;
        let path = redact_path(&t.path_and_query);
        let intent = EgressIntent {
            surface: Surface::ForwardHttp,
            target: t.target.clone(),
            client: self.peer,
            identity: self.identity.clone(),
        };
        let metrics = shared.relay.audit.metrics();
        for _ in 0..MAX_REAUTHORIZE {
            let clock = metrics.stopwatch();
            let decision = match shared.relay.authorizer.authorize(intent.clone()) {
                Ok(allowed) => allowed,
                Err(denied) => {
                    metrics.decision(
                        Surface::ForwardHttp.metric(),
                        Outcome::Deny,
                        clock.elapsed(),
                    );
                    shared
                        .relay
                        .audit
                        .forward_denied(&denied, &req.method, &path);
                    let target = &denied.intent.target;
                    let detail = format!("{} {target}{path} not permitted by policy", req.method);
                    let shown = redact_path(&sluice_policy::placeholder::scrub(&path));
                    let hint = denied.denial_hint(
                        &format!("{} {target}{shown}", req.method),
                        &denied.deny_reason(),
                    );
                    return Admission::Respond {
                        response: json_error(403, "policy_denied", &detail, None, None).hint(&hint),
                    };
                }
            };
            let authorized = clock.elapsed();
            let mut step = ForwardStep {
                ctx: &shared.relay,
                cached: &mut self.cached,
                target: &t.target,
                path: &path,
                validation: None,
                destination_denied: false,
            };
            let step_result =
                admission::admit(&shared.relay, &decision, req, &t.path_and_query, &mut step).await;
            if !matches!(step_result, Step::Reauthorize) {
                // A request refused by request-level rules was allowed at the
                // endpoint: it counts as allowed here (and in the L7 verdicts).
                let outcome = if step.destination_denied {
                    Outcome::Deny
                } else {
                    Outcome::Allow
                };
                let took = authorized.map(|a| a + step.validation.unwrap_or_default());
                metrics.decision(Surface::ForwardHttp.metric(), outcome, took);
            }
            match step_result {
                Step::Admitted(a) => {
                    let a = *a;
                    self.pending = a.middleware.map(|m| (m, t.target.clone(), path.clone()));
                    self.current = Some((decision, a.path, a.outcome, a.providers));
                    return Admission::Forward {
                        key: a.key,
                        connector: a.connector,
                        head: a.head,
                        body: a.body,
                        upgrade: a.upgrade,
                    };
                }
                Step::Reauthorize => continue,
                Step::Refused(response) => return Admission::Respond { response },
            }
        }
        metrics.decision(Surface::ForwardHttp.metric(), Outcome::Deny, None);
        let detail = format!("{} {}{path} not permitted by policy", req.method, t.target);
        Admission::Respond {
            response: json_error(403, "policy_denied", &detail, None, None),
        }
    }
}

impl RequestPolicy for ForwardPolicy<'_> {
    fn metrics(&self) -> &crate::metrics::Metrics {
        self.shared.relay.audit.metrics()
    }

    async fn finish_middleware(
        &mut self,
        req: &RequestHead,
        body: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u8>, Upgrade), Refusal> {
        let (Some((pending, target, path)), Some(current)) =
            (self.pending.take(), self.current.as_mut())
        else {
            return Err(BAD_REQUEST);
        };
        let step = ForwardStep {
            ctx: &self.shared.relay,
            cached: &mut self.cached,
            target: &target,
            path: &path,
            validation: None,
            destination_denied: false,
        };
        let decision = current.0.clone();
        let f = admission::finish(
            &self.shared.relay,
            &decision,
            req,
            *pending,
            body,
            "http",
            &step,
        )
        .await?;
        current.2 = f.outcome;
        current.3 = f.providers;
        Ok((f.head, f.body, f.upgrade))
    }

    fn failed(&mut self, req: &RequestHead, detail: &str) {
        self.cached = None;
        if let Some((d, path, _, _)) = self.current.take() {
            self.shared
                .relay
                .audit
                .exchange_failed(&d, &req.method, &path, detail);
        }
    }

    async fn admit(&mut self, req: &RequestHead) -> Admission {
        self.current = None;
        self.local = None;
        match parse_absolute(&req.target) {
            Ok(t) if policy_local::names_policy_local(&t.target) => {
                if t.target.port != 80 {
                    return Admission::Respond {
                        response: policy_local::wrong_scheme(),
                    };
                }
                self.local = Some(t.path_and_query);
                Admission::Local {
                    limit: policy_local::MAX_BODY,
                }
            }
            Ok(t) => self.decide(req, t).await,
            Err(TargetRefusal::Https)
                if req.target.get(8..).is_some_and(|r| {
                    r.to_ascii_lowercase()
                        .starts_with(policy_local::POLICY_HOST)
                }) =>
            {
                Admission::Respond {
                    response: policy_local::wrong_scheme(),
                }
            }
            Err(refusal) => self.refuse(req, &refusal),
        }
    }

    async fn answer_locally(&mut self, req: &RequestHead, body: Vec<u8>) -> Refusal {
        let path = self.local.take().unwrap_or_default();
        policy_local::answer(self.shared, req, &path, body, self.peer, &self.identity).await
    }

    async fn dial(&mut self, connector: &UpstreamConnector) -> Result<UpstreamStream, DialFailure> {
        connector
            .connect(self.shared.limits.dial_timeout)
            .await
            .map(UpstreamStream::Plain)
            .map_err(|error| DialFailure::Connect {
                target: connector.target().clone(),
                error,
            })
    }

    fn unreachable(&mut self, _req: &RequestHead, failure: &DialFailure) -> Refusal {
        self.cached = None;
        let (target, err) = match failure {
            DialFailure::Connect { target, error } => (target, error.to_string()),
            DialFailure::Tls { target, detail } => (target, detail.clone()),
        };
        let policy = self.current.as_ref().map(|(d, _, _, _)| {
            self.shared.relay.audit.upstream_unreachable(d, &err);
            d.policy_key().to_owned()
        });
        let detail = format!("connection to {target} failed");
        json_error(
            502,
            "upstream_unreachable",
            &detail,
            None,
            policy.as_deref(),
        )
    }

    fn rejected(&mut self, cause: &RejectCause) -> Option<Refusal> {
        let (response, detail) = match cause {
            RejectCause::Head(HeadError::TooLarge(n)) => (
                Some(HEAD_TOO_LARGE),
                format!("request head exceeds {n} bytes"),
            ),
            RejectCause::Head(HeadError::Timeout) => (Some(REQUEST_TIMEOUT), cause_text(cause)),
            RejectCause::Head(HeadError::Truncated | HeadError::BareLineEnding) => {
                (Some(BAD_REQUEST), cause_text(cause))
            }
            RejectCause::Head(_) => (None, cause_text(cause)),
            RejectCause::Parse(_) | RejectCause::Body(_) => (Some(BAD_REQUEST), cause_text(cause)),
        };
        self.shared.relay.audit.request_rejected(
            EventClass::HttpActivity,
            self.peer,
            Activity::Fail,
            "FORWARD parse error for follow-up request".into(),
            detail,
        );
        response
    }

    async fn revoked(&self, upstream_ip: Option<std::net::IpAddr>) {
        match &self.upgraded {
            Some(d) => crate::relay::revoke::revoked(&self.shared.relay, d, upstream_ip).await,
            None => std::future::pending().await,
        }
    }

    fn completed(&mut self, req: &RequestHead, status: u16) {
        if let Some((d, path, outcome, creds)) = self.current.take() {
            if status == 101 {
                self.upgraded = Some(d.clone());
            }
            let audit = &self.shared.relay.audit;
            match &outcome {
                L7Outcome::Audit { reason, .. } => {
                    audit.l7_request_with(&d, "audit", &req.method, &path, reason, &creds);
                }
                L7Outcome::Allow { .. } => {
                    audit.l7_request_with(&d, "allow", &req.method, &path, "", &creds)
                }
                _ => {}
            }
            audit.forward_allowed(&d, &req.method, &path, status, &creds);
        }
    }
}

fn cause_text(cause: &RejectCause) -> String {
    match cause {
        RejectCause::Head(e) => e.to_string(),
        RejectCause::Parse(e) => e.to_string(),
        RejectCause::Body(e) => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_target_table() {
        let ok = |raw: &str| {
            parse_absolute(raw)
                .map(|t| (t.target.to_string(), t.path_and_query))
                .ok()
        };
        assert_eq!(
            ok("http://a.test/x?y=1"),
            Some(("a.test:80".into(), "/x?y=1".into()))
        );
        assert_eq!(
            ok("HTTP://A.test:8080"),
            Some(("a.test:8080".into(), "/".into()))
        );
        assert_eq!(
            ok("http://a.test?q"),
            Some(("a.test:80".into(), "/?q".into()))
        );
        assert_eq!(
            ok("http://[::1]:81/"),
            Some(("[::1]:81".into(), "/".into()))
        );
        assert_eq!(
            ok("http://2130706433/"),
            Some(("127.0.0.1:80".into(), "/".into()))
        );
        for bad in [
            "/x",
            "http://u:p@a.test/",
            "http://a.test/#f",
            "http://a%2etest/",
            "http://a.test:0/",
            "http:///x",
        ] {
            assert!(
                matches!(parse_absolute(bad), Err(TargetRefusal::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_absolute("https://a.test/"),
            Err(TargetRefusal::Https)
        ));
        assert!(matches!(
            parse_absolute("ftp://a.test/"),
            Err(TargetRefusal::OtherScheme)
        ));
    }

    #[test]
    fn rewrite_strips_hop_by_hop() {
        let req = RequestHead::parse(
            b"GET http://a.test:8080/p?q=1 HTTP/1.1\r\nHost: evil.test\r\nProxy-Authorization: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        let t = parse_absolute(&req.target).ok().unwrap();
        let out = String::from_utf8(rewrite(
            &req,
            &t.target,
            &t.path_and_query,
            &req.headers,
            (false, false),
            false,
        ))
        .unwrap();
        assert_eq!(
            out,
            "GET /p?q=1 HTTP/1.1\r\nHost: a.test:8080\r\nAccept: */*\r\nVia: 1.1 sluice\r\n\r\n"
        );
    }
}
