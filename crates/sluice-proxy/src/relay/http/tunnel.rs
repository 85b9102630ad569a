//! The request policy for HTTP inside an allowed CONNECT tunnel, plaintext
//! or TLS-terminated. The upstream is opened only for the first admitted
//! request, and never for a refused one.

use tokio::net::TcpStream;

use super::admission::{self, AdmissionSurface, Step};
use super::exchange::{Admission, DialFailure, RejectCause, RequestPolicy, Upgrade, UpstreamKey};
use super::l7::L7Outcome;
use super::request::RequestHead;
use super::HeadError;
use crate::destination::{self, UpstreamConnector};
use crate::egress::{Allowed, Target};
use crate::refusal::{
    destination_refused, json_error, Refusal, BAD_REQUEST, HEAD_TOO_LARGE, REQUEST_TIMEOUT,
};
use crate::relay::credentials::Outbound;
use crate::relay::stream::UpstreamStream;
use crate::relay::RelayContext;

/// HTTP admission for one tunnel.
pub(crate) struct TunnelPolicy<'a> {
    pub(crate) shared: &'a RelayContext,
    /// The decision in force for this tunnel (refreshed when the generation moves).
    pub(crate) decision: Allowed,
    pub(crate) connector: UpstreamConnector,
    /// A connection opened before `200` (L4 routes only), used by the first dial.
    pub(crate) predialed: Option<TcpStream>,
    /// The client spoke TLS to us, so the upstream gets TLS too.
    pub(crate) tls: bool,
    pub(crate) request_num: u64,
    /// The outcome of the request in flight, for its completion event.
    pub(crate) current: Option<(String, L7Outcome, Vec<std::sync::Arc<str>>)>,
    /// The admitted request's middleware stages, until its body is read.
    pub(crate) pending: Option<Box<admission::PendingMiddleware>>,
}

fn authority_mismatch(found: &str) -> Refusal {
    Refusal::json(
        403,
        "request_authority_mismatch",
        &format!("request named {found}"),
    )
    .field(
        "message",
        "HTTP request authority does not match the authorized tunnel endpoint",
    )
}

/// The tunnel's part of [`admission::admit`]: the upstream is the tunnel's
/// (validated at CONNECT), and the head keeps the client's own framing.
struct TunnelStep<'a> {
    ctx: &'a RelayContext,
    connector: UpstreamConnector,
    tunnel_target: Target,
    /// `Host` to add to an HTTP/1.0 request that carries none.
    host_value: Option<String>,
}

impl AdmissionSurface for TunnelStep<'_> {
    fn bad_target(&self, decision: &Allowed, _req: &RequestHead, detail: &str) -> Refusal {
        self.ctx.audit.tunnel_rejected(
            decision,
            format!(
                "HTTP request rejected before policy evaluation for {}",
                self.tunnel_target
            ),
            detail.to_owned(),
        );
        json_error(
            400,
            "invalid_request_target",
            &format!("request-target must be canonical: {detail}"),
            None,
            None,
        )
    }

    async fn upstream(
        &mut self,
        decision: &Allowed,
        _req: &RequestHead,
    ) -> Result<Option<(UpstreamKey, UpstreamConnector)>, Refusal> {
        let permit = decision.permit();
        let key = UpstreamKey {
            generation: decision.generation(),
            endpoint: permit.endpoint,
            target: self.tunnel_target.clone(),
        };
        Ok(Some((key, self.connector.clone())))
    }

    fn head(&self, req: &RequestHead, outbound: &Outbound, _upgrade: &Upgrade) -> Vec<u8> {
        let buffered = outbound.body.buffers();
        let mut headers = std::borrow::Cow::Borrowed(&outbound.headers);
        if let Some(host) = &self.host_value {
            // HTTP/1.0 without `Host`: name the tunnel's authority, so that a
            // shared front never picks its default site for this request.
            headers
                .to_mut()
                .insert(0, ("Host".to_owned(), host.clone().into_bytes()));
        }
        build_head(
            &req.method,
            &outbound.origin,
            req.version,
            &headers,
            buffered,
            outbound.body.answers_continue(),
        )
    }
}

impl TunnelPolicy<'_> {
    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }

    /// The `Host` value for a request that carries none (HTTP/1.0): the
    /// tunnel's authority, the port omitted when it is the scheme's default.
    fn host_value(&self) -> String {
        let t = &self.decision.intent.target;
        if t.port == self.default_port() {
            t.host.to_string()
        } else {
            t.to_string()
        }
    }
    /// Re-authorize from scratch when the generation moved since the last request.
    async fn refresh(&mut self) -> Result<(), Refusal> {
        let shared = self.shared;
        if shared.authorizer.generation() == self.decision.generation() {
            return Ok(());
        }
        let redo = match shared.authorizer.authorize(self.decision.intent.clone()) {
            Ok(allowed) => allowed,
            Err(denied) => {
                shared.audit.tunnel_revoked(
                    &self.decision,
                    denied.generation(),
                    &denied.deny_reason(),
                );
                let detail = format!(
                    "CONNECT {} not permitted because policy changed",
                    denied.intent.target
                );
                return Err(json_error(
                    403,
                    "policy_denied",
                    &detail,
                    Some(&denied.deny_reason()),
                    None,
                ));
            }
        };
        match destination::validate(
            &redo.permit().destination,
            &redo.intent.target,
            &shared.resolver,
        )
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
    fn metrics(&self) -> &crate::metrics::Metrics {
        self.shared.audit.metrics()
    }

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
        let Ok((absolute, path_and_query)) = split_target(&req.target) else {
            shared.audit.tunnel_rejected(
                &self.decision,
                format!("HTTP request rejected before policy evaluation for {tunnel_target}"),
                "request-target must be origin-form or absolute-form".into(),
            );
            return Admission::Respond {
                response: BAD_REQUEST,
            };
        };
        if let Some(seen) = foreign_authority(&tunnel_target, self.default_port(), req, absolute) {
            let seen = sluice_policy::placeholder::scrub(&seen);
            shared.audit.authority_mismatch(&self.decision, &seen);
            return Admission::Respond {
                response: authority_mismatch(&seen),
            };
        }
        let mut step = TunnelStep {
            ctx: shared,
            connector: self.connector.clone(),
            tunnel_target,
            host_value: req.header("host").is_none().then(|| self.host_value()),
        };
        match admission::admit(shared, &self.decision, req, path_and_query, &mut step).await {
            Step::Admitted(a) => {
                let a = *a;
                self.pending = a.middleware;
                self.current = Some((a.path, a.outcome, a.providers));
                Admission::Forward {
                    key: a.key,
                    connector: a.connector,
                    head: a.head,
                    body: a.body,
                    upgrade: a.upgrade,
                }
            }
            // The tunnel's decision was refreshed above; the connector is fixed.
            Step::Reauthorize => Admission::Respond {
                response: json_error(
                    403,
                    "policy_denied",
                    "CONNECT not permitted because policy changed",
                    None,
                    None,
                ),
            },
            Step::Refused(response) => Admission::Respond { response },
        }
    }

    async fn dial(&mut self, connector: &UpstreamConnector) -> Result<UpstreamStream, DialFailure> {
        let target = connector.target().clone();
        let tcp = match self.predialed.take() {
            Some(s) => s,
            None => connector
                .connect(self.shared.dial_timeout)
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
            .connect(&target.host, tcp, self.shared.dial_timeout)
            .await
            .map(|s| UpstreamStream::Tls(Box::new(s)))
            .map_err(|e| DialFailure::Tls {
                target,
                detail: e.to_string(),
            })
    }

    fn unreachable(&mut self, _req: &RequestHead, failure: &DialFailure) -> Refusal {
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

    fn rejected(&mut self, cause: &RejectCause) -> Option<Refusal> {
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
        response
    }

    fn revoked(
        &self,
        upstream_ip: Option<std::net::IpAddr>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        crate::relay::revoke::revoked(self.shared, &self.decision, upstream_ip)
    }

    async fn finish_middleware(
        &mut self,
        req: &RequestHead,
        body: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u8>, Upgrade), Refusal> {
        let Some(pending) = self.pending.take() else {
            return Err(BAD_REQUEST);
        };
        let step = TunnelStep {
            ctx: self.shared,
            connector: self.connector.clone(),
            tunnel_target: self.decision.intent.target.clone(),
            host_value: req.header("host").is_none().then(|| self.host_value()),
        };
        let scheme = if self.tls { "https" } else { "http" };
        let f = admission::finish(
            self.shared,
            &self.decision,
            req,
            *pending,
            body,
            scheme,
            &step,
        )
        .await?;
        if let Some(current) = self.current.as_mut() {
            current.1 = f.outcome;
            current.2 = f.providers;
        }
        Ok((f.head, f.body, f.upgrade))
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

/// Split a request-target into the authority of an absolute-form target
/// (`None` for origin-form) and the path and query.
fn split_target(target: &str) -> Result<(Option<&str>, &str), ()> {
    if target.starts_with('/') {
        return Ok((None, target));
    }
    let (scheme, rest) = target.split_once("://").ok_or(())?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(());
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    Ok((Some(authority), if tail.is_empty() { "/" } else { tail }))
}

/// The first authority a request names that is not the tunnel's, if any.
///
/// Inside a tunnel every place a request names its site must name the
/// tunnel's checked authority: the `Host` header (required for HTTP/1.1)
/// **and** an absolute-form request-target's authority. Neither wins over
/// the other: a request whose two names differ is refused, because a shared
/// front (CDN, virtual hosting) routes by `Host` while the tunnel was
/// authorized for the target. A missing port means `default_port` (443 in
/// a TLS tunnel, 80 in a plaintext one); names are compared after the
/// strict normalization of [`Target`] (case, one trailing dot, IPv4 spellings).
fn foreign_authority(
    tunnel: &Target,
    default_port: u16,
    req: &RequestHead,
    absolute: Option<&str>,
) -> Option<String> {
    let names_tunnel = |a: &str| {
        Target::parse_authority_with_default(a, default_port)
            .as_ref()
            .is_ok_and(|t| t == tunnel)
    };
    if let Some(a) = absolute.filter(|a| !names_tunnel(a)) {
        return Some(a.to_owned());
    }
    match req.header("host").map(std::str::from_utf8) {
        Some(Ok(h)) if names_tunnel(h) => None,
        Some(Ok(h)) => Some(h.to_owned()),
        Some(Err(_)) => Some("(invalid Host header)".to_owned()),
        None if req.version == 1 => Some("(no Host header)".to_owned()),
        None => None,
    }
}

/// The request head for the upstream: origin-form canonical target, the
/// client's header fields unchanged (the `Host` among them was checked
/// against the tunnel's authority).
pub(crate) fn build_head(
    method: &str,
    origin: &str,
    version: u8,
    headers: &[(String, Vec<u8>)],
    buffered: bool,
    answers_continue: bool,
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
        if buffered && FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f))
            || answers_continue && name.eq_ignore_ascii_case("expect")
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        RequestHead::parse(raw.as_bytes()).unwrap()
    }

    /// Every way a request inside a tunnel can name its site, in TLS
    /// (`tls.test:443`) and plaintext (`plain.test:8080`) tunnels.
    #[test]
    fn foreign_authority_table() {
        let tls = Target::parse_authority("tls.test:443").unwrap();
        let plain = Target::parse_authority("plain.test:8080").unwrap();
        // (tunnel, default port, request, the foreign name or None when admitted)
        let cases: &[(&Target, u16, &str, Option<&str>)] = &[
            // curl and requests through CONNECT: origin-form, Host with or without the default port.
            (&tls, 443, "GET /x HTTP/1.1\r\nHost: tls.test\r\n\r\n", None),
            (
                &tls,
                443,
                "GET /x HTTP/1.1\r\nHost: tls.test:443\r\n\r\n",
                None,
            ),
            (
                &tls,
                443,
                "GET /x HTTP/1.1\r\nHost: TLS.Test.\r\n\r\n",
                None,
            ),
            (
                &plain,
                80,
                "GET /x HTTP/1.1\r\nHost: plain.test:8080\r\n\r\n",
                None,
            ),
            // Absolute-form naming the tunnel, Host agreeing.
            (
                &tls,
                443,
                "GET https://tls.test/x HTTP/1.1\r\nHost: tls.test\r\n\r\n",
                None,
            ),
            (
                &tls,
                443,
                "GET https://tls.test:443/x HTTP/1.1\r\nHost: tls.test:443\r\n\r\n",
                None,
            ),
            (
                &plain,
                80,
                "GET http://plain.test:8080/x HTTP/1.1\r\nHost: plain.test:8080\r\n\r\n",
                None,
            ),
            // HTTP/1.0 may omit Host (one is generated from the tunnel).
            (&tls, 443, "GET /x HTTP/1.0\r\n\r\n", None),
            (&tls, 443, "GET https://tls.test/x HTTP/1.0\r\n\r\n", None),
            // Fronting: the request line names the tunnel, Host another site (the reported case).
            (
                &tls,
                443,
                "GET https://tls.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
                Some("other.test"),
            ),
            (
                &plain,
                80,
                "GET http://plain.test:8080/x HTTP/1.1\r\nHost: other.test:8080\r\n\r\n",
                Some("other.test:8080"),
            ),
            (
                &tls,
                443,
                "GET https://tls.test/x HTTP/1.0\r\nHost: other.test\r\n\r\n",
                Some("other.test"),
            ),
            // ... and the other way round.
            (
                &tls,
                443,
                "GET https://other.test/x HTTP/1.1\r\nHost: tls.test\r\n\r\n",
                Some("other.test"),
            ),
            (
                &tls,
                443,
                "GET /x HTTP/1.1\r\nHost: other.test\r\n\r\n",
                Some("other.test"),
            ),
            // Same host, other port; the default port is the tunnel's scheme's.
            (
                &tls,
                443,
                "GET /x HTTP/1.1\r\nHost: tls.test:8443\r\n\r\n",
                Some("tls.test:8443"),
            ),
            (
                &tls,
                443,
                "GET /x HTTP/1.1\r\nHost: tls.test:80\r\n\r\n",
                Some("tls.test:80"),
            ),
            (
                &plain,
                80,
                "GET /x HTTP/1.1\r\nHost: plain.test\r\n\r\n",
                Some("plain.test"),
            ),
            (
                &tls,
                443,
                "GET https://tls.test:444/x HTTP/1.1\r\nHost: tls.test\r\n\r\n",
                Some("tls.test:444"),
            ),
            // Missing, empty, unparseable or userinfo-carrying names.
            (
                &tls,
                443,
                "GET /x HTTP/1.1\r\n\r\n",
                Some("(no Host header)"),
            ),
            (
                &tls,
                443,
                "GET https://tls.test/x HTTP/1.1\r\n\r\n",
                Some("(no Host header)"),
            ),
            (&tls, 443, "GET /x HTTP/1.1\r\nHost:\r\n\r\n", Some("")),
            (
                &tls,
                443,
                "GET /x HTTP/1.1\r\nHost: tls.test, other.test\r\n\r\n",
                Some("tls.test, other.test"),
            ),
            (
                &tls,
                443,
                "GET https://u@tls.test/x HTTP/1.1\r\nHost: tls.test\r\n\r\n",
                Some("u@tls.test"),
            ),
            (
                &tls,
                443,
                "GET https:///x HTTP/1.1\r\nHost: tls.test\r\n\r\n",
                Some(""),
            ),
        ];
        for (tunnel, port, raw, want) in cases {
            let req = head(raw);
            let (absolute, _) = split_target(&req.target).unwrap();
            assert_eq!(
                foreign_authority(tunnel, *port, &req, absolute).as_deref(),
                *want,
                "{raw:?}"
            );
        }
        // A non-UTF-8 Host never names the tunnel.
        let mut req = head("GET /x HTTP/1.1\r\nHost: tls.test\r\n\r\n");
        req.headers[0].1 = b"tls.test\xff".to_vec();
        assert_eq!(
            foreign_authority(&tls, 443, &req, None).as_deref(),
            Some("(invalid Host header)")
        );
    }

    #[test]
    fn split_target_table() {
        assert_eq!(split_target("/a?b"), Ok((None, "/a?b")));
        assert_eq!(split_target("https://h:1"), Ok((Some("h:1"), "/")));
        assert_eq!(split_target("HTTP://h/p?q"), Ok((Some("h"), "/p?q")));
        assert_eq!(split_target("http://h?q"), Ok((Some("h"), "?q")));
        assert_eq!(split_target("*"), Err(()));
        assert_eq!(split_target("ftp://h/"), Err(()));
        assert_eq!(split_target("h:443"), Err(()));
    }
}
