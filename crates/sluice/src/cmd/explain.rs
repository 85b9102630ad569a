//! `sluice explain`: the decision a policy would make, as JSON. The decision
//! is [`super::decide`]'s (the same `authorize()` and request evaluation as
//! `serve`); destination mode is reported without resolving the name.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;
use sluice_policy::suggest::{self, Denied, DeniedRequest};

use super::decide::{decide, Connection, Question, Request, L7};
use crate::cli::ExplainArgs;

pub(crate) fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let loaded = match args
        .profiles
        .load(args.policy.as_deref(), &sluice_policy::StandInSecrets)
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let snapshot = Arc::new(loaded.snapshot);
    let body = match args.body.as_deref() {
        Some(b) => Some(match b.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("--body @{file}"))?,
            None => b.as_bytes().to_vec(),
        }),
        None => None,
    };
    let asks_request = args.method.is_some() || args.path.is_some() || body.is_some();
    let question = Question {
        host: &args.host,
        port: args.port,
        binary: args.binary.as_deref(),
        ancestors: &args.ancestor,
        request: asks_request.then(|| Request {
            method: args.method.as_deref(),
            path: args.path.as_deref(),
            body: body.as_deref(),
            content_type: &args.content_type,
        }),
    };
    let answer = decide(&snapshot, &question)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid destination {}:{}", args.host, args.port))?;
    let mut out = json!({
        "decision": if matches!(answer.connection, Connection::Allowed(_)) { "allow" } else { "deny" },
        "generation": answer.generation,
        "host": answer.host,
        "port": answer.port,
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
    match answer.connection {
        Connection::Denied { reason } => {
            out["reason"] = reason.into();
            out["suggestion"] = suggestion(None).into();
        }
        Connection::Allowed(g) => {
            out["policy"] = g.policy.as_str().into();
            out["endpoint"] = g.endpoint.into();
            out["reason"] = "".into();
            out["destination_mode"] = g.destination_mode.into();
            out["tls"] = g.tls.into();
            out["protocol"] = g.protocol.into();
            out["enforcement"] = g.enforcement.into();
            out["routes"] = g.routes.into();
            if let Some(l7) = g.l7 {
                let l7 = l7.map_err(anyhow::Error::msg)?;
                out["l7"] = render_l7(l7, &g.policy, &suggestion);
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// The `l7` object; a REST deny carries the rule that would allow it.
fn render_l7(
    l7: L7,
    policy: &str,
    suggestion: &dyn Fn(Option<DeniedRequest>) -> String,
) -> serde_json::Value {
    let mut out = json!({
        "verdict": l7.verdict,
        "reason": l7.reason,
        "rule": l7.rule,
    });
    if !l7.summary.is_empty() {
        out["summary"] = l7.summary.into();
    }
    if l7.verdict == "deny" && l7.rest {
        out["suggestion"] = suggestion(Some(DeniedRequest {
            policy: policy.to_owned(),
            method: l7.method,
            path: l7.path,
        }))
        .into();
    }
    out
}
