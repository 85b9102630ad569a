//! `sluice explain`: the decision a policy would make, as JSON. Uses the
//! same `authorize()` as `serve`; destination mode is reported without
//! resolving the name.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;
use sluice_proxy::egress::{
    authorize, AuthorizeContext, EgressIntent, IdentityEvidence, IdentityMode, ProcessIdentity,
    Surface, Target,
};

use sluice_policy::request::{evaluate_rest, QueryParams, RestRequest};
use sluice_policy::suggest::{self, Denied, DeniedRequest};
use sluice_proxy::relay::http::evaluate_request;

use crate::cli::ExplainArgs;

pub(crate) fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let loaded = match sluice_policy::load_file(&args.policy, 1) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let snapshot = Arc::new(loaded.snapshot);
    let target = Target::parse_authority(&format!("{}:{}", bracket(&args.host), args.port))
        .with_context(|| format!("invalid destination {}:{}", args.host, args.port))?;
    let (mode, identity) = match &args.binary {
        Some(exe) => (
            IdentityMode::Required,
            IdentityEvidence::Resolved(Arc::new(ProcessIdentity {
                pid: 0,
                exe: exe.clone(),
                exe_sha256: String::new(),
                ancestors: args.ancestor.clone(),
                cmdline_paths: Vec::new(),
                sandbox_pid: None,
            })),
        ),
        None => (IdentityMode::EndpointOnly, IdentityEvidence::EndpointOnly),
    };
    let intent = EgressIntent {
        surface: if args.method.is_some() {
            Surface::ForwardHttp
        } else {
            Surface::Connect
        },
        target,
        client: SocketAddr::from(([127, 0, 0, 1], 0)),
        identity,
    };
    let ctx = AuthorizeContext {
        identity_mode: mode,
        trusted_gateway: None,
    };
    let decided = authorize(&snapshot, intent, &ctx);
    let record = match &decided {
        Ok(a) => a.record(),
        Err(d) => d.record(),
    };
    let mut out = json!({
        "decision": if decided.is_ok() { "allow" } else { "deny" },
        "generation": record.generation(),
        "host": record.intent.target.host.to_string(),
        "port": record.intent.target.port,
        "identity": if args.binary.is_some() { "binary" } else { "not considered (no --binary)" },
    });
    let suggestion = |request: Option<DeniedRequest>| {
        suggest::snippet(&Denied {
            host: args.host.clone(),
            port: args.port,
            binary: args.binary.clone(),
            request,
        })
    };
    match &decided {
        Err(denied) => {
            out["reason"] = denied.deny_reason().into();
            out["suggestion"] = suggestion(None).into();
        }
        Ok(d) => {
            let p = d.permit();
            let e = snapshot.endpoint(p.endpoint);
            let policy = snapshot.policy(p.policy);
            out["policy"] = policy.key.to_string().into();
            out["endpoint"] = format!(
                "network_policies.{}.endpoints[{}] ({}:{})",
                policy.key,
                e.index_in_policy,
                args.policy.display(),
                e.line
            )
            .into();
            out["reason"] = "".into();
            out["destination_mode"] = p.destination.mode.as_str().into();
            out["tls"] = if p.tls == sluice_policy::TlsMode::Skip {
                "skip"
            } else {
                "auto"
            }
            .into();
            out["protocol"] = if p.protocol.as_str().is_empty() {
                "l4"
            } else {
                p.protocol.as_str()
            }
            .into();
            out["enforcement"] = p.enforcement.as_str().into();
            out["routes"] = p
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
                .collect::<Vec<_>>()
                .into();
            if args.method.is_some() || args.path.is_some() || args.body.is_some() {
                out["l7"] = request_level(args, d, policy.key.as_ref(), &suggestion)?;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// The request-level verdict, computed by the relay's own evaluation.
fn request_level(
    args: &ExplainArgs,
    d: &sluice_proxy::egress::Allowed,
    policy: &str,
    suggestion: &dyn Fn(Option<DeniedRequest>) -> String,
) -> anyhow::Result<serde_json::Value> {
    let method = args
        .method
        .as_deref()
        .unwrap_or(if args.body.is_some() { "POST" } else { "GET" });
    let path = args.path.as_deref().unwrap_or("/");
    let body = match args.body.as_deref() {
        Some(b) => Some(match b.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("--body @{file}"))?,
            None => b.as_bytes().to_vec(),
        }),
        None => None,
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", d.intent.target);
    if let Some(b) = &body {
        head.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            args.content_type,
            b.len()
        ));
    }
    head.push_str("\r\n");
    let v = evaluate_request(d, head.as_bytes(), body.as_deref())
        .map_err(|e| anyhow::anyhow!("request {method} {path}: {e}"))?;
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
    let mut l7 = json!({
        "verdict": v.verdict,
        "reason": v.reason,
        "rule": rule,
    });
    if !v.summary.is_empty() {
        l7["summary"] = v.summary.into();
    }
    let rest = v
        .endpoint
        .is_some_and(|id| d.snapshot.endpoint(id).protocol.as_str() == "rest");
    if v.verdict == "deny" && rest {
        l7["suggestion"] = suggestion(Some(DeniedRequest {
            policy: policy.to_owned(),
            method: method.to_ascii_uppercase(),
            path: v.path,
        }))
        .into();
    }
    Ok(l7)
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}
