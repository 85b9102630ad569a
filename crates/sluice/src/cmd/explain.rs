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
    Surface, Target, Verdict,
};

use sluice_policy::request::{canonicalize_path, evaluate_rest, QueryParams, RestRequest};
use sluice_policy::suggest::{self, Denied, DeniedRequest};

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
    let d = authorize(&snapshot, intent, &ctx);
    let mut out = json!({
        "decision": if d.is_allowed() { "allow" } else { "deny" },
        "generation": d.generation(),
        "host": d.intent.target.host.to_string(),
        "port": d.intent.target.port,
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
    match &d.verdict {
        Verdict::Deny(_) => {
            out["reason"] = d.deny_reason().into();
            out["suggestion"] = suggestion(None).into();
        }
        Verdict::Allow(p) => {
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
            if args.method.is_some() || args.path.is_some() {
                let method = args.method.as_deref().unwrap_or("GET");
                let raw = args.path.as_deref().unwrap_or("/");
                out["l7"] = if p.protocol.as_str() == "rest" {
                    let (raw_path, raw_query) = raw.split_once('?').unwrap_or((raw, ""));
                    let path = canonicalize_path(raw_path, false)
                        .map_err(|e| anyhow::anyhow!("--path {raw}: {e}"))?;
                    let query = QueryParams::parse(raw_query)
                        .map_err(|e| anyhow::anyhow!("--path {raw}: {e}"))?;
                    let v = evaluate_rest(
                        &snapshot,
                        &p.routes,
                        &RestRequest {
                            method,
                            path: &path,
                            query: &query,
                        },
                    );
                    let mut l7 = json!({
                        "verdict": if v.allowed { "allow" } else { "deny" },
                        "reason": v.reason,
                        "rule": v.rule.or_else(|| v.decided_by.and_then(|r| r.describe(&snapshot))),
                    });
                    if !v.allowed {
                        l7["suggestion"] = suggestion(Some(DeniedRequest {
                            policy: policy.key.to_string(),
                            method: method.to_ascii_uppercase(),
                            path,
                        }))
                        .into();
                    }
                    l7
                } else if p.protocol.is_l7() {
                    json!({"verdict": "not_evaluated", "detail": format!("`{}` rules read the request body; explain evaluates `rest` rules only", p.protocol.as_str())})
                } else {
                    json!({"verdict": "allow", "detail": "endpoint has no protocol: no request-level rules"})
                };
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}
