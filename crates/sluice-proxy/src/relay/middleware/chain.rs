//! The HTTP request chain (`HTTP_REQUEST` / `PRE_CREDENTIALS`): the
//! selected stages in `order`, each seeing the request as the previous one
//! left it. A stage's DENY ends the chain whatever `on_error` says; a
//! failure (unavailable, timeout, invalid result, payload over its limit)
//! ends it under `fail_closed` and skips that stage under `fail_open`. Every
//! result is checked against the contract before anything of it applies,
//! and a stage's mutations apply all together or not at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_policy::placeholder;

use super::proto;
use super::runtime::PlannedStage;
use super::stage::{StageError, PLATFORM_MAX_PAYLOAD};

/// The whole chain may take this long, whatever the stages' own timeouts.
pub(crate) const CHAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Findings accepted from one stage.
pub(crate) const MAX_FINDINGS: usize = 32;
/// Encoded size of one finding.
const MAX_FINDING_BYTES: usize = 4 * 1024;
/// Metadata entries and bytes accepted from one stage.
const MAX_METADATA_ENTRIES: usize = 64;
const MAX_METADATA_BYTES: usize = 32 * 1024;
/// Header mutations accepted from one stage, and their name+value bytes.
const MAX_MUTATIONS: usize = 64;
const MAX_MUTATION_BYTES: usize = 32 * 1024;
/// Headers given to a stage: lines and bytes.
const MAX_HEADER_LINES: usize = 128;
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The prefix of the only header names a stage may write.
const WRITABLE_PREFIX: &str = "x-openshell-middleware-";

/// Headers a stage never sees and never changes: credentials, routing,
/// framing and hop-by-hop fields.
fn protected(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "proxy-authenticate",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
    ];
    let lower = name.to_ascii_lowercase();
    NAMES.contains(&lower.as_str())
        || lower.starts_with("x-amz-")
        || lower.starts_with("x-openshell-credential")
}

/// The request as the stages see and change it.
#[derive(Clone, Debug)]
pub(crate) struct ChainRequest {
    pub(crate) scheme: &'static str,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) method: String,
    /// Without the query.
    pub(crate) path: String,
    /// Raw, without `?`.
    pub(crate) query: String,
    /// Every header in wire order, names as sent.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

impl ChainRequest {
    /// The names the `Connection` header nominates (hidden like hop-by-hop).
    fn nominated(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The headers a stage may see: lower-case names, trimmed values, in
    /// wire order; protected, nominated and non-UTF-8 fields left out;
    /// bounded in lines and bytes.
    fn visible_headers(&self) -> Vec<proto::HttpHeader> {
        let nominated = self.nominated();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if protected(&lower) || nominated.contains(&lower) {
                continue;
            }
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            let value = value.trim();
            bytes += lower.len() + value.len();
            if out.len() == MAX_HEADER_LINES || bytes > MAX_HEADER_BYTES {
                break;
            }
            out.push(proto::HttpHeader {
                name: lower,
                value: value.to_owned(),
            });
        }
        out
    }
}

pub(crate) use crate::audit::{StageFinding, StageReport};

/// A stage's findings as events carry them (type, label, count).
pub(crate) fn summarize(findings: &[proto::Finding]) -> Vec<StageFinding> {
    findings
        .iter()
        .map(|f| StageFinding {
            kind: f.r#type.clone(),
            label: f.label.clone(),
            count: f.count,
        })
        .collect()
}

/// How the chain ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChainEnd {
    /// Forward the request as the stages left it.
    Continue {
        headers_changed: bool,
        body_changed: bool,
    },
    /// A stage denied: `key` and its `reason_code`.
    Denied {
        key: Arc<str>,
        reason_code: Option<String>,
    },
    /// A `fail_closed` stage failed.
    Failed { key: Arc<str> },
}

/// Runs `stages` (already selected for this host, in order) over `req`.
pub(crate) async fn run(
    stages: &[&PlannedStage],
    context: &proto::RequestContext,
    req: &mut ChainRequest,
    reports: &mut Vec<StageReport>,
) -> ChainEnd {
    let deadline = Instant::now() + CHAIN_DEADLINE;
    let (mut headers_changed, mut body_changed) = (false, false);
    for stage in stages {
        let Some(http) = &stage.http else { continue };
        let started = Instant::now();
        let result = call(http.as_ref(), stage, context, req, deadline).await;
        let mut report = StageReport {
            key: Arc::clone(&stage.key),
            middleware: Arc::clone(&stage.middleware),
            outcome: "allow",
            reason_code: None,
            failure: None,
            latency: started.elapsed(),
            findings: Vec::new(),
        };
        let checked = result.and_then(|r| check(r, req, http.max_payload()));
        match checked {
            Ok(Checked::Deny {
                reason_code,
                findings,
            }) => {
                report.outcome = "deny";
                report.reason_code.clone_from(&reason_code);
                report.findings = summarize(&findings);
                reports.push(report);
                return ChainEnd::Denied {
                    key: Arc::clone(&stage.key),
                    reason_code,
                };
            }
            Ok(Checked::Allow {
                headers,
                body,
                findings,
            }) => {
                report.findings = summarize(&findings);
                if let Some(h) = headers {
                    req.headers = h;
                    headers_changed = true;
                    report.outcome = "mutate";
                }
                if let Some(b) = body {
                    req.body = b;
                    body_changed = true;
                    report.outcome = "mutate";
                }
                reports.push(report);
            }
            Err(e) => {
                tracing::debug!(middleware = %stage.key, error = %e, "Middleware stage failed");
                report.failure = Some(e.kind());
                if stage.fail_open {
                    report.outcome = "skipped";
                    reports.push(report);
                } else {
                    report.outcome = "failed";
                    reports.push(report);
                    return ChainEnd::Failed {
                        key: Arc::clone(&stage.key),
                    };
                }
            }
        }
    }
    ChainEnd::Continue {
        headers_changed,
        body_changed,
    }
}

async fn call(
    http: &dyn super::stage::HttpStage,
    stage: &PlannedStage,
    context: &proto::RequestContext,
    req: &ChainRequest,
    deadline: Instant,
) -> Result<proto::HttpRequestResult, StageError> {
    let limit = http.max_payload().min(PLATFORM_MAX_PAYLOAD);
    if req.body.len() > limit {
        return Err(StageError::TooLarge {
            size: req.body.len(),
            limit,
        });
    }
    let eval = proto::HttpRequestEvaluation {
        phase: proto::SupervisorMiddlewarePhase::PreCredentials.into(),
        context: Some(context.clone()),
        config: Some((*stage.config).clone()),
        target: Some(proto::HttpRequestTarget {
            scheme: req.scheme.to_owned(),
            host: req.host.clone(),
            port: u32::from(req.port),
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
        }),
        headers: req.visible_headers(),
        body: req.body.clone(),
        middleware_name: stage.middleware.to_string(),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, http.evaluate(eval)).await {
        Ok(r) => r,
        Err(_) => Err(StageError::Timeout(CHAIN_DEADLINE)),
    }
}

/// A result that passed every check.
enum Checked {
    Deny {
        reason_code: Option<String>,
        findings: Vec<proto::Finding>,
    },
    /// `headers`/`body`: the request's new state, when the stage changed it.
    Allow {
        headers: Option<Vec<(String, Vec<u8>)>>,
        body: Option<Vec<u8>>,
        findings: Vec<proto::Finding>,
    },
}

/// `[a-z][a-z0-9_]*`, 1-64 bytes.
pub(crate) fn valid_reason_code(code: &str) -> bool {
    let b = code.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn invalid(detail: impl Into<String>) -> StageError {
    StageError::Invalid(detail.into())
}

/// Checks `r` against the contract and computes what it does to `req`.
fn check(
    r: proto::HttpRequestResult,
    req: &ChainRequest,
    max_payload: usize,
) -> Result<Checked, StageError> {
    let reason_code = match r.reason_code.as_str() {
        "" => None,
        c if valid_reason_code(c) => Some(c.to_owned()),
        _ => {
            return Err(invalid(
                "reason_code must match [a-z][a-z0-9_]* (1-64 bytes)",
            ))
        }
    };
    if r.findings.len() > MAX_FINDINGS {
        return Err(invalid(format!("more than {MAX_FINDINGS} findings")));
    }
    if r.findings
        .iter()
        .any(|f| prost::Message::encoded_len(f) > MAX_FINDING_BYTES)
    {
        return Err(invalid("a finding over 4 KiB"));
    }
    let metadata_bytes: usize = r.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if r.metadata.len() > MAX_METADATA_ENTRIES || metadata_bytes > MAX_METADATA_BYTES {
        return Err(invalid("metadata over 64 entries or 32 KiB"));
    }
    let findings = r.findings;
    match proto::Decision::try_from(r.decision) {
        Ok(proto::Decision::Deny) => {
            return Ok(Checked::Deny {
                reason_code,
                findings,
            })
        }
        Ok(proto::Decision::Allow) => {}
        _ => return Err(invalid("decision is neither ALLOW nor DENY")),
    }
    let headers = if r.header_mutations.is_empty() {
        None
    } else {
        Some(apply_mutations(&r.header_mutations, req)?)
    };
    let body = if r.has_body {
        if r.body.len() > max_payload.min(PLATFORM_MAX_PAYLOAD) {
            return Err(invalid("replacement body over the stage limit"));
        }
        // A stage must not introduce credential placeholders (it would get
        // a secret injected where the sandbox never asked for one).
        if placeholder::find(&r.body).count() > placeholder::find(&req.body).count() {
            return Err(invalid(
                "replacement body introduces a credential placeholder",
            ));
        }
        Some(r.body)
    } else {
        None
    };
    Ok(Checked::Allow {
        headers,
        body,
        findings,
    })
}

/// The request's headers after `mutations`, all or nothing.
fn apply_mutations(
    mutations: &[proto::HeaderMutation],
    req: &ChainRequest,
) -> Result<Vec<(String, Vec<u8>)>, StageError> {
    use proto::header_mutation::Operation;
    if mutations.len() > MAX_MUTATIONS {
        return Err(invalid(format!(
            "more than {MAX_MUTATIONS} header mutations"
        )));
    }
    let nominated = req.nominated();
    let mut headers = req.headers.clone();
    let mut bytes = 0usize;
    for m in mutations {
        match &m.operation {
            Some(Operation::Write(w)) => {
                let name = w.name.to_ascii_lowercase();
                bytes += name.len() + w.value.len();
                if !name.starts_with(WRITABLE_PREFIX)
                    || name.len() == WRITABLE_PREFIX.len()
                    || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(invalid(format!(
                        "header writes are limited to {WRITABLE_PREFIX}* names (got {name:?})"
                    )));
                }
                if w.value
                    .bytes()
                    .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
                {
                    return Err(invalid("header value with a control character"));
                }
                if placeholder::contains_marker(w.value.as_bytes()) {
                    return Err(invalid("header value introduces a credential placeholder"));
                }
                let exists = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name));
                match proto::ExistingHeaderAction::try_from(w.on_existing) {
                    Ok(proto::ExistingHeaderAction::Append) => {}
                    Ok(proto::ExistingHeaderAction::Overwrite) => {
                        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                    }
                    Ok(proto::ExistingHeaderAction::Skip) if exists => continue,
                    Ok(proto::ExistingHeaderAction::Skip) => {}
                    _ => return Err(invalid("header write without on_existing")),
                }
                headers.push((name, w.value.clone().into_bytes()));
            }
            Some(Operation::Remove(r)) => {
                let name = r.name.to_ascii_lowercase();
                bytes += name.len();
                if protected(&name) || nominated.contains(&name) {
                    return Err(invalid(format!("header {name} is protected")));
                }
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            }
            None => return Err(invalid("empty header mutation")),
        }
        if bytes > MAX_MUTATION_BYTES {
            return Err(invalid("header mutations over 32 KiB"));
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::stage::{HttpStage, StageFuture};
    use super::*;

    /// A stage answering from a queue, recording what it was given.
    struct Scripted {
        answers: Mutex<Vec<Result<proto::HttpRequestResult, StageError>>>,
        seen: Mutex<Vec<proto::HttpRequestEvaluation>>,
    }

    impl HttpStage for Scripted {
        fn max_payload(&self) -> usize {
            1024
        }
        fn evaluate(
            &self,
            eval: proto::HttpRequestEvaluation,
        ) -> StageFuture<'_, proto::HttpRequestResult> {
            self.seen.lock().unwrap().push(eval);
            let next = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    fn stage(
        key: &str,
        fail_open: bool,
        answers: Vec<Result<proto::HttpRequestResult, StageError>>,
    ) -> (PlannedStage, Arc<Scripted>) {
        let s = Arc::new(Scripted {
            answers: Mutex::new(answers),
            seen: Mutex::new(Vec::new()),
        });
        let http: Arc<dyn HttpStage> = Arc::clone(&s) as Arc<dyn HttpStage>;
        (
            PlannedStage {
                key: Arc::from(key),
                middleware: Arc::from("svc"),
                fail_open,
                index: 0,
                config: Arc::new(prost_types::Struct::default()),
                http: Some(http),
                ws: None,
            },
            s,
        )
    }

    fn allow() -> proto::HttpRequestResult {
        proto::HttpRequestResult {
            decision: proto::Decision::Allow.into(),
            ..Default::default()
        }
    }

    fn request() -> ChainRequest {
        ChainRequest {
            scheme: "https",
            host: "api.test".into(),
            port: 443,
            method: "POST".into(),
            path: "/v1".into(),
            query: "a=1".into(),
            headers: vec![
                ("Host".into(), b"api.test".to_vec()),
                (
                    "Authorization".into(),
                    b"Bearer sluice:resolve:env:TOKEN".to_vec(),
                ),
                ("Connection".into(), b"x-hop".to_vec()),
                ("X-Hop".into(), b"1".to_vec()),
                ("Content-Type".into(), b" application/json ".to_vec()),
            ],
            body: b"{\"q\":1}".to_vec(),
        }
    }

    fn write(name: &str, value: &str, on: proto::ExistingHeaderAction) -> proto::HeaderMutation {
        proto::HeaderMutation {
            operation: Some(proto::header_mutation::Operation::Write(
                proto::WriteHeader {
                    name: name.into(),
                    value: value.into(),
                    on_existing: on.into(),
                },
            )),
        }
    }

    fn remove(name: &str) -> proto::HeaderMutation {
        proto::HeaderMutation {
            operation: Some(proto::header_mutation::Operation::Remove(
                proto::RemoveHeader { name: name.into() },
            )),
        }
    }

    async fn run_one(
        fail_open: bool,
        answer: Result<proto::HttpRequestResult, StageError>,
    ) -> (ChainEnd, ChainRequest, Vec<StageReport>) {
        let (s, _) = stage("m", fail_open, vec![answer]);
        let mut req = request();
        let mut reports = Vec::new();
        let end = run(
            &[&s],
            &proto::RequestContext::default(),
            &mut req,
            &mut reports,
        )
        .await;
        (end, req, reports)
    }

    #[tokio::test]
    async fn stages_see_visible_headers_only() {
        let (s, seen) = stage("m", false, vec![Ok(allow())]);
        let mut req = request();
        let _ = run(
            &[&s],
            &proto::RequestContext::default(),
            &mut req,
            &mut Vec::new(),
        )
        .await;
        let eval = seen.seen.lock().unwrap().remove(0);
        let names: Vec<_> = eval
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(names, [("content-type", "application/json")]);
        assert_eq!(eval.body, b"{\"q\":1}");
        let t = eval.target.unwrap();
        assert_eq!(
            (t.host.as_str(), t.path.as_str(), t.query.as_str()),
            ("api.test", "/v1", "a=1")
        );
    }

    #[tokio::test]
    async fn results_and_failures_follow_the_contract() {
        let deny = proto::HttpRequestResult {
            decision: proto::Decision::Deny.into(),
            reason_code: "blocked_term".into(),
            ..Default::default()
        };
        let bad_code = proto::HttpRequestResult {
            reason_code: "Bad-Code".into(),
            ..allow()
        };
        let unspecified = proto::HttpRequestResult::default();
        let mutate = proto::HttpRequestResult {
            header_mutations: vec![
                write(
                    "x-openshell-middleware-tag",
                    "t1",
                    proto::ExistingHeaderAction::Overwrite,
                ),
                remove("content-type"),
            ],
            has_body: true,
            body: b"{}".to_vec(),
            ..allow()
        };
        // (fail_open, answer, end kind, outcome)
        let cases: Vec<(
            bool,
            Result<proto::HttpRequestResult, StageError>,
            &str,
            &str,
        )> = vec![
            (false, Ok(allow()), "continue", "allow"),
            (true, Ok(deny.clone()), "denied", "deny"),
            (false, Ok(deny), "denied", "deny"),
            (false, Ok(bad_code.clone()), "failed", "failed"),
            (true, Ok(bad_code), "continue", "skipped"),
            (false, Ok(unspecified.clone()), "failed", "failed"),
            (true, Ok(unspecified), "continue", "skipped"),
            (
                false,
                Err(StageError::Timeout(Duration::from_millis(5))),
                "failed",
                "failed",
            ),
            (
                true,
                Err(StageError::Unavailable("x".into())),
                "continue",
                "skipped",
            ),
            (false, Ok(mutate), "continue", "mutate"),
        ];
        for (i, (fail_open, answer, want_end, want_outcome)) in cases.into_iter().enumerate() {
            let (end, req, reports) = run_one(fail_open, answer).await;
            let kind = match end {
                ChainEnd::Continue { .. } => "continue",
                ChainEnd::Denied { .. } => "denied",
                ChainEnd::Failed { .. } => "failed",
            };
            assert_eq!(
                (kind, reports[0].outcome),
                (want_end, want_outcome),
                "case {i}"
            );
            if want_outcome == "mutate" {
                assert!(req
                    .headers
                    .iter()
                    .any(|(n, v)| n == "x-openshell-middleware-tag" && v == b"t1"));
                assert!(!req
                    .headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("content-type")));
                assert_eq!(req.body, b"{}");
            }
            if want_outcome == "skipped" || want_outcome == "allow" {
                assert_eq!(req.body, request().body, "case {i}: unchanged");
            }
        }
    }

    #[tokio::test]
    async fn forbidden_mutations_change_nothing() {
        let bad: Vec<Vec<proto::HeaderMutation>> = vec![
            vec![write("x-other", "v", proto::ExistingHeaderAction::Append)],
            vec![write(
                "x-openshell-middleware-a",
                "v",
                proto::ExistingHeaderAction::Unspecified,
            )],
            vec![write(
                "x-openshell-middleware-a",
                "v\r\nx: y",
                proto::ExistingHeaderAction::Append,
            )],
            vec![write(
                "x-openshell-middleware-a",
                "sluice:resolve:env:TOKEN",
                proto::ExistingHeaderAction::Append,
            )],
            vec![remove("authorization")],
            vec![remove("x-hop")],
            vec![
                write(
                    "x-openshell-middleware-ok",
                    "v",
                    proto::ExistingHeaderAction::Append,
                ),
                remove("host"),
            ],
        ];
        for (i, mutations) in bad.into_iter().enumerate() {
            let answer = proto::HttpRequestResult {
                header_mutations: mutations,
                ..allow()
            };
            let (end, req, _) = run_one(false, Ok(answer)).await;
            assert!(matches!(end, ChainEnd::Failed { .. }), "case {i}: {end:?}");
            assert_eq!(req.headers, request().headers, "case {i}: all or nothing");
        }
        let introduces = proto::HttpRequestResult {
            has_body: true,
            body: b"{\"k\":\"sluice:resolve:env:TOKEN\"}".to_vec(),
            ..allow()
        };
        let (end, _, _) = run_one(false, Ok(introduces)).await;
        assert!(matches!(end, ChainEnd::Failed { .. }));
    }

    #[tokio::test]
    async fn later_stages_see_earlier_changes_and_deny_stops() {
        let first = proto::HttpRequestResult {
            has_body: true,
            body: b"redacted".to_vec(),
            ..allow()
        };
        let (a, _) = stage("a", false, vec![Ok(first)]);
        let (b, seen_b) = stage(
            "b",
            false,
            vec![Ok(proto::HttpRequestResult {
                decision: proto::Decision::Deny.into(),
                ..Default::default()
            })],
        );
        let (c, seen_c) = stage("c", false, vec![Ok(allow())]);
        let mut req = request();
        let mut reports = Vec::new();
        let end = run(
            &[&a, &b, &c],
            &proto::RequestContext::default(),
            &mut req,
            &mut reports,
        )
        .await;
        assert_eq!(
            end,
            ChainEnd::Denied {
                key: Arc::from("b"),
                reason_code: None
            }
        );
        assert_eq!(seen_b.seen.lock().unwrap()[0].body, b"redacted");
        assert!(
            seen_c.seen.lock().unwrap().is_empty(),
            "no stage after a deny"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_stage_limit_is_a_failure() {
        let (s, seen) = stage("m", true, vec![Ok(allow())]);
        let mut req = request();
        req.body = vec![b'x'; 2048];
        let mut reports = Vec::new();
        let end = run(
            &[&s],
            &proto::RequestContext::default(),
            &mut req,
            &mut reports,
        )
        .await;
        assert!(matches!(end, ChainEnd::Continue { .. }));
        assert_eq!(reports[0].failure, Some("payload_too_large"));
        assert!(seen.seen.lock().unwrap().is_empty(), "not called");
    }

    #[test]
    fn reason_codes() {
        for (code, ok) in [
            ("a", true),
            ("pii_found2", true),
            ("", false),
            ("A", false),
            ("1a", false),
            ("a-b", false),
        ] {
            assert_eq!(valid_reason_code(code), ok, "{code}");
        }
        assert!(!valid_reason_code(&"a".repeat(65)));
    }
}
