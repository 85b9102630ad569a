//! OCSF events for pipeline outcomes (facts §9.2 catalogue). One function
//! per outcome so messages stay stable; paths are query-free.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_telemetry::{
    redact_path, Action, Activity, AuditSink, Disposition, EventClass, OcsfEvent, ProcessInfo,
    Severity, Status,
};

use crate::destination::DestinationDenial;
use crate::egress::{EgressDecision, EgressIntent, Host};
use crate::metrics::{DecisionSurface, L7Protocol, L7Verdict, Metrics, Outcome, ReloadOutcome};

/// Where pipeline events go, and the metrics handle that travels with them
/// (every outcome that is audited is counted here, so both agree).
#[derive(Clone)]
pub struct Audit {
    sink: AuditSink,
    metrics: Metrics,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").finish_non_exhaustive()
    }
}

fn dst_host(host: &Host) -> String {
    match host {
        Host::Name(n) => n.to_string(),
        Host::Ip(ip) => ip.to_string(),
    }
}

fn base(
    class: EventClass,
    activity: Activity,
    intent: &EgressIntent,
    generation: u64,
) -> OcsfEvent {
    let mut e = OcsfEvent::new(class, activity)
        .src_endpoint(intent.client.ip(), intent.client.port())
        .dst_endpoint(&dst_host(&intent.target.host), intent.target.port)
        .policy_generation(generation);
    if let crate::egress::Surface::Transparent { synthetic } = intent.surface {
        e = e.unmapped("transparent.synthetic_ip", synthetic.to_string().into());
    }
    if let Some(p) = intent.identity.process() {
        e = e.actor_process(ProcessInfo {
            path: p.exe.clone(),
            pid: p.pid,
            ancestors: p.ancestors.clone(),
        });
        if let Some(n) = p.sandbox_pid {
            e = e.unmapped("sandbox_pid", n.into());
        }
    }
    e
}

fn with_creds(e: OcsfEvent, creds: &[Arc<str>]) -> OcsfEvent {
    e.unmapped("credentials_injected", (!creds.is_empty()).into())
        .unmapped(
            "credential_providers",
            creds
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .into(),
        )
}

fn denied(e: OcsfEvent) -> OcsfEvent {
    e.action(Action::Denied)
        .disposition(Disposition::Blocked)
        .severity(Severity::Medium)
        .status(Status::Failure)
}

/// A high-severity detection finding about decision `d` (its flow and actor).
fn finding_event(d: &EgressDecision) -> OcsfEvent {
    denied(base(
        EventClass::DetectionFinding,
        Activity::Create,
        &d.intent,
        d.generation(),
    ))
    .severity(Severity::High)
}

fn allowed(e: OcsfEvent) -> OcsfEvent {
    e.action(Action::Allowed)
        .disposition(Disposition::Allowed)
        .severity(Severity::Informational)
        .status(Status::Success)
}

/// One model call through `inference.local`, as audited (no bodies, no
/// credentials).
#[derive(Debug)]
pub(crate) struct InferenceCall {
    pub(crate) peer: SocketAddr,
    pub(crate) route: Arc<str>,
    pub(crate) protocol: sluice_policy::InferenceProtocol,
    pub(crate) backend: crate::egress::Target,
    /// The model as sent to the backend.
    pub(crate) model: Option<String>,
    /// The backend's status (`None`: no answer).
    pub(crate) status: Option<u16>,
    pub(crate) latency: std::time::Duration,
    /// Time to the first response byte written to the caller.
    pub(crate) first_byte: Option<std::time::Duration>,
    /// (input, output) tokens when the backend reported them.
    pub(crate) usage: (Option<u64>, Option<u64>),
    /// Response body bytes relayed to the caller.
    pub(crate) bytes: u64,
    /// Why the call failed, if it did.
    pub(crate) error: Option<String>,
}

impl Audit {
    /// Events to `sink`, metrics disabled.
    #[must_use]
    pub fn new(sink: AuditSink) -> Self {
        Self {
            sink,
            metrics: Metrics::disabled(),
        }
    }

    /// The same, counting into `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics handle (for the counters no event carries: latencies,
    /// open connections, bytes of HTTP exchanges).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The underlying sink (for flushing at shutdown).
    #[must_use]
    pub fn sink(&self) -> &AuditSink {
        &self.sink
    }

    pub fn listening(&self, addr: SocketAddr) {
        self.sink.emit(
            &OcsfEvent::new(EventClass::NetworkActivity, Activity::Listen)
                .status(Status::Success)
                .proxy_endpoint(addr.ip(), addr.port())
                .message(format!("Proxy listening on {addr}")),
        );
    }

    /// Policy DNS gave `name` the synthetic address `addr` (4003), issued for
    /// endpoint `policy`'s ports under `generation`. `suppressed`: answers
    /// not logged since the previous one (rate limit).
    #[allow(clippy::too_many_arguments)]
    pub fn dns_answered(
        &self,
        client: SocketAddr,
        name: &str,
        addr: std::net::IpAddr,
        ports: &[u16],
        policy: &str,
        generation: u64,
        suppressed: u64,
    ) {
        let mut e = allowed(
            OcsfEvent::new(EventClass::DnsActivity, Activity::Traffic)
                .src_endpoint(client.ip(), client.port())
                .dst_endpoint(name, ports.first().copied().unwrap_or(0))
                .policy_generation(generation),
        )
        .firewall_rule(policy, "policy-dns")
        .message(format!("DNS answered {name} -> {addr} (synthetic)"))
        .unmapped("dns.query", name.into())
        .unmapped("transparent.synthetic_ip", addr.to_string().into())
        .unmapped(
            "transparent.ports",
            ports.iter().map(|p| serde_json::Value::from(*p)).collect(),
        );
        if suppressed > 0 {
            e = e.unmapped("dns.answers_not_logged", suppressed.into());
        }
        self.sink.emit(&e);
    }

    /// A connection captured on its way to a synthetic address that no live
    /// mapping covers (`reason`: `transparent_tcp_port_mismatch`,
    /// `transparent_mapping_expired`, `transparent_mapping_unknown`, ...):
    /// reset without a decision.
    pub fn transparent_refused(
        &self,
        client: SocketAddr,
        dialled: SocketAddr,
        name: Option<&str>,
        reason: &str,
    ) {
        let host = name.map_or_else(|| dialled.ip().to_string(), str::to_owned);
        self.sink.emit(
            &denied(
                OcsfEvent::new(EventClass::NetworkActivity, Activity::Refuse)
                    .src_endpoint(client.ip(), client.port())
                    .dst_endpoint(&host, dialled.port()),
            )
            .firewall_rule("-", "policy-dns")
            .message(format!(
                "TRANSPARENT refused {host}:{} via {dialled}",
                dialled.port()
            ))
            .status_detail(reason)
            .unmapped("transparent.synthetic_ip", dialled.ip().to_string().into()),
        );
    }

    /// A policy generation went into force (5019). `capabilities`: what the runtime
    /// mode declared it enforces (`unmapped.runtime_mode`, `unmapped.capabilities`).
    pub fn policy_loaded(
        &self,
        generation: u64,
        source: &str,
        identity_mode: &str,
        capabilities: Option<&sluice_policy::Capabilities>,
    ) {
        self.metrics.policy_generation(generation);
        let mut event = OcsfEvent::new(EventClass::DeviceConfigStateChange, Activity::Log)
            .status(Status::Success)
            .message(format!(
                "Policy loaded: generation {generation} from {source}"
            ))
            .policy_generation(generation)
            .unmapped("identity_mode", identity_mode.into());
        if let Some(caps) = capabilities {
            event = event
                .unmapped("runtime_mode", caps.mode.as_str().into())
                .unmapped("capabilities", caps.names().into());
        }
        self.sink.emit(&event);
    }

    /// A reload refused (invalid file or a failed reload check): counted as
    /// a refused reload.
    pub fn policy_rejected(&self, kept_generation: u64, source: &str, errors: &str) {
        self.metrics.policy_reload(ReloadOutcome::Refused);
        self.sink.emit(
            &OcsfEvent::new(EventClass::DeviceConfigStateChange, Activity::Log)
                .status(Status::Failure)
                .severity(Severity::Medium)
                .message(format!(
                    "Policy reload rejected for {source}; keeping generation {kept_generation}"
                ))
                .status_detail(errors)
                .policy_generation(kept_generation),
        );
    }

    pub fn connect_denied(&self, d: &EgressDecision) {
        let t = &d.intent.target;
        self.sink.emit(
            &denied(base(
                EventClass::NetworkActivity,
                Activity::Open,
                &d.intent,
                d.generation(),
            ))
            .firewall_rule("-", "opa")
            .message(format!("{} denied {t}", d.intent.surface.label()))
            .status_detail(d.deny_reason()),
        );
    }

    pub fn destination_denied(
        &self,
        d: &EgressDecision,
        denial: &DestinationDenial,
        method: Option<(&str, &str)>,
    ) {
        let t = &d.intent.target;
        let (class, message) = match method {
            None => (
                EventClass::NetworkActivity,
                format!(
                    "{} blocked: {} for {t}",
                    d.intent.surface.label(),
                    denial.client_detail()
                ),
            ),
            Some(_) => (
                EventClass::HttpActivity,
                format!("FORWARD blocked: {} for {t}", denial.client_detail()),
            ),
        };
        let activity = if class == EventClass::NetworkActivity {
            Activity::Open
        } else {
            Activity::Other
        };
        let mut e = denied(base(class, activity, &d.intent, d.generation()))
            .firewall_rule(d.policy_key(), "ssrf")
            .message(message)
            .status_detail(&denial.status_detail);
        if let Some((m, path)) = method {
            e = e.http_request(
                m,
                "http",
                dst_host(&t.host),
                &redact_path(&sluice_policy::placeholder::scrub(path)),
                t.port,
            );
        }
        self.sink.emit(&e);
    }

    /// One request-level decision (4002): `L7_REQUEST` inside a tunnel,
    /// `FORWARD_L7` on the forward proxy.
    pub fn l7_request(
        &self,
        d: &EgressDecision,
        word: &str,
        method: &str,
        path: &str,
        reason: &str,
    ) {
        self.l7_request_with(d, word, method, path, reason, &[]);
    }

    /// [`Self::l7_request`] with the providers whose credentials were injected.
    pub fn l7_request_with(
        &self,
        d: &EgressDecision,
        word: &str,
        method: &str,
        path: &str,
        reason: &str,
        creds: &[Arc<str>],
    ) {
        let verdict = match word {
            "allow" => Some(L7Verdict::Allow),
            "deny" => Some(L7Verdict::Deny),
            "audit" => Some(L7Verdict::Audit),
            _ => None,
        };
        if let Some(v) = verdict {
            let protocol = d
                .permit()
                .map_or(L7Protocol::Other, |p| L7Protocol::of(p.protocol));
            self.metrics.l7_verdict(protocol, v);
        }
        let t = &d.intent.target;
        let path = redact_path(&sluice_policy::placeholder::scrub(path));
        let label = if d.intent.surface.is_tunnel() {
            "L7_REQUEST"
        } else {
            "FORWARD_L7"
        };
        let e = base(
            EventClass::HttpActivity,
            Activity::Other,
            &d.intent,
            d.generation(),
        )
        .firewall_rule(d.policy_key(), "l7")
        .http_request(method, "http", dst_host(&t.host), &path, t.port)
        .message(format!("{label} {word} {method} {t}{path} reason={reason}"));
        let e = if word == "deny" {
            denied(e)
        } else {
            with_creds(allowed(e), creds)
        };
        self.sink.emit(&e);
    }

    /// A plain HTTP request inside a tunnel to an endpoint without request-level rules.
    pub fn tunnel_http_request(
        &self,
        d: &EgressDecision,
        method: &str,
        path: &str,
        status: u16,
        request_num: u64,
        creds: &[Arc<str>],
    ) {
        let t = &d.intent.target;
        let path = redact_path(&sluice_policy::placeholder::scrub(path));
        let e = allowed(base(
            EventClass::HttpActivity,
            Activity::Other,
            &d.intent,
            d.generation(),
        ))
        .firewall_rule(d.policy_key(), "opa")
        .http_request(method, "http", dst_host(&t.host), &path, t.port)
        .http_status(status)
        .message(format!(
            "HTTP_REQUEST {method} {t}{path} credentials_injected={} request_num={request_num}",
            !creds.is_empty()
        ));
        self.sink.emit(&with_creds(e, creds));
    }

    /// The request's authority differs from the tunnel's authorized endpoint: event + finding.
    pub fn authority_mismatch(&self, d: &EgressDecision, seen: &str) {
        let t = &d.intent.target;
        self.sink.emit(
            &denied(base(
                EventClass::HttpActivity,
                Activity::Fail,
                &d.intent,
                d.generation(),
            ))
            .severity(Severity::High)
            .firewall_rule(d.policy_key(), "request-authority")
            .message(format!(
                "HTTP request authority does not match authorized tunnel endpoint {t}"
            ))
            .status_detail(format!("request_authority_mismatch: request named {seen}")),
        );
        self.sink.emit(&finding_event(d).finding(
            "sluice.http.request_authority_mismatch",
            "HTTP request authority mismatch",
            "send requests only for the host:port the tunnel was opened to",
            [
                ("authorized", t.to_string()),
                ("requested", seen.to_owned()),
            ],
        ));
    }

    /// One message of a native protocol session (Redis command, SQL
    /// statement) decided by its processor: every denial, and every allowed
    /// message under `enforcement: audit` (`audit_only`: denied by policy but
    /// forwarded). `verdict.summary` carries the command or statement kind and
    /// tables, never values.
    pub fn processor_message(
        &self,
        d: &EgressDecision,
        protocol: &str,
        verdict: &sluice_policy::request::ProtocolVerdict,
        audit_only: bool,
    ) {
        let t = &d.intent.target;
        let (word, counted) = match (verdict.allowed, audit_only) {
            (true, _) => ("allow", L7Verdict::Allow),
            (false, true) => ("audit", L7Verdict::Audit),
            (false, false) => ("deny", L7Verdict::Deny),
        };
        let counted_protocol = match protocol {
            "redis" => L7Protocol::Redis,
            "postgres" => L7Protocol::Postgres,
            _ => L7Protocol::Other,
        };
        self.metrics.l7_verdict(counted_protocol, counted);
        let mut e = base(
            EventClass::NetworkActivity,
            Activity::Traffic,
            &d.intent,
            d.generation(),
        )
        .firewall_rule(d.policy_key(), protocol)
        .message(format!(
            "{} {word} {t} {}",
            protocol.to_ascii_uppercase(),
            verdict.summary
        ))
        .unmapped("processor.protocol", protocol.into())
        .unmapped("processor.summary", verdict.summary.clone().into());
        if let Some(rule) = &verdict.rule {
            e = e.unmapped("processor.rule", rule.clone().into());
        }
        let e = if verdict.allowed || audit_only {
            allowed(e)
        } else {
            denied(e).status_detail(&verdict.reason)
        };
        self.sink.emit(&e);
    }

    /// One middleware stage's outcome for a request (4002; plus a 2004
    /// finding when it failed or reported findings). Never the body, never
    /// the stage's free-form reason.
    pub(crate) fn middleware_stage(
        &self,
        d: &EgressDecision,
        method: &str,
        path: &str,
        r: &StageReport,
    ) {
        // A stage skipped before it ran (body over its limit) took no time.
        if r.failure != Some("payload_too_large") {
            self.metrics.middleware(r.latency);
        }
        let t = &d.intent.target;
        let path = redact_path(&sluice_policy::placeholder::scrub(path));
        let e = base(
            EventClass::HttpActivity,
            Activity::Other,
            &d.intent,
            d.generation(),
        )
        .firewall_rule(&*r.key, "middleware")
        .http_request(method, "http", dst_host(&t.host), &path, t.port)
        .message(format!(
            "MIDDLEWARE {} {} {method} {t}{path} middleware={}",
            r.key, r.outcome, r.middleware
        ))
        .unmapped("middleware.key", r.key.to_string().into())
        .unmapped("middleware.name", r.middleware.to_string().into())
        .unmapped("middleware.decision", r.outcome.into())
        .unmapped(
            "middleware.latency_ms",
            serde_json::Value::from(r.latency.as_secs_f64() * 1000.0),
        );
        let e = match &r.reason_code {
            Some(code) => e.unmapped("middleware.reason_code", code.clone().into()),
            None => e,
        };
        let e = match r.failure {
            Some(kind) => e.unmapped("middleware.failure", kind.into()),
            None => e,
        };
        let e = match r.outcome {
            "deny" | "failed" => denied(e).status_detail(format!(
                "middleware_{}: {}",
                if r.outcome == "deny" {
                    "denied"
                } else {
                    "failed"
                },
                r.key
            )),
            _ => allowed(e),
        };
        self.sink.emit(&e);
        if r.failure.is_some() || !r.findings.is_empty() {
            // A registered service's type/label texts are its own: only
            // built-ins (ours) are quoted; for services, the count.
            let summary: Vec<String> = if r.middleware.starts_with("sluice/") {
                r.findings
                    .iter()
                    .take(8)
                    .map(|f| format!("{}:{}x{}", f.kind, f.label, f.count))
                    .collect()
            } else {
                vec![format!("{} findings", r.findings.len())]
            };
            self.sink.emit(&finding_event(d).finding(
                "sluice.middleware",
                if r.failure.is_some() {
                    "Middleware stage failed"
                } else {
                    "Middleware stage reported findings"
                },
                "see the middleware service's own logs",
                [
                    ("middleware", r.key.to_string()),
                    ("outcome", r.outcome.to_owned()),
                    ("failure", r.failure.unwrap_or("-").to_owned()),
                    ("findings", summary.join(" ")),
                ],
            ));
        }
    }

    /// A tunnel's bytes were refused before any request policy (parse error, unsupported protocol).
    pub fn tunnel_rejected(&self, d: &EgressDecision, message: String, detail: String) {
        self.sink.emit(
            &denied(base(
                EventClass::NetworkActivity,
                Activity::Open,
                &d.intent,
                d.generation(),
            ))
            .firewall_rule(d.policy_key(), "l7")
            .message(message)
            .status_detail(detail),
        );
    }

    /// A route whose request-level rules this build cannot evaluate was refused.
    pub fn l7_unavailable(&self, d: &EgressDecision, protocol: &str) {
        let t = &d.intent.target;
        let (class, activity) = if d.intent.surface.is_tunnel() {
            (EventClass::NetworkActivity, Activity::Open)
        } else {
            (EventClass::HttpActivity, Activity::Other)
        };
        self.sink.emit(
            &denied(base(class, activity, &d.intent, d.generation()))
                .severity(Severity::High)
                .firewall_rule(d.policy_key(), "l7")
                .message(format!(
                    "{} refused for {t}: request-level policy ({protocol}) cannot be enforced by this build",
                    d.intent.surface.label()
                )),
        );
    }

    /// `inspected`: request-level policy follows (`CONNECT_L7`).
    pub fn connect_allowed(&self, d: &EgressDecision, inspected: bool) {
        let t = &d.intent.target;
        self.sink.emit(
            &allowed(base(
                EventClass::NetworkActivity,
                Activity::Open,
                &d.intent,
                d.generation(),
            ))
            .firewall_rule(d.policy_key(), "opa")
            .message(format!(
                "{}{} allowed {t}",
                d.intent.surface.label(),
                if inspected { "_L7" } else { "" }
            )),
        );
    }

    /// A tunnel ended after moving `to_upstream` and `to_client` bytes.
    pub fn tunnel_closed(
        &self,
        d: &EgressDecision,
        to_upstream: u64,
        to_client: u64,
        reason: &str,
    ) {
        self.metrics.relayed(to_upstream, to_client);
        let t = &d.intent.target;
        self.sink.emit(
            &base(
                EventClass::NetworkActivity,
                Activity::Close,
                &d.intent,
                d.generation(),
            )
            .severity(Severity::Informational)
            .firewall_rule(d.policy_key(), "opa")
            .message(format!("{} closed {t}: {reason}", d.intent.surface.label()))
            .unmapped("bytes_to_upstream", to_upstream.into())
            .unmapped("bytes_to_client", to_client.into()),
        );
    }

    pub fn upstream_unreachable(&self, d: &EgressDecision, err: &dyn std::fmt::Display) {
        let t = &d.intent.target;
        let label = d.intent.surface.label();
        let class = if d.intent.surface.is_tunnel() {
            EventClass::NetworkActivity
        } else {
            EventClass::HttpActivity
        };
        self.sink.emit(
            &base(class, Activity::Fail, &d.intent, d.generation())
                .severity(Severity::Low)
                .status(Status::Failure)
                .firewall_rule(d.policy_key(), "opa")
                .message(format!("{label} upstream connect failed for {t}: {err}")),
        );
    }

    /// A placeholder for a credential not bound to this request (event + finding).
    pub fn credential_denied(&self, d: &EgressDecision, credential: &str) {
        let t = &d.intent.target;
        self.sink.emit(
            &denied(base(
                EventClass::HttpActivity,
                Activity::Fail,
                &d.intent,
                d.generation(),
            ))
            .severity(Severity::High)
            .firewall_rule(d.policy_key(), "credential-binding")
            .message(format!(
                "Credential use denied: credential is not authorized for {t}"
            ))
            .status_detail(format!(
                "credential_endpoint_mismatch: credential {credential}"
            )),
        );
        self.sink.emit(&finding_event(d).finding(
            "sluice.provider_credential.endpoint_mismatch",
            "Credential placeholder sent to an unbound endpoint",
            "bind the provider to this endpoint, or stop sending its placeholder here",
            [
                ("credential", credential.to_owned()),
                ("endpoint", t.to_string()),
            ],
        ));
    }

    /// SigV4 re-signing (`credential_signing`) refused a request: `code` is
    /// the response's error code, `provider` the one that would have signed
    /// (when known). Never a key, secret, token or signature.
    pub fn credential_signing_refused(
        &self,
        d: &EgressDecision,
        provider: Option<&str>,
        code: &str,
        detail: &str,
    ) {
        let t = &d.intent.target;
        let mut e = denied(base(
            EventClass::HttpActivity,
            Activity::Fail,
            &d.intent,
            d.generation(),
        ))
        .firewall_rule(d.policy_key(), "credential-signing")
        .message(format!("Credential signing refused for {t}"))
        .status_detail(format!("{code}: {detail}"));
        if let Some(p) = provider {
            e = e.unmapped("provider", p.into());
        }
        self.sink.emit(&e);
    }

    /// A token grant for `provider` succeeded (`error` = None) or failed.
    pub fn token_grant(&self, d: &EgressDecision, provider: &str, error: Option<&str>) {
        let t = &d.intent.target;
        let e = base(
            EventClass::HttpActivity,
            Activity::Other,
            &d.intent,
            d.generation(),
        )
        .firewall_rule(d.policy_key(), "token-grant")
        .unmapped("provider", provider.into());
        let e = match error {
            None => e
                .severity(Severity::Informational)
                .status(Status::Success)
                .message(format!("Token grant successful for {provider} to {t}")),
            Some(err) => denied(e)
                .message(format!("Token grant failed for {provider} to {t}"))
                .status_detail(err),
        };
        self.sink.emit(&e);
    }

    /// An admitted exchange broke after the upstream was opened.
    pub fn exchange_failed(&self, d: &EgressDecision, method: &str, path: &str, detail: &str) {
        let t = &d.intent.target;
        let path = redact_path(&sluice_policy::placeholder::scrub(path));
        self.sink.emit(
            &base(
                EventClass::HttpActivity,
                Activity::Fail,
                &d.intent,
                d.generation(),
            )
            .severity(Severity::Low)
            .status(Status::Failure)
            .firewall_rule(d.policy_key(), "opa")
            .http_request(method, "http", dst_host(&t.host), &path, t.port)
            .message(format!(
                "{} exchange failed for {method} {t}{path}",
                d.intent.surface.label()
            ))
            .status_detail(detail),
        );
    }

    pub fn forward_denied(&self, d: &EgressDecision, method: &str, path: &str) {
        let t = &d.intent.target;
        let path = redact_path(&sluice_policy::placeholder::scrub(path));
        self.sink.emit(
            &denied(base(
                EventClass::HttpActivity,
                Activity::Other,
                &d.intent,
                d.generation(),
            ))
            .firewall_rule("-", "opa")
            .http_request(method, "http", dst_host(&t.host), &path, t.port)
            .message(format!("FORWARD denied {method} {t}{path}"))
            .status_detail(d.deny_reason()),
        );
    }

    pub fn forward_allowed(
        &self,
        d: &EgressDecision,
        method: &str,
        path: &str,
        status: u16,
        creds: &[Arc<str>],
    ) {
        let t = &d.intent.target;
        let path = redact_path(&sluice_policy::placeholder::scrub(path));
        self.sink.emit(
            &allowed(base(
                EventClass::HttpActivity,
                Activity::Other,
                &d.intent,
                d.generation(),
            ))
            .firewall_rule(d.policy_key(), "opa")
            .http_request(method, "http", dst_host(&t.host), &path, t.port)
            .http_status(status)
            .message(format!("FORWARD allowed {method} {t}{path}"))
            .unmapped("credentials_injected", (!creds.is_empty()).into())
            .unmapped(
                "credential_providers",
                creds
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .into(),
            ),
        );
    }

    /// One request to a metadata loopback (`service`: `gce` | `aws`), served
    /// inside the sandbox: the query-free path and the answer. Allowed when it
    /// was answered `2xx`. The body (placeholders only) is never recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn metadata_request(
        &self,
        client: SocketAddr,
        local: SocketAddr,
        service: &str,
        method: &str,
        path: &str,
        status: u16,
        reason: &str,
        generation: u64,
    ) {
        let ok = (200..300).contains(&status);
        let outcome = if ok { Outcome::Allow } else { Outcome::Deny };
        self.metrics
            .decision(DecisionSurface::Metadata, outcome, None);
        let path = redact_path(&sluice_policy::placeholder::scrub(path));
        let method: String = method.chars().take(16).collect();
        let host = local.ip().to_string();
        let e = OcsfEvent::new(EventClass::HttpActivity, Activity::Other)
            .src_endpoint(client.ip(), client.port())
            .dst_endpoint(&host, local.port())
            .policy_generation(generation)
            .firewall_rule(format!("metadata-{service}"), "metadata")
            .http_request(method.as_str(), "http", host.as_str(), &path, local.port())
            .http_status(status)
            .message(format!("METADATA {service} {method} {path} -> {status}"))
            .unmapped("metadata.service", service.into());
        let e = if ok {
            allowed(e)
        } else {
            denied(e).severity(Severity::Low).status_detail(reason)
        };
        self.sink.emit(&e);
    }

    /// A client message refused before policy (bad head, bad target, scheme).
    pub fn request_rejected(
        &self,
        class: EventClass,
        client: SocketAddr,
        activity: Activity,
        message: String,
        detail: String,
    ) {
        self.sink.emit(
            &OcsfEvent::new(class, activity)
                .src_endpoint(client.ip(), client.port())
                .severity(if activity == Activity::Refuse {
                    Severity::Informational
                } else {
                    Severity::Low
                })
                .status(Status::Failure)
                .action(Action::Denied)
                .disposition(Disposition::Rejected)
                .message(message)
                .status_detail(detail),
        );
    }

    /// A tunnel closed because a new policy generation no longer allows it.
    pub fn tunnel_revoked(&self, d: &EgressDecision, new_generation: u64, reason: &str) {
        let t = &d.intent.target;
        self.sink.emit(
            &denied(base(EventClass::NetworkActivity, Activity::Close, &d.intent, new_generation))
                .firewall_rule(d.policy_key(), "opa")
                .message(format!("CONNECT tunnel closed after policy reload [generation {} -> {new_generation}] for {t}", d.generation()))
                .status_detail(reason),
        );
    }
}

/// What one middleware stage did to a request or message, for its event.
#[derive(Clone, Debug)]
pub(crate) struct StageReport {
    /// The policy's map key.
    pub(crate) key: Arc<str>,
    /// The implementation name.
    pub(crate) middleware: Arc<str>,
    /// `allow`, `deny`, `mutate`, `skipped` (fail_open after a failure) or
    /// `failed` (fail_closed).
    pub(crate) outcome: &'static str,
    pub(crate) reason_code: Option<String>,
    /// The failure kind (`timeout`, `unavailable`, ...), for failures.
    pub(crate) failure: Option<&'static str>,
    pub(crate) latency: std::time::Duration,
    /// Audit-safe findings, never request content.
    pub(crate) findings: Vec<StageFinding>,
}

/// One finding of a stage: its type, label and count.
#[derive(Clone, Debug)]
pub(crate) struct StageFinding {
    pub(crate) kind: String,
    pub(crate) label: String,
    pub(crate) count: u32,
}

impl Audit {
    /// One model call (API Activity 6003): model, route (as provider),
    /// latency and token counts.
    pub(crate) fn inference_call(&self, c: &InferenceCall) {
        self.metrics
            .decision(DecisionSurface::Inference, Outcome::Allow, None);
        let model = c.model.as_deref().unwrap_or("unknown");
        let tokens = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let ok = c.error.is_none() && c.status.is_some_and(|s| s < 400);
        let mut e = OcsfEvent::new(EventClass::ApiActivity, Activity::Create)
            .src_endpoint(c.peer.ip(), c.peer.port())
            .dst_endpoint(&dst_host(&c.backend.host), c.backend.port)
            .ai_model(model, c.route.as_ref())
            .status(if ok { Status::Success } else { Status::Failure })
            .severity(if ok {
                Severity::Informational
            } else {
                Severity::Low
            })
            .message(format!(
                "Model call: {model} via {} ({}in, {}out)",
                c.route,
                tokens(c.usage.0),
                tokens(c.usage.1)
            ))
            .unmapped("inference_protocol", c.protocol.as_str().into())
            .unmapped(
                "latency_ms",
                u64::try_from(c.latency.as_millis())
                    .unwrap_or(u64::MAX)
                    .into(),
            );
        if let Some(s) = c.status {
            e = e.http_status(s);
        }
        if let Some(t) = c.first_byte {
            e = e.unmapped(
                "ttfb_ms",
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX).into(),
            );
        }
        e = e.unmapped("response_bytes", c.bytes.into());
        if let Some(n) = c.usage.0 {
            e = e.unmapped("input_tokens", n.into());
        }
        if let Some(n) = c.usage.1 {
            e = e.unmapped("output_tokens", n.into());
        }
        if let Some(err) = &c.error {
            e = e.status_detail(err.clone());
        }
        self.sink.emit(&e);
    }

    /// A request to `inference.local` refused before any backend was
    /// contacted (Network Activity, open refused).
    pub(crate) fn inference_denied(&self, peer: SocketAddr, reason: &str) {
        self.metrics
            .decision(DecisionSurface::Inference, Outcome::Deny, None);
        self.sink.emit(
            &denied(
                OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
                    .src_endpoint(peer.ip(), peer.port())
                    .dst_endpoint("inference.local", 443),
            )
            .message(format!("Inference interception denied: {reason}"))
            .status_detail(reason.to_owned()),
        );
    }

    /// A step of the proposal loop (Device Config State Change 5019):
    /// `what` is PROPOSED, APPROVED, REJECTED, APPLIED or APPLY_FAILED.
    pub fn proposal_event(
        &self,
        what: &str,
        id: &str,
        actor: &str,
        rules: Option<&str>,
        reason: Option<&str>,
    ) {
        let failed = what == "APPLY_FAILED";
        let mut e = OcsfEvent::new(EventClass::DeviceConfigStateChange, Activity::Other)
            .status(if failed {
                Status::Failure
            } else {
                Status::Success
            })
            .severity(if failed {
                Severity::Medium
            } else {
                Severity::Informational
            })
            .message(format!(
                "CONFIG {what} proposal {id} ({}) by {actor}",
                rules.unwrap_or("-")
            ))
            .unmapped("proposal_id", id.into())
            .unmapped("actor", actor.into());
        if let Some(r) = reason {
            e = e.status_detail(r.to_owned());
        }
        self.sink.emit(&e);
    }
}
