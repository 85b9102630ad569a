//! The one decision `sluice explain` prints and `sluice test` checks: the
//! connection-level decision from the proxy's own `authorize()` and, for a
//! hypothetical request, the request-level verdict from the relay's own
//! `evaluate_request`. Nothing is resolved or dialled.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_policy::request::{evaluate_rest, QueryParams, RestRequest};
use sluice_policy::PolicySnapshot;
use sluice_proxy::egress::{
    authorize, Allowed, AuthorizeContext, EgressIntent, IdentityEvidence, IdentityMode,
    ProcessIdentity, Surface, Target,
};
use sluice_proxy::relay::http::evaluate_request;

/// What is asked: a connection and, optionally, one request on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Question<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// The caller's executable; `None` leaves `binaries` out of the decision.
    pub(crate) binary: Option<&'a str>,
    /// The caller's ancestors, parent first.
    pub(crate) ancestors: &'a [String],
    pub(crate) request: Option<Request<'a>>,
}

/// A hypothetical HTTP request. A missing method is `GET`, or `POST` with a
/// body; a missing path is `/`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: Option<&'a str>,
    pub(crate) path: Option<&'a str>,
    pub(crate) body: Option<&'a [u8]>,
    pub(crate) content_type: &'a str,
}

/// The answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) generation: u64,
    /// The destination as the proxy normalised it.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) connection: Connection,
}

/// The connection-level decision.
#[derive(Debug)]
pub(crate) enum Connection {
    Denied { reason: String },
    Allowed(Box<Granted>),
}

/// What an allowed connection was granted, and the request's verdict.
#[derive(Debug)]
pub(crate) struct Granted {
    /// The key of the policy entry that supplied the endpoint.
    pub(crate) policy: String,
    /// `network_policies.KEY.endpoints[I] (FILE:LINE)`.
    pub(crate) endpoint: String,
    pub(crate) destination_mode: &'static str,
    pub(crate) tls: &'static str,
    pub(crate) protocol: &'static str,
    pub(crate) enforcement: &'static str,
    pub(crate) routes: Vec<String>,
    /// Present when a request was asked about; `Err` when the request itself
    /// cannot be evaluated (its head does not parse or its path is refused).
    pub(crate) l7: Option<Result<L7, String>>,
}

/// The request-level verdict.
#[derive(Debug)]
pub(crate) struct L7 {
    /// `allow`, `deny`, `audit`, `pass` or `needs_body`.
    pub(crate) verdict: &'static str,
    pub(crate) reason: String,
    /// The rule that decided, when one did.
    pub(crate) rule: Option<String>,
    /// What the body evaluation recognised.
    pub(crate) summary: String,
    /// The method asked about, upper case.
    pub(crate) method: String,
    /// The canonical path the rules saw.
    pub(crate) path: String,
    /// The governing endpoint is `protocol: rest`.
    pub(crate) rest: bool,
}

/// The final verdict of [`Answer::outcome`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) allow: bool,
    /// Why (empty for a plain allow).
    pub(crate) reason: String,
}

/// Decides `q` under `snapshot`.
///
/// # Errors
/// The destination is not a valid host and port.
pub(crate) fn decide(snapshot: &Arc<PolicySnapshot>, q: &Question<'_>) -> Result<Answer, String> {
    let target = Target::parse_authority(&format!("{}:{}", bracket(q.host), q.port))
        .map_err(|e| e.to_string())?;
    let (identity_mode, identity) = match q.binary {
        Some(exe) => (
            IdentityMode::Required,
            IdentityEvidence::Resolved(Arc::new(ProcessIdentity {
                pid: 0,
                exe: exe.to_owned(),
                exe_sha256: String::new(),
                ancestors: q.ancestors.to_vec(),
                cmdline_paths: Vec::new(),
                sandbox_pid: None,
            })),
        ),
        None => (IdentityMode::EndpointOnly, IdentityEvidence::EndpointOnly),
    };
    let intent = EgressIntent {
        surface: if q.request.is_some_and(|r| r.method.is_some()) {
            Surface::ForwardHttp
        } else {
            Surface::Connect
        },
        target,
        client: SocketAddr::from(([127, 0, 0, 1], 0)),
        identity,
    };
    let ctx = AuthorizeContext {
        identity_mode,
        trusted_gateway: None,
    };
    let decided = authorize(snapshot, intent, &ctx);
    let record = match &decided {
        Ok(a) => a.record(),
        Err(d) => d.record(),
    };
    let (generation, host, port) = (
        record.generation(),
        record.intent.target.host.to_string(),
        record.intent.target.port,
    );
    let connection = match &decided {
        Err(denied) => Connection::Denied {
            reason: denied.deny_reason(),
        },
        Ok(allowed) => Connection::Allowed(Box::new(granted(snapshot, allowed, q))),
    };
    Ok(Answer {
        generation,
        host,
        port,
        connection,
    })
}

fn granted(snapshot: &PolicySnapshot, d: &Allowed, q: &Question<'_>) -> Granted {
    let p = d.permit();
    let e = snapshot.endpoint(p.endpoint);
    let policy = snapshot.policy(p.policy);
    Granted {
        policy: policy.key.to_string(),
        endpoint: format!(
            "network_policies.{}.endpoints[{}] ({}:{})",
            policy.key,
            e.index_in_policy,
            snapshot.source(),
            e.line
        ),
        destination_mode: p.destination.mode.as_str(),
        tls: if p.tls == sluice_policy::TlsMode::Skip {
            "skip"
        } else {
            "auto"
        },
        protocol: if p.protocol.as_str().is_empty() {
            "l4"
        } else {
            p.protocol.as_str()
        },
        enforcement: p.enforcement.as_str(),
        routes: p
            .routes
            .iter()
            .map(|id| {
                let r = snapshot.endpoint(*id);
                format!(
                    "network_policies.{}.endpoints[{}]",
                    snapshot.policy(r.policy).key,
                    r.index_in_policy
                )
            })
            .collect(),
        l7: q.request.map(|r| request_level(d, &r)),
    }
}

/// The request-level verdict, computed by the relay's own evaluation.
fn request_level(d: &Allowed, r: &Request<'_>) -> Result<L7, String> {
    let method = r
        .method
        .unwrap_or(if r.body.is_some() { "POST" } else { "GET" });
    let path = r.path.unwrap_or("/");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", d.intent.target);
    if let Some(b) = r.body {
        head.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            r.content_type,
            b.len()
        ));
    }
    head.push_str("\r\n");
    let v = evaluate_request(d, head.as_bytes(), r.body)
        .map_err(|e| format!("request {method} {path}: {e}"))?;
    let rule = v.rule.clone().or_else(|| {
        v.endpoint.and_then(|id| {
            let q = QueryParams::parse(path.split_once('?').map_or("", |(_, q)| q)).ok()?;
            evaluate_rest(
                &d.snapshot,
                &[id],
                &RestRequest {
                    method,
                    path: &v.path,
                    query: &q,
                },
            )
            .decided_by
            .and_then(|r| r.describe(&d.snapshot))
        })
    });
    let rest = v
        .endpoint
        .is_some_and(|id| d.snapshot.endpoint(id).protocol.as_str() == "rest");
    Ok(L7 {
        verdict: v.verdict,
        reason: v.reason,
        rule,
        summary: v.summary,
        method: method.to_ascii_uppercase(),
        path: v.path,
        rest,
    })
}

// === impl Answer ===

impl Answer {
    /// The policy key of an allowed connection.
    pub(crate) fn policy(&self) -> Option<&str> {
        match &self.connection {
            Connection::Allowed(g) => Some(&g.policy),
            Connection::Denied { .. } => None,
        }
    }

    /// What happens in the end: a denied connection is denied; an allowed
    /// one without a request is allowed; with a request, the request-level
    /// verdict decides. An `audit` verdict is an allow (the endpoint only
    /// records; the request goes through). `needs_body` is a deny (a
    /// bodyless request to an endpoint whose rules read the body carries no
    /// operation to allow), as is a request the relay cannot evaluate.
    pub(crate) fn outcome(&self) -> Outcome {
        let g = match &self.connection {
            Connection::Denied { reason } => {
                return Outcome {
                    allow: false,
                    reason: reason.clone(),
                }
            }
            Connection::Allowed(g) => g,
        };
        let (allow, reason) = match &g.l7 {
            None => (true, String::new()),
            Some(Err(e)) => (false, e.clone()),
            Some(Ok(l7)) => match l7.verdict {
                "allow" | "pass" => (true, String::new()),
                "audit" => (true, format!("audit mode, would be denied: {}", l7.reason)),
                "needs_body" => (
                    false,
                    format!("{}; none was given", l7.reason.trim_end_matches('.')),
                ),
                _ => (false, l7.reason.clone()),
            },
        };
        Outcome { allow, reason }
    }
}

/// Brackets a bare IPv6 literal for `HOST:PORT`.
fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}
